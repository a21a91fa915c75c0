#!/usr/bin/env bash
# GPU benchmark, one run: random-weight trocr-base, float16, exactly 20 generated tokens a line, MLX (CUDA
# backend) vs transformers side by side. Steps, each with its own time limit (what it took on the H200,
# 2026-12-02, in brackets):
#   1. bench_gpu: scripts/benchmark_pytorch_vs_mlx.py at batch 1, 32, 64 and 128, float16 only, 240 s
#      [under 200 s: that run was cut at 200 s just after these rows, in the 8-bit ones]  -> bench_gpu.json, .png
#   2. bench_gpu_q: the same at batch 1 and 32 with MLX 8-bit and 4-bit rows (size, lines/s, agreement with
#      float MLX; on random weights that agreement says nothing about a trained model), 210 s
#      [about 170 s in a run of its own]                                              -> bench_gpu_q.json, .png
#   3. bench_workers: dev/bench_workers.py, the batch processor with 1, 2, 4 worker processes on the one GPU,
#      batch 64, 512 lines, 140 s [not yet run to the end]; the JSON is rewritten after every worker count and a
#      count that fails is a row with its error                                       -> bench_workers.json
#   4. profile_gpu: dev/profile_decode.py: encoder / decoder step / per-op-kind times and the roofline (weight
#      and K/V bytes per step over HBM bandwidth, FLOPs over peak) at batch 1, 32, 128, 60 s [9 s]
#                                                                                     -> profile_gpu.json
#   5. profile_q4: the same for the 4-bit model at batch 1 and 32, no per-op breakdown, 60 s
#      [cut at 35 s at batch 1, 32, 128]                                              -> profile_q4.json
#   6. dev/gpu_bench_summary.py: the ratios, the best aggregate lines/s of each, the quantized rows, the
#      roofline, 60 s [about 1 s]                                                     -> summary.txt
# Everything printed goes to run.log. A failure does not stop the next step; the benchmarks write their JSON
# after every section, so partial results still come back (up to 9 files in $OUT).
# Total: at most 13.5 minutes by the limits (770 s, 5 s of grace a step, the start's version check); the
# bracketed times add up to about 7 minutes plus the workers step. That is more than one 10-minute call on
# the lent machine: there, run it as two calls, each into its own $OUT, with STEPS (the steps to run, by name):
#     STEPS="bench_gpu profile_gpu" ...                     at most 6.5 minutes
#     STEPS="bench_gpu_q bench_workers profile_q4" ...      at most 8.5 minutes
# and summarise the two folders' files together: python dev/gpu_bench_summary.py FOLDER_WITH_BOTH.
# Run from the repository root on the GPU machine, after sourcing the MLX CUDA environment:
#     . .device/part2/mlx-cuda-env.sh && bash dev/gpu_bench.sh
# Test the logic anywhere with a tiny random checkpoint: SMOKE=1 DEVICE=cpu OUT=/tmp/gb bash dev/gpu_bench.sh
set -uo pipefail
OUT=${OUT:-outputs}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
LOG="$OUT/run.log"
if [ "${SMOKE:-0}" = 1 ]; then  # a logic check on a CPU: a tiny random checkpoint, tiny settings (not a measurement)
    TINY=$(mktemp -d)
    trap 'rm -rf "$TINY"' EXIT
    "$PY" - "$TINY" <<'EOF_TINY' || exit 1
import sys
sys.path[:0] = ["tests", "."]
import hf_fixtures as F
from scripts.convert_trocr_to_mlx import convert
hf = F.save_checkpoint(F.make_model("nonsquare", seed=0), sys.argv[1] + "/hf")
convert(hf, sys.argv[1] + "/mlx", verbose=False)
EOF_TINY
    BENCH=(--pytorch-model "$TINY/hf" --mlx-model "$TINY/mlx" --batch-sizes 1,2,4 --num-images 3 --new-tokens 4
           --warmup 0 --repeats 1 --dtype float32 --group-size 32)
    BENCH_Q=(--pytorch-model "$TINY/hf" --mlx-model "$TINY/mlx" --batch-sizes 1,2 --num-images 3 --new-tokens 4
             --warmup 0 --repeats 1 --dtype float32 --group-size 32)
    WORKERS=(--model "$TINY/mlx" --workers 1,2 --batch-size 2 --lines 8 --new-tokens 4)
    PROFILE=(--model "$TINY/mlx" --batch-sizes 1,2 --dtype float32 --group-size 32)
    PROFILE_Q=("${PROFILE[@]}")
    T_BENCH=600 T_BENCH_Q=600 T_WORKERS=600 T_PROFILE=300 T_PROFILE_Q=300
else
    BENCH=(--random-trocr-base --batch-sizes 1,32,64,128 --num-images 32 --new-tokens 20 --warmup 1 --repeats 3
           --dtype float16 --group-size 64)
    BENCH_Q=(--random-trocr-base --batch-sizes 1,32 --num-images 32 --new-tokens 20 --warmup 1 --repeats 2
             --dtype float16 --group-size 64)
    WORKERS=(--random-trocr-base --workers 1,2,4 --batch-size 64 --lines 512 --new-tokens 20 --dtype float16)
    PROFILE=(--random-trocr-base --batch-sizes 1,32,128 --dtype float16)
    PROFILE_Q=(--random-trocr-base --batch-sizes 1,32 --dtype float16)
    T_BENCH=240 T_BENCH_Q=210 T_WORKERS=140 T_PROFILE=60 T_PROFILE_Q=60
fi
STEPS=${STEPS:-bench_gpu bench_gpu_q bench_workers profile_gpu profile_q4}
step() {  # step NAME LIMIT CMD...: run with a time limit (SIGTERM, then SIGKILL 5 s later), never stop the script
    local name=$1 limit=$2; shift 2
    case " $STEPS " in *" $name "*) ;; *) echo "== $name: skipped (not in STEPS)" | tee -a "$LOG"; return ;; esac
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $name: rc=${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
}
{ date -Is; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import mlx.core as mx, torch, transformers; print('mlx', mx.__version__, mx.default_device(), '| torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__)"
} 2>&1 | tee "$LOG"

step bench_gpu "$T_BENCH" "$PY" -u scripts/benchmark_pytorch_vs_mlx.py "${BENCH[@]}" --device "$DEVICE" \
    --output "$OUT/bench_gpu.json" --chart "$OUT/bench_gpu.png"
step bench_gpu_q "$T_BENCH_Q" "$PY" -u scripts/benchmark_pytorch_vs_mlx.py "${BENCH_Q[@]}" --device "$DEVICE" \
    --quantize 8,4 --output "$OUT/bench_gpu_q.json" --chart "$OUT/bench_gpu_q.png"
step bench_workers "$T_WORKERS" "$PY" -u dev/bench_workers.py "${WORKERS[@]}" --output "$OUT/bench_workers.json"
step profile_gpu "$T_PROFILE" "$PY" -u dev/profile_decode.py "${PROFILE[@]}" --output "$OUT/profile_gpu.json"
step profile_q4 "$T_PROFILE_Q" "$PY" -u dev/profile_decode.py "${PROFILE_Q[@]}" --quantize 4 --no-per-op \
    --output "$OUT/profile_q4.json"
timeout 60 "$PY" dev/gpu_bench_summary.py "$OUT" > "$OUT/summary.txt" 2>&1; cat "$OUT/summary.txt" | tee -a "$LOG"

#!/usr/bin/env bash
# GPU benchmark, one run (at most 7.5 minutes by its time limits; about 5 expected on an H200): random-weight trocr-base, float16, exactly 20 generated
# tokens a line, MLX (CUDA backend) vs transformers side by side.
#   1. scripts/benchmark_pytorch_vs_mlx.py at batch 1, 32, 64 and 128, with MLX 8-bit and 4-bit rows
#      (size, lines/s, agreement with float MLX)                                   -> bench_gpu.json, bench_gpu.png
#   2. dev/bench_workers.py: the batch processor with 1, 2, 4 worker processes on the one GPU, batch 64
#                                                                                   -> bench_workers.json
#   3. dev/profile_decode.py: encoder / decoder step / per-op-kind times and the roofline (weight and K/V
#      bytes per step over HBM bandwidth, FLOPs over peak) at batch 1, 32, 128        -> profile_gpu.json
#      and again for the 4-bit model without the per-op breakdown                    -> profile_q4.json
#   4. dev/gpu_bench_summary.py: the ratios, the best aggregate lines/s of each, the roofline -> summary.txt
# Everything printed goes to run.log. Each step has its own time limit and a failure does not stop the next;
# the benchmark writes its JSON after every section, so partial results still come back (7 files in $OUT).
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
    WORKERS=(--model "$TINY/mlx" --workers 1,2 --batch-size 2 --lines 8 --new-tokens 4)
    PROFILE=(--model "$TINY/mlx" --batch-sizes 1,2 --dtype float32 --group-size 32)
    T1=600 T2=600 T3=300
else
    BENCH=(--random-trocr-base --batch-sizes 1,32,64,128 --num-images 32 --new-tokens 20 --warmup 1 --repeats 3
           --dtype float16 --group-size 64)
    WORKERS=(--random-trocr-base --workers 1,2,4 --batch-size 64 --lines 512 --new-tokens 20 --dtype float16)
    PROFILE=(--random-trocr-base --batch-sizes 1,32,128 --dtype float16)
    T1=200 T2=140 T3=60
fi
step() {  # step NAME LIMIT CMD...: run with a time limit (SIGTERM, then SIGKILL 5 s later), never stop the script
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $name: rc=${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
}
{ date -Is; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import mlx.core as mx, torch, transformers; print('mlx', mx.__version__, mx.default_device(), '| torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__)"
} 2>&1 | tee "$LOG"

step bench_gpu "$T1" "$PY" -u scripts/benchmark_pytorch_vs_mlx.py "${BENCH[@]}" --device "$DEVICE" --quantize 8,4 \
    --output "$OUT/bench_gpu.json" --chart "$OUT/bench_gpu.png"
step bench_workers "$T2" "$PY" -u dev/bench_workers.py "${WORKERS[@]}" --output "$OUT/bench_workers.json"
step profile_gpu "$T3" "$PY" -u dev/profile_decode.py "${PROFILE[@]}" --output "$OUT/profile_gpu.json"
step profile_q4 $((T3 / 2 + 5)) "$PY" -u dev/profile_decode.py "${PROFILE[@]}" --quantize 4 --no-per-op --output "$OUT/profile_q4.json"
timeout 60 "$PY" dev/gpu_bench_summary.py "$OUT" > "$OUT/summary.txt" 2>&1; cat "$OUT/summary.txt" | tee -a "$LOG"

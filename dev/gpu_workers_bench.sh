#!/usr/bin/env bash
# GPU benchmark of the batch processor's worker processes: aggregate lines/s with 1, 2 and 4 workers on
# one GPU, batch 32, random-weight trocr-base in float16, exactly 20 generated tokens a line, in one run
# (dev/bench_workers.py; 1 worker is the plain one-process run). Add RAY=1 to also time Ray actor pools
# of 1, 2 and 4 actors (needs ./setup_mlx.sh --ray there).
# Run from the repository root on the GPU machine, after sourcing the MLX CUDA environment:
#     . .device/part2/mlx-cuda-env.sh && bash dev/gpu_workers_bench.sh
# Writes $OUT/bench_workers.json and $OUT/bench_workers.log. About 2-4 minutes on an H200.
set -euo pipefail
OUT=${OUT:-outputs}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_workers.txt" || true
extra=()
[ "${RAY:-0}" = 1 ] && extra+=(--ray)
timeout 580 "$PY" -u dev/bench_workers.py --random-trocr-base --dtype float16 --batch-size 32 --workers 1,2,4 \
    --lines "${LINES:-1024}" --new-tokens 20 "${extra[@]}" --output "$OUT/bench_workers.json" 2>&1 \
    | tee "$OUT/bench_workers.log"

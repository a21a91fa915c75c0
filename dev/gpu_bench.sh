#!/usr/bin/env bash
# GPU benchmark: MLX (CUDA backend) vs transformers on the random-weight trocr-base architecture,
# float16, exactly 20 generated tokens per line, batch sizes 1 and 32, in one run.
# Run from the repository root on the GPU machine, after sourcing the MLX CUDA environment:
#     . .device/part2/mlx-cuda-env.sh && bash dev/gpu_bench.sh
# Writes $OUT/bench_gpu.json, $OUT/bench_gpu.png and $OUT/bench_gpu.log. Takes about 1-2 minutes on an H100.
set -euo pipefail
OUT=${OUT:-outputs}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
"$PY" -c "import mlx.core as mx, torch; print('mlx', mx.__version__, mx.default_device(), '| torch', torch.__version__, torch.cuda.is_available())"
timeout 280 "$PY" -u scripts/benchmark_pytorch_vs_mlx.py --random-trocr-base --dtype float16 --new-tokens 20 \
    --batch-sizes 1,32 --num-images 64 --warmup 2 --repeats 3 --device cuda \
    --output "$OUT/bench_gpu.json" --chart "$OUT/bench_gpu.png" 2>&1 | tee "$OUT/bench_gpu.log"

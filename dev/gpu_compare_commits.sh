#!/usr/bin/env bash
# Did issue 13's decoder changes slow MLX down on CUDA? Time the same benchmark from two code trees in one
# GPU call, interleaved (old, new, old, new), so a slower host that day hits both alike. On 2026-12-02 MLX's
# batch-32 decoder step measured 8.65 ms against 4.13 ms on 2026-11-21 (commit 689b28a), while
# transformers lost only 24%: that is the question this answers.
#
# Here (once), put the old tree in a git-ignored folder that a device call can carry (~1 MB):
#     dev/gpu_compare_commits.sh --stage 689b28a          # writes .old/689b28a (scripts/ only)
# On the GPU machine (carry [".device/part2", ".old"] after the part1 call of ../shared/device/README.md):
#     . .device/part2/mlx-cuda-env.sh && bash dev/gpu_compare_commits.sh 689b28a
# Writes $OUT/compare_<tree>_<pass>.json (benchmark_pytorch_vs_mlx.py's JSON) and prints MLX lines/s per
# batch for each tree (SMOKE=1 PYTHON=venv_mlx/bin/python checks the logic on a CPU); about 4 minutes on an H200 (random trocr-base, float16, 20 tokens, batches 1/32/128).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stage" ]; then
    rev=${2:?usage: --stage COMMIT}
    grep -qxF '/.old/' .git/info/exclude 2>/dev/null || echo '/.old/' >> .git/info/exclude
    rm -rf ".old/$rev" && mkdir -p ".old/$rev"
    git archive "$rev" scripts | tar -x -C ".old/$rev"
    du -sh ".old/$rev"
    exit 0
fi
rev=${1:?usage: dev/gpu_compare_commits.sh COMMIT (staged with --stage COMMIT)}
OUT=${OUT:-outputs}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
ARGS=(--random-trocr-base --batch-sizes 1,32,128 --num-images 32 --new-tokens 20 --warmup 1 --repeats 2
      --dtype float16 --device cuda)
if [ "${SMOKE:-0}" = 1 ]; then  # a logic check on a CPU (not a measurement)
    ARGS=(--random-trocr-base --batch-sizes 1 --num-images 1 --new-tokens 2 --warmup 0 --repeats 1 --dtype float32 --device cpu)
fi
for pass in 1 2; do
    for tree in "$rev" now; do
        root=$PWD; [ "$tree" = now ] || root=$PWD/.old/$tree
        echo "== $tree, pass $pass"
        # Each tree's benchmark runs from its own root, so `scripts.` imports that tree's code.
        (cd "$root" && timeout 150 "$PY" -u scripts/benchmark_pytorch_vs_mlx.py "${ARGS[@]}" \
            --output "$OUT/compare_${tree}_${pass}.json" --chart "$OUT/compare_${tree}_${pass}.png") 2>&1 \
            | grep -E "^  (mlx|pytorch) +batch" || echo "   (failed or timed out)"
    done
done

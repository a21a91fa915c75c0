#!/usr/bin/env bash
# Did issue 13's decoder changes slow MLX down on CUDA? Time the same benchmark from several code trees in one
# GPU call, interleaved (old, ..., now; then again), so a slower host that day hits all alike.
# Measured 2026-12-02 (benchmarks/compare_commits_2026-12-02.log): at batch 32, 689b28a (2026-11-21) gave
# 190-258 MLX lines/s and main 153-173 (medians 216 and 172: 0.80x), at batch 128 both ~200-217. The
# candidates lie between them (git log 689b28a..c5fb10d): f0d5bad (fused q/k/v, mask-free self-attention),
# 1825409 (one K/V cache array per layer), f8f46af (greedy step), 5d06398 (contiguous cross K/V).
# Bisected later that day (benchmarks/compare_commits_bisect_2026-12-02.log): 1825409 lost ~37% at batch 32;
# main went back to two cache arrays (compare_commits_kvfix_2026-12-02.log: 1.51x the batch-32 lines/s).
#
# Here (once per commit), put each old tree in a git-ignored folder a device call can carry (~0.4 MB each):
#     dev/gpu_compare_commits.sh --stage 689b28a f0d5bad 1825409     # writes .old/<commit> (scripts/ only)
# On the GPU machine (carry [".device/part2", ".old"] after the part1 call of ../shared/device/README.md):
#     . .device/part2/mlx-cuda-env.sh && bash dev/gpu_compare_commits.sh 689b28a f0d5bad 1825409
# BATCHES=32 (default 1,32,128) and PASSES=3 (default 2) narrow or widen it; each benchmark run takes ~30-45 s.
# Writes $OUT/compare_<tree>_<pass>.json (benchmark_pytorch_vs_mlx.py's JSON) and prints the lines/s of each
# tree (SMOKE=1 PYTHON=venv_mlx/bin/python checks the logic on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stage" ]; then
    shift; [ $# -gt 0 ] || { echo "usage: --stage COMMIT [COMMIT ...]" >&2; exit 2; }
    grep -qxF '/.old/' .git/info/exclude 2>/dev/null || echo '/.old/' >> .git/info/exclude
    for rev in "$@"; do
        rm -rf ".old/$rev" && mkdir -p ".old/$rev"
        git archive "$rev" scripts | tar -x -C ".old/$rev"
        du -sh ".old/$rev"
    done
    exit 0
fi
[ $# -gt 0 ] || { echo "usage: dev/gpu_compare_commits.sh COMMIT [COMMIT ...] (staged with --stage)" >&2; exit 2; }
for rev in "$@"; do [ -d ".old/$rev/scripts" ] || { echo ".old/$rev missing: run --stage $rev here first" >&2; exit 2; }; done
OUT=${OUT:-outputs}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
ARGS=(--random-trocr-base --batch-sizes "${BATCHES:-1,32,128}" --num-images 32 --new-tokens 20 --warmup 1 --repeats 2
      --dtype float16 --device cuda)
if [ "${SMOKE:-0}" = 1 ]; then  # a logic check on a CPU (not a measurement)
    ARGS=(--random-trocr-base --batch-sizes 1 --num-images 1 --new-tokens 2 --warmup 0 --repeats 1 --dtype float32 --device cpu)
fi
for pass in $(seq "${PASSES:-2}"); do
    for tree in "$@" now; do
        root=$PWD; [ "$tree" = now ] || root=$PWD/.old/$tree
        echo "== $tree, pass $pass"
        # Each tree's benchmark runs from its own root, so `scripts.` imports that tree's code.
        (cd "$root" && timeout 150 "$PY" -u scripts/benchmark_pytorch_vs_mlx.py "${ARGS[@]}" \
            --output "$OUT/compare_${tree}_${pass}.json" --chart "/tmp/compare_${tree}_${pass}.png") 2>&1 \
            | grep -E "^  (mlx|pytorch) +batch" || echo "   (failed or timed out)"
    done
done

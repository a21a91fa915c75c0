#!/usr/bin/env bash
# Stage what the lent GPU machine lacks for `mlx_trainer.py train --synthetic` (it has Python 3.12, torch,
# numpy, OpenCV, PIL, matplotlib, but no registry): the training-split fonts (synth_data.py's list, never
# the held-out ones), the 'train' word lists of wordlists-debian.txt, and the Faker, Babel and rapidfuzz
# wheels. Writes data/carry/ (git-ignored, ~28 MB). Run from the repository root:  dev/stage_training_carry.sh
#
# One call carries at most 64 MiB *including the tracked tree* (~33 MiB since stage 7, most of it the
# bundled model), so MLX (../shared/device/stage-mlx-cuda) and this folder take four calls, made back to back
# (the machine goes back after ~30 s idle; a fresh one costs minutes of device time). This script moves the
# small mlx wheel out of .device/part1 into data/carry/mlx/ (--unpack puts it into /tmp/mlxw), splits the
# CUDA wheel into three parts of at most 30 MB (.device/part1, part2, part3) and checks every call's size.
# The calls:
#   1. carry [".device/part1"]:  mkdir -p /tmp/mlxw && cp .device/part1/* /tmp/mlxw/
#   2. carry [".device/part2"]:  cp .device/part2/cuda.whl.part.ab /tmp/mlxw/
#   3. carry [".device/part3"]:  cp .device/part3/cuda.whl.part.ac /tmp/mlxw/
#   4. carry ["data/carry", ".device/env"]:  dev/stage_training_carry.sh --unpack && . .device/env/mlx-cuda-env.sh
#      (installs MLX), then the training command in the same call;
#   later calls on the warm machine: carry [".device/env"] (+ what they need), . .device/env/mlx-cuda-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--unpack" ]; then  # on the GPU machine
  mkdir -p /tmp/fonts /tmp/dict /tmp/mlxw
  if [ -d data/carry/mlx ]; then cp data/carry/mlx/*.whl /tmp/mlxw/; fi  # the mlx wheel (see above)
  tar xJf data/carry/fonts.tar.xz -C /tmp/fonts
  tar xJf data/carry/dict.tar.xz -C /tmp/dict
  python3 -m pip install -q --no-index --no-deps --target /tmp/carry-site data/carry/*.whl
  cat > /tmp/carry-env.sh <<'ENV'
export PYTHONPATH=/tmp/carry-site${PYTHONPATH:+:$PYTHONPATH} TROCR_FONT_ROOT=/tmp/fonts TROCR_DICT_ROOT=/tmp/dict
ENV
  echo "unpacked: $(find /tmp/fonts -type f | wc -l) font files, $(ls /tmp/dict | wc -l) word lists; source /tmp/carry-env.sh"
  exit 0
fi
py=venv_mlx/bin/python
[ -x "$py" ] || py=/work/main/venv_mlx/bin/python
out=data/carry
rm -rf "$out" && mkdir -p "$out"
fonts=$("$py" - <<'PY'
import argparse, os
from scripts import synth_data as sd
chosen = sd._select_fonts(argparse.Namespace(style="both", font_split="train", fonts=None, exclude_fonts=None))
print("\n".join(os.path.relpath(p, sd.FONT_ROOT) for p in chosen))
PY
)
(cd "${TROCR_FONT_ROOT:-/usr/share/fonts}" && printf '%s\n' "$fonts" | tar cJf - -T -) > "$out/fonts.tar.xz"
lists=$("$py" -c "from scripts.text_sources import wordlist_files; print(' '.join(wordlist_files('train')))")
# shellcheck disable=SC2086  # one word per list
(cd "${TROCR_DICT_ROOT:-/usr/share/dict}" && tar cJf - $lists) > "$out/dict.tar.xz"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$out" \
  "faker==$("$py" -c 'import faker; print(faker.VERSION)')" "rapidfuzz>=3,<4" \
  "babel==$("$py" -c 'import babel; print(babel.__version__)')"
# The CUDA wheel (88 MB), split into three parts of at most 30 MB: part1 (aa), part2 (ab), part3 (ac).
# Re-running this script re-splits whatever parts are there.
if [ -f .device/part1/cuda.whl.part.aa ] && [ -f .device/part2/cuda.whl.part.ab ]; then
  whole=$(mktemp) && cat .device/part1/cuda.whl.part.aa .device/part2/cuda.whl.part.ab \
    $(ls .device/part3/cuda.whl.part.ac 2>/dev/null) > "$whole"
  mkdir -p .device/part3 && split -b 30000000 -a 2 "$whole" "$whole.part." && rm -f "$whole"
  mv "$whole.part.aa" .device/part1/cuda.whl.part.aa && mv "$whole.part.ab" .device/part2/cuda.whl.part.ab
  mv "$whole.part.ac" .device/part3/cuda.whl.part.ac
  # later calls on a warm machine need only the env script (MLX is installed in /tmp/mlx-site by then)
  mkdir -p .device/env && cp -f .device/part2/mlx-cuda-env.sh .device/env/
fi
mkdir -p "$out/mlx"  # the mlx wheel travels here, not in .device/part1 (the 64 MiB limit; see above)
if ls .device/part1/mlx-*.whl >/dev/null 2>&1; then
  mv .device/part1/mlx-*.whl "$out/mlx/"
else
  cp "${XDG_CACHE_HOME:-$HOME/.cache}"/mlx-cuda-wheels/*/mlx-[0-9]*.whl "$out/mlx/" 2>/dev/null \
    || echo "no mlx wheel found: run ../shared/device/stage-mlx-cuda first, then this script" >&2
fi
du -sh "$out"/*
# Each call's size against the 64 MiB limit: the tracked tree travels with every call.
tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
for call in .device/part1 .device/part2 .device/part3 "$out .device/env"; do
  # shellcheck disable=SC2086  # the last entry is two folders
  total=$(( tracked + $(du -sb $call | awk '{s += $1} END {print s}') ))
  if [ "$total" -gt $(( 64 * 1024 * 1024 )) ]; then
    echo "WARNING: a call carrying $call would be $(( total / 1000000 )) MB with the tracked tree: over 64 MiB" >&2
  else
    echo "call carrying $call: $(( total / 1000000 )) MB with the tracked tree (limit 67 MB)"
  fi
done
echo "staged $(printf '%s\n' "$fonts" | wc -l) training font files and word lists ($lists) in $out"

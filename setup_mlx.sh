#!/usr/bin/env bash
# Creates venv_mlx/ with the right MLX build for this machine, plus (by default) the PyTorch side.
#
#   ./setup_mlx.sh            MLX + PyTorch/transformers (both handlers, converter, benchmarks)
#   ./setup_mlx.sh --mlx-only MLX inference only (no torch, no transformers)
#   ./setup_mlx.sh --dev      everything above plus the test tools (Ray included: the tests use it; selenium
#                             and apt's chromium + chromium-driver for the review page's browser test)
#   ./setup_mlx.sh --ray      also Ray (requirements-ray.txt): mlx_batch_processor.py --ray on many machines
#   ./setup_mlx.sh --fonts    also the Debian font and word-list packages of fonts-debian.txt and
#                             wordlists-debian.txt (synthetic training lines, the independent evaluation set)
#   ./setup_mlx.sh --eval     also the peer OCR engines: requirements-eval.txt and apt's tesseract-ocr
#                             (apt-get installs run as root or through sudo; elsewhere you are told what to install)
#   ./setup_mlx.sh --vlm      also mlx-vlm for whole-page OCR with ChandraOCR (requirements-vlm.txt;
#                             ~190 MB download, ~630 MB installed; WHOLE_PAGE_OCR.md)
#
# Safe to run again: an existing venv_mlx/ is reused and pip only installs what is missing.
# Environment: PYTHON=python3.12 picks the interpreter; VENV_DIR=path moves the venv;
#              MLX_BACKEND=cpu|cuda13|metal overrides the platform detection.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="${VENV_DIR:-venv_mlx}"
python="${PYTHON:-python3}"
with_torch=1
dev=0
fonts=0
eval_tools=0
ray=0
vlm=0
for arg in "$@"; do
  case "$arg" in
    --mlx-only) with_torch=0 ;;
    --dev) dev=1 ;;
    --fonts) fonts=1 ;;
    --eval) eval_tools=1 ;;
    --ray) ray=1 ;;
    --vlm) vlm=1 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_mlx.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
trap 'die "step failed at line $LINENO (see the output above)"' ERR

command -v "$python" >/dev/null || die "'$python' not found; install Python 3.10+ or set PYTHON=/path/to/python3"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "Python 3.10 or newer is needed; '$python' is $("$python" -c 'import platform; print(platform.python_version())')"

# Which MLX build: Metal on Apple silicon, CUDA 13 on Linux with an NVIDIA GPU, CPU otherwise.
os="$(uname -s)"; arch="$(uname -m)"
backend="${MLX_BACKEND:-}"
if [ -z "$backend" ]; then
  if [ "$os" = Darwin ]; then
    [ "$arch" = arm64 ] || die "MLX on macOS needs Apple silicon (arm64); this Mac is $arch"
    backend=metal
  elif [ "$os" = Linux ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    backend=cuda13
  else
    backend=cpu
  fi
fi
case "$backend" in
  metal) mlx_req="mlx" ;;
  cuda13) mlx_req="mlx[cuda13]" ;;
  cpu) mlx_req="mlx[cpu]" ;;
  *) die "MLX_BACKEND must be metal, cuda13 or cpu (got '$backend')" ;;
esac
say "platform $os/$arch -> MLX backend: $backend ($mlx_req)"

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv/ with $("$python" --version 2>&1)"
  "$python" -m venv "$venv" || die "could not create $venv/ (on Debian/Ubuntu: apt-get install python3-venv)"
else
  say "reusing $venv/"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

say "installing MLX and the inference requirements"
"${pip[@]}" "$mlx_req" -r requirements-mlx.txt
if [ "$with_torch" = 1 ]; then
  # torch==2.13.0 exactly: on Linux CPU machines this is the CPU wheel; anything looser pulls CUDA packages.
  say "installing PyTorch side (torch==2.13.0, transformers)"
  "${pip[@]}" -r requirements-torch.txt
fi
if [ "$dev" = 1 ]; then
  say "installing test tools (and Ray, for its tests)"
  "${pip[@]}" -r requirements-dev.txt
elif [ "$ray" = 1 ]; then
  say "installing Ray (requirements-ray.txt)"
  "${pip[@]}" -r requirements-ray.txt
fi
if [ "$vlm" = 1 ]; then
  [ "$with_torch" = 1 ] || die "--vlm needs transformers (mlx-vlm requires it): drop --mlx-only"
  say "installing mlx-vlm for whole-page OCR (requirements-vlm.txt)"
  "${pip[@]}" -r requirements-vlm.txt
  # mlx-vlm requires opencv-python, which writes its GUI build over the cv2/ files of our
  # opencv-python-headless (same module, same version). Put the headless files back: the GUI build
  # needs libGL and friends that servers often lack. Both stay installed, so pip sees no missing need.
  headless="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')"
  "${pip[@]}" --force-reinstall --no-deps "opencv-python-headless==$headless"
  "$venv/bin/python" -c 'import re, cv2, mlx_vlm; assert re.search(r"GUI:\s+NONE", cv2.getBuildInformation())' \
    || die "after mlx-vlm, cv2 is not the headless build or mlx_vlm does not import"
fi

# System packages (fonts, tesseract): apt-get as root or via sudo; anywhere else, say what is needed.
apt_install() {
  local sudo=""
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get on this system; install these yourself (Debian names): $*"; return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "not root and no sudo; as root run: apt-get install $*"; return 0; }
    sudo=sudo
  fi
  # A fresh system may have no package lists yet: update once and retry.
  $sudo apt-get install -y -q --no-install-recommends "$@" \
    || { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "$@"; }
}
if [ "$fonts" = 1 ]; then
  say "installing font and word-list packages from fonts-debian.txt and wordlists-debian.txt"
  # shellcheck disable=SC2046  # one word per package name
  apt_install $(sed 's/#.*//' fonts-debian.txt wordlists-debian.txt | awk 'NF {print $1}' | sort -u)
  command -v apt-get >/dev/null 2>&1 || say "without them synth_data.py renders printed lines in matplotlib's DejaVuSans only; \
pass other .ttf/.otf files (with Spanish accents) to scripts/synth_data.py --fonts"
fi
if [ "$dev" = 1 ]; then
  say "installing Chromium and its WebDriver (tests/test_review.py drives the review page in it)"
  apt_install chromium chromium-driver
  command -v apt-get >/dev/null 2>&1 || say "on macOS: brew install --cask chromium chromedriver (or Google Chrome)"
fi
if [ "$eval_tools" = 1 ]; then
  say "installing the peer OCR engines (requirements-eval.txt, tesseract)"
  "${pip[@]}" -r requirements-eval.txt
  apt_install tesseract-ocr tesseract-ocr-spa tesseract-ocr-eng
  command -v apt-get >/dev/null 2>&1 || say "on macOS: brew install tesseract tesseract-lang"
fi

# MLX's Linux CPU wheel links netlib's reference BLAS (single-threaded, unblocked). Importing the toolkit
# (any scripts.<module>) makes the first `import mlx` load OpenBLAS for it, in-process, about 10x faster
# matmuls (scripts/cpu_blas.py). The cblas shim built here keeps OpenBLAS to MLX's three gemm functions,
# so torch in the same process keeps its own BLAS; without a C compiler OpenBLAS is loaded globally.
if [ "$backend" = cpu ] && [ "$os" = Linux ]; then
  apt_install libopenblas0-pthread || true
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  rm -f "$site/trocr_mlx_openblas.pth" "$site/_trocr_mlx_openblas.py"  # an earlier venv-wide hook
  if ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1; then
    "$venv/bin/python" scripts/build_cblas_shim.py \
      || say "MLX CPU: could not build the cblas shim (needs cc: apt-get install gcc); OpenBLAS is loaded globally instead"
    say "MLX CPU: the toolkit loads OpenBLAS for MLX on import (TROCR_MLX_OPENBLAS=0: off)"
  else
    say "MLX CPU: no OpenBLAS (apt-get install libopenblas0-pthread); MLX matmuls use the slow reference BLAS"
  fi
fi

trap - ERR
"$venv/bin/python" - <<'PY' || die "MLX does not import or run in the new environment"
import mlx.core as mx
x = mx.ones((2, 2)) @ mx.ones((2, 2))
mx.eval(x)
print(f"[setup] mlx {mx.__version__}, default device {mx.default_device()}")
try:
    import torch, transformers
    print(f"[setup] torch {torch.__version__} (cuda: {torch.cuda.is_available()}), transformers {transformers.__version__}")
except ImportError:
    print("[setup] torch/transformers not installed (--mlx-only)")
try:
    import mlx_vlm
    print(f"[setup] mlx-vlm {mlx_vlm.__version__} (whole-page OCR: scripts/ocr_batch.py)")
except ImportError:
    pass
PY
say "done. Activate with: source $venv/bin/activate"

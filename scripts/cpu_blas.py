"""OpenBLAS for MLX's Linux CPU build, in every program that imports MLX after this package.

MLX's Linux CPU wheel (mlx[cpu]) links netlib's reference BLAS (mlx_cpu.libs/libblas-*.so.3.10.0):
single-threaded and unblocked, about 10x slower float32 matmuls than OpenBLAS (BENCHMARKS.md).

libmlx.so takes exactly three functions from it, cblas_sgemm, cblas_dgemm and cblas_cgemm
(`nm -D --undefined-only libmlx.so`; its other undefined symbols are LAPACK's), and the dynamic loader
looks them up in the process's global scope before libmlx's own dependencies. Python loads extension
modules with RTLD_NOW, so they are bound when mlx is imported: a library that defines them and is in the
global scope by then wins (`LD_DEBUG=bindings`: "binding file .../libmlx.so to ...: normal symbol
`cblas_sgemm'"). No restart, no LD_PRELOAD.

What goes into the global scope matters for torch: libtorch_cpu exports its own (MKL) `sgemm_`/`dgemm_`
and binds its calls to them when torch is imported, through the global scope too. A whole OpenBLAS in
the global scope before torch is imported takes those over (as LD_PRELOAD does: the "OpenBLAS slows
torch" of the old venv-wide preload); torch imported before it keeps its own. So:

  - with the shim (scripts/cblas_shim.c, built into the venv by `python scripts/build_cblas_shim.py`,
    which ./setup_mlx.sh runs), only those three names enter the global scope, forwarding to an OpenBLAS
    opened with RTLD_LOCAL: torch keeps its BLAS whichever is imported first;
  - without it, OpenBLAS itself is loaded with RTLD_GLOBAL; torch imported later then runs on OpenBLAS's
    sgemm_, and one warning says so, with the fix.

`scripts/__init__.py` calls `install()`: the first `import mlx` after any `import scripts.<module>` (the
toolkit's own programs or a user's script) loads OpenBLAS first. `TROCR_MLX_OPENBLAS=0` turns it off;
`TROCR_MLX_OPENBLAS=/path/libopenblas.so` picks the library. When OpenBLAS cannot be used (not installed,
or mlx imported before this package), one warning says so, with the fix, when mlx is imported.
BENCHMARKS.md has the measurements (dev/blas_check.py: bindings and timings for each import order).
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Optional

ENV = "TROCR_MLX_OPENBLAS"  # "0": off; a path: that OpenBLAS; unset/"1": found in the usual places
SEARCH = ("/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",  # Debian/Ubuntu libopenblas0-pthread
          "/usr/lib/*-linux-gnu/libopenblas.so.0", "/usr/lib64/libopenblas.so.0",  # other packagings
          "/usr/lib/libopenblas.so.0")
FIX_INSTALL = "install OpenBLAS (Debian/Ubuntu: sudo apt-get install libopenblas0-pthread; ./setup_mlx.sh does it)"
FIX_ORDER = ("import the toolkit (any scripts.<module>) before mlx, or start Python with "
             "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")

SHIM_SOURCE = Path(__file__).with_name("cblas_shim.c")
SHIM_NAME = "libtrocr_mlx_cblas.so"
SHIM_ENV = "TROCR_MLX_CBLAS_SHIM"

_state = {"installed": False, "loaded": None, "via": None, "warned": False, "warned_torch": False, "reason": None}


def shim_path() -> Path:
    """Where the shim lives: this environment's lib/ folder (the venv's, for ./setup_mlx.sh's venv), or
    $TROCR_MLX_CBLAS_SHIM ("0": do without it)."""
    return Path(os.environ.get(SHIM_ENV) or Path(sys.prefix) / "lib" / SHIM_NAME)


def build_shim(out: Optional[Path] = None, cc: Optional[str] = None) -> Path:
    """Compile scripts/cblas_shim.c into `out` (default shim_path()) with $CC or cc. Raises RuntimeError
    with the compiler's message when it cannot."""
    out = Path(out or shim_path())
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc/gcc) found; Debian/Ubuntu: sudo apt-get install gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    done = subprocess.run([cc, "-O2", "-shared", "-fPIC", str(SHIM_SOURCE), "-o", str(tmp), "-ldl"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{cc} could not build {SHIM_SOURCE}:\n{done.stderr.strip()}")
    os.replace(tmp, out)
    return out


def find_openblas() -> Optional[str]:
    for pattern in SEARCH:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def mlx_cpu_build() -> bool:
    """True for the mlx[cpu] wheel on Linux (not the CUDA build, not macOS, whose MLX uses Accelerate)."""
    def installed(name):
        try:
            metadata.version(name)
            return True
        except metadata.PackageNotFoundError:
            return False

    return sys.platform.startswith("linux") and installed("mlx-cpu") and not installed("mlx-cuda-13")


def _mapped_openblas() -> Optional[str]:
    """The OpenBLAS file mapped into this process (e.g. by LD_PRELOAD), if any."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(" ")[-1]
                if "libopenblas" in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


def load_openblas() -> Optional[str]:
    """Load OpenBLAS with RTLD_GLOBAL, if this is MLX's Linux CPU build, it is not turned off and mlx is
    not imported yet. Returns the library's path when MLX will use it (also when LD_PRELOAD put it there)."""
    if _state["loaded"]:
        return _state["loaded"]
    choice = os.environ.get(ENV, "1")
    if choice == "0":
        _state["reason"] = f"turned off ({ENV}=0)"
        return None
    if not mlx_cpu_build():
        _state["reason"] = "not MLX's Linux CPU build"
        return None
    preloaded = (os.environ.get("LD_PRELOAD") or "") and _mapped_openblas()
    if preloaded:
        _state.update(loaded=preloaded, via="LD_PRELOAD")
        return preloaded
    if "mlx.core" in sys.modules:
        _state["reason"] = "mlx was imported before the toolkit, so it is bound to the reference BLAS"
        return None
    lib = choice if choice not in ("", "1") else find_openblas()
    if lib is None:
        _state["reason"] = "no OpenBLAS found (" + ", ".join(SEARCH[:1]) + ")"
        return None
    shim = shim_path()
    if os.environ.get(SHIM_ENV) != "0" and shim.is_file():
        try:  # opened locally first: only a shim that found OpenBLAS goes into the global scope
            if ctypes.CDLL(str(shim)).trocr_cblas_open(os.fsencode(lib)) == 0:
                ctypes.CDLL(str(shim), mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD)
                _state.update(loaded=lib, via=f"through {shim}")
                return lib
        except (OSError, AttributeError):
            pass  # a broken shim: load OpenBLAS itself below
    try:
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        _state["reason"] = f"cannot load {lib} ({e})"
        return None
    _state.update(loaded=lib, via="loaded globally (no shim: torch imported later uses it too)")
    return lib


def reexec_with_openblas() -> None:
    """Deprecated: programs used to restart themselves with LD_PRELOAD=OpenBLAS. Importing the toolkit
    does it in-process now (install()); kept so that programs still calling it keep working."""
    warnings.warn("cpu_blas.reexec_with_openblas() is no longer needed: importing the toolkit gives MLX "
                  "OpenBLAS (scripts/cpu_blas.py)", DeprecationWarning, stacklevel=2)
    load_openblas()


def set_blas_threads(n: int) -> bool:
    """Limit the OpenBLAS that MLX uses to `n` threads in this process (several worker processes share
    the cores). True if OpenBLAS is loaded and took it; MLX's own CPU ops run on one thread anyway."""
    lib = _state["loaded"] or load_openblas()  # loads it now when mlx is not imported yet
    if not lib:
        return False
    try:  # the same instance the shim (or the global load, or LD_PRELOAD) uses: dlopen returns it again
        ctypes.CDLL(lib).openblas_set_num_threads(int(n))
    except (AttributeError, OSError):
        return False
    return True


def blas() -> str:
    """The BLAS that MLX's CPU matmuls use in this process, in words (for benchmarks and metadata)."""
    if not mlx_cpu_build():
        return "not MLX's Linux CPU build (Accelerate on macOS, cuBLAS on the CUDA build)"
    if _state["loaded"]:
        return f"OpenBLAS ({_state['loaded']}{_openblas_details()}; {_state['via'] or 'preloaded'})"
    if "mlx.core" not in sys.modules:
        return "none yet (mlx is not imported)"
    return "the MLX wheel's reference BLAS (netlib, single-threaded)" + (
        f": {_state['reason']}" if _state["reason"] else "")


def _openblas_details() -> str:
    try:
        lib = ctypes.CDLL(_state["loaded"])
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return (f"; {lib.openblas_get_config().decode()}; core {lib.openblas_get_corename().decode()}; "
                f"{lib.openblas_get_num_threads()} threads")
    except (OSError, AttributeError):
        return ""


def warn_if_reference_blas() -> None:
    """One loud warning, with the fix, when MLX's CPU build runs on the reference BLAS (not when turned off)."""
    if _state["warned"] or _state["loaded"] or os.environ.get(ENV) == "0" or not mlx_cpu_build():
        return
    _state["warned"] = True
    fix = FIX_ORDER if "mlx was imported" in (_state["reason"] or "") else FIX_INSTALL
    warnings.warn(
        f"MLX runs on the reference BLAS of its Linux CPU wheel, about 10x slower matmuls than OpenBLAS "
        f"({_state['reason'] or 'OpenBLAS not loaded'}). To fix: {fix}. {ENV}=0 silences this.",
        RuntimeWarning, stacklevel=3)


def _warn_torch_interposed() -> None:
    if _state["warned_torch"]:
        return
    _state["warned_torch"] = True
    warnings.warn(
        f"torch is imported after OpenBLAS was loaded for MLX without the shim, so torch's matmuls run on "
        f"OpenBLAS instead of its own BLAS (faster or slower depending on the CPU). To keep them apart: "
        f"python scripts/build_cblas_shim.py (./setup_mlx.sh does it), or import torch before the toolkit.",
        RuntimeWarning, stacklevel=3)


class _BeforeMLX:
    """A sys.meta_path finder that finds nothing: it loads OpenBLAS when `mlx` is first imported, and
    notices a `torch` imported after a global OpenBLAS."""

    def find_spec(self, name, path=None, target=None):
        if name == "mlx" and not _state["loaded"]:
            load_openblas()
            warn_if_reference_blas()
        elif name == "torch" and (_state["via"] or "").startswith("loaded globally"):
            _warn_torch_interposed()
        return None


def install() -> None:
    """Make the first `import mlx` of this process load OpenBLAS first (see the module docstring).
    Called once by scripts/__init__.py; cheap: nothing is loaded until mlx is imported."""
    if _state["installed"]:
        return
    _state["installed"] = True
    if os.environ.get(ENV) == "0":
        _state["reason"] = f"turned off ({ENV}=0)"
        return
    if not sys.platform.startswith("linux"):
        return
    if "mlx" in sys.modules:  # too late to choose: say so (unless it was preloaded)
        load_openblas()
        warn_if_reference_blas()
        return
    sys.meta_path.insert(0, _BeforeMLX())


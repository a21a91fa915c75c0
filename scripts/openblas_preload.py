"""Startup hook that setup_mlx.sh installs into venv_mlx on Linux CPU machines (as _trocr_mlx_openblas.py,
imported from a .pth file): re-executes the interpreter once with OpenBLAS in LD_PRELOAD.

Why: MLX's Linux CPU wheel links netlib's reference BLAS, which is single-threaded and unblocked; with
OpenBLAS resolved first, MLX's float32 matmuls run 4-7x faster (BENCHMARKS.md). The dynamic loader
only honours LD_PRELOAD at process start, hence the re-exec. TROCR_MLX_OPENBLAS=0 turns it off.
"""

import os
import sys

OPENBLAS = "@OPENBLAS@"  # filled in by setup_mlx.sh


def _preload() -> None:
    if os.environ.get("TROCR_MLX_OPENBLAS", "1") == "0" or not os.path.exists(OPENBLAS):
        return
    current = os.environ.get("LD_PRELOAD", "")
    if OPENBLAS in current.split(":") or not getattr(sys, "orig_argv", None):
        return
    os.environ["LD_PRELOAD"] = f"{OPENBLAS}:{current}" if current else OPENBLAS
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:
        os.environ["LD_PRELOAD"] = current  # could not re-exec: carry on with the reference BLAS


_preload()

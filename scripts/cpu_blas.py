"""OpenBLAS for MLX's Linux CPU build, for the MLX command-line programs.

MLX's Linux CPU wheel (mlx[cpu]) links netlib's reference BLAS, which is single-threaded and unblocked:
a float32 matmul runs about 10x slower than with OpenBLAS (BENCHMARKS.md). The dynamic loader honours
LD_PRELOAD only at process start, so `reexec_with_openblas()` restarts the program once with OpenBLAS
preloaded. It is called from the `__main__` blocks of the MLX programs only, never on import and never
venv-wide: preloaded OpenBLAS also takes over torch's matmuls and makes them about 5x slower.
TROCR_MLX_OPENBLAS=0 turns it off.
"""

from __future__ import annotations

import glob
import os
import sys
from importlib import metadata


def find_openblas() -> str | None:
    found = sorted(glob.glob("/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0"))
    return found[0] if found else None


def mlx_cpu_build() -> bool:
    """True for the mlx[cpu] wheel (not the CUDA build, not macOS)."""
    def installed(name):
        try:
            metadata.version(name)
            return True
        except metadata.PackageNotFoundError:
            return False

    return sys.platform.startswith("linux") and installed("mlx-cpu") and not installed("mlx-cuda-13")


def reexec_with_openblas() -> None:
    if os.environ.get("TROCR_MLX_OPENBLAS", "1") == "0" or not mlx_cpu_build():
        return
    lib = find_openblas()
    current = os.environ.get("LD_PRELOAD", "")
    if lib is None or lib in current.split(":") or not getattr(sys, "orig_argv", None):
        return
    os.environ["LD_PRELOAD"] = f"{lib}:{current}" if current else lib
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:
        os.environ["LD_PRELOAD"] = current  # could not restart: carry on with the reference BLAS


def set_blas_threads(n: int) -> bool:
    """Limit a preloaded OpenBLAS to `n` threads in this process (several worker processes share the
    cores). True if OpenBLAS is loaded and took it; MLX's own CPU ops run on one thread anyway."""
    import ctypes

    try:
        fn = ctypes.CDLL(None).openblas_set_num_threads
    except (AttributeError, OSError):
        return False
    fn(int(n))
    return True

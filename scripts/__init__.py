"""The toolkit as a package: `from scripts.mlx_processor import load_mlx_processor` from the repository root."""

from scripts import cpu_blas as _cpu_blas

# On MLX's Linux CPU build, the first `import mlx` of the process loads OpenBLAS first (cpu_blas.py says why).
_cpu_blas.install()

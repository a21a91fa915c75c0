#!/usr/bin/env python3
"""Build the cblas shim that lets MLX's Linux CPU build use OpenBLAS without touching torch's BLAS.

    python scripts/build_cblas_shim.py            # compile scripts/cblas_shim.c into <venv>/lib/, then
                                                  # say which BLAS MLX uses in a fresh process
    python scripts/build_cblas_shim.py --check    # only say which BLAS MLX uses

./setup_mlx.sh runs it on Linux CPU machines. Without the shim the toolkit still gives MLX OpenBLAS, by
loading all of OpenBLAS globally (scripts/cpu_blas.py explains the difference). Needs a C compiler (cc).
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import subprocess
import sys
from pathlib import Path

from scripts import cpu_blas

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import scripts.mlx_processor; from scripts import cpu_blas; print(cpu_blas.blas())"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--check", action="store_true", help="do not build; only report the BLAS MLX uses")
    ap.add_argument("--output", type=Path, default=cpu_blas.shim_path(),
                    help="where to write the shim (default: %(default)s, where scripts/cpu_blas.py looks)")
    args = ap.parse_args(argv)
    if not args.check:
        if not cpu_blas.mlx_cpu_build():
            print("not MLX's Linux CPU build: no shim needed")
            return 0
        try:
            print(f"built {cpu_blas.build_shim(args.output)}")
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    # a fresh process: the BLAS is chosen when mlx is first imported
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT)
    print(f"MLX's BLAS: {out.stdout.strip() or out.stderr.strip()}")
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())

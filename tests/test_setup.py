"""Setup-level behaviour: the setup script's interface, and OpenBLAS for MLX's Linux CPU build."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.cpu_blas import find_openblas, mlx_cpu_build

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("from scripts.cpu_blas import reexec_with_openblas; reexec_with_openblas();"
         "import os, numpy as np, mlx.core as mx; a = np.random.default_rng(0).standard_normal((300, 200), np.float32);"
         "b = np.random.default_rng(1).standard_normal((200, 100), np.float32);"
         "print(os.environ.get('LD_PRELOAD', '')); print(float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a @ b).max()))")


def run_probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "LD_PRELOAD": "", **env})
    preload, err = out.stdout.split("\n")[:2]
    return preload, float(err)


@pytest.mark.skipif(not (mlx_cpu_build() and find_openblas()),
                    reason="applies to MLX's Linux CPU build with OpenBLAS installed (./setup_mlx.sh installs it)")
def test_mlx_programs_restart_with_openblas_and_stay_right():
    preload, err = run_probe()
    assert find_openblas() in preload.split(":")
    assert err < 1e-3
    preload, err = run_probe(TROCR_MLX_OPENBLAS="0")
    assert "openblas" not in preload and err < 1e-3


def test_importing_an_mlx_program_does_not_restart_the_process():
    # the restart lives in the __main__ blocks only: importing (as tests and handlers do) must not exec
    out = subprocess.run([sys.executable, "-c", "import scripts.mlx_inference;"
                          "import os; print(os.environ.get('LD_PRELOAD', ''))"],
                         capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "LD_PRELOAD": ""})
    assert out.stdout.strip() == ""


def test_setup_script_help_and_bad_option():
    out = subprocess.run(["bash", str(ROOT / "setup_mlx.sh"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--mlx-only" in out.stdout and "--fonts" in out.stdout and "--vlm" in out.stdout
    bad = subprocess.run(["bash", str(ROOT / "setup_mlx.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option '--nope'" in bad.stderr

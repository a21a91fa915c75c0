"""What setup_mlx.sh leaves behind: the OpenBLAS startup hook on Linux CPU machines."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

HOOK = Path(sysconfig.get_paths()["purelib"]) / "trocr_mlx_openblas.pth"
PROBE = ("import os, numpy as np, mlx.core as mx; a = np.random.default_rng(0).standard_normal((300, 200), np.float32);"
         "b = np.random.default_rng(1).standard_normal((200, 100), np.float32);"
         "print(os.environ.get('LD_PRELOAD', '')); print(float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a @ b).max()))")


def run_probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_PRELOAD": "", **env})
    preload, err = out.stdout.split("\n")[:2]
    return preload, float(err)


@pytest.mark.skipif(not HOOK.exists(), reason="setup_mlx.sh installs the hook on Linux CPU machines only")
def test_openblas_hook_preloads_and_matmuls_stay_right():
    preload, err = run_probe()
    assert "libopenblas" in preload
    assert err < 1e-3
    preload, err = run_probe(TROCR_MLX_OPENBLAS="0")
    assert "libopenblas" not in preload and err < 1e-3


def test_setup_script_help_and_bad_option():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["bash", str(root / "setup_mlx.sh"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--mlx-only" in out.stdout and "--fonts" in out.stdout
    bad = subprocess.run(["bash", str(root / "setup_mlx.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option '--nope'" in bad.stderr

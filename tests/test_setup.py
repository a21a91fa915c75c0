"""Setup-level behaviour: the setup script's interface, and OpenBLAS for MLX's Linux CPU build.

The BLAS tests run fresh Python processes (the BLAS is chosen when mlx is first imported) and check what
is bound and mapped, never how fast: `dev/blas_check.py` and BENCHMARKS.md have the timings.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import cpu_blas
from scripts.cpu_blas import find_openblas, mlx_cpu_build

ROOT = Path(__file__).resolve().parents[1]
needs_openblas = pytest.mark.skipif(not (mlx_cpu_build() and find_openblas()),
                                    reason="applies to MLX's Linux CPU build with OpenBLAS installed "
                                           "(./setup_mlx.sh installs it)")

# What a user's own script does: import the toolkit, then use MLX (and maybe torch); prints one JSON line.
PROBE = r"""
import json, os, sys
{before}
import numpy as np
import mlx.core as mx
from scripts import cpu_blas
{after}
a = np.random.default_rng(0).standard_normal((300, 200), np.float32)
b = np.random.default_rng(1).standard_normal((200, 100), np.float32)
err = float(np.abs(np.array(mx.array(a) @ mx.array(b)) - a @ b).max())
mapped = sorted({{os.path.realpath(line.split()[-1]) for line in open("/proc/self/maps") if "/" in line}})
print("PROBE " + json.dumps({{"err": err, "blas": cpu_blas.blas(), "mapped": mapped,
                              "preload": os.environ.get("LD_PRELOAD", "")}}))
"""


def run_probe(before="import scripts.mlx_processor", after="", ld_debug=False, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TROCR_MLX_", "LD_"))}
    environment.update(env)
    if ld_debug:
        environment["LD_DEBUG"] = "bindings"
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before, after=after)], capture_output=True,
                         text=True, cwd=ROOT, env=environment)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE "):]), out.stderr


def bound_to(stderr: str, library: str, symbol: str) -> set:
    """The files `library`'s `symbol` was bound to (LD_DEBUG=bindings)."""
    return {line.split(" to ")[1].split(" [")[0] for line in stderr.splitlines()
            if "binding file " in line and library in line.split(" to ")[0] and line.endswith(f"`{symbol}'")}


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    try:
        return cpu_blas.build_shim(tmp_path_factory.mktemp("shim") / cpu_blas.SHIM_NAME)
    except RuntimeError as e:
        pytest.skip(f"cannot build the cblas shim here: {e}")


@needs_openblas
def test_importing_the_toolkit_gives_mlx_openblas_in_this_process(shim):
    openblas = os.path.realpath(find_openblas())
    result, err = run_probe(TROCR_MLX_CBLAS_SHIM=str(shim))
    assert openblas in result["mapped"] and str(shim) in result["mapped"]
    assert result["blas"].startswith("OpenBLAS") and result["preload"] == ""  # no restart, no LD_PRELOAD
    assert result["err"] < 1e-3 and "RuntimeWarning:" not in err
    # a user's script that only does `import scripts` and then imports mlx itself
    result, _ = run_probe(before="import scripts", TROCR_MLX_CBLAS_SHIM=str(shim))
    assert openblas in result["mapped"] and result["err"] < 1e-3


@needs_openblas
def test_turned_off_mlx_keeps_the_reference_blas():
    result, err = run_probe(TROCR_MLX_OPENBLAS="0")
    assert os.path.realpath(find_openblas()) not in result["mapped"]
    assert "reference BLAS" in result["blas"] and "turned off" in result["blas"]
    assert result["err"] < 1e-3 and "RuntimeWarning:" not in err  # off on purpose: no warning


@needs_openblas
@pytest.mark.parametrize("torch_first", [False, True], ids=["toolkit-then-torch", "torch-then-toolkit"])
def test_with_the_shim_torch_keeps_its_own_blas_in_either_order(shim, torch_first):
    torch_import = "import torch; torch.randn(64, 64) @ torch.randn(64, 64)"
    result, err = run_probe(before=(torch_import + "\nimport scripts.mlx_processor") if torch_first else
                            "import scripts.mlx_processor", after="" if torch_first else torch_import,
                            ld_debug=True, TROCR_MLX_CBLAS_SHIM=str(shim))
    assert bound_to(err, "libmlx.so", "cblas_sgemm") == {str(shim)}
    assert {Path(p).name for p in bound_to(err, "libtorch_cpu.so", "sgemm_")} == {"libtorch_cpu.so"}
    assert result["err"] < 1e-3 and "RuntimeWarning:" not in err


@needs_openblas
def test_without_the_shim_openblas_is_global_and_a_later_torch_is_warned_about_once():
    after = "import torch; torch.randn(64, 64) @ torch.randn(64, 64); import torch.nn"
    result, err = run_probe(after=after, ld_debug=True, TROCR_MLX_CBLAS_SHIM="0")
    openblas = os.path.realpath(find_openblas())
    assert {os.path.realpath(p) for p in bound_to(err, "libmlx.so", "cblas_sgemm")} == {openblas}
    assert {os.path.realpath(p) for p in bound_to(err, "libtorch_cpu.so", "sgemm_")} == {openblas}
    assert err.count("torch is imported after OpenBLAS was loaded for MLX without the shim") == 1
    assert "build_cblas_shim.py" in err and result["err"] < 1e-3


@needs_openblas
def test_mlx_imported_before_the_toolkit_is_said_once_with_the_fix():
    result, err = run_probe(before="import mlx.core\nimport scripts.mlx_processor\nimport scripts.decoding")
    assert "reference BLAS" in result["blas"] and os.path.realpath(find_openblas()) not in result["mapped"]
    assert err.count("MLX runs on the reference BLAS") == 1
    assert "import the toolkit (any scripts.<module>) before mlx" in err and result["err"] < 1e-3


@pytest.mark.skipif(not mlx_cpu_build(), reason="applies to MLX's Linux CPU build")
def test_no_openblas_is_said_once_with_the_fix(tmp_path):
    missing = tmp_path / "libopenblas.so.0"
    result, err = run_probe(TROCR_MLX_OPENBLAS=str(missing))
    assert "reference BLAS" in result["blas"] and str(missing) in result["blas"]
    assert err.count("MLX runs on the reference BLAS") == 1 and "apt-get install libopenblas0-pthread" in err
    assert result["err"] < 1e-3


@needs_openblas
def test_texts_are_the_same_on_openblas_and_the_reference_blas(tiny_model, shim):
    """A tiny checkpoint reads the same texts whichever BLAS MLX runs on."""
    _, mlx_dir = tiny_model
    code = ("import json, scripts.mlx_processor as P, hf_fixtures as F; from scripts import cpu_blas;"
            f"p = P.load_mlx_processor({str(mlx_dir)!r});"
            "print('TEXTS ' + json.dumps([cpu_blas.blas()[:8], p.process_batch(F.random_images(6), max_length=12, "
            "show_progress=False)]))")
    texts = {}
    for setting in ("1", "0"):
        env = {**os.environ, "TROCR_MLX_OPENBLAS": setting, "TROCR_MLX_CBLAS_SHIM": str(shim),
               "PYTHONPATH": str(ROOT / "tests")}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        texts[setting] = json.loads(out.stdout.split("TEXTS ", 1)[1])
    assert texts["1"][0] == "OpenBLAS" and texts["0"][0] != "OpenBLAS"
    assert texts["1"][1] == texts["0"][1] and len(texts["1"][1]) == 6


def test_every_program_imports_the_toolkit_before_mlx():
    """Run as files (`python scripts/x.py`), programs must import `scripts` before their first top-level
    `import mlx`, or the OpenBLAS hook comes too late."""
    programs = [p for d in ("scripts", "dev") for p in (ROOT / d).glob("*.py")] + list(ROOT.glob("*.py"))
    checked = 0
    for path in programs:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if "__main__" not in path.read_text(encoding="utf-8"):
            continue
        order = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                order += [(node.lineno, a.name.split(".")[0]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                order.append((node.lineno, node.module.split(".")[0]))
        top = {n.lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        mlx_lines = [ln for ln, mod in order if mod == "mlx" and ln in top]
        if not mlx_lines:
            continue
        checked += 1
        first_scripts = min((ln for ln, mod in order if mod == "scripts"), default=None)
        assert first_scripts is not None and first_scripts < min(mlx_lines), path
    assert checked >= 3


def test_setup_script_help_and_bad_option():
    out = subprocess.run(["bash", str(ROOT / "setup_mlx.sh"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--mlx-only" in out.stdout and "--fonts" in out.stdout and "--vlm" in out.stdout
    bad = subprocess.run(["bash", str(ROOT / "setup_mlx.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option '--nope'" in bad.stderr

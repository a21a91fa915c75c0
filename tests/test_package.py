"""The toolkit as users reach it: `scripts` imported from the repository root, and the CLIs run from anywhere."""

import subprocess
import sys

from conftest import ROOT


def run(args, cwd, **env):
    import os

    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_library_import_from_repository_root_keeps_torch_and_transformers_out():
    code = ("import sys\n"
            "from scripts.mlx_processor import load_mlx_processor\n"
            "from scripts.mlx_batch_processor import MLXBatchProcessor\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))\n")
    out = run(["-c", code], cwd=ROOT, PYTHONPATH="")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"the MLX path imported {out.stdout.strip()}"


def test_cli_runs_as_file_and_as_module_from_another_folder(tmp_path):
    as_file = run([str(ROOT / "scripts" / "mlx_inference.py"), "--help"], cwd=tmp_path, PYTHONPATH="")
    assert as_file.returncode == 0, as_file.stderr
    assert "--image" in as_file.stdout
    # `python -m` finds the package through PYTHONPATH, as for any package that is not installed
    as_module = run(["-m", "scripts.mlx_inference", "--help"], cwd=tmp_path, PYTHONPATH=str(ROOT))
    assert as_module.returncode == 0, as_module.stderr
    assert "--image" in as_module.stdout

"""Test setup: the toolkit is imported as the package `scripts` from the repository root."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random-weight TrOCR: (HF checkpoint folder, converted MLX folder). Built once per run."""
    from hf_fixtures import make_model, save_checkpoint
    from scripts.convert_trocr_to_mlx import convert

    root = tmp_path_factory.mktemp("tiny_model")
    hf = save_checkpoint(make_model("base"), root / "hf")
    mlx_dir = convert(hf, root / "mlx", verbose=False)
    return hf, mlx_dir

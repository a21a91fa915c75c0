"""Where the toolkit finds its models when none is named.

One small place to change when a bundled default model ships: every script that accepts
`--model` (or `model_path=None`) asks `default_model_path()`.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "mlx" / "default"


def default_model_path() -> Path:
    """The default converted MLX model folder, or FileNotFoundError saying how to make one."""
    if DEFAULT_MODEL_DIR.is_dir():
        return DEFAULT_MODEL_DIR
    raise FileNotFoundError(
        f"no model given and no default model at {DEFAULT_MODEL_DIR}. Pass --model DIR (model_path=...) "
        "pointing at a converted MLX model, or convert one to the default location, e.g.\n"
        f"    python scripts/convert_trocr_to_mlx.py --input microsoft/trocr-base-handwritten "
        f"--output {DEFAULT_MODEL_DIR}")


def resolve_model_path(model_path=None) -> Path:
    """`model_path` as a Path, or the default model when it is None."""
    return Path(model_path) if model_path is not None else default_model_path()

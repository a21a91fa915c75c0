#!/usr/bin/env python3
"""Form OCR with MLX: every red-box field of a scanned form, read with a TrOCR model converted to MLX.

Edit the configuration block below, or override it with flags:

    venv_mlx/bin/python ocr_inference_handler_mlx.py
    venv_mlx/bin/python ocr_inference_handler_mlx.py --image scans/ --output-dir outputs/batch \\
        --base-model models/mlx/default --finetuned-model models/pytorch/my-finetune

A model is a converted MLX folder, or a transformers checkpoint (folder or hub id) that is converted
once into MLX_CACHE_DIR/<name> and reused from there. The pipeline itself (alignment, crops, batched
OCR, outputs, directory mode) is scripts/form_pipeline.py, shared with ocr_inference_handler.py.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple


from scripts import form_pipeline as fp  # noqa: E402

# ---- Configuration: edit these for your setup; command-line flags override them ----------------
# Relative paths are taken from the repository root.
TEMPLATE_PATH = "examples/template.png"  # the form with its fields outlined in red
IMAGE_PATH = "examples/filled_form_scan.png"  # the binarized scan (image or PDF), or a folder of scans
OUTPUT_DIR = "outputs/form_mlx"
BASE_MODEL = None  # None: model_registry.default_model_path() (models/mlx/default)
FINETUNED_MODEL = None  # e.g. "models/mlx/my-finetune"; every region is then OCRed with both
MLX_CACHE_DIR = "models/mlx"  # where transformers checkpoints are converted to (once)
MAX_LENGTH = 64  # tokens per field, start token included
NUM_BEAMS = None  # None: the model's generation_config.json (the bundled model: 4 beams); 1 = greedy
BATCH_SIZE = 8  # fields per forward pass
DTYPE = None  # None (as stored), "float32", "float16" or "bfloat16"
DEVICE = None  # None (MLX's default: the GPU on Apple silicon), "cpu" or "gpu"
PDF_DPI = 200  # resolution PDF scans are rendered at (every page of a PDF is OCRed)
PREPROCESS = False  # True: binarize/deskew the scan first (for raw scans and photos)
ALIGN = True  # register the scan to the template before cropping
STRICT_ALIGN = False  # True: a scan that cannot be registered is an error, not a warning
GROUND_TRUTH = "examples/ground_truth.json"  # expected texts of the bundled example; None for your own scans
# -----------------------------------------------------------------------------------------------

DEFAULTS = fp.config_from_block(globals(), mlx_cache=fp.repo_path(MLX_CACHE_DIR, must_exist=False))


def is_mlx_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "processor").is_dir() and (
        (path / "model.safetensors").exists() or (path / "weights.npz").exists()
        or any(path.glob("model-*.safetensors")))


def _weights_stamp(folder: Path) -> list:
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def mlx_model_dir(model: Optional[str], cache_dir) -> Tuple[Path, Optional[str]]:
    """(converted MLX folder, the transformers source it was converted from or None).

    None -> the default model; an MLX folder as is; a transformers folder or hub id -> converted once
    into cache_dir/<name> (re-converted when the checkpoint's weight files change)."""
    from scripts.model_registry import DEFAULT_MODEL_DIR, default_model_path

    if model is None:
        try:
            return default_model_path(), None
        except FileNotFoundError:
            pass  # said again below in this handler's flags
        raise FileNotFoundError(
            f"no --base-model given and no default MLX model at {DEFAULT_MODEL_DIR}. Pass --base-model (an MLX "
            "folder, a transformers checkpoint folder or a hub id), or convert one to the default location:\n"
            f"    python scripts/convert_trocr_to_mlx.py --input microsoft/trocr-base-handwritten --output {DEFAULT_MODEL_DIR}")
    path = Path(model).expanduser()
    if is_mlx_model_dir(path):
        return path, None
    if path.is_dir() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: neither a converted MLX model (processor/ + weights) nor a "
                                "transformers checkpoint (config.json)")
    cache = Path(cache_dir)
    local = path.is_dir()
    source = str(path.resolve()) if local else str(model)
    name = path.name if local else str(model).rstrip("/").split("/")[-1]
    candidates = [cache / name, cache / f"{name}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"]
    stamp = _weights_stamp(path) if local else None
    for target in candidates:
        marker = target / "converted_from.json"
        if not target.exists():
            break
        if marker.exists():
            info = json.loads(marker.read_text())
            if info.get("source") == source:
                if is_mlx_model_dir(target) and (not local or info.get("weights") == stamp):
                    return target, source
                break  # same source, stale or incomplete: convert again into it
    else:
        raise FileExistsError(f"{candidates[0]} and {candidates[1]} exist and hold other models; "
                              "pass --mlx-cache to convert elsewhere")
    from scripts.convert_trocr_to_mlx import convert

    print(f"converting {model} to MLX -> {target} (once; reused next time)", file=sys.stderr)
    convert(model, target, verbose=False)
    src = Path(source) if local else None
    (target / "converted_from.json").write_text(json.dumps(
        {"source": source, "weights": _weights_stamp(src) if src else None}, indent=2))
    return target, source


class MLXEngine:
    """TrOCR on MLX (mlx_processor): one batch of crops in, (text, confidence, min_confidence) out."""

    name = "mlx"

    def __init__(self, model: Optional[str], config: fp.FormOCRConfig):
        import mlx.core as mx
        from scripts.mlx_processor import load_mlx_processor

        if config.device is not None:
            mx.set_default_device(mx.gpu if config.device == "gpu" else mx.cpu)
        self.path, self.source = mlx_model_dir(model, config.engine_options.get("mlx_cache")
                                               or fp.repo_path(MLX_CACHE_DIR, must_exist=False))
        self.processor = load_mlx_processor(self.path, dtype=config.dtype)
        self.gen = dict(max_length=config.max_length, num_beams=config.num_beams)
        self.dtype, self.device = config.dtype, str(mx.default_device())

    def recognize(self, images: Sequence) -> List[Tuple[str, float, float]]:
        from scripts.confidence import read_lines

        return read_lines(self.processor, images, **self.gen)

    def describe(self) -> dict:
        from scripts import cpu_blas

        return {"engine": self.name, "model": str(Path(self.path).resolve()), "converted_from": self.source,
                "dtype": self.dtype or "as stored", "device": self.device,
                "num_beams": self.processor.generation_options(**self.gen).num_beams,
                "blas": cpu_blas.blas() if "cpu" in self.device else None}


def make_engine(model: Optional[str], role: str, config: fp.FormOCRConfig) -> MLXEngine:
    return MLXEngine(model, config)


def add_engine_args(parser) -> None:
    parser.add_argument("--mlx-cache", default=DEFAULTS.engine_options["mlx_cache"],
                        help="folder that transformers checkpoints are converted into, once (default: %(default)s)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return fp.run_cli(
        argv, DEFAULTS, make_engine, prog="ocr_inference_handler_mlx.py",
        description="Form OCR with MLX: align a scanned form to its template, crop every red-box field "
                    "and read it with a TrOCR model (and a fine-tuned one, when given).",
        engine_help="Models (--base-model, --finetuned-model): a converted MLX folder, or a transformers "
                    "checkpoint folder / hub id,\nconverted once into --mlx-cache. --device: cpu or gpu.",
        device_choices=["cpu", "gpu"], add_engine_args=add_engine_args)


if __name__ == "__main__":
    sys.exit(main())

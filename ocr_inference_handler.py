#!/usr/bin/env python3
"""Form OCR with PyTorch + transformers: the same pipeline as ocr_inference_handler_mlx.py, the
reference engine (VisionEncoderDecoderModel.generate) instead of MLX.

Edit the configuration block below, or override it with flags:

    venv_mlx/bin/python ocr_inference_handler.py --base-model models/pytorch/default
    venv_mlx/bin/python ocr_inference_handler.py --image scans/ --base-model microsoft/trocr-base-handwritten

A model is a transformers TrOCR checkpoint: a local folder or a hub id (read from the local Hugging
Face cache, or downloaded when the machine is online). The pipeline is scripts/form_pipeline.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple


from scripts import form_pipeline as fp  # noqa: E402

# ---- Configuration: edit these for your setup; command-line flags override them ----------------
# Relative paths are taken from the repository root.
TEMPLATE_PATH = "examples/template.png"  # the form with its fields outlined in red
IMAGE_PATH = "examples/filled_form_scan.png"  # the binarized scan (image or PDF), or a folder of scans
OUTPUT_DIR = "outputs/form_pytorch"
BASE_MODEL = None  # None: models/pytorch/default (the transformers export of the default MLX model)
FINETUNED_MODEL = None  # e.g. "models/pytorch/my-finetune"; every region is then OCRed with both
MAX_LENGTH = 64  # tokens per field, start token included
NUM_BEAMS = None  # None: the model's generation_config.json (the bundled model: 4 beams); 1 = greedy
BATCH_SIZE = 8  # fields per forward pass
DTYPE = None  # None (as stored), "float32", "float16" or "bfloat16"
DEVICE = None  # None (cpu), "cpu", "cuda" or "mps"
PDF_DPI = 200  # resolution PDF scans are rendered at (every page of a PDF is OCRed)
PREPROCESS = False  # True: binarize/deskew the scan first (for raw scans and photos)
ALIGN = True  # register the scan to the template before cropping
STRICT_ALIGN = False  # True: a scan that cannot be registered is an error, not a warning
GROUND_TRUTH = "examples/ground_truth.json"  # expected texts of the bundled example; None for your own scans
# -----------------------------------------------------------------------------------------------

DEFAULTS = fp.config_from_block(globals())


def default_checkpoint() -> Path:
    """models/pytorch/default: the transformers export that sits beside the default MLX model."""
    from scripts.model_registry import DEFAULT_MODEL_DIR

    path = DEFAULT_MODEL_DIR.parent.parent / "pytorch" / "default"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no --base-model given and no default transformers checkpoint at {path}. Pass --base-model "
            "with a TrOCR checkpoint folder or hub id (e.g. microsoft/trocr-base-handwritten), or put the "
            "transformers export of the default model there.")
    return path


class TorchEngine:
    """TrOCR on PyTorch (transformers): one batch of crops in, (text, confidence, min_confidence) out."""

    name = "pytorch"

    def __init__(self, model: Optional[str], config: fp.FormOCRConfig):
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
        from scripts.weights import resolve_checkpoint

        self.torch = torch
        self.path = default_checkpoint() if model is None else resolve_checkpoint(model)
        if (self.path / "processor").is_dir() and not any(
                (self.path / name).exists() for name in ("processor_config.json", "preprocessor_config.json")):
            raise ValueError(f"{self.path}: a converted MLX model; the PyTorch handler needs the transformers "
                             "checkpoint (ocr_inference_handler_mlx.py reads MLX folders)")
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(f"{self.path / 'config.json'}: missing; not a transformers checkpoint folder")
        self.dtype = getattr(torch, config.dtype) if config.dtype else None
        self.device = torch.device(config.device or "cpu")
        kwargs = {"dtype": self.dtype} if self.dtype is not None else {}
        self.model = VisionEncoderDecoderModel.from_pretrained(str(self.path), **kwargs).to(self.device).eval()
        self.image_processor = AutoImageProcessor.from_pretrained(str(self.path))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        # None: the checkpoint's generation_config, as transformers' generate() reads it
        self.num_beams = config.num_beams or self.model.generation_config.num_beams or 1
        self.max_length = config.max_length

    def recognize(self, images: Sequence) -> List[Tuple[str, float, float]]:
        torch = self.torch
        pixels = self.image_processor([im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        pixels = pixels.to(self.device, dtype=self.dtype or self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(pixels, max_length=self.max_length, num_beams=self.num_beams,
                                      output_scores=True, return_dict_in_generate=True)
            if self.num_beams > 1:  # beam scores are already log-softmaxed
                steps = self.model.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                                             normalize_logits=False)
            else:
                steps = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        eos = self.model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        results = []
        for row, logprobs in zip(out.sequences.tolist(), steps.float().cpu().numpy()):
            generated = row[1:]  # after the decoder start token
            n = generated.index(eos) + 1 if eos in generated else len(generated)  # eos counted, padding not
            text = self.tokenizer.decode(row[:1 + n], skip_special_tokens=True)
            results.append((text, fp.confidence_from_logprob(float(logprobs[:n].mean()) if n else 0.0),
                            fp.confidence_from_logprob(float(logprobs[:n].min()) if n else 0.0)))
        return results

    def describe(self) -> dict:
        return {"engine": self.name, "model": str(Path(self.path).resolve()), "dtype": str(self.model.dtype).replace("torch.", ""),
                "device": str(self.device), "num_beams": self.num_beams}


def make_engine(model: Optional[str], role: str, config: fp.FormOCRConfig) -> TorchEngine:
    return TorchEngine(model, config)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return fp.run_cli(
        argv, DEFAULTS, make_engine, prog="ocr_inference_handler.py",
        description="Form OCR with PyTorch + transformers: align a scanned form to its template, crop every "
                    "red-box field and read it with a TrOCR model (and a fine-tuned one, when given).",
        engine_help="Models (--base-model, --finetuned-model): a transformers TrOCR checkpoint folder or hub id. "
                    "--device: cpu, cuda or mps.",
        device_choices=["cpu", "cuda", "mps"])


if __name__ == "__main__":
    sys.exit(main())

"""Images in, text out: the MLX TrOCR processor.

`load_mlx_processor(path)` reads a converted model folder (see convert_trocr_to_mlx.py):
    config.json, model.safetensors (or weights.npz), generation_config.json,
    processor/tokenizer.json, processor/tokenizer_config.json, processor/preprocessor_config.json.
Preprocessing reproduces transformers' ViT/DeiT image processors (PIL resize, center crop, rescale,
normalize; settings read by image_settings.py); tokens are decoded with the `tokenizers` library.
Neither torch nor transformers is imported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import mlx.core as mx
import numpy as np
from PIL import Image

from scripts.decoding import GenerationConfig, Generated, generate_tokens
from scripts.image_io import ImageLike, batches_by_width, load_image
from scripts.image_settings import ImageSettings, read_image_settings
from scripts.mlx_models import TrOCR, load_model

DEFAULT_MAX_LENGTH = 64


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


class ImagePreprocessor:
    """transformers' ViT/DeiT image processors (PIL backend), numerically: resize (to height x width, or the
    shortest edge with the aspect kept) -> center crop -> rescale -> normalize.

    Output is channels-last float32 (B, H, W, 3), the layout MLX convolutions take.
    """

    def __init__(self, settings: ImageSettings, image_size: tuple[int, int], source: str = "image processor"):
        if isinstance(settings, dict):  # a preprocessor_config.json's contents
            settings = ImageSettings.from_dict(settings, source)
        settings.check_fits(image_size, source)
        self.settings = settings
        self.size = tuple(image_size)
        self.do_resize = settings.do_resize
        self.resample = Image.Resampling(settings.resample)
        self.do_rescale = settings.do_rescale
        self.rescale_factor = settings.rescale_factor
        self.do_normalize = settings.do_normalize
        self.mean = np.asarray(settings.image_mean, dtype=np.float32)
        self.std = np.asarray(settings.image_std, dtype=np.float32)

    def __call__(self, images: Sequence[ImageLike]) -> np.ndarray:
        return np.stack([self.one(img) for img in images])

    def resize_target(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) after resizing; transformers' get_resize_output_image_size for a shortest edge."""
        size = self.settings.size
        if "height" in size:
            return size["height"], size["width"]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def one(self, image: ImageLike) -> np.ndarray:
        img = load_image(image, "RGB")
        if self.do_resize:
            h, w = self.resize_target(*img.size)
            if img.size != (w, h):
                img = img.resize((w, h), resample=self.resample)
        arr = np.asarray(img)
        if self.settings.do_center_crop:
            arr = center_crop(arr, self.settings.crop_size["height"], self.settings.crop_size["width"])
        if self.do_rescale:
            # transformers rescales in float64, then casts to float32
            arr = (arr.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            arr = arr.astype(np.float32)
        if self.do_normalize:
            arr = (arr - self.mean) / self.std
        return arr.astype(np.float32)


def center_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop of an (H, W, C) array: a too-small image is zero-padded around its centre."""
    h, w = arr.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return arr[top:top + height, left:left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((new_h, new_w) + arr.shape[2:], dtype=arr.dtype)
    top_pad, left_pad = -(-(new_h - h) // 2), -(-(new_w - w) // 2)  # ceil
    padded[top_pad:top_pad + h, left_pad:left_pad + w] = arr
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top):min(new_h, top + height), max(0, left):min(new_w, left + width)]


class TextDecoder:
    """Token ids -> text with the checkpoint's tokenizer.json (tokenizers library)."""

    def __init__(self, processor_dir: Path):
        from tokenizers import Tokenizer

        path = processor_dir / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; re-run convert_trocr_to_mlx.py to write the tokenizer")
        self.tokenizer = Tokenizer.from_file(str(path))
        cfg = _read_json(processor_dir / "tokenizer_config.json")
        # transformers 5.2x leaves BPE texts alone even when the config asks for the clean-up (it was made
        # for WordPiece and removes real spaces before punctuation), unless forced
        self.clean_up_spaces = bool(cfg.get("clean_up_tokenization_spaces", False)) and (
            type(self.tokenizer.model).__name__ != "BPE"
            or bool(cfg.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self.clean_up_spaces else text

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (applied when the tokenizer config asks for it)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


class MLXTrOCRProcessor:
    """A converted TrOCR model with its image preprocessing, tokenizer and generation defaults."""

    def __init__(self, model: TrOCR, preprocessor: ImagePreprocessor, text: TextDecoder,
                 generation: GenerationConfig, path: Optional[Path] = None):
        self.model = model
        self.preprocessor = preprocessor
        self.text = text
        self.generation_config = generation
        self.path = path

    # -- transformers-like pieces -----------------------------------------------------------------
    def __call__(self, images, return_tensors: str = "mlx") -> dict:
        if isinstance(images, (str, Path, Image.Image, np.ndarray)) and not (
            isinstance(images, np.ndarray) and images.ndim == 4
        ):
            images = [images]
        pixels = self.preprocessor(images)
        if return_tensors == "mlx":
            return {"pixel_values": mx.array(pixels)}
        if return_tensors == "np":
            return {"pixel_values": pixels}
        raise ValueError(f"return_tensors must be 'mlx' or 'np', got {return_tensors!r}")

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images -> normalised (B, H, W, 3) float32; safe to call from a background thread."""
        return self.preprocessor(images)

    def generation_options(self, **overrides) -> GenerationConfig:
        return self.generation_config.updated(**overrides)

    def generate(self, pixel_values, return_scores: bool = False, **gen):
        """Token ids (start token first) for each image; with return_scores, also mean log-probs."""
        pixel_values = pixel_values if isinstance(pixel_values, mx.array) else mx.array(np.asarray(pixel_values))
        out: Generated = generate_tokens(self.model, pixel_values, self.generation_options(**gen))
        return (out.sequences, out.scores) if return_scores else out.sequences

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        if isinstance(sequences, mx.array):
            sequences = np.array(sequences).tolist()
        return [self.text.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    # -- images in, text out ---------------------------------------------------------------------
    def process_image(self, image: ImageLike, max_length: Optional[int] = None, temperature: float = 1.0,
                      return_score: bool = False, **gen):
        """OCR one text-line image. Greedy unless do_sample=True (temperature only matters then)."""
        result = self.process_batch([image], batch_size=1, show_progress=False, max_length=max_length,
                                    temperature=temperature, return_scores=return_score, **gen)
        return result[0]

    def process_batch(self, images: Sequence[ImageLike], batch_size: int = 8, show_progress: bool = True,
                      max_length: Optional[int] = None, temperature: float = 1.0, return_scores: bool = False,
                      **gen):
        """OCR many images, at most `batch_size` at a time. Returns texts (or (text, score) pairs), in input order.

        Lines of similar aspect ratio are batched together, so a batch's rows finish decoding together
        (image_io.batches_by_width). Results equal those of the same images one by one. With
        num_return_sequences > 1 each entry is a list of that many alternatives.
        """
        cfg = self.generation_options(max_length=max_length, temperature=temperature, **gen)
        images = list(images)
        batches = batches_by_width(images, batch_size)
        results = [None] * len(images)
        bar = None
        if show_progress and len(batches) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(images), desc="OCR", unit="line")
        for batch in batches:
            pixels = mx.array(self.preprocess([images[i] for i in batch]))
            out = generate_tokens(self.model, pixels, cfg)
            texts = self.batch_decode(out.sequences)
            items = list(zip(texts, out.scores)) if return_scores else texts
            k = cfg.num_return_sequences
            if k > 1:
                items = [items[i:i + k] for i in range(0, len(items), k)]
            for i, item in zip(batch, items):
                results[i] = item
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return results


def load_mlx_processor(path, dtype: Optional[str] = None) -> MLXTrOCRProcessor:
    """Load a converted MLX TrOCR folder. `dtype` casts the weights (float32 / float16 / bfloat16)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model folder not found (convert one with scripts/convert_trocr_to_mlx.py)")
    model = load_model(path, dtype=dtype)
    processor_dir = path / "processor"
    if not processor_dir.is_dir():
        raise FileNotFoundError(f"{processor_dir}: missing; re-run convert_trocr_to_mlx.py to write the processor")
    settings, settings_file = read_image_settings(processor_dir)
    preprocessor = ImagePreprocessor(settings, model.config.encoder.image_size, str(settings_file))
    gen = {"max_length": DEFAULT_MAX_LENGTH,
           "decoder_start_token_id": model.config.decoder_start_token_id,
           "eos_token_id": model.config.eos_token_id,
           "pad_token_id": model.config.pad_token_id}
    gen.update({k: v for k, v in _read_json(path / "generation_config.json").items() if v is not None})
    return MLXTrOCRProcessor(model, preprocessor, TextDecoder(processor_dir), GenerationConfig.from_dict(gen), path)

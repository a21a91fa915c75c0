"""Reading images robustly: every supported format and mode in, 8-bit RGB (or gray) out.

One place decides what an image is, so the processor, the batch processor, the preprocessor and the
form handlers all accept the same inputs and fail with the same clear messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# Larger than any scanned page at 600 dpi; guards against decompression bombs and corrupt headers.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


class ImageReadError(ValueError):
    """An input that is not a readable image. The message names the file and the problem."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float gray -> 8-bit gray, scaled by the mode's range (not clipped)."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return Image.fromarray(arr)
    if arr.dtype == np.bool_:
        return Image.fromarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        hi = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    # I;16 and I modes: PIL keeps 16-bit data in int32 arrays; 65535 is the full scale.
    hi = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
    return Image.fromarray(np.clip(arr.astype(np.float64) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))


def normalize_mode(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """Any PIL mode -> `mode` ("RGB" or "L"). Transparency is composited over white, as on paper."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F", "1"):
        img = _to_8bit(img)
    # CMYK, YCbCr, LAB, P without alpha, L: PIL's own conversion is right.
    return img.convert(mode) if img.mode != mode else img


def _describe(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: image too large ({e})") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open ({e})") from None
    return img


def _load_frame(img: Image.Image, where: str, mode: str) -> Image.Image:
    try:
        img.load()
        return normalize_mode(img, mode)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{where}: image too large ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        # Truncated JPEG/PNG data, broken TIFF strips, unsupported compression...
        raise ImageReadError(f"{where}: corrupt or truncated image data ({e})") from None


def load_image(source: ImageLike, mode: str = "RGB") -> Image.Image:
    """A path, PIL image or numpy array (HxW gray, HxWx3 RGB, HxWx4 RGBA) -> PIL image in `mode`.

    For multi-page files this returns the first page; use `iter_pages` for all of them.
    """
    if isinstance(source, Image.Image):
        return _load_frame(source, _describe(source), mode)
    if isinstance(source, np.ndarray):
        return array_to_pil(source, mode)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        with _open(path) as img:
            return _load_frame(img, str(path), mode)
    raise ImageReadError(f"{_describe(source)}: expected a path, PIL image or numpy array")


def array_to_pil(arr: np.ndarray, mode: str = "RGB") -> Image.Image:
    """numpy image -> PIL. uint8 as is; uint16 scaled from 65535; float taken as 0..1 (or 0..255)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ImageReadError(f"<ndarray>: expected HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_:
            arr = arr.astype(np.float64)
            scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
            arr = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)  # uint8 HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA
    return normalize_mode(img, mode)


def iter_pages(path: Union[str, os.PathLike], mode: str = "RGB") -> Iterator[Image.Image]:
    """Every page of a (multi-page TIFF/WebP/...) file, each normalised to `mode`."""
    path = Path(path)
    with _open(path) as img:
        n = getattr(img, "n_frames", 1)
        for i, frame in enumerate(ImageSequence.Iterator(img)):
            where = f"{path} (page {i + 1}/{n})" if n > 1 else str(path)
            yield _load_frame(frame.copy(), where, mode)


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)

"""Scanned page -> the clean binarized page the OCR handlers read (library; CLI: ocr_preprocessor_handler.py).

grayscale -> optional denoise -> deskew -> binarization (Otsu, adaptive or Sauvola).

    from scripts.preprocessing import preprocess_page
    clean = preprocess_page(image, method="sauvola", denoise=False, deskew=True)  # PIL "L" image
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from scripts.image_io import IMAGE_EXTENSIONS, ImageLike, ImageReadError, is_image_path, load_image, open_pages

# Defaults (the handler's configuration block passes its own values for the first five).
METHOD = "sauvola"  # "otsu", "adaptive" or "sauvola"
DENOISE = False  # non-local-means denoising before binarization (slower; for noisy phone photos)
DENOISE_STRENGTH = None  # None: matched to the noise measured on the page; else a number (~5-40)
DESKEW = True
MAX_SKEW_DEG = 5.0  # largest rotation the deskew step searches for
SAUVOLA_WINDOW = 25  # pixels; about the height of a handwritten letter at 200-300 dpi
SAUVOLA_K = 0.2
ADAPTIVE_BLOCK = 31  # pixels, odd
ADAPTIVE_C = 10  # how much darker than its neighbourhood a pixel must be to count as ink

METHODS = ("otsu", "adaptive", "sauvola")


def to_gray(image: ImageLike) -> np.ndarray:
    """Any supported image (path, PIL, numpy; gray/RGB/RGBA/16-bit/CMYK) -> uint8 gray array."""
    return np.asarray(load_image(image, mode="L"))


def estimate_noise(gray: np.ndarray) -> float:
    """Standard deviation of the pixel noise (Immerkaer's fast estimator: mean absolute response to
    a Laplacian-difference kernel that cancels smooth structure)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = cv2.filter2D(gray.astype(np.float64), -1, kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).mean() / 6)


def denoise_image(gray: np.ndarray, strength: Optional[float] = DENOISE_STRENGTH) -> np.ndarray:
    """Non-local-means denoising. The filter strength works best close to the noise's standard
    deviation, so by default it is measured rather than fixed."""
    h = estimate_noise(gray) if strength is None else strength
    return cv2.fastNlMeansDenoising(gray, None, h=float(max(h, 3.0)), templateWindowSize=7, searchWindowSize=21)


# ---- Binarization: ink is 0 (black), paper 255 (white) -------------------------------------------

def binarize_otsu(gray: np.ndarray) -> np.ndarray:
    _, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return out


def binarize_adaptive(gray: np.ndarray, block: int = ADAPTIVE_BLOCK, c: float = ADAPTIVE_C) -> np.ndarray:
    block = block | 1  # OpenCV needs an odd block size
    return cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, c)


def binarize_sauvola(gray: np.ndarray, window: int = SAUVOLA_WINDOW, k: float = SAUVOLA_K,
                     dynamic_range: float = 128.0) -> np.ndarray:
    """Sauvola: threshold = mean * (1 + k * (std / R - 1)) over a local window. Local mean and std
    come from box filters (integral images), so it is fast and needs no scikit-image."""
    img = gray.astype(np.float64)
    size = (window | 1, window | 1)
    mean = cv2.boxFilter(img, -1, size, borderType=cv2.BORDER_REFLECT)
    sq_mean = cv2.boxFilter(img * img, -1, size, borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(np.maximum(sq_mean - mean * mean, 0))
    threshold = mean * (1 + k * (std / dynamic_range - 1))
    return np.where(img > threshold, 255, 0).astype(np.uint8)


def binarize(gray: np.ndarray, method: str = METHOD) -> np.ndarray:
    if method == "otsu":
        return binarize_otsu(gray)
    if method == "adaptive":
        return binarize_adaptive(gray)
    if method == "sauvola":
        return binarize_sauvola(gray)
    raise ValueError(f"unknown binarization method {method!r}; choose one of {', '.join(METHODS)}")


# ---- Deskew ------------------------------------------------------------------------------------

def rotate(gray: np.ndarray, angle_deg: float, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Rotate about the centre (counter-clockwise for positive angles, as cv2), same size, the
    uncovered corners filled white like paper."""
    h, w = gray.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    return cv2.warpAffine(gray, matrix, (w, h), flags=interpolation, borderValue=255)


def _profile_sharpness(ink: np.ndarray, angle: float) -> float:
    # Text lines and ruled lines give a spiky row profile when level, a smeared one when tilted.
    rows = rotate(ink, angle, cv2.INTER_LINEAR).sum(axis=1, dtype=np.float64)
    return float(np.sum(np.diff(rows) ** 2))


def estimate_skew(gray: np.ndarray, max_angle: float = MAX_SKEW_DEG) -> float:
    """The angle (degrees, counter-clockwise positive as cv2) by which the page content is rotated,
    found by the projection-profile method: coarse search, then a fine one around the best."""
    scale = min(1.0, 1200 / max(gray.shape))  # plenty of resolution for 0.05 deg; keeps it fast
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    # Ink as white-on-black so rotation fills the border with "no ink".
    ink = 255 - binarize_otsu(small)
    if not ink.any():
        return 0.0
    # Rotating the content by -a levels it when it was tilted by a.
    best = max(np.arange(-max_angle, max_angle + 1e-9, 0.25), key=lambda a: _profile_sharpness(ink, -a))
    fine = np.arange(best - 0.25, best + 0.25 + 1e-9, 0.02)
    return float(max(fine, key=lambda a: _profile_sharpness(ink, -a)))


def deskew_image(gray: np.ndarray, max_angle: float = MAX_SKEW_DEG) -> Tuple[np.ndarray, float]:
    """(levelled page, the skew angle that was removed)."""
    angle = estimate_skew(gray, max_angle)
    return (rotate(gray, -angle) if abs(angle) >= 0.01 else gray), angle


# ---- The pipeline ----------------------------------------------------------------------------

def preprocess_page(image: ImageLike, method: str = METHOD, denoise: bool = DENOISE, deskew: bool = DESKEW,
                    max_skew: float = MAX_SKEW_DEG, denoise_strength: Optional[float] = DENOISE_STRENGTH) -> Image.Image:
    """A scanned page -> binarized PIL "L" image (ink 0, paper 255)."""
    if method not in METHODS:
        raise ValueError(f"unknown binarization method {method!r}; choose one of {', '.join(METHODS)}")
    gray = to_gray(image)
    if denoise:
        gray = denoise_image(gray, denoise_strength)
    if deskew:
        gray, _ = deskew_image(gray, max_skew)
    return Image.fromarray(binarize(gray, method))


def _output_name(src: Path, page: int, n_pages: int) -> str:
    return f"{src.stem}_p{page + 1}.png" if n_pages > 1 else f"{src.stem}.png"


def preprocess_file(src: Path, output: Path, output_is_dir: bool, dpi: Optional[float] = None,
                    **options) -> Tuple[List[Path], List[str]]:
    """Every page of one image file or PDF (rendered at `dpi`) -> PNG(s). Returns (the paths written,
    an error message naming the file and page for each page that could not be read). A file that
    cannot be opened at all raises ImageReadError."""
    written, errors = [], []
    with open_pages(src, dpi) as pages:
        n = len(pages)
        for i in range(n):
            if output_is_dir:
                dst = output / _output_name(src, i, n)
            else:  # a named output file; several pages get numbered siblings of it
                dst = output if n == 1 else output.with_name(f"{output.stem}_p{i + 1}{output.suffix}")
            try:
                page = pages.read(i, mode="L")
            except ImageReadError as e:  # a bad page fails alone; the others are still written
                errors.append(str(e))
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            preprocess_page(page, **options).save(dst)
            written.append(dst)
    return written, errors


def collect_inputs(input_path: Path) -> List[Path]:
    if input_path.is_dir():
        files = sorted(p for p in input_path.iterdir() if p.is_file() and is_image_path(p))
        if not files:
            raise ImageReadError(f"{input_path}: folder contains no scans ({' '.join(IMAGE_EXTENSIONS)})")
        return files
    if not input_path.exists():
        raise ImageReadError(f"{input_path}: file not found")
    return [input_path]

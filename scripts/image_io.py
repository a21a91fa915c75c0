"""Reading images robustly: every supported format and mode in, 8-bit RGB (or gray) out.

One place decides what an image is, so the processor, the batch processor, the preprocessor and the
form handlers all accept the same inputs and fail with the same clear messages. A file is a sequence of
pages: one for most images, one per frame of a multi-page TIFF/WebP, one per page of a PDF (rendered
with pypdfium2 at `PDF_DPI`, or the dpi passed in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PDF_EXTENSIONS = (".pdf",)
IMAGE_EXTENSIONS = RASTER_EXTENSIONS + PDF_EXTENSIONS  # every file type read as pages (folders, patterns)
# PDF pages are rendered at this resolution unless told otherwise: form scans are 200-300 dpi, and the
# line crops TrOCR reads (384 px wide) gain nothing from more.
PDF_DPI = 200
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


def load_image(source: ImageLike, mode: str = "RGB", page: int = 1, dpi: Optional[float] = None) -> Image.Image:
    """A path, PIL image or numpy array (HxW gray, HxWx3 RGB, HxWx4 RGBA) -> PIL image in `mode`.

    For multi-page files (TIFF, PDF) this returns page `page` (1-based; the first by default); use
    `iter_pages` or `open_pages` for all of them. PDF pages are rendered at `dpi` (default `PDF_DPI`).
    """
    if isinstance(source, Image.Image):
        return _load_frame(source, _describe(source), mode)
    if isinstance(source, np.ndarray):
        return array_to_pil(source, mode)
    if isinstance(source, (str, os.PathLike)):
        with open_pages(source, dpi) as pages:
            if not 1 <= page <= len(pages):
                raise ImageReadError(f"{source}: no page {page} (the file has {len(pages)})")
            return pages.read(page - 1, mode)
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


def is_pdf(path: Union[str, os.PathLike]) -> bool:
    """A PDF by its extension or, whatever its name, by its header ("%PDF-" within the first 1 KiB)."""
    if str(path).lower().endswith(PDF_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as f:
            return b"%PDF-" in f.read(1024)
    except OSError:
        return False


class Pages:
    """The pages of one open file: `len(pages)`, `pages.read(i, mode)` (0-based) and `pages.where(i)`,
    the file (and page) for messages. A bad page raises ImageReadError for itself alone, so callers can
    fail one page and go on with the others. Use as a context manager, or call close()."""

    def __init__(self, path: Path, count: int):
        self.path, self.count = path, count

    def __len__(self) -> int:
        return self.count

    def where(self, i: int) -> str:
        return f"{self.path} (page {i + 1}/{self.count})" if self.count > 1 else str(self.path)

    def read(self, i: int, mode: str = "RGB") -> Image.Image:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _RasterPages(Pages):
    """Frames of an image file opened by PIL (one for most formats, several for TIFF/WebP/GIF)."""

    def __init__(self, path: Path):
        self.img = _open(path)
        try:
            count = int(getattr(self.img, "n_frames", 1) or 1)
        except Exception as e:  # noqa: BLE001 - a broken frame table is this file's error
            self.img.close()
            raise ImageReadError(f"{path}: cannot count pages ({e})") from None
        super().__init__(path, count)

    def read(self, i: int, mode: str = "RGB") -> Image.Image:
        where = self.where(i)
        try:
            if self.count > 1:
                self.img.seek(i)
            self.img.load()
            frame = self.img.copy()
        except Image.DecompressionBombError as e:
            raise ImageReadError(f"{where}: image too large ({e})") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageReadError(f"{where}: corrupt or truncated image data ({e})") from None
        frame = _load_frame(frame, where, mode)
        if frame.width < 1 or frame.height < 1:
            raise ImageReadError(f"{where}: empty image ({frame.width}x{frame.height})")
        return frame

    def close(self) -> None:
        self.img.close()


class _PdfPages(Pages):
    """Pages of a PDF, each rendered by PDFium (pypdfium2) at `dpi` on white, as a scanner would."""

    def __init__(self, path: Path, dpi: Optional[float] = None):
        try:
            import pypdfium2 as pdfium
        except ImportError:
            raise ImageReadError(f"{path}: a PDF; reading PDFs needs pypdfium2 "
                                 "(pip install -r requirements-mlx.txt)") from None
        self.dpi = float(dpi or PDF_DPI)
        if not 10 <= self.dpi <= 1200:
            raise ValueError(f"PDF resolution must be 10-1200 dpi, got {self.dpi:g}")
        try:
            self.doc = pdfium.PdfDocument(str(path))
            count = len(self.doc)
        except pdfium.PdfiumError as e:
            reason = str(e)
            if "password" in reason.lower():
                raise ImageReadError(f"{path}: encrypted PDF (needs a password): {reason}") from None
            raise ImageReadError(f"{path}: not a readable PDF ({reason})") from None
        if count < 1:
            self.doc.close()
            raise ImageReadError(f"{path}: PDF has no pages")
        super().__init__(path, count)

    def read(self, i: int, mode: str = "RGB") -> Image.Image:
        import pypdfium2 as pdfium

        where = self.where(i)
        scale = self.dpi / 72.0  # PDF units are 1/72 inch
        try:
            page = self.doc[i]
            try:
                w, h = page.get_size()
                if w * h * scale * scale > MAX_PIXELS:
                    raise ImageReadError(f"{where}: page too large at {self.dpi:g} dpi "
                                         f"({w / 72:.1f} x {h / 72:.1f} in); pass a lower dpi")
                bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255))
                img = bitmap.to_pil()
            finally:
                page.close()
        except pdfium.PdfiumError as e:
            raise ImageReadError(f"{where}: cannot render PDF page ({e})") from None
        img = _load_frame(img, where, mode)
        if img.width < 1 or img.height < 1:
            raise ImageReadError(f"{where}: empty page ({img.width}x{img.height} at {self.dpi:g} dpi)")
        img.info["dpi"] = (self.dpi, self.dpi)
        return img

    def close(self) -> None:
        self.doc.close()


def open_pages(path: Union[str, os.PathLike], dpi: Optional[float] = None) -> Pages:
    """The pages of an image file or a PDF (rendered at `dpi`, default `PDF_DPI`). Raises
    ImageReadError naming the file when it cannot be opened at all."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and is_pdf(path):
        return _PdfPages(path, dpi)
    return _RasterPages(path)


def count_pages(path: Union[str, os.PathLike], dpi: Optional[float] = None) -> int:
    with open_pages(path, dpi) as pages:
        return len(pages)


def iter_pages(path: Union[str, os.PathLike], mode: str = "RGB", dpi: Optional[float] = None) -> Iterator[Image.Image]:
    """Every page of a (multi-page TIFF/WebP/PDF/...) file, each normalised to `mode`."""
    with open_pages(path, dpi) as pages:
        for i in range(len(pages)):
            yield pages.read(i, mode)


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def image_size(source: ImageLike):
    """(width, height) of an image, a path read only as far as its header; None when it cannot be told
    (the error, if any, comes where the image is loaded)."""
    if isinstance(source, Image.Image):
        return source.size
    if isinstance(source, np.ndarray):
        return (source.shape[1], source.shape[0]) if source.ndim >= 2 else None
    try:
        with Image.open(source) as img:
            return img.size
    except Exception:
        return None


def batches_by_width(images, batch_size: int) -> list[list[int]]:
    """Indices of `images` in batches of at most `batch_size`, lines of similar aspect ratio together.

    Every line is resized to the model's input size, so a line's width over its height is what predicts
    how many tokens it reads: sorting by it makes a batch's rows finish decoding together instead of the
    batch running as long as its longest line. The batches are as equal in size as possible (18 lines at
    batch size 8: 6, 6, 6), so one shape is compiled instead of two. Callers put results back in input order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = len(images)
    if n == 0:
        return []

    def aspect(i):
        size = image_size(images[i])
        return size[0] / max(size[1], 1) if size else 0.0

    order = sorted(range(n), key=aspect)
    count = -(-n // batch_size)
    base, extra = divmod(n, count)
    out, start = [], 0
    for j in range(count):
        size = base + (j < extra)
        out.append(order[start:start + size])
        start += size
    return out

"""Form templates: find the red field boxes, crop and draw. Registration is in alignment.py.

The one forms module both OCR handlers use. Coordinates are always template pixels: a scan is
warped into the template frame first (alignment.align_page), so a region's bbox means the same
thing on every page.

    regions = find_regions("examples/template.png")
    alignment = align_page(scan, "examples/template.png")      # from alignment
    crops = crop_regions(alignment.aligned, regions)
"""

from __future__ import annotations

import functools
import math
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scripts.image_io import ImageLike, load_image
from scripts.image_io import _describe as describe  # names a source in messages the way image_io does

# The Bogotá form's template (red boxes on a transparent page), as shipped with the toolkit.
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "template.png"

Box = Tuple[int, int, int, int]  # x, y, w, h in template pixels


class TemplateError(ValueError):
    """A template from which no usable field boxes can be read. The message names the file."""


# --------------------------------------------------------------------------------------------
# Region extraction
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegionConfig:
    """What counts as a field box on a template. Sizes are in template pixels."""

    # Redness: a pixel is part of an outline when R exceeds max(G, B) by this much (0-255) and its
    # HSV hue is within `max_hue_distance` of pure red. Semi-transparent red composited on white is
    # pink (~(254,146,127): redness 108); anti-aliased edges are paler, hence the low default.
    min_redness: int = 30
    max_hue_distance: int = 15  # OpenCV hue units (0-180)
    # Morphological closing (kernel size, 1 = off) bridges breaks in faded or dashed outlines. Off by
    # default: neighbouring boxes on the real template are only 1 px apart and closing would merge them.
    close_kernel: int = 1
    min_width: int = 15
    min_height: int = 10
    max_width: Optional[int] = None
    max_height: Optional[int] = None
    min_area_fraction: float = 0.0005  # of the template's area; drops specks and stray marks
    # A box is an outline, not a filled blob: its line may be at most this fraction of its short side.
    max_line_fraction: float = 0.25
    # Pixels left out inside the outline's inner edge so the line itself is never OCRed.
    inner_margin: int = 2
    # Two boxes share a row when their vertical overlap is at least this fraction of the shorter one.
    row_overlap: float = 0.5


@dataclass(frozen=True)
class Region:
    number: int  # 1-based, in reading order
    bbox: Box  # outer edge of the outline
    inner: Box  # crop box inside the outline
    row: int  # 1-based row index
    line_width: float  # measured outline thickness, pixels


def red_mask(rgb: np.ndarray, config: RegionConfig = RegionConfig()) -> np.ndarray:
    """uint8 mask (255 = red ink) of an RGB array, after any transparency was composited on white."""
    rgb16 = rgb.astype(np.int16)
    redness = rgb16[:, :, 0] - np.maximum(rgb16[:, :, 1], rgb16[:, :, 2])
    hue = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 0].astype(np.int16)
    hue_distance = np.minimum(hue, 180 - hue)
    mask = (redness >= config.min_redness) & (hue_distance <= config.max_hue_distance)
    mask = mask.astype(np.uint8) * 255
    if config.close_kernel > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (config.close_kernel,) * 2)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask


def _line_width(ink_pixels: int, w: int, h: int) -> float:
    """Thickness t of a rectangular outline from its pixel count: n = 2t(w+h) - 4t^2."""
    s = w + h
    disc = max(s * s - 4 * ink_pixels, 0)
    return (s - math.sqrt(disc)) / 4


def _group_rows(boxes: List[Box], min_overlap: float) -> List[List[Box]]:
    """Boxes -> rows, top to bottom, each row left to right. Taken by vertical centre, a box joins
    the first row whose span it overlaps enough, else starts a row. A row's span stays that of the
    box that started it, so a chain of slightly staggered boxes cannot merge two visual rows."""
    rows: List[Tuple[int, int, List[Box]]] = []  # (top, bottom, boxes)
    for box in sorted(boxes, key=lambda b: (b[1] + b[3] / 2, b[0])):
        x, y, w, h = box
        for top, bottom, members in rows:
            overlap = min(bottom, y + h) - max(top, y)
            if overlap >= min_overlap * min(h, bottom - top):
                members.append(box)
                break
        else:
            rows.append((y, y + h, [box]))
    rows.sort(key=lambda r: (r[0] + r[1]) / 2)
    return [sorted(members, key=lambda b: b[0]) for _, _, members in rows]


def find_regions(template: ImageLike, config: RegionConfig = RegionConfig()) -> List[Region]:
    """Every red field box on a template, numbered in reading order.

    Raises TemplateError naming the template when it has no red outline that passes the filters.
    """
    name = describe(template)
    rgb = np.asarray(load_image(template, mode="RGB"))
    height, width = rgb.shape[:2]
    mask = red_mask(rgb, config)
    if not mask.any():
        raise TemplateError(f"{name}: no red field outlines found (template has no red pixels)")

    # RETR_CCOMP: top-level contours are outer edges (holes are their children); a box drawn
    # inside another box's hole is top-level again, so nested boxes are not lost.
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    max_w = config.max_width or width
    max_h = config.max_height or height
    min_area = config.min_area_fraction * width * height
    boxes, widths = [], {}
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        if parent != -1:
            continue
        x, y, w, h = cv2.boundingRect(contour)
        if not (config.min_width <= w <= max_w and config.min_height <= h <= max_h and w * h >= min_area):
            continue
        ink = int(np.count_nonzero(mask[y:y + h, x:x + w]))
        t = _line_width(ink, w, h)
        if t > config.max_line_fraction * min(w, h):
            continue  # a filled red shape (logo, stamp), not a field outline
        boxes.append((x, y, w, h))
        widths[(x, y, w, h)] = t
    if not boxes:
        raise TemplateError(
            f"{name}: red pixels found but no box outline passes the size filters "
            f"(min {config.min_width}x{config.min_height} px, min area {config.min_area_fraction:.2%})"
        )

    regions = []
    for r, row in enumerate(_group_rows(boxes, config.row_overlap), start=1):
        for box in row:
            x, y, w, h = box
            inset = int(math.ceil(widths[box])) + config.inner_margin
            inner = (x + inset, y + inset, max(w - 2 * inset, 1), max(h - 2 * inset, 1))
            regions.append(Region(len(regions) + 1, box, inner, r, round(widths[box], 2)))
    return regions


def row_structure(regions: Sequence[Region]) -> List[int]:
    """Number of regions in each row, top to bottom (e.g. [1, 4, 4, 3, 5, 1])."""
    counts: Dict[int, int] = {}
    for region in regions:
        counts[region.row] = counts.get(region.row, 0) + 1
    return [counts[r] for r in sorted(counts)]


def structure_image(template: ImageLike, config: RegionConfig = RegionConfig()) -> Image.Image:
    """The template as a printed form would look in a binarized scan: outlines black on white.

    This is what a colour-free scan is registered against when no blank reference scan is given.
    """
    rgb = np.asarray(load_image(template, mode="RGB"))
    return Image.fromarray(255 - red_mask(rgb, config))


# --------------------------------------------------------------------------------------------
# Crops and drawing
# --------------------------------------------------------------------------------------------

def crop_regions(aligned_page: ImageLike, regions: Sequence[Region], inner: bool = True,
                 trim: bool = False) -> List[Image.Image]:
    """One crop per region from a page in the template frame (inner box by default, so no line).

    With `trim`, each crop is cut down to its ink (see `trim_to_ink`).
    """
    page = aligned_page if isinstance(aligned_page, Image.Image) else load_image(aligned_page, mode="RGB")
    crops = []
    for region in regions:
        x, y, w, h = region.inner if inner else region.bbox
        crop = page.crop((x, y, x + w, y + h))
        crops.append(trim_to_ink(crop) if trim else crop)
    return crops


def trim_to_ink(crop: Image.Image, threshold: int = 128, margin: float = 0.15, min_speck: int = 4) -> Image.Image:
    """Cut a field crop down to its ink plus a margin of `margin` x the ink height.

    Form boxes are much wider than what is written in them; a line recogniser resizes its input to a
    fixed shape, so a mostly empty box squashes the writing into a sliver and it is misread (on the
    bundled example, the default model: 3 of 18 fields right untrimmed, 11 trimmed). Specks smaller
    than `min_speck` pixels are ignored; a crop with no ink is returned unchanged.
    """
    ink = (np.asarray(crop.convert("L")) < threshold).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_speck]
    if not keep:
        return crop
    x0 = min(stats[i, cv2.CC_STAT_LEFT] for i in keep)
    y0 = min(stats[i, cv2.CC_STAT_TOP] for i in keep)
    x1 = max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in keep)
    y1 = max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in keep)
    m = int(round(margin * (y1 - y0))) + 2
    return crop.crop((max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, crop.width), min(y1 + m, crop.height)))


def font_path() -> str:
    """DejaVuSans.ttf as shipped by matplotlib (always installed), so labels render anywhere."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def load_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(), size)


# Control, surrogate, private-use, unassigned and line/paragraph-separator characters: raqm refuses some
# of them outright ("raqm_layout() failed", e.g. U+001C, U+0085), the rest draw as nothing or a box.
_UNDRAWABLE_CATEGORIES = {"Cc", "Cs", "Co", "Cn", "Zl", "Zp"}


@functools.lru_cache(maxsize=8)
def _font_codepoints(path: str) -> frozenset:
    """The code points the font file has glyphs for (its cmap, read by fontTools, a matplotlib dependency)."""
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap() or ())


def _escape_char(ch: str) -> str:
    cp = ord(ch)
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def printable_text(text: str) -> str:
    """`text` for a console: control, separator, unassigned and private characters escaped, so that a
    model's output cannot move the cursor or clear the terminal. For display only."""
    return "".join(_escape_char(ch) if unicodedata.category(ch) in _UNDRAWABLE_CATEGORIES else ch for ch in text)


def drawable_text(text: str, font_file: Optional[str] = None) -> str:
    """`text` as a picture can show it: characters the font cannot lay out (control characters,
    unassigned or private code points, characters without a glyph in the font) are written escaped,
    Python-style ("\\x1c", "\\u4e2d"). For pictures only: results keep the model's text as it is."""
    try:
        covered = _font_codepoints(font_file or font_path())
    except Exception:  # noqa: BLE001 - an unreadable cmap: escape by category only
        covered = None
    return "".join(_escape_char(ch) if unicodedata.category(ch) in _UNDRAWABLE_CATEGORIES
                   or (covered is not None and ord(ch) not in covered) else ch for ch in text)


def _fits(draw: ImageDraw.ImageDraw, label: str, font, width: float) -> bool:
    return draw.textlength(label, font=font) <= width


def draw_label(draw: ImageDraw.ImageDraw, xy: Tuple[float, float], label: str, max_width: float,
               size: int, min_size: int = 8, fill=(0, 0, 0), anchor: str = "lm") -> str:
    """Draw `label` at `xy`, shrunk (down to `min_size`) to fit `max_width`; never raises for the text.
    Returns what was drawn: the label with undrawable characters escaped (drawable_text); should the
    layout engine still refuse it, all non-ASCII escaped, drawn with PIL's basic layout."""
    shown = drawable_text(label)
    attempts = [(shown, None), (shown.encode("ascii", "backslashreplace").decode("ascii"), ImageFont.Layout.BASIC)]
    error = None
    for text, layout in attempts:
        try:
            font = ImageFont.truetype(font_path(), size, layout_engine=layout)
            while font.size > min_size and not _fits(draw, text, font, max_width):  # shrink to fit the box
                font = ImageFont.truetype(font_path(), font.size - 1, layout_engine=layout)
            draw.text(xy, text, fill=fill, font=font, anchor=anchor)
            return text
        except (OSError, RuntimeError, ValueError) as e:  # raqm/FreeType refused this text
            error = e
    raise RuntimeError(f"cannot draw label {label!r}: {error}")  # not reached: ASCII always lays out


def _rgb(page: ImageLike) -> Image.Image:
    return page.convert("RGB") if isinstance(page, Image.Image) else load_image(page, mode="RGB")


def draw_guides(page: ImageLike, regions: Sequence[Region], color=(255, 0, 0), width: int = 2,
                numbers: bool = True) -> Image.Image:
    """The page with each region's outline (and number) drawn over it, to check the alignment."""
    out = _rgb(page).copy()
    draw = ImageDraw.Draw(out)
    font = load_font(max(12, min(r.bbox[3] for r in regions) // 3)) if regions else None
    for region in regions:
        x, y, w, h = region.bbox
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=color, width=width)
        if numbers:
            draw.text((x + width + 2, y + width + 1), str(region.number), fill=color, font=font)
    return out


def region_filename(region: Region) -> str:
    return f"region_{region.number:02d}.png"


def save_region_crops(crops: Sequence[Image.Image], regions: Sequence[Region],
                      out_dir: os.PathLike) -> List[Path]:
    """Write each crop as out_dir/region_NN.png (NN = region number); returns the paths."""
    if len(crops) != len(regions):
        raise ValueError(f"{len(crops)} crops for {len(regions)} regions")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for crop, region in zip(crops, regions):
        path = out_dir / region_filename(region)
        crop.save(path)
        paths.append(path)
    return paths


def draw_annotations(page: ImageLike, regions: Sequence[Region], texts: Dict[int, str],
                     color=(0, 90, 200)) -> Image.Image:
    """The final page, twice the page's height: on top the scan with its numbered guides; below, the
    same boxes on white, each holding "number: recognised text" (texts keyed by region number). The
    boxes sit edge to edge on the form, so text written over the scan would hide the handwriting.
    Characters the font cannot lay out are shown escaped (drawable_text); drawing never fails on a text."""
    top = draw_guides(page, regions, color=color)
    bottom = Image.new("RGB", top.size, "white")
    draw = ImageDraw.Draw(bottom)
    for region in regions:
        x, y, w, h = region.bbox
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=color, width=2)
        label = f"{region.number}: {texts.get(region.number, '')}"
        draw_label(draw, (x + 4, y + h / 2), label, max_width=w - 8, size=max(10, min(int(h * 0.55), 32)))
    out = Image.new("RGB", (top.width, top.height * 2), "white")
    out.paste(top, (0, 0))
    out.paste(bottom, (0, top.height))
    return out


def similarity_matrix(angle_deg: float = 0.0, scale: float = 1.0, shift: Tuple[float, float] = (0, 0),
                      center: Tuple[float, float] = (0, 0)) -> np.ndarray:
    """3x3 map of a page rotated by `angle_deg` (counter-clockwise, as cv2) and scaled about
    `center`, then shifted: how a scanner displaces a page. Used to simulate scans and in tests."""
    m = cv2.getRotationMatrix2D(center, angle_deg, scale)
    m[:, 2] += shift
    return np.vstack([m, [0, 0, 1]])

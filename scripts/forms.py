"""Form templates: find the red field boxes, register a scan to the template, crop and draw.

The one forms module both OCR handlers use. Coordinates are always template pixels: a scan is
warped into the template frame first, so a region's bbox means the same thing on every page.

    regions = find_regions("examples/template.png")
    alignment = align_page(scan, "examples/template.png")
    crops = crop_regions(alignment.aligned, regions)
"""

from __future__ import annotations

import functools
import math
import os
import unicodedata
import warnings
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


class AlignmentError(RuntimeError):
    """A scan that could not be registered to its template. The message names the scan."""


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
# Alignment
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlignConfig:
    motion: str = "affine"  # "affine" or "homography" (ECC motion model)
    levels: int = 4  # pyramid levels, coarse to fine, halving each time
    blur_sigma: float = 2.0  # of the full-resolution images; spreads thin lines so ECC has slope
    iterations: int = 100
    epsilon: float = 1e-5
    # Pixels around the outlines' bounding box that registration against the outlines looks at.
    roi_margin: int = 40
    # Below this ECC correlation (0-1) the registration is not trusted.
    min_score: float = 0.3
    # Sanity limits on the found transform: scanners do not rotate or rescale a page wildly.
    max_rotation_deg: float = 10.0
    max_scale_change: float = 0.25
    # Starting guesses tried at the coarsest level (rotation in degrees, scale), best one refined.
    start_angles: Tuple[float, ...] = (-2.0, 0.0, 2.0)
    start_scales: Tuple[float, ...] = (0.95, 1.0, 1.05)
    # Registration methods tried in order: "ecc" (intensity, works on outlines alone) and "orb"
    # (features + RANSAC homography, needs a textured reference such as a blank form scan).
    methods: Tuple[str, ...] = ("ecc", "orb")
    orb_features: int = 4000


@dataclass
class Alignment:
    """A scan registered to a template. `matrix` (3x3) maps template pixels to scan pixels."""

    matrix: np.ndarray
    method: str  # "ecc-affine", "ecc-homography", "orb-homography" or "identity"
    score: float  # ECC correlation coefficient of template vs aligned scan (nan if not measured)
    aligned: Image.Image  # the scan warped into the template frame, L mode, template size
    ok: bool = True  # False when registration failed and the identity fallback was used
    message: str = ""

    def template_to_scan(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.matrix).reshape(-1, 2)

    def scan_to_template(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, np.linalg.inv(self.matrix)).reshape(-1, 2)


def _as_float(gray: np.ndarray, sigma: float) -> np.ndarray:
    img = gray.astype(np.float32) / 255.0
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img


def _rescale(matrix: np.ndarray, factor: float) -> np.ndarray:
    """A template->scan matrix at full resolution -> the same map on images scaled by `factor`."""
    s = np.diag([factor, factor, 1.0])
    return s @ matrix @ np.linalg.inv(s)


def ecc_score(reference: np.ndarray, scan: np.ndarray, matrix: np.ndarray, sigma: float) -> float:
    """Correlation of the reference with the scan warped by `matrix` (both blurred by `sigma`)."""
    h, w = reference.shape
    warped = cv2.warpPerspective(scan, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderValue=255)
    a = _as_float(reference, sigma).ravel()
    b = _as_float(warped, sigma).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0


def _ecc_level(ref: np.ndarray, scan: np.ndarray, matrix: np.ndarray, factor: float,
               config: AlignConfig, translation_first: bool) -> Tuple[float, np.ndarray]:
    """One pyramid level of ECC: both images scaled by `factor`, seeded by the full-resolution
    `matrix`; returns (correlation, refined full-resolution matrix)."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, config.iterations, config.epsilon)
    ref = cv2.resize(ref, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    img = cv2.resize(scan, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    # The same blur in each level's own pixels: wide at the coarse levels (a capture range of about
    # a row of boxes), fine at full resolution (accuracy).
    ref_f, img_f = _as_float(ref, config.blur_sigma), _as_float(img, config.blur_sigma)
    warp = _rescale(matrix, factor).astype(np.float32)
    if translation_first:
        _, t = cv2.findTransformECC(ref_f, img_f, warp[:2].copy(), cv2.MOTION_TRANSLATION, criteria, None, 1)
        warp[:2] = t
    if config.motion == "homography":
        score, warp = cv2.findTransformECC(ref_f, img_f, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 1)
    else:
        score, affine = cv2.findTransformECC(ref_f, img_f, warp[:2].copy(), cv2.MOTION_AFFINE, criteria, None, 1)
        warp = np.vstack([affine, [0, 0, 1]])
    return score, _rescale(warp.astype(np.float64), 1.0 / factor)


def _ecc(reference: np.ndarray, scan: np.ndarray, init: np.ndarray, config: AlignConfig) -> np.ndarray:
    """Coarse-to-fine ECC. Rows of similar boxes give ECC false optima one row off, so several
    starting rotations and scales each run through the two coarsest levels (cheap); the one that
    correlates best there (at the coarsest level all blur into blobs and score alike) is refined
    through the finer levels."""
    h, w = reference.shape
    levels = list(reversed(range(config.levels)))  # e.g. [3, 2, 1, 0]: factor 1/8 ... 1
    coarse, fine = levels[:2], levels[2:]
    best, errors = None, []
    for angle in config.start_angles:
        for scale in config.start_scales:
            matrix = init @ similarity_matrix(angle, scale, center=(w / 2, h / 2))
            try:
                for level in coarse:
                    score, matrix = _ecc_level(reference, scan, matrix, 0.5 ** level, config,
                                               translation_first=level == levels[0])
            except cv2.error as e:
                errors.append(e)
                continue
            if best is None or score > best[0]:
                best = (score, matrix)
    if best is None:
        raise errors[-1]
    matrix = best[1]
    for level in fine:
        _, matrix = _ecc_level(reference, scan, matrix, 0.5 ** level, config, translation_first=False)
    return matrix


def _orb(reference: np.ndarray, scan: np.ndarray, config: AlignConfig) -> np.ndarray:
    """Feature-based homography (ORB + RANSAC): needs a textured reference, e.g. a blank form scan."""
    orb = cv2.ORB_create(config.orb_features)
    kp_r, des_r = orb.detectAndCompute(reference, None)
    kp_s, des_s = orb.detectAndCompute(scan, None)
    if des_r is None or des_s is None or len(kp_r) < 8 or len(kp_s) < 8:
        raise cv2.error("too few ORB features")
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(des_r, des_s, k=2)
    good = [m for m, *rest in pairs if rest and m.distance < 0.75 * rest[0].distance]
    if len(good) < 8:
        raise cv2.error(f"only {len(good)} distinctive ORB matches")
    src = np.float32([kp_r[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kp_s[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if matrix is None or int(inliers.sum()) < 8:
        raise cv2.error("RANSAC found no consistent homography")
    return matrix


def _cv_reason(error: cv2.error) -> str:
    """The readable part of an OpenCV error ("Iterations do not converge" rather than a path)."""
    text = str(error).strip()
    if "error: (" in text:
        text = text.split("error: (", 1)[1].split(")", 1)[-1].strip()
    return text.split(".")[0] or "OpenCV error"


def _plausible(matrix: np.ndarray, init: np.ndarray, config: AlignConfig) -> Optional[str]:
    """Why a found transform is not a plausible scan of the page, or None if it is."""
    rel = np.linalg.inv(init) @ matrix  # what registration added to the size-matching guess
    a = rel[:2, :2] / rel[2, 2]
    sx, sy = np.linalg.norm(a[:, 0]), np.linalg.norm(a[:, 1])
    angle = math.degrees(math.atan2(a[1, 0], a[0, 0]))
    if abs(angle) > config.max_rotation_deg:
        return f"rotation {angle:.1f} deg exceeds {config.max_rotation_deg} deg"
    if max(abs(sx - 1), abs(sy - 1)) > config.max_scale_change:
        return f"scale {sx:.2f}x{sy:.2f} is implausible"
    if np.linalg.norm(rel[2, :2]) > 1e-3:
        return "perspective distortion is implausible for a scan"
    return None


def align_page(scan: ImageLike, template: ImageLike, reference: Optional[ImageLike] = None,
               config: AlignConfig = AlignConfig(), strict: bool = False,
               region_config: RegionConfig = RegionConfig()) -> Alignment:
    """Register a (binarized or gray) scan to a template and warp it into the template frame.

    Registration works on structure, not colour: the scan is matched against `reference` (an image
    in the template frame, ideally a clean scan of a blank form) or, by default, against the
    template's outlines drawn black (`structure_image`). ECC runs first; ORB+RANSAC is the
    fallback. When both fail, `strict=True` raises AlignmentError; otherwise a warning is issued
    and the scan is only resized to the template (identity registration, `ok=False`).
    """
    name = describe(scan)
    scan_gray = np.asarray(load_image(scan, mode="L"))
    tmpl_size = load_image(template, mode="RGB").size
    if reference is None:
        ref_gray = np.asarray(structure_image(template, region_config))
    else:
        ref_gray = np.asarray(load_image(reference, mode="L").resize(tmpl_size, Image.BILINEAR))
    tw, th = tmpl_size
    # Initial guess: the scan is the same page at some other resolution (matched on width).
    sx = scan_gray.shape[1] / tw
    init = np.diag([sx, sx, 1.0])
    # Against the outlines alone, only the boxes' area is compared: printed headers, logos and notes
    # elsewhere on the scan are not in the structure image and pull ECC into false optima.
    x0, y0, x1, y1 = _structure_roi(ref_gray, config.roi_margin) if reference is None else (0, 0, tw, th)
    ref_roi = ref_gray[y0:y1, x0:x1]
    offset = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])  # ROI pixels -> template pixels

    failures = []
    if scan_gray.std() < 1.0:
        failures.append("the scan is blank (no structure to register)")
    else:
        for method in config.methods:
            try:
                if method == "ecc":
                    method = f"ecc-{config.motion}"
                    matrix = _ecc(ref_roi, scan_gray, init @ offset, config) @ np.linalg.inv(offset)
                elif method == "orb":
                    method = "orb-homography"
                    matrix = _orb(ref_gray, scan_gray, config)
                else:
                    raise ValueError(f"unknown alignment method {method!r}; use 'ecc' and/or 'orb'")
            except cv2.error as e:
                failures.append(f"{method}: failed ({_cv_reason(e)})")
                continue
            problem = _plausible(matrix, init, config)
            score = ecc_score(ref_roi, scan_gray, matrix @ offset, config.blur_sigma)
            if problem is None and score < config.min_score:
                problem = f"correlation {score:.2f} below {config.min_score}"
            if problem is None:
                return Alignment(matrix, method, score, _warp(scan_gray, matrix, tmpl_size))
            failures.append(f"{method}: {problem}")

    message = f"{name}: could not align the scan to the template ({'; '.join(failures)})"
    if strict:
        raise AlignmentError(message)
    warnings.warn(message + "; using the unaligned page", stacklevel=2)
    score = ecc_score(ref_roi, scan_gray, init @ offset, config.blur_sigma) if scan_gray.std() >= 1.0 else float("nan")
    return Alignment(init, "identity", score, _warp(scan_gray, init, tmpl_size), ok=False, message=message)


def _structure_roi(structure: np.ndarray, margin: int) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the outlines' bounding box grown by `margin`, clipped to the image."""
    ys, xs = np.nonzero(structure < 128)
    h, w = structure.shape
    return (max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0),
            min(int(xs.max()) + 1 + margin, w), min(int(ys.max()) + 1 + margin, h))


def _warp(scan_gray: np.ndarray, matrix: np.ndarray, size: Tuple[int, int]) -> Image.Image:
    # Outside the scan is paper: fill white, so no black border gets OCRed.
    warped = cv2.warpPerspective(scan_gray, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderValue=255)
    return Image.fromarray(warped)


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
    bundled example: 2 of 18 fields right untrimmed, 13 trimmed). Specks smaller than `min_speck`
    pixels are ignored; a crop with no ink is returned unchanged.
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

"""Scan-to-template registration: robust first (the box structure), exact second (ECC), checked last.

    alignment = align_page(scan, "examples/template.png")
    alignment.ok, alignment.method, alignment.score, alignment.reasons
    crops = forms.crop_regions(alignment.aligned, regions)

What it does, and why in this order:
1. Ink: pixels darker than their surroundings (an adaptive threshold), so grey scans, binarized
   scans and faint red-printed boxes all give the same kind of map.
2. Coarse (cannot be fooled by the writing): the page's rotation from projection profiles (everything
   printed or written on a page turns with it), then scale and shift from correlating the scan's
   long horizontal and vertical strokes with the template's box edges. Text has few strokes as long
   as a box edge, and both directions must agree, so a filled-in form correlates like a blank one.
3. Exact: ECC (affine) between the same line maps, looking only near the template's lines.
4. Plausible: what a scanner does - rotation within a few degrees, near-isotropic scale, no shear.
5. Verified: every box edge that lies on the scanned page is looked for where the transform puts
   it (a profile across the edge, matched against the template's own profile there). A page is
   aligned (`ok`) only when enough edges, spread over the page, are found within tolerance.
A page that fails any check is returned with `ok=False` and the reasons (or raises with `strict`).

Matrices are 3x3 and map template pixels to scan pixels.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from scripts import forms
from scripts.image_io import ImageLike, load_image
from scripts.image_io import _describe as describe


class AlignmentError(RuntimeError):
    """A scan that could not be registered to its template. The message names the scan."""


@dataclass(frozen=True)
class AlignConfig:
    # Search ranges of the coarse stage, and what is plausible for a flatbed scan. The scale is
    # relative to the size guess (scan width / template width: the page at another resolution).
    max_rotation_deg: float = 5.0
    max_scale_change: float = 0.12
    max_anisotropy: float = 0.02  # |scale_x / scale_y - 1|
    max_shear_deg: float = 1.0  # how far the page's axes may be from perpendicular
    # Work resolutions, template pixels -> work pixels: coarse search, its refinement, ECC (capped
    # so that large templates stay fast: ECC runs at most at `ecc_max_side` pixels on the long side).
    coarse_factor: float = 0.25
    fine_factor: float = 0.5
    ecc_max_side: int = 1000
    ecc_iterations: int = 40
    ecc_epsilon: float = 1e-4
    # Verification, measured on the stretches of box edge that lie on the scanned page: the page is
    # verified when at least `min_edge_fraction` of them (and `min_edges`) are found where the
    # transform puts them, at least `min_box_fraction` of the boxes are (three of their sides), the
    # displacement the found edges still show moves no box corner by more than `edge_tolerance_px`
    # (scan pixels). On the benchmark (dev/benchmark_alignment.py, 400 pages): right pages >= 0.93
    # of the stretches and >= 0.88 of the boxes; the best false match (a near-symmetric form upside
    # down) 0.74 and 0.71.
    edge_tolerance_px: float = 1.5
    min_edge_fraction: float = 0.8
    min_box_fraction: float = 0.85
    min_edges: int = 8
    # With a reference (a blank-form scan in the template frame): ORB + RANSAC (a similarity),
    # verified by the reference's print, for pages whose box structure cannot be verified.
    orb_features: int = 4000


@dataclass
class Alignment:
    """A scan registered to a template. `matrix` (3x3) maps template pixels to scan pixels."""

    matrix: np.ndarray
    method: str  # "structure+ecc", "structure", "reference-orb+ecc" or "identity"
    score: float  # fraction of the on-page box edges found where the transform puts them (0-1)
    aligned: Image.Image  # the scan warped into the template frame, L mode, template size
    ok: bool = True  # False: the transform is not trusted (see `reasons`)
    message: str = ""
    reasons: List[str] = field(default_factory=list)  # why not ok (empty when ok)
    checks: Dict[str, object] = field(default_factory=dict)  # the measured figures behind ok
    scan_size: Tuple[int, int] = (0, 0)

    def template_to_scan(self, points: np.ndarray) -> np.ndarray:
        return apply(self.matrix, points)

    def scan_to_template(self, points: np.ndarray) -> np.ndarray:
        return apply(np.linalg.inv(self.matrix), points)


def apply(matrix: np.ndarray, points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(matrix, np.float64).T
    return out[:, :2] / out[:, 2:]


def _scaling(f: float) -> np.ndarray:
    return np.diag([f, f, 1.0])


# --------------------------------------------------------------------------------------------
# Ink and line maps
# --------------------------------------------------------------------------------------------

def ink_map(gray: np.ndarray, px_scale: float = 1.0) -> np.ndarray:
    """float32 0/1 map of the pixels darker than their surroundings. `px_scale` is the image's
    pixels per template pixel (sizes the neighbourhood). The threshold sits above the noise, so paper
    grain is not ink, and below the faintest printed line (semi-transparent red: ~70 levels)."""
    g = cv2.GaussianBlur(gray, (0, 0), 0.7 * max(px_scale, 1.0))
    # Noise after the blur, from the median absolute deviation of a 3x3 high-pass (0 when binarized).
    step = max(1, int(math.sqrt(g.size / 250_000)))
    sample = g[::step, ::step]
    high = sample.astype(np.int16) - cv2.medianBlur(sample, 3).astype(np.int16)
    noise = 1.4826 * float(np.median(np.abs(high)))
    block = 2 * int(round(12 * px_scale)) + 1
    c = max(12.0, 4.0 * noise)
    ink = cv2.adaptiveThreshold(g, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, c)
    return ink.astype(np.float32)


@dataclass(frozen=True)
class LineKernels:
    horizontal: int
    vertical: int


def line_kernels(regions: Sequence[forms.Region], factor: float) -> LineKernels:
    """Opening lengths (work pixels) that keep every box edge and little writing: half the shortest
    box side, so letters (shorter than the box they are written in) mostly fall away."""
    w = min(r.bbox[2] for r in regions)
    h = min(r.bbox[3] for r in regions)
    return LineKernels(max(int(0.5 * w * factor), 5), max(int(0.5 * h * factor), 4))


def line_maps(ink: np.ndarray, kernels: LineKernels) -> Tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical) long strokes of an axis-aligned ink map: grey-level openings."""
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, kernels.horizontal), np.uint8))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((kernels.vertical, 1), np.uint8))
    return horizontal, vertical


def _resize(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(int(round(w * factor)), 1), max(int(round(h * factor)), 1))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# Coarse registration
# --------------------------------------------------------------------------------------------

def _profile_sharpness(img: np.ndarray) -> float:
    rows, cols = img.sum(axis=1), img.sum(axis=0)
    return float(np.square(np.diff(rows)).sum() + np.square(np.diff(cols)).sum())


def estimate_rotation(ink: np.ndarray, max_deg: float, step: float, center=None,
                      around: float = 0.0) -> float:
    """The rotation (degrees, cv2's sense) that makes the page's rows and columns sharpest:
    projection profiles of the rotated ink, best angle refined by a parabola through its neighbours."""
    h, w = ink.shape
    center = center or (w / 2, h / 2)
    angles = np.arange(around - max_deg, around + max_deg + step / 2, step)
    scores = []
    for a in angles:
        m = cv2.getRotationMatrix2D(center, float(a), 1.0)
        scores.append(_profile_sharpness(cv2.warpAffine(ink, m, (w, h), flags=cv2.INTER_LINEAR)))
    i = int(np.argmax(scores))
    if 0 < i < len(angles) - 1:
        s0, s1, s2 = scores[i - 1], scores[i], scores[i + 1]
        denom = s0 - 2 * s1 + s2
        if denom < 0:
            return float(angles[i] + step * 0.5 * (s0 - s2) / denom)
    return float(angles[i])


@dataclass
class _Structure:
    """The template's box edges at one work resolution."""

    factor: float
    horizontal: np.ndarray
    vertical: np.ndarray


def _template_structure(mask: np.ndarray, regions, factor: float) -> _Structure:
    small = _resize(mask.astype(np.float32) / 255.0, factor)
    h, v = line_maps(small, line_kernels(regions, factor))
    return _Structure(factor, cv2.GaussianBlur(h, (0, 0), 1.0), cv2.GaussianBlur(v, (0, 0), 1.0))


def _correlate(image: np.ndarray, templ: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(templ)) or 1.0
    return cv2.matchTemplate(image, templ, cv2.TM_CCORR) / norm


def _scaled(img: np.ndarray, s: float) -> np.ndarray:
    h, w = img.shape
    m = np.array([[s, 0, 0], [0, s, 0]], np.float32)
    return cv2.warpAffine(img, m, (int(math.ceil(w * s)), int(math.ceil(h * s))), flags=cv2.INTER_LINEAR)


def _search(scan_h, scan_v, tmpl: _Structure, scales, margin: int, window=None):
    """Best (score, scale, tx, ty) of the template's edges over `scales` and shifts: tx, ty is where
    the template's origin lands in the scan map (work pixels). `window` (tx, ty, radius) limits the
    shifts looked at."""
    pad = lambda img: cv2.copyMakeBorder(img, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=0)
    sh, sv = pad(scan_h), pad(scan_v)
    norm_h, norm_v = float(np.linalg.norm(scan_h)) or 1.0, float(np.linalg.norm(scan_v)) or 1.0
    best = (-1.0, 1.0, 0.0, 0.0)
    for s in scales:
        th, tv = _scaled(tmpl.horizontal, s), _scaled(tmpl.vertical, s)
        if th.shape[0] > sh.shape[0] or th.shape[1] > sh.shape[1]:
            continue
        if window is not None:
            wx, wy, r = window
            x0 = int(np.clip(round(wx) + margin - r, 0, sh.shape[1] - th.shape[1]))
            y0 = int(np.clip(round(wy) + margin - r, 0, sh.shape[0] - th.shape[0]))
            x1, y1 = min(x0 + th.shape[1] + 2 * r, sh.shape[1]), min(y0 + th.shape[0] + 2 * r, sh.shape[0])
            ch = _correlate(sh[y0:y1, x0:x1], th) / norm_h
            cv = _correlate(sv[y0:y1, x0:x1], tv) / norm_v
        else:
            x0 = y0 = 0
            ch, cv = _correlate(sh, th) / norm_h, _correlate(sv, tv) / norm_v
        combined = np.sqrt(np.maximum(ch, 0) * np.maximum(cv, 0))
        _, value, _, (px, py) = cv2.minMaxLoc(combined)
        if value > best[0]:
            best = (float(value), float(s), float(px + x0 - margin), float(py + y0 - margin))
    return best


def coarse_register(ink: np.ndarray, px_scale: float, mask: np.ndarray, regions, config: AlignConfig,
                    structures: Dict[float, _Structure]) -> Tuple[np.ndarray, dict]:
    """Template->scan matrix from the page's rotation and a scale/shift search on the box edges."""
    tw, th = mask.shape[1], mask.shape[0]
    info = {}
    matrix = None
    for level, factor in enumerate((config.coarse_factor, config.fine_factor)):
        # The scan at `factor` work pixels per template pixel (as if at the guessed size).
        small = _resize(ink, factor / px_scale)
        hs, ws = small.shape
        center = (ws / 2, hs / 2)
        if level == 0:
            angle = estimate_rotation(small, config.max_rotation_deg, 0.5, center)
        else:
            angle = estimate_rotation(small, 0.6, 0.1, center, around=angle)
        rot = np.vstack([cv2.getRotationMatrix2D(center, angle, 1.0), [0, 0, 1]])
        upright = cv2.warpAffine(small, rot[:2], (ws, hs), flags=cv2.INTER_LINEAR)
        hmap, vmap = line_maps(upright, line_kernels(regions, factor))
        hmap, vmap = cv2.GaussianBlur(hmap, (0, 0), 1.0), cv2.GaussianBlur(vmap, (0, 0), 1.0)
        tmpl = structures.setdefault(factor, _template_structure(mask, regions, factor))
        margin = int((0.1 * max(tw, th) + 60) * factor)
        if level == 0:
            scales = np.arange(1 - config.max_scale_change, 1 + config.max_scale_change + 1e-9, 0.015)
            score, s, tx, ty = _search(hmap, vmap, tmpl, scales, margin)
        else:
            r = 4
            scales = np.arange(s - 0.0075, s + 0.0075 + 1e-9, 0.0025)
            k = config.fine_factor / config.coarse_factor
            score, s, tx, ty = _search(hmap, vmap, tmpl, scales, margin, window=(tx * k, ty * k, r))
        info[f"level{level}"] = {"angle": round(angle, 3), "scale": round(s, 4), "score": round(score, 4)}
        # template px -> work px (upright) -> work px (as scanned) -> scan px
        place = np.array([[s * factor, 0, tx], [0, s * factor, ty], [0, 0, 1]])
        matrix = _scaling(px_scale / factor) @ np.linalg.inv(rot) @ place
    info["coarse_score"] = info["level1"]["score"]
    return matrix, info


# --------------------------------------------------------------------------------------------
# ECC refinement
# --------------------------------------------------------------------------------------------

def _warp_to_template(img: np.ndarray, matrix: np.ndarray, size, factor: float = 1.0, border=0.0) -> np.ndarray:
    """`img` (scan pixels) resampled on the template grid scaled by `factor`."""
    m = matrix @ _scaling(1.0 / factor)
    w, h = int(round(size[0] * factor)), int(round(size[1] * factor))
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def ecc_refine(ink: np.ndarray, matrix: np.ndarray, mask: np.ndarray, regions,
               config: AlignConfig) -> Tuple[np.ndarray, float]:
    """ECC (affine) of the scan's long strokes against the template's box edges, from `matrix`,
    looking only near the template's lines. Returns (matrix, ECC correlation)."""
    th, tw = mask.shape
    factor = min(config.fine_factor, config.ecc_max_side / max(tw, th))
    kernels = line_kernels(regions, factor)
    tmpl = _resize(mask.astype(np.float32) / 255.0, factor)
    t_h, t_v = line_maps(tmpl, kernels)
    t_lines = np.maximum(t_h, t_v)
    near = cv2.dilate((t_lines > 0.2).astype(np.uint8), np.ones((9, 9), np.uint8))
    upright = _warp_to_template(ink, matrix, (tw, th), factor)
    s_h, s_v = line_maps(upright, kernels)
    s_lines = np.maximum(s_h, s_v)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, config.ecc_iterations, config.ecc_epsilon)
    warp = np.eye(2, 3, dtype=np.float32)
    score = float("nan")
    for sigma in (1.5, 0.8):
        a = cv2.GaussianBlur(t_lines, (0, 0), sigma)
        b = cv2.GaussianBlur(s_lines, (0, 0), sigma)
        score, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, criteria, near, 1)
    residual = np.vstack([warp.astype(np.float64), [0, 0, 1]])
    return matrix @ _scaling(1.0 / factor) @ residual @ _scaling(factor), float(score)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def transform_summary(matrix: np.ndarray) -> dict:
    """A template->scan matrix in words: rotation (degrees), scales, shear and shift (scan pixels)."""
    a = matrix[:2, :2] / matrix[2, 2]
    sx, sy = float(np.linalg.norm(a[:, 0])), float(np.linalg.norm(a[:, 1]))
    # Angle between the images of the template's x and y axes, minus 90 degrees.
    cos = float(a[:, 0] @ a[:, 1]) / (sx * sy)
    return {
        "rotation_deg": round(math.degrees(math.atan2(a[1, 0], a[0, 0])), 4),
        "scale_x": round(sx, 5),
        "scale_y": round(sy, 5),
        "shear_deg": round(math.degrees(math.asin(max(-1.0, min(1.0, cos)))), 4),
        "shift_px": [round(float(matrix[0, 2] / matrix[2, 2]), 2), round(float(matrix[1, 2] / matrix[2, 2]), 2)],
    }


def implausible(matrix: np.ndarray, size_guess: float, template_size, scan_size,
                config: AlignConfig) -> List[str]:
    """Why `matrix` is not how a scanner displaces a page (empty when it is)."""
    t = transform_summary(matrix)
    problems = []
    if abs(t["rotation_deg"]) > config.max_rotation_deg:
        problems.append(f"rotation {t['rotation_deg']:.2f} deg exceeds {config.max_rotation_deg} deg")
    scale = math.sqrt(t["scale_x"] * t["scale_y"]) / size_guess
    if abs(scale - 1) > config.max_scale_change + 0.01:
        problems.append(f"scale {scale:.3f} of the expected size is outside 1 +- {config.max_scale_change}")
    anisotropy = t["scale_x"] / t["scale_y"] - 1
    if abs(anisotropy) > config.max_anisotropy:
        problems.append(f"scale differs between x and y by {anisotropy:+.1%} (at most {config.max_anisotropy:.0%})")
    if abs(t["shear_deg"]) > config.max_shear_deg:
        problems.append(f"shear {t['shear_deg']:.2f} deg (at most {config.max_shear_deg} deg)")
    if np.abs(matrix[2, :2]).max() > 1e-9:
        problems.append("perspective distortion")
    centre = apply(matrix, [[template_size[0] / 2, template_size[1] / 2]])[0]
    if not (0 <= centre[0] <= scan_size[0] and 0 <= centre[1] <= scan_size[1]):
        problems.append("the template's centre falls outside the scan")
    return problems


@dataclass
class EdgeSample:
    """One stretch of a box edge: where it is (template px), whether it lies on the scanned page,
    whether its line was seen, and its offset across the edge (template px, + = right/down)."""

    region: int
    side: str  # top, bottom, left, right
    x: float
    y: float
    across: str  # "y" for top/bottom edges, "x" for left/right ones
    on_page: bool
    seen: bool = False
    offset: float = float("nan")
    correlation: float = 0.0


_SMOOTH = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
_SMOOTH /= _SMOOTH.sum()


def _edge_profile(img: np.ndarray, horizontal: bool, row: int, lo: int, hi: int, radius: int) -> np.ndarray:
    """Mean of `img` along an edge (between lo and hi) at each offset -radius..radius across it."""
    if horizontal:
        band = img[row - radius:row + radius + 1, lo:hi]
        return band.mean(axis=1) if band.size else np.zeros(0)
    band = img[lo:hi, row - radius:row + radius + 1]
    return band.mean(axis=0) if band.size else np.zeros(0)


def _best_shifts(p: np.ndarray, q: np.ndarray, search: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (sub-pixel shift, correlation, integer shift) of profile q[i] within the longer p[i],
    by normalized correlation over the shifts -search..search, refined by a parabola."""
    windows = np.lib.stride_tricks.sliding_window_view(p, q.shape[1], axis=1)  # (n, 2 search + 1, len q)
    wc = windows - windows.mean(axis=2, keepdims=True)
    qc = q - q.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(wc, axis=2) * np.linalg.norm(qc, axis=1)[:, None]
    corr = np.where(denom > 0, np.einsum("nsk,nk->ns", wc, qc) / np.maximum(denom, 1e-12), -1.0)
    rows = np.arange(len(p))
    best = corr.argmax(axis=1)
    inner = (best > 0) & (best < corr.shape[1] - 1)
    c0 = corr[rows, np.clip(best - 1, 0, None)]
    c1 = corr[rows, best]
    c2 = corr[rows, np.clip(best + 1, None, corr.shape[1] - 1)]
    curve = c0 - 2 * c1 + c2
    step = np.where(inner & (curve < 0), 0.5 * (c0 - c2) / np.where(curve < 0, curve, -1.0), 0.0)
    whole = best - search
    return whole + np.clip(step, -0.5, 0.5), c1, whole


def measure_edges(aligned_ink: np.ndarray, template_mask: np.ndarray, regions, matrix: np.ndarray,
                  scan_size, search: int = 4, half_window: int = 5, segment: int = 120) -> List[EdgeSample]:
    """Look for every box edge where `matrix` puts it, a stretch of up to `segment` template pixels at
    a time: the aligned scan's ink profile across the edge is matched (normalized correlation,
    shifts -search..search) against the template's own profile there. Both are blurred alike first:
    a scan merges lines a pixel or two apart (neighbouring boxes, a printed outline beside the red one)
    into one band, the template does not. A stretch is seen when the match is clear and not at the
    end of the search."""
    radius = half_window + search
    tmpl = template_mask.astype(np.float32) / 255.0
    h, w = aligned_ink.shape
    samples, profiles = [], []  # profiles: (sample, scan profile, template profile) of on-page stretches
    for region in regions:
        x, y, bw, bh = region.bbox
        t = max(region.line_width, 1.0)
        # Corners left out: rounded boxes curve there.
        cut_x, cut_y = min(0.15 * bw, 25), min(0.15 * bh, 25)
        sides = [("top", True, y + t / 2 - 0.5, x + cut_x, x + bw - cut_x),
                 ("bottom", True, y + bh - t / 2 - 0.5, x + cut_x, x + bw - cut_x),
                 ("left", False, x + t / 2 - 0.5, y + cut_y, y + bh - cut_y),
                 ("right", False, x + bw - t / 2 - 0.5, y + cut_y, y + bh - cut_y)]
        for side, horizontal, pos, lo, hi in sides:
            row = int(round(pos))
            n = int(np.clip(round((hi - lo) / segment), 1, 6))
            bounds = np.linspace(lo, hi, n + 1)
            # 5 points along each stretch, all mapped to the scan at once: on the page or not.
            along = (bounds[:-1, None] + (bounds[1:] - bounds[:-1])[:, None] * np.linspace(0, 1, 5)).ravel()
            pts = np.stack([along, np.full_like(along, pos)] if horizontal else [np.full_like(along, pos), along], 1)
            sp = apply(matrix, pts)
            inside = ((sp[:, 0] >= 2) & (sp[:, 0] <= scan_size[0] - 3) & (sp[:, 1] >= 2)
                      & (sp[:, 1] <= scan_size[1] - 3)).reshape(n, 5).all(axis=1)
            in_image = row - radius >= 0 and row + radius < (h if horizontal else w)
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                mid = (a + b) / 2
                sample = EdgeSample(region.number, side, mid if horizontal else pos, pos if horizontal else mid,
                                    "y" if horizontal else "x", bool(inside[k]) and in_image)
                samples.append(sample)
                if sample.on_page:
                    ia, ib = int(math.floor(a)), int(math.ceil(b))
                    profiles.append((sample, _edge_profile(aligned_ink, horizontal, row, ia, ib, radius),
                                     _edge_profile(tmpl, horizontal, row, ia, ib, radius)))
    if not profiles:
        return samples
    kernel = _SMOOTH.reshape(1, -1).astype(np.float32)
    smooth = lambda rows: cv2.filter2D(np.array(rows, np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
    p = smooth([pr[1] for pr in profiles]).astype(np.float64)
    q = smooth([pr[2] for pr in profiles]).astype(np.float64)[:, search:search + 2 * half_window + 1]
    strength = p.max(axis=1) - np.median(p, axis=1)
    shift, corr, whole = _best_shifts(p, q, search)
    for i, (sample, _, _) in enumerate(profiles):
        sample.correlation = float(corr[i])
        sample.seen = bool(corr[i] >= 0.7 and strength[i] >= 0.15 and abs(whole[i]) < search)
        sample.offset = float(shift[i]) if sample.seen else float("nan")
    return samples


def fit_error(samples: Sequence[EdgeSample], inlier_px: float = 1.0) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """The affine displacement field (3x3, template px -> template px, identity when the transform
    is exact) that best explains the seen edges' offsets: least squares, then again without the
    stretches more than `inlier_px` from the first fit. (None, mask) when the edges do not fix it."""
    seen = [s for s in samples if s.seen]
    inliers = np.ones(len(seen), bool)
    params = None
    for _ in range(3):
        ax = [(s, ok) for s, ok in zip(seen, inliers) if s.across == "x" and ok]
        ay = [(s, ok) for s, ok in zip(seen, inliers) if s.across == "y" and ok]
        if len(ax) < 3 or len(ay) < 3:
            return None, inliers
        fits = []
        for group in (ax, ay):
            design = np.array([[1.0, s.x, s.y] for s, _ in group])
            target = np.array([s.offset for s, _ in group])
            # Centred and scaled so the rotation terms are not swamped by the offset term.
            coef, *_ = np.linalg.lstsq(design * [1, 1e-3, 1e-3], target, rcond=None)
            fits.append(coef * [1, 1e-3, 1e-3])
        params = fits
        predicted = np.array([params[0] @ [1, s.x, s.y] if s.across == "x" else params[1] @ [1, s.x, s.y]
                              for s in seen])
        residual = np.abs(predicted - np.array([s.offset for s in seen]))
        new = residual <= inlier_px
        if (new == inliers).all():
            break
        inliers = new
    (a0, a1, a2), (b0, b1, b2) = params
    return np.array([[1 + a1, a2, a0], [b1, 1 + b2, b0], [0, 0, 1.0]]), inliers


def _corner_displacement(correction: np.ndarray, regions) -> float:
    corners = np.array([[x + dx, y + dy] for x, y, w, h in (r.bbox for r in regions) for dx in (0, w) for dy in (0, h)],
                       dtype=np.float64)
    return float(np.linalg.norm(apply(correction, corners) - corners, axis=1).max())


def refine_with_edges(ink: np.ndarray, matrix: np.ndarray, mask: np.ndarray, regions, scan_size,
                      rounds: int = 2) -> np.ndarray:
    """Correct `matrix` by the affine displacement the box edges show (a few rounds)."""
    size = (mask.shape[1], mask.shape[0])
    for _ in range(rounds):
        samples = measure_edges(_warp_to_template(ink, matrix, size), mask, regions, matrix, scan_size)
        correction, _ = fit_error(samples)
        if correction is None:
            break
        matrix = matrix @ correction
        if _corner_displacement(correction, regions) < 0.05:
            break
    return matrix


def _box_evidence(samples: Sequence[EdgeSample], found: Sequence[EdgeSample]) -> Tuple[int, int]:
    """(boxes confirmed, boxes checkable). A side is found when at least half of its on-page
    stretches are; a box with at least two sides on the page is confirmed when three of them (or all
    its on-page sides, if fewer) are found. Boxes, not stretches: a false match can line up many
    stretches of a few long edges, never most boxes."""
    on = {}
    hit = {}
    for s in samples:
        if s.on_page:
            on[(s.region, s.side)] = on.get((s.region, s.side), 0) + 1
    for s in found:
        hit[(s.region, s.side)] = hit.get((s.region, s.side), 0) + 1
    boxes: Dict[int, List[bool]] = {}
    for (region, side), n in on.items():
        boxes.setdefault(region, []).append(2 * hit.get((region, side), 0) >= n)
    checkable = [sides for sides in boxes.values() if len(sides) >= 2]
    confirmed = sum(sum(sides) >= min(3, len(sides)) for sides in checkable)
    return confirmed, len(checkable)


def verify(samples: Sequence[EdgeSample], matrix: np.ndarray, regions, config: AlignConfig) -> Tuple[float, List[str], dict]:
    """(score, reasons, figures). score: the fraction of the checkable boxes whose edges were found
    where the transform puts them. The page is verified (no reasons) when enough boxes and edge
    stretches are found, in both directions, and the displacement they show moves no box corner by
    more than the tolerance."""
    t = transform_summary(matrix)
    px = math.sqrt(t["scale_x"] * t["scale_y"])  # scan pixels per template pixel
    on_page = [s for s in samples if s.on_page]
    seen = [s for s in on_page if s.seen]
    correction, inliers = fit_error(samples, inlier_px=max(0.75, 0.75 / px))
    found = [s for s, ok in zip(seen, inliers) if ok] if correction is not None else []
    stretch_score = len(found) / len(on_page) if on_page else 0.0
    confirmed, checkable = _box_evidence(samples, found)
    score = confirmed / checkable if checkable else 0.0
    drift = _corner_displacement(correction, regions) * px if correction is not None else float("nan")
    figures = {"boxes_checkable": checkable, "boxes_confirmed": confirmed, "box_score": round(score, 4),
               "edges_on_page": len(on_page), "edges_seen": len(seen), "edges_found": len(found),
               "edge_score": round(stretch_score, 4),
               "corner_drift_px": None if math.isnan(drift) else round(drift, 3)}
    reasons = []
    if checkable < min(3, len(regions)) or len(on_page) < config.min_edges:
        reasons.append(f"only {checkable} boxes lie on the scanned page")
    elif correction is None:
        reasons.append(f"the box edges were not found in both directions ({len(seen)} of {len(on_page)} "
                       f"stretches seen)")
    elif score < config.min_box_fraction:
        reasons.append(f"{confirmed} of {checkable} boxes found where the transform puts them "
                       f"(need {config.min_box_fraction:.0%})")
    elif len(found) < config.min_edges or stretch_score < config.min_edge_fraction:
        reasons.append(f"{len(found)} of {len(on_page)} stretches of box edge found where the transform "
                       f"puts them (need {config.min_edge_fraction:.0%})")
    elif drift > config.edge_tolerance_px:
        reasons.append(f"the box edges are up to {drift:.1f} px from where the transform puts them "
                       f"(tolerance {config.edge_tolerance_px} px)")
    return score, reasons, figures


# --------------------------------------------------------------------------------------------
# The whole registration
# --------------------------------------------------------------------------------------------

def _orb(reference: np.ndarray, scan: np.ndarray, config: AlignConfig) -> np.ndarray:
    """Feature-based homography (ORB + RANSAC) of a textured reference (a blank form scan)."""
    orb = cv2.ORB_create(config.orb_features)
    kp_r, des_r = orb.detectAndCompute(reference, None)
    kp_s, des_s = orb.detectAndCompute(scan, None)
    if des_r is None or des_s is None or len(kp_r) < 8 or len(kp_s) < 8:
        raise cv2.error("too few ORB features")
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des_r, des_s, k=2)
    good = [m for m, *rest in pairs if rest and m.distance < 0.75 * rest[0].distance]
    if len(good) < 8:
        raise cv2.error(f"only {len(good)} distinctive ORB matches")
    src = np.float32([kp_r[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kp_s[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if matrix is None or int(inliers.sum()) < 8:
        raise cv2.error("RANSAC found no consistent transform")
    return np.vstack([matrix, [0, 0, 1]])


def _cv_reason(error: Exception) -> str:
    text = str(error).strip()
    if "error: (" in text:
        text = text.split("error: (", 1)[1].split(")", 1)[-1].strip()
    return text.split(".")[0] or "OpenCV error"


def _warp(scan_gray: np.ndarray, matrix: np.ndarray, size) -> Image.Image:
    # Outside the scan is paper: fill white, so no black border gets OCRed.
    return Image.fromarray(cv2.warpPerspective(scan_gray, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                               borderValue=255))


class _TemplateCache:
    """Per template: regions, red mask and its edge maps, so a folder of scans pays for them once."""

    def __init__(self):
        self._items = {}

    def get(self, template: ImageLike, region_config: forms.RegionConfig):
        key = None
        if isinstance(template, (str, os.PathLike)) and os.path.isfile(template):
            stat = os.stat(template)
            key = (os.path.abspath(template), stat.st_mtime_ns, stat.st_size, region_config)
        if key is not None and key in self._items:
            return self._items[key]
        rgb = np.asarray(load_image(template, mode="RGB"))
        item = (forms.find_regions(template, region_config), forms.red_mask(rgb, region_config), {})
        if key is not None:
            if len(self._items) >= 4:  # a few templates: directory mode uses one, benchmarks two
                self._items.pop(next(iter(self._items)))
            self._items[key] = item
        return item


_CACHE = _TemplateCache()


def align_page(scan: ImageLike, template: ImageLike, reference: Optional[ImageLike] = None,
               config: AlignConfig = AlignConfig(), strict: bool = False,
               region_config: forms.RegionConfig = forms.RegionConfig()) -> Alignment:
    """Register a (binarized or grey) scan to a template and warp it into the template frame.

    Returns an Alignment whose `ok` says whether the transform passed the plausibility check and
    the per-page verification; `reasons` says why not. A page that is not ok is still warped by the
    best transform found (or only resized when there is none: method "identity"), a warning names
    the scan, and with `strict=True` AlignmentError is raised instead. `reference` (a blank-form scan
    in the template frame) adds an ORB+ECC registration against it for pages whose boxes cannot be
    verified.
    """
    name = describe(scan)
    gray = np.asarray(load_image(scan, mode="L"))
    regions, mask, structures = _CACHE.get(template, region_config)
    th, tw = mask.shape
    scan_size = (gray.shape[1], gray.shape[0])
    px_scale = gray.shape[1] / tw  # the page at another resolution, matched on width
    guess = _scaling(px_scale)
    reasons: List[str] = []
    checks: Dict[str, object] = {}
    candidates = []  # (matrix, method)
    if gray.std() < 1.0:
        reasons.append("the scan is blank (no structure to register)")
    else:
        ink = ink_map(gray, px_scale)
        try:
            coarse, info = coarse_register(ink, px_scale, mask, regions, config, structures)
            checks.update(info)
            try:
                refined, ecc = ecc_refine(ink, coarse, mask, regions, config)
                checks["ecc_correlation"] = round(ecc, 4)
                candidates.append((refined, "structure+ecc"))
            except cv2.error as e:
                checks["ecc_error"] = _cv_reason(e)
            candidates.append((coarse, "structure"))
        except cv2.error as e:
            reasons.append(f"structure registration failed ({_cv_reason(e)})")
        if reference is not None:
            try:
                ref = np.asarray(load_image(reference, mode="L").resize((tw, th), Image.BILINEAR))
                candidates.append((_orb(ref, gray, config), "reference-orb"))
            except cv2.error as e:
                reasons.append(f"reference-orb: failed ({_cv_reason(e)})")

    best = None  # (ok, plausible, score, matrix, method, reasons, figures)
    for matrix, method in candidates:
        if method != "reference-orb":
            matrix = refine_with_edges(ink, matrix, mask, regions, scan_size)
        problems = implausible(matrix, px_scale, (tw, th), scan_size, config)
        aligned_ink = _warp_to_template(ink, matrix, (tw, th))
        score, why, figures = verify(measure_edges(aligned_ink, mask, regions, matrix, scan_size), matrix,
                                     regions, config)
        if method == "reference-orb" and why and not problems:
            # Boxes not visible (e.g. dropped out): the blank form's print (title, labels) must lie
            # where the transform puts it instead, all over the page.
            why, ref_figures = verify_reference(ink_map(ref, 1.0), aligned_ink, mask, px_scale, config)
            figures.update(ref_figures)
        why = [f"{method}: {w}" for w in problems + why]
        candidate = (not why, not problems, score, matrix, method, why, figures)
        if best is None or candidate[:3] > best[:3]:
            best = candidate
        if not why:
            break

    if best is None or not best[1]:
        # Nothing plausible: the page only resized to the template, which at least is no wild warp.
        matrix, method, score, ok = guess, "identity", 0.0, False
        if best is not None:
            reasons.extend(best[5])
            checks.update(best[6])
    else:
        ok, _, score, matrix, method, why, figures = best
        reasons.extend(why)
        checks.update(figures)
    checks.update(transform_summary(matrix))
    if ok:
        return Alignment(matrix, method, score, _warp(gray, matrix, (tw, th)), True, "", [], checks, scan_size)
    message = f"{name}: could not align the scan to the template ({'; '.join(reasons)})"
    if strict:
        raise AlignmentError(message)
    warnings.warn(message + "; its crops are not trustworthy", stacklevel=2)
    return Alignment(matrix, method, score, _warp(gray, matrix, (tw, th)), False, message, reasons, checks, scan_size)


def verify_reference(ref_ink: np.ndarray, aligned_ink: np.ndarray, template_mask: np.ndarray, px: float,
                     config: AlignConfig, tiles: Tuple[int, int] = (3, 2), search: int = 6,
                     min_peak: float = 0.15) -> Tuple[List[str], dict]:
    """(reasons, figures): in each tile of the page where the reference has print other than the
    boxes (which this scan is known not to show), the aligned scan's ink must correlate best at no
    shift, within the tolerance; at least three tiles must show a clear peak."""
    ref_ink = ref_ink.copy()
    ref_ink[cv2.dilate(template_mask, np.ones((7, 7), np.uint8)) > 0] = 0
    h, w = ref_ink.shape
    offsets, weak = [], 0
    for j in range(tiles[1]):
        for i in range(tiles[0]):
            x0, x1 = i * w // tiles[0], (i + 1) * w // tiles[0]
            y0, y1 = j * h // tiles[1], (j + 1) * h // tiles[1]
            ref = cv2.GaussianBlur(ref_ink[y0:y1, x0:x1], (0, 0), 1.0)
            if ref.mean() < 0.003 or x1 - x0 <= 2 * search or y1 - y0 <= 2 * search:
                continue
            scan = cv2.GaussianBlur(aligned_ink[max(y0 - search, 0):y1 + search, max(x0 - search, 0):x1 + search],
                                    (0, 0), 1.0)
            scan = cv2.copyMakeBorder(scan, search - (y0 - max(y0 - search, 0)), 0, search - (x0 - max(x0 - search, 0)),
                                      0, cv2.BORDER_CONSTANT, value=0)
            scan = cv2.copyMakeBorder(scan, 0, max(ref.shape[0] + 2 * search - scan.shape[0], 0), 0,
                                      max(ref.shape[1] + 2 * search - scan.shape[1], 0), cv2.BORDER_CONSTANT, value=0)
            corr = cv2.matchTemplate(scan, ref, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px_, py_) = cv2.minMaxLoc(corr)
            if peak < min_peak:
                weak += 1
                continue
            offsets.append(math.hypot(px_ - search, py_ - search) * px)
    figures = {"reference_tiles": len(offsets) + weak, "reference_tiles_clear": len(offsets),
               "reference_offset_max_px": round(max(offsets), 2) if offsets else None}
    if len(offsets) < 3:
        return [f"the reference's print was found clearly in only {len(offsets)} parts of the page"], figures
    if max(offsets) > config.edge_tolerance_px:
        return [f"the reference's print is up to {max(offsets):.1f} px from where the transform puts it"], figures
    return [], figures


def visible_fraction(matrix: np.ndarray, box, scan_size) -> float:
    """The part (0-1) of a template box that lies on the scanned page."""
    x, y, w, h = box
    quad = apply(matrix, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]).astype(np.float32)
    page = np.array([[0, 0], [scan_size[0], 0], [scan_size[0], scan_size[1]], [0, scan_size[1]]], np.float32)
    area = abs(cv2.contourArea(quad))
    if area <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(quad, page)
    return float(min(inter / area, 1.0))

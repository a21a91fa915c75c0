"""Filled, scanned forms with a known scan transform: an independent test set for alignment.

Written apart from the pipeline on purpose: nothing here imports scripts/forms.py (or any other
pipeline module). Box positions come from the template's alpha channel, the printed form, the fills
and the scan are drawn with PIL/OpenCV here, and the true template->scan matrix is built with numpy.

A page is the template printed on paper (its semi-transparent red boxes composited as they look),
optionally with dark cell outlines printed on the boxes, a small label beside (or inside) each box,
a faint title, sometimes a printed signature line and a printed cell the template does not mark, and
every box filled in a printed or handwriting-style Debian font with values from Faker (es_CO). The
page is then "scanned": a random similarity (rotation, scale, shift about the page centre) at
150, 200 or 300 dpi (the template taken as 200 dpi), blur, uneven light, noise, JPEG, and for the
binarized condition Otsu thresholding. Parts of the page may leave the scanned area.

    spec = real_template()                      # the 18-box Bogota template (square boxes)
    spec = rounded_template()                   # a 7-box template with rounded corners, drawn here
    scan = make_scan(spec, seed=3, outlines=True, binarized=False)
    scan.image, scan.matrix, scan.params        # PIL "L" scan, 3x3 template->scan, what was drawn

`python dev/form_scans.py --out DIR --count 12` writes scans, the templates and truth.json.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
REAL_TEMPLATE = ROOT / "examples" / "template.png"
TEMPLATE_DPI = 200  # what a template pixel is taken to be; scans are made at SCAN_DPIS
SCAN_DPIS = (150, 200, 300)

# Faker draws dates up to now unless told an end, so the scans drifted with the calendar. The same pin as
# scripts/text_sources.FAKER_DATES_UNTIL, written out because this module imports nothing of the toolkit.
DATES_UNTIL = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)

Box = Tuple[int, int, int, int]  # x, y, w, h: outer edge of a box, template pixels

# Fonts from Debian packages (fonts-*), looked up by file name under /usr/share/fonts. Missing ones
# are skipped; DejaVuSans (fonts-dejavu-core, or matplotlib's copy) is the last resort.
PRINTED_FONTS = ("LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "FreeSans.ttf", "FreeMono.ttf",
                 "OpenSans-Regular.ttf", "Dustismo_Roman.ttf", "GNUTypewriter.ttf", "DejaVuSans.ttf")
HANDWRITING_FONTS = ("Kristi.ttf", "LeckerliOne-Regular.ttf", "Domestic_Manners.ttf", "It_wasn_t_me.ttf",
                     "KleeOne-Regular.ttf", "Havana-Regular.otf", "Joscelyn-Regular.otf", "TypoScript.otf",
                     "lobster.otf", "Comfortaa-Regular.ttf")
FONT_ROOT = "/usr/share/fonts"

LABELS = ("Fecha", "Nombre", "Cédula", "No.", "Teléfono", "Dirección", "Barrio", "Correo", "Ciudad",
          "Valor", "Total", "Observaciones", "Firma", "Código", "Cuota", "Saldo", "Mes", "Ref.")
TITLES = ("SECRETARÍA DISTRITAL DE HACIENDA - FORMULARIO DE PAGO", "ALCALDÍA MAYOR DE BOGOTÁ D.C.",
          "SOLICITUD DE REGISTRO - DATOS DEL CONTRIBUYENTE", "FORMATO ÚNICO DE INSCRIPCIÓN")


@dataclass
class TemplateSpec:
    """A template and where its boxes are (found or drawn here, not by the pipeline)."""

    name: str
    image: Image.Image  # RGBA: red box outlines on a transparent page
    boxes: List[Box]
    radius: int = 0  # corner radius of the boxes, template pixels (0 = square)

    @property
    def size(self) -> Tuple[int, int]:
        return self.image.size


@dataclass
class Scan:
    image: Image.Image  # "L": grey, or 0/255 when binarized
    matrix: np.ndarray  # 3x3, template pixels -> scan pixels (the truth)
    params: dict  # what was drawn: condition, transform, dpi, fonts, texts...
    boxes: List[Box] = field(default_factory=list)  # the template's boxes (outer edges)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

def boxes_from_alpha(rgba: Image.Image) -> List[Box]:
    """Outer edges of the outlines on an RGBA template: the bounding boxes of its opaque connected
    parts (4-connected, so boxes one transparent pixel apart stay apart), specks dropped."""
    alpha = np.asarray(rgba.convert("RGBA"))[:, :, 3] > 0
    n, _, stats, _ = cv2.connectedComponentsWithStats(alpha.astype(np.uint8), connectivity=4)
    boxes = [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)
             if stats[i, 2] >= 15 and stats[i, 3] >= 10]
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def real_template(path=REAL_TEMPLATE) -> TemplateSpec:
    """The shipped 18-box template (square boxes, 2 px semi-transparent red lines)."""
    image = Image.open(path).convert("RGBA")
    return TemplateSpec("square", image, boxes_from_alpha(image), radius=0)


# A form laid out unlike the Bogota one: 7 boxes of mixed heights, corners rounded, one box against
# the right edge and one near the bottom (so shifted scans cut them), thicker lines.
ROUNDED_SIZE = (1400, 1000)
ROUNDED_BOXES = [(860, 90, 480, 80), (120, 240, 700, 90), (860, 240, 536, 90), (120, 400, 1000, 90),
                 (120, 560, 420, 90), (580, 560, 740, 90), (300, 720, 1020, 255)]
ROUNDED_RADIUS = 18


def rounded_template(size=ROUNDED_SIZE, boxes=ROUNDED_BOXES, radius: int = ROUNDED_RADIUS,
                     line: int = 3, color=(220, 30, 40), alpha: int = 150, supersample: int = 4) -> TemplateSpec:
    """A rounded-box template drawn here: anti-aliased (drawn `supersample` times larger, then
    reduced), semi-transparent red like the shipped one."""
    k = supersample
    big = Image.new("RGBA", (size[0] * k, size[1] * k), (0, 0, 0, 0))
    draw = ImageDraw.Draw(big)
    for x, y, w, h in boxes:
        draw.rounded_rectangle((x * k, y * k, (x + w) * k - 1, (y + h) * k - 1), radius=radius * k,
                               outline=color + (alpha,), width=line * k)
    image = big.resize(size, Image.LANCZOS)
    return TemplateSpec("rounded", image, [tuple(b) for b in boxes], radius=radius)


def template_for(name: str) -> TemplateSpec:
    if name == "square":
        return real_template()
    if name == "rounded":
        return rounded_template()
    raise ValueError(f"unknown template {name!r}: use 'square' or 'rounded'")


# --------------------------------------------------------------------------------------------
# The printed, filled form
# --------------------------------------------------------------------------------------------

def find_font_files(names: Sequence[str], root: str = FONT_ROOT) -> List[str]:
    files = {os.path.basename(p): p for p in glob.glob(os.path.join(root, "**", "*.[ot]tf"), recursive=True)}
    found = [files[n] for n in names if n in files]
    if not found:
        import matplotlib

        found = [os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")]
    return found


_FONT_CACHE: Dict[str, List[str]] = {}
_CMAPS: Dict[str, set] = {}


def covers(font_path: str, text: str) -> bool:
    """Whether the font draws every character of `text` (no tofu boxes: they look like small cells)."""
    if font_path not in _CMAPS:
        from fontTools.ttLib import TTFont

        _CMAPS[font_path] = set(TTFont(font_path, fontNumber=0).getBestCmap())
    return all(ord(c) in _CMAPS[font_path] for c in text if not c.isspace())


def fonts(style: str) -> List[str]:
    if style not in _FONT_CACHE:
        _FONT_CACHE[style] = find_font_files(PRINTED_FONTS if style == "printed" else HANDWRITING_FONTS)
    return _FONT_CACHE[style]


def _faker(seed: int):
    from faker import Faker

    fake = Faker("es_CO")
    fake.seed_instance(seed)
    return fake


def field_value(fake, rng: np.random.Generator, width_px: int) -> str:
    kinds = [lambda: fake.name(), lambda: fake.street_address(),
             lambda: fake.date(pattern="%d/%m/%Y", end_datetime=DATES_UNTIL),
             lambda: f"{rng.integers(1_000_000, 99_999_999):,}".replace(",", "."),
             lambda: fake.phone_number(), lambda: fake.email(), lambda: f"$ {rng.integers(1_000, 9_999_999):,}",
             lambda: fake.city(), lambda: fake.sentence(nb_words=int(rng.integers(3, 9)))]
    text = kinds[int(rng.integers(len(kinds)))]()
    return text if width_px > 250 else text[:max(int(width_px / 14), 4)]


def _font_fitting(path: str, text: str, height: float, max_width: float) -> ImageFont.FreeTypeFont:
    size = max(int(height), 8)
    font = ImageFont.truetype(path, size)
    while size > 8 and font.getlength(text) > max_width:
        size -= 1
        font = ImageFont.truetype(path, size)
    return font


def _free(rect, boxes: Sequence[Box], size) -> bool:
    x0, y0, x1, y1 = rect
    if x0 < 0 or y0 < 0 or x1 > size[0] or y1 > size[1]:
        return False
    return all(x1 <= bx - 2 or x0 >= bx + bw + 2 or y1 <= by - 2 or y0 >= by + bh + 2 for bx, by, bw, bh in boxes)


def render_form(spec: TemplateSpec, rng: np.random.Generator, outlines: bool, seed: int,
                fill: bool = True) -> Tuple[Image.Image, dict]:
    """The filled paper form in the template frame (RGB) and what was written on it. With
    fill=False the same form blank (what a user would scan as a reference)."""
    w, h = spec.size
    paper = tuple(int(v) for v in rng.integers(236, 252, 3))
    page = Image.new("RGB", (w, h), paper)
    # The template's red boxes as printed: its RGBA composited over the paper.
    page.paste(spec.image, (0, 0), spec.image)
    draw = ImageDraw.Draw(page)
    ink = int(rng.integers(20, 70))
    outline_width = int(rng.integers(1, 3))
    if outlines:
        for x, y, bw, bh in spec.boxes:
            rect = (x, y, x + bw - 1, y + bh - 1)
            if spec.radius:
                draw.rounded_rectangle(rect, radius=spec.radius, outline=(ink,) * 3, width=outline_width)
            else:
                draw.rectangle(rect, outline=(ink,) * 3, width=outline_width)

    printed = fonts("printed")
    title_font = ImageFont.truetype(printed[int(rng.integers(len(printed)))], int(rng.integers(24, 40)))
    title = TITLES[int(rng.integers(len(TITLES)))]
    faint = int(rng.integers(150, 200))
    draw.text((int(rng.integers(20, 140)), int(rng.integers(10, 40))), title, fill=(faint,) * 3, font=title_font)
    signature = bool(rng.random() < 0.5)
    if signature:  # a printed rule the template knows nothing of
        sx, sy = int(rng.integers(40, 160)), int(rng.integers(90, 170))
        length = int(rng.integers(250, 500))
        if _free((sx, sy - 30, sx + length, sy + 4), spec.boxes, (w, h)):
            draw.text((sx, sy - 24), "Firma del contribuyente", fill=(ink,) * 3,
                      font=ImageFont.truetype(printed[0], 16))
            draw.line((sx, sy, sx + length, sy), fill=(ink,) * 3, width=2)
        else:
            signature = False

    extra_box = bool(rng.random() < 0.5)
    if extra_box:  # a printed cell the template does not mark (e.g. "for official use")
        for _ in range(30):
            ew, eh = int(rng.integers(120, 420)), int(rng.integers(40, 100))
            ex, ey = int(rng.integers(10, max(w - ew - 10, 11))), int(rng.integers(60, max(h - eh - 10, 61)))
            if _free((ex - 20, ey - 20, ex + ew + 20, ey + eh + 20), spec.boxes, (w, h)):
                draw.rectangle((ex, ey, ex + ew, ey + eh), outline=(ink,) * 3, width=2)
                draw.text((ex + 6, ey + 4), "USO OFICIAL", fill=(ink,) * 3, font=ImageFont.truetype(printed[0], 14))
                break
        else:
            extra_box = False
    label_font = ImageFont.truetype(printed[int(rng.integers(len(printed)))], int(rng.integers(12, 18)))
    labels, inside = [], []  # inside: where a label printed in its cell ends (0: none)
    for i, (x, y, bw, bh) in enumerate(spec.boxes):
        label = f"{i + 1}. {LABELS[int(rng.integers(len(LABELS)))]}"
        lw = label_font.getlength(label)
        lh = label_font.size
        left = (x - lw - 8, y + 4, x - 4, y + 4 + lh)
        above = (x + 2, y - lh - 5, x + 2 + lw, y - 3)
        if _free(left, spec.boxes, (w, h)):
            pos = left[:2]
        elif _free(above, spec.boxes, (w, h)):
            pos = above[:2]
        else:  # printed inside the cell, top-left, as many forms do
            pos = (x + 4 + spec.radius // 2, y + 3)
        draw.text(pos, label, fill=(ink,) * 3, font=label_font)
        labels.append(label)
        inside.append(pos[0] + lw + 4 if pos[0] > x and pos[1] > y else 0)

    fake = _faker(seed)
    fills = []
    if not fill:
        return page, {"title": title, "labels": labels, "fills": fills, "signature_line": signature,
                      "extra_box": extra_box, "outline_width": outline_width if outlines else 0}
    pens = [(20, 30, 120), (25, 25, 30), (50, 40, 90)]
    for (x, y, bw, bh), label_end in zip(spec.boxes, inside):
        style = "handwriting" if rng.random() < 0.6 else "printed"
        start = max(x + int(rng.integers(4, 30)), int(label_end))
        text = field_value(fake, rng, x + bw - start)
        files = [f for f in fonts(style) if covers(f, text)] or fonts("printed")[-1:]
        font_path = files[int(rng.integers(len(files)))]
        inner_h = min(bh, 90) - 10
        font = _font_fitting(font_path, text, inner_h * rng.uniform(0.5, 0.8), x + bw - start - 16)
        left, top, right, bottom = font.getbbox(text)
        layer = Image.new("RGBA", (right - left + 20, bottom - top + 10), (0, 0, 0, 0))
        pen = pens[int(rng.integers(len(pens)))] if style == "handwriting" else (ink,) * 3
        ImageDraw.Draw(layer).text((10 - left, 5 - top), text, font=font, fill=pen + (255,))
        if style == "handwriting":
            layer = layer.rotate(float(rng.uniform(-2.5, 2.5)), resample=Image.BICUBIC, expand=True)
        # Writing starts near the left of the box, vertically about centred; handwriting may run over
        # the box's lines a little, as it does on paper.
        px = start - 10
        py = y + (bh - layer.height) // 2 + int(rng.integers(-6, 7))
        page.paste(layer, (px, py), layer)
        fills.append({"text": text, "font": os.path.basename(font_path), "style": style})
    return page, {"title": title, "labels": labels, "fills": fills, "signature_line": signature,
                  "extra_box": extra_box, "outline_width": outline_width if outlines else 0}


# --------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------

def scan_matrix(size, angle_deg: float, scale: float, shift: Tuple[float, float], dpi_factor: float) -> np.ndarray:
    """Template pixels -> scan pixels: the page rotated by `angle_deg` (counter-clockwise on the
    screen) and scaled by `scale` about its centre, shifted by `shift` scan pixels, all at
    `dpi_factor` scan pixels per template pixel."""
    cx, cy = size[0] / 2, size[1] / 2
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * scale
    m = np.eye(3)
    m[:2, :2] = rot * dpi_factor
    # The centre maps to the scan's centre plus the shift.
    m[:2, 2] = np.array([cx, cy]) * dpi_factor + np.asarray(shift, float) - m[:2, :2] @ np.array([cx, cy])
    return m


def scan_page(page: Image.Image, matrix: np.ndarray, out_size, rng: np.random.Generator, binarized: bool,
              dpi_factor: float) -> Tuple[Image.Image, dict]:
    """The page as a flatbed scanner delivers it: displaced, blurred, unevenly lit, noisy, JPEG;
    then grey, or Otsu-binarized."""
    lid = int(rng.integers(235, 256))
    arr = cv2.warpPerspective(np.asarray(page), matrix, out_size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(lid,) * 3).astype(np.float32)
    blur = float(rng.uniform(0.4, 1.2) * dpi_factor)
    arr = cv2.GaussianBlur(arr, (0, 0), blur)
    w, h = out_size
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    gy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    light = 1.0 - rng.uniform(0, 0.12) * (gx if rng.random() < 0.5 else 1 - gx) - rng.uniform(0, 0.06) * gy
    noise = float(rng.uniform(2, 9))
    arr = arr * light + rng.normal(0, noise, arr.shape).astype(np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    quality = int(rng.integers(55, 96))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    grey = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))
    if binarized:
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return Image.fromarray(grey), {"blur_sigma": round(blur, 3), "noise_sigma": round(noise, 2),
                                   "jpeg_quality": quality, "lid": lid}


def make_scan(spec: TemplateSpec, seed: int, outlines: bool, binarized: bool,
              max_angle: float = 3.0, scale_range=(0.94, 1.06), max_shift: float = 40.0,
              dpi: Optional[int] = None, transform: Optional[Tuple[float, float, Tuple[float, float]]] = None) -> Scan:
    """One filled and scanned page, deterministic from `seed` and the condition. `transform`
    (angle_deg, scale, shift) replaces the random displacement."""
    page, drawn = render_form(spec, _page_rng(spec, seed, outlines, binarized), outlines, seed)
    rng = np.random.default_rng([seed, int(outlines), int(binarized), len(spec.boxes), 1])
    dpi = int(dpi or SCAN_DPIS[int(rng.integers(len(SCAN_DPIS)))])
    factor = dpi / TEMPLATE_DPI
    angle = float(rng.uniform(-max_angle, max_angle))
    scale = float(rng.uniform(*scale_range))
    shift = tuple(float(v) for v in rng.uniform(-max_shift, max_shift, 2))
    if transform is not None:
        angle, scale, shift = float(transform[0]), float(transform[1]), tuple(map(float, transform[2]))
    matrix = scan_matrix(spec.size, angle, scale, shift, factor)
    out_size = (int(round(spec.size[0] * factor)), int(round(spec.size[1] * factor)))
    image, effects = scan_page(page, matrix, out_size, rng, binarized, factor)
    params = {"template": spec.name, "seed": seed, "outlines": outlines, "binarized": binarized, "dpi": dpi,
              "angle_deg": round(angle, 4), "scale": round(scale, 5), "shift_px": [round(v, 2) for v in shift],
              "off_page_boxes": off_page_boxes(spec.boxes, matrix, out_size), **effects, **drawn}
    return Scan(image, matrix, params, list(spec.boxes))


def _page_rng(spec: TemplateSpec, seed: int, outlines: bool, binarized: bool) -> np.random.Generator:
    return np.random.default_rng([seed, int(outlines), int(binarized), len(spec.boxes)])


def blank_form(spec: TemplateSpec, seed: int, outlines: bool, binarized: bool) -> Image.Image:
    """The form of make_scan(spec, seed, outlines, binarized) before it was filled in, in the template
    frame ("L"): the same title, labels and outlines; what a user would pass as a reference."""
    page, _ = render_form(spec, _page_rng(spec, seed, outlines, binarized), outlines, seed, fill=False)
    return page.convert("L")


def box_corners(box: Box) -> np.ndarray:
    x, y, w, h = box
    return np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.hstack([points, np.ones((len(points), 1))]) @ np.asarray(matrix, float).T
    return pts[:, :2] / pts[:, 2:]


def off_page_boxes(boxes: Sequence[Box], matrix: np.ndarray, size) -> List[int]:
    """1-based numbers (in `boxes` order) of the boxes with a corner outside the scanned area."""
    out = []
    for i, box in enumerate(boxes, start=1):
        c = apply(matrix, box_corners(box))
        if (c < 0).any() or (c[:, 0] > size[0]).any() or (c[:, 1] > size[1]).any():
            out.append(i)
    return out


def corner_error(estimated: np.ndarray, truth: np.ndarray, boxes: Sequence[Box]) -> float:
    """Largest distance (scan pixels), over every corner of every box, between where the estimated
    and the true template->scan matrix put it."""
    corners = np.vstack([box_corners(b) for b in boxes])
    return float(np.linalg.norm(apply(estimated, corners) - apply(truth, corners), axis=1).max())


# --------------------------------------------------------------------------------------------
# Command line: write a set to disk
# --------------------------------------------------------------------------------------------

CONDITIONS = [(t, o, b) for t in ("square", "rounded") for o in (True, False) for b in (False, True)]


def condition_name(template: str, outlines: bool, binarized: bool) -> str:
    return f"{template}/{'outlines' if outlines else 'no-outlines'}/{'binarized' if binarized else 'grey'}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write filled, scanned forms with known transforms (an alignment test set independent "
                    "of the pipeline's code): scans as PNG, both templates, and truth.json with each scan's "
                    "true template->scan matrix and what was drawn.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--count", type=int, default=4, help="scans per condition (template x outlines x binarized)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = {name: template_for(name) for name in ("square", "rounded")}
    for name, spec in specs.items():
        spec.image.save(out / f"template_{name}.png")
    truth = {}
    for template, outlines, binarized in CONDITIONS:
        for seed in range(args.seed, args.seed + args.count):
            scan = make_scan(specs[template], seed, outlines, binarized)
            file = f"{condition_name(template, outlines, binarized).replace('/', '_')}_{seed:04d}.png"
            scan.image.save(out / file)
            truth[file] = {**scan.params, "template_file": f"template_{template}.png",
                           "matrix": scan.matrix.round(8).tolist(), "boxes": [list(b) for b in scan.boxes]}
    (out / "truth.json").write_text(json.dumps(truth, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"{len(truth)} scans in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

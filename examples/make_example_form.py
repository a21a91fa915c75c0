"""Make the example filled form: field values in handwriting fonts in the template's boxes, then a
simulated scan of it (rotation, shift, scale, blur, uneven light, noise, JPEG) and the binarized page
the OCR handlers read. Deterministic from the seed.

    venv_mlx/bin/python examples/make_example_form.py            # rewrites the files in examples/
    venv_mlx/bin/python examples/make_example_form.py --seed 3 --out outputs/example3

Writes filled_form_scan.png (binarized, as the handlers read it), filled_form_scan_raw.jpg (the colour
"scan"; --no-raw leaves it out) and ground_truth.json (region number -> text).
Fonts: the installed handwriting fonts of EXAMPLE_FONTS (`./setup_mlx.sh --fonts` installs them), a fixed
list so that fonts added to the training recipe later do not change the committed example.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: import the toolkit from the repository root

from scripts.forms import DEFAULT_TEMPLATE, Region, find_regions, load_font, red_mask, similarity_matrix  # noqa: E402
from scripts.image_io import load_image  # noqa: E402
from scripts.preprocessing import preprocess_page  # noqa: E402
from scripts.synth_data import find_fonts  # noqa: E402

# ---- Configuration ---------------------------------------------------------------------------
TEMPLATE = DEFAULT_TEMPLATE
OUT_DIR = ROOT / "examples"
SEED = 2024
SCAN_NAME = "filled_form_scan.png"
RAW_NAME = "filled_form_scan_raw.jpg"
TRUTH_NAME = "ground_truth.json"
# What each box of the Bogotá template holds, by region number (reading order); sized to the boxes.
# A fixed table, not drawn from the training text generator (scripts/text_sources.py), so that the example
# stays independent of what the default model was trained on and does not change when training data does.
FIELD_TEXTS = {
    1: "14/2/2023",
    2: "Natalia Adrián Echeverría Vargas",
    3: "945047642-8",
    4: "Ref. 2021-06747",
    5: "(+57) 3593464892",
    6: "Cl. 82A Bis Nro. 126Q-74, Bta.",
    7: "02/11/48",
    8: "No. 3",
    9: "jperez@hotmail.com",
    10: "GLORIA MONTAÑA HERNÁNDEZ",
    11: "CC 1.077.895.470",
    12: "(601) 4676031",
    13: "COP 34.912",
    14: "22,514.83",
    15: "$ 131.837 COP",
    16: "562559",
    17: "Solicitud la salario los cigüeña las bilingüe",
    18: "10256",
}
HEADER = "SECRETARÍA DISTRITAL DE HACIENDA · BOGOTÁ D.C. · FORMULARIO ÚNICO"
PAPER = (246, 244, 238)
PRINT_INK = (45, 45, 50)
PEN_INKS = ((25, 35, 115), (22, 22, 28), (40, 40, 80))  # blue and black ballpoints
# ------------------------------------------------------------------------------------------------


def _size_for_cap_height(font_path: str, height: float) -> int:
    """Font size at which a capital H is `height` pixels tall. Nominal sizes mean very different
    glyph heights across handwriting fonts, so they are measured."""
    left, top, right, bottom = ImageFont.truetype(font_path, 100).getbbox("H")
    return max(int(100 * height / max(bottom - top, 1)), 1)


def _fit_font(text: str, font_path: str, size: int, max_width: int, max_height: int,
              min_fraction: float) -> Optional[ImageFont.FreeTypeFont]:
    """The largest font between `size` and `min_fraction` of it in which `text` fits the box; None
    if none does (smaller writing would look wrong for its box)."""
    min_size = max(int(size * min_fraction), 6)
    while size >= min_size:
        font = ImageFont.truetype(font_path, size)
        left, top, right, bottom = font.getbbox(text)
        if right - left <= max_width and bottom - top <= max_height:
            return font
        size -= 1
    return None


def choose_font(text: str, region: Region, fonts: Sequence[str],
                rng: np.random.Generator) -> Optional[ImageFont.FreeTypeFont]:
    """A font, in random order, in which `text` fits the region's inner box at about a natural
    handwriting size; a smaller size only when no font fits. Fonts with deep descenders (dkg) do not
    fit the 27 px boxes well, hence trying several."""
    _, _, w, h = region.inner
    pad = 4
    cap_fraction = rng.uniform(0.45, 0.6)
    order = [fonts[i] for i in rng.permutation(len(fonts))]
    for min_fraction in (0.8, 0.5):
        for font_path in order:
            size = _size_for_cap_height(font_path, h * cap_fraction)
            font = _fit_font(text, font_path, size, w - 2 * pad, h - 2 * pad, min_fraction)
            if font is not None:
                return font
    return None


def write_field(page: Image.Image, region: Region, text: str, fonts: Sequence[str],
                rng: np.random.Generator) -> bool:
    """Hand-write `text` into the region's inner box with a little size, position and slant jitter.
    False (nothing drawn) when the text cannot fit the box in any font."""
    x, y, w, h = region.inner
    font = choose_font(text, region, fonts, rng)
    if font is None:
        return False
    # Render on a transparent layer so the line can be tilted slightly, as handwriting is.
    left, top, right, bottom = font.getbbox(text)
    layer = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    ink = PEN_INKS[int(rng.integers(len(PEN_INKS)))]
    ImageDraw.Draw(layer).text((4 - left, 4 - top), text, font=font, fill=ink + (255,))
    layer = layer.rotate(float(rng.uniform(-1.5, 1.5)), resample=Image.BICUBIC, expand=True)
    lw, lh = layer.size
    if lw > w or lh > h:
        layer = layer.crop((0, 0, min(lw, w), min(lh, h)))  # only the transparent margin is lost
        lw, lh = layer.size
    px = x + int(rng.uniform(0, 0.3) * (w - lw))
    py = y + (h - lh) // 2 + int(rng.integers(-2, 3))
    page.alpha_composite(layer, (px, min(max(py, y), y + h - lh)))
    return True


# The handwriting fonts of fonts-debian.txt when the example was made (2 held out of training: Kristi, SteveHand).
EXAMPLE_FONTS = ("Breip", "breipfont", "DancingScript-Bold", "DancingScript-Regular", "Delphine", "dkg", "dkgBd",
                 "dkgBI", "dkgIt", "KaushanScript-Regular", "Kristi", "SteveHand")


def fill_form(template=TEMPLATE, seed: int = SEED, texts: Dict[int, str] = FIELD_TEXTS):
    """The filled paper form in the template frame: printed outlines and header, handwritten fields.
    Returns (RGB page, {region number: text})."""
    regions = find_regions(template)
    fonts = [f for f in find_fonts("handwriting") if Path(f).stem in EXAMPLE_FONTS]
    if not fonts:
        raise RuntimeError("no handwriting fonts installed; run ./setup_mlx.sh --fonts")
    size = load_image(template).size
    page = Image.new("RGBA", size, PAPER + (255,))
    # The printed form: box outlines where the template's red boxes are, plus a header.
    outlines = red_mask(np.asarray(load_image(template, mode="RGB"))) > 0
    arr = np.asarray(page).copy()
    arr[outlines, :3] = PRINT_INK
    page = Image.fromarray(arr, "RGBA")
    header_font = load_font(30)
    ImageDraw.Draw(page).text((130, 60), HEADER, font=header_font, fill=PRINT_INK + (255,))

    written = {}
    for region in regions:
        text = texts[region.number]
        # One generator per field: changing one field's text leaves the others as they were.
        rng = np.random.default_rng([seed, region.number])
        if not write_field(page, region, text, fonts, rng):
            raise RuntimeError(f"region {region.number}: {text!r} does not fit its {region.inner[2]} px box")
        written[region.number] = text
    return page.convert("RGB"), written


def scan_displacement(size, regions: Sequence[Region], rng: np.random.Generator, margin: int = 4) -> np.ndarray:
    """A random page->scan similarity (rotation <= 1.5 deg, scale 0.97-1.03, shift <= 20 px) that
    keeps every box inside the scanned frame: the template's boxes reach its right and bottom edges,
    and a field cut off by the scanner would make a useless example."""
    w, h = size
    corners = np.array([[x + dx, y + dy] for x, y, bw, bh in (r.bbox for r in regions)
                        for dx in (0, bw) for dy in (0, bh)], dtype=np.float64).reshape(-1, 1, 2)
    for _ in range(1000):
        matrix = similarity_matrix(angle_deg=rng.uniform(-1.5, 1.5), scale=rng.uniform(0.97, 1.03),
                                   shift=tuple(rng.uniform(-20, 20, 2)), center=(w / 2, h / 2))
        moved = cv2.perspectiveTransform(corners, matrix).reshape(-1, 2)
        if (moved.min(axis=0) >= margin).all() and (moved.max(axis=0) <= (w - margin, h - margin)).all():
            return matrix
    raise RuntimeError("no scan displacement keeps all boxes inside the page")


def simulate_scan(page: Image.Image, matrix: np.ndarray, rng: np.random.Generator, jpeg_quality: int = 85):
    """A flatbed scan of `page` displaced by `matrix` (3x3, page->scan): blur, uneven light, noise, JPEG."""
    w, h = page.size
    arr = cv2.warpPerspective(np.asarray(page), matrix, (w, h), flags=cv2.INTER_LINEAR,
                              borderValue=(252, 252, 252))  # the scanner lid
    arr = cv2.GaussianBlur(arr.astype(np.float64), (0, 0), 0.8)
    light = np.linspace(1.0, rng.uniform(0.8, 0.9), w)[None, :, None]  # one side darker
    arr = arr * light + rng.normal(0, 5, arr.shape)
    scan = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    scan.save(buffer, format="JPEG", quality=jpeg_quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def make_example(template=TEMPLATE, seed: int = SEED) -> dict:
    """In memory: {"page", "raw", "scan", "texts", "matrix"} (scan = binarized, as handlers read it)."""
    page, texts = fill_form(template, seed)
    rng = np.random.default_rng([seed, 10_000])
    matrix = scan_displacement(page.size, find_regions(template), rng)
    raw = simulate_scan(page, matrix, rng)
    scan = preprocess_page(raw, method="sauvola", deskew=True)
    return {"page": page, "raw": raw, "scan": scan, "texts": texts, "matrix": matrix}


def write_example(example: dict, out_dir=OUT_DIR, raw: bool = True) -> list:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / SCAN_NAME, out_dir / TRUTH_NAME]
    example["scan"].save(paths[0], optimize=True)
    truth = {str(number): text for number, text in sorted(example["texts"].items())}
    paths[1].write_text(json.dumps(truth, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if raw:
        paths.append(out_dir / RAW_NAME)
        # Already JPEG-compressed by the simulation; saved again at the same quality.
        example["raw"].save(paths[-1], quality=85)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--template", default=str(TEMPLATE), help="template image with red field boxes")
    parser.add_argument("--out", default=str(OUT_DIR), help="folder for the three output files")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also write the colour scan ({RAW_NAME})")
    args = parser.parse_args(argv)
    for path in write_example(make_example(args.template, args.seed), args.out, raw=args.raw):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The independent evaluation set: field crops made by a generator other than the training one.

    python dev/make_eval_lines.py --out data/eval_indep --lines 400 --forms 20 --seed 0
    python scripts/evaluate_model.py data/eval_indep/manifest.csv --json eval_indep.json

Nothing here calls synth_data's text or rendering code; it shares only the lists that keep evaluation and
training apart:
- texts: Faker's EVAL_LOCALES (es_AR, fr_FR, it_IT, pt_BR) and the 'eval' word lists of wordlists-debian.txt
  (French, Italian, Portuguese, filtered to the character set), which training never reads, plus random
  strings; formatted by this file's own code;
- fonts: only the families in synth_data.HELD_OUT_FAMILIES (training never renders them);
- its own drawing (a field cell at a fixed size, text at a random height and position, slant for
  handwriting fonts) and scan damage (OpenCV: stroke weight, rotation, blur, noise, binarisation, JPEG).

Each line gives two images of the same scanned pixels: 'untrimmed' (the whole cell, its border and the
neighbours' ink) and 'trimmed' (cut at the text's known position with a few pixels of margin). --forms adds
'form' crops: whole pages with a grid of labelled cells, filled, scanned, and cut at the true cell
positions (with the borders and a little of the page around them). Columns of manifest.csv: image, text,
font, style, kind, layout (trimmed / untrimmed / form).
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import csv
import string
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scripts.synth_data import candidate_fonts, font_missing, font_problem, is_held_out
from scripts.text_sources import CHARSET, EVAL_LOCALES, FAKER_DATES_UNTIL, faker, load_words, to_charset, wordlist_files

KINDS = ("name", "address", "city", "company", "email", "phone", "date", "amount", "id_number", "words", "random")
COLUMNS = ("image", "text", "font", "style", "kind", "layout")


# ----------------------------------------------------------------------------------------------------
# Texts (own formatting; sources disjoint from training's)
# ----------------------------------------------------------------------------------------------------
def eval_text(rng: np.random.Generator, kind: str) -> str:
    fake = faker(EVAL_LOCALES[int(rng.integers(len(EVAL_LOCALES)))])
    fake.seed_instance(int(rng.integers(2**62)))
    if kind == "name":
        text = fake.name() if rng.random() < 0.5 else f"{fake.last_name()}, {fake.first_name()}"
    elif kind == "address":
        text = fake.street_address()
    elif kind == "city":
        text = fake.city() if rng.random() < 0.7 else f"{fake.city()} - {fake.country()}"
    elif kind == "company":
        text = fake.company()
    elif kind == "email":
        text = fake.email() if rng.random() < 0.5 else f"{fake.user_name()}{int(rng.integers(1, 99))}@{fake.free_email_domain()}"
    elif kind == "phone":
        text = fake.phone_number()
    elif kind == "date":
        text = fake.date(pattern=["%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%d-%m-%y", "%d %m %Y"][int(rng.integers(5))],
                         end_datetime=FAKER_DATES_UNTIL)
    elif kind == "amount":
        v = float(rng.uniform(1, 10 ** rng.uniform(1, 7)))
        text = [f"$ {v:,.2f}", f"{v:,.0f}".replace(",", "."), f"{v:.2f}".replace(".", ",") + " EUR", f"ARS {v:,.2f}"][int(rng.integers(4))]
    elif kind == "id_number":
        text = fake.bothify(["########", "##.###.###", "??-######", "#-####-####", "###.###.###-#"][int(rng.integers(5))]).upper()
    elif kind == "words":
        text = _eval_words(rng, wordlist_files("eval"))
    else:
        n = int(rng.integers(3, 25))
        pool = CHARSET if rng.random() < 0.5 else string.ascii_letters + string.digits + "-/.,#"
        text = "".join(pool[int(rng.integers(len(pool)))] for _ in range(n))
    r = rng.random()
    if r < 0.2:
        text = text.upper()
    elif r < 0.27:
        text = text.lower()
    return " ".join(text.split())


def _eval_words(rng: np.random.Generator, lists) -> str:
    out = []
    for _ in range(int(rng.integers(1, 5))):
        words = load_words(lists[int(rng.integers(len(lists)))])
        out.append(words[int(rng.integers(len(words)))])
    return " ".join(out)


def draw_value(rng: np.random.Generator, kind: str, missing: str) -> str:
    allowed = "".join(c for c in CHARSET if c not in missing)
    for _ in range(100):
        text = to_charset(eval_text(rng, kind), allowed)
        if text and len(text) <= 48:
            return text
    raise ValueError(f"no {kind} text fits a font lacking {missing!r}")


# ----------------------------------------------------------------------------------------------------
# Drawing and scanning (own code path)
# ----------------------------------------------------------------------------------------------------
def eval_fonts() -> list[tuple[str, str]]:
    """(path, style) of the installed held-out fonts."""
    return [(p, s) for p, s in candidate_fonts() if is_held_out(p) and font_problem(p) is None]


def draw_text(page: Image.Image, xy, text: str, font: ImageFont.FreeTypeFont, ink: int, slant: float) -> tuple:
    """Draw `text` with its top-left at xy (optionally sheared); returns its ink box (x0, y0, x1, y1)."""
    x, y = xy
    l, t, r, b = font.getbbox(text)
    pad = int(abs(slant) * (b - t)) + 4
    tile = Image.new("L", (r - l + 2 * pad, b - t + 2 * pad), 0)
    ImageDraw.Draw(tile).text((pad - l, pad - t), text, font=font, fill=255)
    if slant:
        m = np.float32([[1, -slant, slant * tile.height / 2], [0, 1, 0]])
        tile = Image.fromarray(cv2.warpAffine(np.asarray(tile), m, tile.size))
    page.paste(Image.new("L", tile.size, ink), (int(x) - pad, int(y) - pad), tile)
    box = tile.getbbox() or (0, 0, 1, 1)
    return (int(x) - pad + box[0], int(y) - pad + box[1], int(x) - pad + box[2], int(y) - pad + box[3])


def scan(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanner damage with OpenCV: stroke weight, tiny rotation, blur, noise or binarisation, JPEG."""
    if rng.random() < 0.3:
        k = np.ones((2, 2), np.uint8)
        img = cv2.erode(img, k) if rng.random() < 0.5 else cv2.dilate(img, k)
    if rng.random() < 0.5:
        h, w = img.shape
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-0.6, 0.6)), 1.0)
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.1)))
    if rng.random() < 0.2:
        img = cv2.adaptiveThreshold(img, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 12)
    elif rng.random() < 0.7:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 10), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return img


def _font_for(rng, fonts, style):
    of_style = [p for p, s in fonts if s == style]
    return of_style[int(rng.integers(len(of_style)))]


def make_line(i: int, seed: int, fonts) -> list[tuple[Image.Image, dict]]:
    """One filled cell, scanned: [(untrimmed image, row), (trimmed image, row)]."""
    rng = np.random.default_rng([seed, 1, i])
    style = ("printed", "handwriting")[i % 2]
    path = _font_for(rng, fonts, style)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    text = draw_value(rng, kind, font_missing(path))
    cell_h = int(rng.integers(44, 110))
    font = ImageFont.truetype(path, max(10, int(cell_h * rng.uniform(0.4, 0.75))))
    tw = font.getlength(text)
    cell_w = int(max(tw * rng.uniform(1.05, 2.0) + cell_h * 0.3, cell_h * 2))
    out = int(rng.integers(0, 10))  # page around the cell that a generous crop takes in
    paper = int(rng.integers(215, 256))
    page = Image.new("L", (cell_w + 2 * out, cell_h + 2 * out), paper)
    d = ImageDraw.Draw(page)
    border = int(rng.integers(40, 160))
    d.rectangle((out, out, out + cell_w - 1, out + cell_h - 1), outline=border, width=int(rng.integers(1, 4)))
    if out > 2 and rng.random() < 0.5:  # neighbours' ink just outside the cell
        nf = ImageFont.truetype(path, max(8, int(cell_h * 0.5)))
        d.text((out + cell_w + 2, out + cell_h * 0.2), "Xy7", font=nf, fill=int(rng.integers(0, 90)))
        d.text((rng.uniform(0, cell_w), out - nf.size * 0.8), "gjp", font=nf, fill=int(rng.integers(0, 90)))
    slant = float(rng.uniform(-0.3, 0.3)) if style == "handwriting" and rng.random() < 0.5 else 0.0
    x = out + rng.uniform(0.05, 0.3) * cell_h
    y = out + (cell_h - (font.getbbox(text)[3] - font.getbbox(text)[1])) * rng.uniform(0.25, 0.75)
    box = draw_text(page, (x, y), text, font, int(rng.integers(0, 90)), slant)
    scanned = Image.fromarray(scan(np.asarray(page), rng))
    m = max(2, int(0.12 * (box[3] - box[1])))
    trimmed = scanned.crop((max(0, box[0] - m), max(0, box[1] - m), min(page.width, box[2] + m), min(page.height, box[3] + m)))
    row = {"text": text, "font": Path(path).stem, "style": style, "kind": kind}
    return [(scanned, {**row, "layout": "untrimmed"}), (trimmed, {**row, "layout": "trimmed"})]


LABELS = ("Nombre", "Apellidos", "Dirección", "Ciudad", "Empresa", "Correo", "Teléfono", "Fecha", "Valor",
          "Documento", "Observaciones", "Referencia")


def make_form(j: int, seed: int, fonts, rows: int = 8, cols: int = 2) -> list[tuple[Image.Image, dict]]:
    """A page at ~150 dpi: a grid of labelled cells, filled in one style, scanned, cut at the true cells."""
    rng = np.random.default_rng([seed, 2, j])
    W, H = 1240, 1754
    paper = int(rng.integers(225, 256))
    page = Image.new("L", (W, H), paper)
    d = ImageDraw.Draw(page)
    label_font = ImageFont.truetype(_font_for(rng, fonts, "printed"), 20)
    style = ("printed", "handwriting")[j % 2]
    path = _font_for(rng, fonts, style)
    cell_h = int(rng.integers(50, 80))
    gap = cell_h + 40
    cells = []
    for r in range(rows):
        for c in range(cols):
            x0 = 80 + c * (W - 160) // cols
            x1 = x0 + (W - 160) // cols - 30
            y0 = 150 + r * gap
            d.text((x0, y0 - 26), LABELS[(r * cols + c) % len(LABELS)], font=label_font, fill=60)
            d.rectangle((x0, y0, x1, y0 + cell_h), outline=int(rng.integers(60, 150)), width=2)
            kind = KINDS[int(rng.integers(len(KINDS)))]
            text = draw_value(rng, kind, font_missing(path))
            font = ImageFont.truetype(path, max(12, int(cell_h * rng.uniform(0.45, 0.7))))
            while font.getlength(text) > (x1 - x0) * 0.92 and font.size > 12:
                font = ImageFont.truetype(path, font.size - 2)
            if font.getlength(text) > (x1 - x0) * 0.95:
                continue
            slant = float(rng.uniform(-0.25, 0.25)) if style == "handwriting" else 0.0
            draw_text(page, (x0 + 10 + rng.uniform(0, 20), y0 + cell_h * rng.uniform(0.1, 0.35)), text, font,
                      int(rng.integers(0, 80)), slant)
            cells.append(((x0, y0, x1, y0 + cell_h), text, kind))
    scanned = Image.fromarray(scan(np.asarray(page), rng))
    out = []
    for (x0, y0, x1, y1), text, kind in cells:
        m = int(rng.integers(2, 8))
        out.append((scanned.crop((x0 - m, y0 - m, x1 + m + 1, y1 + m + 1)),
                    {"text": text, "font": Path(path).stem, "style": style, "kind": kind, "layout": "form"}))
    return out


def make_eval_set(out_dir, lines: int, forms: int, seed: int = 0, progress: bool = True) -> list[dict]:
    fonts = eval_fonts()
    styles = {s for _, s in fonts}
    if styles != {"printed", "handwriting"}:
        raise ValueError(f"held-out fonts of both styles are needed, found {sorted(styles) or 'none'} "
                         "(./setup_mlx.sh --fonts installs them)")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    rows = []
    jobs = [("line", i) for i in range(lines)] + [("form", j) for j in range(forms)]
    for what, i in tqdm(jobs, desc="eval set", unit="item", disable=not progress):
        items = make_line(i, seed, fonts) if what == "line" else make_form(i, seed, fonts)
        for k, (img, row) in enumerate(items):
            rel = f"images/{what}{i:04d}_{k:02d}_{row['layout']}.png"
            img.save(out / rel)
            rows.append({"image": rel, **row})
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (images/ and manifest.csv)")
    ap.add_argument("--lines", type=int, default=400, help="filled cells, each saved trimmed and untrimmed (default 400)")
    ap.add_argument("--forms", type=int, default=20, help="scanned form pages cut into cells (default 20, ~16 each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        rows = make_eval_set(args.out, args.lines, args.forms, args.seed)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        ap.error(str(exc))
    print(f"[make_eval_lines] {len(rows)} crops in {Path(args.out) / 'manifest.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from scripts.text_sources import fix_hash_seed

    fix_hash_seed()  # the same seed gives the same texts in every run
    sys.exit(main())

#!/usr/bin/env python3
"""Filled, scanned forms made independently of training, with their ground truth: for the review-and-learn
worked example and for calibrating the confidence (scripts/calibrate_confidence.py).

    python dev/make_review_forms.py --out data/review_forms --forms 6 --seed 1
    python dev/make_review_forms.py --out data/calib --forms 40 --seed 7 --crops   # + manifest.csv of crops

Writes OUT/scans/form_NNN.png (binarized, as the handlers read them), OUT/truth/form_NNN.json
({region: text}, the handlers' --ground-truth format), and with --crops the field crops cut the way the
pipeline cuts them (registered with alignment.align_page, inside the outline, trimmed to the ink) in OUT/crops/
with OUT/manifest.csv (image, text, font, kind, form, region: the trainer's and the calibration tool's
manifest format).

Independent of training by construction (nothing of synth_data's text lists or rendering is used):
- texts: Faker's es_AR, fr_FR and pt_BR locales (training's synthetic text uses neither these locales nor
  Faker's formats), the French and Portuguese Debian word lists, and random character strings;
- fonts: EVAL_FAMILIES below, minus any file the training recipe renders (fonts-debian.txt rows that are
  not held out), checked when the tool runs, so a font later added to training drops out here;
- its own drawing (cap-height sizing, pen jitter, ink colours) and scan simulation (displacement, vertical
  light gradient, blur, noise, JPEG), binarized by the pipeline's own preprocessing (Sauvola).
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime
import csv
import io
import json
import string
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scripts import alignment, forms
from scripts.image_io import load_image
from scripts.text_sources import FAKER_DATES_UNTIL

# File-name prefixes of the font families drawn with (under /usr/share/fonts); handwriting-like first.
EVAL_FAMILIES = ("Joscelyn", "Kristi", "SteveHand", "setofont.", "KleeOne", "Cantarell-Regular", "Cantarell-Bold",
                 "EBGaramond12-Regular", "EBGaramond12-Italic", "P052", "Jara", "Quercus", "GNUTypewriter")
LOCALES = ("es_AR", "fr_FR", "pt_BR")
WORD_LISTS = ("/usr/share/dict/french", "/usr/share/dict/portuguese")
# Faker's date_of_birth counts back from today, which made the forms drift with the calendar.
DATES_UNTIL = FAKER_DATES_UNTIL.date()
# What each box of the bundled Bogotá template holds (by region number); other templates get random kinds.
TEMPLATE_KINDS = {1: "date", 2: "name", 3: "id", 4: "number", 5: "phone", 6: "address", 7: "date", 8: "number",
                  9: "email", 10: "name", 11: "id", 12: "phone", 13: "amount", 14: "amount", 15: "amount",
                  16: "amount", 17: "words", 18: "amount"}
OTHER_KINDS = ("words", "random", "city", "company", "number")
PAPER, PRINT_INK = (250, 249, 245), (40, 40, 40)
PEN_INKS = ((20, 30, 140), (15, 15, 20), (60, 30, 90))


# --------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _faker(locale: str):
    from faker import Faker

    return Faker(locale)


@lru_cache(maxsize=None)
def _words() -> Tuple[str, ...]:
    out = []
    for path in WORD_LISTS:
        if Path(path).exists():
            out += [w for w in Path(path).read_text(encoding="utf-8", errors="ignore").split() if w.isalpha()]
    return tuple(out) or ("formulario", "dossier", "cadastro", "adresse", "rua", "numéro")


def field_text(rng: np.random.Generator, kind: str) -> str:
    """One field value of `kind` from Faker / the word lists / random strings."""
    fake = _faker(LOCALES[int(rng.integers(len(LOCALES)))])
    fake.seed_instance(int(rng.integers(2**31)))
    if kind == "name":
        text = fake.name() if rng.random() < 0.7 else f"{fake.last_name().upper()} {fake.first_name()}"
    elif kind == "date":
        # The same draw as date_of_birth(minimum_age=0, maximum_age=90) made on DATES_UNTIL.
        start = DATES_UNTIL.replace(year=DATES_UNTIL.year - 91)
        d = fake.date_time_ad(start_datetime=start, end_datetime=DATES_UNTIL).date()
        d = d if d != start else d + datetime.timedelta(days=1)
        text = d.strftime(("%d/%m/%Y", "%d-%m-%y", "%Y.%m.%d", "%d %m %Y")[int(rng.integers(4))])
    elif kind == "id":
        digits = "".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(6, 11))))
        text = (("", "DNI ", "Nº ", "CPF ")[int(rng.integers(4))] + digits).replace("Nº", "No")
    elif kind == "number":
        text = str(int(10 ** rng.uniform(0, 5)))
    elif kind == "phone":
        text = fake.phone_number()
    elif kind == "address":
        text = fake.street_address()
    elif kind == "email":
        text = fake.email()
    elif kind == "amount":
        value = 10 ** rng.uniform(1, 7)
        text = (f"{value:,.2f}".replace(",", " ") if rng.random() < 0.5 else f"{int(value):,}".replace(",", "."))
        text = ("", "$ ", "R$ ", "€ ")[int(rng.integers(4))] + text
    elif kind == "city":
        text = fake.city()
    elif kind == "company":
        text = fake.company()
    elif kind == "words":
        words = _words()
        text = " ".join(words[int(i)] for i in rng.integers(0, len(words), int(rng.integers(1, 4))))
    elif kind == "random":
        pool = string.ascii_letters + string.digits + "-/.#"
        text = "".join(pool[int(i)] for i in rng.integers(0, len(pool), int(rng.integers(3, 12))))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return " ".join(text.split())


def to_alphabet(text: str, alphabet: str) -> Optional[str]:
    """`text` in `alphabet`: letters outside it lose their accent (é stays, è becomes e when only é is known);
    None when something else is outside it."""
    out = []
    for c in text:
        if c not in alphabet and not c.isspace():
            c = unicodedata.normalize("NFD", c)[0]
            if c not in alphabet:
                return None
        out.append(c)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------------------------

def eval_fonts(root="/usr/share/fonts") -> List[str]:
    """Installed files of EVAL_FAMILIES that training never renders (held-out families are allowed)."""
    from scripts import synth_data

    training = {str(p) for p, _ in synth_data.candidate_fonts() if not synth_data.is_held_out(p)}
    fonts = sorted(str(p) for p in Path(root).glob("*/*/*") if p.suffix.lower() in (".ttf", ".otf")
                   and p.name.startswith(EVAL_FAMILIES) and str(p) not in training)
    if not fonts:
        raise RuntimeError(f"none of the evaluation fonts ({', '.join(EVAL_FAMILIES)}) is installed under {root}")
    return fonts


@lru_cache(maxsize=None)
def _covered(font_path: str) -> frozenset:
    from fontTools.ttLib import TTFont

    with TTFont(font_path, lazy=True, fontNumber=0) as tt:
        return frozenset(chr(c) for c in (tt.getBestCmap() or {}))


def _fit(text: str, font_path: str, width: int, height: int, rng) -> Optional[ImageFont.FreeTypeFont]:
    """The font at a natural size for the box (capital height 45-65% of it), smaller only down to 60%."""
    probe = ImageFont.truetype(font_path, 100)
    top, bottom = probe.getbbox("H")[1], probe.getbbox("H")[3]
    size = int(100 * height * rng.uniform(0.45, 0.65) / max(bottom - top, 1))
    for s in range(size, max(int(size * 0.6), 8) - 1, -1):
        font = ImageFont.truetype(font_path, s)
        left, t, right, b = font.getbbox(text)
        if right - left <= width and b - t <= height:
            return font
    return None


# --------------------------------------------------------------------------------------------
# Forms and scans
# --------------------------------------------------------------------------------------------

def write_box(page: Image.Image, inner, text: str, font: ImageFont.FreeTypeFont, rng) -> None:
    x, y, w, h = inner
    left, top, right, bottom = font.getbbox(text)
    layer = Image.new("RGBA", (right - left + 10, bottom - top + 10), (0, 0, 0, 0))
    ink = PEN_INKS[int(rng.integers(len(PEN_INKS)))]
    ImageDraw.Draw(layer).text((5 - left, 5 - top), text, font=font, fill=ink + (255,),
                               stroke_width=int(rng.random() < 0.3), stroke_fill=ink + (255,))
    layer = layer.rotate(float(rng.uniform(-2, 2)), resample=Image.BICUBIC, expand=True)
    layer = layer.crop((0, 0, min(layer.width, w), min(layer.height, h)))
    px = x + int(rng.uniform(0.0, 0.4) * (w - layer.width))
    py = y + max((h - layer.height) // 2 + int(rng.integers(-3, 4)), 0)
    page.alpha_composite(layer, (px, min(py, y + h - layer.height)))


def fill_form(template, regions: Sequence[forms.Region], fonts: Sequence[str], alphabet: str,
              rng: np.random.Generator) -> Tuple[Image.Image, Dict[int, dict]]:
    """The filled paper form in the template frame: printed outlines, each box's value in one font per
    field (a form is written by one or two hands). Returns (RGB page, {region: {text, font, kind}})."""
    outline = forms.red_mask(np.asarray(load_image(template, mode="RGB"))) > 0
    arr = np.full(outline.shape + (4,), PAPER + (255,), np.uint8)
    arr[outline, :3] = PRINT_INK
    page = Image.fromarray(arr, "RGBA")
    hands = [fonts[int(i)] for i in rng.choice(len(fonts), size=min(2, len(fonts)), replace=False)]
    truth = {}
    for region in regions:
        kind = TEMPLATE_KINDS.get(region.number) if rng.random() < 0.75 else None
        kind = kind or OTHER_KINDS[int(rng.integers(len(OTHER_KINDS)))]
        _, _, w, h = region.inner
        for _ in range(30):  # a value too long for its box, or not drawable in the font, is replaced
            font_path = hands[int(rng.integers(len(hands)))]
            text = to_alphabet(field_text(rng, kind), "".join(sorted(set(alphabet) & _covered(font_path))))
            font = _fit(text, font_path, w - 8, h - 6, rng) if text else None
            if font is not None:
                write_box(page, region.inner, text, font, rng)
                truth[region.number] = {"text": text, "font": Path(font_path).stem, "kind": kind}
                break
    return page.convert("RGB"), truth


def simulate_scan(page: Image.Image, regions: Sequence[forms.Region], rng: np.random.Generator) -> Image.Image:
    """A scan of `page`: a small displacement keeping every box in frame, light falling off down the page,
    blur, noise, JPEG; then binarized and deskewed by scripts/preprocessing.py (what the handlers read)."""
    from scripts.preprocessing import preprocess_page

    w, h = page.size
    corners = np.array([[x + dx, y + dy] for x, y, bw, bh in (r.bbox for r in regions)
                        for dx in (0, bw) for dy in (0, bh)], np.float64).reshape(-1, 1, 2)
    for _ in range(200):
        m = forms.similarity_matrix(angle_deg=rng.uniform(-1.2, 1.2), scale=rng.uniform(0.98, 1.02),
                                    shift=tuple(rng.uniform(-15, 15, 2)), center=(w / 2, h / 2))
        moved = cv2.perspectiveTransform(corners, m).reshape(-1, 2)
        if (moved.min(0) >= 3).all() and (moved.max(0) <= (w - 3, h - 3)).all():
            break
    else:
        m = np.eye(3)
    arr = cv2.warpPerspective(np.asarray(page), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(250, 250, 250))
    arr = cv2.GaussianBlur(arr.astype(np.float64), (0, 0), rng.uniform(0.5, 1.0))
    arr = arr * np.linspace(rng.uniform(0.85, 1.0), 1.0, h)[:, None, None] + rng.normal(0, rng.uniform(3, 7), arr.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=int(rng.integers(70, 92)))
    return preprocess_page(Image.open(io.BytesIO(buffer.getvalue())), method="sauvola", deskew=True)


def model_alphabet(model_dir) -> str:
    """The single characters a model's tokenizer knows (texts outside it could never be read right)."""
    vocab = json.loads((Path(model_dir) / "processor" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    return "".join(k for k in vocab if len(k) == 1)


def make_forms(out, n: int, seed: int, template=forms.DEFAULT_TEMPLATE, crops: bool = False,
               alphabet: Optional[str] = None, show_progress: bool = True) -> dict:
    """Write n forms (and their crops + manifest with `crops`); returns a summary."""
    from tqdm import tqdm

    from scripts.model_registry import default_model_path

    out = Path(out)
    alphabet = alphabet or model_alphabet(default_model_path())
    regions = forms.find_regions(template)
    fonts = eval_fonts()
    for sub in ("scans", "truth") + (("crops",) if crops else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(n), desc="forms", unit="form", disable=not show_progress):
        rng = np.random.default_rng([seed, i])
        name = f"form_{i:03d}"
        page, truth = fill_form(template, regions, fonts, alphabet, rng)
        scan = simulate_scan(page, regions, rng)
        scan.save(out / "scans" / f"{name}.png", optimize=True)
        (out / "truth" / f"{name}.json").write_text(json.dumps(
            {str(k): v["text"] for k, v in sorted(truth.items())}, ensure_ascii=False, indent=1), encoding="utf-8")
        if crops:
            aligned = alignment.align_page(scan, template).aligned
            for region, crop in zip(regions, forms.crop_regions(aligned, regions, inner=True, trim=True)):
                if region.number not in truth:
                    continue
                path = out / "crops" / f"{name}_r{region.number:02d}.png"
                crop.save(path)
                t = truth[region.number]
                rows.append({"image": str(path.relative_to(out)), "text": t["text"], "font": t["font"],
                             "kind": t["kind"], "form": name, "region": region.number})
    if crops:
        with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "text", "font", "kind", "form", "region"])
            writer.writeheader()
            writer.writerows(rows)
    summary = {"forms": n, "seed": seed, "template": str(template), "fonts": [Path(f).stem for f in fonts],
               "crops": len(rows) if crops else None, "out": str(out)}
    (out / "make_review_forms.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (scans/, truth/, and with --crops crops/ + manifest.csv)")
    ap.add_argument("--forms", type=int, default=6, help="number of forms (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="form i depends only on (seed, i) (default: %(default)s)")
    ap.add_argument("--template", default=str(forms.DEFAULT_TEMPLATE), help="template with red boxes (default: the bundled one)")
    ap.add_argument("--crops", action="store_true", help="also cut every field as the pipeline does, with manifest.csv")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    print(json.dumps(make_forms(args.out, args.forms, args.seed, args.template, args.crops,
                                show_progress=args.progress), indent=1))
    return 0


if __name__ == "__main__":
    from scripts.text_sources import fix_hash_seed

    fix_hash_seed()  # the same seed gives the same texts in every run
    sys.exit(main())

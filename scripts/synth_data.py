"""Synthetic form-field text lines for training and evaluating the OCR model, deterministic from a seed.

The users' forms are Spanish-language paper forms from Bogotá; each field (a red box) is cropped and read
as one text line. This module makes look-alike lines: open-vocabulary field values (text_sources.py: Faker
locales, Debian word lists, random strings, Colombian number formats), rendered in printed or
handwriting-style fonts, laid out as real crops are (tight, with margins, or whole boxes with their borders
and the neighbours' ink: field_layout) and degraded like a scan.

    python scripts/synth_data.py --out data/train --n 50000 --seed 0 --style both
    python scripts/synth_data.py --out data/heldout --n 1000 --seed 1 --font-split heldout
    python scripts/synth_data.py --list-fonts

Fonts come from the Debian packages in fonts-debian.txt (`./setup_mlx.sh --fonts` installs them).
Held-out fonts: the families in HELD_OUT_FAMILIES are never used for training lines (`--font-split train`,
the default); the independent evaluation set (dev/make_eval_lines.py) is drawn in them.
Sample i depends only on (seed, i), so a data set is the same whatever the number of worker processes.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import csv
import fnmatch
import functools
import hashlib
import logging
import math
import multiprocessing
import os
import string
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Mapping, Sequence, Union

import cv2
import matplotlib
import numpy as np
from fontTools.ttLib import TTFont  # fontTools comes with matplotlib
from PIL import Image, ImageDraw, ImageFont

from scripts.text_sources import ACCENTED, CHARSET, SYMBOLS, KINDS as FIELD_KINDS, pick_kind  # noqa: F401  (re-exported)
from scripts.text_sources import value as text_value

STYLES = ("printed", "handwriting")

Rng = Union[np.random.Generator, int, None]


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def random_field_value(rng: Rng, kind: str | None = None) -> str:
    """One training field value of `kind` (one of FIELD_KINDS; None = drawn with text_sources.KIND_WEIGHTS)."""
    return text_value(rng, kind)


# ----------------------------------------------------------------------------------------------------
# Fonts
# ----------------------------------------------------------------------------------------------------
# Where the Debian packages put fonts; TROCR_FONT_ROOT points elsewhere (a copy of that tree on a machine
# without the packages, e.g. the GPU box used for training).
FONT_ROOT = Path(os.environ.get("TROCR_FONT_ROOT", "/usr/share/fonts"))
FONT_LIST_FILE = Path(__file__).resolve().parents[1] / "fonts-debian.txt"
FALLBACK_FONT = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
# In the listed folders, but not text fonts: Latin code points map to dingbats/symbols, or math only.
NOT_TEXT_FONTS = frozenset({"D050000L", "StandardSymbolsPS", "DejaVuMathTeXGyre"})
# Families (file-name prefixes) reserved for evaluation, never used for training lines: printed P052 (URW
# Palatino clone), Cantarell, EBGaramond; handwriting Kristi, SteveHand, setofont. The independent evaluation
# (dev/make_eval_lines.py) renders only these.
HELD_OUT_FAMILIES = ("P052", "Cantarell", "EBGaramond", "Kristi", "SteveHand", "setofont")
FONT_SUFFIXES = (".ttf", ".otf")


def read_font_list(path: Path = FONT_LIST_FILE) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(debian package, style, folder under /usr/share/fonts, file-name patterns) rows of fonts-debian.txt.

    The optional fourth column lists comma-separated shell patterns of the folder's files to use (default
    all): one package may hold both styles, or files that are not usable text fonts."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fields = line.split()
            if len(fields) not in (3, 4):
                raise ValueError(f"{path}: expected 'package style folder [patterns]', got {line!r}")
            package, style, folder = fields[:3]
            patterns = tuple(fields[3].split(",")) if len(fields) == 4 else ("*",)
            if style not in STYLES:
                raise ValueError(f"{path}: style must be one of {STYLES}, got {style!r} for {package}")
            rows.append((package, style, folder, patterns))
    return rows


FONT_TABLE = read_font_list()
FONT_PACKAGES = tuple(dict.fromkeys(package for package, _, _, _ in FONT_TABLE))


@functools.lru_cache(maxsize=4096)
def font_name(font_path: str | os.PathLike) -> str:
    return Path(font_path).stem


def _listed_style(font_path: str | os.PathLike) -> str | None:
    path = Path(font_path)
    for _, style, folder, patterns in FONT_TABLE:
        if path.parent.name == folder and any(fnmatch.fnmatch(path.name, p) for p in patterns):
            return style
    return None


def font_style(font_path: str | os.PathLike, default: str = "printed") -> str:
    """'printed' or 'handwriting', from the font's folder and file name as listed in fonts-debian.txt."""
    return _listed_style(font_path) or default


def candidate_fonts(root: str | os.PathLike = FONT_ROOT) -> list[tuple[str, str]]:
    """(path, style) of every listed font file (Debian puts them at root/<format>/<folder>/)."""
    found = {}
    for folder in dict.fromkeys(folder for _, _, folder, _ in FONT_TABLE):
        for path in Path(root).glob(f"*/{folder}/*"):
            style = _listed_style(path)
            if path.suffix.lower() in FONT_SUFFIXES and style:
                found[str(path)] = style
    return sorted(found.items(), key=lambda item: (Path(item[0]).name, item[0]))


# A font may lack these: lines are then written without accents (that font's label too) or, for symbols,
# drawn again until they fit (fit_text). Letters, digits and the rest of PUNCTUATION are required.
OPTIONAL_CHARS = ACCENTED + "#$@()%+&'_" + SYMBOLS


@functools.lru_cache(maxsize=None)
def font_missing(font_path: str, chars: str = CHARSET) -> str:
    """The characters of `chars` that the font cannot draw: absent from its character map, or mapped to an
    empty glyph (fonts-femkeklaver has a blank 'ñ'). Raises OSError for an unreadable file."""
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # harmless table quirks (femkeklaver) are not news
    try:
        with TTFont(font_path, lazy=True, fontNumber=0) as tt:
            cmap = tt.getBestCmap() or {}
        font = ImageFont.truetype(font_path, 32)
    except Exception as exc:  # corrupt or unsupported file
        raise OSError(f"unreadable ({exc})") from exc
    missing = [c for c in chars if not c.isspace() and ord(c) not in cmap]
    blank = [c for c in chars if not c.isspace() and c not in missing and font.getmask(c).getbbox() is None]
    return "".join(missing + blank)


@functools.lru_cache(maxsize=None)
def font_problem(font_path: str, chars: str = CHARSET) -> str | None:
    """Why a font cannot render form-field lines faithfully (None if it can, perhaps with fit_text)."""
    if font_name(font_path) in NOT_TEXT_FONTS:
        return "symbol or math font"
    try:
        missing = font_missing(font_path, chars)
    except OSError as exc:
        return str(exc)
    required = "".join(c for c in missing if c not in OPTIONAL_CHARS)
    return f"missing or blank glyphs: {required}" if required else None


def _oldstyle_digit_glyphs(tt: TTFont) -> dict[str, str]:
    """{lining digit glyph: its old-style figure} from the font's OpenType 'onum' single substitutions."""
    if "GSUB" not in tt or not tt["GSUB"].table.FeatureList or not tt["GSUB"].table.LookupList:
        return {}
    gsub = tt["GSUB"].table
    cmap = tt.getBestCmap() or {}
    digits = {cmap[c] for c in range(ord("0"), ord("9") + 1) if c in cmap}
    mapping: dict[str, str] = {}
    for record in gsub.FeatureList.FeatureRecord:
        if record.FeatureTag != "onum":
            continue
        for i in record.Feature.LookupListIndex:
            for sub in gsub.LookupList.Lookup[i].SubTable:
                sub = getattr(sub, "ExtSubTable", sub)  # extension lookups wrap the real one
                for src, dst in (getattr(sub, "mapping", None) or {}).items():  # single substitutions only
                    if src in digits:
                        mapping.setdefault(src, dst)
    return mapping


@functools.lru_cache(maxsize=None)
def has_oldstyle_figures(font_path: str) -> bool:
    """Whether the font offers old-style figures (OpenType 'onum'): digits with ascenders and descenders, where
    1 looks like I, 0 like o and 5 dips below the baseline, as Georgia, Constantia or EB Garamond draw them
    by default. make_sample's oldstyle_share draws them."""
    try:
        with TTFont(font_path, lazy=True, fontNumber=0) as tt:
            return bool(_oldstyle_digit_glyphs(tt))
    except Exception:  # unreadable: font_problem says why elsewhere; no old-style figures from it
        return False


@functools.lru_cache(maxsize=None)
def oldstyle_font_file(font_path: str) -> str:
    """A copy of the font whose character map points the digits at its old-style figures, in the temporary
    folder: any Pillow draws it, where OpenType features need the raqm layout that not every Pillow has
    (the GPU machine's has none). Written once per font and process-safely (atomic rename)."""
    src = Path(font_path)
    stat = src.stat()
    ident = f"{src.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    key = f"{src.stem}-{hashlib.sha1(ident).hexdigest()[:12]}{src.suffix}"  # str hash() differs per process
    out = Path(tempfile.gettempdir()) / "trocr-oldstyle-fonts" / key
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with TTFont(font_path, fontNumber=0, recalcTimestamp=False) as tt:
            mapping = _oldstyle_digit_glyphs(tt)
            if not mapping:
                raise ValueError(f"{font_path}: no old-style figures (OpenType 'onum') to draw")
            for table in tt["cmap"].tables:
                for code in range(ord("0"), ord("9") + 1):
                    if table.cmap.get(code) in mapping:
                        table.cmap[code] = mapping[table.cmap[code]]
            tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp{out.suffix}")
            tt.save(tmp)
        os.replace(tmp, out)
    return str(out)


def fit_text(text: str, missing: str) -> str | None:
    """`text` as a font lacking `missing` can draw it: accented letters it lacks lose their accent (the label
    changes with the image); None when another missing character remains."""
    if not missing:
        return text
    out = []
    for c in text:
        if c in missing:
            c = unicodedata.normalize("NFD", c)[0]
            if c in missing:
                return None
        out.append(c)
    return "".join(out)


def find_fonts(style: str, root: str | os.PathLike = FONT_ROOT) -> list[str]:
    """Usable font files of `style` ('printed' or 'handwriting'), sorted by file name.

    Fonts lacking any CHARSET glyph are left out (see font_problem). When no printed font is installed,
    matplotlib's bundled DejaVuSans is returned so the module always works; there is no handwriting fallback."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    fonts = [path for path, s in candidate_fonts(root) if s == style and font_problem(path) is None]
    if not fonts and style == "printed":
        fonts = [FALLBACK_FONT]
    return fonts


def is_held_out(font_path: str | os.PathLike) -> bool:
    return font_name(font_path).startswith(HELD_OUT_FAMILIES)


def split_fonts(fonts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training fonts, held-out fonts), per style.

    Held out: the HELD_OUT_FAMILIES that are present. A style with two or more fonts but none of those
    families (other machines, --fonts) holds out its last font by file name, so each style keeps at least
    one unseen font whenever it can; a style with a single font keeps it for training."""
    train, held = [], []
    for style in STYLES:
        of_style = sorted((f for f in fonts if font_style(f) == style), key=lambda f: Path(f).name)
        out = [f for f in of_style if is_held_out(f)]
        if not out and len(of_style) >= 2:
            out = [of_style[-1]]
        held += out
        train += [f for f in of_style if f not in out]
    return train, held


@functools.lru_cache(maxsize=8192)  # the training fonts at every size render_line and _neighbour_ink draw
def _load_font(font_path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path, size)


@functools.lru_cache(maxsize=8192)
def _line_band(font_path: str, size: int) -> tuple[int, int]:
    """(top, bottom) of LINE_BAND_SAMPLE (less the accents the font lacks) in the font at `size`."""
    return _load_font(font_path, size).getbbox(fit_text(LINE_BAND_SAMPLE, font_missing(font_path)))[1::2]


def _percentiles(img: Image.Image, *percents: float) -> list[int]:
    """int(np.percentile(np.asarray(img), p)) for each p of an 'L' image, read off its histogram: the same
    values (numpy's 'linear' method), without sorting the pixels."""
    counts = np.cumsum(img.histogram())
    n = int(counts[-1])
    out = []
    for p in percents:
        q = p / 100
        virtual = n * q + (1 + q * -1) - 1  # numpy's virtual index for method='linear' (alpha = beta = 1)
        lo = int(np.floor(virtual))
        t = virtual - lo
        lo, hi = min(max(lo, 0), n - 1), min(max(lo + 1, 0), n - 1)
        a, b = (int(np.searchsorted(counts, i, side="right")) for i in (lo, hi))
        out.append(int(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)))
    return out


# ----------------------------------------------------------------------------------------------------
# Rendering and degradation
# ----------------------------------------------------------------------------------------------------
LINE_BAND_SAMPLE = "ÁÉÑÜbdhklx"  # accented capitals and ascenders, down to the baseline
INK_TIGHT_SHARE = 0.3  # render_line: lines cut at their ink instead of the font's band


def _ink_box(img: Image.Image, paper: int) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of the pixels darker than `paper`; None if there are none."""
    dark = np.asarray(img) < paper
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _shaped(mask: Image.Image, origin: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int], float]:
    """The glyph `mask` with its own slant (shear about its baseline, about ±0.1, at most ±0.25) and width
    (0.85-1.2x): (mask, origin, width factor). In a hand each letter leans and stretches a little differently;
    warp slants whole lines only."""
    sx, sh = rng.uniform(0.85, 1.2), float(np.clip(rng.normal(0.0, 0.1), -0.25, 0.25))
    (w, h), (ox, oy) = mask.size, origin
    new_ox = sx * ox + max(-sh * oy, sh * (h - oy), 0.0)  # room left of the origin for the leaning parts
    width = int(np.ceil(new_ox + sx * (w - ox) + max(sh * oy, -sh * (h - oy), 0.0))) + 1
    # output (u, v) reads input x = ox + (u - new_ox - sh * (oy - v)) / sx, y = v
    coeffs = (1 / sx, sh / sx, ox - (new_ox + sh * oy) / sx, 0.0, 1.0, 0.0)
    return mask.transform((width, h), Image.AFFINE, coeffs, resample=Image.BICUBIC), (round(new_ox), oy), sx


def _draw_glyphs(canvas: Image.Image, x: float, baseline: float, word: str, font_path: str, size: int, ink: int,
                 stroke: int, rng: np.random.Generator, shape_rng: np.random.Generator | None = None) -> float:
    """Draws `word` one character at a time, each with its own size (±15%), baseline shift, tilt (about ±5°)
    and advance: the glyph-to-glyph variation of a person's hand, which no font has and which the unseen
    handwriting of the evaluation defeats; with `shape_rng` also its own slant and width (_shaped).
    Returns the x after the word."""
    for ch in word:
        font = _load_font(font_path, max(8, int(round(size * rng.uniform(0.85, 1.15)))))
        left, top, right, bottom = font.getbbox(ch, anchor="ls", stroke_width=stroke)
        pad = max(2, size // 4)  # room for the tilt
        origin = (pad - left, pad - top)
        mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        ImageDraw.Draw(mask).text(origin, ch, font=font, fill=255, anchor="ls", stroke_width=stroke, stroke_fill=255)
        angle = float(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0))
        if abs(angle) > 0.5:
            mask = mask.rotate(angle, resample=Image.BICUBIC, center=origin)
        widen = 1.0
        if shape_rng is not None:
            mask, origin, widen = _shaped(mask, origin, shape_rng)
        dy = float(np.clip(rng.normal(0.0, 0.04 * size), -0.1 * size, 0.1 * size))
        canvas.paste(ink, (int(round(x - origin[0])), int(round(baseline + dy - origin[1]))), mask)
        x += font.getlength(ch) * rng.uniform(0.9, 1.12) * widen
    return x


def render_line(text: str, font_path: str, height: int | None = 64, rng: Rng = None,
                glyph_rng: Rng = None, shape_rng: Rng = None) -> Image.Image:
    """`text` as a grayscale field crop: dark ink on light paper, cropped tightly left and right.

    Random font size, ink and paper shade, word-level baseline jitter and spacing, sometimes a heavier
    stroke. Vertically the crop spans at least the font's band from accented capitals to the baseline
    (plus this text's descenders and swashes), so lower-case-only text is not blown up to full height;
    except for INK_TIGHT_SHARE of lines, cut at their ink (0-20% margin) as trimmed field crops are.
    With `glyph_rng` each character is drawn on its own with that stream's size, baseline, tilt and
    spacing (_draw_glyphs), and with `shape_rng` as well its own slant and width; `rng`'s draws are the same
    either way. Resized to `height` pixels (None keeps the render size)."""
    rng = np.random.default_rng(rng)
    size = int(rng.integers(28, 56))
    font = _load_font(str(font_path), size)
    ink = int(rng.integers(0, 90))
    paper = int(rng.integers(215, 256))
    stroke = 1 if size >= 36 and rng.random() < 0.15 else 0
    # Not font.getmetrics(): some handwriting fonts declare ascent/descent far beyond their glyphs.
    band_top, band_bottom = _line_band(str(font_path), size)
    jitter = 0.04 * size if rng.random() < 0.7 else 0.0
    space = font.getlength(" ") * rng.uniform(0.8, 1.5)
    words = text.split(" ")
    lengths = [font.getlength(w) for w in words]

    margin = 2 * size  # room for swashes that reach past a glyph's advance
    stretch = 1.0 if glyph_rng is None else 1.3 if shape_rng is None else 1.6  # _draw_glyphs' larger glyphs
    width = int(stretch * sum(lengths) + space * len(words) + 2 * margin)
    canvas = Image.new("L", (width, band_bottom + 3 * margin), paper)
    draw = ImageDraw.Draw(canvas)
    glyph_rng = None if glyph_rng is None else np.random.default_rng(glyph_rng)
    shape_rng = None if shape_rng is None or glyph_rng is None else np.random.default_rng(shape_rng)
    baseline = margin + font.getmetrics()[0]  # where draw.text's default 'la' anchor puts it
    x = float(margin)
    for word, length in zip(words, lengths):
        dy = float(np.clip(rng.normal(0.0, jitter), -2 * jitter, 2 * jitter)) if jitter else 0.0
        if glyph_rng is None:
            draw.text((x, margin + dy), word, font=font, fill=ink, stroke_width=stroke, stroke_fill=ink)
            x += length + space
        else:
            x = _draw_glyphs(canvas, x, baseline + dy, word, str(font_path), size, ink, stroke, glyph_rng,
                             shape_rng) + space

    ink_box = _ink_box(canvas, paper)
    left, ink_top, right, ink_bottom = ink_box or (margin, margin, int(x), margin + band_bottom)
    line_h = band_bottom - band_top
    if ink_box and rng.random() < INK_TIGHT_SHARE:
        # Cut at the ink, as forms.trim_to_ink and hand trimming do: lower-case-only text then fills the
        # height. The candidate-r11 model never saw this and read such crops at twice its usual CER.
        ink_h = ink_bottom - ink_top
        top = ink_top - int(rng.uniform(0.0, 0.2) * ink_h)
        bottom = ink_bottom + int(rng.uniform(0.0, 0.2) * ink_h)
        pad_l, pad_r = (int(rng.uniform(0.0, 0.2) * ink_h) for _ in range(2))
    else:
        top = min(ink_top, margin + band_top - int(2 * jitter)) - int(rng.uniform(0.05, 0.35) * line_h)
        bottom = max(ink_bottom, margin + band_bottom + int(2 * jitter)) + int(rng.uniform(0.1, 0.4) * line_h)
        pad_l, pad_r = (int(rng.uniform(0.02, 0.3) * line_h) for _ in range(2))
    crop = canvas.crop((max(0, left - pad_l), max(0, top), min(width, right + pad_r), min(canvas.height, bottom)))
    if height is not None:
        crop = crop.resize((max(1, round(crop.width * height / crop.height)), height), Image.LANCZOS)
    return crop


def _box_remnants(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lines along the borders, as left by the red field box when the crop is a little too generous."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    shade = int(rng.integers(40, 200))
    for side in ("top", "bottom", "left", "right"):
        if rng.random() >= 0.5:
            continue
        thick = int(rng.integers(1, 4))
        off = int(rng.integers(0, 3))
        if side in ("top", "bottom"):
            y = off if side == "top" else h - 1 - off - thick + 1
            x0, x1 = (0, w) if rng.random() < 0.7 else sorted(int(v) for v in rng.integers(0, w, 2))
            draw.rectangle((x0, y, x1, y + thick - 1), fill=shade)
        else:
            x = off if side == "left" else w - 1 - off - thick + 1
            draw.rectangle((x, 0, x + thick - 1, h), fill=shade)
    return img


def _rotate(img: Image.Image, angle: float, fill: int) -> Image.Image:
    """img.rotate(angle, Image.BICUBIC, expand=True, fillcolor=fill), the same geometry and output size, with
    OpenCV's bicubic warp (3x faster)."""
    w, h = img.size
    a = -math.radians(angle)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0, round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]

    def apply(x: float, y: float) -> tuple[float, float]:
        return m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]

    m[2], m[5] = apply(-w / 2, -h / 2)
    m[2], m[5] = m[2] + w / 2, m[5] + h / 2
    corners = [apply(x, y) for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
    nw = math.ceil(max(x for x, _ in corners)) - math.floor(min(x for x, _ in corners))
    nh = math.ceil(max(y for _, y in corners)) - math.floor(min(y for _, y in corners))
    m[2], m[5] = apply(-(nw - w) / 2, -(nh - h) / 2)
    # PIL's matrix maps output to input coordinates with pixel i spanning [i, i+1); OpenCV's, pixel centres.
    inverse = np.float64([[m[0], m[1], m[2] + (m[0] + m[1] - 1) / 2], [m[3], m[4], m[5] + (m[3] + m[4] - 1) / 2]])
    return Image.fromarray(cv2.warpAffine(np.asarray(img), inverse, (nw, nh), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill))


def _gaussian_noise(arr: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """arr + N(0, sigma²) noise, clipped to 0-255 and truncated to uint8. OpenCV's generator, seeded from `rng`
    (so the result still depends on rng alone), is 5x faster than numpy's normal()."""
    cv2.setRNGSeed(int(rng.integers(2**31)))
    noise = cv2.randn(np.empty(arr.shape, np.float32), 0.0, sigma)
    return cv2.addWeighted(arr, 1.0, noise, 1.0, -0.5, dtype=cv2.CV_8U)  # rounds: -0.5 truncates like astype


def degrade(img: Image.Image, rng: Rng, strength: float = 1.0) -> Image.Image:
    """Scan-like damage, each step applied with a probability (and amount) that grows with `strength`.

    Box-line remnants, ink erosion/dilation, rotation (up to ±2°·strength), resolution loss and width
    change, blur, binarization or Gaussian noise, JPEG compression. strength=0 returns a copy unchanged.
    The output keeps the input's height (a rotated line is re-fitted to it)."""
    rng = np.random.default_rng(rng)
    img = img.convert("L")
    if strength <= 0:
        return img.copy()
    height = img.height
    paper, = _percentiles(img, 90)

    def happens(p: float) -> bool:
        return rng.random() < min(1.0, p * strength)

    if happens(0.3):
        img = _box_remnants(img, rng)
    if happens(0.3):  # ink is dark: min-filter (erode) thickens strokes, max-filter (dilate) thins them
        op = cv2.erode if rng.random() < 0.5 else cv2.dilate
        img = Image.fromarray(op(np.asarray(img), np.ones((2, 2), np.uint8)))
    if happens(0.7):
        angle = float(rng.uniform(-2.0, 2.0) * min(strength, 1.0))
        img = _rotate(img, angle, paper)
    if happens(0.5):
        w, h = img.size
        f = float(rng.uniform(0.35, 0.9))
        low = img.resize((max(1, int(w * f)), max(1, int(h * f))), Image.BILINEAR)
        img = low.resize((w, h), Image.BILINEAR)
    if happens(0.3):
        img = img.resize((max(1, int(img.width * rng.uniform(0.85, 1.15))), img.height), Image.BICUBIC)
    if happens(0.5):  # PIL's GaussianBlur(radius) is this sigma, approximated by box blurs (7x slower)
        img = Image.fromarray(cv2.GaussianBlur(np.asarray(img), (0, 0), float(rng.uniform(0.3, 1.2))))
    if happens(0.2):  # bi-level scans (fax, photocopies, scanner 'text' mode)
        _, binary = cv2.threshold(np.asarray(img), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        img = Image.fromarray(binary)
    elif happens(0.7):
        img = Image.fromarray(_gaussian_noise(np.asarray(img), float(rng.uniform(2.0, 12.0)), rng))
    if happens(0.5):  # the bytes PIL's JPEG writer gives, in half the time
        quality = int(rng.integers(25, 90))
        img = Image.fromarray(cv2.imdecode(cv2.imencode(".jpg", np.asarray(img), [cv2.IMWRITE_JPEG_QUALITY, quality])[1],
                                           cv2.IMREAD_GRAYSCALE))
    if img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)
    return img


LAYOUTS = ("tight", "margins", "box")
SCAN_HEIGHT_FACTOR = 1.5  # make_sample degrades laid-out crops at most this many line heights tall
LAYOUT_WEIGHTS = {"tight": 0.35, "margins": 0.25, "box": 0.4}


def _neighbour_ink(canvas: Image.Image, rng: np.random.Generator, font_path: str, box: tuple[int, int, int, int],
                   ink: int) -> None:
    """Text of the cells around a field, drawn outside `box` (x0, y0, x1, y1) so only its edge shows."""
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = box
    bh = y1 - y0
    font = _load_font(str(font_path), max(8, int(bh * rng.uniform(0.35, 0.8))))
    chars = string.ascii_letters + string.digits
    for side in ("left", "right", "top", "bottom"):
        if rng.random() >= 0.35:
            continue
        text = "".join(_pick(rng, chars) for _ in range(int(rng.integers(2, 12))))
        tw = font.getlength(text)
        if side == "left":
            xy = (x0 - tw + rng.uniform(-2, 0.3) * bh * 0.1, y0 + rng.uniform(0, 0.5) * bh)
        elif side == "right":
            xy = (x1 + rng.uniform(-0.05, 0.3) * bh * 0.3, y0 + rng.uniform(0, 0.5) * bh)
        elif side == "top":
            xy = (rng.uniform(x0 - tw / 2, x1), y0 - font.size * rng.uniform(0.6, 1.0))
        else:
            xy = (rng.uniform(x0 - tw / 2, x1), y1 - font.size * rng.uniform(0.0, 0.4))
        draw.text(xy, text, font=font, fill=ink)


def field_layout(line: Image.Image, rng: Rng, font_path: str | None = None, layout: str | None = None) -> Image.Image:
    """A tight line placed as a form field crop really is: 'tight' (unchanged), 'margins' (paper around it,
    none to wide, text height 30-90% of the crop, often a long empty tail, sometimes an underline) or 'box'
    (the whole untrimmed cell: margins, its border lines, and the edge of neighbouring cells' ink).
    layout=None draws one with LAYOUT_WEIGHTS. Grayscale out."""
    rng = np.random.default_rng(rng)
    line = line.convert("L")
    if layout is None:
        layout = _pick(rng, [k for k in LAYOUTS for _ in range(int(LAYOUT_WEIGHTS[k] * 20))])
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "tight":
        return line.copy()
    paper, ink = _percentiles(line, 90, 1)
    w, h = line.size
    box_h = max(h + 1, int(h / rng.uniform(0.35, 0.9)))
    top = int(rng.uniform(0.15, 0.85) * (box_h - h))
    left = int(rng.uniform(0.0, 0.8) * h) if rng.random() < 0.8 else int(rng.uniform(0.0, 0.08) * h)
    right = int(rng.uniform(0.0, 0.6) * h)
    if rng.random() < 0.4:  # fields are wider than what is written in them
        right += int(rng.uniform(0.0, 1.5) * w)
    right = max(0, min(right, 16 * box_h - left - w))  # beyond ~16:1 the 8:1 model input squeezes text too far
    if rng.random() < 0.15:  # centred in the cell
        left = right = (left + right) // 2
    box_w = left + w + right
    cell = Image.new("L", (box_w, box_h), paper)
    cell.paste(line, (left, top))
    draw = ImageDraw.Draw(cell)
    if layout == "margins":
        if rng.random() < 0.15:  # a fill-in line under the text
            y = min(box_h - 1, top + h + int(rng.integers(-2, 4)))
            draw.line((0, y, box_w, y), fill=int(rng.integers(20, 160)), width=int(rng.integers(1, 3)))
        return cell
    shade = int(rng.integers(10, 170))  # the red box turns mid-grey in a grayscale scan
    thick = int(rng.integers(1, max(2, box_h // 20) + 1))
    for side in ("top", "bottom", "left", "right"):
        if rng.random() < 0.15:
            continue
        inset = int(rng.integers(0, 3))
        if side == "top":
            draw.rectangle((0, inset, box_w, inset + thick - 1), fill=shade)
        elif side == "bottom":
            draw.rectangle((0, box_h - 1 - inset - thick + 1, box_w, box_h - 1 - inset), fill=shade)
        elif side == "left":
            draw.rectangle((inset, 0, inset + thick - 1, box_h), fill=shade)
        else:
            draw.rectangle((box_w - 1 - inset - thick + 1, 0, box_w - 1 - inset, box_h), fill=shade)
    pads = [int(rng.uniform(0, 0.12) * box_h) if rng.random() < 0.6 else 0 for _ in range(4)]  # l, t, r, b
    if not any(pads) or font_path is None:
        return cell
    outer = Image.new("L", (box_w + pads[0] + pads[2], box_h + pads[1] + pads[3]), paper)
    _neighbour_ink(outer, rng, font_path, (pads[0], pads[1], pads[0] + box_w, pads[1] + box_h), ink)
    outer.paste(cell, (pads[0], pads[1]))
    return outer


def _smooth_field(h: int, w: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """float32 (h, w): uniform noise in [-1, 1) blurred with a Gaussian of `sigma` pixels (up to scale, which
    warp normalises). Drawn on a grid `step` times coarser, blurred there and upsampled bilinearly: the
    field is smooth over sigma anyway, and the coarse blur is shrunk so that with the interpolation's
    spread (variance step²/6) the correlation length is sigma's. 10-20x faster than blurring at full size."""
    step = max(1, int(sigma / 2))
    if step == 1:
        return cv2.GaussianBlur(rng.random((h, w), dtype=np.float32) * 2 - 1, (0, 0), sigma)
    ch, cw = -(-h // step) + 1, -(-w // step) + 1
    coarse = rng.random((ch, cw), dtype=np.float32) * 2 - 1
    coarse = cv2.GaussianBlur(coarse, (0, 0), math.sqrt(max(sigma ** 2 - step ** 2 / 6, 1.0)) / step)
    return np.ascontiguousarray(cv2.resize(coarse, (cw * step, ch * step), interpolation=cv2.INTER_LINEAR)[:h, :w])


def warp(img: Image.Image, rng: Rng, strength: float = 1.0) -> Image.Image:
    """Handwriting-like shape changes, each with a probability that grows with `strength`: slant (shear up
    to ±0.45·strength), narrower or wider writing, and a smooth elastic wobble of the strokes. Keeps the
    height; strength=0 returns a copy unchanged. Trains for hands (and fonts) that the renderer lacks."""
    rng = np.random.default_rng(rng)
    img = img.convert("L")
    if strength <= 0:
        return img.copy()
    s = min(strength, 1.0)
    paper, = _percentiles(img, 90)
    if rng.random() < 0.6 * s:  # slant: the top of the line moves by k·height
        arr = np.asarray(img)
        h, w = arr.shape
        k = float(rng.uniform(-0.45, 0.45) * s)
        shift = abs(k) * (h - 1)
        m = np.float32([[1, -k, max(k, 0.0) * (h - 1)], [0, 1, 0]])
        arr = cv2.warpAffine(arr, m, (w + int(np.ceil(shift)), h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
        img = Image.fromarray(arr)
    if rng.random() < 0.3 * s:
        img = img.resize((max(1, int(img.width * rng.uniform(0.7, 1.3))), img.height), Image.BICUBIC)
    if rng.random() < 0.5 * s:  # elastic: displacement fields smoothed over about a letter's size
        arr = np.asarray(img)
        h, w = arr.shape
        sigma = h * float(rng.uniform(0.08, 0.2))
        alpha = h * float(rng.uniform(0.02, 0.05)) * s
        dx, dy = (_smooth_field(h, w, sigma, rng) for _ in range(2))
        dx *= alpha / (np.abs(dx).max() + 1e-6)
        dy *= alpha / (np.abs(dy).max() + 1e-6)
        dx += np.arange(w, dtype=np.float32)
        dy += np.arange(h, dtype=np.float32)[:, None]
        arr = cv2.remap(arr, dx, dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
        img = Image.fromarray(arr)
    return img


# ----------------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------------
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("image", "text", "font", "style", "kind", "layout")


@functools.lru_cache(maxsize=16)
def _fonts_by_style(fonts: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    """{style: its font paths in table order}, styles sorted (make_sample's draws)."""
    return {style: [p for p, s in fonts if s == style] for style in sorted({s for _, s in fonts})}


def make_sample(index: int, seed: int, fonts: Sequence[tuple[str, str]], kinds: Sequence[str] = FIELD_KINDS,
                height: int | None = 64, strength: float = 1.0, warp_strength: float = 0.0,
                layout: str | None = None, handwriting_share: float | None = None,
                glyph_share: float = 0.0, oldstyle_share: float = 0.0,
                glyph_shape_share: float = 0.0) -> tuple[Image.Image, dict]:
    """Sample `index` of the data set `seed`: (image, row without 'image'). Depends only on its arguments.

    Picks a style uniformly among those present, then a font of that style, so handwriting is not
    swamped by the many printed font files (handwriting_share: the odds of handwriting instead, when both
    styles are present; None keeps the uniform draw and so every earlier stream); then a kind (text_sources.KIND_WEIGHTS) and a value the font
    can draw (accents it lacks are dropped from image and label alike). warp_strength > 0 adds `warp`;
    the line is then laid out as a field crop (field_layout: layout=None mixes tight lines, margins and
    whole boxes) and degraded like a scan. glyph_share: the odds that a handwriting line is drawn a
    character at a time with per-glyph variation (render_line's glyph_rng; a third of that for printed
    lines); 0 keeps every earlier stream. glyph_shape_share: the odds that such a line also gives each
    glyph its own slant and width (render_line's shape_rng). oldstyle_share: the odds that a line with
    digits in a font offering old-style figures (has_oldstyle_figures) draws them. Both 0 keep every
    earlier stream. Shape, layout, glyphs and figures draw from their own random streams."""
    for name, share in (("handwriting_share", handwriting_share), ("glyph_share", glyph_share),
                        ("oldstyle_share", oldstyle_share), ("glyph_shape_share", glyph_shape_share)):
        if share is not None and not 0.0 <= share <= 1.0:  # odds: outside [0, 1] would act as 0 or 1 silently
            raise ValueError(f"{name} is a probability between 0 and 1, not {share}")
    rng = np.random.default_rng([seed, index])
    by_style = _fonts_by_style(tuple(fonts))
    if handwriting_share is not None and len(by_style) == 2:
        style = "handwriting" if rng.random() < handwriting_share else "printed"
    else:
        style = _pick(rng, tuple(by_style))
    path = _pick(rng, by_style[style])
    missing = font_missing(str(path))
    for _ in range(20):  # e.g. emails for a font without '@': another kind
        kind = pick_kind(rng, list(kinds))
        try:
            text = text_value(rng, kind, avoid=missing)
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"font {path} cannot draw any {'/'.join(kinds)} value (it lacks {missing!r})")
    glyph_odds = glyph_share if style == "handwriting" else glyph_share / 3
    glyph_rng = None
    if glyph_odds > 0:
        glyph_rng = np.random.default_rng([seed, index, 3])
        glyph_rng = glyph_rng if glyph_rng.random() < glyph_odds else None
    shape_rng = None
    if glyph_rng is not None and glyph_shape_share > 0:
        shape_rng = np.random.default_rng([seed, index, 5])
        shape_rng = shape_rng if shape_rng.random() < glyph_shape_share else None
    drawn_in = path
    if (oldstyle_share > 0 and any(c.isdigit() for c in text) and has_oldstyle_figures(str(path))
            and np.random.default_rng([seed, index, 4]).random() < oldstyle_share):
        drawn_in = oldstyle_font_file(str(path))
    img = render_line(text, drawn_in, height=height, rng=rng, glyph_rng=glyph_rng, shape_rng=shape_rng)
    if warp_strength > 0:  # keeps the height
        img = warp(img, np.random.default_rng([seed, index, 1]), warp_strength)
    lay_rng = np.random.default_rng([seed, index, 2])
    layout = layout or _pick(lay_rng, [k for k in LAYOUTS for _ in range(int(LAYOUT_WEIGHTS[k] * 20))])
    img = field_layout(img, lay_rng, path, layout)
    if height is not None and img.height > SCAN_HEIGHT_FACTOR * height:
        # Scan damage at a box height of 1.5x the line's, not the full layout size: whole boxes (up to ~3x)
        # made degrade the bottleneck of the training stream (about 9 steps/s on the H200 host's 15 workers).
        img = img.resize((max(1, round(img.width * SCAN_HEIGHT_FACTOR * height / img.height)),
                          int(SCAN_HEIGHT_FACTOR * height)), Image.BILINEAR)
    img = degrade(img, rng, strength)
    if height is not None and img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.BILINEAR)
    return img, {"text": text, "font": font_name(path), "style": style, "kind": kind, "layout": layout}


def _write_sample(index: int, out_dir: str, split_name: str, **kwargs) -> dict:
    img, row = make_sample(index, **kwargs)
    rel = f"images/{split_name}_{index:06d}.png"
    img.save(Path(out_dir) / rel)
    return {"image": rel, **row}


def _font_table(fonts: Union[Sequence[str], Mapping[str, str]]) -> list[tuple[str, str]]:
    if isinstance(fonts, Mapping):
        table = [(str(p), s) for p, s in fonts.items()]
    else:
        table = [(str(p), font_style(p)) for p in fonts]
    for path, style in table:
        if style not in STYLES:
            raise ValueError(f"font {path}: style must be one of {STYLES}, got {style!r}")
    return table


def make_dataset(out_dir: str | os.PathLike, n: int, seed: int, fonts: Union[Sequence[str], Mapping[str, str]],
                 kinds: Sequence[str] | None = None, split_name: str = "train", *, height: int | None = 64,
                 strength: float = 1.0, warp_strength: float = 0.0, layout: str | None = None,
                 workers: int | None = None, progress: bool = True) -> list[dict]:
    """Write n line images to out_dir/images/ and out_dir/manifest.csv; return the manifest rows.

    fonts: paths (style taken from their folder, see font_style) or {path: style}. Fonts without every
    CHARSET glyph are dropped with a warning. Rows: image (path relative to out_dir), text, font, style,
    kind. The result does not depend on `workers` (default: all cores)."""
    table = []
    for path, style in _font_table(fonts):
        problem = font_problem(path)
        if problem:
            print(f"[synth_data] skipping font {path}: {problem}", file=sys.stderr)
        else:
            table.append((path, style))
    if not table:
        raise ValueError("no usable font (install some with ./setup_mlx.sh --fonts, or see --list-fonts)")
    kinds = tuple(kinds or FIELD_KINDS)
    unknown = set(kinds) - set(FIELD_KINDS)
    if unknown:
        raise ValueError(f"unknown field kinds {sorted(unknown)}; choose from {', '.join(FIELD_KINDS)}")

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    job = functools.partial(_write_sample, out_dir=str(out), split_name=split_name, seed=seed, fonts=table,
                            kinds=kinds, height=height, strength=strength, warp_strength=warp_strength,
                            layout=layout)
    workers = workers or os.cpu_count() or 1
    from tqdm import tqdm

    with tqdm(total=n, desc=f"{split_name} lines", unit="line", disable=not progress) as bar:
        if workers == 1 or n < 64:
            rows = []
            for i in range(n):
                rows.append(job(i))
                bar.update()
        else:
            with multiprocessing.Pool(workers) as pool:
                rows = []
                for row in pool.imap(job, range(n), chunksize=32):
                    rows.append(row)
                    bar.update()

    with open(out / MANIFEST_NAME, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def read_manifest(manifest: str | os.PathLike) -> list[dict]:
    """Rows of a manifest.csv, with 'image' made an absolute path."""
    manifest = Path(manifest)
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["image"] = str((manifest.parent / row["image"]).resolve())
    return rows


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def _select_fonts(args: argparse.Namespace) -> dict[str, str]:
    """{path: style} for the CLI options."""
    styles = STYLES if args.style == "both" else (args.style,)
    if args.fonts:
        chosen = {p: font_style(p, default=styles[0]) for p in args.fonts}
    else:
        chosen = {}
        for style in styles:
            found = find_fonts(style)
            if not found:
                print(f"[synth_data] no usable {style} font under {FONT_ROOT} (try ./setup_mlx.sh --fonts, "
                      "or set TROCR_FONT_ROOT)", file=sys.stderr)
            chosen.update({p: style for p in found})
        train, held = split_fonts(list(chosen))
        keep = {"train": train, "heldout": held, "all": list(chosen)}[args.font_split]
        chosen = {p: chosen[p] for p in keep}
    for pattern in args.exclude_fonts or ():
        chosen = {p: s for p, s in chosen.items()
                  if not (fnmatch.fnmatch(font_name(p), pattern) or fnmatch.fnmatch(Path(p).name, pattern))}
    return chosen


def _list_fonts() -> None:
    usable = [p for p, _ in candidate_fonts() if font_problem(p) is None]
    _, held = split_fonts(usable)
    print(f"Font folders from {FONT_LIST_FILE.name} under {FONT_ROOT}:")
    for path, style in candidate_fonts():
        problem = font_problem(path)
        status = f"SKIPPED: {problem}" if problem else ("held out" if path in held else "train")
        lacks = "" if problem else font_missing(path)
        status += f" (lacks {lacks}: such lines drop accents or are drawn again)" if lacks else ""
        print(f"  {style:<12} {font_name(path):<34} {status}")
    if not usable:
        print(f"  (none installed; printed lines fall back to {FALLBACK_FONT})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate synthetic form-field text lines (PNG + manifest.csv) for OCR training/evaluation.",
        epilog="Examples:\n"
               "  %(prog)s --out data/train --n 50000 --seed 0\n"
               "  %(prog)s --out data/eval_heldout --n 1000 --seed 1 --font-split heldout\n"
               "  %(prog)s --out data/hw --n 500 --style handwriting --exclude-fonts 'Dancing*'\n"
               "  %(prog)s --list-fonts\n"
               "Install the fonts with ./setup_mlx.sh --fonts (Debian/Ubuntu).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (gets images/ and manifest.csv)")
    parser.add_argument("--n", type=int, default=1000, help="number of lines (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="data-set seed; same seed, same lines (default 0)")
    parser.add_argument("--style", choices=("printed", "handwriting", "both"), default="both",
                        help="font style(s); with 'both' each line picks a style with equal odds (default both)")
    parser.add_argument("--font-split", choices=("train", "heldout", "all"), default="train",
                        help=f"use training fonts, only held-out fonts ({', '.join(HELD_OUT_FAMILIES)} families), "
                             "or all (default train)")
    parser.add_argument("--fonts", nargs="+", metavar="PATH",
                        help="use exactly these font files instead of the installed ones (ignores --font-split)")
    parser.add_argument("--exclude-fonts", nargs="+", metavar="PATTERN",
                        help="drop fonts whose name matches (file stem or name, shell pattern: 'DejaVu*')")
    parser.add_argument("--kinds", type=lambda s: s.split(","), metavar="K1,K2",
                        help=f"field kinds to draw from (default all: {','.join(FIELD_KINDS)})")
    parser.add_argument("--height", type=int, default=64, help="line image height in pixels (default 64)")
    parser.add_argument("--strength", type=float, default=1.0, help="scan degradation strength, 0 = clean (default 1)")
    parser.add_argument("--warp", type=float, default=0.0,
                        help="handwriting-like slant/width/elastic distortion strength, 0 = none (default 0)")
    parser.add_argument("--layout", choices=("mix",) + LAYOUTS, default="mix",
                        help="field geometry: tight lines, margins, whole boxes with borders and neighbours' ink, "
                             "or a mix of the three (default mix; see field_layout)")
    parser.add_argument("--split-name", default="train", help="prefix of the image file names (default train)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--list-fonts", action="store_true", help="show the fonts found, held out or skipped, and exit")
    args = parser.parse_args(argv)

    if args.list_fonts:
        _list_fonts()
        return 0
    if not args.out:
        parser.error("--out is required (or use --list-fonts)")
    fonts = _select_fonts(args)
    if not fonts:
        parser.error("no font left to render with (see --list-fonts; install with ./setup_mlx.sh --fonts)")
    print(f"[synth_data] {len(fonts)} fonts: {', '.join(sorted(font_name(p) for p in fonts))}", file=sys.stderr)
    try:
        rows = make_dataset(args.out, args.n, args.seed, fonts, kinds=args.kinds, split_name=args.split_name,
                            height=args.height, strength=args.strength, warp_strength=args.warp,
                            layout=None if args.layout == "mix" else args.layout,
                            workers=args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"[synth_data] wrote {len(rows)} lines to {Path(args.out) / MANIFEST_NAME}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic form-field text lines for training and evaluating the OCR model, deterministic from a seed.

The users' forms are Spanish-language paper forms from Bogotá; each field (a red box) is cropped and read
as one text line. This module makes look-alike lines: field values (names, dates, amounts, cédulas/NITs,
phones, addresses, emails, phrases, words, numbers), rendered in printed or handwriting-style fonts and
degraded like a scan.

    python scripts/synth_data.py --out data/train --n 50000 --seed 0 --style both
    python scripts/synth_data.py --out data/heldout --n 1000 --seed 1 --font-split heldout
    python scripts/synth_data.py --list-fonts

Fonts come from the Debian packages in fonts-debian.txt (`./setup_mlx.sh --fonts` installs them).
Held-out fonts: the families in HELD_OUT_FAMILIES are never used for training lines (`--font-split train`,
the default) so that `--font-split heldout` measures accuracy on fonts the model has not seen.
Sample i depends only on (seed, i), so a data set is the same whatever the number of worker processes.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import calendar
import csv
import fnmatch
import functools
import io
import logging
import multiprocessing
import os
import string
import sys
import unicodedata
from pathlib import Path
from typing import Mapping, Sequence, Union

import cv2
import matplotlib
import numpy as np
from fontTools.ttLib import TTFont  # fontTools comes with matplotlib
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# ----------------------------------------------------------------------------------------------------
# Character set: every generator draws only from it, and every font used must have all of it.
# ----------------------------------------------------------------------------------------------------
ACCENTED = "áéíóúñüÁÉÍÓÚÑÜ"
PUNCTUATION = " .,:;-/#$@()%+&'_"
CHARSET = string.ascii_letters + string.digits + ACCENTED + PUNCTUATION

FIELD_KINDS = ("name", "date", "amount", "id_number", "phone", "address", "email", "phrase", "word", "number")
STYLES = ("printed", "handwriting")

Rng = Union[np.random.Generator, int, None]


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _vary_case(rng: np.random.Generator, text: str, upper: float = 0.25, lower: float = 0.0) -> str:
    """Forms are often filled in capitals; sometimes all lower case."""
    r = rng.random()
    if r < upper:
        return text.upper()
    if r < upper + lower:
        return text.lower()
    return text


def _thousands(value: int, sep: str) -> str:
    return f"{value:,}".replace(",", sep)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


# ----------------------------------------------------------------------------------------------------
# Field values
# ----------------------------------------------------------------------------------------------------
SPANISH_FIRST = (
    "María", "José", "Juan", "Luis", "Carlos", "Andrés", "Sofía", "Valentina", "Camila", "Daniela", "Ángela",
    "Iván", "Óscar", "Julián", "Sebastián", "Martín", "Ramón", "Jesús", "Inés", "Lucía", "Mónica", "Verónica",
    "Nicolás", "Simón", "Tomás", "Matías", "Estefanía", "Natalia", "Paola", "Diana", "Jhon", "Yésica", "Héctor",
    "Rubén", "Raúl", "Álvaro", "Adrián", "Agustín", "Begoña", "Zoé", "Úrsula", "Íngrid", "Efraín", "Germán",
    "Hernán", "Dairo", "Edwin", "Leidy", "Marisol", "Nubia", "Gloria", "Fabián", "Cristóbal", "Joaquín",
    "Néstor", "Ismael", "Elkin", "Yolanda", "Ana", "Pedro", "Jorge", "Felipe", "Alejandro", "Manuel", "Ximena",
)
SPANISH_LAST = (
    "Rodríguez", "Gómez", "González", "Martínez", "García", "López", "Hernández", "Pérez", "Sánchez", "Ramírez",
    "Díaz", "Torres", "Rojas", "Vargas", "Moreno", "Jiménez", "Muñoz", "Núñez", "Castaño", "Peña", "Ibáñez",
    "Ordóñez", "Suárez", "Vélez", "Cárdenas", "Londoño", "Argüello", "Güiza", "Agüero", "Ospina", "Cañón",
    "Beltrán", "Ortiz", "Álvarez", "Bermúdez", "Castillo", "Quintero", "Zúñiga", "Montaña", "Patiño", "Ramos",
    "Acuña", "Mejía", "Gutiérrez", "Córdoba", "Salazar", "Ávila", "Úsuga", "Echeverría", "Villalba", "Duarte",
)
ENGLISH_FIRST = (
    "John", "Mary", "James", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
    "David", "Susan", "Richard", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Emily",
    "Matthew", "Ashley", "Kevin", "Brian", "Chloé", "René",
)
ENGLISH_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
    "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker",
    "Young", "O'Brien", "McDonald", "Wright", "Scott",
)
BOGOTA_LOCALITIES = (
    "Usaquén", "Chapinero", "Santa Fe", "San Cristóbal", "Usme", "Tunjuelito", "Bosa", "Kennedy", "Fontibón",
    "Engativá", "Suba", "Barrios Unidos", "Teusaquillo", "Los Mártires", "Antonio Nariño", "Puente Aranda",
    "La Candelaria", "Rafael Uribe Uribe", "Ciudad Bolívar", "Sumapaz", "Cedritos", "Modelia", "Galerías",
)
SPANISH_WORDS = (
    "información", "dirección", "teléfono", "número", "código", "razón", "social", "según", "año", "señor",
    "señora", "niño", "niña", "pingüino", "vergüenza", "bilingüe", "cigüeña", "solicitud", "afiliación",
    "observaciones", "beneficiario", "titular", "firma", "fecha", "nacimiento", "expedición", "ciudad",
    "departamento", "municipio", "género", "estado", "civil", "soltero", "casado", "unión", "libre", "profesión",
    "ocupación", "empresa", "cargo", "salario", "ingresos", "egresos", "crédito", "débito", "cuenta", "ahorros",
    "corriente", "banco", "valor", "total", "pago", "pendiente", "revisión", "aprobado", "rechazado", "trámite",
    "radicado", "documento", "identidad", "cédula", "extranjería", "pasaporte", "contribuyente", "régimen",
    "simplificado", "común", "actividad", "económica", "correo", "electrónico", "móvil", "residencia",
    "barrio", "localidad", "estrato", "vivienda", "propia", "arrendada", "familiar", "educación", "básica",
    "técnico", "tecnólogo", "universitario", "posgrado", "salud", "pensión", "cesantías", "riesgos", "médico",
    "diagnóstico", "síntomas", "tratamiento", "autorización", "decisión", "mañana", "tarde", "día", "mes",
    "sí", "no", "ninguno", "otro", "cuál", "útil", "público", "privado", "jurídica", "natural", "menor",
    "mayor", "edad", "acompañante", "teléfonos", "categoría", "vehículo", "matrícula", "inscripción",
)
SPANISH_CONNECTORS = ("de", "del", "la", "el", "y", "en", "para", "por", "con", "sin", "a", "los", "las")
ENGLISH_WORDS = (
    "name", "address", "phone", "date", "birth", "signature", "amount", "total", "payment", "account",
    "number", "city", "country", "email", "approved", "pending", "review", "notes", "none", "other",
    "employer", "position", "income", "single", "married", "yes", "no", "company", "branch", "office",
)
FIXED_PHRASES = (
    "Sin observaciones", "Pago pendiente de revisión", "Firma del titular", "Datos del beneficiario",
    "No aplica", "N/A", "Bogotá D.C.", "Colombia", "Persona natural", "Persona jurídica", "Cuenta de ahorros",
    "Régimen común", "Unión libre", "Cabeza de familia", "Ver anexo", "Según documento adjunto",
    "Same as above", "See attached", "Not applicable",
)
MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
             "noviembre", "diciembre")
MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December")
STREET_TYPES = ("Calle", "Cl.", "Cl", "CL", "Carrera", "Cra.", "Cra", "Kr", "KR", "Cr.", "Avenida", "Av.",
                "Av. Calle", "Av. Carrera", "AK", "AC", "Transversal", "Tv.", "Diagonal", "Dg.", "DG")
STREET_SUFFIXES = ("", "", "", "A", "B", "C", "D", "F", "Q", " Bis", "A Bis", "B Bis")  # as written after the number
ADDRESS_COMPLEMENTS = ("Apto {n}", "Apto. {n}", "Apt {n}", "Of. {n}", "Oficina {n}", "Int. {s}", "Local {n}",
                       "Casa {s}", "Piso {s}", "Torre {s} Apto {n}", "Bloque {s} Apto {n}", "Consultorio {n}")
EMAIL_DOMAINS = ("gmail.com", "hotmail.com", "yahoo.es", "outlook.com", "une.net.co", "empresa.com.co",
                 "alcaldiabogota.gov.co", "unal.edu.co", "correo.com", "etb.net.co")


def _person(rng: np.random.Generator) -> tuple[str, str, str]:
    """(first name, second name or '', surname(s)) - Spanish (two surnames, often) or English."""
    if rng.random() < 0.75:
        first = _pick(rng, SPANISH_FIRST)
        second = _pick(rng, SPANISH_FIRST) if rng.random() < 0.35 else ""
        last = _pick(rng, SPANISH_LAST)
        if rng.random() < 0.7:  # Colombians usually write both surnames
            last += " " + _pick(rng, SPANISH_LAST)
        return first, second, last
    second = _pick(rng, string.ascii_uppercase) + "." if rng.random() < 0.3 else ""
    return _pick(rng, ENGLISH_FIRST), second, _pick(rng, ENGLISH_LAST)


def gen_name(rng: np.random.Generator) -> str:
    first, second, last = _person(rng)
    given = f"{first} {second}".strip()
    layout = rng.random()
    if layout < 0.6:
        text = f"{given} {last}"
    elif layout < 0.8:
        text = f"{last}, {given}"
    else:
        text = f"{last.upper()} {given}"  # surnames first in capitals, as on cédulas
    return _vary_case(rng, text, upper=0.3)


def gen_date(rng: np.random.Generator) -> str:
    y = int(rng.integers(1940, 2031))
    m = int(rng.integers(1, 13))
    d = int(rng.integers(1, calendar.monthrange(y, m)[1] + 1))
    formats = (
        lambda: f"{d:02d}/{m:02d}/{y}",
        lambda: f"{d}/{m}/{y}",
        lambda: f"{d:02d}-{m:02d}-{y}",
        lambda: f"{y}-{m:02d}-{d:02d}",
        lambda: f"{y}/{m:02d}/{d:02d}",
        lambda: f"{d:02d}.{m:02d}.{y % 100:02d}",
        lambda: f"{d:02d}/{m:02d}/{y % 100:02d}",
        lambda: f"{d} de {MONTHS_ES[m - 1]} de {y}",
        lambda: f"{d} {MONTHS_ES[m - 1].capitalize()} {y}",
        lambda: f"{d:02d}/{MONTHS_ES[m - 1][:3].upper()}/{y}",
        lambda: f"{d:02d}-{MONTHS_ES[m - 1][:3]}-{y}",
        lambda: f"{MONTHS_EN[m - 1]} {d}, {y}",
        lambda: f"{d} {MONTHS_EN[m - 1][:3]} {y}",
        lambda: f"DD {d:02d} MM {m:02d} AAAA {y}",
    )
    return _pick(rng, formats)()


def gen_amount(rng: np.random.Generator) -> str:
    value = int(round(10 ** rng.uniform(2, 8.5)))
    cents = int(rng.integers(0, 100))
    dots, commas = _thousands(value, "."), _thousands(value, ",")
    formats = (
        lambda: f"$ {dots}",
        lambda: f"${dots}",
        lambda: f"$ {dots},{cents:02d}",
        lambda: f"{commas}.{cents:02d}",
        lambda: f"$ {commas}.{cents:02d}",
        lambda: f"COP {dots}",
        lambda: f"{dots} COP",
        lambda: f"$ {dots} COP",
        lambda: f"USD {commas}.{cents:02d}",
        lambda: f"$ {dots} M/CTE",
        lambda: f"{dots} pesos",
        lambda: f"{value}",
    )
    return _pick(rng, formats)()


def gen_id_number(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.55:  # cédula: newer ones have 10 digits starting with 10, older ones 7-8 digits
        if rng.random() < 0.6:
            number = int(rng.integers(1_000_000_000, 1_100_000_000))
        else:
            number = int(rng.integers(1_000_000, 99_999_999))
        body = _thousands(number, ".") if rng.random() < 0.6 else str(number)
        prefix = _pick(rng, ("", "", "C.C. ", "CC ", "C.C ", "CC. ", "T.I. ", "C.E. "))
        return prefix + body
    if kind < 0.9:  # NIT with its check digit
        number = int(rng.integers(800_000_000, 999_999_999))
        body = _thousands(number, ".") if rng.random() < 0.7 else str(number)
        text = f"{body}-{int(rng.integers(0, 10))}"
        return _pick(rng, ("", "NIT ", "NIT. ", "Nit: ")) + text
    letters = "".join(_pick(rng, string.ascii_uppercase) for _ in range(2))
    return f"{_pick(rng, ('', 'Pasaporte ', 'PA '))}{letters}{int(rng.integers(100000, 999999))}"


def gen_phone(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:  # mobile: 3xx xxx xxxx
        a, b, c = f"3{int(rng.integers(0, 60)):02d}", f"{int(rng.integers(0, 1000)):03d}", f"{int(rng.integers(0, 10000)):04d}"
        text = _pick(rng, (f"{a} {b} {c}", f"{a}{b}{c}", f"+57 {a} {b} {c}", f"(+57) {a}{b}{c}", f"{a}-{b}-{c}",
                           f"+57{a}{b}{c}"))
    else:  # Bogotá landline: (601) + 7 digits
        n = f"{int(rng.integers(2_000_000, 8_000_000))}"
        text = _pick(rng, (f"601 {n[:3]} {n[3:]}", f"(601) {n}", n, f"{n[:3]} {n[3:5]} {n[5:]}", f"(1) {n}",
                           f"601-{n[:3]}-{n[3:]}"))
        if rng.random() < 0.15:
            text += f" Ext. {int(rng.integers(1, 9999))}"
    if rng.random() < 0.15:
        text = _pick(rng, ("Tel. ", "Cel. ", "Tel: ", "PBX: ", "Móvil ")) + text
    return text


def gen_address(rng: np.random.Generator) -> str:
    street = _pick(rng, STREET_TYPES)
    n1 = int(rng.integers(1, 200))
    s1 = _pick(rng, STREET_SUFFIXES)
    n2 = int(rng.integers(1, 150))
    s2 = _pick(rng, STREET_SUFFIXES[:9])  # no "Bis" on the cross street
    n3 = int(rng.integers(1, 99))
    sep = _pick(rng, ("#", "#", "No.", "No", "N.", "Nro."))
    text = f"{street} {n1}{s1} {sep} {n2}{s2}-{n3:02d}"
    if rng.random() < 0.1:
        text += _pick(rng, (" Sur", " Este"))
    if rng.random() < 0.4:
        text += " " + _pick(rng, ADDRESS_COMPLEMENTS).format(n=int(rng.integers(101, 2500)), s=int(rng.integers(1, 20)))
    tail = rng.random()
    if tail < 0.15:
        text += _pick(rng, (", Bogotá", ", Bogotá D.C.", " Bogotá, D.C.", ", Bta."))
    elif tail < 0.25:
        text += f" Barrio {_pick(rng, BOGOTA_LOCALITIES)}"
    return _vary_case(rng, text, upper=0.25)


def gen_email(rng: np.random.Generator) -> str:
    first, _, last = _person(rng)
    first = _strip_accents(first).lower().replace("'", "")
    last = _strip_accents(last.split()[0]).lower().replace("'", "")
    year = int(rng.integers(60, 100)) if rng.random() < 0.5 else int(rng.integers(1, 999))
    local = _pick(rng, (f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}{year}", f"{first}.{last}.{year}",
                        f"{first}{year}", f"{last}.{first}"))
    return f"{local}@{_pick(rng, EMAIL_DOMAINS)}"


def gen_phrase(rng: np.random.Generator) -> str:
    if rng.random() < 0.2:
        return _vary_case(rng, _pick(rng, FIXED_PHRASES), upper=0.2)
    words = ENGLISH_WORDS if rng.random() < 0.15 else SPANISH_WORDS
    out = []
    for i in range(int(rng.integers(2, 6))):
        if i > 0 and words is SPANISH_WORDS and rng.random() < 0.35:
            out.append(_pick(rng, SPANISH_CONNECTORS))
        out.append(_pick(rng, words))
    text = " ".join(out)
    text = text[0].upper() + text[1:]
    if rng.random() < 0.15:
        text += _pick(rng, (".", ":", ";", ","))
    return _vary_case(rng, text, upper=0.25, lower=0.1)


def gen_word(rng: np.random.Generator) -> str:
    source = rng.random()
    if source < 0.5:
        word = _pick(rng, SPANISH_WORDS)
    elif source < 0.65:
        word = _pick(rng, ENGLISH_WORDS)
    elif source < 0.8:
        word = _pick(rng, SPANISH_LAST + SPANISH_FIRST)
    elif source < 0.92:
        word = _pick(rng, BOGOTA_LOCALITIES)
    else:
        word = _pick(rng, ("X", "Sí", "No", "N/A", "NA", "OK", "M", "F", "A+", "O-", "AB+"))
    r = rng.random()
    if r < 0.3:
        return word.upper()
    if r < 0.6:
        return word[0].upper() + word[1:]
    return word


def gen_number(rng: np.random.Generator) -> str:
    value = int(round(10 ** rng.uniform(0, 7)))
    formats = (
        lambda: str(value),
        lambda: _thousands(value, "."),
        lambda: f"{value % 1000},{int(rng.integers(0, 100)):02d}",
        lambda: f"{value % 1000}.{int(rng.integers(0, 100)):02d}",
        lambda: f"{int(rng.integers(0, 101))}%",
        lambda: f"{int(rng.integers(0, 100))},{int(rng.integers(0, 10))} %",
        lambda: f"No. {value}",
        lambda: f"#{value % 10000}",
        lambda: f"{''.join(_pick(rng, string.ascii_uppercase) for _ in range(2))}-{value % 100000:04d}",
        lambda: f"Ref. {int(rng.integers(2015, 2031))}-{value % 100000:05d}",
        lambda: f"{int(rng.integers(1, 10))}/{int(rng.integers(2, 13))}",
        lambda: f"-{value % 10000}",
        lambda: f"({value % 1000})",
        lambda: f"{int(rng.integers(1940, 2031))}",
    )
    return _pick(rng, formats)()


FIELD_GENERATORS = {
    "name": gen_name, "date": gen_date, "amount": gen_amount, "id_number": gen_id_number, "phone": gen_phone,
    "address": gen_address, "email": gen_email, "phrase": gen_phrase, "word": gen_word, "number": gen_number,
}
assert tuple(FIELD_GENERATORS) == FIELD_KINDS


def random_field_value(rng: Rng, kind: str | None = None) -> str:
    """One field value of `kind` (one of FIELD_KINDS; None = a uniformly random kind)."""
    rng = np.random.default_rng(rng)
    if kind is None:
        kind = _pick(rng, FIELD_KINDS)
    if kind not in FIELD_GENERATORS:
        raise ValueError(f"unknown field kind {kind!r}; choose from {', '.join(FIELD_KINDS)}")
    return " ".join(FIELD_GENERATORS[kind](rng).split())


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
# Families (file-name prefixes) reserved for evaluation: one printed (URW Palatino clone), two handwriting.
HELD_OUT_FAMILIES = ("P052", "Kristi", "SteveHand")
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
OPTIONAL_CHARS = ACCENTED + "#$@()%+&'_"


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


@functools.lru_cache(maxsize=512)
def _load_font(font_path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path, size)


# ----------------------------------------------------------------------------------------------------
# Rendering and degradation
# ----------------------------------------------------------------------------------------------------
LINE_BAND_SAMPLE = "ÁÉÑÜbdhklx"  # accented capitals and ascenders, down to the baseline


def render_line(text: str, font_path: str, height: int | None = 64, rng: Rng = None) -> Image.Image:
    """`text` as a grayscale field crop: dark ink on light paper, cropped tightly left and right.

    Random font size, ink and paper shade, word-level baseline jitter and spacing, sometimes a heavier
    stroke. Vertically the crop spans at least the font's band from accented capitals to the baseline
    (plus this text's descenders and swashes), so lower-case-only text is not blown up to full height.
    Resized to `height` pixels (None keeps the render size)."""
    rng = np.random.default_rng(rng)
    size = int(rng.integers(28, 56))
    font = _load_font(str(font_path), size)
    ink = int(rng.integers(0, 90))
    paper = int(rng.integers(215, 256))
    stroke = 1 if size >= 36 and rng.random() < 0.15 else 0
    # Not font.getmetrics(): some handwriting fonts declare ascent/descent far beyond their glyphs.
    band_top, band_bottom = font.getbbox(fit_text(LINE_BAND_SAMPLE, font_missing(str(font_path))))[1::2]
    jitter = 0.04 * size if rng.random() < 0.7 else 0.0
    space = font.getlength(" ") * rng.uniform(0.8, 1.5)
    words = text.split(" ")

    margin = 2 * size  # room for swashes that reach past a glyph's advance
    width = int(sum(font.getlength(w) for w in words) + space * len(words) + 2 * margin)
    canvas = Image.new("L", (width, band_bottom + 3 * margin), paper)
    draw = ImageDraw.Draw(canvas)
    x = float(margin)
    for word in words:
        dy = float(np.clip(rng.normal(0.0, jitter), -2 * jitter, 2 * jitter)) if jitter else 0.0
        draw.text((x, margin + dy), word, font=font, fill=ink, stroke_width=stroke, stroke_fill=ink)
        x += font.getlength(word) + space

    ink_box = Image.eval(canvas, lambda v: 255 if v < paper else 0).getbbox()
    left, ink_top, right, ink_bottom = ink_box or (margin, margin, int(x), margin + band_bottom)
    line_h = band_bottom - band_top
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
    paper = int(np.percentile(np.asarray(img), 90))

    def happens(p: float) -> bool:
        return rng.random() < min(1.0, p * strength)

    if happens(0.3):
        img = _box_remnants(img, rng)
    if happens(0.3):  # ink is dark: min-filter (erode) thickens strokes, max-filter (dilate) thins them
        op = cv2.erode if rng.random() < 0.5 else cv2.dilate
        img = Image.fromarray(op(np.asarray(img), np.ones((2, 2), np.uint8)))
    if happens(0.7):
        angle = float(rng.uniform(-2.0, 2.0) * min(strength, 1.0))
        img = img.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=paper)
    if happens(0.5):
        w, h = img.size
        f = float(rng.uniform(0.35, 0.9))
        low = img.resize((max(1, int(w * f)), max(1, int(h * f))), Image.BILINEAR)
        img = low.resize((w, h), Image.BILINEAR)
    if happens(0.3):
        img = img.resize((max(1, int(img.width * rng.uniform(0.85, 1.15))), img.height), Image.BICUBIC)
    if happens(0.5):
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    if happens(0.08):
        _, binary = cv2.threshold(np.asarray(img), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        img = Image.fromarray(binary)
    elif happens(0.7):
        noise = rng.normal(0.0, float(rng.uniform(2.0, 12.0)), size=(img.height, img.width))
        img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))
    if happens(0.5):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(25, 90)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    if img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)
    return img


def warp(img: Image.Image, rng: Rng, strength: float = 1.0) -> Image.Image:
    """Handwriting-like shape changes, each with a probability that grows with `strength`: slant (shear up
    to ±0.45·strength), narrower or wider writing, and a smooth elastic wobble of the strokes. Keeps the
    height; strength=0 returns a copy unchanged. Trains for hands (and fonts) that the renderer lacks."""
    rng = np.random.default_rng(rng)
    img = img.convert("L")
    if strength <= 0:
        return img.copy()
    s = min(strength, 1.0)
    paper = int(np.percentile(np.asarray(img), 90))
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
        dx, dy = (cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) for _ in range(2))
        dx *= alpha / (np.abs(dx).max() + 1e-6)
        dy *= alpha / (np.abs(dy).max() + 1e-6)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        arr = cv2.remap(arr, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
        img = Image.fromarray(arr)
    return img


# ----------------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------------
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("image", "text", "font", "style", "kind")


def make_sample(index: int, seed: int, fonts: Sequence[tuple[str, str]], kinds: Sequence[str] = FIELD_KINDS,
                height: int | None = 64, strength: float = 1.0, warp_strength: float = 0.0) -> tuple[Image.Image, dict]:
    """Sample `index` of the data set `seed`: (image, row without 'image'). Depends only on its arguments.

    Picks a style uniformly among those present, then a font of that style, so handwriting is not
    swamped by the many printed font files. A font lacking some optional characters gets a text it can
    draw (fit_text). warp_strength > 0 adds `warp` (from its own random stream: with 0 the samples are
    those of earlier versions)."""
    rng = np.random.default_rng([seed, index])
    styles = sorted({style for _, style in fonts})
    style = _pick(rng, styles)
    path = _pick(rng, [p for p, s in fonts if s == style])
    kind = _pick(rng, list(kinds))
    text = random_field_value(rng, kind)
    missing = font_missing(str(path))
    fitted = fit_text(text, missing)
    for _ in range(100):  # e.g. emails for a font without '@': draw other values
        if fitted is not None:
            break
        kind = _pick(rng, list(kinds))
        text = random_field_value(rng, kind)
        fitted = fit_text(text, missing)
    if fitted is None:
        raise ValueError(f"font {path} cannot draw any {'/'.join(kinds)} value (it lacks {missing!r})")
    text = fitted
    img = render_line(text, path, height=height, rng=rng)
    if warp_strength > 0:  # keeps the height
        img = warp(img, np.random.default_rng([seed, index, 1]), warp_strength)
    img = degrade(img, rng, strength)
    return img, {"text": text, "font": font_name(path), "style": style, "kind": kind}


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
                 strength: float = 1.0, warp_strength: float = 0.0, workers: int | None = None,
                 progress: bool = True) -> list[dict]:
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
                            kinds=kinds, height=height, strength=strength, warp_strength=warp_strength)
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
                            workers=args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"[synth_data] wrote {len(rows)} lines to {Path(args.out) / MANIFEST_NAME}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open-vocabulary field values for the synthetic training lines: Faker locales, Debian word lists, random
strings and number formats, so that the model can only be right by reading.

Earlier versions drew names, streets and phrases from short hand-made lists; the decoder learnt them and
"completed" unseen words into listed ones (issue 11). Here every value comes from a large source:

- Faker's locale providers (TRAIN_LOCALES): names, streets, cities, companies, e-mail parts, phones;
- Debian word lists (wordlists-debian.txt, split 'train'; read from /usr/share/dict or TROCR_DICT_ROOT);
- random characters of the whole CHARSET, random case, digit and punctuation runs (KIND_WEIGHTS['random']
  is a quarter of all lines);
- procedural Colombian formats (cédula/NIT, Calle/Carrera addresses, dates, amounts) with random numbers;
- amounts also in CLDR's number and currency formats through Babel (AMOUNT_LOCALES, none of EVAL_LOCALES),
  and with grouping, decimal mark and currency sign drawn apart.

The independent evaluation (dev/make_eval_lines.py) uses EVAL_LOCALES and the 'eval' word lists, which
training never reads: `value(rng, kind, split="train")` refuses any other split.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import os
import string
import unicodedata
from pathlib import Path
from typing import Sequence, Union

import numpy as np

# ----------------------------------------------------------------------------------------------------
# Character set: every generator draws only from it (the character tokenizer's set, in another order).
# ----------------------------------------------------------------------------------------------------
ACCENTED = "áéíóúñüÁÉÍÓÚÑÜ"
PUNCTUATION = " .,:;-/#$@()%+&'_"
SYMBOLS = "*=\"!?¿¡°ºª<>[]"  # rarer on forms; a font lacking one redraws the value (synth_data.fit_text)
CHARSET = string.ascii_letters + string.digits + ACCENTED + PUNCTUATION + SYMBOLS

# Faker locales: training's and the evaluation's are disjoint (tests check it).
TRAIN_LOCALES = ("es_CO", "es_ES", "es_MX", "en_US")
EVAL_LOCALES = ("es_AR", "fr_FR", "it_IT", "pt_BR")

# Faker draws dates up to *now* unless told an end, so data sets made with it drifted with the calendar. The
# evaluation, calibration and alignment generators end their dates here (midnight UTC, 2026-12-02).
FAKER_DATES_UNTIL = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)

DICT_ROOT = Path(os.environ.get("TROCR_DICT_ROOT", "/usr/share/dict"))
WORDLIST_FILE = Path(__file__).resolve().parents[1] / "wordlists-debian.txt"
SPLITS = ("train", "eval")

# Share of each kind among training lines. 'random' (a quarter) cannot be guessed from any vocabulary.
KIND_WEIGHTS = {
    "name": 0.12, "address": 0.08, "city": 0.05, "company": 0.06, "email": 0.06, "phone": 0.05, "date": 0.06,
    "amount": 0.05, "id_number": 0.04, "number": 0.04, "words": 0.14, "random": 0.25,
}
KINDS = tuple(KIND_WEIGHTS)

Rng = Union[np.random.Generator, int, None]


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _thousands(value: int, sep: str) -> str:
    return f"{value:,}".replace(",", sep)


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def vary_case(rng: np.random.Generator, text: str, upper: float = 0.25, lower: float = 0.1,
              mixed: float = 0.03) -> str:
    """Forms are often filled in capitals, sometimes in lower case; rarely the case is random per letter."""
    r = rng.random()
    if r < upper:
        return text.upper()
    if r < upper + lower:
        return text.lower()
    if r < upper + lower + mixed:
        flips = rng.random(len(text)) < 0.5
        return "".join(c.swapcase() if f else c for c, f in zip(text, flips))
    return text


_TYPOGRAPHIC = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "º": "º", "\u00a0": " "})


def to_charset(text: str, charset: str = CHARSET) -> str | None:
    """`text` in `charset`: typographic quotes/dashes made plain, other letters lose their accent (ç -> c);
    None if a character still does not fit. Whitespace runs become one space."""
    allowed = set(charset)
    out = []
    for c in " ".join(text.translate(_TYPOGRAPHIC).split()):
        if c not in allowed:
            c = unicodedata.normalize("NFD", c)[0]
            if c not in allowed:
                return None
        out.append(c)
    return "".join(out) or None


# ----------------------------------------------------------------------------------------------------
# Sources: Faker and the Debian word lists
# ----------------------------------------------------------------------------------------------------
def read_wordlist_table(path: Path = WORDLIST_FILE) -> list[tuple[str, str, str]]:
    """(debian package, file under DICT_ROOT, split) rows of wordlists-debian.txt."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fields = line.split()
            if len(fields) != 3 or fields[2] not in SPLITS:
                raise ValueError(f"{path}: expected 'package file train|eval', got {line!r}")
            rows.append((fields[0], fields[1], fields[2]))
    return rows


@functools.lru_cache(maxsize=None)
def wordlist_files(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return tuple(name for _, name, s in read_wordlist_table() if s == split)


@functools.lru_cache(maxsize=None)
def load_words(name: str, root: str = str(DICT_ROOT)) -> tuple[str, ...]:
    """The words of root/name that CHARSET can write (others dropped), in file order."""
    path = Path(root) / name
    if not path.is_file():
        package = next((p for p, n, _ in read_wordlist_table() if n == name), "its package")
        raise FileNotFoundError(f"word list {path} not found: install {package} (./setup_mlx.sh --fonts "
                                f"installs the lists of {WORDLIST_FILE.name}) or set TROCR_DICT_ROOT")
    allowed = set(CHARSET) - {" "}
    words = (w.strip() for w in path.read_text(encoding="utf-8", errors="replace").splitlines())
    return tuple(w for w in words if w and set(w) <= allowed)


def fix_hash_seed() -> None:
    """Re-run this interpreter once with PYTHONHASHSEED=0 unless it is set so. Some of Faker's values depend
    on the order of a set of strings, which follows Python's per-process string hashing: without this the
    same seed gave other texts in every run (seen in dev/make_eval_lines.py, 2026-12-02). For entry points
    only (`if __name__ == "__main__":`), before any work."""
    import sys

    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, sys.orig_argv)


@functools.lru_cache(maxsize=None)
def faker(locale: str):
    try:
        from faker import Faker
    except ImportError as exc:
        raise RuntimeError("Faker is not installed: pip install -r requirements-mlx.txt (or ./setup_mlx.sh)") from exc
    return Faker(locale)


def _seeded_faker(rng: np.random.Generator, locales: Sequence[str]):
    fake = faker(_pick(rng, locales))
    fake.seed_instance(int(rng.integers(2**62)))  # the value depends only on rng, not on earlier calls
    return fake


# ----------------------------------------------------------------------------------------------------
# Field kinds
# ----------------------------------------------------------------------------------------------------
MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
             "noviembre", "diciembre")
MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December")
# Colombian address grammar: street types and suffixes are a closed set, the numbers are random.
STREET_TYPES = ("Calle", "Cl.", "Cl", "CL", "Carrera", "Cra.", "Cra", "Kr", "KR", "Cr.", "Avenida", "Av.",
                "Av. Calle", "Av. Carrera", "AK", "AC", "Transversal", "Tv.", "Diagonal", "Dg.", "DG")
STREET_SUFFIXES = ("", "", "", "A", "B", "C", "D", "F", "Q", " Bis", "A Bis", "B Bis")
ADDRESS_COMPLEMENTS = ("Apto {n}", "Apto. {n}", "Apt {n}", "Of. {n}", "Oficina {n}", "Int. {s}", "Local {n}",
                       "Casa {s}", "Piso {s}", "Torre {s} Apto {n}", "Bloque {s} Apto {n}", "Consultorio {n}")


def gen_name(rng, locales):
    fake = _seeded_faker(rng, locales)
    first = fake.first_name() if rng.random() < 0.7 else f"{fake.first_name()} {fake.first_name()}"
    last = fake.last_name() if rng.random() < 0.45 else f"{fake.last_name()} {fake.last_name()}"
    layout = rng.random()
    if layout < 0.55:
        text = f"{first} {last}"
    elif layout < 0.75:
        text = f"{last}, {first}"
    elif layout < 0.9:
        text = f"{last.upper()} {first}"
    else:
        text = fake.name()
    return vary_case(rng, text, upper=0.3)


def gen_address(rng, locales):
    if rng.random() < 0.5:
        return vary_case(rng, _pick(rng, (_seeded_faker(rng, locales).street_address(),
                                          _seeded_faker(rng, locales).address().split("\n")[0])))
    n1, n2, n3 = int(rng.integers(1, 200)), int(rng.integers(1, 150)), int(rng.integers(1, 99))
    sep = _pick(rng, ("#", "#", "No.", "No", "N.", "Nro."))
    text = f"{_pick(rng, STREET_TYPES)} {n1}{_pick(rng, STREET_SUFFIXES)} {sep} {n2}{_pick(rng, STREET_SUFFIXES[:9])}-{n3:02d}"
    if rng.random() < 0.1:
        text += _pick(rng, (" Sur", " Este"))
    if rng.random() < 0.4:
        text += " " + _pick(rng, ADDRESS_COMPLEMENTS).format(n=int(rng.integers(101, 2500)), s=int(rng.integers(1, 20)))
    if rng.random() < 0.25:
        fake = _seeded_faker(rng, locales)
        text += _pick(rng, (f", {fake.city()}", f" Barrio {fake.last_name()}", f" {fake.city()}"))
    return vary_case(rng, text)


def gen_city(rng, locales):
    fake = _seeded_faker(rng, locales)
    city = fake.city()
    region = getattr(fake, "department", None) or getattr(fake, "state", None) or fake.country
    r = rng.random()
    if r < 0.3:
        city = f"{city}, {region()}"
    elif r < 0.4:
        city = f"{city} ({fake.country()})"
    elif r < 0.55:  # forms write "Ibagué - Tolima" too; stage 5 dropped the spaces around such dashes
        city = f"{city} - {region()}"
    return vary_case(rng, city)


def gen_company(rng, locales):
    fake = _seeded_faker(rng, locales)
    text = fake.company()
    if rng.random() < 0.2:
        text += _pick(rng, (" S.A.S.", " S.A.", " Ltda.", " & Cía.", " E.U.", " Inc."))
    if rng.random() < 0.1:  # a branch: "Empresa - Ciudad" (spaced dashes, see gen_city)
        text += f" - {fake.city()}"
    return vary_case(rng, text)


def gen_email(rng, locales):
    fake = _seeded_faker(rng, locales)
    user = fake.user_name() if rng.random() < 0.6 else strip_accents(
        _pick(rng, ("{f}.{l}", "{f}{l}{n}", "{f}_{l}", "{l}.{f}{n}", "{f1}{l}")).format(
            f=fake.first_name().lower(), l=fake.last_name().lower().replace(" ", ""), n=int(rng.integers(1, 2000)),
            f1=fake.first_name()[0].lower()))
    domain = fake.free_email_domain() if rng.random() < 0.5 else fake.domain_name()
    text = f"{user}@{domain}"
    return text.upper() if rng.random() < 0.05 else text


def gen_phone(rng, locales):
    if rng.random() < 0.5:
        text = _seeded_faker(rng, locales).phone_number()
    elif rng.random() < 0.6:  # Colombian mobile 3xx xxx xxxx
        a, b, c = f"3{int(rng.integers(0, 60)):02d}", f"{int(rng.integers(0, 1000)):03d}", f"{int(rng.integers(0, 10000)):04d}"
        text = _pick(rng, (f"{a} {b} {c}", f"{a}{b}{c}", f"+57 {a} {b} {c}", f"(+57) {a}{b}{c}", f"{a}-{b}-{c}"))
    else:  # Bogotá landline
        n = f"{int(rng.integers(2_000_000, 8_000_000))}"
        text = _pick(rng, (f"601 {n[:3]} {n[3:]}", f"(601) {n}", n, f"{n[:3]} {n[3:5]} {n[5:]}", f"601-{n[:3]}-{n[3:]}"))
        if rng.random() < 0.15:
            text += f" Ext. {int(rng.integers(1, 9999))}"
    if rng.random() < 0.15:
        text = _pick(rng, ("Tel. ", "Cel. ", "Tel: ", "PBX: ", "Móvil ")) + text
    return text


def gen_date(rng, locales):
    y = int(rng.integers(1930, 2036))
    m = int(rng.integers(1, 13))
    d = int(rng.integers(1, calendar.monthrange(y, m)[1] + 1))
    month = MONTHS_ES[m - 1] if rng.random() < 0.7 else MONTHS_EN[m - 1]
    formats = (
        f"{d:02d}/{m:02d}/{y}", f"{d}/{m}/{y}", f"{d:02d}-{m:02d}-{y}", f"{y}-{m:02d}-{d:02d}", f"{y}/{m:02d}/{d:02d}",
        f"{d:02d}.{m:02d}.{y % 100:02d}", f"{d:02d}/{m:02d}/{y % 100:02d}", f"{d} de {month} de {y}",
        f"{d} {month.capitalize()} {y}", f"{d:02d}/{month[:3].upper()}/{y}", f"{d:02d}-{month[:3]}-{y}",
        f"{month.capitalize()} {d}, {y}", f"{d} {month[:3]} {y}", f"DD {d:02d} MM {m:02d} AAAA {y}",
        f"{m:02d}/{y}", f"{d:02d} {m:02d} {y}",
    )
    return _pick(rng, formats)


# CLDR number and currency formats (through Babel) for training amounts: Latin-digit locales of several
# conventions (grouping with '.', ',', spaces, apostrophes or Indian lakhs; symbol before or after), the
# evaluation's Faker locales left out. Any currency in any of them: a form may hold a foreign amount.
AMOUNT_LOCALES = ("es_CO", "es_ES", "es_MX", "es_CL", "es_PE", "es_419", "en_US", "en_GB", "en_IN", "en_ZA",
                  "de_DE", "de_CH", "fr_CH", "fr_CA", "nl_NL", "sv_SE", "pl_PL", "pt_PT", "cs_CZ", "nb_NO")
AMOUNT_CURRENCIES = ("COP", "USD", "EUR", "MXN", "BRL", "ARS", "CLP", "PEN", "UYU", "BOB", "VES", "GBP", "CHF",
                     "CAD", "JPY", "INR", "ZAR", "SEK", "PLN", "CZK", "NOK", "DOP", "CRC", "GTQ", "PYG")


def _cldr_amount(rng, value: float) -> str:
    """`value` as Babel writes it for a random locale: a plain number or a currency amount."""
    from babel.numbers import format_currency, format_decimal

    locale = _pick(rng, AMOUNT_LOCALES)
    if rng.random() < 0.25:
        return format_decimal(round(value, int(rng.integers(0, 3))), locale=locale)
    return format_currency(value, _pick(rng, AMOUNT_CURRENCIES), locale=locale, currency_digits=rng.random() < 0.7)


def _mixed_amount(rng, value: float) -> str:
    """Grouping, decimal mark and currency sign chosen apart, as people write them by hand: '1 234.56',
    'R$ 12.500', '3'400,00 CHF'; the sign is CLDR's (Babel) for a random currency and locale."""
    from babel.numbers import get_currency_symbol

    group = _pick(rng, (".", ",", " ", "'", "", ""))
    body = f"{int(value):,}".replace(",", group)
    if rng.random() < 0.5:
        body += _pick(rng, [d for d in (",", ".") if d != group]) + f"{int(rng.integers(0, 100)):02d}"
    r = rng.random()
    if r < 0.3:
        return body
    sign = get_currency_symbol(_pick(rng, AMOUNT_CURRENCIES), _pick(rng, AMOUNT_LOCALES))
    space = " " if rng.random() < 0.6 else ""
    return f"{sign}{space}{body}" if r < 0.8 else f"{body}{space}{sign}"


def gen_amount(rng, locales):
    value = int(round(10 ** rng.uniform(0, 9)))
    cents = int(rng.integers(0, 100))
    r = rng.random()
    if r < 0.3:
        text = _cldr_amount(rng, value + cents / 100)
    elif r < 0.6:
        text = _mixed_amount(rng, value + cents / 100)
    else:
        dots, commas = _thousands(value, "."), _thousands(value, ",")
        formats = (f"$ {dots}", f"${dots}", f"$ {dots},{cents:02d}", f"{commas}.{cents:02d}", f"$ {commas}.{cents:02d}",
                   f"COP {dots}", f"{dots} COP", f"$ {dots} M/CTE", f"USD {commas}.{cents:02d}", f"{dots} pesos",
                   f"{value}", f"€ {dots},{cents:02d}", f"{dots},{cents:02d} €", f"${value}.{cents:02d}")
        text = _pick(rng, formats)
    return to_charset(text) or to_charset(text.replace("€", "EUR")) or f"$ {_thousands(value, '.')}"


def gen_id_number(rng, locales):
    kind = rng.random()
    if kind < 0.5:  # cédula: 10 digits starting with 10, or 6-8 digits
        number = int(rng.integers(1_000_000_000, 1_100_000_000)) if rng.random() < 0.6 else int(10 ** rng.uniform(5.5, 8))
        body = _thousands(number, ".") if rng.random() < 0.6 else str(number)
        return _pick(rng, ("", "", "C.C. ", "CC ", "C.C ", "T.I. ", "C.E. ", "DNI ")) + body
    if kind < 0.8:  # NIT with its check digit
        number = int(rng.integers(800_000_000, 999_999_999))
        body = _thousands(number, ".") if rng.random() < 0.7 else str(number)
        return _pick(rng, ("", "NIT ", "NIT. ", "Nit: ")) + f"{body}-{int(rng.integers(0, 10))}"
    fake = _seeded_faker(rng, locales)
    return _pick(rng, (fake.bothify("??######").upper(), fake.bothify("###-##-####"), fake.bothify("?#?-###-??#").upper()))


def gen_number(rng, locales):
    value = int(round(10 ** rng.uniform(0, 7)))
    letters = "".join(_pick(rng, string.ascii_uppercase) for _ in range(int(rng.integers(1, 4))))
    formats = (str(value), _thousands(value, "."), f"{value % 1000},{int(rng.integers(0, 100)):02d}",
               f"{int(rng.integers(0, 101))}%", f"{int(rng.integers(0, 100))},{int(rng.integers(0, 10))} %",
               f"No. {value}", f"#{value % 10000}", f"{letters}-{value % 100000:04d}",
               f"Ref. {int(rng.integers(1990, 2036))}-{value % 100000:05d}", f"{int(rng.integers(1, 10))}/{int(rng.integers(2, 13))}",
               f"-{value % 10000}", f"({value % 1000})", f"{value}{letters}", f"{value % 100}°", f"N° {value % 1000}")
    return _pick(rng, formats)


def gen_words(rng, locales, wordlists: Sequence[str] = ()):
    words = [_pick(rng, load_words(_pick(rng, wordlists))) for _ in range(int(rng.choice([1, 1, 2, 2, 3, 4, 5, 6])))]
    text = " ".join(words)
    r = rng.random()
    if r < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.12:
        text += _pick(rng, (".", ":", ";", ",", "?", "!"))
    if rng.random() < 0.05:
        text = _pick(rng, ("¿", "¡", "(", '"')) + text + _pick(rng, ("?", "!", ")", '"'))
    return vary_case(rng, text, upper=0.2, lower=0.05)


def gen_random(rng, locales, charset: str = CHARSET):
    """Strings no vocabulary predicts: uniform characters, letter salad, digit and punctuation runs, codes."""
    letters = "".join(c for c in charset if c.isalpha())
    digits = "".join(c for c in charset if c.isdigit())
    punct = "".join(c for c in charset if not c.isalnum() and c != " ")
    style = rng.random()
    n = int(rng.integers(1, 31))
    if style < 0.35:  # any character of the set
        text = "".join(_pick(rng, charset) for _ in range(n))
    elif style < 0.6:  # letter salad in word-like chunks, random case
        text = " ".join("".join(_pick(rng, letters) for _ in range(int(rng.integers(1, 10))))
                        for _ in range(int(rng.integers(1, 5))))
    elif style < 0.8:  # digit runs joined by punctuation
        text = "".join(("".join(_pick(rng, digits) for _ in range(int(rng.integers(1, 7)))) + _pick(rng, punct + "  "))
                       for _ in range(int(rng.integers(1, 5))))
    elif style < 0.9:  # punctuation runs with a few characters
        text = "".join(_pick(rng, punct) if rng.random() < 0.6 else _pick(rng, letters + digits) for _ in range(n))
    else:  # codes: letters and digits
        text = "".join(_pick(rng, letters.upper() + digits) for _ in range(int(rng.integers(3, 13))))
    text = " ".join(text.split())
    return text or _pick(rng, letters + digits)


GENERATORS = {
    "name": gen_name, "address": gen_address, "city": gen_city, "company": gen_company, "email": gen_email,
    "phone": gen_phone, "date": gen_date, "amount": gen_amount, "id_number": gen_id_number, "number": gen_number,
    "words": gen_words, "random": gen_random,
}
assert tuple(GENERATORS) == KINDS


@functools.lru_cache(maxsize=64)
def _kind_probabilities(kinds: tuple[str, ...]) -> np.ndarray:
    weights = np.array([KIND_WEIGHTS[k] for k in kinds], dtype=float)
    return weights / weights.sum()


def pick_kind(rng: np.random.Generator, kinds: Sequence[str] = KINDS) -> str:
    """A kind drawn with KIND_WEIGHTS (renormalised over `kinds`)."""
    return kinds[int(rng.choice(len(kinds), p=_kind_probabilities(tuple(kinds))))]


def value(rng: Rng, kind: str | None = None, avoid: str = "") -> str:
    """One training value of `kind` (None: drawn with KIND_WEIGHTS), written in CHARSET minus `avoid`
    (characters a font cannot draw: random strings leave them out, other kinds are drawn again)."""
    rng = np.random.default_rng(rng)
    if kind is None:
        kind = pick_kind(rng)
    if kind not in GENERATORS:
        raise ValueError(f"unknown field kind {kind!r}; choose from {', '.join(KINDS)}")
    charset = "".join(c for c in CHARSET if c not in avoid) if avoid else CHARSET
    for _ in range(50):
        if kind == "random":
            raw = gen_random(rng, TRAIN_LOCALES, charset)
        elif kind == "words":
            raw = gen_words(rng, TRAIN_LOCALES, wordlist_files("train"))
        else:
            raw = GENERATORS[kind](rng, TRAIN_LOCALES)
        text = to_charset(raw, charset)
        if text and len(text) <= 64:
            return text
    raise ValueError(f"no {kind} value fits the characters available (without {avoid!r})")

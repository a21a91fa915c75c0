"""Open-vocabulary training text (text_sources), field layouts (synth_data.field_layout) and the independent
evaluation set (dev/make_eval_lines.py): sources and fonts disjoint from training, geometry options."""

import shutil

import numpy as np
import pytest
from PIL import Image

from dev import make_eval_lines as mel
from scripts import synth_data as sd
from scripts import text_sources as ts


@pytest.fixture
def recorded_sources(monkeypatch):
    """Record the Faker locales and word lists that generators open; word lists are stand-ins."""
    seen = {"locales": set(), "wordlists": set()}
    real_faker = ts.faker

    def faker(locale):
        seen["locales"].add(locale)
        return real_faker(locale)

    def load_words(name, root=None):
        seen["wordlists"].add(name)
        return ("alfa", "beta", "gamma")

    monkeypatch.setattr(ts, "faker", faker)
    monkeypatch.setattr(ts, "load_words", load_words)
    monkeypatch.setattr(mel, "faker", faker)
    monkeypatch.setattr(mel, "load_words", load_words)
    return seen


def test_train_and_eval_sources_are_disjoint():
    assert not set(ts.TRAIN_LOCALES) & set(ts.EVAL_LOCALES)
    train, held = set(ts.wordlist_files("train")), set(ts.wordlist_files("eval"))
    assert train and held and not train & held
    assert {"spanish", "american-english", "british-english"} <= train


def test_training_values_read_only_training_sources(recorded_sources):
    rng = np.random.default_rng(0)
    for _ in range(1500):
        ts.value(rng)
    assert recorded_sources["locales"] == set(ts.TRAIN_LOCALES)
    assert recorded_sources["wordlists"] == set(ts.wordlist_files("train"))


def test_eval_texts_read_only_eval_sources(recorded_sources):
    rng = np.random.default_rng(0)
    for i in range(600):
        mel.draw_value(rng, mel.KINDS[i % len(mel.KINDS)], "")
    assert recorded_sources["locales"] == set(ts.EVAL_LOCALES)
    assert recorded_sources["wordlists"] == set(ts.wordlist_files("eval"))


def test_values_are_clean_deterministic_and_a_fifth_random():
    vals = [ts.value(np.random.default_rng([3, i])) for i in range(3000)]
    assert vals == [ts.value(np.random.default_rng([3, i])) for i in range(3000)]
    for v in vals:
        assert v and v == v.strip() and "  " not in v and set(v) <= set(ts.CHARSET), repr(v)
    assert ts.KIND_WEIGHTS["random"] / sum(ts.KIND_WEIGHTS.values()) >= 0.2
    kinds = [ts.pick_kind(np.random.default_rng([4, i])) for i in range(3000)]
    assert kinds.count("random") / len(kinds) > 0.2
    # random strings, case changes and symbols reach (almost) the whole character set
    assert len(set("".join(vals))) >= 0.95 * len(set(ts.CHARSET))
    assert sum(v.isupper() for v in vals) > 150 and sum(v.islower() for v in vals) > 150


def test_charset_is_the_tokenizers():
    from scripts.char_tokenizer import DEFAULT_CHARSET

    assert set(ts.CHARSET) == set(DEFAULT_CHARSET) and len(set(ts.CHARSET)) == len(ts.CHARSET)


def test_value_avoids_characters_a_font_lacks():
    avoid = "áéíóúñ@#¿¡°"
    for i in range(600):
        kind = [k for k in ts.KINDS if k != "email"][i % (len(ts.KINDS) - 1)]
        v = ts.value(np.random.default_rng([5, i]), kind, avoid=avoid)
        assert not set(v) & set(avoid), v
    with pytest.raises(ValueError, match="no email value fits"):  # make_sample then draws another kind
        ts.value(0, "email", avoid="@")


def test_to_charset_folds_foreign_letters_and_rejects_the_rest():
    assert ts.to_charset("François  “Çà”") == 'Francois "Ca"'
    assert ts.to_charset("Straße") is None
    assert ts.to_charset("niño", ts.CHARSET.replace("ñ", "")) == "nino"


def test_missing_word_list_names_its_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="wspanish"):
        ts.load_words("spanish", root=str(tmp_path))


def test_load_words_keeps_only_writable_words(tmp_path):
    (tmp_path / "spanish").write_text("niño\nStraße\ncan't\n\nçava\n", encoding="utf-8")
    assert ts.load_words("spanish", root=str(tmp_path)) == ("niño", "can't")


# ----------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------
def _line():
    return sd.render_line("Peña 12/05", sd.FALLBACK_FONT, height=64, rng=0)


def test_tight_layout_is_the_line_itself():
    line = _line()
    assert np.array_equal(np.asarray(sd.field_layout(line, 0, sd.FALLBACK_FONT, "tight")), np.asarray(line))


@pytest.mark.parametrize("layout", ["margins", "box"])
def test_margin_and_box_layouts_add_paper_and_keep_the_text(layout):
    line = _line()
    heights = []
    for seed in range(30):
        img = sd.field_layout(line, seed, sd.FALLBACK_FONT, layout)
        assert img.mode == "L" and img.height > line.height and img.width >= line.width
        assert line.height / img.height <= 0.9 + 1e-6 and line.height / img.height >= 0.3
        heights.append(line.height / img.height)
        assert img.width <= 17 * img.height
        assert np.asarray(img).min() < 100  # the ink survived
    assert max(heights) - min(heights) > 0.2  # a range of text heights
    assert sd.field_layout(line, 7, sd.FALLBACK_FONT, layout).tobytes() == \
        sd.field_layout(line, 7, sd.FALLBACK_FONT, layout).tobytes()


def test_box_layout_draws_cell_borders():
    line = _line()
    bordered = 0
    for seed in range(20):
        arr = np.asarray(sd.field_layout(line, seed, sd.FALLBACK_FONT, "box"), dtype=np.int32)
        paper = np.percentile(arr, 90)
        edge_rows = [arr[:6].mean(axis=1).min(), arr[-6:].mean(axis=1).min()]
        bordered += min(edge_rows) < paper - 30  # a dark line along the top or bottom edge
    assert bordered >= 10


def test_unknown_layout_is_rejected():
    with pytest.raises(ValueError, match="layout must be one of"):
        sd.field_layout(_line(), 0, None, "rotated")


def test_make_sample_records_and_mixes_layouts():
    fonts = [(sd.FALLBACK_FONT, "printed")]
    rows = [sd.make_sample(i, 0, fonts)[1] for i in range(60)]
    assert {r["layout"] for r in rows} == set(sd.LAYOUTS)
    img, row = sd.make_sample(3, 0, fonts, layout="box")
    assert row["layout"] == "box" and img.height == 64


# ----------------------------------------------------------------------------------------------------
# Fonts: the held-out list keeps evaluation fonts out of training
# ----------------------------------------------------------------------------------------------------
def _font_tree(tmp_path):
    """A fake /usr/share/fonts with one training and one held-out file per style (copies of DejaVuSans)."""
    files = {"dejavu": ["DejaVuSans.ttf"], "urw-base35": ["P052-Roman.otf"], "cantarell": ["Cantarell-Regular.otf"],
             "breip": ["Breip.ttf"], "kristi": ["Kristi.ttf"], "seto": ["setofont.ttf"]}
    for folder, names in files.items():
        for name in names:
            path = tmp_path / "truetype" / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sd.FALLBACK_FONT, path)
    return tmp_path


def test_held_out_families_cover_three_unseen_fonts_of_each_style():
    printed = [f for f in sd.HELD_OUT_FAMILIES if f in ("P052", "Cantarell", "EBGaramond")]
    hand = [f for f in sd.HELD_OUT_FAMILIES if f in ("Kristi", "SteveHand", "setofont")]
    assert len(printed) == 3 and len(hand) == 3


def test_training_stream_and_eval_set_use_opposite_sides_of_the_font_split(tmp_path, monkeypatch):
    root = _font_tree(tmp_path)
    real = sd.candidate_fonts
    monkeypatch.setattr(sd, "candidate_fonts", lambda *_: real(root))
    monkeypatch.setattr(mel, "candidate_fonts", lambda *_: real(root))
    from scripts.mlx_trainer import SynthSource

    train = SynthSource(style="both", font_split="train")
    train_names = {sd.font_name(p) for p, _ in train.fonts}
    eval_names = {sd.font_name(p) for p, _ in mel.eval_fonts()}
    assert train_names == {"DejaVuSans", "Breip"}
    assert eval_names == {"P052-Roman", "Cantarell-Regular", "Kristi", "setofont"}


def test_eval_set_never_calls_the_training_renderer(tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the evaluation set must not use synth_data's rendering")

    for name in ("render_line", "degrade", "warp", "field_layout", "make_sample", "random_field_value"):
        monkeypatch.setattr(sd, name, forbidden)
    monkeypatch.setattr(ts, "value", forbidden)
    monkeypatch.setattr(mel, "eval_fonts", lambda: [(sd.FALLBACK_FONT, "printed"), (sd.FALLBACK_FONT, "handwriting")])
    rows = mel.make_eval_set(tmp_path, lines=6, forms=1, seed=0, progress=False)
    layouts = [r["layout"] for r in rows]
    assert layouts.count("trimmed") == layouts.count("untrimmed") == 6 and layouts.count("form") >= 8
    for r in rows:
        img = Image.open(tmp_path / r["image"])
        assert img.width > img.height and set(r["text"]) <= set(ts.CHARSET)
    # trimmed and untrimmed crops are the same scan: the trimmed crop is smaller
    by_line = {}
    for r in rows:
        if r["layout"] != "form":
            by_line.setdefault(r["image"].split("_")[0], {})[r["layout"]] = Image.open(tmp_path / r["image"]).size
    for sizes in by_line.values():
        assert sizes["trimmed"][0] <= sizes["untrimmed"][0] and sizes["trimmed"][1] < sizes["untrimmed"][1]


def test_eval_set_needs_held_out_fonts_of_both_styles(tmp_path, monkeypatch):
    monkeypatch.setattr(mel, "eval_fonts", lambda: [(sd.FALLBACK_FONT, "printed")])
    with pytest.raises(ValueError, match="both styles"):
        mel.make_eval_set(tmp_path, lines=2, forms=0, progress=False)


def test_eval_generator_gives_the_same_crops_in_every_run(tmp_path):
    """Two runs of dev/make_eval_lines.py (separate processes, each with its own string hashing unless
    fix_hash_seed pins it) write the same texts and pixels. Without the fix the 40 lines differed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    outs = []
    for i, hash_seed in enumerate(("1", "2")):  # what a fresh interpreter could draw; the tool resets it
        out = tmp_path / f"run{i}"
        subprocess.run([sys.executable, str(root / "dev" / "make_eval_lines.py"), "--out", str(out), "--lines", "40",
                        "--forms", "0", "--seed", "0"], cwd=root, env={**env, "PYTHONHASHSEED": hash_seed},
                       check=True, capture_output=True)
        outs.append(out)
    assert (outs[0] / "manifest.csv").read_text() == (outs[1] / "manifest.csv").read_text()
    for image in sorted((outs[0] / "images").iterdir()):
        assert image.read_bytes() == (outs[1] / "images" / image.name).read_bytes(), image.name


def test_training_texts_have_spaced_dashes():
    """Cities and companies are sometimes joined by " - " (forms write "Ibagué - Tolima"); stage 5, which
    never saw them, read "Ramos - Salvador" as "Ramos-Salvador" (18 of 27 such lines of the independent set)."""
    cities = [ts.gen_city(np.random.default_rng(i), ts.TRAIN_LOCALES) for i in range(300)]
    companies = [ts.gen_company(np.random.default_rng(i), ts.TRAIN_LOCALES) for i in range(300)]
    assert 20 < sum(" - " in c for c in cities) < 80
    assert 10 < sum(" - " in c for c in companies) < 60


def test_generated_dates_do_not_follow_the_clock(monkeypatch):
    """The evaluation, calibration and alignment generators give the same dates whatever day it is."""
    import faker.providers.date_time as faker_dates
    from dev import form_scans, make_review_forms

    def draws():
        out = [mel.eval_text(np.random.default_rng(s), "date") for s in range(8)]
        out += [make_review_forms.field_text(np.random.default_rng(s), "date") for s in range(8)]
        for s in range(40):  # field_value picks its kind at random: keep the seeds that drew a date
            fake = form_scans._faker(s)
            value = form_scans.field_value(fake, np.random.default_rng(s), 400)
            out.append(value if value.count("/") == 2 and value.replace("/", "").isdigit() else None)
        unpinned = ts.faker("es_CO")
        unpinned.seed_instance(1)
        return out, unpinned.date()

    today, unpinned_today = draws()
    assert sum(v is not None for v in today[16:]) >= 2  # form_scans drew some dates

    class Later(faker_dates.datetime):
        @classmethod
        def now(cls, tz=None):
            return faker_dates.datetime(2031, 6, 15, 12, 0, tzinfo=tz)

    monkeypatch.setattr(faker_dates, "datetime", Later)
    later, unpinned_later = draws()
    assert unpinned_later != unpinned_today  # the fake clock reaches Faker: an unpinned draw moves with it
    assert later == today


def test_amounts_cover_the_ways_people_group_digits_and_place_currency_signs():
    """Stage 6 dropped the spaces of '1 234.56' and read 'R$' as 'Ref.': no training amount had either. Now
    grouping, decimal mark and sign vary (CLDR's locales through Babel, and mixed by hand), never from the
    evaluation's Faker locales."""
    import re

    amounts = [ts.gen_amount(np.random.default_rng([9, i]), None) for i in range(2000)]
    assert all(a and set(a) <= set(ts.CHARSET) and a == a.strip() for a in amounts)
    assert sum(bool(re.search(r"\d \d{3}\b", a)) for a in amounts) > 100        # space-grouped digits
    assert sum(bool(re.search(r"\d'\d{3}\b", a)) for a in amounts) > 30         # apostrophe-grouped
    assert sum(a.startswith("R$") for a in amounts) >= 5                        # a sign with letters
    assert sum(bool(re.search(r"\d [A-Z$]+$", a)) for a in amounts) > 100       # a sign after the number
    assert sum(bool(re.search(r"\d \d{3}[.]\d\d$", a)) for a in amounts) >= 5    # '1 234.56'
    assert len(set(amounts)) > 1900

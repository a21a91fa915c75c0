"""synth_data: field values, fonts, rendering, degradation, data sets. Uses only matplotlib's bundled font,
so it runs the same whether or not the Debian font packages are installed."""

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scripts import synth_data as sd

FALLBACK = sd.FALLBACK_FONT


def _values(kind, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [sd.random_field_value(rng, kind) for _ in range(n)]


def test_same_seed_same_values_and_other_seed_differs():
    assert _values(None, 50, seed=7) == _values(None, 50, seed=7)
    assert _values(None, 50, seed=7) != _values(None, 50, seed=8)


@pytest.mark.parametrize("kind", sd.FIELD_KINDS)
def test_every_kind_gives_clean_text_in_charset(kind):
    allowed = set(sd.CHARSET)
    for value in _values(kind):
        assert value and value == value.strip() and "  " not in value, repr(value)
        assert set(value) <= allowed, f"{kind}: {value!r} has {set(value) - allowed}"


def test_values_use_every_accented_letter():
    seen = set("".join(_values(None, 5000, seed=1)))
    assert set(sd.ACCENTED) <= seen, f"never generated: {set(sd.ACCENTED) - seen}"


@pytest.mark.parametrize("kind, pattern", [
    ("id_number", r"^(NIT\.? |Nit: )?\d{3}\.\d{3}\.\d{3}-\d$"),          # NIT 900.123.456-7
    ("id_number", r"^1\.0\d{2}\.\d{3}\.\d{3}$"),                         # cédula 1.023.456.789
    ("amount", r"^\$ \d{1,3}(\.\d{3})+$"),                               # $ 1.234.567
    ("amount", r"^\d{1,3}(,\d{3})*\.\d{2}$"),                            # 1,234.50
    ("amount", r"COP"),
    ("address", r"^(Calle|Cra\.|Carrera) \d+[A-Z]?( Bis)? (#|No\.) \d+[A-Z]?-\d{2}"),  # Calle 26 # 68B-35
    ("address", r"Apto\.? \d+"),
    ("email", r"^[a-z0-9._]+@[a-z]+(\.[a-z]+)+$"),
    ("phone", r"^3\d{2} \d{3} \d{4}$"),
    ("date", r"^\d{1,2} de [a-z]+ de \d{4}$"),
    ("date", r"^\d{2}/\d{2}/\d{4}$"),
])
def test_kind_produces_the_expected_formats(kind, pattern):
    assert any(re.search(pattern, v) for v in _values(kind, 600)), f"no {kind} value matches {pattern}"


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown field kind"):
        sd.random_field_value(0, "zipcode")


def test_render_line_gives_a_tight_gray_line_with_ink():
    img = sd.render_line("Calle 26 # 68B-35 Ñuñoa", FALLBACK, height=64, rng=3)
    arr = np.asarray(img)
    assert img.mode == "L" and img.height == 64 and img.width > 4 * img.height
    assert arr.min() < 100 and np.percentile(arr, 50) > 200  # dark ink on mostly light paper
    ink_cols = np.flatnonzero((arr < 128).any(axis=0))
    assert ink_cols[0] < 0.5 * img.height and img.width - 1 - ink_cols[-1] < 0.5 * img.height  # tight crop


def _ink_rows(img, threshold=150):
    rows = np.flatnonzero((np.asarray(img) < threshold).any(axis=1))
    return rows[0], rows[-1] + 1


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_render_line_cuts_a_share_of_lines_at_their_ink(monkeypatch, share):
    """Lower-case text without ascenders: cut at the font's band it fills about half the height; cut at its
    ink (INK_TIGHT_SHARE, as trim_to_ink cuts field crops) it fills the height but for 0-20% margins."""
    monkeypatch.setattr(sd, "INK_TIGHT_SHARE", share)
    fill = []
    for seed in range(8):
        img = sd.render_line("cameo name", FALLBACK, height=64, rng=seed)
        top, bottom = _ink_rows(img)
        fill.append((bottom - top) / img.height)
    if share:
        assert min(fill) > 1 / 1.5, fill  # at most 20% above and below, plus resampling
    else:
        assert max(fill) < 0.6, fill


def test_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (64, 300)]:
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        percents = (0, 1, 10, 50, 90, 99, 100)
        assert sd._percentiles(img, *percents) == [int(np.percentile(np.asarray(img), p)) for p in percents]


@pytest.mark.parametrize("angle", [-2.0, -0.3, 0.0, 1.7])
def test_rotate_has_pils_geometry(angle):
    line = sd.render_line("Calle 26 # 68B-35", FALLBACK, height=64, rng=2)
    ours, pil = sd._rotate(line, angle, 255), line.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=255)
    assert ours.size == pil.size
    a, b = np.asarray(ours, np.float32), np.asarray(pil, np.float32)
    assert np.abs(a - b).mean() < 2.0  # interpolation kernels differ slightly, the geometry does not


def test_render_line_is_deterministic_from_rng_seed():
    a, b = (np.asarray(sd.render_line("José Núñez", FALLBACK, rng=5)) for _ in range(2))
    c = np.asarray(sd.render_line("José Núñez", FALLBACK, rng=6))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_degrade_keeps_height_changes_pixels_and_zero_strength_is_identity():
    clean = sd.render_line("$ 1.234.567 COP", FALLBACK, rng=1)
    assert np.array_equal(np.asarray(sd.degrade(clean, 0, strength=0)), np.asarray(clean))
    damaged = [sd.degrade(clean, seed, strength=1.0) for seed in range(5)]
    assert all(d.mode == "L" and d.height == clean.height for d in damaged)
    assert any(d.size != clean.size or not np.array_equal(np.asarray(d), np.asarray(clean)) for d in damaged)
    assert np.array_equal(np.asarray(sd.degrade(clean, 9)), np.asarray(sd.degrade(clean, 9)))


def test_find_fonts_falls_back_to_matplotlib_dejavu(tmp_path):
    assert Path(FALLBACK).is_file()
    assert sd.find_fonts("printed", root=tmp_path) == [FALLBACK]
    assert sd.find_fonts("handwriting", root=tmp_path) == []
    with pytest.raises(ValueError):
        sd.find_fonts("cursive", root=tmp_path)


def test_find_fonts_reads_styles_from_the_debian_folders(tmp_path):
    # Debian layout: <root>/<format>/<folder>/<file>; the folder decides the style (fonts-debian.txt).
    for rel in ("truetype/kristi/Kristi.ttf", "truetype/dejavu/DejaVuSans.ttf", "truetype/unlisted/Other.ttf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FALLBACK, tmp_path / rel)
    assert [Path(p).name for p in sd.find_fonts("handwriting", root=tmp_path)] == ["Kristi.ttf"]
    assert [Path(p).name for p in sd.find_fonts("printed", root=tmp_path)] == ["DejaVuSans.ttf"]


def test_font_problem_reports_missing_glyphs_and_symbol_fonts():
    assert sd.font_problem(FALLBACK) is None
    assert "missing or blank glyphs: 中" in sd.font_problem(FALLBACK, "ab中")
    assert sd.font_problem("/nowhere/D050000L.otf") == "symbol or math font"
    assert sd.font_problem("/nowhere/Missing.ttf").startswith("unreadable")


def test_font_list_names_packages_of_both_styles():
    assert "fonts-dejavu-core" in sd.FONT_PACKAGES
    assert {style for _, style, _, _ in sd.FONT_TABLE} == set(sd.STYLES)


def test_font_list_patterns_pick_files_of_a_mixed_folder(tmp_path):
    listing = tmp_path / "fonts.txt"
    listing.write_text("# comment\npkg-a printed alpha\npkg-b handwriting beta Script*.ttf,Hand.otf\n")
    assert sd.read_font_list(listing) == [("pkg-a", "printed", "alpha", ("*",)),
                                          ("pkg-b", "handwriting", "beta", ("Script*.ttf", "Hand.otf"))]
    listing.write_text("pkg-c cursive gamma\n")
    with pytest.raises(ValueError, match="style must be one of"):
        sd.read_font_list(listing)
    # The real list: fonts-linex holds school cursive (listed) next to printed and Greek fonts (not listed).
    for rel in ("truetype/linex/Abecedario.ttf", "truetype/linex/ellenike.ttf", "truetype/tlwg/Purisa.ttf",
                "truetype/tlwg/Garuda.ttf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FALLBACK, tmp_path / rel)
    found = {Path(p).name: s for p, s in sd.candidate_fonts(tmp_path)}
    assert found == {"Abecedario.ttf": "handwriting", "Purisa.ttf": "handwriting"}


def _font_without(chars: str, path: Path) -> str:
    """DejaVu Sans without `chars`: a stand-in for the Debian fonts that lack Spanish accents."""
    from fontTools import subset

    keep = [ord(c) for c in sd.CHARSET if c not in chars]
    opts = subset.Options()
    font = subset.load_font(FALLBACK, opts)
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=keep)
    sub.subset(font)
    subset.save_font(font, str(path), opts)
    return str(path)


def test_fonts_without_accents_render_lines_without_them(tmp_path):
    no_accents = _font_without("áéíóúñüÁÉÍÓÚÑÜ@", tmp_path / "NoAccents.ttf")
    assert set(sd.font_missing(no_accents)) == set("áéíóúñüÁÉÍÓÚÑÜ@")
    assert sd.font_problem(no_accents) is None  # usable: accents and '@' are optional
    assert sd.fit_text("Ñuñoa José", "ñÑé") == "Nunoa Jose"
    assert sd.fit_text("ana@x.co", "@") is None
    assert sd.font_problem(_font_without("x", tmp_path / "NoX.ttf")) == "missing or blank glyphs: x"
    rows = [sd.make_sample(i, 0, [(no_accents, "handwriting")])[1] for i in range(60)]
    texts = "".join(r["text"] for r in rows)
    assert not set(texts) & set("áéíóúñüÁÉÍÓÚÑÜ@") and {r["kind"] for r in rows} - {"email"}
    # Fully covered fonts draw exactly what they drew before (held-out evaluation sets stay the same).
    full = [sd.make_sample(i, 0, [(FALLBACK, "handwriting")])[1]["text"] for i in range(60)]
    assert set("".join(full)) & set("áéíóúñüÁÉÍÓÚÑÜ@")


def test_warp_keeps_height_is_seeded_and_zero_is_identity():
    clean = sd.render_line("Martínez 14/02/2023", FALLBACK, rng=2)
    assert np.array_equal(np.asarray(sd.warp(clean, 0, strength=0)), np.asarray(clean))
    warped = [sd.warp(clean, seed, strength=1.0) for seed in range(8)]
    assert all(w.mode == "L" and w.height == clean.height for w in warped)
    assert any(w.width > clean.width for w in warped)  # a slant widens the line
    assert sum(not (w.size == clean.size and np.array_equal(np.asarray(w), np.asarray(clean))) for w in warped) >= 4
    assert np.array_equal(np.asarray(sd.warp(clean, 3)), np.asarray(sd.warp(clean, 3)))
    dark = [int((np.asarray(w) < 128).sum()) for w in warped]
    base = int((np.asarray(clean) < 128).sum())
    assert all(0.5 * base < d < 2.0 * base for d in dark)  # shapes change, ink is neither lost nor smeared


def test_make_sample_warp_is_an_extra_stream():
    fonts = [(FALLBACK, "printed")]
    plain, row = sd.make_sample(5, 1, fonts)
    again, row2 = sd.make_sample(5, 1, fonts, warp_strength=0.0)
    assert np.array_equal(np.asarray(plain), np.asarray(again)) and row == row2
    warped = [sd.make_sample(i, 1, fonts, warp_strength=1.0) for i in range(6)]
    assert [r for _, r in warped] == [sd.make_sample(i, 1, fonts)[1] for i in range(6)]  # same texts
    assert all(im.height == 64 for im, _ in warped)


def test_make_sample_handwriting_share():
    fonts = [(FALLBACK, "printed"), (FALLBACK, "handwriting")]
    styles = lambda share: [sd.make_sample(i, 2, fonts, height=None, strength=0, handwriting_share=share)[1]["style"]
                            for i in range(40)]
    assert set(styles(1.0)) == {"handwriting"} and set(styles(0.0)) == {"printed"}
    assert 5 < styles(0.5).count("handwriting") < 35
    # None keeps the uniform draw, so earlier streams stay as they were
    uniform = [sd.make_sample(i, 2, fonts, height=None, strength=0)[1]["style"] for i in range(40)]
    assert uniform == styles(None) and len(set(uniform)) == 2


def test_make_sample_glyph_share_draws_glyphs_on_their_own_and_keeps_the_stream():
    fonts = [(FALLBACK, "printed"), (FALLBACK, "handwriting")]
    sample = lambda i, share: sd.make_sample(i, 4, fonts, height=None, strength=0, glyph_share=share)
    plain = [sample(i, 0.0) for i in range(24)]
    glyphs = [sample(i, 1.0) for i in range(24)]
    assert [r for _, r in glyphs] == [r for _, r in plain]  # same texts, fonts, styles, layouts
    changed = [not (a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b)))
               for (a, _), (b, _) in zip(plain, glyphs)]
    hand = [r["style"] == "handwriting" for _, r in plain]
    assert all(c for c, h in zip(changed, hand) if h) and 0 < sum(hand) < 24
    assert sum(c for c, h in zip(changed, hand) if not h) < sum(not h for h in hand)  # a third of P for print
    again = sample(3, 1.0)[0]
    assert np.array_equal(np.asarray(again), np.asarray(glyphs[3][0]))
    # the same text at about the same extent: glyphs vary, none is lost
    clean = sd.render_line("Martínez Ibagué 14/02", FALLBACK, height=None, rng=5)
    jittered = sd.render_line("Martínez Ibagué 14/02", FALLBACK, height=None, rng=5, glyph_rng=1)
    ink = lambda im: int((np.asarray(im) < 128).sum())
    assert 0.7 * ink(clean) < ink(jittered) < 1.4 * ink(clean)
    assert 0.8 * clean.width < jittered.width < 1.25 * clean.width
    assert not np.array_equal(np.asarray(clean.resize(jittered.size)), np.asarray(jittered))


def _oldstyle_font():
    """A Debian font with old-style figures (fonts-open-sans, Carlito or FreeSerif; `setup_mlx.sh --fonts`)."""
    found = [p for p, _ in sd.candidate_fonts() if sd.has_oldstyle_figures(p)]
    if not found:
        pytest.skip("no font with old-style figures installed (./setup_mlx.sh --fonts installs fonts-open-sans)")
    return found[0]


def test_oldstyle_figures_are_found_in_the_fonts_that_have_them_only():
    assert sd.has_oldstyle_figures(_oldstyle_font())
    assert not sd.has_oldstyle_figures(FALLBACK)  # DejaVu Sans has lining figures only
    assert not sd.has_oldstyle_figures("/no/such/font.ttf")


def test_make_sample_oldstyle_share_changes_the_digits_of_lines_that_have_them_only():
    font = _oldstyle_font()
    fonts = [(font, "printed")]
    sample = lambda i, share, kind: sd.make_sample(i, 6, fonts, kinds=[kind], height=None, strength=0,
                                                   oldstyle_share=share)
    same = lambda a, b: a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    for i in range(6):
        lining, row = sample(i, 0.0, "date")
        oldstyle, row_o = sample(i, 1.0, "date")
        assert row == row_o and any(c.isdigit() for c in row["text"])
        assert not same(lining, oldstyle), row["text"]
        assert same(lining, sd.make_sample(i, 6, fonts, kinds=["date"], height=None, strength=0)[0])  # 0 = before
        words, _ = sample(i, 1.0, "words")  # no digits: drawn as before
        assert same(words, sample(i, 0.0, "words")[0])
    # the old-style 1 is shorter than the lining one: the figure itself changed, not only the layout
    copy = sd.oldstyle_font_file(font)
    assert copy != font and sd.oldstyle_font_file(font) == copy and sd.font_missing(copy) == sd.font_missing(font)
    plain = sd.render_line("1111", font, height=None, rng=2)
    onum = sd.render_line("1111", copy, height=None, rng=2)
    ink_rows = lambda im: int(((np.asarray(im) < 128).any(axis=1)).sum())
    assert ink_rows(onum) < 0.9 * ink_rows(plain)
    letters = lambda path: sd.render_line("Calle", path, height=None, rng=2)
    assert np.array_equal(np.asarray(letters(font)), np.asarray(letters(copy)))  # only the digits change
    with pytest.raises(ValueError, match="no old-style figures"):
        sd.oldstyle_font_file(FALLBACK)


def test_shaped_glyph_keeps_its_origin_and_leans_about_the_baseline():
    mask = Image.new("L", (40, 60), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 20, 40), fill=255)  # a bar standing on the baseline y=40

    class Fixed:  # the draws of _shaped: width factor, then shear
        def __init__(self, sx, sh):
            self.sx, self.sh = sx, sh

        def uniform(self, a, b):
            return self.sx

        def normal(self, mean, sigma):
            return self.sh

    def columns(img, row):
        xs = np.flatnonzero(np.asarray(img)[row] > 128)
        return int(xs[0]), int(xs[-1])

    same, origin, widen = sd._shaped(mask, (10, 40), Fixed(1.0, 0.0))
    assert origin == (10, 40) and widen == 1.0 and np.array_equal(np.asarray(same)[:, :40], np.asarray(mask))
    lean, origin, _ = sd._shaped(mask, (10, 40), Fixed(1.0, 0.25))
    bottom, top = columns(lean, 39), columns(lean, 11)
    assert bottom[0] - origin[0] in (-1, 0, 1)  # the foot stays at the origin
    assert 6 <= top[0] - bottom[0] <= 8  # 0.25 x the 29 rows above: leans right
    wide, origin, widen = sd._shaped(mask, (10, 40), Fixed(1.2, 0.0))
    assert widen == 1.2 and origin == (12, 40) and columns(wide, 20) == (12, 24)


def test_make_sample_glyph_shape_share_varies_glyph_lines_only_and_keeps_the_stream():
    fonts = [(FALLBACK, "printed"), (FALLBACK, "handwriting")]
    sample = lambda i, glyph, shape: sd.make_sample(i, 4, fonts, height=None, strength=0, glyph_share=glyph,
                                                    glyph_shape_share=shape)
    same = lambda a, b: a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    for i in range(12):
        glyphs, row = sample(i, 1.0, 0.0)
        shaped, row_s = sample(i, 1.0, 1.0)
        assert row == row_s
        if row["style"] == "handwriting":  # every handwriting line is drawn a glyph at a time at glyph_share 1
            assert not same(glyphs, shaped), row["text"]
        assert same(sample(i, 0.0, 0.0)[0], sample(i, 0.0, 1.0)[0])  # no glyph drawing: nothing to shape
        assert same(glyphs, sd.make_sample(i, 4, fonts, height=None, strength=0, glyph_share=1.0)[0])


@pytest.mark.parametrize("option", ["glyph_share", "handwriting_share", "oldstyle_share", "glyph_shape_share"])
@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_make_sample_refuses_shares_outside_zero_one(option, share):
    with pytest.raises(ValueError, match=f"{option} is a probability between 0 and 1, not {share}"):
        sd.make_sample(0, 4, [(FALLBACK, "handwriting")], height=None, strength=0, **{option: share})


def test_split_fonts_holds_out_the_listed_families_per_style():
    fonts = ["/f/urw-base35/P052-Roman.otf", "/f/urw-base35/P052-Bold.otf", "/f/urw-base35/NimbusSans-Regular.otf",
             "/f/kristi/Kristi.ttf", "/f/sjfonts/SteveHand.ttf", "/f/sjfonts/Delphine.ttf", "/f/breip/Breip.ttf"]
    train, held = sd.split_fonts(fonts)
    assert sorted(Path(p).stem for p in held) == ["Kristi", "P052-Bold", "P052-Roman", "SteveHand"]
    assert sorted(Path(p).stem for p in train) == ["Breip", "Delphine", "NimbusSans-Regular"]


def test_split_fonts_without_listed_families_holds_out_the_last_font_of_a_style():
    train, held = sd.split_fonts(["/f/dejavu/B.ttf", "/f/dejavu/A.ttf", "/f/breip/Only.ttf"])
    assert held == ["/f/dejavu/B.ttf"]
    assert sorted(train) == ["/f/breip/Only.ttf", "/f/dejavu/A.ttf"]  # a lone font stays for training


def _read(out):
    with open(Path(out) / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _image_bytes(out, rows):
    return [(Path(out) / r["image"]).read_bytes() for r in rows]


def test_make_dataset_is_reproducible_and_independent_of_worker_count(tmp_path):
    fonts = {FALLBACK: "printed"}
    one = sd.make_dataset(tmp_path / "a", 70, seed=0, fonts=fonts, workers=1, progress=False)
    two = sd.make_dataset(tmp_path / "b", 70, seed=0, fonts=fonts, workers=2, progress=False)
    other = sd.make_dataset(tmp_path / "c", 10, seed=1, fonts=fonts, workers=1, progress=False)
    assert one == two == _read(tmp_path / "a")
    assert _image_bytes(tmp_path / "a", one) == _image_bytes(tmp_path / "b", two)
    assert [r["text"] for r in other] != [r["text"] for r in one[:10]]


def test_make_dataset_manifest_round_trips_and_keeps_styles(tmp_path):
    rows = sd.make_dataset(tmp_path, 8, seed=2, fonts={FALLBACK: "handwriting"}, kinds=["address", "amount"],
                           split_name="val", progress=False)
    assert list(rows[0]) == list(sd.MANIFEST_COLUMNS)
    assert all(r["style"] == "handwriting" and r["font"] == "DejaVuSans" for r in rows)
    assert {r["kind"] for r in rows} <= {"address", "amount"}
    back = sd.read_manifest(tmp_path / "manifest.csv")
    assert [r["text"] for r in back] == [r["text"] for r in rows]  # commas, quotes, accents survive CSV
    assert all(Path(r["image"]).name.startswith("val_") and Image.open(r["image"]).height == 64 for r in back)


def test_make_dataset_rejects_unknown_kinds_and_fonts_without_glyphs(tmp_path):
    with pytest.raises(ValueError, match="unknown field kinds"):
        sd.make_dataset(tmp_path, 2, seed=0, fonts=[FALLBACK], kinds=["zipcode"], progress=False)
    with pytest.raises(ValueError, match="no usable font"):
        sd.make_dataset(tmp_path, 2, seed=0, fonts=["/nowhere/Missing.ttf"], progress=False)


def test_cli_writes_the_requested_lines(tmp_path, capsys):
    assert sd.main(["--out", str(tmp_path), "--n", "4", "--seed", "3", "--style", "printed",
                    "--fonts", FALLBACK, "--kinds", "name,date"]) == 0
    rows = _read(tmp_path)
    assert len(rows) == 4 and {r["kind"] for r in rows} <= {"name", "date"}
    with pytest.raises(SystemExit) as exit_info:
        sd.main(["--help"])
    assert exit_info.value.code == 0 and "--font-split" in capsys.readouterr().out


def test_font_root_can_point_at_a_copy_of_the_font_tree(tmp_path):
    """TROCR_FONT_ROOT: training machines without the Debian packages use a copied tree."""
    import os
    import subprocess
    import sys

    (tmp_path / "fonts" / "truetype" / "kristi").mkdir(parents=True)
    shutil.copy(FALLBACK, tmp_path / "fonts" / "truetype" / "kristi" / "Kristi.ttf")
    env = {**os.environ, "TROCR_FONT_ROOT": str(tmp_path / "fonts")}
    script = str(Path(sd.__file__))
    listed = subprocess.run([sys.executable, script, "--list-fonts"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and f"under {tmp_path / 'fonts'}" in listed.stdout
    assert re.search(r"handwriting\s+Kristi\s+held out", listed.stdout)
    env["TROCR_FONT_ROOT"] = str(tmp_path / "empty")
    made = subprocess.run([sys.executable, script, "--out", str(tmp_path / "out"), "--n", "2", "--style", "handwriting"],
                          env=env, capture_output=True, text=True)
    assert made.returncode != 0 and f"no usable handwriting font under {tmp_path / 'empty'}" in made.stderr

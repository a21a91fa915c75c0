"""Outputs before pictures: whatever a model emits (control characters, unassigned code points, characters
the font has no glyph for), the form handlers write every result with the text exactly as produced, and
the pictures show it with those characters escaped; a picture that fails loses no result.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import ocr_inference_handler_mlx as mlx_handler
from scripts import form_pipeline as fp
from scripts import forms

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "template.png"
SCAN = ROOT / "examples" / "filled_form_scan.png"
PICTURES = ("guided_image.png", "annotated_page.png")
RESULTS = ("extracted_texts.txt", "results.json", "results.csv")
# Characters raqm refuses to lay out ("raqm_layout() failed": Unicode paragraph/segment separators),
# other control characters, a line separator, an unassigned and a private-use code point, and a CJK
# character DejaVuSans has no glyph for.
REFUSED = "\x1c\x1d\x1e\x85"
ODD = REFUSED + "\x19\x0b\x7f\u2028\u0378\ue000中"


def raqm_refuses(text: str) -> bool:
    """True when Pillow's default (raqm) layout raises on `text`, as the annotation picture did."""
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    try:
        draw.textlength(text, font=forms.load_font(20))
        return False
    except (OSError, RuntimeError, ValueError):
        return True


def read_results(folder: Path):
    record = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    with open(folder / "results.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    lines = (folder / "extracted_texts.txt").read_text(encoding="utf-8").split("\n")
    return record, table, lines


def assert_results_hold(folder: Path, texts):
    """results.json, results.csv and extracted_texts.txt hold exactly `texts` (by region order)."""
    record, table, lines = read_results(folder)
    assert [r["text"] for r in record["regions"]] == list(texts)
    assert [row["text"] for row in table] == list(texts)
    assert lines[:-1] == [f"Region {n}: {t}" for n, t in zip(range(1, len(texts) + 1), texts)] and lines[-1] == ""


def test_drawable_text_escapes_what_the_font_cannot_lay_out():
    assert forms.drawable_text("Bogotá 14/2/2023") == "Bogotá 14/2/2023"
    assert forms.drawable_text("000\x1c000\x85") == "000\\x1c000\\x85"
    assert forms.drawable_text("a\u2028b\u0378c\ue000d中") == "a\\u2028b\\u0378c\\ue000d\\u4e2d"
    assert forms.drawable_text("x\U000e0080") == "x\\U000e0080"
    for ch in ODD:
        assert not raqm_refuses(forms.drawable_text(f"7{ch}7"))
    assert all(raqm_refuses(f"7{ch}7") for ch in REFUSED)  # the failure the escaping avoids


def test_annotation_picture_of_undrawable_texts():
    regions = forms.find_regions(TEMPLATE)
    page = Image.open(SCAN).convert("L").resize(Image.open(TEMPLATE).size)
    texts = {r.number: f"{r.number}{ODD[r.number % len(ODD)]}x" for r in regions}
    out = forms.draw_annotations(page, regions, texts)
    assert out.size == (page.width, 2 * page.height)


def odd_text(image) -> str:
    """The fake engine's text for a crop: one of the characters above, picked by the crop's size (the
    pipeline may batch crops in any order)."""
    ch = ODD[(image.width * 7 + image.height) % len(ODD)]
    return f"{image.width}{ch}0{ch}"


class OddEngine:
    """An engine (form_pipeline's protocol) whose texts hold the characters above."""

    name = "odd"

    def recognize(self, images):
        return [(odd_text(im), 0.5) for im in images]

    def describe(self):
        return {"engine": self.name, "model": None}


def config(out: Path, **kw) -> fp.FormOCRConfig:
    return fp.FormOCRConfig(template=str(TEMPLATE), image=str(SCAN), output_dir=str(out), show_progress=False, **kw)


def expected_odd_texts(out: Path):
    """What OddEngine gives for each region's crop, in region order (from the crops as saved)."""
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    texts = [odd_text(Image.open(out / r["crop"])) for r in record["regions"]]
    assert len(texts) == 18 and len({t[-1] for t in texts}) >= 5  # many of the odd characters in play
    return texts


def test_pipeline_writes_exact_texts_and_pictures_for_any_engine_output(tmp_path):
    out = tmp_path / "out"
    fp.run_form(config(out), lambda model, role, cfg: OddEngine())
    assert_results_hold(out, expected_odd_texts(out))
    for name in PICTURES:
        assert Image.open(out / name).size[0] == Image.open(TEMPLATE).size[0]
    assert "pictures_error" not in json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_results_are_written_before_any_picture(tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = []
    real = forms.draw_guides

    def guides_after_results(page, regions, **kw):
        seen.append(all((out / name).is_file() for name in RESULTS))
        return real(page, regions, **kw)

    monkeypatch.setattr(forms, "draw_guides", guides_after_results)
    fp.run_form(config(out), lambda model, role, cfg: OddEngine())
    assert seen and all(seen)


def test_a_failing_picture_loses_no_result(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(forms, "draw_annotations", broken)
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="results written to .* but the pictures failed: OSError: No space"):
        record = fp.run_form(config(out), lambda model, role, cfg: OddEngine())
    assert (out / "regions").is_dir()  # the crops come before the annotated page
    assert_results_hold(out, expected_odd_texts(out))
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["pictures_error"] == record["pictures_error"] == "OSError: No space left on device"
    assert not (out / "annotated_page.png").exists()
    fp.print_summary(record)
    assert "the pictures failed (OSError: No space left on device); the results are complete" in capsys.readouterr().out


@pytest.fixture(scope="module")
def odd_checkpoint(tmp_path_factory):
    """A tiny random-weight TrOCR (saved by transformers, converted to MLX) whose vocabulary is digits,
    a few letters and the characters above, so that its greedy texts are full of them."""
    import hf_fixtures as F
    from scripts.char_tokenizer import save_char_tokenizer
    from scripts.convert_trocr_to_mlx import convert

    charset = "0123456789abc" + ODD
    root = tmp_path_factory.mktemp("odd_model")
    model = F.make_model("base", seed=3, vocab_size=len(charset) + 4)
    hf = root / "hf"
    model.save_pretrained(hf)
    save_char_tokenizer(hf, charset)
    F.write_preprocessor(hf, model.config.encoder.image_size)
    return convert(hf, root / "mlx", verbose=False)


def test_mlx_handler_on_a_model_that_emits_control_characters(odd_checkpoint, tmp_path, capsys):
    """End to end through ocr_inference_handler_mlx with a real checkpoint: every result and every
    picture is written, and the results hold the model's texts exactly (checked against the
    processor's own output for the same crops)."""
    out = tmp_path / "out"
    rc = mlx_handler.main(["--template", str(TEMPLATE), "--image", str(SCAN), "--output-dir", str(out),
                           "--base-model", str(odd_checkpoint), "--max-length", "12", "--no-progress"])
    console = capsys.readouterr()
    assert rc == 0, console.err
    record, _, _ = read_results(out)
    texts = [r["text"] for r in record["regions"]]
    assert len(texts) == 18
    assert any(raqm_refuses(t) for t in texts), texts  # the case that used to lose every result
    assert any(ch in t for t in texts for ch in REFUSED)
    assert_results_hold(out, texts)
    for name in PICTURES:
        assert (out / name).is_file()
    assert len(list((out / "regions").iterdir())) == 18
    assert not any(ch in console.out for ch in REFUSED)  # the summary shows them escaped
    assert forms.printable_text(texts[0]) in console.out

    from scripts.mlx_processor import load_mlx_processor

    processor = load_mlx_processor(odd_checkpoint)
    crops = [Image.open(out / r["crop"]) for r in record["regions"]]
    assert processor.process_batch(crops, max_length=12, show_progress=False) == texts

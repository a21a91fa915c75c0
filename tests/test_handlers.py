"""End to end: ocr_inference_handler_mlx.py and ocr_inference_handler.py on the bundled example form
with tiny random-weight TrOCR checkpoints (the texts are gibberish; what is checked is that both
handlers write every output, agree with each other token for token, and fail clearly).

The MLX handler gets the converted MLX folder as base model and the second checkpoint as a
transformers folder (so the on-the-fly conversion runs); the PyTorch handler gets both HF folders.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from scripts import form_pipeline as fp
from scripts import forms
import hf_fixtures as F
import ocr_inference_handler as pt_handler
import ocr_inference_handler_mlx as mlx_handler

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "template.png"
SCAN = ROOT / "examples" / "filled_form_scan.png"
MAX_LENGTH = 10  # tokens per region: the tiny models never emit </s>, so this bounds the run time
FIELDS = ["region", "bbox", "text", "base_text", "finetuned_text", "confidence"]


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory):
    """(HF base folder, MLX base folder, HF fine-tuned folder: a second tiny checkpoint, other weights)."""
    hf, mlx_dir = tiny_model
    root = tmp_path_factory.mktemp("handlers_models")
    finetuned = F.save_checkpoint(F.make_model("base", seed=7), root / "finetuned_hf")
    return hf, mlx_dir, finetuned


def common_flags(out: Path, image: Path = SCAN) -> list:
    return ["--template", str(TEMPLATE), "--image", str(image), "--output-dir", str(out),
            "--max-length", str(MAX_LENGTH), "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    """Both handlers, base + fine-tuned, and the MLX handler with the base model only."""
    hf, mlx_dir, finetuned = models
    root = tmp_path_factory.mktemp("handler_runs")
    cache = root / "mlx_cache"
    out = {"mlx": root / "mlx", "pytorch": root / "pytorch", "mlx_base_only": root / "mlx_base_only"}
    assert mlx_handler.main(common_flags(out["mlx"]) + ["--base-model", str(mlx_dir), "--finetuned-model",
                                                         str(finetuned), "--mlx-cache", str(cache)]) == 0
    assert pt_handler.main(common_flags(out["pytorch"]) + ["--base-model", str(hf), "--finetuned-model",
                                                           str(finetuned), "-q"]) == 0
    assert mlx_handler.main(common_flags(out["mlx_base_only"]) + ["--base-model", str(mlx_dir), "-q"]) == 0
    return {name: (folder, json.loads((folder / "results.json").read_text(encoding="utf-8")))
            for name, folder in out.items()} | {"cache": cache}


@pytest.mark.parametrize("name", ["mlx", "pytorch", "mlx_base_only"])
def test_every_output_is_written(runs, name):
    folder, results = runs[name]
    for f in ("guided_image.png", "annotated_page.png", "extracted_texts.txt", "results.json", "results.csv"):
        assert (folder / f).is_file(), f
    template_size = Image.open(TEMPLATE).size
    assert Image.open(folder / "guided_image.png").size == template_size
    assert Image.open(folder / "annotated_page.png").size == (template_size[0], 2 * template_size[1])
    crops = sorted(p.name for p in (folder / "regions").iterdir())
    assert crops == [f"region_{n:02d}.png" for n in range(1, 19)]

    regions = forms.find_regions(TEMPLATE)
    rows = results["regions"]
    assert results["num_regions"] == len(rows) == len(regions) == 18
    for row, region in zip(rows, regions):
        assert set(FIELDS) <= set(row)
        assert row["region"] == region.number
        assert row["bbox"] == list(region.bbox)
        assert isinstance(row["text"], str) and row["text"]
        assert 0 < row["confidence"] <= 1
        crop = Image.open(folder / row["crop"])
        # cut down to its ink, inside the box
        assert crop.width <= region.inner[2] and crop.height <= region.inner[3]

    lines = (folder / "extracted_texts.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [f"Region {r['region']}: {r['text']}" for r in rows]
    with open(folder / "results.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 18 and set(FIELDS) <= set(table[0])
    for line, row in zip(table, rows):
        assert int(line["region"]) == row["region"] and json.loads(line["bbox"]) == row["bbox"]
        assert line["text"] == row["text"] and float(line["confidence"]) == pytest.approx(row["confidence"])

    # metadata: the inputs, the transform found, the models, the settings, the timings
    assert results["template"] == str(TEMPLATE) and results["scan"] == str(SCAN)
    al = results["alignment"]
    assert al["ok"] and al["method"] == "structure+ecc" and al["score"] > 0.9 and not al["reasons"]
    assert np.asarray(al["matrix"]).shape == (3, 3) and abs(al["rotation_deg"]) < 2
    # num_beams None: the model's generation_config.json (the tiny checkpoints' asks for none: greedy)
    assert results["settings"]["max_length"] == MAX_LENGTH and results["settings"]["num_beams"] is None
    assert results["models"]["base"]["num_beams"] == 1
    assert results["models"]["base"]["engine"] == ("pytorch" if name == "pytorch" else "mlx")
    assert {"align_s", "ocr_base_s", "total_s"} <= set(results["timings"])


def test_mlx_and_pytorch_give_identical_texts(runs):
    mlx_rows, pt_rows = runs["mlx"][1]["regions"], runs["pytorch"][1]["regions"]
    for m, p in zip(mlx_rows, pt_rows):
        assert (m["base_text"], m["finetuned_text"], m["text"]) == (p["base_text"], p["finetuned_text"], p["text"])
        assert m["text"] == m["finetuned_text"]
        assert m["confidence"] == pytest.approx(p["confidence"], abs=1e-3)
        assert m["base_confidence"] == pytest.approx(p["base_confidence"], abs=1e-3)
        assert m["min_confidence"] == pytest.approx(p["min_confidence"], abs=1e-3)
        assert 0 <= m["min_confidence"] <= m["confidence"] + 1e-6
        assert isinstance(m["flagged"], bool) and m["flagged"] == p["flagged"]
    # two different checkpoints: the fine-tuned column is not the base one
    assert sum(m["base_text"] != m["finetuned_text"] for m in mlx_rows) >= 9
    assert runs["mlx"][1]["models"]["finetuned"]["converted_from"] is not None


def test_base_model_only(runs):
    rows = runs["mlx_base_only"][1]["regions"]
    with_ft = runs["mlx"][1]["regions"]
    for row, other in zip(rows, with_ft):
        assert row["finetuned_text"] is None and row["text"] == row["base_text"] == other["base_text"]
        assert row["confidence"] == row["base_confidence"]
    assert runs["mlx_base_only"][1]["models"]["finetuned"] is None


def test_a_reading_that_cannot_be_right_is_flagged_whatever_its_score(models, tmp_path, monkeypatch, capsys):
    """`22,514.83` read as `22.514.83` with a high score: flagged, with the reason in results and on the console."""
    from scripts import form_pipeline as fp

    monkeypatch.setattr(fp, "recognize_all", lambda engine, crops, batch_size, bar=None:
                        [("22.514.83" if i == 0 else "Bogotá", 0.999, 0.999) for i in range(len(crops))])
    out = tmp_path / "out"
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(models[1])]) == 0
    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))["regions"]
    assert rows[0]["flagged"] and "misread" in rows[0]["doubt"]
    assert not any(r["flagged"] or r["doubt"] for r in rows[1:])
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        assert [bool(line["doubt"]) for line in csv.DictReader(f)] == [True] + [False] * (len(rows) - 1)
    console = capsys.readouterr().out
    assert "22.514.83" in console and "1 of them whatever the score" in console


def test_flags_follow_the_models_calibration(runs, models, tmp_path):
    """flagged = score < T, with T from calibration.json in the model folder, --flag-threshold over it, and
    the uncalibrated default (said in results.json) without either."""
    from scripts.confidence import CALIBRATION_FILE, UNCALIBRATED

    rows = runs["mlx_base_only"][1]["regions"]
    assert runs["mlx_base_only"][1]["flagging"]["source"] == "uncalibrated default"
    assert [r["flagged"] for r in rows] == [r[UNCALIBRATED[0]] < UNCALIBRATED[1] for r in rows]
    model = tmp_path / "model"
    shutil.copytree(models[1], model)
    scores = sorted(r["confidence"] for r in rows)
    threshold = (scores[8] + scores[9]) / 2  # half the fields below it
    (model / CALIBRATION_FILE).write_text(json.dumps({"score": "confidence", "threshold": threshold}))
    out = tmp_path / "out"
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(model), "-q"]) == 0
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["flagging"]["source"] == str(model / CALIBRATION_FILE) and record["flagging"]["flagged"] == 9
    assert [r["flagged"] for r in record["regions"]] == [r["confidence"] < threshold for r in record["regions"]]
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        assert [line["flagged"] for line in csv.DictReader(f)] == [str(r["flagged"]) for r in record["regions"]]
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(model), "-q", "--flag-threshold", "2"]) == 0
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["flagging"]["source"] == "--flag-threshold" and all(r["flagged"] for r in record["regions"])
    # made with another beam width than this run reads with: said on the console and in results.json
    (model / CALIBRATION_FILE).write_text(json.dumps({"score": "confidence", "threshold": threshold, "num_beams": 3}))
    with pytest.warns(UserWarning, match="made reading with 3 beam"):
        assert mlx_handler.main(common_flags(out) + ["--base-model", str(model), "-q"]) == 0
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["flagging"]["num_beams"] == 3 and "--num-beams 1" in record["flagging"]["warning"]
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(model), "-q", "--num-beams", "3"]) == 0
    assert "warning" not in json.loads((out / "results.json").read_text(encoding="utf-8"))["flagging"]
    (model / CALIBRATION_FILE).write_text("{not json")
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(model), "-q"]) == 2


def test_beam_width_comes_from_the_models_generation_config(models, tmp_path):
    """NUM_BEAMS None (the default): each handler reads with the beam width of the model's
    generation_config.json, as transformers' generate() does; the same texts as --num-beams given."""
    hf, mlx_dir, _ = models
    folders = {"mlx": tmp_path / "mlx_model", "pytorch": tmp_path / "hf_model"}
    shutil.copytree(mlx_dir, folders["mlx"])
    shutil.copytree(hf, folders["pytorch"])
    for folder in folders.values():
        path = folder / "generation_config.json"
        gen = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**gen, "num_beams": 3}))
    records = {}
    for name, handler in (("mlx", mlx_handler), ("pytorch", pt_handler)):
        out = tmp_path / name
        assert handler.main(common_flags(out) + ["--base-model", str(folders[name]), "-q"]) == 0
        records[name] = json.loads((out / "results.json").read_text(encoding="utf-8"))
        assert records[name]["settings"]["num_beams"] is None and records[name]["models"]["base"]["num_beams"] == 3
    out = tmp_path / "explicit"
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(mlx_dir), "-q", "--num-beams", "3"]) == 0
    explicit = json.loads((out / "results.json").read_text(encoding="utf-8"))
    texts = {name: [r["text"] for r in rec["regions"]] for name, rec in records.items()}
    assert texts["mlx"] == texts["pytorch"] == [r["text"] for r in explicit["regions"]]


def test_checkpoint_is_converted_once(runs, models, monkeypatch):
    cache = runs["cache"]
    (converted,) = list(cache.iterdir())
    assert (converted / "converted_from.json").is_file()
    from scripts import convert_trocr_to_mlx

    monkeypatch.setattr(convert_trocr_to_mlx, "convert", lambda *a, **k: pytest.fail("converted again"))
    path, source = mlx_handler.mlx_model_dir(str(models[2]), cache)
    assert path == converted and source == str(models[2].resolve())


def shifted_scan(path: Path, angle=1.0, shift=(12, -8), scale=1.02):
    """The example scan displaced the way a scanner would: rotated, shifted and scaled."""
    scan = np.asarray(Image.open(SCAN).convert("L"))
    h, w = scan.shape
    m = forms.similarity_matrix(angle, scale, shift, center=(w / 2, h / 2))
    Image.fromarray(cv2.warpPerspective(scan, m, (w, h), borderValue=255)).save(path)
    return path


def test_directory_mode(models, tmp_path, capsys):
    _, mlx_dir, _ = models
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(SCAN, scans / "page_a.png")
    shifted_scan(scans / "page_b.png")
    (scans / "page_c.png").write_bytes(b"this is not a png")
    (scans / "notes.txt").write_text("not a scan, ignored")
    out = tmp_path / "out"
    # --no-trim: compare whole boxes, so only alignment decides what each crop holds
    rc = mlx_handler.main(common_flags(out, image=scans) + ["--base-model", str(mlx_dir), "--no-trim"])
    assert rc == 1  # one scan failed, the others were processed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["page_a", "page_b"]
    for name in ("page_a", "page_b"):
        results = json.loads((out / name / "results.json").read_text(encoding="utf-8"))
        assert len(results["regions"]) == 18 and results["alignment"]["ok"]
    # the displaced copy reads like the original: alignment put the same pixels in each box
    a = json.loads((out / "page_a" / "results.json").read_text())["regions"]
    b = json.loads((out / "page_b" / "results.json").read_text())["regions"]
    assert sum(x["text"] == y["text"] for x, y in zip(a, b)) >= 12

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["ok"], summary["failed"]) == (2, 1)
    (failed,) = [e for e in summary["scans"] if e["status"] == "failed"]
    assert failed["scan"].endswith("page_c.png") and "page_c.png" in failed["error"]
    with open(out / "combined_results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 18 + 1
    assert [r["scan"].rsplit("/", 1)[-1] for r in rows if r["status"] == "failed"] == ["page_c.png"]
    assert {r["scan"].rsplit("/", 1)[-1] for r in rows if r["status"] == "ok"} == {"page_a.png", "page_b.png"}
    assert "2 done, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("handler", [mlx_handler, pt_handler], ids=["mlx", "pytorch"])
@pytest.mark.parametrize("missing", ["--image", "--template"])
def test_missing_input_names_the_file(handler, missing, tmp_path, capsys):
    absent = tmp_path / "no_such_file.png"
    flags = common_flags(tmp_path / "out") + ["--base-model", str(tmp_path)]
    flags[flags.index(missing) + 1] = str(absent)
    assert handler.main(flags) != 0
    assert str(absent) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_template_without_boxes_and_missing_model(models, tmp_path, capsys):
    _, mlx_dir, _ = models
    assert mlx_handler.main(common_flags(tmp_path / "o1") + ["--template", str(SCAN), "--base-model",
                                                             str(mlx_dir)]) == 2
    assert f"{SCAN}: no red field outlines" in capsys.readouterr().err
    absent = tmp_path / "no_model"
    assert mlx_handler.main(common_flags(tmp_path / "o2") + ["--base-model", str(absent)]) == 2
    assert str(absent) in capsys.readouterr().err


def test_unalignable_scan_is_an_error_when_strict_and_a_warning_otherwise(models, tmp_path, capsys):
    _, mlx_dir, _ = models
    blank = tmp_path / "blank.png"
    Image.new("L", Image.open(SCAN).size, 255).save(blank)
    flags = common_flags(tmp_path / "out", image=blank) + ["--base-model", str(mlx_dir), "-q"]
    assert mlx_handler.main(flags + ["--strict-align"]) == 2
    assert f"{blank}: could not align" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="could not align"):
        assert mlx_handler.main(flags) == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    al = record["alignment"]
    assert not al["ok"] and al["method"] == "identity" and str(blank) in al["message"]
    assert all(r["flagged"] for r in record["regions"])  # crops of an unaligned page all need a look


def test_flags_override_the_configuration_block():
    defaults = fp.FormOCRConfig(template="t.png", image="s.png", output_dir="o", max_length=64, num_beams=1,
                                engine_options={"mlx_cache": "c"})
    parser = fp.build_arg_parser(defaults)
    parser.add_argument("--mlx-cache", default="c")
    config = fp.config_from_args(parser.parse_args([]), defaults)
    assert (config.template, config.image, config.max_length, config.align) == ("t.png", "s.png", 64, True)
    args = parser.parse_args(["--image", "x.png", "--num-beams", "4", "--no-align", "--strict-align",
                              "--finetuned-model", "ft", "--mlx-cache", "elsewhere", "--preprocess"])
    config = fp.config_from_args(args, defaults)
    assert (config.image, config.num_beams, config.align, config.strict_align) == ("x.png", 4, False, True)
    assert config.finetuned_model == "ft" and config.preprocess and config.template == "t.png"
    assert config.engine_options == {"mlx_cache": "elsewhere"}
    with pytest.raises(ValueError, match="--batch-size"):
        fp.config_from_args(parser.parse_args(["--batch-size", "0"]), defaults)
    # the handlers' own blocks: paths anchored at the repository, the default model left to the registry
    assert mlx_handler.DEFAULTS.template == str(TEMPLATE) and mlx_handler.DEFAULTS.image == str(SCAN)
    assert mlx_handler.DEFAULTS.base_model is None and pt_handler.DEFAULTS.base_model is None


def test_ground_truth_scores_fields(models, tmp_path, capsys):
    """--ground-truth adds per-field `expected`/`correct` and a summary; exact counts are checked
    against a ground truth made from the run's own texts with two fields changed."""
    _, mlx_dir, _ = models
    first = tmp_path / "first"
    assert mlx_handler.main(common_flags(first) + ["--base-model", str(mlx_dir)]) == 0
    rows = json.loads((first / "results.json").read_text(encoding="utf-8"))["regions"]
    truth = {str(r["region"]): r["text"] for r in rows}
    truth["1"] = truth["1"] + "x"  # one wrong field, one character off
    truth["2"] = "completely different"
    (tmp_path / "gt.json").write_text(json.dumps(truth), encoding="utf-8")
    out = tmp_path / "scored"
    assert mlx_handler.main(common_flags(out) + ["--base-model", str(mlx_dir), "--ground-truth",
                                                 str(tmp_path / "gt.json")]) == 0
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    acc = record["accuracy"]
    assert (acc["fields"], acc["exact"]) == (18, 16) and 0 < acc["cer"] < 1
    assert [r["region"] for r in record["regions"] if not r["correct"]] == [1, 2]
    assert "16/18 fields exactly right" in capsys.readouterr().out


def test_ground_truth_of_the_config_block_is_not_applied_to_another_scan(tmp_path):
    args = fp.build_arg_parser(mlx_handler.DEFAULTS).parse_args(["--image", str(tmp_path / "other.png")])
    assert mlx_handler.DEFAULTS.ground_truth and fp.config_from_args(args, mlx_handler.DEFAULTS).ground_truth is None


# ---- alignment that fails its checks, boxes off the page (pages from dev/form_scans.py) ----------

@pytest.fixture(scope="module")
def rounded_pages(tmp_path_factory):
    """A rounded-box template, two pages of it (the second cuts a box at the right edge) and a page of
    the square form, which cannot be aligned to it."""
    from dev import form_scans as fs

    root = tmp_path_factory.mktemp("rounded_pages")
    rounded, square = fs.template_for("rounded"), fs.template_for("square")
    template = root / "rounded_template.png"
    rounded.image.save(template)
    scans = root / "scans"
    scans.mkdir()
    fs.make_scan(rounded, 1, True, False, transform=(0.8, 1.0, (-10, 5)), dpi=200).image.save(scans / "a_page.png")
    cut = fs.make_scan(rounded, 2, False, True, transform=(-1.0, 1.01, (35, -15)), dpi=200)
    cut.image.save(scans / "b_cut.png")
    fs.make_scan(square, 3, True, True).image.save(scans / "c_other_form.png")
    cut_boxes = [rounded.boxes[i - 1] for i in cut.params["off_page_boxes"]]
    return template, scans, cut_boxes


@pytest.mark.parametrize("handler", [mlx_handler, pt_handler], ids=["mlx", "pytorch"])
def test_strict_align_makes_a_page_that_fails_its_checks_an_error(handler, models, rounded_pages, tmp_path, capsys):
    hf, mlx_dir, _ = models
    template, scans, _ = rounded_pages
    page = scans / "c_other_form.png"
    flags = ["--template", str(template), "--image", str(page), "--output-dir", str(tmp_path / "out"),
             "--max-length", str(MAX_LENGTH), "--no-progress", "-q",
             "--base-model", str(mlx_dir if handler is mlx_handler else hf)]
    assert handler.main(flags + ["--strict-align"]) == 2
    err = capsys.readouterr().err
    assert f"{page}: could not align the scan to the template (" in err
    # without it: read, warned about, and marked in results.json with the method, score and why
    with pytest.warns(UserWarning, match="could not align"):
        assert handler.main(flags) == 0
    al = json.loads((tmp_path / "out" / "results.json").read_text())["alignment"]
    assert not al["ok"] and al["reasons"] and al["method"] and al["score"] is not None and str(page) in al["message"]


def test_directory_mode_reports_the_page_that_does_not_align_and_boxes_off_the_page(models, rounded_pages,
                                                                                     tmp_path, capsys):
    _, mlx_dir, _ = models
    template, scans, cut_boxes = rounded_pages
    flags = ["--template", str(template), "--image", str(scans), "--max-length", str(MAX_LENGTH),
             "--no-progress", "--base-model", str(mlx_dir)]
    out = tmp_path / "lenient"
    with pytest.warns(UserWarning, match="c_other_form.png: could not align"):
        assert mlx_handler.main(flags + ["--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["ok"], summary["unaligned"], summary["failed"]) == (2, 1, 0)
    (bad,) = [e for e in summary["scans"] if e["status"] == "unaligned"]
    assert bad["scan"].endswith("c_other_form.png") and bad["alignment_reasons"]
    assert "1 NOT aligned" in printed and "NOT ALIGNED" in printed and "c_other_form.png" in printed

    # the box the scanner cut is marked, the others are not
    rows = json.loads((out / "b_cut" / "results.json").read_text(encoding="utf-8"))["regions"]
    marked = [r["bbox"] for r in rows if r["off_page"]]
    assert marked and len(marked) == len(cut_boxes)
    assert all(np.abs(np.subtract(m, c)).max() <= 1 for m, c in zip(sorted(marked), sorted(map(list, cut_boxes))))
    assert all(r["visible_fraction"] < 1 for r in rows if r["off_page"])
    assert all(r["visible_fraction"] == 1 for r in rows if not r["off_page"])
    assert all(r["flagged"] for r in rows if r["off_page"])  # for review, whatever the model's confidence
    assert "partly off the page" in printed
    with open(out / "combined_results.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert {r["status"] for r in table if r["scan"].endswith("c_other_form.png")} == {"unaligned"}
    assert {r["off_page"] for r in table if r["scan"].endswith("b_cut.png")} == {"True", "False"}

    # --strict-align: that page is a failed page, not a crash; the others are still read
    strict = tmp_path / "strict"
    assert mlx_handler.main(flags + ["--output-dir", str(strict), "--strict-align"]) == 1
    summary = json.loads((strict / "summary.json").read_text(encoding="utf-8"))
    assert (summary["ok"], summary["unaligned"], summary["failed"]) == (2, 0, 1)
    (failed,) = [e for e in summary["scans"] if e["status"] == "failed"]
    assert "c_other_form.png: could not align" in failed["error"]
    assert sorted(p.name for p in strict.iterdir() if p.is_dir()) == ["a_page", "b_cut"]

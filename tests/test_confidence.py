"""Confidence scores, the calibrated flag threshold, and scripts/calibrate_confidence.py end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from scripts import calibrate_confidence, confidence as C
from scripts.synth_data import FALLBACK_FONT, render_line


def brute_auc(scores, wrong):
    sw, sr = scores[wrong], scores[~wrong]
    return float((sw[:, None] < sr[None]).mean() + 0.5 * (sw[:, None] == sr[None]).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_counts_pairs_with_ties_as_half(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(200), 1)  # many ties
    wrong = rng.random(200) < 0.3 + 0.4 * (scores < 0.5)
    assert C.auc(scores, wrong) == pytest.approx(brute_auc(scores, wrong))
    assert C.auc(scores, np.zeros(200, bool)) is None
    assert C.auc(np.arange(4.0), np.array([True, True, False, False])) == 1.0  # wrong ones all lowest


@pytest.mark.parametrize("catch", [0.5, 0.9, 0.95, 1.0])
def test_threshold_is_the_lowest_that_catches_the_target(catch):
    rng = np.random.default_rng(3)
    scores = rng.random(300)
    wrong = rng.random(300) < 1 - scores  # low scores are more often wrong
    t = C.choose_threshold(scores, wrong, catch)
    caught = (scores[wrong] < t).mean()
    assert caught >= catch
    lower = np.sort(scores[scores < t])[-1]  # the highest flagged field: unflag it and the target is missed
    assert (scores[wrong] < lower).mean() < catch or not wrong[scores == lower].any()
    figures = C.at_threshold(scores, wrong, t)
    assert figures["caught_share"] == pytest.approx(caught)
    assert figures["flagged_share"] == pytest.approx((scores < t).mean())
    assert figures["right_flagged_share"] == pytest.approx((scores[~wrong] < t).mean())


def test_calibrate_picks_the_better_score():
    rng = np.random.default_rng(4)
    wrong = rng.random(400) < 0.4
    good = np.where(wrong, rng.uniform(0, 0.6, 400), rng.uniform(0.4, 1, 400))
    poor = rng.random(400)
    result = C.calibrate({"confidence": poor, "min_confidence": good}, wrong, catch=0.9)
    assert result["score"] == "min_confidence"
    assert result["scores"]["min_confidence"]["auc"] > result["scores"]["confidence"]["auc"]
    assert result["at_threshold"]["caught_share"] >= 0.9
    assert C.calibrate({"confidence": poor, "min_confidence": good}, wrong, score="confidence")["score"] == "confidence"


def test_flagging_from_calibration_file(tmp_path):
    assert C.flagging_for(tmp_path).source == "uncalibrated default"
    (tmp_path / C.CALIBRATION_FILE).write_text(json.dumps({"score": "confidence", "threshold": 0.7}))
    f = C.flagging_for(tmp_path)
    assert (f.score, f.threshold, f.source) == ("confidence", 0.7, str(tmp_path / C.CALIBRATION_FILE))
    assert f.flag({"confidence": 0.69}) is True and f.flag({"confidence": 0.7}) is False
    assert f.flag({"min_confidence": 0.1}) is None  # the calibrated score is missing: unknown, not "fine"
    over = C.flagging_for(tmp_path, threshold=0.2)
    assert (over.score, over.threshold, over.source) == ("confidence", 0.2, "--flag-threshold")
    (tmp_path / C.CALIBRATION_FILE).write_text(json.dumps({"score": "loudness", "threshold": 0.7}))
    with pytest.raises(ValueError, match="unknown score"):
        C.flagging_for(tmp_path)


def test_read_lines_scores_are_probabilities(tiny_model):
    from scripts.mlx_processor import load_mlx_processor

    proc = load_mlx_processor(tiny_model[1])
    images = [render_line(t, FALLBACK_FONT, height=32, rng=i) for i, t in enumerate(["12/03", "Ana", "Calle 5"])]
    lines = C.read_lines(proc, images, batch_size=2, max_new_tokens=8)
    assert [t for t, _, _ in lines] == proc.process_batch(images, show_progress=False, max_new_tokens=8)
    for (_, conf, min_conf), (_, mean_lp) in zip(lines, proc.process_batch(images, show_progress=False,
                                                                             max_new_tokens=8, return_scores=True)):
        assert conf == pytest.approx(np.exp(mean_lp), rel=1e-5)
        assert 0 <= min_conf <= conf <= 1


def test_calibrate_command_writes_calibration(tiny_model, tmp_path, capsys):
    """The CLI on a manifest whose labels are partly the model's own readings (right) and partly not (wrong):
    the report has both scores, and --write stores a threshold the handlers read."""
    from scripts.mlx_processor import load_mlx_processor

    model = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_model[1], model)
    proc = load_mlx_processor(model)
    (tmp_path / "crops").mkdir()
    rows = []
    for i in range(12):
        path = tmp_path / "crops" / f"{i}.png"
        render_line(f"line {i}", FALLBACK_FONT, height=32, rng=i).save(path)
        read = proc.process_image(str(path), max_length=10)
        rows.append({"image": f"crops/{i}.png", "text": read if i % 2 else read + "x"})
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "text"])
        writer.writeheader()
        writer.writerows(rows)
    report = tmp_path / "report.json"
    assert calibrate_confidence.main([str(tmp_path / "manifest.csv"), "--model", str(model), "--max-length", "10",
                                      "--write", "--json", str(report), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12 fields: 6 read exactly right, 6 wrong" in out and "min_confidence" in out and "AUC" in out
    result = json.loads(report.read_text())
    assert len(result["readings"]) == 12 and sum(r["wrong"] for r in result["readings"]) == 6
    stored = json.loads((model / C.CALIBRATION_FILE).read_text())
    assert stored["score"] == result["score"] and stored["threshold"] == result["threshold"]
    assert stored["num_beams"] == result["num_beams"] == 1  # the tiny model's generation_config names none
    assert C.flagging_for(model).threshold == result["threshold"]
    assert result["at_threshold"]["caught_share"] >= 0.9
    # a second run checks the stored threshold on the crops
    assert calibrate_confidence.main([str(tmp_path / "manifest.csv"), "--model", str(model), "--max-length", "10",
                                      "--no-progress"]) == 0
    assert f"the model's calibration ({model / C.CALIBRATION_FILE})" in capsys.readouterr().out
    assert calibrate_confidence.main([str(tmp_path / "missing.csv"), "--model", str(model)]) == 1
    # it reads as the handlers do: with the beam width of the model's generation_config.json
    gen_path = model / "generation_config.json"
    gen_path.write_text(json.dumps({**json.loads(gen_path.read_text()), "num_beams": 2}))
    assert calibrate_confidence.main([str(tmp_path / "manifest.csv"), "--model", str(model), "--max-length", "10",
                                      "--json", str(report), "--no-progress"]) == 0
    assert json.loads(report.read_text())["num_beams"] == 2


def test_calibration_is_bound_to_its_weights(tiny_model, tmp_path):
    """A calibration made for other weights (the folder's model was replaced) is not used, and says so;
    an export of the same model carries it along, bound to the exported files."""
    import shutil

    from scripts import mlx_trainer as T

    model = tmp_path / "model"
    shutil.copytree(tiny_model[1], model)
    result = C.calibrate({"confidence": [0.2, 0.9], "min_confidence": [0.1, 0.8]}, [True, False])
    C.write_calibration(model, result, "manifest.csv", str(model))
    assert C.flagging_for(model).source == str(model / C.CALIBRATION_FILE)
    hf = T.export_hf(model, tmp_path / "hf")
    assert C.flagging_for(hf).threshold == result["threshold"]  # the PyTorch handler's copy of the model
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # other weights, same size
    with pytest.warns(UserWarning, match="made for other weights"):
        assert C.flagging_for(model).source == "uncalibrated default"


@pytest.mark.parametrize("text,doubtful", [
    ("22.514.83", True), ("6.034.03", True), ("$ 1,234,567,8", True), ("Total: 22.514.8 COP", True),
    ("22,514.83", False), ("22.514,83", False), ("1.234.567", False), ("6.034.075", False),
    ("10.03.2015", False), ("10.03.15", False), ("234.947.657-3", False), ("3.5", False), ("+54 9 3502 2399", False),
    ("", False), (None, False)])
def test_implausible_reading_names_numbers_with_one_separator_for_two_jobs(text, doubtful):
    reason = C.implausible_reading(text)
    assert bool(reason) == doubtful
    if doubtful:
        assert "misread" in reason


@pytest.mark.parametrize("text,letter", [
    ("8-IO26-I27I", "I"), ("S3672I86", "S"), ("O8-08-75", "O"), ("2I/09/2005", "I"), ("0Z90933366", "Z"),
    ("Avenida 8 N° 46S2", "S"), ("Tel. 3l0-555-1234", "l"), ("$ 1.2O0.000", "O"),
    # right readings that must pass: Bogotá suffix letters, plates and ids with other letters, words, e-mails
    ("Calle 50R # 3I-85 Sur", None), ("Cl. 4P Sur # 77I-20", None), ("TR. 108S # 70-8 SUR", None),
    ("DIAGONAL 66 # 4S-66", None), ("Z3I-471-VY5", None), ("ZO-507194", None), ("ozamengo65@hotmail.com", None),
    ("9FrstUrBOly3yYq-l3", None), ("Solo 10 sillas", None), ("1O", None), ("21/05/2005", None), ("", None)])
def test_implausible_reading_names_numbers_with_a_digit_read_as_a_letter(text, letter):
    reason = C.implausible_reading(text)
    assert (reason is None) == (letter is None), reason
    if letter:
        assert f"the letter {letter!r} among its digits" in reason

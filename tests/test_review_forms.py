"""dev/make_review_forms.py: forms independent of training, with truth, crops and a manifest."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dev"))

import make_review_forms as M  # noqa: E402
from scripts import synth_data  # noqa: E402


def test_forms_truth_and_crops(tmp_path):
    try:
        fonts = M.eval_fonts()
    except RuntimeError as e:
        pytest.skip(str(e))
    training = {str(p) for p, _ in synth_data.candidate_fonts() if not synth_data.is_held_out(p)}
    assert fonts and not set(fonts) & training  # never a font the training recipe renders
    summary = M.make_forms(tmp_path, 2, seed=3, crops=True, alphabet=M.model_alphabet(ROOT / "models/mlx/default"),
                           show_progress=False)
    assert summary["forms"] == 2 and summary["crops"] == 36
    for name in ("form_000", "form_001"):
        assert Image.open(tmp_path / "scans" / f"{name}.png").size == Image.open(ROOT / "examples/template.png").size
        truth = json.loads((tmp_path / "truth" / f"{name}.json").read_text(encoding="utf-8"))
        assert sorted(map(int, truth)) == list(range(1, 19)) and all(truth.values())
    with open(tmp_path / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and {r["form"] for r in rows} == {"form_000", "form_001"}
    alphabet = set(M.model_alphabet(ROOT / "models/mlx/default")) | {" "}
    for r in rows:
        assert set(r["text"]) <= alphabet
        crop = Image.open(tmp_path / r["image"])
        assert 0 < crop.height <= 70  # one field's inner box, cut down to its ink
    # deterministic from the seed
    again = tmp_path / "again"
    M.make_forms(again, 1, seed=3, show_progress=False)
    assert (again / "truth" / "form_000.json").read_text() == (tmp_path / "truth" / "form_000.json").read_text()

"""examples/make_example_form.py: reproduces the committed example, and the example is usable."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from scripts import alignment, forms
from scripts.preprocessing import preprocess_page
from scripts.synth_data import find_fonts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
import make_example_form as mef  # noqa: E402

pytestmark = pytest.mark.skipif(not find_fonts("handwriting"),
                                reason="no handwriting fonts installed (./setup_mlx.sh --fonts)")
REGENERATE = "committed example is stale: run venv_mlx/bin/python examples/make_example_form.py"


@pytest.fixture(scope="module")
def example():
    return mef.make_example()


def test_script_writes_and_reproduces_the_committed_files(tmp_path):
    assert mef.main(["--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([mef.SCAN_NAME, mef.RAW_NAME, mef.TRUTH_NAME])
    truth = json.loads((tmp_path / mef.TRUTH_NAME).read_text(encoding="utf-8"))
    assert truth == json.loads((EXAMPLES / mef.TRUTH_NAME).read_text(encoding="utf-8")), REGENERATE
    for name in (mef.SCAN_NAME, mef.RAW_NAME):
        new, committed = np.asarray(Image.open(tmp_path / name)), np.asarray(Image.open(EXAMPLES / name))
        assert np.array_equal(new, committed), f"{name}: {REGENERATE}"
    assert sum((EXAMPLES / n).stat().st_size for n in names) < 1_000_000


def test_ground_truth_is_a_filled_bogota_form(example):
    texts = example["texts"]
    assert sorted(texts) == list(range(1, 19))
    assert all(t.strip() for t in texts.values())
    assert texts == mef.FIELD_TEXTS  # the fixed table, independent of the training text generator
    # Another seed gives other handwriting for the same texts.
    other_page, other = mef.fill_form(seed=mef.SEED + 1)
    assert other == texts
    assert not np.array_equal(np.asarray(other_page), np.asarray(mef.fill_form()[0]))


def test_scan_is_binarized_and_every_field_has_ink(example):
    scan = np.asarray(example["scan"])
    assert example["scan"].mode == "L" and set(np.unique(scan)) <= {0, 255}
    page = np.asarray(example["page"].convert("L"))
    regions = forms.find_regions(mef.TEMPLATE)
    for region, crop in zip(regions, forms.crop_regions(Image.fromarray(page), regions)):
        assert (np.asarray(crop) < 128).mean() > 0.005, f"region {region.number} is empty"


def test_example_scan_aligns_within_3px(example):
    """Registration accuracy on handwriting: the colour scan, binarized without deskew so that the
    simulation's own page->scan matrix is the ground truth for every box corner."""
    scan = preprocess_page(example["raw"], deskew=False)
    result = alignment.align_page(scan, mef.TEMPLATE, strict=True)
    assert result.ok and result.method == "structure+ecc"
    regions = forms.find_regions(mef.TEMPLATE)
    worst = 0.0
    for region in regions:
        x, y, w, h = region.bbox
        corners = np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64)
        true = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), example["matrix"]).reshape(-1, 2)
        worst = max(worst, float(np.abs(result.template_to_scan(corners) - true).max()))
    assert worst < 3.0


def test_committed_scan_aligns_onto_the_outlines():
    """The committed page (deskewed by the preprocessor, so no known matrix): after alignment the
    printed outlines lie under the template's outlines in every box."""
    result = alignment.align_page(EXAMPLES / mef.SCAN_NAME, mef.TEMPLATE, strict=True)
    ink = np.asarray(result.aligned) < 128
    outline = np.asarray(forms.structure_image(mef.TEMPLATE)) < 128
    for region in forms.find_regions(mef.TEMPLATE):
        x, y, w, h = region.bbox
        box = (slice(y, y + h), slice(x, x + w))
        assert ink[box][outline[box]].mean() > 0.9, f"region {region.number} outline misses"

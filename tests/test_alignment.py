"""alignment.py on scans it was not tuned on: a slice of the benchmark sweep (dev/form_scans.py draws
the forms independently of the pipeline), the plausibility and verification checks, off-page boxes,
the reference fallback, and pages that cannot be aligned."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dev import benchmark_alignment as bench
from dev import form_scans as fs
from scripts import alignment, forms

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = ROOT / "examples" / "template.png"


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return bench.Templates(tmp_path_factory.mktemp("align_templates"))


# ---- the test set itself ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["square", "rounded"])
def test_generated_truth_puts_the_printed_outlines_on_the_template_boxes(name):
    """The benchmark is only as good as its truth: warped back by the recorded matrix, a scan's
    printed outlines lie on the template's boxes (the generator's own box list, not the pipeline's)."""
    spec = fs.template_for(name)
    scan = fs.make_scan(spec, seed=7, outlines=True, binarized=True)

    def on_line(matrix):
        back = cv2.warpPerspective(np.asarray(scan.image), matrix, spec.size,
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=255)
        ink = back < 128
        hits = []
        for number, (x, y, w, h) in enumerate(spec.boxes, start=1):
            if number not in scan.params["off_page_boxes"]:
                mid = x + w // 2
                hits.append(ink[y:y + 2, mid - 20:mid + 20].any(axis=0).mean())  # the top edge
        return float(np.mean(hits))

    assert on_line(scan.matrix) > 0.9
    assert on_line(scan.matrix @ np.array([[1, 0, 0], [0, 1, 5], [0, 0, 1.0]])) < 0.5  # 5 px off: paper
    # the pipeline finds the same boxes on the template (within a pixel)
    found = sorted((r.bbox for r in forms.find_regions(spec.image)), key=lambda b: (b[1], b[0]))
    assert len(found) == len(spec.boxes)
    assert np.abs(np.subtract(found, spec.boxes)).max() <= 1


# ---- a slice of the benchmark sweep -----------------------------------------------------------

@pytest.mark.parametrize("condition", fs.CONDITIONS, ids=[fs.condition_name(*c) for c in fs.CONDITIONS])
def test_sweep_slice_every_page_aligned_or_reported(templates, condition):
    records = [bench.run_condition(templates, condition, seed) for seed in (500, 501, 502)]
    for r in records:
        assert r["verdict"] != "WRONG", r  # never wrong and called ok
    assert sum(r["verdict"] == "aligned" for r in records) >= 2, records


@pytest.mark.parametrize("kind", bench.CONTROLS)
def test_controls_are_reported_failed(templates, kind):
    """Forms registered against the other template, pages fed upside down, and forms whose red boxes
    the binarization dropped: nothing to align to, and the aligner says so."""
    for template in ("square", "rounded"):
        r = bench.run_control(templates, kind, template, seed=600)
        assert r["verdict"] == "failed" and r["reasons"], r


# ---- plausibility and verification ------------------------------------------------------------

def test_plausibility_refuses_shear_anisotropy_rotation_and_perspective():
    config = alignment.AlignConfig()
    good = forms.similarity_matrix(2.0, 1.03, (20, -15), center=(900, 260))
    assert alignment.implausible(good, 1.0, (1852, 528), (1852, 528), config) == []
    shear = good @ np.array([[1, 0.05, 0], [0, 1, 0], [0, 0, 1.0]])
    assert any("shear" in p for p in alignment.implausible(shear, 1.0, (1852, 528), (1852, 528), config))
    stretch = good @ np.diag([1.0, 1.05, 1.0])
    assert any("x and y" in p for p in alignment.implausible(stretch, 1.0, (1852, 528), (1852, 528), config))
    turned = forms.similarity_matrix(8.0, 1.0, (0, 0), center=(900, 260))
    assert any("rotation" in p for p in alignment.implausible(turned, 1.0, (1852, 528), (1852, 528), config))
    tilted = good.copy()
    tilted[2, 0] = 1e-5
    assert any("perspective" in p for p in alignment.implausible(tilted, 1.0, (1852, 528), (1852, 528), config))
    # the scale is judged against the size guess (a 300 dpi scan of a 200 dpi template: 1.5)
    assert alignment.implausible(good @ np.diag([1.5, 1.5, 1]), 1.5, (1852, 528), (2778, 792), config) == []


def test_a_sheared_scan_is_refused(templates):
    """A page sheared by 3 degrees (no scanner does that) is not passed off as aligned."""
    spec = templates.specs["square"]
    scan = fs.make_scan(spec, seed=3, outlines=True, binarized=False, transform=(0.5, 1.0, (5, 5)), dpi=200)
    shear = np.array([[1, np.tan(np.radians(3)), -15], [0, 1, 0], [0, 0, 1.0]])
    sheared = cv2.warpPerspective(np.asarray(scan.image), shear, spec.size, borderValue=255)
    with pytest.warns(UserWarning, match="could not align"):
        result = alignment.align_page(sheared, templates.paths["square"])
    assert not result.ok and result.reasons
    with pytest.raises(alignment.AlignmentError, match="could not align"):
        alignment.align_page(sheared, templates.paths["square"], strict=True)


@pytest.mark.parametrize("error", [
    ("shift", (0, 4.0)),
    ("shift", (3.5, 0)),
    ("rotation", 0.3),  # about 4 px at the far ends of the 1852 px template
    ("scale", 1.006),
])
def test_verification_rejects_a_transform_a_few_pixels_off(templates, error):
    """Given the true matrix the page verifies; displaced by 3.5-4 px (or turned/scaled as much at
    the corners), the same page does not. This is the check that keeps wrong pages from being ok."""
    spec = templates.specs["square"]
    scan = fs.make_scan(spec, seed=11, outlines=False, binarized=True, dpi=200)
    gray = np.asarray(scan.image)
    regions = forms.find_regions(templates.paths["square"])
    mask = forms.red_mask(np.asarray(Image.open(templates.paths["square"]).convert("RGB")))
    px = gray.shape[1] / mask.shape[1]
    ink = alignment.ink_map(gray, px)
    config = alignment.AlignConfig()

    def reasons(matrix):
        samples = alignment.measure_edges(alignment._warp_to_template(ink, matrix, spec.size), mask, regions,
                                          matrix, (gray.shape[1], gray.shape[0]))
        return alignment.verify(samples, matrix, regions, config)[1]

    assert reasons(scan.matrix) == []
    kind, value = error  # a displacement of the scan, in scan pixels
    centre = (gray.shape[1] / 2, gray.shape[0] / 2)
    if kind == "shift":
        off = np.array([[1, 0, value[0]], [0, 1, value[1]], [0, 0, 1.0]])
    elif kind == "rotation":
        off = forms.similarity_matrix(value, 1.0, (0, 0), center=centre)
    else:
        off = forms.similarity_matrix(0.0, value, (0, 0), center=centre)
    wrong = off @ scan.matrix
    assert fs.corner_error(wrong, scan.matrix, spec.boxes) > 3
    assert reasons(wrong), "a transform more than 3 px off was verified"


# ---- off-page boxes, reference, pages without structure -----------------------------------------

def test_visible_fraction_of_boxes_cut_by_the_scan():
    matrix = np.array([[1, 0, 50], [0, 1, 0], [0, 0, 1.0]])  # page moved 50 px right
    assert alignment.visible_fraction(matrix, (100, 10, 200, 40), (400, 100)) == pytest.approx(1.0)
    assert alignment.visible_fraction(matrix, (250, 10, 200, 40), (400, 100)) == pytest.approx(100 / 200)
    assert alignment.visible_fraction(matrix, (400, 10, 100, 40), (400, 100)) == 0.0


def test_page_with_boxes_off_the_scan_aligns_and_reports_them(templates):
    spec = templates.specs["rounded"]
    scan = fs.make_scan(spec, seed=21, outlines=True, binarized=True, transform=(1.5, 1.02, (30, 25)), dpi=200)
    assert scan.params["off_page_boxes"], "the test page must cut a box"
    result = alignment.align_page(scan.image, templates.paths["rounded"])
    assert result.ok and fs.corner_error(result.matrix, scan.matrix, scan.boxes) < 3
    regions = forms.find_regions(templates.paths["rounded"])
    cut = [r.number for r in regions if alignment.visible_fraction(result.matrix, r.bbox, result.scan_size) < 0.999]
    truth = [r.number for r in regions
             if any(np.abs(np.subtract(r.bbox, spec.boxes[i - 1])).max() <= 1 for i in scan.params["off_page_boxes"])]
    assert cut == truth


def test_reference_registers_a_form_whose_boxes_dropped_out(templates):
    """Faint red boxes lost to binarization: the box structure cannot be verified, but a blank
    scan of the same form (title, labels) registers the page."""
    spec = bench.dropout_template(templates.specs["square"])
    scan = fs.make_scan(spec, seed=4, outlines=False, binarized=True, dpi=200)
    with pytest.warns(UserWarning):
        alone = alignment.align_page(scan.image, templates.paths["square"])
    assert not alone.ok
    reference = fs.blank_form(spec, seed=4, outlines=False, binarized=True)
    result = alignment.align_page(scan.image, templates.paths["square"], reference=reference, strict=True)
    assert result.ok and result.method == "reference-orb"
    assert fs.corner_error(result.matrix, scan.matrix, scan.boxes) < 3
    # a blank scan of another form does not vouch for the page
    other = fs.blank_form(templates.specs["rounded"], seed=4, outlines=True, binarized=False)
    with pytest.warns(UserWarning):
        assert not alignment.align_page(scan.image, templates.paths["square"], reference=other).ok


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_unalignable_scan_errors_when_strict_and_warns_otherwise(kind):
    rng = np.random.default_rng(0)
    w, h = 1852, 528
    scan = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255 if kind == "noise" else np.full((h, w), 255, np.uint8)
    with pytest.raises(alignment.AlignmentError, match="could not align"):
        alignment.align_page(scan, TEMPLATE, strict=True)
    with pytest.warns(UserWarning, match="could not align.*not trustworthy"):
        result = alignment.align_page(scan, TEMPLATE)
    assert not result.ok and result.reasons and result.score < 0.5
    if kind == "blank":
        assert result.method == "identity"
        np.testing.assert_allclose(result.matrix, np.eye(3))


def test_alignment_error_names_the_scan_file(tmp_path):
    path = tmp_path / "blank_scan.png"
    Image.new("L", (1852, 528), 255).save(path)
    with pytest.raises(alignment.AlignmentError, match=r"blank_scan\.png.*blank"):
        alignment.align_page(path, TEMPLATE, strict=True)


def test_aligned_crops_hold_the_field_and_not_the_outline(templates):
    spec = templates.specs["square"]
    scan = fs.make_scan(spec, seed=8, outlines=True, binarized=True, transform=(-1.5, 1.03, (20, -15)), dpi=300)
    result = alignment.align_page(scan.image, templates.paths["square"], strict=True)
    assert result.aligned.size == spec.size and result.aligned.mode == "L"
    regions = forms.find_regions(templates.paths["square"])
    for region, crop in zip(regions, forms.crop_regions(result.aligned, regions)):
        ink = np.asarray(crop) < 128
        if alignment.visible_fraction(result.matrix, region.bbox, result.scan_size) < 1:
            continue
        assert ink.mean() > 0.005, f"region {region.number}: its text was not cropped"
        for edge in (ink[0], ink[-1], ink[:, 0], ink[:, -1]):
            assert edge.mean() < 0.3, f"region {region.number}: crop edge is a line"

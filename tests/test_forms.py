"""forms.py: red boxes from the real template, registration of simulated scans, crops and drawing."""

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from scripts import forms
from scripts.preprocessing import binarize_otsu

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "template.png"
SIZE = (1852, 528)


@pytest.fixture(scope="module")
def regions():
    return forms.find_regions(TEMPLATE)


@pytest.fixture(scope="module")
def filled_page(regions):
    """The form as printed and filled in: outlines black, a printed header (not in the template: it
    must not mislead registration), dark text in every box (gray array)."""
    page = forms.structure_image(TEMPLATE)
    draw = ImageDraw.Draw(page)
    draw.text((130, 60), "SECRETARÍA DISTRITAL DE HACIENDA · BOGOTÁ D.C.", fill=0, font=forms.load_font(30))
    font = forms.load_font(22)
    words = ["María José Gómez", "12.345.678", "Cra 7 # 45-10", "3104567890", "15/03/2024", "$ 1.250.000"]
    for region in regions:
        x, y, w, h = region.inner
        text = words[region.number % len(words)]
        while draw.textlength(text, font=font) > w - 10 and len(text) > 3:
            text = text[:-1]
        draw.text((x + 5, y + (h - 22) // 2), text, fill=30, font=font)
    return np.asarray(page)


def simulate_scan(page: np.ndarray, angle: float, shift, scale: float, out_size=SIZE, center=None):
    """Rotate/scale/shift a page (about its centre by default) as a scanner would, blur a little and
    binarize; returns the scan and the true template->scan matrix."""
    w, h = SIZE
    matrix = forms.similarity_matrix(angle, scale, shift, center=center or (w / 2, h / 2))
    scan = cv2.warpPerspective(page, matrix, out_size, flags=cv2.INTER_LINEAR, borderValue=255)
    scan = cv2.GaussianBlur(scan, (3, 3), 0)
    return binarize_otsu(scan), matrix


def corner_error(alignment, truth, regions) -> float:
    """Largest distance, over all box corners, between where the estimated and the true transform
    put a template corner in the scan."""
    worst = 0.0
    for region in regions:
        x, y, w, h = region.bbox
        corners = np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64)
        true = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), truth).reshape(-1, 2)
        worst = max(worst, float(np.abs(alignment.template_to_scan(corners) - true).max()))
    return worst


# ---- regions ----------------------------------------------------------------------------------

def test_real_template_has_18_boxes_in_reading_order(regions):
    assert len(regions) == 18
    assert [r.number for r in regions] == list(range(1, 19))
    assert forms.row_structure(regions) == [1, 4, 4, 3, 5, 1]
    for a, b in zip(regions, regions[1:]):
        if a.row == b.row:
            assert b.bbox[0] > a.bbox[0] + a.bbox[2] - 1, "left to right within a row"
        else:
            assert b.row == a.row + 1
            assert b.bbox[1] + b.bbox[3] / 2 > a.bbox[1] + a.bbox[3] / 2, "rows top to bottom"
    # Known first and last boxes (outer edges, template pixels).
    assert regions[0].bbox == (1034, 198, 339, 75)
    assert regions[-1].bbox == (1473, 477, 376, 47)
    assert all(r.line_width == pytest.approx(2, abs=0.5) for r in regions)


def test_inner_crop_box_excludes_the_red_line(regions):
    rgb = np.asarray(Image.open(TEMPLATE).convert("RGBA"))
    alpha = rgb[:, :, 3]
    for r in regions:
        x, y, w, h = r.inner
        ox, oy, ow, oh = r.bbox
        assert ox < x and oy < y and x + w < ox + ow and y + h < oy + oh
        assert not alpha[y:y + h, x:x + w].any(), f"region {r.number} crop contains outline pixels"
        # ...but the inner box is not needlessly small: at most line + margin + 1 px in from the edge.
        assert x - ox <= r.line_width + forms.RegionConfig().inner_margin + 1


def _draw_template(path, boxes, radius, alpha=128):
    """RGBA template like the real one: semi-transparent red outlines on a transparent page, drawn at
    4x and downsampled so edges and rounded corners are anti-aliased."""
    big = Image.new("RGBA", (800 * 4, 300 * 4), (0, 0, 0, 0))
    draw = ImageDraw.Draw(big)
    for x, y, w, h in boxes:
        draw.rounded_rectangle((x * 4, y * 4, (x + w) * 4 - 1, (y + h) * 4 - 1), radius=radius * 4,
                               outline=(253, 38, 0, alpha), width=8)
    big.resize((800, 300), Image.LANCZOS).save(path)


def test_rounded_antialiased_boxes_and_staggered_rows(tmp_path):
    # Second row is staggered by a few pixels, as hand-made templates are; the filled red square and
    # the speck are not fields.
    boxes = [(400, 20, 200, 50), (30, 100, 300, 40), (340, 104, 150, 44), (500, 98, 260, 40),
             (30, 180, 340, 60), (390, 185, 370, 50)]
    path = tmp_path / "rounded.png"
    _draw_template(path, boxes, radius=10)
    img = Image.open(path)
    ImageDraw.Draw(img).rectangle((20, 260, 60, 290), fill=(253, 38, 0, 255))
    ImageDraw.Draw(img).rectangle((700, 270, 702, 272), fill=(253, 38, 0, 255))
    img.save(path)
    found = forms.find_regions(path)
    assert forms.row_structure(found) == [1, 3, 2]
    for region, (x, y, w, h) in zip(found, boxes):
        assert np.abs(np.subtract(region.bbox, (x, y, w, h))).max() <= 1, (region, (x, y, w, h))


def test_template_without_red_names_the_file(tmp_path):
    path = tmp_path / "plain_form.png"
    img = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(img).rectangle((20, 20, 200, 80), outline="black", width=2)  # a box, but not red
    img.save(path)
    with pytest.raises(forms.TemplateError, match=r"plain_form\.png.*no red"):
        forms.find_regions(path)


def test_red_but_no_box_passing_filters_names_the_file(tmp_path):
    path = tmp_path / "specks.png"
    img = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(img).rectangle((10, 10, 13, 13), fill=(255, 0, 0))
    img.save(path)
    with pytest.raises(forms.TemplateError, match=r"specks\.png.*size filters"):
        forms.find_regions(path)


# ---- alignment --------------------------------------------------------------------------------

@pytest.mark.parametrize("angle, shift, scale", [
    (0.0, (0, 0), 1.0),
    (2.0, (30, -30), 1.05),
    (-2.0, (-30, -30), 1.05),  # the hardest corner: rows one box off are a false optimum
    (-1.3, (18, 25), 0.95),
    (0.7, (-25, 12), 0.97),
])
def test_binarized_scan_aligns_within_3px(filled_page, regions, angle, shift, scale):
    scan, truth = simulate_scan(filled_page, angle, shift, scale)
    assert set(np.unique(scan)) <= {0, 255}
    alignment = forms.align_page(scan, TEMPLATE, strict=True)
    assert alignment.ok and alignment.method == "ecc-affine"
    assert alignment.score > 0.5
    assert corner_error(alignment, truth, regions) < 3.0
    assert alignment.aligned.size == SIZE and alignment.aligned.mode == "L"


def test_scan_at_other_resolution_aligns_in_template_coordinates(filled_page, regions):
    # Scanned at 1.5x the template's resolution: the page's origin stays near the scan's origin.
    scan, truth = simulate_scan(filled_page, 1.0, (10, -20), 1.5, out_size=(int(SIZE[0] * 1.5), int(SIZE[1] * 1.5)),
                                center=(0, 0))
    alignment = forms.align_page(Image.fromarray(scan), TEMPLATE, strict=True)
    assert corner_error(alignment, truth, regions) < 3.0
    assert alignment.aligned.size == SIZE


def test_aligned_crops_hold_the_field_and_not_the_outline(filled_page, regions):
    scan, _ = simulate_scan(filled_page, -1.5, (20, -15), 1.03)
    alignment = forms.align_page(scan, TEMPLATE, strict=True)
    crops = forms.crop_regions(alignment.aligned, regions)
    assert len(crops) == 18
    for region, crop in zip(regions, crops):
        assert crop.size == region.inner[2:]
        ink = np.asarray(crop) < 128
        assert ink.mean() > 0.01, f"region {region.number}: its text was not cropped"
        # No outline: the crop's edge rows/columns are paper, not a line.
        for edge in (ink[0], ink[-1], ink[:, 0], ink[:, -1]):
            assert edge.mean() < 0.3, f"region {region.number}: crop edge is a line"


def test_orb_registers_against_a_textured_reference(filled_page, regions):
    # A blank-form scan with printed text everywhere: what a user passes as `reference`.
    reference = Image.fromarray(filled_page)
    draw = ImageDraw.Draw(reference)
    font = forms.load_font(16)
    rng = np.random.default_rng(3)
    words = "Secretaría Distrital Hacienda Bogotá formulario nombre cédula dirección teléfono fecha".split()
    for _ in range(25):
        draw.text((int(rng.integers(0, 1550)), int(rng.integers(0, 185))), " ".join(rng.choice(words, 4)),
                  fill=0, font=font)
    scan, truth = simulate_scan(np.asarray(reference), 1.5, (25, -20), 1.03)
    alignment = forms.align_page(scan, TEMPLATE, reference=reference,
                                 config=forms.AlignConfig(methods=("orb",)), strict=True)
    assert alignment.method == "orb-homography"
    assert corner_error(alignment, truth, regions) < 3.0


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_unalignable_scan_errors_when_strict_and_warns_otherwise(kind):
    rng = np.random.default_rng(0)
    w, h = SIZE
    scan = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255 if kind == "noise" else np.full((h, w), 255, np.uint8)
    with pytest.raises(forms.AlignmentError, match="could not align"):
        forms.align_page(scan, TEMPLATE, strict=True)
    with pytest.warns(UserWarning, match="could not align.*unaligned page"):
        alignment = forms.align_page(scan, TEMPLATE)
    assert not alignment.ok and alignment.method == "identity"
    np.testing.assert_allclose(alignment.matrix, np.eye(3))


def test_alignment_error_names_the_scan_file(tmp_path):
    path = tmp_path / "blank_scan.png"
    Image.new("L", SIZE, 255).save(path)
    with pytest.raises(forms.AlignmentError, match=r"blank_scan\.png.*blank"):
        forms.align_page(path, TEMPLATE, strict=True)


# ---- drawing ----------------------------------------------------------------------------------

def test_guides_crops_and_annotations(filled_page, regions, tmp_path):
    page = Image.fromarray(filled_page)
    guided = np.asarray(forms.draw_guides(page, regions))
    x, y, w, h = regions[0].bbox
    assert tuple(guided[y + h // 2, x]) == (255, 0, 0)

    paths = forms.save_region_crops(forms.crop_regions(page, regions), regions, tmp_path / "crops")
    assert [p.name for p in paths] == [f"region_{n:02d}.png" for n in range(1, 19)]
    assert Image.open(paths[4]).size == regions[4].inner[2:]
    with pytest.raises(ValueError, match="3 crops for 18 regions"):
        forms.save_region_crops([page] * 3, regions, tmp_path)

    texts = {r.number: f"campo {r.number} Ñandú" for r in regions}
    annotated = forms.draw_annotations(page, regions, texts)
    unlabelled = forms.draw_annotations(page, regions, {})
    assert annotated.size == (SIZE[0], 2 * SIZE[1])
    top, bottom = np.asarray(annotated)[:SIZE[1]], np.asarray(annotated)[SIZE[1]:]
    # On top the scan with its guides, which the labels leave untouched.
    np.testing.assert_array_equal(top, np.asarray(forms.draw_guides(page, regions, color=(0, 90, 200))))
    x, y, w, h = regions[1].inner
    # The recognised text adds ink inside its box in the transcription panel, and only there.
    label_ink = (bottom != np.asarray(unlabelled)[SIZE[1]:]).any(axis=2)
    assert label_ink[y:y + h, x:x + w].sum() > 50
    outside = np.ones(SIZE[::-1], bool)
    for r in regions:
        bx, by, bw, bh = r.bbox
        outside[by:by + bh, bx:bx + bw] = False
    assert not label_ink[outside].any()


def test_trim_to_ink_keeps_the_writing_and_drops_specks_and_space():
    from PIL import ImageDraw

    img = Image.new("L", (400, 60), 255)
    draw = ImageDraw.Draw(img)
    draw.rectangle((100, 20, 179, 39), fill=0)  # the "writing": 80 x 20
    draw.point((5, 5), fill=0)  # a 1-pixel speck, ignored
    trimmed = forms.trim_to_ink(img)
    margin = round(0.15 * 20) + 2
    assert trimmed.size == (80 + 2 * margin, 20 + 2 * margin)
    blank = Image.new("L", (50, 20), 255)
    assert forms.trim_to_ink(blank).size == blank.size

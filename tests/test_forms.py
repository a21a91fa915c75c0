"""forms.py: red boxes from the real template, crops and drawing (registration: test_alignment.py)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scripts import forms

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

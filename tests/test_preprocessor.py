"""scripts/preprocessing.py and its CLI ocr_preprocessor_handler.py: every input mode and format, the three binarizations, deskew, CLI."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import ocr_preprocessor_handler as cli
from scripts import preprocessing as pp
from scripts.forms import load_font
from scripts.image_io import ImageReadError

W, H = 900, 400


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    """A gray text page with ruled lines: ink 20, paper 235."""
    img = Image.new("L", (W, H), 235)
    draw = ImageDraw.Draw(img)
    font = load_font(26)
    for i, line in enumerate(["Nombre: José Ñúñez Pérez", "Cédula: 1.020.345.678", "Dirección: Cra 7 # 45-10",
                              "Teléfono: 310 456 7890", "Fecha: 15/03/2024"]):
        y = 30 + i * 70
        draw.text((40, y), line, fill=20, font=font)
        draw.line((30, y + 45, W - 30, y + 45), fill=20, width=2)
    return np.asarray(img)


def ink(binary) -> np.ndarray:
    return np.asarray(binary) == 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def as_mode(gray: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(gray)
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)
    if mode == "RGBA":
        # Paper fully transparent: image_io composites it on white, ink stays opaque.
        rgba = np.dstack([np.repeat(gray[:, :, None], 3, 2), np.where(gray < 128, 255, 0).astype(np.uint8)])
        return Image.fromarray(rgba, "RGBA")
    return img.convert(mode)


CASES = [("png", "L"), ("png", "RGB"), ("png", "RGBA"), ("png", "I;16"), ("jpg", "L"), ("jpg", "RGB"),
         ("jpg", "CMYK"), ("tif", "RGB"), ("tif", "I;16"), ("tif", "CMYK"), ("bmp", "RGB"), ("webp", "RGB"),
         ("webp", "RGBA")]


@pytest.mark.parametrize("ext, mode", CASES)
def test_every_format_and_mode_gives_the_same_binary_page(page, tmp_path, ext, mode):
    path = tmp_path / f"page_{mode.replace(';', '')}.{ext}"
    as_mode(page, mode).save(path, **({"quality": 92} if ext in ("jpg", "webp") else {}))
    out = pp.preprocess_page(path, method="otsu", deskew=False)
    assert out.mode == "L" and out.size == (W, H)
    arr = np.asarray(out)
    assert set(np.unique(arr)) <= {0, 255}
    assert iou(ink(arr), page < 128) > 0.85


@pytest.mark.parametrize("method", pp.METHODS)
def test_each_method_recovers_the_ink_on_an_even_page(page, method):
    out = pp.preprocess_page(Image.fromarray(page), method=method, deskew=False)
    assert set(np.unique(np.asarray(out))) <= {0, 255}
    assert iou(ink(out), page < 128) > 0.8


def test_local_methods_survive_uneven_lighting_where_otsu_fails(page):
    # A shadow across the page: paper goes from 235 down to ~60, ink is always darker than its paper.
    shade = np.linspace(1.0, 0.25, W)[None, :]
    shaded = (page.astype(np.float64) * shade).astype(np.uint8)
    truth = page < 128
    paper = ~truth
    results = {m: ink(pp.binarize(shaded, m)) for m in pp.METHODS}
    assert results["otsu"][paper].mean() > 0.15  # the shadow itself turns black
    for method in ("adaptive", "sauvola"):
        assert results[method][paper].mean() < 0.03, method
        assert results[method][truth].mean() > 0.6, method


def test_unknown_method_is_rejected(page):
    with pytest.raises(ValueError, match="unknown binarization method 'magic'"):
        pp.preprocess_page(Image.fromarray(page), method="magic")


@pytest.mark.parametrize("angle", [-2.0, 1.5, 3.0])
def test_deskew_recovers_a_known_rotation(page, angle):
    rotated = pp.rotate(page, angle)
    assert pp.estimate_skew(rotated) == pytest.approx(angle, abs=0.2)
    levelled, removed = pp.deskew_image(rotated)
    assert removed == pytest.approx(angle, abs=0.2)
    # The levelled page matches the original far better than the tilted one did.
    truth = page < 128
    assert iou(levelled < 128, truth) > iou(rotated < 128, truth) + 0.2


def test_level_page_is_left_alone(page):
    assert pp.estimate_skew(page) == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("sigma", [15, 30])
def test_noise_is_measured_and_denoise_removes_speckle(page, sigma):
    rng = np.random.default_rng(0)
    noisy = np.clip(page.astype(np.int16) + rng.normal(0, sigma, page.shape), 0, 255).astype(np.uint8)
    assert pp.estimate_noise(noisy) == pytest.approx(sigma, rel=0.3)
    assert pp.estimate_noise(page) < 5
    paper, truth = page > 128, page < 128
    for method in ("adaptive", "sauvola"):
        plain = ink(pp.preprocess_page(Image.fromarray(noisy), method=method, deskew=False))
        cleaned = ink(pp.preprocess_page(Image.fromarray(noisy), method=method, deskew=False, denoise=True))
        assert cleaned[paper].mean() < max(plain[paper].mean() / 3, 0.01), method
        assert cleaned[truth].mean() > 0.9, method


def test_unreadable_input_names_the_file(tmp_path):
    bad = tmp_path / "scan_042.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageReadError, match=r"scan_042\.jpg"):
        pp.preprocess_page(bad)


def test_cli_folder_multipage_and_errors(page, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(page).save(src / "one.png")
    frames = [Image.fromarray(page), Image.fromarray(pp.rotate(page, 2.0))]
    frames[0].save(src / "two.tif", save_all=True, append_images=frames[1:])
    (src / "notes.txt").write_text("not an image, skipped")
    assert cli.main(["-i", str(src), "-o", str(tmp_path / "out"), "--method", "adaptive"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["one.png", "two_p1.png", "two_p2.png"]
    second = np.asarray(Image.open(tmp_path / "out" / "two_p2.png"))
    assert iou(second == 0, page < 128) > 0.6  # deskewed by default

    assert cli.main(["-i", str(src / "one.png"), "-o", str(tmp_path / "single.png"), "--no-deskew"]) == 0
    assert Image.open(tmp_path / "single.png").mode == "L"

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert cli.main(["-i", str(tmp_path / "broken.png"), "-o", str(tmp_path / "x.png")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_help_lists_the_methods(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(m in text for m in pp.METHODS) and "--denoise" in text and "--no-deskew" in text

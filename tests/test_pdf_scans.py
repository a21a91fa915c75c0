"""PDF scans: every page of a PDF is a page to the form handlers, a row to the batch processor and an
input to the preprocessor; a corrupt PDF is a clear error naming the file (one failed entry, no crash).

The two-page PDF is written here with Pillow's PDF writer from the bundled example scan: page 1 is the
scan, page 2 the same scan with fields 1-6 whited out, so each page's results can be told apart.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ocr_inference_handler as pt_handler
import ocr_inference_handler_mlx as mlx_handler
import ocr_preprocessor_handler as pre_handler
from scripts import alignment, forms
from scripts.image_io import IMAGE_EXTENSIONS, ImageReadError, count_pages, iter_pages, load_image
from scripts.mlx_batch_processor import MLXBatchProcessor, read_results_csv
from scripts.mlx_batch_processor import main as batch_main

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "template.png"
SCAN = ROOT / "examples" / "filled_form_scan.png"
ERASED = range(1, 7)  # the fields whited out on page 2
MAX_LENGTH = 10


def write_pdf(path: Path, pages, dpi: int = 200) -> Path:
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=dpi)
    return path


@pytest.fixture(scope="module")
def pdf_pages():
    scan = Image.open(SCAN).convert("L")
    second = scan.copy()
    to_scan = alignment.align_page(scan, TEMPLATE, strict=True).matrix  # template -> scan pixels: erase in the scan's frame
    for region in forms.find_regions(TEMPLATE):
        if region.number in ERASED:
            x, y, w, h = region.inner
            corners = np.array([[x + 4, y + 4, 1], [x + w - 4, y + h - 4, 1]], dtype=np.float64) @ to_scan.T
            (x0, y0), (x1, y1) = (corners[:, :2] / corners[:, 2:]).round().astype(int)
            second.paste(255, (x0, y0, x1, y1))
    return [scan, second]


@pytest.fixture(scope="module")
def scans(pdf_pages, tmp_path_factory):
    """form.pdf (2 pages), corrupt.pdf (a PDF header and garbage), truncated.pdf (the first half of form.pdf)."""
    d = tmp_path_factory.mktemp("pdf_scans")
    pdf = write_pdf(d / "form.pdf", pdf_pages)
    (d / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    (d / "truncated.pdf").write_bytes(pdf.read_bytes()[: pdf.stat().st_size // 2])
    return d


def common_flags(out: Path, image: Path) -> list:
    return ["--template", str(TEMPLATE), "--image", str(image), "--output-dir", str(out),
            "--max-length", str(MAX_LENGTH), "--batch-size", "8", "--no-progress"]


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text(encoding="utf-8"))


def test_image_io_reads_every_page_at_the_stated_dpi(scans, pdf_pages):
    pdf = scans / "form.pdf"
    assert ".pdf" in IMAGE_EXTENSIONS and count_pages(pdf) == 2
    pages = list(iter_pages(pdf, mode="L"))
    assert len(pages) == 2
    for page, original in zip(pages, pdf_pages):  # written at 200 dpi, rendered at 200 dpi (the default)
        assert abs(page.width - original.width) <= 1 and abs(page.height - original.height) <= 1
        a = np.asarray(page.resize(original.size), dtype=np.float32)
        assert np.abs(a - np.asarray(original, dtype=np.float32)).mean() < 8  # the same picture (JPEG in the PDF)
    assert load_image(pdf, mode="L", page=2).info["dpi"] == (200, 200)
    half = load_image(pdf, page=2, dpi=100)
    assert half.mode == "RGB" and abs(half.width - pdf_pages[0].width / 2) <= 1
    assert not np.array_equal(np.asarray(pages[0]), np.asarray(pages[1]))
    with pytest.raises(ImageReadError, match=r"form\.pdf: no page 3 \(the file has 2\)"):
        load_image(pdf, page=3)
    # found by its header whatever its name
    renamed = scans / "scan_without_extension"
    renamed.write_bytes(pdf.read_bytes())
    assert count_pages(renamed) == 2


@pytest.mark.parametrize("name", ["corrupt.pdf", "truncated.pdf"])
def test_corrupt_pdf_names_the_file(scans, name):
    with pytest.raises(ImageReadError, match=rf"{name}: not a readable PDF \(.+\)"):
        load_image(scans / name)


def test_handler_gives_one_page_of_results_per_pdf_page(models_for_pdf, scans, tmp_path, capsys):
    """Both handlers on the two-page PDF: two pages of results, in the same order as the PDF, each the
    same as the handler gives for that page rendered to a PNG, and the same texts from both engines."""
    mlx_dir, hf = models_for_pdf
    out = tmp_path / "mlx"
    assert mlx_handler.main(common_flags(out, scans / "form.pdf") + ["--base-model", str(mlx_dir)]) == 0
    assert "2 pages against" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["form_p1", "form_p2"]
    pages = [results(out / f"form_p{k}") for k in (1, 2)]
    for k, record in enumerate(pages, 1):
        assert (record["scan"], record["page"], record["pages"]) == (str(scans / "form.pdf"), k, 2)
        assert record["num_regions"] == 18 and record["alignment"]["ok"] and record["settings"]["pdf_dpi"] == 200
        for f in ("guided_image.png", "annotated_page.png", "extracted_texts.txt", "results.csv"):
            assert (out / f"form_p{k}" / f).is_file()
    # page 2 is page 1 with fields 1-6 erased: its crops of them hold no ink, page 1's do
    for n in ERASED:
        ink = [(np.asarray(Image.open(out / f"form_p{k}" / "regions" / f"region_{n:02d}.png").convert("L")) < 128).sum()
               for k in (1, 2)]
        assert ink[0] > 200 and ink[1] < 0.01 * ink[0], (n, ink)  # (JPEG ringing at the edges)
    texts = [{r["region"]: r["text"] for r in record["regions"]} for record in pages]

    for k in (1, 2):  # the page of the PDF, as a PNG, through the same handler
        png = tmp_path / f"page{k}.png"
        load_image(scans / "form.pdf", mode="L", page=k).save(png)
        assert mlx_handler.main(common_flags(tmp_path / f"png{k}", png) + ["--base-model", str(mlx_dir), "-q"]) == 0
        assert [r["text"] for r in results(tmp_path / f"png{k}")["regions"]] == list(texts[k - 1].values())

    with open(out / "combined_results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["page"], r["region"]) for r in rows] == [(str(k), str(n)) for k in (1, 2) for n in range(1, 19)]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [(e["page"], e["status"]) for e in summary["scans"]] == [(1, "ok"), (2, "ok")]

    torch_out = tmp_path / "pytorch"
    assert pt_handler.main(common_flags(torch_out, scans / "form.pdf") + ["--base-model", str(hf), "-q"]) == 0
    for k in (1, 2):
        assert [r["text"] for r in results(torch_out / f"form_p{k}")["regions"]] == list(texts[k - 1].values())


def test_directory_mode_reads_pdfs_and_fails_a_corrupt_one_alone(models_for_pdf, scans, tmp_path, capsys):
    mlx_dir, _ = models_for_pdf
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "form.pdf").write_bytes((scans / "form.pdf").read_bytes())
    (folder / "corrupt.pdf").write_bytes((scans / "corrupt.pdf").read_bytes())
    Image.open(SCAN).save(folder / "single.png")
    out = tmp_path / "out"
    assert mlx_handler.main(common_flags(out, folder) + ["--base-model", str(mlx_dir)]) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["form_p1", "form_p2", "single"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["ok"], summary["failed"]) == (3, 1)
    (failed,) = [e for e in summary["scans"] if e["status"] == "failed"]
    assert failed["scan"] == str(folder / "corrupt.pdf")
    assert failed["error"].startswith(f"{folder / 'corrupt.pdf'}: not a readable PDF")
    assert f"FAILED   {folder / 'corrupt.pdf'}: not a readable PDF" in capsys.readouterr().out
    with open(out / "combined_results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 18 + 1
    single = results(out / "single")
    assert (single["page"], single["pages"]) == (None, 1)
    assert [r["text"] for r in single["regions"]] != [r["text"] for r in results(out / "form_p2")["regions"]]


def test_a_corrupt_pdf_given_as_the_scan_is_an_error_naming_it(models_for_pdf, scans, tmp_path, capsys):
    mlx_dir, _ = models_for_pdf
    assert mlx_handler.main(common_flags(tmp_path / "out", scans / "corrupt.pdf") + ["--base-model", str(mlx_dir)]) == 2
    assert f"error: {scans / 'corrupt.pdf'}: not a readable PDF" in capsys.readouterr().err


def test_batch_processor_writes_a_row_per_pdf_page(models_for_pdf, scans, tmp_path):
    mlx_dir, _ = models_for_pdf
    proc = MLXBatchProcessor(mlx_dir, batch_size=2, max_length=MAX_LENGTH)
    inputs = [scans / "form.pdf", scans / "corrupt.pdf", scans / "truncated.pdf"]
    rows = proc.process_images(inputs, output_csv=tmp_path / "out.csv", show_progress=False)
    assert [(r["image_name"], r["page"], r["success"]) for r in rows] == [
        ("form.pdf[page 1]", 1, True), ("form.pdf[page 2]", 2, True),
        ("corrupt.pdf", None, False), ("truncated.pdf", None, False)]
    assert {r["image_path"] for r in rows[:2]} == {str(scans / "form.pdf")}
    for r in rows[2:]:
        assert r["error"].startswith(f"{r['image_path']}: not a readable PDF")
    # each page's row is that page rendered at the default dpi, read by the processor on its own
    for r in rows[:2]:
        assert r["text"] == proc.processor.process_image(load_image(scans / "form.pdf", page=r["page"]),
                                                         max_length=MAX_LENGTH)
    assert [(r["image_name"], r["success"]) for r in read_results_csv(tmp_path / "out.csv")] == [
        (r["image_name"], r["success"]) for r in rows]

    # the CLI: --pdf-dpi is used and recorded; resuming skips the pages already done
    csv_path = tmp_path / "cli.csv"
    argv = ["--images", str(scans / "form.pdf"), "--model", str(mlx_dir), "--max-length", str(MAX_LENGTH),
            "--output-csv", str(csv_path), "--pdf-dpi", "100", "--no-progress"]
    assert batch_main(argv) == 0
    doc = json.loads(csv_path.with_suffix(".json").read_text(encoding="utf-8"))
    assert doc["metadata"]["pdf_dpi"] == 100 and [r["page"] for r in doc["results"]] == [1, 2]
    expected = proc.processor.process_image(load_image(scans / "form.pdf", page=2, dpi=100), max_length=MAX_LENGTH)
    assert doc["results"][1]["text"] == expected
    assert batch_main(argv + ["--resume"]) == 0
    assert len(read_results_csv(csv_path)) == 2


def test_preprocessor_writes_every_pdf_page_and_reports_a_corrupt_one(scans, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "form.pdf").write_bytes((scans / "form.pdf").read_bytes())
    (folder / "corrupt.pdf").write_bytes((scans / "corrupt.pdf").read_bytes())
    out = tmp_path / "out"
    assert pre_handler.main(["-i", str(folder), "-o", str(out), "--no-deskew", "--pdf-dpi", "100"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["form_p1.png", "form_p2.png"]
    assert Image.open(out / "form_p1.png").size == load_image(scans / "form.pdf", page=1, dpi=100).size
    err = capsys.readouterr().err
    assert f"error: {folder / 'corrupt.pdf'}: not a readable PDF" in err
    assert pre_handler.main(["-i", str(folder / "corrupt.pdf"), "-o", str(tmp_path / "x.png")]) == 2


@pytest.fixture(scope="module")
def models_for_pdf(tiny_model):
    """(converted MLX folder, transformers folder) of conftest's tiny random-weight TrOCR."""
    hf, mlx_dir = tiny_model
    return mlx_dir, hf

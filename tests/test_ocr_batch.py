"""Whole-page OCR through mlx-vlm (scripts/ocr_batch.py, scripts/vlm_ocr.py) on tiny random-weight
Qwen3-VL (Chandra 1) and Qwen3.5 (Chandra OCR 2) checkpoints made here with transformers and converted
with mlx-vlm's own converter: greedy ids equal transformers' generate, a batch equals its pages one by
one, end-of-text and truncation statuses, bad files as error rows, SIGKILL + --resume."""

from __future__ import annotations

import csv
import importlib.util
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import vlm_fixtures as F
from scripts import ocr_batch
from scripts.vlm_ocr import (CHANDRA_OCR_PROMPT, CSV_COLUMNS, ModelUnavailable, batches_by_shape, load_vlm,
                             ocr_images, page_status, prepare_page, read_results, resolve_model)
from scripts.mlx_batch_processor import Item

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ocr_batch.py"
HAVE_VLM = importlib.util.find_spec("mlx_vlm") is not None
needs_vlm = pytest.mark.skipif(not HAVE_VLM, reason="mlx-vlm not installed (./setup_mlx.sh --vlm installs it)")
PROMPT = "OCR this image to HTML."  # short, so the tiny models' output depends strongly on the page
MAX_SIZE = 256
GRID = (F.PATCH * F.MERGE, 32 * 32, 256 * 256)  # the fixtures' image processor: factor, min/max pixels


class Reference:
    """A tiny checkpoint on both sides: the transformers model (the reference) and its mlx-vlm copy."""

    def __init__(self, arch, hf_dir, mlx_dir, model=None):
        from transformers import AutoModelForImageTextToText

        self.arch, self.hf_dir, self.mlx_dir = arch, hf_dir, mlx_dir
        self.tokenizer, self.image_processor = F.build_tokenizer(), F.build_image_processor()
        self.model = model if model is not None else AutoModelForImageTextToText.from_pretrained(hf_dir).eval()
        self._vlm = None

    @property
    def vlm(self):
        if self._vlm is None:
            self._vlm = load_vlm(str(self.mlx_dir))
        return self._vlm

    def generate(self, page: Image.Image, prompt=PROMPT, max_tokens=16) -> list[int]:
        return F.hf_generate(self.model, self.tokenizer, self.image_processor, page, prompt, max_tokens)

    def text(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _build(root: Path, arch: str, model=None) -> Reference:
    hf = F.save_checkpoint(arch, root / "hf", model=model)
    return Reference(arch, hf, F.convert_checkpoint(hf, root / "mlx"), model=model)


@pytest.fixture(scope="module", params=["qwen3_vl", "qwen3_5"])
def ref(request, tmp_path_factory):
    if not HAVE_VLM:
        pytest.skip("mlx-vlm not installed (./setup_mlx.sh --vlm installs it)")
    return _build(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def qwen3_vl(tmp_path_factory):
    if not HAVE_VLM:
        pytest.skip("mlx-vlm not installed (./setup_mlx.sh --vlm installs it)")
    return _build(tmp_path_factory.mktemp("qwen3_vl_default_prompt"), "qwen3_vl")


def _pages(sizes, seed0=0):
    return [F.page_image(w, h, seed0 + i) for i, (w, h) in enumerate(sizes)]


def _rows(csv_path) -> list[dict]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_COLUMNS
    return [dict(zip(CSV_COLUMNS, r)) for r in rows[1:]]


# --------------------------------------------------------------------------------------------------
# Exactness: the same ids as transformers
# --------------------------------------------------------------------------------------------------


@needs_vlm
def test_cli_texts_equal_transformers_generate(ref, tmp_path):
    """Pages of three sizes (two share one), through the CLI in batches, against transformers' greedy
    generate on each page alone: the same text, and the text files hold it too."""
    folder = tmp_path / "pages"
    (folder / "sub").mkdir(parents=True)
    originals = {}
    for i, (w, h) in enumerate([(300, 400), (310, 395), (300, 400), (500, 300), (123, 77)]):
        path = folder / ("sub" if i == 3 else "") / f"page{i}.png"
        originals[str(path)] = img = F.page_image(w, h, 10 + i)
        img.save(path)
    out = tmp_path / "results.csv"
    assert ocr_batch.main(["--images-dir", str(folder), "-o", str(out), "--model", str(ref.mlx_dir),
                           "--batch-size", "4", "--max-tokens", "16", "--max-size", str(MAX_SIZE),
                           "--prompt", PROMPT, "--no-progress"]) == 0
    rows = _rows(out)
    assert sorted(r["image_path"] for r in rows) == sorted(originals)
    texts = set()
    for row in rows:
        ids = ref.generate(prepare_page(originals[row["image_path"]], MAX_SIZE, GRID))
        assert row["ocr_text"] == ref.text(ids), row["image_path"]
        assert row["status"] == page_status(row["ocr_text"], len(ids), 16)
        name = Path(row["image_path"]).relative_to(folder).with_suffix("")
        txt = out.with_name("results_ocr") / name.parent / f"{name.name}_ocr.txt"
        assert txt.read_text(encoding="utf-8") == row["ocr_text"] + "\n"
        texts.add(row["ocr_text"])
    assert len(texts) >= 3, "the tiny model's text barely depends on the page: the test would prove little"


@needs_vlm
def test_batch_equals_pages_one_by_one(ref):
    pages = [prepare_page(p, MAX_SIZE, GRID) for p in _pages([(300, 400)] * 4, seed0=40)]
    assert len({p.size for p in pages}) == 1
    batch, _ = ocr_images(ref.vlm, pages, PROMPT, max_tokens=12)
    alone = [ocr_images(ref.vlm, [p], PROMPT, max_tokens=12)[0][0] for p in pages]
    assert [b.tokens for b in batch] == [a.tokens for a in alone]
    assert [b.tokens for b in batch] == [ref.generate(p, max_tokens=12) for p in pages]
    assert len({tuple(b.tokens) for b in batch}) > 1


@needs_vlm
def test_chandra_prompt_equals_transformers(qwen3_vl):
    page = prepare_page(F.page_image(400, 300, 7), 1024, GRID)
    (got,), _ = ocr_images(qwen3_vl.vlm, [page], CHANDRA_OCR_PROMPT, max_tokens=10)
    assert got.tokens == qwen3_vl.generate(page, CHANDRA_OCR_PROMPT, max_tokens=10)


@needs_vlm
def test_end_of_text_gives_ok_or_empty(tmp_path):
    """A model made to end the page after 5 tokens (status ok) or at once (error:empty): mlx-vlm stops
    where transformers stops."""
    tok, ip = F.build_tokenizer(), F.build_image_processor()
    page = prepare_page(F.page_image(300, 400, 3), MAX_SIZE, GRID)
    for step, status in [(5, "ok"), (0, "error:empty")]:
        model = F.aim_end_of_text(F.make_model("qwen3_vl", tok), tok, ip, page, PROMPT, step)
        r = _build(tmp_path / f"eos{step}", "qwen3_vl", model=model)
        assert len(r.generate(page, max_tokens=16)) == step
        (got,), _ = ocr_images(r.vlm, [page], PROMPT, max_tokens=16)
        assert (got.status, len(got.tokens)) == (status, step)
        assert got.tokens == r.generate(page, max_tokens=16)


def test_page_status():
    assert page_status("<p>x</p>", 3, 10) == "ok"
    assert page_status(" \n", 0, 10) == "error:empty"
    assert page_status("<p>x", 10, 10).startswith("error:truncated (hit --max-tokens 10")


# --------------------------------------------------------------------------------------------------
# Sizes and batches
# --------------------------------------------------------------------------------------------------


@needs_vlm
def test_prepared_pages_are_not_resized_again_by_the_processor():
    ip = F.build_image_processor()
    for w, h in [(300, 400), (123, 77), (2480, 3508), (40, 1000), (1000, 33)]:
        page = prepare_page(Image.new("RGB", (w, h), "white"), MAX_SIZE, GRID)
        assert max(page.size) <= MAX_SIZE + GRID[0] // 2 and page.width % 32 == 0 and page.height % 32 == 0
        t, gh, gw = ip(images=[page], return_tensors="np")["image_grid_thw"][0]
        assert (gw * F.PATCH, gh * F.PATCH) == page.size


def test_batches_by_shape_hold_one_size_each():
    sizes = [(32, 64), (64, 32), (32, 64), (96, 32), (32, 64), (64, 32), (32, 64), (32, 64)]
    items = [Item(Path(f"p{i}.png"), pixels=Image.new("RGB", s)) for i, s in enumerate(sizes)]
    items.insert(3, Item(Path("bad.png"), error="not an image"))
    batches = list(batches_by_shape(items, batch_size=3))
    assert sorted(it.path.name for b in batches for it in b) == sorted(it.path.name for it in items)
    for b in batches:
        assert len(b) <= 3 and len({it.pixels.size for it in b if it.error is None}) <= 1
    assert [it.path.name for it in batches[0]] == ["bad.png"]  # failures go out at once
    assert [len(b) for b in batches if b[0].pixels is not None and b[0].pixels.size == (32, 64)] == [3, 2]
    # a cap on waiting pages: all-different sizes do not pile up in memory
    many = [Item(Path(f"q{i}.png"), pixels=Image.new("RGB", (32 + i, 32))) for i in range(20)]
    assert max(len(b) for b in batches_by_shape(many, batch_size=4, max_buffered=5)) == 1


# --------------------------------------------------------------------------------------------------
# Bad inputs, formats, the CSV
# --------------------------------------------------------------------------------------------------


@needs_vlm
def test_bad_files_are_error_rows_and_every_page_a_row(ref, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    F.page_image(300, 400, 1).save(folder / "good.png")
    F.page_image(300, 400, 2).save(folder / "photo.jpeg")
    F.page_image(300, 400, 3).save(folder / "scan.bmp")
    F.page_image(300, 400, 4).save(folder / "web.webp")
    pages = _pages([(300, 400), (400, 300), (300, 400)], seed0=5)
    pages[0].save(folder / "multi.tif", save_all=True, append_images=pages[1:])
    pages[0].save(folder / "doc.pdf", save_all=True, append_images=pages[1:2], resolution=100)
    good = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture\n")
    out = tmp_path / "r.csv"
    assert ocr_batch.main(["--images-dir", str(folder), "-o", str(out), "--model", str(ref.mlx_dir),
                           "--max-tokens", "6", "--max-size", str(MAX_SIZE), "--prompt", PROMPT,
                           "--no-progress", "--markdown"]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["image_path", "status", "ocr_text"]
    rows = {Path(r["image_path"]).name: r for r in _rows(out)}
    assert set(rows) == {"good.png", "photo.jpeg", "scan.bmp", "web.webp", "multi.tif[page 1]",
                         "multi.tif[page 2]", "multi.tif[page 3]", "doc.pdf[page 1]", "doc.pdf[page 2]",
                         "truncated.png", "empty.png", "notes.jpg"}
    assert rows["empty.png"]["status"] == "error:empty file (0 bytes)"
    assert rows["notes.jpg"]["status"] == "error:not an image (unrecognised format)"
    assert rows["truncated.png"]["status"].startswith("error:corrupt or truncated image data")
    for name in ("good.png", "photo.jpeg", "scan.bmp", "web.webp", "multi.tif[page 2]", "doc.pdf[page 2]"):
        assert rows[name]["status"].startswith("error:truncated (hit --max-tokens 6"), rows[name]
        assert rows[name]["ocr_text"]
    texts = out.with_name("r_ocr")
    assert (texts / "multi_page2_ocr.txt").read_text(encoding="utf-8") == rows["multi.tif[page 2]"]["ocr_text"] + "\n"
    assert (texts / "good_ocr.md").is_file() and not (texts / "empty_ocr.txt").exists()
    # the CSV is not overwritten by accident
    assert ocr_batch.main(["--images-dir", str(folder), "-o", str(out), "--model", str(ref.mlx_dir)]) == 2


def test_missing_model_says_how_to_get_it(tmp_path, capsys):
    with pytest.raises(ModelUnavailable, match="no such model folder"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ModelUnavailable, match="no config.json"):
        resolve_model(str(tmp_path / "empty_model"))
    if HAVE_VLM:  # a hub id that cannot be fetched (offline here; unknown repo elsewhere)
        with pytest.raises(ModelUnavailable, match="hf download"):
            resolve_model("trocr-mlx-tests/no-such-model-anywhere")
    F.page_image(64, 64, 0).save(tmp_path / "p.png")
    assert ocr_batch.main(["--images-dir", str(tmp_path), "-o", str(tmp_path / "o.csv"),
                           "--model", str(tmp_path / "nope")]) == 2
    assert "no such model folder" in capsys.readouterr().err


@needs_vlm
def test_cv2_stays_the_headless_build_next_to_mlx_vlm():
    """mlx-vlm requires opencv-python, whose GUI build overwrites opencv-python-headless's cv2/ files;
    ./setup_mlx.sh --vlm restores the headless ones (the GUI build needs libGL, absent on servers)."""
    import re

    import cv2
    import numpy as np

    assert re.search(r"GUI:\s+NONE", cv2.getBuildInformation()), "cv2 is the GUI build: rerun ./setup_mlx.sh --vlm"
    assert cv2.cvtColor(np.zeros((4, 6, 3), np.uint8), cv2.COLOR_BGR2GRAY).shape == (4, 6)


def test_help_works_without_mlx_vlm():
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--images-dir" in res.stdout and "--resume" in res.stdout


def test_markdown_from_chandra_html():
    pytest.importorskip("markdownify", reason="markdownify not installed (requirements-vlm.txt)")
    from scripts.vlm_ocr import html_to_markdown

    html = ('<h1>Invoice</h1><p>Total: <b>1,250.00</b> for <math>x^2</math></p>'
            '<math display="block">\\sum_i a_i</math>'
            '<table><tr><th>Item</th><th>Qty</th></tr><tr><td>Pen</td><td>2</td></tr></table>')
    md = html_to_markdown(html)
    assert md.startswith("# Invoice\n")
    assert "Total: **1,250.00** for $x^2$" in md
    assert "$$\\sum_i a_i$$" in md
    assert "| Item | Qty |" in md and "| Pen | 2 |" in md


# --------------------------------------------------------------------------------------------------
# Crash safety
# --------------------------------------------------------------------------------------------------


@needs_vlm
def test_sigkill_mid_run_then_resume_continues_exactly(tmp_path):
    """A real run killed with SIGKILL after some batches, a torn last line as if the kill cut a write,
    then --resume: every page exactly once, and the same rows as a run never interrupted."""
    ref = _build(tmp_path / "model", "qwen3_5")
    folder = tmp_path / "pages"
    folder.mkdir()
    n = 14
    for i in range(n):
        F.page_image(300 + 40 * (i % 2), 400, 60 + i).save(folder / f"p{i:02d}.png")
    args = ["--images-dir", str(folder), "--model", str(ref.mlx_dir), "--batch-size", "2", "--max-tokens", "24",
            "--max-size", str(MAX_SIZE), "--prompt", PROMPT, "--no-progress"]
    out = tmp_path / "killed.csv"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(read_results(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate()[1]
    before = read_results(out)
    assert 2 <= len(before) < n, f"the kill landed outside the run ({len(before)} rows): {stderr[-2000:]}"
    with open(out, "ab") as f:
        f.write(f'{folder / "p00.png"},ok,"half a te'.encode())
    assert ocr_batch.main(args + ["-o", str(out), "--resume"]) == 0
    rows = _rows(out)
    assert Counter(r["image_path"] for r in rows) == Counter(str(p) for p in sorted(folder.iterdir()))
    assert rows[: len(before)] == before
    whole = tmp_path / "whole.csv"
    assert ocr_batch.main(args + ["-o", str(whole)]) == 0
    key = lambda r: r["image_path"]  # noqa: E731
    assert sorted(rows, key=key) == sorted(_rows(whole), key=key)

"""Batch OCR of collections: mixed formats, bad files, crash safety (SIGKILL + resume), shards, patterns."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import mlx_batch_processor as mbp
from scripts.image_io import iter_pages
from scripts.mlx_batch_processor import CSV_COLUMNS, MLXBatchProcessor, expand_braces, find_images, main, read_results_csv

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mlx_batch_processor.py"

GOOD = ["a.png", "b.jpg", "sub/c.bmp", "sub/d.webp", "sub/deeper/e.tif", "sub/g16.png", "sub/cmyk.jpg",
        "sub/deeper/la.png", "pal.png"]
MULTI = "multi.tif"  # 3 pages
BAD = {"trunc.png": "truncated", "empty.png": "empty file", "text.png": "not an image"}


@pytest.fixture(scope="session")
def mlx_model(request, tmp_path_factory):
    """The converted tiny MLX model: conftest's shared `tiny_model` when there is one, else our own."""
    try:
        return request.getfixturevalue("tiny_model")[1]
    except pytest.FixtureLookupError:
        from scripts.convert_trocr_to_mlx import convert
        from hf_fixtures import make_model, save_checkpoint

        root = tmp_path_factory.mktemp("batch_tiny_model")
        return convert(save_checkpoint(make_model("base"), root / "hf"), root / "mlx", verbose=False)


def _noise(rng, h=24, w=72):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    """Nested folders, every format, odd modes, a 3-page TIFF and three unreadable files."""
    d = tmp_path_factory.mktemp("collection")
    (d / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["a.png", "b.jpg", "sub/c.bmp", "sub/d.webp", "sub/deeper/e.tif"]:
        _noise(rng).save(d / name)
    Image.fromarray(rng.integers(0, 65535, (20, 60), dtype=np.uint16)).save(d / "sub/g16.png")
    _noise(rng).convert("CMYK").save(d / "sub/cmyk.jpg")
    _noise(rng).convert("LA").save(d / "sub/deeper/la.png")
    pal = _noise(rng).convert("P")
    pal.info["transparency"] = 0
    pal.save(d / "pal.png", transparency=0)
    pages = [_noise(rng) for _ in range(3)]
    pages[0].save(d / MULTI, save_all=True, append_images=pages[1:])
    _noise(rng).save(d / "full.bin", format="PNG")
    data = (d / "full.bin").read_bytes()
    (d / "full.bin").unlink()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is a text file, not a picture\n")
    (d / "notes.txt").write_text("not matched by the default pattern\n")
    (d / ".hidden.png").write_bytes(b"junk")
    return d


def _expected_names():
    names = [Path(n).name for n in GOOD] + [f"{MULTI}[page {i}]" for i in (1, 2, 3)] + list(BAD)
    return sorted(names)


def _read(path) -> list[dict]:
    """Parse with the csv module, checking every row is whole."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_COLUMNS
    for r in rows[1:]:
        assert len(r) == len(CSV_COLUMNS), r
        assert r[3] in ("True", "False"), r
        float(r[4])
    return [dict(zip(CSV_COLUMNS, r)) for r in rows[1:]]


def _keys(rows):
    return Counter((os.path.abspath(r["image_path"]), r["image_name"]) for r in rows)


@pytest.fixture(scope="session")
def full_run(mlx_model, collection, tmp_path_factory):
    """The whole collection through the CLI (in-process): (rc, stdout, csv path, json path)."""
    out = tmp_path_factory.mktemp("full")
    csv_path, json_path = out / "all.csv", out / "all.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--directory", str(collection), "--recursive", "--model", str(mlx_model), "--batch-size", "4",
                   "--output-csv", str(csv_path), "--output-json", str(json_path), "--no-progress"])
    return rc, buf.getvalue(), csv_path, json_path


# --------------------------------------------------------------------------------------------------


def test_mixed_collection_every_input_has_a_row(full_run, collection):
    rc, stdout, csv_path, json_path = full_run
    assert rc == 0
    rows = _read(csv_path)
    assert sorted(r["image_name"] for r in rows) == _expected_names()
    by_name = {r["image_name"]: r for r in rows}
    for name in [Path(n).name for n in GOOD] + [f"{MULTI}[page {i}]" for i in (1, 2, 3)]:
        assert by_name[name]["success"] == "True" and by_name[name]["error"] == "", by_name[name]
        assert by_name[name]["text"]
    for name, reason in BAD.items():
        r = by_name[name]
        assert r["success"] == "False" and r["text"] == ""
        assert reason in r["error"] and name in r["error"], r
    # every page of the TIFF names the file itself as image_path
    assert {by_name[f"{MULTI}[page {i}]"]["image_path"] for i in (1, 2, 3)} == {str(collection / MULTI)}
    assert "3 failed" in stdout and "12 succeeded" in stdout and str(csv_path) in stdout


def test_json_metadata_and_results(full_run, mlx_model):
    _, _, csv_path, json_path = full_run
    doc = json.loads(json_path.read_text())
    meta, results = doc["metadata"], doc["results"]
    assert meta["total_images"] == 15 and meta["successful"] == 12 and meta["failed"] == 3
    assert meta["total_time"] > 0 and meta["avg_time_per_image"] == pytest.approx(meta["total_time"] / 15, abs=1e-3)
    assert meta["model"] == str(mlx_model)
    assert meta["generation"]["max_length"] == 64 and meta["generation"]["num_beams"] == 1
    assert "cpu" in meta["device"].lower() or "gpu" in meta["device"].lower()
    assert all(meta["versions"][k] for k in ("mlx", "numpy", "pillow", "tokenizers"))
    assert [r["image_name"] for r in results] == [r["image_name"] for r in _read(csv_path)]
    assert {r["page"] for r in results if r["image_name"].startswith(MULTI)} == {1, 2, 3}
    assert all(isinstance(r["success"], bool) for r in results)


def test_results_equal_process_image_one_by_one(mlx_model, collection):
    proc = MLXBatchProcessor(mlx_model, batch_size=5)
    rows = proc.process_directory(collection, pattern=None, recursive=True, show_progress=False)
    assert len(rows) == 15
    single = proc.processor
    for r in rows:
        if not r["success"]:
            continue
        if r["page"] is None:
            expected = single.process_image(r["image_path"])
        else:
            expected = single.process_image(list(iter_pages(r["image_path"]))[r["page"] - 1])
        assert r["text"] == expected, r["image_name"]


def test_shards_concatenate_to_the_whole(full_run, mlx_model, collection, tmp_path, capsys):
    whole = _read(full_run[2])
    parts = []
    for i in (1, 2, 3):
        out = tmp_path / f"part{i}.csv"
        rc = main(["--directory", str(collection), "--recursive", "--model", str(mlx_model), "--batch-size", "3",
                   "--output-csv", str(out), "--shard", f"{i}/3", "--no-progress"])
        assert rc == 0
        parts.append(_read(out))
    assert all(parts), "each shard got some files"
    combined = [r for p in parts for r in p]
    assert _keys(combined) == _keys(whole)
    text = {(r["image_path"], r["image_name"]): r["text"] for r in whole}
    assert all(text[(r["image_path"], r["image_name"])] == r["text"] for r in combined)
    # pages of one file stay in one shard
    owners = [i for i, p in enumerate(parts) if any(r["image_name"].startswith(MULTI) for r in p)]
    assert len(owners) == 1
    assert main(["--images", "x.png", "--shard", "4/3"]) == 2


def _many_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        p = folder / f"line{i:03d}.png"
        _noise(rng, 16, 32).save(p)
        paths.append(p)
    return paths


def _data_rows(path: Path) -> int:
    try:
        return max(path.read_bytes().count(b"\n") - 1, 0)
    except FileNotFoundError:
        return 0


def _start_run(mlx_model, tmp_path, n, batch_size, rows, **popen_kw):
    """The batch processor on n line images, started in a subprocess and left running until it has written
    `rows` result rows (or 60 s passed): (images, output csv, command, process)."""
    images = _many_images(tmp_path / "lines", n)
    out = tmp_path / "run.csv"
    cmd = [sys.executable, str(SCRIPT), "--directory", str(tmp_path / "lines"), "--model", str(mlx_model),
           "--batch-size", str(batch_size), "--output-csv", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, **popen_kw)
    deadline = time.time() + 60
    while _data_rows(out) < rows and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    return images, out, cmd, proc


def test_sigkill_mid_run_then_resume(mlx_model, tmp_path):
    n = 60
    images, out, cmd, proc = _start_run(mlx_model, tmp_path, n, 1, 5,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = _data_rows(out)
    assert 5 <= before < n, f"kill landed outside the run ({before} rows)"
    # and as if the kill had cut a write in half: a partial last line
    with open(out, "ab") as f:
        f.write(b'line999.png,' + str(images[0]).encode() + b',"half a tex')
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = _read(out)
    assert Counter(r["image_path"] for r in rows) == Counter(str(p) for p in images)
    assert all(r["success"] == "True" for r in rows)
    assert f"{before} were already done" in res.stdout
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["metadata"]["total_images"] == n and len(doc["results"]) == n


def test_ctrl_c_stops_after_batch_and_prints_resume_command(mlx_model, tmp_path):
    n = 40
    images, out, _, proc = _start_run(mlx_model, tmp_path, n, 2, 4,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = _read(out)
    assert 4 <= len(rows) < n
    resume = [line.strip() for line in stderr.splitlines() if line.strip().endswith("--resume")]
    assert resume, stderr
    res = subprocess.run(shlex.split(resume[-1]), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert Counter(r["image_path"] for r in _read(out)) == Counter(str(p) for p in images)


def test_resume_in_process_finishes_pages_and_files(mlx_model, collection, full_run, tmp_path):
    whole = _read(full_run[2])
    keep = [r for r in whole if r["image_name"] in ("a.png", f"{MULTI}[page 2]", "empty.png")]
    out = tmp_path / "partial.csv"
    out.write_text(mbp.format_rows(keep, header=True))
    proc = MLXBatchProcessor(mlx_model, batch_size=4)
    new = proc.process_directory(collection, pattern=None, recursive=True, output_csv=out, resume=True,
                                 show_progress=False)
    assert len(new) == 12
    assert f"{MULTI}[page 2]" not in {r["image_name"] for r in new}
    assert _keys(_read(out)) == _keys(whole)
    # a second resume has nothing to do
    assert proc.process_directory(collection, pattern=None, recursive=True, output_csv=out, resume=True,
                                  show_progress=False) == []


def test_brace_patterns(mlx_model, collection, tmp_path):
    assert expand_braces("*.{jpg,png}") == ["*.jpg", "*.png"]
    assert expand_braces("{a,b}_{1,2}.png") == ["a_1.png", "a_2.png", "b_1.png", "b_2.png"]
    assert expand_braces("x.{tif,{jpg,jpeg}}") == ["x.tif", "x.jpg", "x.jpeg"]
    assert expand_braces("plain{}.png") == ["plain{}.png"]
    names = [p.name for p in find_images(collection, "*.{bmp,webp,tif}", recursive=True)]
    assert sorted(names) == ["c.bmp", "d.webp", "e.tif", "multi.tif"]
    assert [p.name for p in find_images(collection, "*.{bmp,webp,tif}")] == ["multi.tif"]
    assert [p.name for p in find_images(collection, "*.JPG", recursive=True)] == ["b.jpg", "cmyk.jpg"]
    out = tmp_path / "p.csv"
    assert main(["--directory", str(collection), "--recursive", "--pattern", "*.{jpg,webp}", "--model",
                 str(mlx_model), "--output-csv", str(out), "--no-progress"]) == 0
    assert sorted(r["image_name"] for r in _read(out)) == ["b.jpg", "cmyk.jpg", "d.webp"]


def test_manifest_input(mlx_model, collection, tmp_path):
    listing = tmp_path / "lists" / "batch.txt"
    listing.parent.mkdir()
    rel = os.path.relpath(collection / "sub" / "c.bmp", listing.parent)
    listing.write_text(f"# lines to read\n{rel}\n\n{collection / MULTI}\nmissing.png\n{collection / 'text.png'}\n")
    out = tmp_path / "m.csv"
    assert main(["--manifest", str(listing), "--model", str(mlx_model), "--output-csv", str(out),
                 "--no-progress"]) == 0
    rows = {r["image_name"]: r for r in _read(out)}
    assert set(rows) == {"c.bmp", "multi.tif[page 1]", "multi.tif[page 2]", "multi.tif[page 3]", "missing.png",
                         "text.png"}
    assert rows["missing.png"]["success"] == "False" and "file not found" in rows["missing.png"]["error"]
    assert Path(rows["missing.png"]["image_path"]) == listing.parent / "missing.png"
    assert rows["c.bmp"]["success"] == "True"


def test_images_and_text_files(mlx_model, tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "imgs").mkdir()
    _noise(rng).save(tmp_path / "imgs" / "one.png")
    _noise(rng).save(tmp_path / "imgs" / "one.jpg")  # same stem: text files keep the extension
    pages = [_noise(rng) for _ in range(2)]
    pages[0].save(tmp_path / "imgs" / "two.tiff", save_all=True, append_images=pages[1:])
    imgs = [str(tmp_path / "imgs" / n) for n in ("one.png", "one.jpg", "two.tiff")]
    out = tmp_path / "t.csv"
    assert main(["--images", *imgs, "--model", str(mlx_model), "--output-csv", str(out), "--text-files",
                 "--no-progress"]) == 0
    rows = {r["image_name"]: r["text"] for r in _read(out)}
    folder = tmp_path / "imgs"
    assert (folder / "one.png_ocr.txt").read_text().strip() == rows["one.png"]
    assert (folder / "one.jpg_ocr.txt").read_text().strip() == rows["one.jpg"]
    assert (folder / "two_page2_ocr.txt").read_text().strip() == rows["two.tiff[page 2]"]
    # under --text-dir instead
    assert main(["--images", imgs[2], "--model", str(mlx_model), "--output-csv", str(out), "--overwrite",
                 "--text-dir", str(tmp_path / "txt"), "--no-progress"]) == 0
    assert (tmp_path / "txt" / "two_page1_ocr.txt").exists()


def test_generation_error_fails_only_the_bad_image(mlx_model, collection):
    proc = MLXBatchProcessor(mlx_model, batch_size=8)
    real = proc.processor.generate
    bad = {"calls": 0}

    def flaky(pixels, **gen):
        px = np.asarray(pixels)
        if len(px) > 1 or abs(float(px.mean()) - marker) < 1e-6:
            bad["calls"] += 1
            raise RuntimeError("simulated failure")
        return real(pixels, **gen)

    paths = [collection / n for n in ("a.png", "b.jpg", "pal.png")]
    marker = float(proc.processor.preprocess([paths[1]]).mean())
    proc.processor.generate = flaky
    rows = proc.process_images(paths, show_progress=False)
    assert [r["success"] for r in rows] == [True, False, True]
    assert "generation failed" in rows[1]["error"] and "simulated failure" in rows[1]["error"]
    assert bad["calls"] == 2


def test_too_large_image_is_a_failed_row(mlx_model, collection, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    proc = MLXBatchProcessor(mlx_model, batch_size=2)
    rows = proc.process_images([collection / "a.png"], show_progress=False)
    assert rows[0]["success"] is False and "too large" in rows[0]["error"]


def test_partial_trailing_line_is_ignored(tmp_path):
    rows = [{"image_name": "a.png", "image_path": "/x/a.png", "text": 'two\nlines, "quoted"', "success": True,
             "processing_time": 0.5, "error": "", "timestamp": "t"}]
    path = tmp_path / "r.csv"
    good = mbp.format_rows(rows, header=True).encode()
    for cut in range(len(good) - 1, len(good.split(b"\n")[0]), -1):
        path.write_bytes(good + good[len(good.split(b"\n")[0]) + 1:cut])
        assert len(read_results_csv(path)) == 1, cut
    path.write_bytes(good + b'b.png,/x/b.png,"abc\n')
    assert [r["text"] for r in read_results_csv(path, repair=True)] == ['two\nlines, "quoted"']
    assert path.read_bytes() == good


def test_existing_csv_needs_resume_or_overwrite(mlx_model, collection, full_run, tmp_path, capsys):
    out = tmp_path / "x.csv"
    out.write_bytes(full_run[2].read_bytes())
    assert main(["--images", str(collection / "a.png"), "--model", str(mlx_model), "--output-csv", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert out.read_bytes() == full_run[2].read_bytes()


def test_default_model_path(monkeypatch, tmp_path):
    from scripts import model_registry

    monkeypatch.setattr(model_registry, "DEFAULT_MODEL_DIR", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="convert_trocr_to_mlx"):
        model_registry.default_model_path()
    with pytest.raises(FileNotFoundError, match="--model"):
        MLXBatchProcessor(None)
    (tmp_path / "nope").mkdir()
    assert model_registry.default_model_path() == tmp_path / "nope"

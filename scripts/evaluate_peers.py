"""Compare OCR engines on a manifest of text-line images: CER/WER overall, per style, per font, per kind.

    python scripts/evaluate_peers.py data/eval/manifest.csv --engines tesseract,rapidocr --json results.json

Engines here are the peers our model is measured against: tesseract (Debian tesseract-ocr with the spa
and eng models, one text line: --psm 7) and rapidocr (PyPI `rapidocr`, its bundled PP-OCR models,
recognizer only, since the input is already a cropped line). Any other model plugs in as a recognizer,
a callable taking a list of PIL images and returning one string per image:

    from scripts.evaluate_peers import evaluate
    report = evaluate("data/eval/manifest.csv", {"ours": my_model_batch_fn, "tesseract": tesseract_recognizer()})
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from scripts.metrics import cer, wer
from scripts.synth_data import read_manifest

Recognizer = Callable[[list[Image.Image]], list[str]]
ENGINES = ("tesseract", "rapidocr")


def _paper_shade(img: Image.Image) -> int:
    return int(np.percentile(np.asarray(img.convert("L")), 90))


def tesseract_recognizer(lang: str = "spa+eng", psm: int = 7, border: int = 10, binary: str = "tesseract",
                         workers: int | None = None) -> Recognizer:
    """Tesseract CLI on each line image, `workers` single-threaded processes at a time.

    Each process reads a list of images (tesseract's multi-page input), so the language models load once
    per chunk instead of once per line. Each line gets a `border`-pixel margin of its own paper shade:
    tesseract reads text touching the image edge badly, and our crops are tight."""
    exe = shutil.which(binary)
    if exe is None:
        raise RuntimeError(f"'{binary}' not found: install tesseract (Debian: apt-get install tesseract-ocr "
                           "tesseract-ocr-spa tesseract-ocr-eng, or ./setup_mlx.sh --eval)")
    installed = subprocess.run([exe, "--list-langs"], capture_output=True, text=True).stdout.split()
    missing = [code for code in lang.split("+") if code not in installed]
    if missing:
        raise RuntimeError(f"tesseract has no model for {missing} (Debian: apt-get install "
                           f"{' '.join('tesseract-ocr-' + code for code in missing)})")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # parallel processes instead of threads inside each
    workers = workers or os.cpu_count() or 1

    def read_chunk(images: list[Image.Image]) -> list[str]:
        with tempfile.TemporaryDirectory(prefix="tess_") as tmp:
            paths = []
            for i, img in enumerate(images):
                path = Path(tmp) / f"{i:05d}.png"
                ImageOps.expand(img.convert("L"), border=border, fill=_paper_shade(img)).save(path)
                paths.append(str(path))
            listing = Path(tmp) / "images.txt"
            listing.write_text("\n".join(paths) + "\n", encoding="utf-8")
            done = subprocess.run([exe, str(listing), "stdout", "-l", lang, "--psm", str(psm)],
                                  capture_output=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"tesseract failed: {done.stderr.decode(errors='replace').strip()}")
        pages = done.stdout.decode("utf-8", errors="replace").split("\f")  # one form feed between pages
        if len(pages) != len(images):
            raise RuntimeError(f"tesseract returned {len(pages)} pages for {len(images)} images")
        return [" ".join(page.split()) for page in pages]

    def recognize(images: list[Image.Image]) -> list[str]:
        size = -(-len(images) // workers)
        chunks = [images[i:i + size] for i in range(0, len(images), size)]
        with ThreadPoolExecutor(workers) as pool:
            return [text for chunk in pool.map(read_chunk, chunks) for text in chunk]

    return recognize


def rapidocr_recognizer(**params) -> Recognizer:
    """RapidOCR's text recognizer alone (no detection, no angle classifier) on each line, output NFKC-folded.

    `params` go to RapidOCR(params=...), e.g. {"Rec.lang_type": ...}; the default is the bundled model."""
    try:
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise RuntimeError("rapidocr is not installed: pip install -r requirements-eval.txt "
                           "(or ./setup_mlx.sh --eval)") from exc
    engine = RapidOCR(params={"Global.log_level": "warning", **params})

    def recognize(images: list[Image.Image]) -> list[str]:
        out = []
        for img in images:
            result = engine(np.asarray(img.convert("RGB")), use_det=False, use_cls=False, use_rec=True)
            text = " ".join(result.txts).strip() if result.txts else ""
            out.append(unicodedata.normalize("NFKC", text))  # its Chinese model emits fullwidth '，' for ','
        return out

    return recognize


def make_recognizer(name: str) -> Recognizer:
    factories = {"tesseract": tesseract_recognizer, "rapidocr": rapidocr_recognizer}
    if name not in factories:
        raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    return factories[name]()


def _scores(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    return {"cer": cer(refs, hyps), "wer": wer(refs, hyps), "n": len(refs)}


def _grouped(rows: Sequence[dict], hyps: Sequence[str], column: str) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row.get(column, "")].append(i)
    return {key: _scores([rows[i]["text"] for i in idx], [hyps[i] for i in idx]) for key, idx in sorted(groups.items())}


def evaluate(manifest: Union[str, os.PathLike, Sequence[dict]], recognizers: Mapping[str, Recognizer],
             limit: int | None = None, batch_size: int = 64, progress: bool = True) -> dict:
    """Run each recognizer on the manifest's lines and score it.

    manifest: a manifest.csv path (see synth_data.make_dataset) or its rows (with absolute 'image' paths).
    Returns {"n_lines", "results": {name: {"overall", "by_style", "by_font", "by_kind", "by_layout",
    "by_style_layout", "seconds",
    "lines_per_second"}}, "predictions": {name: [text per line]}, "references": [text per line]}."""
    rows = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    rows = rows[:limit] if limit else rows
    from tqdm import tqdm

    report: dict = {"n_lines": len(rows), "results": {}, "predictions": {}, "references": [r["text"] for r in rows]}
    for name, recognize in recognizers.items():
        hyps: list[str] = []
        start = time.perf_counter()
        for lo in tqdm(range(0, len(rows), batch_size), desc=name, unit="batch", disable=not progress):
            batch = rows[lo:lo + batch_size]
            images = [Image.open(r["image"]).convert("RGB") for r in batch]
            out = list(recognize(images))
            if len(out) != len(batch):
                raise ValueError(f"recognizer {name!r} returned {len(out)} texts for {len(batch)} images")
            hyps += out
        seconds = time.perf_counter() - start
        refs = [r["text"] for r in rows]
        report["results"][name] = {
            "overall": _scores(refs, hyps),
            "by_style": _grouped(rows, hyps, "style"),
            "by_font": _grouped(rows, hyps, "font"),
            "by_kind": _grouped(rows, hyps, "kind"),
            "by_layout": _grouped(rows, hyps, "layout"),  # trimmed / untrimmed / form crops, when the manifest says
            "by_style_layout": _grouped([{**r, "sl": f"{r.get('style', '')}/{r.get('layout', '')}"} for r in rows],
                                        hyps, "sl"),
            "seconds": seconds,
            "lines_per_second": len(rows) / seconds if seconds > 0 else float("inf"),
        }
        report["predictions"][name] = hyps
    return report


def format_report(report: dict) -> str:
    """Plain-text tables: CER/WER per engine overall and per style, then CER per font and per kind."""
    names = list(report["results"])
    lines = [f"{report['n_lines']} lines", "",
             f"{'engine':<14}{'group':<16}{'n':>6}{'CER':>9}{'WER':>9}"]
    for name in names:
        res = report["results"][name]
        groups = [("overall", res["overall"])] + [(k, v) for k, v in res["by_style"].items()]
        for group, s in groups:
            lines.append(f"{name:<14}{group:<16}{s['n']:>6}{s['cer']:>9.2%}{s['wer']:>9.2%}")
        lines.append(f"{name:<14}{'speed':<16}{res['lines_per_second']:>12.1f} lines/s")
    for section in ("by_layout", "by_style_layout", "by_font", "by_kind"):
        keys = sorted({k for name in names for k in report["results"][name].get(section, {})})
        lines += ["", f"CER {section.replace('_', ' ')}:", f"{'':<28}{'n':>6}" + "".join(f"{n:>12}" for n in names)]
        for key in keys:
            first = report["results"][names[0]].get(section, {}).get(key, {"n": 0})
            cells = "".join(f"{report['results'][n].get(section, {}).get(key, {'cer': float('nan')})['cer']:>12.2%}"
                            for n in names)
            lines.append(f"{key:<28}{first['n']:>6}{cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score tesseract and rapidocr (CER/WER) on a manifest of line images.",
                                     epilog="Install the engines with ./setup_mlx.sh --eval.")
    parser.add_argument("manifest", help="manifest.csv written by synth_data.py (columns image,text,font,style)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated (default {','.join(ENGINES)})")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N lines")
    parser.add_argument("--json", metavar="PATH", help="write the full report (scores and predictions) here")
    args = parser.parse_args(argv)

    try:
        recognizers = {name: make_recognizer(name) for name in args.engines.split(",") if name}
    except (RuntimeError, ValueError) as exc:
        parser.error(str(exc))
    report = evaluate(args.manifest, recognizers, limit=args.limit)
    report["manifest"] = str(args.manifest)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"\nreport written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

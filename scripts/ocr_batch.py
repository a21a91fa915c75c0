#!/usr/bin/env python3
"""Whole-page OCR of image collections with ChandraOCR (or another mlx-vlm model) into a CSV.

    python scripts/ocr_batch.py --images-dir scans -o results.csv
    python scripts/ocr_batch.py --manifest pages.txt -o results.csv --model models/chandra-mlx --resume
    python scripts/ocr_batch.py --images-dir scans -o out/results.csv --batch-size 4 --max-size 1536 --markdown

Every page becomes one row of `image_path,status,ocr_text`: status `ok`, `error:empty` (the model wrote
nothing), `error:truncated (...)` (it hit --max-tokens; the partial text is kept) or `error:<reason>`
(an unreadable file names its problem; it does not stop the run). A multi-page TIFF or a PDF gives one
row per page (`scan.tif[page 2]`; PDF pages rendered at --pdf-dpi). Each page's HTML also goes to
`<name>_ocr.txt` (and `<name>_ocr.md` with --markdown) in `<csv name>_ocr/` beside the CSV, mirroring the
input folders. Pages are resized once
(longest side --max-size, snapped to the model's patch grid) and batched with pages of the same size, so
no batch needs padding. Rows are appended and fsync'd a batch at a time: a kill loses at most the batch
in flight, and --resume continues with exactly the pages not yet in the CSV.

Needs mlx-vlm: ./setup_mlx.sh --vlm. The model is an mlx-vlm folder or a hub id (default: the MLX copy
of datalab-to/chandra); with no internet, download it elsewhere first (WHOLE_PAGE_OCR.md).
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import shlex
import sys
from typing import Optional, Sequence

from scripts.image_io import PDF_DPI
from scripts.vlm_ocr import (CHANDRA_OCR_PROMPT, DEFAULT_MODEL, SUPPORTED, ModelUnavailable, find_inputs,
                             run_ocr_batch)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Whole-page OCR (ChandraOCR through mlx-vlm) of image collections into a resumable CSV.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images-dir", metavar="D", help=f"every image under D, recursively ({SUPPORTED})")
    src.add_argument("--manifest", metavar="FILE",
                     help="one image path a line ('#' comments; relative paths are relative to FILE)")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="results CSV (image_path,status,ocr_text)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"mlx-vlm model folder or hub id (default {DEFAULT_MODEL}: Chandra in bf16, ~18 GB)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="pages generated together (same size only; default 8). Memory grows with it")
    p.add_argument("--max-tokens", type=int, default=8192, metavar="N",
                   help="most tokens generated per page (default 8192); a page that hits it is error:truncated")
    p.add_argument("--max-size", type=int, default=1024, metavar="PX",
                   help="resize the longest side to PX before the model (default 1024; 0: keep the size)")
    p.add_argument("--prompt", default=CHANDRA_OCR_PROMPT,
                   help="instruction given with every page (default: Chandra's OCR-to-HTML prompt)")
    p.add_argument("--pdf-dpi", type=float, default=PDF_DPI, metavar="DPI",
                   help=f"PDF pages are rendered at this resolution, then sized by --max-size (default {PDF_DPI:g})")
    p.add_argument("--resume", action="store_true", help="continue the CSV: skip pages already in it")
    p.add_argument("--markdown", action="store_true", help="also write <name>_ocr.md (markdownify of the HTML)")
    p.add_argument("--text-dir", metavar="D", help="where the _ocr.txt files go (default: <csv name>_ocr/ beside the CSV)")
    p.add_argument("--verbose", action="store_true", help="per-batch statistics: size, pages/s, tokens/s, memory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.max_tokens < 1 or args.max_size < 0:
        print("ocr_batch: --batch-size and --max-tokens must be >= 1, --max-size >= 0", file=sys.stderr)
        return 2
    try:
        inputs, root = find_inputs(args.images_dir, args.manifest)
    except (FileNotFoundError, OSError) as e:
        print(f"ocr_batch: {e}", file=sys.stderr)
        return 2
    if not inputs:
        print(f"ocr_batch: no images ({SUPPORTED}) in {args.images_dir or args.manifest}", file=sys.stderr)
        return 2
    try:
        summary = run_ocr_batch(
            inputs, args.output, model=args.model, root=root, batch_size=args.batch_size,
            max_tokens=args.max_tokens, max_size=args.max_size, prompt=args.prompt, resume=args.resume,
            verbose=args.verbose, markdown=args.markdown, text_dir=args.text_dir, pdf_dpi=args.pdf_dpi,
            progress=not args.no_progress)
    except (ModelUnavailable, FileExistsError, ValueError) as e:
        print(f"ocr_batch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = shlex.join([sys.executable, *sys.argv] + ([] if args.resume else ["--resume"]))
        print(f"\nocr_batch: interrupted; finished batches are in {args.output}. Continue with:\n  {resume}",
              file=sys.stderr)
        return 130
    print(f"Done: {summary['pages']} pages ({summary['ok']} ok, {summary['errors']} failed"
          + (f", {summary['truncated']} of them truncated" if summary["truncated"] else "")
          + f") in {summary['seconds']:.1f} s, {summary['pages_per_s']:.2f} pages/s"
          + (f"; {summary['skipped']} already in the CSV" if args.resume else ""))
    print(f"  CSV:        {summary['csv']}\n  text files: {summary['text_dir']}")
    if summary["failures"]:
        print("Not ok:")
        for line in summary["failures"][:20]:
            print(f"  {line[:300]}")
        if len(summary["failures"]) > 20:
            print(f"  ... and {len(summary['failures']) - 20} more (see the status column)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Scanned page -> the clean binarized page the OCR handlers read.

grayscale -> optional denoise -> deskew -> binarization (Otsu, adaptive or Sauvola).

Run it on a file or a folder (every page of multi-page TIFFs and PDFs too):

    venv_mlx/bin/python ocr_preprocessor_handler.py --input scan.jpg --output outputs/scan_clean.png
    venv_mlx/bin/python ocr_preprocessor_handler.py --input scans/ --output outputs/clean/ --method otsu
    venv_mlx/bin/python ocr_preprocessor_handler.py --input scan.pdf --output outputs/clean/ --pdf-dpi 300

A file (or a page) that cannot be read is reported on stderr, naming it; the others are still written.
Exit status: 0 all written, 1 some inputs failed, 2 nothing could be read (or bad options).

The library behind it is scripts/preprocessing.py:
`from scripts.preprocessing import preprocess_page` -> `preprocess_page(image, method="sauvola") -> PIL "L" image`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from scripts.image_io import ImageReadError
from scripts.preprocessing import METHODS, collect_inputs, preprocess_file

# ---- Configuration: edit these for your setup; command-line flags override them ----------------
INPUT_PATH = "examples/filled_form_scan_raw.jpg"  # an image file, a PDF or a folder of them
OUTPUT_PATH = "outputs/preprocessed"  # a file (for one single-page input) or a folder
METHOD = "sauvola"  # "otsu", "adaptive" or "sauvola"
DENOISE = False  # non-local-means denoising before binarization (slower; for noisy phone photos)
DENOISE_STRENGTH = None  # None: matched to the noise measured on the page; else a number (~5-40)
DESKEW = True
MAX_SKEW_DEG = 5.0  # largest rotation the deskew step searches for
PDF_DPI = 200  # resolution PDF pages are rendered at
# -----------------------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Clean scanned form pages for OCR: grayscale, optional denoise, deskew, binarize. "
                    "Defaults come from the configuration block at the top of this file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", "-i", default=INPUT_PATH,
                        help="image file (JPEG, PNG, TIFF, BMP, WebP; multi-page TIFF too), PDF (every page) "
                             "or a folder of them")
    parser.add_argument("--output", "-o", default=OUTPUT_PATH,
                        help="output PNG for a single-page input, otherwise a folder (created if missing)")
    parser.add_argument("--method", "-m", choices=METHODS, default=METHOD,
                        help="binarization: otsu (one global threshold; even lighting), adaptive "
                             "(local Gaussian mean), sauvola (local mean and contrast; uneven lighting, faint ink)")
    parser.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=DENOISE,
                        help="non-local-means denoising before binarization")
    parser.add_argument("--denoise-strength", type=float, default=DENOISE_STRENGTH,
                        help="non-local-means filter strength; default: the noise level measured on the page")
    parser.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=DESKEW,
                        help="detect and undo a small page rotation")
    parser.add_argument("--max-skew", type=float, default=MAX_SKEW_DEG, help="largest rotation searched, degrees")
    parser.add_argument("--pdf-dpi", type=float, default=PDF_DPI, help="resolution PDF pages are rendered at")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    input_path, output = Path(args.input), Path(args.output)
    options = dict(method=args.method, denoise=args.denoise, deskew=args.deskew, max_skew=args.max_skew,
                   denoise_strength=args.denoise_strength)
    if not 10 <= args.pdf_dpi <= 1200:
        print(f"error: --pdf-dpi must be 10-1200, got {args.pdf_dpi:g}", file=sys.stderr)
        return 2
    try:
        sources = collect_inputs(input_path)
    except ImageReadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # One single-page file may go to a named .png; anything else goes into a folder.
    output_is_dir = not (len(sources) == 1 and output.suffix.lower() in (".png", ".tif", ".tiff", ".bmp"))
    written, errors = [], []
    for src in tqdm(sources, desc="preprocessing", unit="file", disable=len(sources) < 2):
        try:  # one unreadable file (or page) is reported and skipped; the others are written
            done, failed = preprocess_file(src, output, output_is_dir, dpi=args.pdf_dpi, **options)
        except ImageReadError as e:
            done, failed = [], [str(e)]
        written += done
        errors += failed
    for path in written:
        print(path)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 0 if not errors else 1 if written else 2


if __name__ == "__main__":
    sys.exit(main())

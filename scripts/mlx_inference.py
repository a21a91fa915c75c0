#!/usr/bin/env python3
"""OCR text-line images with an MLX TrOCR model and print each text with its time.

    python scripts/mlx_inference.py --image examples/line.png
    python scripts/mlx_inference.py --model models/mlx/trocr-base-handwritten --image a.png b.jpg --num-beams 4

Without --model, the bundled default model (models/mlx/default) is used. Each image is one text line
(a form field crop); for whole forms use ocr_inference_handler_mlx.py.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import math
import sys
import time
from pathlib import Path

from scripts.image_io import ImageReadError, load_image


def run(model: str | None, images: list[str], dtype: str | None = None, **gen) -> list[dict]:
    """Library entry point: one dict per image with text, score, seconds, error."""
    from scripts.mlx_processor import load_mlx_processor
    from scripts.model_registry import default_model_path

    t0 = time.perf_counter()
    proc = load_mlx_processor(model or default_model_path(), dtype=dtype)
    load_time = time.perf_counter() - t0
    rows = []
    for path in images:
        t = time.perf_counter()
        try:
            text, score = proc.process_image(load_image(path), return_score=True, **gen)
            rows.append({"image": path, "text": text, "confidence": round(math.exp(score), 4),
                         "seconds": round(time.perf_counter() - t, 4), "error": ""})
        except ImageReadError as e:
            rows.append({"image": path, "text": "", "confidence": None, "seconds": 0.0, "error": str(e)})
    return [{"load_time": round(load_time, 3), "model": str(proc.path)}] + rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="converted MLX model folder (default: the bundled models/mlx/default)")
    ap.add_argument("--image", nargs="+", required=True, help="one or more text-line images")
    ap.add_argument("--max-length", type=int, help="max tokens incl. the start token (default: the model's, else 64)")
    ap.add_argument("--max-new-tokens", type=int, help="max generated tokens (overrides --max-length)")
    ap.add_argument("--num-beams", type=int, help="beam search width (default: the model's generation_config.json; 1 = greedy)")
    ap.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    ap.add_argument("--temperature", type=float, help="sampling temperature (only with --do-sample)")
    ap.add_argument("--seed", type=int, help="random seed for --do-sample")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="cast weights (default: as stored)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text lines")
    args = ap.parse_args(argv)
    gen = {k: v for k, v in dict(max_length=args.max_length, max_new_tokens=args.max_new_tokens,
                                 num_beams=args.num_beams, temperature=args.temperature, seed=args.seed).items()
           if v is not None}
    if args.do_sample:
        gen["do_sample"] = True
    try:
        header, *rows = run(args.model, args.image, dtype=args.dtype, **gen)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"metadata": header, "results": rows}, ensure_ascii=False, indent=2))
    else:
        print(f"model {header['model']} loaded in {header['load_time']:.2f}s")
        for r in rows:
            if r["error"]:
                print(f"{r['image']}: ERROR {r['error']}", file=sys.stderr)
            else:
                print(f"{r['image']}\t{r['text']}\t({r['seconds']:.3f}s, confidence {r['confidence']:.2f})")
    failed = sum(1 for r in rows if r["error"])
    if failed:
        print(f"{failed} of {len(rows)} image(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

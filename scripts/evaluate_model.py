#!/usr/bin/env python3
"""Score an MLX TrOCR model (default: the bundled one) next to tesseract and rapidocr on a line manifest.

    python scripts/synth_data.py --out data/eval_heldout --n 600 --seed 7 --font-split heldout
    python scripts/evaluate_model.py data/eval_heldout/manifest.csv --json eval_heldout.json

Our model reads through load_mlx_processor exactly as the handlers do (its generation_config.json's beam
width unless --num-beams says otherwise); the peers
come from evaluate_peers.py (tesseract spa+eng --psm 7, rapidocr recognition only).
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import sys
from pathlib import Path

from scripts.evaluate_peers import evaluate, format_report, make_recognizer
from scripts.model_registry import resolve_model_path


def mlx_recognizer(model_path=None, batch_size: int = 32, dtype=None, num_beams=None):
    from scripts.mlx_processor import load_mlx_processor

    proc = load_mlx_processor(resolve_model_path(model_path), dtype=dtype)
    gen = {"num_beams": num_beams} if num_beams else {}  # None: the model's generation_config.json
    return lambda images: proc.process_batch(images, batch_size=batch_size, show_progress=False, **gen)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", help="manifest.csv from synth_data.py (image,text,font,style,kind)")
    ap.add_argument("--model", help="MLX model folder (default: models/mlx/default)")
    ap.add_argument("--name", default="ours", help="label of our model in the report")
    ap.add_argument("--peers", default="tesseract,rapidocr", help="comma-separated peers ('' for none)")
    ap.add_argument("--limit", type=int, help="first N lines only")
    ap.add_argument("--num-beams", type=int, default=None,
                    help="our model's beam width; 1 = greedy (default: its generation_config.json, as the handlers read)")
    ap.add_argument("--json", help="write the full report here")
    args = ap.parse_args(argv)
    recognizers = {args.name: mlx_recognizer(args.model, num_beams=args.num_beams)}
    for name in filter(None, args.peers.split(",")):
        try:
            recognizers[name] = make_recognizer(name)
        except (RuntimeError, ValueError) as exc:
            print(f"[evaluate_model] skipping {name}: {exc}", file=sys.stderr)
    report = evaluate(args.manifest, recognizers, limit=args.limit)
    report["manifest"] = str(args.manifest)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

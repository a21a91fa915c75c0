#!/usr/bin/env python3
"""Calibrate the review flag of a model: which fields are "doubtful" (flagged for a person to check).

    python scripts/calibrate_confidence.py data/calib/manifest.csv --model models/mlx/default --write

Reads labelled field crops (a manifest as mlx_trainer.py reads it: CSV with image,text columns, JSONL, or a
folder with labels), reads every crop with the model (greedy, as the handlers do), and reports for each
confidence score (scripts/confidence.py: `confidence` = exp(mean token log-prob), `min_confidence` =
exp(lowest token log-prob)) how well it separates wrong fields (text != truth) from right ones: the AUC
(the chance that a wrong field scores lower than a right one) with a bootstrap interval for the
difference, and for thresholds T catching 50-99% of the wrong fields, the share of all fields flagged
(score < T) and of the right fields flagged. The default T catches --catch (90%) of the wrong fields with
the better score; --write stores it as calibration.json in the model folder, where the handlers read it
(results gain `flagged`). A model that already has a calibration gets its threshold's figures on these
crops too (to check a calibration on another set). Calibrate on crops independent of the model's training data
(dev/make_review_forms.py --crops makes some), of the kind the model will read.
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
from typing import Optional, Sequence

import numpy as np

from scripts import confidence as C


def read_manifest(paths: Sequence) -> list[dict]:
    from scripts.mlx_trainer import read_labels

    rows = []
    for p in paths:
        rows += read_labels(p)
    if not rows:
        raise ValueError(f"{', '.join(map(str, paths))}: no labelled lines")
    return rows


def score_fields(model_dir, rows: list[dict], batch_size: int = 16, max_length: int = 64, num_beams: Optional[int] = None,
                 show_progress: bool = True) -> tuple[list[dict], int]:
    """Each row with the model's text, both scores and `wrong`, and the beam width read with (None: the
    model's generation_config.json, as the handlers read). Unreadable images are an error naming them."""
    from PIL import Image
    from tqdm import tqdm

    from scripts.mlx_processor import load_mlx_processor

    processor = load_mlx_processor(model_dir)
    out = []
    with tqdm(total=len(rows), desc="read", unit="field", disable=not show_progress) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            images = []
            for r in chunk:
                try:
                    images.append(Image.open(r["image"]).convert("RGB"))
                except OSError as e:
                    raise ValueError(f"{r['image']}: cannot read image ({e})") from None
            for r, (text, conf, min_conf) in zip(chunk, C.read_lines(processor, images, max_length=max_length,
                                                                     num_beams=num_beams)):
                out.append({"image": r["image"], "truth": r["text"], "text": text, "confidence": conf,
                            "min_confidence": min_conf, "wrong": text != r["text"]})
            bar.update(len(chunk))
    return out, processor.generation_options(max_length=max_length, num_beams=num_beams).num_beams


def auc_difference(a, b, wrong, n: int = 200, seed: int = 0) -> dict:
    """AUC(a) - AUC(b) and a 95% paired-bootstrap interval over fields."""
    a, b, wrong = np.asarray(a), np.asarray(b), np.asarray(wrong)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(wrong), len(wrong))
        da, db = C.auc(a[i], wrong[i]), C.auc(b[i], wrong[i])
        if da is not None and db is not None:
            diffs.append(da - db)
    full_a, full_b = C.auc(a, wrong), C.auc(b, wrong)
    diff = None if full_a is None or full_b is None else full_a - full_b
    low, high = (np.percentile(diffs, [2.5, 97.5]).tolist() if diffs else (None, None))
    return {"difference": diff, "ci95": [low, high], "bootstrap": len(diffs)}


def run(manifests: Sequence, model_dir, catch: float = C.DEFAULT_CATCH, score: Optional[str] = None,
        batch_size: int = 16, max_length: int = 64, num_beams: Optional[int] = None, show_progress: bool = True) -> dict:
    from scripts.metrics import cer

    rows = read_manifest(manifests)
    fields, used_beams = score_fields(model_dir, rows, batch_size, max_length, num_beams, show_progress)
    wrong = [f["wrong"] for f in fields]
    result = C.calibrate({name: [f[name] for f in fields] for name in C.SCORES}, wrong, catch, score)
    result["min_minus_mean_auc"] = auc_difference([f["min_confidence"] for f in fields],
                                                  [f["confidence"] for f in fields], wrong)
    stored = C.load_calibration(model_dir)
    if stored is not None:  # how the model's current threshold does on these crops
        result["at_stored_threshold"] = {"calibration": stored.source, "score": stored.score,
                                         **C.at_threshold([f[stored.score] for f in fields], wrong, stored.threshold)}
    result["num_beams"] = used_beams  # a threshold holds for one way of reading
    result["fields"] = len(fields)
    result["exact"] = sum(not w for w in wrong)
    result["cer"] = cer([f["truth"] for f in fields], [f["text"] for f in fields])
    result["manifest"] = ", ".join(map(str, manifests))
    result["model"] = str(model_dir)
    result["readings"] = fields
    return result


def print_report(result: dict, stream=None) -> None:
    stream = stream or sys.stdout
    n, exact = result["fields"], result["exact"]
    print(f"{n} fields: {exact} read exactly right, {n - exact} wrong ({(n - exact) / n:.1%}); CER {result['cer']:.2%}",
          file=stream)
    for name, rep in result["scores"].items():
        auc = "-" if rep["auc"] is None else f"{rep['auc']:.3f}"
        print(f"\n{name} ({C.SCORES[name]}): AUC {auc}", file=stream)
        print("  threshold  wrong caught   fields flagged   right flagged", file=stream)
        for row in rep["table"]:
            print(f"  {row['threshold']:9.4f}  {row['caught_share']:12.1%}   {row['flagged_share']:14.1%}   "
                  f"{row['right_flagged_share'] or 0:13.1%}", file=stream)
    d = result["min_minus_mean_auc"]
    if d["difference"] is not None:
        print(f"\nAUC min_confidence - confidence: {d['difference']:+.3f} "
              f"(95% bootstrap interval {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})", file=stream)
    s = result.get("at_stored_threshold")
    if s:
        print(f"\nthe model's calibration ({s['calibration']}): {s['score']} < {s['threshold']:.4f} catches {s['caught']} "
              f"of {s['wrong']} wrong fields here ({s['caught_share'] or 0:.1%}), flags {s['flagged']} of {s['fields']} "
              f"({s['flagged_share']:.1%}; {s['right_flagged_share'] or 0:.1%} of the right ones)", file=stream)
    t = result["at_threshold"]
    print(f"\nchosen here: flag a field when {result['score']} < {result['threshold']:.4f}: catches {t['caught']} of "
          f"{t['wrong']} wrong fields ({t['caught_share']:.1%}), flags {t['flagged']} of {t['fields']} fields "
          f"({t['flagged_share']:.1%}; {t['right_flagged_share'] or 0:.1%} of the right ones)", file=stream)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", nargs="+", help="labelled crops: CSV (image,text) / JSONL / folder with labels")
    ap.add_argument("--model", default=None, help="MLX model folder (default: the bundled default model)")
    ap.add_argument("--catch", type=float, default=C.DEFAULT_CATCH,
                    help="share of the wrong fields the default threshold must flag (default: %(default)s)")
    ap.add_argument("--score", choices=list(C.SCORES), help="score to threshold (default: the one with the higher AUC)")
    ap.add_argument("--write", action="store_true", help=f"store the result as MODEL/{C.CALIBRATION_FILE}")
    ap.add_argument("--json", metavar="FILE", help="write the full report (with every field's reading) here")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64, help="tokens per field, start token included")
    ap.add_argument("--num-beams", type=int, default=None,
                    help="read with this beam width (default: the model's generation_config.json, as the handlers do)")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    if not 0 < args.catch <= 1:
        ap.error("--catch must be in (0, 1]")
    try:
        if args.model is None:
            from scripts.model_registry import default_model_path

            args.model = str(default_model_path())
        result = run(args.manifest, args.model, args.catch, args.score, args.batch_size, args.max_length,
                     args.num_beams, args.progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"report    {args.json}")
    if args.write:
        path = C.write_calibration(args.model, result, result["manifest"], result["model"])
        print(f"written   {path} (the handlers flag fields with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

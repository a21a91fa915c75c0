"""Alignment benchmark: register a sweep of filled, scanned forms and score every page against its
true transform.

The pages come from dev/form_scans.py (written independently of the pipeline): the shipped 18-box
template (square boxes) and a 7-box rounded-corner template drawn there, with and without printed
cell outlines, grey and Otsu-binarized, 150/200/300 dpi, rotation +-3 deg, scale 0.94-1.06, shift
+-40 px, blur, noise, JPEG; boxes near the edges leave the scanned area on many pages. Each page is
registered by alignment.align_page, exactly as the OCR handlers do, and counted as

    aligned   called ok, and every box corner within --tolerance px of where the truth puts it
    failed    reported as not aligned (ok = false, with the reasons): the honest outcome
    WRONG     called ok but some corner is further off: a silent wrong answer, must be 0

Controls (--controls) add pages that must be reported failed: scans registered against the other
template, pages scanned upside down, and "dropout" forms whose faint red boxes vanish in
binarization (no outlines printed).

    venv_mlx/bin/python dev/benchmark_alignment.py                    # 25 pages x 8 conditions = 200
    venv_mlx/bin/python dev/benchmark_alignment.py --pages 5 --controls --jsonl outputs/align.jsonl

Prints a Markdown table per condition and the time per page (wall and CPU, naming this CPU).
Exit status 1 when any page is WRONG.
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from dev import form_scans as fs
from scripts import alignment
from scripts.benchmark_pytorch_vs_mlx import cpu_name  # names the CPU the way the speed benchmark does

TOLERANCE_PX = 3.0
CONTROLS = ("wrong-template", "upside-down", "dropout")
Condition = Tuple[str, bool, bool]  # template, outlines, binarized


def dropout_template(spec: fs.TemplateSpec, strength: float = 0.35) -> fs.TemplateSpec:
    """The template's red printed faint (alpha x strength): Otsu binarization drops such boxes."""
    rgba = np.asarray(spec.image).copy()
    rgba[..., 3] = (rgba[..., 3] * strength).astype(np.uint8)
    return fs.TemplateSpec(spec.name, Image.fromarray(rgba), spec.boxes, spec.radius)


class Templates:
    """Both templates as spec (for drawing) and file (for the aligner, which reads a path)."""

    def __init__(self, folder: Path):
        self.specs = {name: fs.template_for(name) for name in ("square", "rounded")}
        self.paths = {}
        for name, spec in self.specs.items():
            self.paths[name] = folder / f"template_{name}.png"
            spec.image.save(self.paths[name])


def score_page(scan: fs.Scan, template_path, truth_known: bool = True, tolerance: float = TOLERANCE_PX) -> dict:
    """Register one scan and judge the answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the verdict is recorded; the aligner's warning is not needed
        wall, cpu = time.perf_counter(), time.process_time()
        result = alignment.align_page(scan.image, template_path)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    error = fs.corner_error(result.matrix, scan.matrix, scan.boxes) if truth_known else float("inf")
    if not result.ok:
        verdict = "failed"
    elif error <= tolerance:
        verdict = "aligned"
    else:
        verdict = "WRONG"
    return {"ok": bool(result.ok), "verdict": verdict, "corner_error_px": round(error, 3) if truth_known else None,
            "method": result.method, "score": round(float(result.score), 4), "reasons": result.reasons,
            "checks": {k: result.checks.get(k) for k in ("box_score", "edge_score", "corner_drift_px")},
            "align_s": round(wall, 4), "cpu_s": round(cpu, 4)}


def run_condition(templates: Templates, condition: Condition, seed: int, tolerance: float = TOLERANCE_PX) -> dict:
    template, outlines, binarized = condition
    scan = fs.make_scan(templates.specs[template], seed, outlines, binarized)
    record = {"condition": fs.condition_name(*condition), "seed": seed, **_params(scan)}
    record.update(score_page(scan, templates.paths[template], tolerance=tolerance))
    return record


def run_control(templates: Templates, kind: str, template: str, seed: int, tolerance: float = TOLERANCE_PX) -> dict:
    """'wrong-template': a form of `template` registered against the other one (any ok is WRONG);
    'upside-down': a page fed into the scanner the wrong way round (any ok is WRONG);
    'dropout': faint red boxes, no outlines, binarized (ok is fine only when it is right)."""
    if kind == "upside-down":
        scan = fs.make_scan(templates.specs[template], seed, bool(seed % 2), bool(seed % 3 == 0))
        scan.image = scan.image.rotate(180)
        record = {"condition": f"control/{template}/upside-down", "seed": seed, **_params(scan)}
        record.update(score_page(scan, templates.paths[template], truth_known=False, tolerance=tolerance))
    elif kind == "wrong-template":
        other = "rounded" if template == "square" else "square"
        scan = fs.make_scan(templates.specs[template], seed, bool(seed % 2), bool(seed % 3 == 0))
        record = {"condition": f"control/{template}-form-vs-{other}-template", "seed": seed, **_params(scan)}
        record.update(score_page(scan, templates.paths[other], truth_known=False, tolerance=tolerance))
    elif kind == "dropout":
        scan = fs.make_scan(dropout_template(templates.specs[template]), seed, False, True)
        record = {"condition": f"control/{template}/dropout-red/binarized", "seed": seed, **_params(scan)}
        record.update(score_page(scan, templates.paths[template], tolerance=tolerance))
    else:
        raise ValueError(f"unknown control {kind!r}")
    return record


def _params(scan: fs.Scan) -> dict:
    p = scan.params
    return {"dpi": p["dpi"], "angle_deg": p["angle_deg"], "scale": p["scale"], "shift_px": p["shift_px"],
            "boxes_off_page": len(p["off_page_boxes"])}


def jobs(conditions: Sequence[Condition], seeds: Iterable[int], controls: bool) -> List[tuple]:
    seeds = list(seeds)
    out = [("page", c, s) for c in conditions for s in seeds]
    if controls:
        out += [("control", (kind, t), s) for kind in CONTROLS for t in ("square", "rounded")
                for s in seeds]
    return out


def _run(job, templates: Templates, tolerance: float) -> dict:
    kind, what, seed = job
    if kind == "page":
        return run_condition(templates, what, seed, tolerance)
    return run_control(templates, what[0], what[1], seed, tolerance)


def sweep(conditions: Sequence[Condition] = fs.CONDITIONS, seeds: Iterable[int] = range(25), controls: bool = False,
          tolerance: float = TOLERANCE_PX, workers: int = 1, progress: bool = True, folder=None,
          on_record: Optional[Callable[[dict], None]] = None) -> List[dict]:
    """Every (condition, seed) page (and the controls), registered and judged; one record each,
    also passed to `on_record` as soon as it is made."""
    todo = jobs(conditions, seeds, controls)
    with tempfile.TemporaryDirectory() as tmp:
        templates = Templates(Path(folder or tmp))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="pages", unit="page")
        records = []
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_run, todo, [templates] * len(todo), [tolerance] * len(todo))
                for record in results:
                    _collect(record, records, on_record, bar)
        else:
            for job in todo:
                _collect(_run(job, templates, tolerance), records, on_record, bar)
        if bar is not None:
            bar.close()
    return records


def _collect(record: dict, records: List[dict], on_record, bar) -> None:
    records.append(record)
    if on_record is not None:
        on_record(record)
    if bar is not None:
        bar.update(1)
        if record["verdict"] != "aligned" and not record["condition"].startswith("control/"):
            bar.write(f"{record['verdict']}: {record['condition']} seed {record['seed']}")


def table(records: Sequence[dict], tolerance: float = TOLERANCE_PX) -> str:
    """Markdown: per condition, then all regular pages, then the controls."""
    groups: Dict[str, List[dict]] = {}
    for r in records:
        groups.setdefault(r["condition"], []).append(r)
    header = (f"| condition | pages | with boxes off the page | within {tolerance:g} px | reported failed "
              f"| WRONG, called ok | worst error when ok (px) | s/page (wall) |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lines = [header]

    def row(name, rs):
        ok_errors = [r["corner_error_px"] for r in rs if r["ok"] and r["corner_error_px"] is not None]
        worst = f"{max(ok_errors):.2f}" if ok_errors else "-"
        n = len(rs)
        aligned = sum(r["verdict"] == "aligned" for r in rs)
        failed = sum(r["verdict"] == "failed" for r in rs)
        wrong = sum(r["verdict"] == "WRONG" for r in rs)
        off = sum(r["boxes_off_page"] > 0 for r in rs)
        mean_s = statistics.fmean(r["align_s"] for r in rs)
        return (f"| {name} | {n} | {off} | {aligned} ({aligned / n:.1%}) | {failed} | {wrong} | {worst} "
                f"| {mean_s:.2f} |")

    regular = [r for r in records if not r["condition"].startswith("control/")]
    controls = [r for r in records if r["condition"].startswith("control/")]
    for name in sorted(k for k in groups if not k.startswith("control/")):
        lines.append(row(name, groups[name]))
    if regular:
        lines.append(row("**all pages**", regular))
    for name in sorted(k for k in groups if k.startswith("control/")):
        lines.append(row(name, groups[name]))
    if controls:
        lines.append(row("**all controls**", controls))
    return "\n".join(lines)


def timing(records: Sequence[dict]) -> str:
    wall = [r["align_s"] for r in records]
    cpu = [r["cpu_s"] for r in records]
    return (f"time per page (align_page only, {len(records)} pages): wall median {statistics.median(wall):.2f} s, "
            f"mean {statistics.fmean(wall):.2f} s, max {max(wall):.2f} s; CPU mean {statistics.fmean(cpu):.2f} s "
            f"(all threads) on {cpu_name()} ({os.cpu_count()} cores)")


def parse_conditions(text: Optional[str]) -> List[Condition]:
    if not text:
        return list(fs.CONDITIONS)
    wanted = set(text.split(","))
    known = {fs.condition_name(*c): c for c in fs.CONDITIONS}
    unknown = wanted - set(known)
    if unknown:
        raise SystemExit(f"unknown condition(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    return [known[name] for name in known if name in wanted]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=25,
                        help="pages per condition (8 conditions: template x outlines x grey/binarized) (default: 25)")
    parser.add_argument("--seed", type=int, default=0, help="first page seed; pages are seed..seed+pages-1 (default: 0)")
    parser.add_argument("--conditions", default=None,
                        help="comma-separated subset, e.g. square/outlines/grey,rounded/no-outlines/binarized "
                             "(default: all 8)")
    parser.add_argument("--controls", action="store_true",
                        help="also run the controls that must be reported failed (wrong template, dropout red)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_PX,
                        help="largest box-corner error (scan pixels) that counts as aligned (default: 3)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes; timings are per page either way, but only meaningful when the CPU "
                             "is not oversubscribed (default: 1)")
    parser.add_argument("--jsonl", default=None, help="write one JSON record per page here")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = parser.parse_args(argv)
    if args.pages < 1:
        parser.error("--pages must be >= 1")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = None
    if args.jsonl:
        Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
        out = open(args.jsonl, "w", encoding="utf-8")

    def write(record):
        if out is not None:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()

    try:
        records = sweep(parse_conditions(args.conditions), range(args.seed, args.seed + args.pages), args.controls,
                        args.tolerance, args.workers, args.progress, on_record=write)
    finally:
        if out is not None:
            out.close()
    print(table(records, args.tolerance))
    print()
    print(timing(records) + f"; load average {load:.1f} at the start")
    bad = [r for r in records if r["verdict"] == "WRONG"]
    for r in bad:
        print(f"WRONG: {r['condition']} seed {r['seed']}: called ok, corner error {r['corner_error_px']} px")
    failed = [r for r in records if r["verdict"] == "failed" and not r["condition"].startswith("control/")]
    for r in failed:
        print(f"failed: {r['condition']} seed {r['seed']}: {'; '.join(r['reasons'])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

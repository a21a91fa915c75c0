"""Human review of OCR results: list the fields of processed forms, record a person's verdicts in the results
files, and export the reviewed fields as a training manifest. The web page is scripts/review_server.py.

A results folder is what the handlers write for one scan (results.json, results.csv, regions/); a folder of
such folders (directory mode, with combined_results.csv) counts as all of them. Reviewing field R of a form:

- results.json: regions[R] gains `reviewed_text` (the person's text) and `reviewed` (true); `text`, the
  model's reading, stays. `reviewed_text=None, reviewed=False` undoes it. Every other key is left as found.
- results.csv (and the parent's combined_results.csv in directory mode): the row of R gains the same two
  columns; other columns and rows are left as found.
- Each file is rewritten atomically (a temporary file, fsync, rename): a crash leaves the old or the new
  file, never half of one; results.json is read again before each change, so nothing written meanwhile
  is lost.

The corrections manifest (`write_corrections`) lists every reviewed field, accepted or corrected: `image`
(the crop, relative to the manifest's folder) and `text` (the reviewed text), the columns
`mlx_trainer.py train --train-manifest` reads, plus form, region, model_text, confidence, corrected.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from scripts import atomic

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
COMBINED_CSV = "combined_results.csv"
REVIEW_COLUMNS = ("reviewed_text", "reviewed")
MANIFEST_COLUMNS = ("image", "text", "form", "region", "model_text", "confidence", "corrected")


class ReviewError(ValueError):
    """A results folder that cannot be reviewed, or a field that does not exist; the message names it."""


@dataclass(frozen=True)
class Form:
    """One processed scan: its results folder and the name the page shows."""

    name: str
    dir: Path

    @property
    def results_json(self) -> Path:
        return self.dir / RESULTS_JSON


def find_forms(paths: Iterable) -> List[Form]:
    """The processed scans under `paths`: folders holding results.json, or folders of them (one level,
    as directory mode writes). Names are the folder names, made unique with their parent's when needed."""
    dirs: List[Path] = []
    for p in map(Path, paths):
        if (p / RESULTS_JSON).is_file():
            dirs.append(p)
        elif p.is_dir():
            found = sorted(q.parent for q in p.glob(f"*/{RESULTS_JSON}"))
            if not found:
                raise ReviewError(f"{p}: no {RESULTS_JSON} here or in its subfolders (process scans with "
                                  "ocr_inference_handler_mlx.py first)")
            dirs.extend(found)
        else:
            raise ReviewError(f"{p}: not found" if not p.exists() else f"{p}: not a results folder")
    dirs = list(dict.fromkeys(d.resolve() for d in dirs))
    names = [d.name for d in dirs]
    return [Form(n if names.count(n) == 1 else f"{d.parent.name}/{n}", d) for n, d in zip(names, dirs)]


def read_record(form: Form) -> dict:
    try:
        record = json.loads(form.results_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReviewError(f"{form.results_json}: cannot read ({e})") from None
    if not isinstance(record.get("regions"), list):
        raise ReviewError(f"{form.results_json}: no 'regions' list")
    return record


def list_fields(forms: Sequence[Form], threshold: Optional[float] = None) -> List[dict]:
    """Every field of every form, least sure first: by `score`, the value the form's results were flagged
    by (results.json "flagging": min_confidence for a calibrated model), else the confidence. `flagged` is
    the results' own flag; for results written before flags existed, confidence < `threshold` (None when
    there is neither)."""
    fields = []
    for index, form in enumerate(forms):
        record = read_record(form)
        score_name = (record.get("flagging") or {}).get("score") or "confidence"
        for row in record["regions"]:
            flagged = row.get("flagged")
            if flagged is None and threshold is not None and row.get("confidence") is not None:
                flagged = row["confidence"] < threshold
            fields.append({
                "id": f"{index}/{row['region']}", "form": form.name, "form_index": index, "scan": record.get("scan"),
                "region": row["region"], "bbox": row.get("bbox"), "text": row.get("text", ""),
                "confidence": row.get("confidence"), "min_confidence": row.get("min_confidence"),
                "score": row.get(score_name, row.get("confidence")), "flagged": flagged,
                "reviewed_text": row.get("reviewed_text"), "reviewed": bool(row.get("reviewed", False)),
                "crop": row.get("crop"),
            })
    fields.sort(key=lambda f: (-1.0 if f["score"] is None else f["score"], f["form_index"], f["region"]))
    return fields


def crop_path(form: Form, field: dict) -> Path:
    """The crop image of a field, refusing paths that leave the form's folder."""
    if not field.get("crop"):
        raise ReviewError(f"{form.results_json}: region {field['region']} has no crop")
    path = (form.dir / field["crop"]).resolve()
    if form.dir.resolve() not in path.parents:
        raise ReviewError(f"{form.results_json}: crop path {field['crop']!r} is outside the results folder")
    return path


# --------------------------------------------------------------------------------------------
# Writing verdicts
# --------------------------------------------------------------------------------------------

def _update_csv(path: Path, match, values: Dict[str, str]) -> bool:
    """Set `values` in the rows of the CSV at `path` for which match(row) is true, adding missing columns
    at the end; everything else is written back as read. False when no row matched."""
    if not path.is_file():
        return False
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    header += [c for c in values if c not in header]
    hit = False
    for row in rows:
        if match(row):
            row.update(values)
            hit = True
    if hit:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_text(path, buffer.getvalue())
    return hit


class Reviewer:
    """Applies verdicts to the results files of `forms`, one at a time (a lock serialises the web server's
    threads), and keeps the corrections manifest at `manifest` up to date after each one."""

    def __init__(self, forms: Sequence[Form], manifest: Optional[Path] = None, threshold: Optional[float] = None):
        if not forms:
            raise ReviewError("no forms to review")
        self.forms, self.threshold = list(forms), threshold
        self.manifest = Path(manifest) if manifest else None
        self.lock = threading.Lock()

    def fields(self) -> List[dict]:
        return list_fields(self.forms, self.threshold)

    def form(self, index: int) -> Form:
        if not 0 <= index < len(self.forms):
            raise ReviewError(f"no form number {index} (there are {len(self.forms)})")
        return self.forms[index]

    def field(self, index: int, region: int) -> dict:
        for f in list_fields([self.form(index)], self.threshold):
            if f["region"] == region:
                return {**f, "id": f"{index}/{region}", "form_index": index}
        raise ReviewError(f"{self.form(index).results_json}: no region {region}")

    def review(self, index: int, region: int, text: Optional[str]) -> dict:
        """Record `text` as the reviewed text of a field (text=None: back to unreviewed); the field as stored."""
        if text is not None and not isinstance(text, str):
            raise ReviewError("text must be a string or null")
        form = self.form(index)
        with self.lock:
            record = read_record(form)
            rows = [r for r in record["regions"] if r.get("region") == region]
            if not rows:
                raise ReviewError(f"{form.results_json}: no region {region}")
            rows[0]["reviewed_text"] = text
            rows[0]["reviewed"] = text is not None
            atomic.write_json(form.results_json, record)
            values = {"reviewed_text": "" if text is None else text, "reviewed": str(text is not None)}
            _update_csv(form.dir / RESULTS_CSV, lambda r: r.get("region") == str(region), values)
            combined = form.dir.parent / COMBINED_CSV
            scan, page = str(record.get("scan")), "" if record.get("page") is None else str(record["page"])
            _update_csv(combined, lambda r: r.get("scan") == scan and r.get("page", "") == page
                        and r.get("region") == str(region), values)
            if self.manifest is not None:
                write_corrections(self.forms, self.manifest)
        return self.field(index, region)


# --------------------------------------------------------------------------------------------
# The corrections manifest
# --------------------------------------------------------------------------------------------

def corrections(forms: Sequence[Form]) -> List[dict]:
    """Every reviewed field as a manifest row (absolute image paths)."""
    out = []
    for form in forms:
        for f in list_fields([form]):
            if f["reviewed"] and f["reviewed_text"] is not None:
                out.append({"image": str(crop_path(form, f)), "text": f["reviewed_text"], "form": form.name,
                            "region": f["region"], "model_text": f["text"], "confidence": f["confidence"],
                            "corrected": f["reviewed_text"] != f["text"]})
    return out


def write_corrections(forms: Sequence[Form], path) -> int:
    """Write the corrections manifest (CSV, image paths relative to its folder); returns its row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = corrections(forms)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "image": os.path.relpath(row["image"], path.parent.resolve())})
    atomic.write_text(path, buffer.getvalue())
    return len(rows)

"""Template-guided form OCR: everything the MLX and PyTorch handlers share except the engine.

    scan -> (optional preprocessing) -> registration to the template -> one crop per red box
         -> OCR of every crop in batches (base model, and the fine-tuned model when given) -> outputs

The handlers (`ocr_inference_handler_mlx.py`, `ocr_inference_handler.py`) hold only a configuration
block, an engine and `main()`; they call `run_cli`, which parses the shared flags over the block and
runs `run_form` (one scan) or `run_directory` (a folder of scans against one template).

An engine is anything with `name`, `describe()` and `recognize(images) -> [(text, confidence,
min_confidence)]` (or `(text, confidence)` pairs), made by an engine factory `factory(model, role, config)`;
`model` is what the user passed (None: the handler's default), `role` is "base" or "finetuned". The
confidence is exp of the mean log-probability of the recognised tokens (end-of-text token included), in
(0, 1]; min_confidence is exp of the lowest one. Each field is `flagged` for review when the calibrated
score of the model that gave its text is below the model's threshold (scripts/confidence.py), when its
box is partly off the scan, and on a page that could not be aligned.

Outputs of one scan page (in `output_dir`):
    extracted_texts.txt  "Region N: text", one line per region
    results.json         metadata (template, scan, page, alignment, models, settings, timings) + regions
    results.csv          one row per region
    guided_image.png     the aligned scan with the template's boxes drawn over it in red, numbered
    regions/region_NN.png  one crop per region (inside the outline), NN = region number
    annotated_page.png   the guided scan on top, below it each box with "number: recognised text"
The texts, results.json and results.csv are written first (atomically) and the pictures after them,
so a picture that cannot be made loses no result; a text is drawn with the characters the font
cannot show escaped (forms.drawable_text), while the results keep it exactly as the model gave it.

Every page of a file is a page to OCR: a multi-page PDF (rendered at `pdf_dpi`) or TIFF, given as the
scan or found in a folder, gives one output folder per page, `<stem>_p<N>`. A folder of scans, or one
multi-page file, gives one such folder per page plus `combined_results.csv` and `summary.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
from PIL import Image

from scripts import alignment as registration
from scripts import atomic, forms
from scripts.confidence import Flagging, confidence_from_logprob, flagging_for, implausible_reading  # noqa: F401 (re-exported)
from scripts.image_io import (IMAGE_EXTENSIONS, PDF_DPI, ImageReadError, batches_by_width, count_pages,
                              is_image_path, load_image)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Per-region fields of results.json / results.csv (the CSV writes bbox as "[x, y, w, h]").
REGION_FIELDS = ["region", "bbox", "text", "base_text", "finetuned_text", "confidence",
                 "base_confidence", "finetuned_confidence", "min_confidence", "flagged", "doubt", "off_page",
                 "visible_fraction", "crop"]
COMBINED_FIELDS = ["scan", "page", "status", "error", "output_dir", "alignment_method",
                   "alignment_score"] + REGION_FIELDS

OUTPUT_FILES = {
    "guided": "guided_image.png",
    "annotated": "annotated_page.png",
    "texts": "extracted_texts.txt",
    "json": "results.json",
    "csv": "results.csv",
    "regions": "regions",
}
COMBINED_CSV = "combined_results.csv"
# A region whose box has less than this part on the scanned page is marked off_page.
OFF_PAGE_BELOW = 0.999
SUMMARY_JSON = "summary.json"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass
class FormOCRConfig:
    """One form-OCR run. The handlers fill it from their configuration block and the flags."""

    template: str = str(forms.DEFAULT_TEMPLATE)
    image: str = str(REPO_ROOT / "examples" / "filled_form_scan.png")  # a scan (image/PDF), or a folder of scans
    output_dir: str = "outputs/form"
    base_model: Optional[str] = None  # None: the handler's default model
    finetuned_model: Optional[str] = None  # OCR every region with this one too when given
    max_length: int = 64  # tokens per region, start token included (as transformers' max_length)
    num_beams: Optional[int] = None  # None: the model's generation_config.json; 1 = greedy
    batch_size: int = 8  # regions per forward pass
    dtype: Optional[str] = None  # float32 / float16 / bfloat16; None: as stored
    device: Optional[str] = None  # engine-specific ("cpu"/"gpu" for MLX, "cpu"/"cuda"/"mps" for torch)
    preprocess: bool = False  # the scan is already binarized; True runs scripts/preprocessing.py first
    binarize_method: str = "sauvola"  # when preprocessing: otsu, adaptive or sauvola
    denoise: bool = False  # when preprocessing
    deskew: bool = True  # when preprocessing
    align: bool = True  # register the scan to the template (False: only resize it to the template)
    strict_align: bool = False  # a scan that cannot be registered is an error instead of a warning
    reference: Optional[str] = None  # a blank scan of the form in the template frame (better registration)
    inner_crop: bool = True  # crop inside the red outline, so the line itself is not OCRed
    trim_crops: bool = True  # cut each crop down to its ink (line recognisers misread mostly-empty boxes)
    ground_truth: Optional[str] = None  # JSON {region number: text}: score the results (field accuracy, CER)
    pdf_dpi: float = PDF_DPI  # resolution PDF pages are rendered at
    flag_threshold: Optional[float] = None  # flag fields whose score is below this (None: the model's calibration)
    show_progress: bool = True
    engine_options: Dict[str, Any] = field(default_factory=dict)  # what only one handler's engine reads

    def settings(self) -> dict:
        """The OCR/pipeline settings as recorded in results.json."""
        keys = ("max_length", "num_beams", "batch_size", "dtype", "device", "preprocess", "binarize_method",
                "denoise", "deskew", "align", "strict_align", "reference", "inner_crop", "trim_crops", "pdf_dpi")
        out = {k: getattr(self, k) for k in keys}
        out.update({k: str(v) if isinstance(v, Path) else v for k, v in self.engine_options.items()})
        return out


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------

class Engine(Protocol):
    """A text-line recognizer. `recognize` gets one batch of crops (PIL images)."""

    name: str

    def recognize(self, images: Sequence[Image.Image]) -> List[Tuple[str, float]]:
        ...

    def describe(self) -> dict:
        ...


EngineFactory = Callable[[Optional[str], str, FormOCRConfig], Engine]


@dataclass
class Engines:
    base: Engine
    finetuned: Optional[Engine] = None
    load_s: float = 0.0
    flagging: Dict[str, Flagging] = field(default_factory=dict)  # per role: how its fields are flagged


def load_engines(config: FormOCRConfig, engine_factory: EngineFactory) -> Engines:
    """The engines, and per engine the flag rule: the calibration.json in its model folder
    (describe()["model"]), or --flag-threshold, or the uncalibrated default."""
    t0 = time.perf_counter()
    base = engine_factory(config.base_model, "base", config)
    finetuned = engine_factory(config.finetuned_model, "finetuned", config) if config.finetuned_model else None
    flagging = {}
    for role, engine in (("base", base), ("finetuned", finetuned)):
        if engine is not None:
            info = engine.describe()
            flagging[role] = check_beams(flagging_for(info.get("model"), config.flag_threshold), info.get("num_beams"))
    return Engines(base, finetuned, time.perf_counter() - t0, flagging)


def check_beams(flagging: Flagging, num_beams: Optional[int]) -> Flagging:
    """A calibration holds for the way of reading it was made with: when this run reads with another beam
    width, say so (console and results.json) rather than flag by a threshold that does not fit."""
    made_with = flagging.details.get("num_beams")
    if not made_with or not num_beams or made_with == num_beams:
        return flagging
    message = (f"{flagging.source} was made reading with {made_with} beam(s), this run reads with {num_beams}: "
               f"its threshold may catch fewer wrong fields than it says. Calibrate for this setting: "
               f"python scripts/calibrate_confidence.py MANIFEST --model MODEL --num-beams {num_beams}")
    warnings.warn(message, stacklevel=2)
    return replace(flagging, details={**flagging.details, "warning": message})


def recognize_all(engine: Engine, crops: Sequence[Image.Image], batch_size: int,
                  bar=None) -> List[Tuple[str, float, Optional[float]]]:
    """Every crop through `engine`, at most `batch_size` at a time, crops of similar width together (so a
    batch's fields finish decoding together, image_io.batches_by_width); results in the crops' order.
    Checks the engine's answer per batch. Returns (text, confidence, min_confidence) triples
    (min_confidence None from an engine giving pairs)."""
    out: List[Optional[Tuple[str, float, Optional[float]]]] = [None] * len(crops)
    for batch in batches_by_width(crops, batch_size):
        result = list(engine.recognize([crops[i] for i in batch]))
        if len(result) != len(batch):
            raise RuntimeError(f"engine {engine.name} returned {len(result)} results for {len(batch)} images")
        for i, item in zip(batch, result):
            text, conf, *rest = item
            out[i] = (str(text), float(conf), float(rest[0]) if rest and rest[0] is not None else None)
        if bar is not None:
            bar.update(len(batch))
    return out


# --------------------------------------------------------------------------------------------
# One scan
# --------------------------------------------------------------------------------------------

@dataclass
class Template:
    path: str
    regions: List[forms.Region]
    size: Tuple[int, int]


def load_template(path) -> Template:
    """The template's regions; ImageReadError / TemplateError name the file."""
    regions = forms.find_regions(path)
    return Template(str(path), regions, load_image(path, mode="RGB").size)


def align_scan(scan: Image.Image, template: Template, config: FormOCRConfig, name: str) -> Tuple[Image.Image, dict]:
    """(page in the template frame, alignment record for results.json). A page that fails the checks
    is warned about (naming the scan and why) and recorded with "ok": false and its reasons; with
    `strict_align` it raises AlignmentError instead."""
    if not config.align:
        tw, th = template.size
        matrix = np.diag([scan.width / tw, scan.height / th, 1.0])
        page = scan if scan.size == template.size else scan.resize(template.size, Image.BILINEAR)
        return page, {"enabled": False, "method": "none", "score": None, "ok": True,
                      "message": "alignment off: the scan was only resized to the template", "reasons": [],
                      "matrix": matrix.round(6).tolist(), **registration.transform_summary(matrix)}
    anonymous = forms.describe(scan)  # "<Image>": messages should name the scan file instead
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            alignment = registration.align_page(scan, template.path, reference=config.reference,
                                                 strict=config.strict_align)
        except registration.AlignmentError as e:
            raise registration.AlignmentError(str(e).replace(anonymous, name)) from None
    for w in caught:
        warnings.warn(str(w.message).replace(anonymous, name), w.category, stacklevel=2)
    message = alignment.message.replace(anonymous, name)
    score = alignment.score if math.isfinite(alignment.score) else None
    return alignment.aligned, {"enabled": True, "method": alignment.method,
                               "score": None if score is None else round(float(score), 4),
                               "ok": bool(alignment.ok), "message": message, "reasons": list(alignment.reasons),
                               "checks": alignment.checks,
                               "matrix": np.asarray(alignment.matrix).round(6).tolist(),
                               **registration.transform_summary(np.asarray(alignment.matrix))}


def visible_fractions(regions: Sequence[forms.Region], matrix, scan_size) -> List[float]:
    """Per region, the part of its box that lies on the scanned page (1.0: all of it)."""
    return [registration.visible_fraction(np.asarray(matrix), region.bbox, scan_size) for region in regions]


def load_scan(path, config: FormOCRConfig, page: Optional[int] = None) -> Image.Image:
    """Page `page` (1-based; None: a single-page file) of the scan as an "L" image, preprocessed
    (binarized, deskewed) when the config asks for it."""
    scan = load_image(path, mode="L", page=page or 1, dpi=config.pdf_dpi)
    if config.preprocess:
        from scripts.preprocessing import preprocess_page  # OpenCV work, only when asked for

        scan = preprocess_page(scan, method=config.binarize_method, denoise=config.denoise, deskew=config.deskew)
    return scan


def scan_name(scan_path, page: Optional[int] = None, pages: int = 1) -> str:
    """How messages name a scan page: the file, and "(page N/M)" for a page of a multi-page file."""
    return f"{scan_path} (page {page}/{pages})" if page is not None else str(scan_path)


def process_scan(scan_path, template: Template, engines: Engines, config: FormOCRConfig,
                 output_dir, show_progress: Optional[bool] = None, page: Optional[int] = None,
                 pages: int = 1) -> dict:
    """OCR one scan page into `output_dir`; returns the results record (as written to results.json).
    `page` (1-based) of `pages` picks a page of a multi-page file; None: a single-page file."""
    show_progress = config.show_progress if show_progress is None else show_progress
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    out = Path(output_dir)
    name = scan_name(scan_path, page, pages)

    t0 = time.perf_counter()
    scan = load_scan(scan_path, config, page)
    timings["load_scan_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    page_img, alignment = align_scan(scan, template, config, name)
    timings["align_s"] = time.perf_counter() - t0

    regions = template.regions
    # A box the scanner cut off is cropped from blank paper where the page is missing: marked, not
    # passed off as a full reading.
    visible = visible_fractions(regions, alignment["matrix"], scan.size)
    crops = forms.crop_regions(page_img, regions, inner=config.inner_crop, trim=config.trim_crops)
    models = [("base", engines.base)] + ([("finetuned", engines.finetuned)] if engines.finetuned else [])
    results: Dict[str, List[Tuple[str, float, Optional[float]]]] = {}
    bar = None
    if show_progress:
        from tqdm import tqdm

        label = Path(scan_path).name + (f" p{page}" if page is not None else "")
        bar = tqdm(total=len(crops) * len(models), desc=f"OCR {label}", unit="region")
    try:
        for role, engine in models:
            if bar is not None:
                bar.set_postfix_str(role)
            t0 = time.perf_counter()
            results[role] = recognize_all(engine, crops, config.batch_size, bar)
            timings[f"ocr_{role}_s"] = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()

    chosen = "finetuned" if engines.finetuned else "base"
    flagging = engines.flagging.get(chosen) or flagging_for(None, config.flag_threshold)
    rows = []
    for i, region in enumerate(regions):
        base_text, base_conf, _ = results["base"][i]
        ft_text, ft_conf, _ = results["finetuned"][i] if "finetuned" in results else (None, None, None)
        text, conf, min_conf = results[chosen][i]
        row = {
            "region": region.number,
            "bbox": [int(v) for v in region.bbox],
            "text": text,
            "base_text": base_text,
            "finetuned_text": ft_text,
            "confidence": round(conf, 6),
            "base_confidence": round(base_conf, 6),
            "finetuned_confidence": None if ft_conf is None else round(ft_conf, 6),
            "min_confidence": None if min_conf is None else round(min_conf, 6),
            "off_page": visible[i] < OFF_PAGE_BELOW,
            "visible_fraction": round(visible[i], 4),
            "crop": f"{OUTPUT_FILES['regions']}/{forms.region_filename(region)}",
        }
        # doubtful whatever the model says: a box partly off the scan, any box of a page not aligned, a
        # reading that cannot be right (`doubt` says why)
        row["doubt"] = implausible_reading(text)
        row["flagged"] = True if row["off_page"] or not alignment["ok"] or row["doubt"] else flagging.flag(row)
        rows.append(row)

    record = {
        "template": template.path,
        "scan": str(scan_path),
        "page": page,
        "pages": pages,
        "scan_size": list(scan.size),
        "template_size": list(template.size),
        "output_dir": str(out),
        "alignment": alignment,
        "models": {"base": engines.base.describe(),
                   "finetuned": engines.finetuned.describe() if engines.finetuned else None,
                   "text_from": chosen},
        "settings": config.settings(),
        "timings": {},
        "flagging": {**flagging.describe(), "model": chosen, "flagged": sum(bool(r["flagged"]) for r in rows)},
        "num_regions": len(rows),
        "off_page_regions": [row["region"] for row in rows if row["off_page"]],
        "regions": rows,
    }
    if config.ground_truth:
        record["accuracy"] = score_against_ground_truth(rows, config.ground_truth)

    def finish_timings():
        timings["total_s"] = time.perf_counter() - t_start
        record["timings"] = {k: round(v, 3) for k, v in {"load_models_s": engines.load_s, **timings}.items()}

    # The results first, so that nothing OCRed is lost should a picture fail (disk full, a font...).
    t0 = time.perf_counter()
    finish_timings()
    write_results(record, out)
    timings["write_results_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        write_pictures(page_img, crops, regions, {row["region"]: row["text"] for row in rows}, out)
    except Exception as e:  # noqa: BLE001 - the results are on disk; say what is missing, keep them
        record["pictures_error"] = f"{type(e).__name__}: {e}"
        warnings.warn(f"{name}: results written to {out}, but the pictures failed: {record['pictures_error']}",
                      RuntimeWarning, stacklevel=2)
    timings["write_pictures_s"] = time.perf_counter() - t0
    finish_timings()
    atomic.write_json(out / OUTPUT_FILES["json"], record)  # again, with the pictures' time (and error)
    return record


def write_results(record: dict, out: Path) -> None:
    """extracted_texts.txt, results.json and results.csv of one page, each replaced atomically."""
    rows = record["regions"]
    atomic.write_text(out / OUTPUT_FILES["texts"], "".join(f"Region {row['region']}: {row['text']}\n" for row in rows))
    atomic.write_json(out / OUTPUT_FILES["json"], record)
    atomic.write_csv(out / OUTPUT_FILES["csv"], REGION_FIELDS, (_csv_row(row) for row in rows))


def write_pictures(page: Image.Image, crops, regions, texts: Dict[int, str], out: Path) -> None:
    """guided_image.png, regions/region_NN.png and annotated_page.png of one page."""
    forms.draw_guides(page, regions).save(out / OUTPUT_FILES["guided"])
    forms.save_region_crops(crops, regions, out / OUTPUT_FILES["regions"])
    forms.draw_annotations(page, regions, texts).save(out / OUTPUT_FILES["annotated"])


def score_against_ground_truth(rows: List[dict], path) -> dict:
    """Field-level accuracy of `rows` against a {region: text} JSON; each row gets `expected`/`correct`."""
    from scripts.metrics import cer

    try:
        truth = {str(k): v for k, v in json.loads(Path(path).read_text(encoding="utf-8")).items()}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read ground truth ({e})") from None
    scored = [r for r in rows if str(r["region"]) in truth]
    for r in scored:
        r["expected"] = truth[str(r["region"])]
        r["correct"] = r["text"] == r["expected"]
    refs, hyps = [r["expected"] for r in scored], [r["text"] for r in scored]
    exact = sum(r["correct"] for r in scored)
    return {"ground_truth": str(path), "fields": len(scored), "exact": exact,
            "exact_rate": round(exact / len(scored), 4) if scored else None,
            "cer": round(cer(refs, hyps), 4) if scored else None}


def _csv_row(row: dict) -> dict:
    return {k: ("" if row.get(k) is None else json.dumps(row[k]) if k == "bbox" else row[k]) for k in row}


def run_form(config: FormOCRConfig, engine_factory: EngineFactory, engines: Optional[Engines] = None,
             page: Optional[int] = None) -> dict:
    """OCR the one scan `config.image` against `config.template` into `config.output_dir`.

    A multi-page file (PDF, TIFF) needs `page` (1-based); `run_directory` OCRs every page of it."""
    template = load_template(config.template)
    pages = count_pages(config.image, config.pdf_dpi)  # fail on a bad scan before loading models
    if page is None and pages > 1:
        raise ValueError(f"{config.image}: {pages} pages; pass page=N for one of them, or use run_directory "
                         "for all (the handlers do)")
    if page is not None and not 1 <= page <= pages:
        raise ValueError(f"{config.image}: no page {page} (the file has {pages})")
    page = page if pages > 1 else None
    load_scan(config.image, replace(config, preprocess=False), page)  # unreadable page data: fail now too
    engines = engines or load_engines(config, engine_factory)
    return process_scan(config.image, template, engines, config, config.output_dir, page=page, pages=pages)


def is_multi_page(path, config: FormOCRConfig) -> bool:
    """A file with several pages (PDF, TIFF), which the handlers OCR like a folder of its pages."""
    return Path(path).is_file() and count_pages(path, config.pdf_dpi) > 1


# --------------------------------------------------------------------------------------------
# A folder of scans, or every page of a multi-page file
# --------------------------------------------------------------------------------------------

def list_scans(folder) -> List[Path]:
    """Scan files (images and PDFs, by extension) directly in `folder`, sorted; an error naming it when
    there are none."""
    folder = Path(folder)
    scans = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
    if not scans:
        raise ImageReadError(f"{folder}: folder contains no scans ({' '.join(IMAGE_EXTENSIONS)})")
    return scans


def _output_names(scans: Sequence[Path]) -> List[str]:
    """One folder name per scan: its stem, or stem_ext when two scans share a stem."""
    stems = [p.stem for p in scans]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in scans]


def _unique(name: str, used: set) -> str:
    """`name`, or name_2, name_3... when taken (a page folder "a_p1" next to a scan "a_p1.png")."""
    candidate, k = name, 1
    while candidate in used:
        k += 1
        candidate = f"{name}_{k}"
    used.add(candidate)
    return candidate


def run_directory(config: FormOCRConfig, engine_factory: EngineFactory, engines: Optional[Engines] = None) -> dict:
    """OCR every page of every scan in the folder `config.image` (or every page of the one multi-page
    file `config.image`) against one template.

    Each page gets `output_dir/<scan stem>/` (a page of a multi-page file `<scan stem>_p<N>/`) with the
    single-scan outputs; `combined_results.csv` has every region of every page (and one row per failed
    scan or page) and `summary.json` lists the pages. A scan or page that cannot be read or aligned
    (with strict alignment) is recorded as failed; the others go on. A page whose alignment fails its
    checks without strict alignment is read and recorded as "unaligned" with the reasons. Returns
    {"scans": [...], "ok": n, "unaligned": n, "failed": n, "combined_csv": path, ...}, one entry in
    "scans" per page.
    """
    template = load_template(config.template)
    source = Path(config.image)
    scans = list_scans(source) if source.is_dir() else [source]
    engines = engines or load_engines(config, engine_factory)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    combined_path = out / COMBINED_CSV
    entries = []
    used = set(_output_names(scans))
    t_start = time.perf_counter()
    bar = None
    if config.show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(scans), desc="pages", unit="page")
    with open(combined_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COMBINED_FIELDS, extrasaction="ignore")
        writer.writeheader()

        def failed(scan, page, e):
            error = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            entries.append({"scan": str(scan), "page": page, "status": "failed", "error": error, "output_dir": None})
            writer.writerow({"scan": str(scan), "page": page, "status": "failed", "error": error})

        for scan, name in zip(scans, _output_names(scans)):
            try:
                pages = count_pages(scan, config.pdf_dpi)
            except Exception as e:  # noqa: BLE001 - an unreadable file is one failed entry
                failed(scan, None, e)
                pages = 0
            if bar is not None and pages > 1:
                bar.total += pages - 1
                bar.refresh()
            for k in range(1, pages + 1):
                page = k if pages > 1 else None
                scan_dir = out / (name if page is None else _unique(f"{name}_p{k}", used))
                try:
                    record = process_scan(scan, template, engines, config, scan_dir, show_progress=False,
                                          page=page, pages=pages)
                except Exception as e:  # noqa: BLE001 - one bad page is one failed entry; the others go on
                    failed(scan, page, e)
                else:
                    al = record["alignment"]
                    status = "ok" if al["ok"] else "unaligned"
                    common = {"scan": str(scan), "page": page, "status": status, "error": al["message"] or None,
                              "output_dir": str(scan_dir), "alignment_method": al["method"],
                              "alignment_score": al["score"]}
                    entries.append({**common, "alignment_reasons": al["reasons"],
                                    "off_page_regions": record["off_page_regions"],
                                    "num_regions": record["num_regions"], "flagged": record["flagging"]["flagged"],
                                    "total_s": record["timings"]["total_s"]})
                    for row in record["regions"]:
                        writer.writerow(_csv_row({**common, **row}))
                f.flush()
                if bar is not None:
                    bar.update(1)
            if pages == 0 and bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    summary = {
        "template": template.path,
        "input": str(config.image),
        "output_dir": str(out),
        "combined_csv": str(combined_path),
        "models": {"base": engines.base.describe(),
                   "finetuned": engines.finetuned.describe() if engines.finetuned else None},
        "settings": config.settings(),
        "ok": sum(e["status"] == "ok" for e in entries),
        "unaligned": sum(e["status"] == "unaligned" for e in entries),  # read, but alignment failed its checks
        "failed": sum(e["status"] == "failed" for e in entries),
        "total_s": round(time.perf_counter() - t_start + engines.load_s, 3),
        "scans": entries,
    }
    atomic.write_json(out / SUMMARY_JSON, summary)
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_arg_parser(defaults: FormOCRConfig, description: str = "", engine_help: str = "",
                     device_choices: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The flags both handlers take. Every default comes from `defaults` (the handler's config block)."""
    d = defaults
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or "OCR every red-box field of scanned forms against a template.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Defaults come from the configuration block at the top of the handler; flags override it.\n"
            "Outputs (per page): extracted_texts.txt, results.json, results.csv (written first), then\n"
            "guided_image.png, regions/region_NN.png, annotated_page.png. With --image FOLDER or a\n"
            "multi-page PDF/TIFF: one such folder per page (<stem>_p<N> for pages of a multi-page file)\n"
            f"plus {COMBINED_CSV} and {SUMMARY_JSON}.\n"
            "Exit status: 0 ok; 1 some scans of a folder failed (the rest were processed);\n"
            "2 bad input (missing template/scan/model, no boxes on the template, strict alignment failed)."
            + (f"\n\n{engine_help}" if engine_help else "")),
    )
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--template", default=d.template,
                    help="template image with the fields outlined in red (default: %(default)s)")
    io.add_argument("--image", default=d.image,
                    help="the scanned, binarized form (PNG, JPEG, TIFF, BMP, WebP, PDF: every page of a "
                         "multi-page file), or a folder of scans (directory mode) (default: %(default)s)")
    io.add_argument("--output-dir", default=d.output_dir, help="output folder, created if missing (default: %(default)s)")

    models = parser.add_argument_group("models and OCR settings")
    models.add_argument("--base-model", default=d.base_model,
                        help="base model (default: %(default)s; None = the handler's default model)")
    models.add_argument("--finetuned-model", default=d.finetuned_model,
                        help="optional fine-tuned model: every region is OCRed with both, and `text` is the "
                             "fine-tuned one (default: %(default)s)")
    models.add_argument("--max-length", type=int, default=d.max_length,
                        help="longest output per region in tokens, start token included (default: %(default)s)")
    models.add_argument("--num-beams", type=int, default=d.num_beams,
                        help="beam width; 1 = greedy (default: the model's generation_config.json; the bundled "
                             "model's says 4)")
    models.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="regions per forward pass (default: %(default)s)")
    models.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=d.dtype,
                        help="compute dtype of the models (default: %(default)s = as stored)")
    models.add_argument("--device", choices=list(device_choices) if device_choices else None, default=d.device,
                        help="device to run the models on (default: %(default)s = the engine's default)")

    page = parser.add_argument_group("page preparation")
    page.add_argument("--preprocess", action=argparse.BooleanOptionalAction, default=d.preprocess,
                      help="binarize (and deskew) the scan first (scripts/preprocessing.py); off for scans "
                           "that are already binarized (default: %(default)s)")
    page.add_argument("--binarize-method", choices=["otsu", "adaptive", "sauvola"], default=d.binarize_method,
                      help="binarization used with --preprocess (default: %(default)s)")
    page.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=d.denoise,
                      help="denoise before binarizing, with --preprocess (default: %(default)s)")
    page.add_argument("--deskew", action=argparse.BooleanOptionalAction, default=d.deskew,
                      help="deskew, with --preprocess (default: %(default)s)")
    page.add_argument("--pdf-dpi", type=float, default=d.pdf_dpi,
                      help="resolution PDF pages are rendered at (default: %(default)s)")
    page.add_argument("--align", action=argparse.BooleanOptionalAction, default=d.align,
                      help="register the scan to the template before cropping; --no-align only resizes it "
                           "to the template's size (default: %(default)s)")
    page.add_argument("--strict-align", action=argparse.BooleanOptionalAction, default=d.strict_align,
                      help="a page whose alignment fails its checks (a plausible scanner displacement; the "
                           "boxes found where the transform puts them) is an error, in directory mode a "
                           "failed page; otherwise a warning, and its results say \"ok\": false and why "
                           "(default: %(default)s)")
    page.add_argument("--reference", default=d.reference,
                      help="a clean scan of the blank form in the template's frame, registered against (ORB "
                           "features) when the page's boxes cannot be verified, e.g. red boxes that a "
                           "binarized scan lost (default: %(default)s)")
    page.add_argument("--outline-crop", dest="inner_crop", action="store_false", default=d.inner_crop,
                      help="crop each region at its outer outline (line included) instead of inside it")
    parser.add_argument("--ground-truth", default=d.ground_truth,
                        help="JSON {region: expected text}: report field accuracy and CER (default: %(default)s)")
    parser.add_argument("--flag-threshold", type=float, default=d.flag_threshold,
                        help="flag fields for review whose score is below this (default: the threshold in the "
                             "model's calibration.json, see scripts/calibrate_confidence.py)")
    page.add_argument("--no-trim", dest="trim_crops", action="store_false", default=d.trim_crops,
                      help="OCR each whole box instead of cutting it down to its ink")
    parser.add_argument("--no-progress", dest="show_progress", action="store_false", default=d.show_progress,
                        help="no progress bar")
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary at the end")
    return parser


def config_from_args(args: argparse.Namespace, defaults: FormOCRConfig) -> FormOCRConfig:
    """The parsed flags over the defaults. Flags the parser has beyond the config's fields (added by a
    handler for its engine) go to `engine_options`."""
    names = {f.name for f in fields(FormOCRConfig)}
    values = vars(args)
    known = {k: v for k, v in values.items() if k in names}
    extra = {k: v for k, v in values.items() if k not in names and k != "quiet"}
    config = replace(defaults, **known)
    config.engine_options = {**defaults.engine_options, **extra}
    if config.image != defaults.image and config.ground_truth == defaults.ground_truth:
        config.ground_truth = None  # the configured ground truth belongs to the configured scan only
    if config.ground_truth and Path(config.image).is_dir():
        config.ground_truth = None  # one {region: text} file cannot score a folder of different forms
    for key in ("max_length", "num_beams", "batch_size"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(config, key)}")
    if config.max_length < 2:
        raise ValueError("--max-length must be at least 2 (the start token plus one generated token)")
    if not 10 <= config.pdf_dpi <= 1200:
        raise ValueError(f"--pdf-dpi must be 10-1200, got {config.pdf_dpi:g}")
    return config


def check_inputs(config: FormOCRConfig) -> None:
    """Errors naming the file for a missing template or scan, before any model is loaded."""
    for what, path in (("template", config.template), ("image", config.image)):
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{what} not found: {p}")
    if Path(config.template).is_dir():
        raise ImageReadError(f"{config.template}: the template is a folder; expected an image")
    if config.reference is not None and not Path(config.reference).exists():
        raise FileNotFoundError(f"reference not found: {config.reference}")


def print_summary(record: dict, stream=None) -> None:
    stream = stream or sys.stdout
    al = record["alignment"]
    score = "-" if al["score"] is None else f"{al['score']:.3f}"
    print(f"\nscan      {scan_name(record['scan'], record.get('page'), record.get('pages', 1))}", file=stream)
    print(f"template  {record['template']} ({record['num_regions']} regions)", file=stream)
    print(f"alignment {al['method']} (score {score}, rotation {al['rotation_deg']:.2f} deg, "
          f"scale {al['scale_x']:.3f}, shift {al['shift_px'][0]:.1f},{al['shift_px'][1]:.1f} px)"
          + ("" if al["ok"] else f"  WARNING: NOT ALIGNED, crops are not trustworthy: "
                                 f"{'; '.join(al.get('reasons') or [al['message']])}"), file=stream)
    if record.get("off_page_regions"):
        print(f"WARNING   regions {', '.join(map(str, record['off_page_regions']))} are partly off the scanned "
              f"page: their crops are cut (marked off_page in the results)", file=stream)
    models = record["models"]
    print(f"models    base: {models['base'].get('model')}"
          + (f"; finetuned: {models['finetuned'].get('model')}" if models["finetuned"] else ""), file=stream)
    width = max(len(str(r["region"])) for r in record["regions"]) if record["regions"] else 1
    for r in record["regions"]:
        shown = forms.printable_text  # texts as the model gave them, control characters escaped
        extra = (f"   (base: {shown(r['base_text'])})" if r["finetuned_text"] is not None
                 and r["base_text"] != r["text"] else "")
        notes = f"   [partly off the page: {r['visible_fraction']:.0%} on it]" if r.get("off_page") else ""
        notes += f"   [{r['doubt']}]" if r.get("doubt") else ""
        mark = "?" if r.get("flagged") else " "
        print(f"  {r['region']:>{width}} {mark}[{r['confidence']:.2f}] {shown(r['text'])}{extra}{notes}", file=stream)
    if "flagging" in record:
        fl = record["flagging"]
        note = "" if not fl["source"].startswith("uncalibrated") else \
            "  (uncalibrated: run scripts/calibrate_confidence.py --write for this model)"
        print(f"flagged   {fl['flagged']} of {record['num_regions']} fields (?) for review: {fl['score']} < "
              f"{fl['threshold']:.3f} ({fl['source']}){note}", file=stream)
        doubts = sum(bool(r.get("doubt")) for r in record["regions"])
        if doubts:
            print(f"          {doubts} of them whatever the score: readings that cannot be right ([...] above)", file=stream)
    if "accuracy" in record:
        a = record["accuracy"]
        print(f"accuracy  {a['exact']}/{a['fields']} fields exactly right, CER {a['cer']:.1%} "
              f"(against {a['ground_truth']})", file=stream)
    t = record["timings"]
    parts = ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in t.items())
    print(f"timings   {parts}", file=stream)
    if record.get("pictures_error"):
        print(f"WARNING   the pictures failed ({record['pictures_error']}); the results are complete", file=stream)
    print(f"outputs   {record['output_dir']}", file=stream)


def print_directory_summary(summary: dict, stream=None) -> None:
    stream = stream or sys.stdout
    unaligned = summary.get("unaligned", 0)
    print(f"\n{len(summary['scans'])} pages against {summary['template']}: {summary['ok'] + unaligned} done"
          + (f" ({unaligned} NOT aligned)" if unaligned else "")
          + f", {summary['failed']} failed ({summary['total_s']:.1f}s)", file=stream)
    for e in summary["scans"]:
        name = e["scan"] + (f" (page {e['page']})" if e.get("page") is not None else "")
        if e["status"] == "failed":
            error = e["error"] if e["error"].startswith(e["scan"]) else f"{name}: {e['error']}"
            print(f"  FAILED   {error}", file=stream)
        elif e["status"] == "unaligned":
            print(f"  NOT ALIGNED {name} -> {e['output_dir']}: {'; '.join(e['alignment_reasons'])}", file=stream)
        else:
            cut = f"  (regions {', '.join(map(str, e['off_page_regions']))} partly off the page)" \
                if e.get("off_page_regions") else ""
            flagged = f"  ({e['flagged']} of {e['num_regions']} fields flagged)" if e.get("flagged") is not None else ""
            print(f"  {e['status']:<8} {name} -> {e['output_dir']}{flagged}{cut}", file=stream)
    print(f"combined  {summary['combined_csv']}", file=stream)


# Errors that mean "bad input or setup" (exit status 2), reported in one line without a traceback.
USER_ERRORS = (FileNotFoundError, ImageReadError, forms.TemplateError, registration.AlignmentError, ValueError, RuntimeError)


def run_cli(argv: Optional[Sequence[str]], defaults: FormOCRConfig, engine_factory: EngineFactory,
            description: str = "", engine_help: str = "", device_choices: Optional[Sequence[str]] = None,
            add_engine_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
            prog: Optional[str] = None) -> int:
    """A handler's main(): flags over `defaults`, one scan or a folder, summary, exit status."""
    parser = build_arg_parser(defaults, description, engine_help, device_choices, prog)
    if add_engine_args is not None:
        add_engine_args(parser)
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        config = config_from_args(args, defaults)
        check_inputs(config)
        if Path(config.image).is_dir() or is_multi_page(config.image, config):
            summary = run_directory(config, engine_factory)
            if not args.quiet:
                print_directory_summary(summary)
            return 1 if summary["failed"] else 0
        record = run_form(config, engine_factory)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print_summary(record)
    return 0


def config_from_block(block: Dict[str, Any], **engine_options) -> FormOCRConfig:
    """The FormOCRConfig of a handler's configuration block (its upper-case settings: pass globals()).
    Both handlers build their defaults here, so a new setting is added once."""
    return FormOCRConfig(
        template=repo_path(block["TEMPLATE_PATH"]), image=repo_path(block["IMAGE_PATH"]),
        output_dir=repo_path(block["OUTPUT_DIR"], must_exist=False), base_model=repo_path(block["BASE_MODEL"]),
        finetuned_model=repo_path(block["FINETUNED_MODEL"]), max_length=block["MAX_LENGTH"],
        num_beams=block["NUM_BEAMS"], batch_size=block["BATCH_SIZE"], dtype=block["DTYPE"], device=block["DEVICE"],
        preprocess=block["PREPROCESS"], align=block["ALIGN"], strict_align=block["STRICT_ALIGN"],
        ground_truth=repo_path(block["GROUND_TRUTH"]), pdf_dpi=block["PDF_DPI"], engine_options=engine_options)


def repo_path(path: Optional[str], must_exist: bool = True) -> Optional[str]:
    """A configuration-block path: absolute as is; a relative one is taken from the repository root
    (when it exists there, unless must_exist=False), so the handlers' defaults work from any working
    directory; otherwise kept as written (e.g. a hub id). Flags are taken as given (from the cwd)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute() or (must_exist and not (REPO_ROOT / p).exists()):
        return str(path)
    return str(REPO_ROOT / p)

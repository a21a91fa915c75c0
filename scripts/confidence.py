"""Per-field confidence scores, and the calibrated threshold below which a field is flagged for review.

Two scores per recognised field, both probabilities in [0, 1]:
- `confidence`: exp of the mean token log-probability (EOS included), the model's overall certainty;
- `min_confidence`: exp of the lowest token log-probability, i.e. the probability of the least sure
  character. One doubtful character is enough to make a field wrong, and the mean dilutes it over the
  others; on an independent evaluation it separates wrong fields from right ones better
  (scripts/calibrate_confidence.py prints both, and PHASE3_INSTRUCTIONS.md the figures).

A calibration (`calibration.json` in the model folder, written by scripts/calibrate_confidence.py) names the
score and the threshold T: a field is flagged when its score < T. T is chosen on labelled crops so that a
target share of the wrong fields (default 90%) is flagged. A model without one gets UNCALIBRATED (said in
results.json and on the console), and `--flag-threshold` overrides T.

Some readings are wrong whatever the score says: `implausible_reading` names them (a number written with
its thousands separator also before its last one or two digits; a number with a letter that looks like a
digit in its middle, as `2I/09/2005`), and the form pipeline flags them too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CALIBRATION_FILE = "calibration.json"

# "22.514.83", "6.034.03": the separator that groups thousands also stands before the last 1-2 digits. No
# locale writes numbers so (a decimal mark differs from the grouping one; dates have no 3-digit middle
# group), so one separator was misread, and the model's confidence in such readings can still be high.
_MISREAD_NUMBER = re.compile(r"(?<![\d.,])\d{1,3}([.,])\d{3}(?:\1\d{3})*\1\d{1,2}(?!\d)")

# Letters that stand for digits when misread (old-style figures: 1 like I, 0 like o; 5 like S; 2 like Z).
_DIGIT_LOOKALIKES = frozenset("IlOoSsZz")


def _lookalike_in_number(token: str) -> Optional[str]:
    """The look-alike letter of `token` when it is a number (3+ digits, otherwise only such letters and
    separators) with that letter before a digit, at its start or after a digit: `8-IO26-I27I`, `O8-08-75`,
    `2I/09/2005`. Not a suffix letter before a dash or at the end (Bogotá's `# 4S-66`, `108S`), nor a token
    with any other letter (`Z3I-471-VY5`, e-mails, words)."""
    bare = re.sub(r"[-/.,()+$#]", "", token)
    if sum(c.isdigit() for c in bare) < 3 or not all(c.isdigit() or c in _DIGIT_LOOKALIKES for c in bare):
        return None
    for part in re.split(r"-+", re.sub(r"[/.,()+$#]", "", token)):  # a dash may follow a suffix letter
        for i, c in enumerate(part):
            if (c in _DIGIT_LOOKALIKES and (i == 0 or part[i - 1].isdigit()) and i + 1 < len(part)
                    and part[i + 1].isdigit()):
                return c
    return None


def implausible_reading(text: Optional[str]) -> Optional[str]:
    """Why `text` cannot be a right reading of a form field, or None when nothing says so."""
    match = _MISREAD_NUMBER.search(text or "")
    if match:
        return (f"number {match.group(0)!r} uses {match.group(1)!r} both to group thousands and before its "
                f"last digits: a separator was misread")
    for token in (text or "").split():
        letter = _lookalike_in_number(token)
        if letter:
            return f"number {token!r} has the letter {letter!r} among its digits: a digit was read as a letter"
    return None


SCORES = {"confidence": "exp(mean token log-probability)", "min_confidence": "exp(lowest token log-probability)"}
DEFAULT_CATCH = 0.9  # share of wrong fields the default threshold is chosen to flag
UNCALIBRATED = ("min_confidence", 0.5)  # (score, threshold) for a model without calibration.json


def confidence_from_logprob(logprob: Optional[float]) -> float:
    """exp(log-probability): 1 = certain; finite and in [0, 1] (0 for a missing or non-finite value)."""
    if logprob is None or not math.isfinite(logprob):
        return 0.0
    return float(math.exp(min(logprob, 0.0)))


def read_lines(processor, images: Sequence, batch_size: Optional[int] = None, **gen) -> List[Tuple[str, float, float]]:
    """(text, confidence, min_confidence) for each text-line image, with an MLXTrOCRProcessor."""
    import mlx.core as mx

    from scripts.decoding import generate_tokens

    images = list(images)
    batch_size = batch_size or max(len(images), 1)
    cfg = processor.generation_options(**gen)
    out = []
    for start in range(0, len(images), batch_size):
        pixels = mx.array(processor.preprocess(images[start:start + batch_size]))
        result = generate_tokens(processor.model, pixels, cfg)
        texts = processor.batch_decode(result.sequences)
        out += [(t, confidence_from_logprob(s), confidence_from_logprob(m))
                for t, s, m in zip(texts, result.scores, result.min_scores)]
    return out


# --------------------------------------------------------------------------------------------
# The flag
# --------------------------------------------------------------------------------------------

@dataclass
class Flagging:
    """Flag a field when row[score] < threshold. `source`: the calibration file, "--flag-threshold" or
    "uncalibrated default"."""

    score: str
    threshold: float
    source: str
    details: dict = field(default_factory=dict)

    def flag(self, row: dict) -> Optional[bool]:
        value = row.get(self.score)
        return None if value is None else bool(value < self.threshold)

    def describe(self) -> dict:
        out = {"score": self.score, "threshold": self.threshold, "source": self.source}
        at_t = self.details.get("at_threshold")
        if at_t:
            out["calibrated_on"] = {"manifest": self.details.get("manifest"), **at_t}
        for key in ("num_beams", "warning"):  # the beam width it was made with; a mismatch with this run
            if self.details.get(key):
                out[key] = self.details[key]
        return out


WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors", "weights.npz", "pytorch_model.bin")


def weights_fingerprint(model_dir) -> Optional[str]:
    """sha256 of a model folder's weight files: a calibration is only valid for the weights it was made on."""
    files = sorted(f for pattern in WEIGHT_FILES for f in Path(model_dir).glob(pattern))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_calibration(model_dir) -> Optional[Flagging]:
    """The calibration stored in a model folder, or None (also when it was made for other weights: the
    folder's weights were replaced; a warning says so). A malformed file is an error naming it."""
    if model_dir is None:
        return None
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        score, threshold = record["score"], float(record["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a calibration file ({e}); rewrite it with scripts/calibrate_confidence.py") from None
    if score not in SCORES:
        raise ValueError(f"{path}: unknown score {score!r} (known: {', '.join(SCORES)})")
    if record.get("weights") and record["weights"] != weights_fingerprint(model_dir):
        warnings.warn(f"{path} was made for other weights than the folder now holds; fields are flagged with the "
                      f"uncalibrated default. Calibrate again: python scripts/calibrate_confidence.py MANIFEST "
                      f"--model {model_dir} --write", stacklevel=2)
        return None
    return Flagging(score, threshold, str(path), record)


def flagging_for(model_dir, threshold: Optional[float] = None) -> Flagging:
    """How to flag the fields a model read: its calibration, with `threshold` (the --flag-threshold
    flag) replacing T when given; the uncalibrated default when it has none."""
    calibration = load_calibration(model_dir)
    if threshold is not None:
        score = calibration.score if calibration else UNCALIBRATED[0]
        return Flagging(score, float(threshold), "--flag-threshold")
    return calibration or Flagging(*UNCALIBRATED, "uncalibrated default")


def copy_calibration(src_dir, dst_dir) -> Optional[Path]:
    """Carry a calibration to an exact copy of the model in another format (export-hf, export-mlx): the
    same record, bound to the copy's weight files."""
    src = Path(src_dir) / CALIBRATION_FILE
    if not src.is_file():
        return None
    record = json.loads(src.read_text(encoding="utf-8"))
    if record.get("weights") and record["weights"] != weights_fingerprint(src_dir):
        return None  # stale at the source already: do not spread it
    record["weights"] = weights_fingerprint(dst_dir)
    record["copied_from"] = str(Path(src_dir).resolve())
    dst = Path(dst_dir) / CALIBRATION_FILE
    dst.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dst


# --------------------------------------------------------------------------------------------
# Calibration: how well a score separates wrong fields from right ones, and the threshold
# --------------------------------------------------------------------------------------------

def auc(scores: np.ndarray, wrong: np.ndarray) -> Optional[float]:
    """P(a wrong field scores lower than a right one), ties counted half; None without both kinds."""
    scores, wrong = np.asarray(scores, float), np.asarray(wrong, bool)
    if wrong.all() or not wrong.any():
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties (Mann-Whitney U)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_right, n_wrong = int((~wrong).sum()), int(wrong.sum())
    # ranks are 0-based: the right fields' rank sum minus its minimum counts the (wrong, right) pairs won
    return float((ranks[~wrong].sum() - n_right * (n_right - 1) / 2.0) / (n_wrong * n_right))


def at_threshold(scores, wrong, threshold: float) -> dict:
    """Fields flagged (score < threshold): share of the wrong ones caught, share of all, share of the right."""
    scores, wrong = np.asarray(scores, float), np.asarray(wrong, bool)
    flagged = scores < threshold
    share = lambda m: float(m.mean()) if m.size else None  # noqa: E731
    return {"threshold": round(float(threshold), 6), "fields": int(len(scores)), "wrong": int(wrong.sum()),
            "flagged": int(flagged.sum()), "caught": int((flagged & wrong).sum()),
            "caught_share": share(flagged[wrong]), "flagged_share": share(flagged),
            "right_flagged_share": share(flagged[~wrong])}


def choose_threshold(scores, wrong, catch: float = DEFAULT_CATCH) -> float:
    """The lowest threshold that flags at least `catch` of the wrong fields: halfway between the score of
    the wrong field that reaches the target and the next higher score of any field."""
    scores, wrong = np.asarray(scores, float), np.asarray(wrong, bool)
    if not wrong.any():
        return float(scores.min()) if scores.size else 0.0  # nothing to catch: flag nothing
    wrong_sorted = np.sort(scores[wrong])
    k = min(int(math.ceil(catch * len(wrong_sorted))), len(wrong_sorted)) - 1
    s = wrong_sorted[max(k, 0)]
    higher = scores[scores > s]
    return float((s + higher.min()) / 2) if higher.size else float(np.nextafter(s, np.inf))


def calibrate(scores: Dict[str, Sequence[float]], wrong: Sequence[bool], catch: float = DEFAULT_CATCH,
              score: Optional[str] = None) -> dict:
    """Per score: AUC and the figures at the thresholds that catch 50..99% of the wrong fields; the chosen
    score (`score`, or the one with the higher AUC) and its threshold for `catch`."""
    wrong = np.asarray(wrong, bool)
    report = {}
    for name, values in scores.items():
        values = np.asarray(values, float)
        rows = [at_threshold(values, wrong, choose_threshold(values, wrong, c)) for c in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)]
        report[name] = {"auc": auc(values, wrong), "table": rows}
    if score is None:
        score = max(report, key=lambda n: -1 if report[n]["auc"] is None else report[n]["auc"])
    threshold = choose_threshold(np.asarray(scores[score], float), wrong, catch)
    return {"score": score, "threshold": round(threshold, 6), "catch_target": catch,
            "at_threshold": at_threshold(scores[score], wrong, threshold), "scores": report}


def write_calibration(model_dir, result: dict, manifest: str, model: str) -> Path:
    """Store a calibration beside the model (model_dir/calibration.json); returns its path."""
    path = Path(model_dir) / CALIBRATION_FILE
    record = {"score": result["score"], "threshold": result["threshold"],
              "rule": f"flag a field when its {result['score']} ({SCORES[result['score']]}) < threshold",
              "catch_target": result["catch_target"], "manifest": manifest, "model": model,
              "created": datetime.datetime.now().isoformat(timespec="seconds"),
              "weights": weights_fingerprint(model_dir), "num_beams": result.get("num_beams"),
              "at_threshold": result["at_threshold"],
              "scores": {k: {"auc": v["auc"]} for k, v in result["scores"].items()}}
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


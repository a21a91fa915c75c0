"""OCR accuracy: character and word error rates, corpus level, on NFC-normalised text.

Corpus level means total edits / total reference length over all lines (not a mean of per-line rates),
so long lines weigh more and an empty reference line does not divide by zero.
Both sides are NFC-normalised so that 'ó' typed as 'o' + combining accent counts as the same character.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

from rapidfuzz.distance import Levenshtein


def normalize(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance between two strings, counted in characters (after NFC)."""
    return Levenshtein.distance(normalize(ref), normalize(hyp))


def word_edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance counted in whitespace-separated words (after NFC)."""
    return Levenshtein.distance(normalize(ref).split(), normalize(hyp).split())


def _check_lengths(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate: sum of character edit distances / sum of reference lengths."""
    _check_lengths(refs, hyps)
    edits = sum(edit_distance(r, h) for r, h in zip(refs, hyps))
    length = sum(len(normalize(r)) for r in refs)
    return _rate(edits, length)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate: sum of word edit distances / sum of reference word counts."""
    _check_lengths(refs, hyps)
    edits = sum(word_edit_distance(r, h) for r, h in zip(refs, hyps))
    length = sum(len(normalize(r).split()) for r in refs)
    return _rate(edits, length)


def _rate(edits: int, length: int) -> float:
    # Only empty references: the rate is undefined; report 0 when nothing was output, else 1 (all wrong).
    if length == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / length

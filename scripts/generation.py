"""What greedy/sampling decoding (decoding.py) and beam search (beam_search.py) share: the generation
config with transformers' semantics, the result type, the logits processors and the compile switch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Optional

import mlx.core as mx
import numpy as np

NEG_INF = float("-inf")


@dataclass
class GenerationConfig:
    max_length: Optional[int] = 64
    max_new_tokens: Optional[int] = None
    min_length: int = 0
    min_new_tokens: Optional[int] = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: Optional[int] = 50
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: object = False  # True, False or "never", as in transformers
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    seed: Optional[int] = None
    decoder_start_token_id: int = 2
    eos_token_id: int = 2
    pad_token_id: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationConfig":
        names = {f.name for f in fields(cls)}
        clean = {k: v for k, v in d.items() if k in names and v is not None}
        if isinstance(clean.get("eos_token_id"), list):
            clean["eos_token_id"] = clean["eos_token_id"][0]
        return cls(**clean)

    def updated(self, **overrides) -> "GenerationConfig":
        names = {f.name for f in fields(self)}
        unknown = sorted(k for k in overrides if k not in names)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        cfg = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        if overrides.get("max_new_tokens") is not None and overrides.get("max_length") is None:
            cfg.max_length = None  # an explicit max_new_tokens wins over the default max_length
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.total_length() < 2:
            raise ValueError("max_length must be at least 2 (the start token plus one generated token)")
        if self.do_sample and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise ValueError("num_beams and num_return_sequences must be >= 1")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise ValueError("num_return_sequences cannot exceed num_beams without sampling")

    def total_length(self, start_len: int = 1) -> int:
        """Total sequence length, start token included (transformers: max_new_tokens wins)."""
        if self.max_new_tokens is not None:
            return start_len + self.max_new_tokens
        return self.max_length if self.max_length is not None else 20

    def min_total_length(self, start_len: int = 1) -> int:
        """transformers applies MinLength and MinNewTokens processors both: the stricter one wins."""
        total = self.min_length or 0
        if self.min_new_tokens is not None:
            total = max(total, start_len + self.min_new_tokens)
        return total


@dataclass
class Generated:
    sequences: list[list[int]]  # start token first, eos included when reached, no padding
    scores: list[float]  # mean log-probability of the generated tokens (a confidence in (-inf, 0])
    # lowest log-probability among the generated tokens (EOS included): how unsure the least sure
    # character was; a better signal than the mean for "is this field wrong" (scripts/confidence.py)
    min_scores: Optional[list[float]] = None


# --------------------------------------------------------------------------------------------------
# Logits processors (transformers' order: min-length, no-repeat-ngram, then sampling warpers)
# --------------------------------------------------------------------------------------------------


def banned_ngram_tokens(seqs: np.ndarray, n: int) -> list[list[int]]:
    """For each row, the tokens that would repeat an n-gram already in it (transformers' NoRepeatNGram)."""
    cur_len = seqs.shape[1]
    if n <= 0 or cur_len + 1 < n:
        return [[] for _ in range(len(seqs))]
    out = []
    for row in seqs.tolist():
        seen: dict[tuple, list[int]] = {}
        for i in range(cur_len - n + 1):
            seen.setdefault(tuple(row[i:i + n - 1]), []).append(row[i + n - 1])
        out.append(seen.get(tuple(row[cur_len - n + 1:]), []))
    return out


def no_repeat_ngram_processor(logits: mx.array, seqs: np.ndarray, cfg: GenerationConfig) -> mx.array:
    if cfg.no_repeat_ngram_size <= 0:
        return logits
    banned = banned_ngram_tokens(seqs, cfg.no_repeat_ngram_size)
    if not any(banned):
        return logits
    mask = np.zeros(logits.shape, dtype=bool)
    for r, toks in enumerate(banned):
        mask[r, toks] = True
    return mx.where(mx.array(mask), NEG_INF, logits)


def sampling_warpers(logits: mx.array, cfg: GenerationConfig) -> mx.array:
    """temperature -> top-k -> top-p, as transformers applies them (on float32 scores)."""
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    vocab = logits.shape[-1]
    if cfg.top_k is not None and 0 < cfg.top_k < vocab:
        kth = mx.sort(logits, axis=-1)[:, vocab - cfg.top_k][:, None]
        logits = mx.where(logits < kth, NEG_INF, logits)
    if cfg.top_p < 1.0:
        order = mx.argsort(logits, axis=-1)  # ascending, as transformers' TopPLogitsWarper
        sorted_logits = mx.take_along_axis(logits, order, axis=-1)
        cum = mx.cumsum(mx.softmax(sorted_logits, axis=-1), axis=-1)
        remove_sorted = cum <= (1 - cfg.top_p)
        remove_sorted[:, -1] = False  # always keep the most likely token
        remove = mx.zeros_like(remove_sorted)
        remove = mx.put_along_axis(remove, order, remove_sorted, axis=-1)
        logits = mx.where(remove, NEG_INF, logits)
    return logits


def use_compiled_step() -> bool:
    """Compile the decoder step? Yes on a GPU (it removes per-op host overhead, which is what bounds
    small-batch decoding there). On the CPU the step is compute-bound and MLX compiles fused CPU kernels
    with the system C++ compiler (seconds per new shape), so plain graphs are used.
    Override with TROCR_MLX_COMPILE=0/1."""
    flag = os.environ.get("TROCR_MLX_COMPILE")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return mx.default_device().type == mx.gpu

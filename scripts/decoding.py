"""Generation for the MLX TrOCR model, with transformers' semantics: greedy, sampling (and beam search).

Kept apart from the model: the model gives logits for tokens, this module decides which tokens.
`max_length` counts the decoder start token, as in transformers; `max_new_tokens` counts generated ones.
"""

from __future__ import annotations

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


# --------------------------------------------------------------------------------------------------
# Greedy and sampling: one pass over a batch, finished rows padded, stop when all rows are done
# --------------------------------------------------------------------------------------------------


def use_compiled_step() -> bool:
    """Compile the decoder step? Yes on a GPU (it removes per-op host overhead, which is what bounds
    small-batch decoding there). On the CPU the step is compute-bound and MLX compiles fused CPU kernels
    with the system C++ compiler (seconds per new shape), so plain graphs are used.
    Override with TROCR_MLX_COMPILE=0/1."""
    import os

    flag = os.environ.get("TROCR_MLX_COMPILE")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return mx.default_device().type == mx.gpu


def _bookkeep(nxt, logprobs, unfinished, logprob_sum, n_generated, ids):
    """Pad finished rows, add the chosen tokens' log-probs, update the finished flags (all on device)."""
    eos, pad = ids[0], ids[1]
    nxt = nxt.astype(mx.int32)
    chosen_lp = mx.take_along_axis(logprobs, nxt[:, None], axis=-1)[:, 0]
    nxt = mx.where(unfinished, nxt, pad)
    logprob_sum = logprob_sum + mx.where(unfinished, chosen_lp, 0.0)
    n_generated = n_generated + unfinished.astype(mx.int32)
    unfinished = mx.logical_and(unfinished, nxt != eos)
    return nxt[:, None], unfinished, logprob_sum, n_generated, mx.logical_not(mx.any(unfinished))


def _greedy_step(model, compiled: bool):
    """One greedy step as a single function of arrays (compiled once per model and shape)."""
    cache = model.__dict__.setdefault("_greedy_steps", {})
    if compiled not in cache:
        step_fn = model.decode_step(compiled=False)

        def greedy(tokens, offset, cross_kv, keys, values, unfinished, logprob_sum, n_generated, ban_eos, ids):
            logits, keys, values = step_fn(tokens, offset, cross_kv, keys, values)
            is_eos = mx.arange(logits.shape[-1]) == ids[0]
            logits = mx.where(mx.logical_and(ban_eos, is_eos)[None], NEG_INF, logits)  # min-length
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            nxt = mx.argmax(logits, axis=-1)
            tokens, unfinished, logprob_sum, n_generated, done = _bookkeep(
                nxt, logprobs, unfinished, logprob_sum, n_generated, ids)
            return tokens, keys, values, unfinished, logprob_sum, n_generated, done

        cache[compiled] = mx.compile(greedy, inputs=model.decoder) if compiled else greedy
    return cache[compiled]


def _encoder(model, compiled: bool):
    cache = model.__dict__.setdefault("_encoders", {})
    if compiled not in cache:
        cache[compiled] = mx.compile(model.encode, inputs=model) if compiled else model.encode
    return cache[compiled]


def _encode_for_generation(model, pixel_values: mx.array, copies: int, compiled: bool = False):
    memory = _encoder(model, compiled)(pixel_values)
    cross_kv = model.decoder.cross_kv(memory)
    if copies > 1:  # project once per image, then repeat per returned sequence / beam
        cross_kv = [(mx.repeat(k, copies, axis=0), mx.repeat(v, copies, axis=0)) for k, v in cross_kv]
    return memory.shape[0] * copies, cross_kv


def generate_tokens(model, pixel_values: mx.array, cfg: GenerationConfig) -> Generated:
    """Greedy (or, with do_sample, multinomial) decoding of a batch of images.

    Everything per token stays on the device: the next tokens feed the next step directly, finished rows
    are padded on the device, and the "all rows finished" flag is read one step late, after the next
    step has been queued with `mx.async_eval`, so the host never waits for the device in the loop.
    (no_repeat_ngram_size needs the sequences on the host each step, so it synchronises.)
    """
    if cfg.num_beams > 1:
        from beam_search import beam_search  # noqa: WPS433 (optional module, issue 3)

        return beam_search(model, pixel_values, cfg)
    compiled = use_compiled_step()
    batch, cross_kv = _encode_for_generation(model, pixel_values, cfg.num_return_sequences, compiled)
    total = cfg.total_length()
    min_total = cfg.min_total_length()
    cache = model.make_cache(batch, total)
    keys, values = [c.keys for c in cache], [c.values for c in cache]
    key = mx.random.key(cfg.seed) if (cfg.do_sample and cfg.seed is not None) else None
    host_seqs = cfg.no_repeat_ngram_size > 0

    seqs = np.full((batch, 1), cfg.decoder_start_token_id, dtype=np.int64) if host_seqs else None
    tokens = mx.full((batch, 1), cfg.decoder_start_token_id, dtype=mx.int32)
    unfinished = mx.ones((batch,), dtype=mx.bool_)
    logprob_sum = mx.zeros((batch,), dtype=mx.float32)
    n_generated = mx.zeros((batch,), dtype=mx.int32)
    ids = mx.array([cfg.eos_token_id, cfg.pad_token_id], dtype=mx.int32)
    generated = []
    pending_done = None
    if not cfg.do_sample and not host_seqs:
        # greedy: the whole step (decoder, min-length, argmax, finished-row bookkeeping) is one graph
        greedy = _greedy_step(model, compiled)
        for step in range(total - 1):
            ban_eos = mx.array(step + 1 < min_total)
            tokens, keys, values, unfinished, logprob_sum, n_generated, done = greedy(
                tokens, mx.array(step, dtype=mx.int32), cross_kv, keys, values, unfinished, logprob_sum,
                n_generated, ban_eos, ids)
            generated.append(tokens)
            mx.async_eval(tokens, done, logprob_sum, n_generated, keys, values)
            if pending_done is not None and pending_done.item():
                break  # every row had finished one step ago; this step only padded
            pending_done = done
        generated = [t[:, 0] for t in generated]
    else:
        step_fn = model.decode_step(compiled=compiled)
        eos_col = None
        for step in range(total - 1):
            cur_len = step + 1
            logits, keys, values = step_fn(tokens, mx.array(step, dtype=mx.int32), cross_kv, keys, values)
            if cur_len < min_total:
                if eos_col is None:
                    eos_col = (mx.arange(logits.shape[-1]) == cfg.eos_token_id)[None]
                logits = mx.where(eos_col, NEG_INF, logits)
            if host_seqs:
                logits = no_repeat_ngram_processor(logits, seqs, cfg)
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            if cfg.do_sample:
                warped = sampling_warpers(logits, cfg)
                if key is not None:
                    key, sub = mx.random.split(key)
                    nxt = mx.random.categorical(warped, key=sub)
                else:
                    nxt = mx.random.categorical(warped)
            else:
                nxt = mx.argmax(logits, axis=-1)
            tokens, unfinished, logprob_sum, n_generated, done = _bookkeep(
                nxt, logprobs, unfinished, logprob_sum, n_generated, ids)
            generated.append(tokens[:, 0])
            if host_seqs:
                seqs = np.concatenate([seqs, np.array(tokens).astype(np.int64)], axis=1)
                if not np.array(unfinished).any():
                    break
                continue
            mx.async_eval(tokens, done, logprob_sum, n_generated, keys, values)
            if pending_done is not None and pending_done.item():
                break
            pending_done = done

    if seqs is None:
        body = np.array(mx.stack(generated, axis=1)).astype(np.int64) if generated else np.zeros((batch, 0), np.int64)
        seqs = np.concatenate([np.full((batch, 1), cfg.decoder_start_token_id, np.int64), body], axis=1)
    sequences = []
    for row in seqs.tolist():
        if cfg.eos_token_id in row[1:]:
            row = row[: row.index(cfg.eos_token_id, 1) + 1]
        sequences.append(row)
    sums = np.array(logprob_sum, dtype=np.float64)
    counts = np.array(n_generated).astype(np.int64)
    scores = (sums / np.maximum(counts, 1)).tolist()
    return Generated(sequences=sequences, scores=scores)

"""Generation for the MLX TrOCR model, with transformers' semantics: greedy, sampling (and beam search).

Kept apart from the model: the model gives logits for tokens, this module decides which tokens.
`max_length` counts the decoder start token, as in transformers; `max_new_tokens` counts generated ones.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from scripts.beam_search import beam_search
from scripts.generation import (NEG_INF, Generated, GenerationConfig, no_repeat_ngram_processor,  # noqa: F401
                                sampling_warpers, use_compiled_step)


# --------------------------------------------------------------------------------------------------
# Greedy and sampling: one pass over a batch, finished rows padded, stop when all rows are done
# --------------------------------------------------------------------------------------------------


def _chosen_logprob(logits: mx.array, nxt: mx.array) -> mx.array:
    """log_softmax(logits)[row, nxt[row]], without materialising the whole (B, vocab) log-softmax."""
    chosen = mx.take_along_axis(logits, nxt.astype(mx.int32)[:, None], axis=-1)[:, 0]
    return chosen - mx.logsumexp(logits, axis=-1)


def _bookkeep(nxt, chosen_lp, unfinished, logprob_sum, logprob_min, n_generated, ids):
    """Pad finished rows, add the chosen tokens' log-probs (sum and minimum), update the finished flags
    (all on device)."""
    eos, pad = ids[0], ids[1]
    nxt = nxt.astype(mx.int32)
    nxt = mx.where(unfinished, nxt, pad)
    logprob_sum = logprob_sum + mx.where(unfinished, chosen_lp, 0.0)
    logprob_min = mx.where(unfinished, mx.minimum(logprob_min, chosen_lp), logprob_min)
    n_generated = n_generated + unfinished.astype(mx.int32)
    unfinished = mx.logical_and(unfinished, nxt != eos)
    return nxt[:, None], unfinished, logprob_sum, logprob_min, n_generated, mx.logical_not(mx.any(unfinished))


def _greedy_step(model, compiled: bool):
    """One greedy step as a single function of arrays (compiled once per model, shape and position).
    `ban_eos` (min-length not reached) is a Python bool, a constant of the graph like the position."""
    cache = model.__dict__.setdefault("_greedy_steps", {})
    if compiled not in cache:
        step_fn = model.decode_step(compiled=False)

        def greedy(tokens, offset, cross_kv, caches, unfinished, logprob_sum, logprob_min, n_generated, ban_eos, ids):
            logits, caches = step_fn(tokens, offset, cross_kv, caches)
            if ban_eos:  # min-length
                logits = mx.where((mx.arange(logits.shape[-1]) == ids[0])[None], NEG_INF, logits)
            nxt = mx.argmax(logits, axis=-1)
            tokens, unfinished, logprob_sum, logprob_min, n_generated, done = _bookkeep(
                nxt, _chosen_logprob(logits, nxt), unfinished, logprob_sum, logprob_min, n_generated, ids)
            return tokens, caches, unfinished, logprob_sum, logprob_min, n_generated, done

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
        return beam_search(model, pixel_values, cfg)
    compiled = use_compiled_step()
    batch, cross_kv = _encode_for_generation(model, pixel_values, cfg.num_return_sequences, compiled)
    total = cfg.total_length()
    min_total = cfg.min_total_length()
    cache = model.make_cache(batch, total)
    caches = [c.kv for c in cache]
    key = mx.random.key(cfg.seed) if (cfg.do_sample and cfg.seed is not None) else None
    host_seqs = cfg.no_repeat_ngram_size > 0

    seqs = np.full((batch, 1), cfg.decoder_start_token_id, dtype=np.int64) if host_seqs else None
    tokens = mx.full((batch, 1), cfg.decoder_start_token_id, dtype=mx.int32)
    unfinished = mx.ones((batch,), dtype=mx.bool_)
    logprob_sum = mx.zeros((batch,), dtype=mx.float32)
    logprob_min = mx.zeros((batch,), dtype=mx.float32)  # log-probs are <= 0: zero is "no token yet"
    n_generated = mx.zeros((batch,), dtype=mx.int32)
    ids = mx.array([cfg.eos_token_id, cfg.pad_token_id], dtype=mx.int32)
    generated = []
    pending_done = None
    if not cfg.do_sample and not host_seqs:
        # greedy: the whole step (decoder, min-length, argmax, finished-row bookkeeping) is one graph
        greedy = _greedy_step(model, compiled)
        for step in range(total - 1):
            ban_eos = step + 1 < min_total
            tokens, caches, unfinished, logprob_sum, logprob_min, n_generated, done = greedy(
                tokens, step, cross_kv, caches, unfinished, logprob_sum, logprob_min, n_generated,
                ban_eos, ids)
            generated.append(tokens)
            mx.async_eval(tokens, done, logprob_sum, logprob_min, n_generated, caches)
            if pending_done is not None and pending_done.item():
                break  # every row had finished one step ago; this step only padded
            pending_done = done
        generated = [t[:, 0] for t in generated]
    else:
        step_fn = model.decode_step(compiled=compiled)
        eos_col = None
        for step in range(total - 1):
            cur_len = step + 1
            logits, caches = step_fn(tokens, step, cross_kv, caches)
            if cur_len < min_total:
                if eos_col is None:
                    eos_col = (mx.arange(logits.shape[-1]) == cfg.eos_token_id)[None]
                logits = mx.where(eos_col, NEG_INF, logits)
            if host_seqs:
                logits = no_repeat_ngram_processor(logits, seqs, cfg)
            if cfg.do_sample:
                warped = sampling_warpers(logits, cfg)
                if key is not None:
                    key, sub = mx.random.split(key)
                    nxt = mx.random.categorical(warped, key=sub)
                else:
                    nxt = mx.random.categorical(warped)
            else:
                nxt = mx.argmax(logits, axis=-1)
            tokens, unfinished, logprob_sum, logprob_min, n_generated, done = _bookkeep(
                nxt, _chosen_logprob(logits, nxt), unfinished, logprob_sum, logprob_min, n_generated, ids)
            generated.append(tokens[:, 0])
            if host_seqs:
                seqs = np.concatenate([seqs, np.array(tokens).astype(np.int64)], axis=1)
                if not np.array(unfinished).any():
                    break
                continue
            mx.async_eval(tokens, done, logprob_sum, logprob_min, n_generated, caches)
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
    return Generated(sequences=sequences, scores=scores, min_scores=np.array(logprob_min, dtype=np.float64).tolist())

"""Beam search for the MLX TrOCR model, with transformers 5.x semantics (`GenerationMixin._beam_search`).

transformers 5 runs a vectorised beam search over static-shaped tensors; this is the same algorithm,
step for step, with the same float32 arithmetic:

* each step keeps the top K = 2 * num_beams continuations of every image over all its beams
  (accumulated log-probs: log_softmax of the logits, then the logits processors: min-length,
  no-repeat-ngram);
* continuations that hit a stopping criterion (EOS, or max_length) are penalised by -1e9 and the best
  num_beams others continue;
* the top num_beams continuations that just finished are merged into the finished set with their
  score divided by generated_length ** length_penalty, unless the batch item is full and
  early_stopping is True, or the early-stop heuristic says no improvement is possible;
* the early-stop heuristic (`_check_early_stop_heuristic`) and the loop condition
  (`_beam_search_has_unfinished_sequences`) follow early_stopping True / False / "never" exactly.

Split of work: the model step, log_softmax, processors and the top-K selection over
(num_beams * vocab) run on the device; only the K candidates per image (values and indices) come
back to the host, where the (tiny) bookkeeping runs in numpy. The self-attention cache is reordered
by beam index inside the compiled decoder step; the cross-attention K/V are computed once per image
and repeated per beam once.

Scores: `Generated.scores` holds, for each returned sequence, the mean log-probability of its
generated tokens (EOS included), i.e. the accumulated beam log-prob divided by the generated length
(not transformers' length-penalised `sequences_scores`). This is the same quantity greedy decoding
returns, so it can be used as a confidence in (-inf, 0] whatever the decoding method; `min_scores` holds
the lowest token log-probability of each, as greedy decoding's does.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from scripts.generation import Generated, GenerationConfig, banned_ngram_tokens, use_compiled_step

BIG = np.float32(-1.0e9)


def _topk_desc(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, best first; ties go to the lower index (torch.topk on CPU)."""
    order = np.argsort(-values, axis=-1, kind="stable")
    return order[:, :k]


def _gather(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """transformers' _gather_beams: arr (B, N, ...) indexed along dim 1 by idx (B, M)."""
    return arr[np.arange(arr.shape[0])[:, None], idx]


def beam_search(model, pixel_values: mx.array, cfg: GenerationConfig) -> Generated:
    """Beam search over a batch of images; returns num_return_sequences results per image, image-major."""
    nb = cfg.num_beams
    if cfg.num_return_sequences > nb:
        raise ValueError("num_return_sequences cannot exceed num_beams")
    lp_pow = float(cfg.length_penalty)
    early = cfg.early_stopping
    eos, pad = cfg.eos_token_id, cfg.pad_token_id
    max_length = cfg.total_length()
    min_length = cfg.min_total_length()
    prompt_len = 1
    k_keep = 2 * nb  # max(2, 1 + n_eos) * num_beams with a single EOS id
    top_num_beam_mask = np.arange(k_keep) < nb

    memory = model.encode(pixel_values)
    batch = memory.shape[0]
    # cross-attention K/V: projected once per image, repeated per beam once
    cross_kv = [(mx.repeat(k, nb, axis=0), mx.repeat(v, nb, axis=0)) for k, v in model.decoder.cross_kv(memory)]
    cache = model.make_cache(batch * nb, max_length)
    caches = [c.kv for c in cache]
    step_fn = model.decode_step(compiled=use_compiled_step())
    vocab = None

    fill = pad if pad is not None else eos
    running_sequences = np.full((batch, nb, max_length), fill, dtype=np.int64)
    running_sequences[:, :, 0] = cfg.decoder_start_token_id
    sequences = running_sequences.copy()
    running_beam_scores = np.zeros((batch, nb), dtype=np.float32)
    running_beam_scores[:, 1:] = BIG
    beam_scores = np.full((batch, nb), BIG, dtype=np.float32)
    # for our confidence: raw log-prob sums and generated lengths of the finished sequences
    finished_sums = np.zeros((batch, nb), dtype=np.float32)
    finished_lens = np.ones((batch, nb), dtype=np.int64)
    # and the lowest token log-prob of each running / finished sequence (Generated.min_scores)
    running_mins = np.zeros((batch, nb), dtype=np.float32)
    finished_mins = np.zeros((batch, nb), dtype=np.float32)
    is_sent_finished = np.zeros((batch, nb), dtype=bool)
    unsatisfied = np.ones((batch, 1), dtype=bool)

    cur_len = prompt_len
    index = None
    tokens = mx.full((batch * nb, 1), cfg.decoder_start_token_id, dtype=mx.int32)
    eos_col = None
    key = mx.random.key(cfg.seed) if (cfg.do_sample and cfg.seed is not None) else None
    while True:
        logits, caches = step_fn(tokens, cur_len - 1, cross_kv, caches, index)
        if vocab is None:
            vocab = logits.shape[-1]
            eos_col = (mx.arange(vocab) == eos)[None]
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        # logits processors, in transformers' order (on log-probs, as in _beam_search)
        if cur_len < min_length:
            log_probs = mx.where(eos_col, -mx.inf, log_probs)
        if cfg.no_repeat_ngram_size > 0:
            flat_seqs = running_sequences[:, :, :cur_len].reshape(batch * nb, cur_len)
            banned = banned_ngram_tokens(flat_seqs, cfg.no_repeat_ngram_size)
            rows = [r for r, toks in enumerate(banned) for _ in toks]
            if rows:
                cols = [t for toks in banned for t in toks]
                flat = log_probs.reshape(-1)
                flat[mx.array(np.asarray(rows) * vocab + np.asarray(cols), dtype=mx.uint32)] = -mx.inf
                log_probs = flat.reshape(batch * nb, vocab)
        acc = log_probs.reshape(batch, nb, vocab) + mx.array(running_beam_scores)[:, :, None]
        acc = acc.reshape(batch, nb * vocab)
        if cfg.do_sample:
            # sampling K continuations without replacement from softmax(acc): Gumbel top-K
            sub = None
            if key is not None:
                key, sub = mx.random.split(key)
            gumbel = mx.random.gumbel(acc.shape, key=sub)
            cand = mx.argpartition(-(acc + gumbel), k_keep - 1, axis=-1)[:, :k_keep]
            order_vals = mx.take_along_axis(acc + gumbel, cand, axis=-1)
        else:
            cand = mx.argpartition(-acc, k_keep - 1, axis=-1)[:, :k_keep]
            order_vals = mx.take_along_axis(acc, cand, axis=-1)
        cand_vals = mx.take_along_axis(acc, cand, axis=-1)
        mx.eval(cand, cand_vals, order_vals)
        cand, cand_vals, order_vals = np.array(cand), np.array(cand_vals), np.array(order_vals)
        # sort the K candidates best first (ties: lower flat index first)
        order = _row_lexsort(cand, order_vals)
        topk_indices = np.take_along_axis(cand, order, axis=-1).astype(np.int64)
        topk_log_probs = np.take_along_axis(cand_vals, order, axis=-1).astype(np.float32)

        # _get_top_k_continuations
        topk_beam = topk_indices // vocab
        topk_ids = topk_indices % vocab
        topk_running_sequences = _gather(running_sequences, topk_beam)
        topk_running_sequences[:, :, cur_len] = topk_ids
        topk_token_lp = topk_log_probs - _gather(running_beam_scores, topk_beam)
        topk_mins = np.minimum(_gather(running_mins, topk_beam), topk_token_lp)

        # stopping criteria: EOS, or the sequence reached max_length
        hits = (topk_ids == eos) | (cur_len + 1 >= max_length)

        # _get_running_beams_for_next_iteration
        topk_running_log_probs = topk_log_probs + hits.astype(np.float32) * BIG
        next_idx = _topk_desc(topk_running_log_probs, nb)
        running_sequences = _gather(topk_running_sequences, next_idx)
        running_beam_scores = _gather(topk_running_log_probs, next_idx)
        running_mins = _gather(topk_mins, next_idx)
        source_beam = _gather(topk_beam, next_idx)

        # _update_finished_beams
        just_finished = hits & top_num_beam_mask[None, :]
        gen_len = cur_len + 1 - prompt_len
        scored = topk_log_probs / np.float32(gen_len ** lp_pow)
        full = np.all(is_sent_finished, axis=-1, keepdims=True) & (early is True)
        scored = scored + full.astype(np.float32) * BIG
        scored = scored + (~unsatisfied).astype(np.float32) * BIG
        scored = scored + (~just_finished).astype(np.float32) * BIG
        merged_scores = np.concatenate([beam_scores, scored.astype(np.float32)], axis=1)
        keep = _topk_desc(merged_scores, nb)
        sequences = _gather(np.concatenate([sequences, topk_running_sequences], axis=1), keep)
        beam_scores = _gather(merged_scores, keep)
        finished_sums = _gather(np.concatenate([finished_sums, topk_log_probs], axis=1), keep)
        finished_mins = _gather(np.concatenate([finished_mins, topk_mins], axis=1), keep)
        finished_lens = _gather(np.concatenate([finished_lens, np.full((batch, k_keep), gen_len)], axis=1), keep)
        is_sent_finished = _gather(np.concatenate([is_sent_finished, just_finished], axis=1), keep)

        # next iteration: reorder the cache by the chosen beams, feed the new tokens
        cur_len += 1
        if early == "never" and lp_pow > 0.0:
            best_len = max_length - prompt_len
        else:
            best_len = cur_len - prompt_len
        best_possible = running_beam_scores[:, :1] / np.float32(best_len ** lp_pow)
        worst_finished = np.where(is_sent_finished, np.min(beam_scores, axis=1, keepdims=True), BIG)
        unsatisfied = unsatisfied & np.any(best_possible > worst_finished, axis=-1, keepdims=True)
        go_on = bool(np.any(unsatisfied)) and not (bool(np.all(is_sent_finished)) and early is True) \
            and not bool(np.all(hits))
        if not go_on:
            break
        index = mx.array((source_beam + np.arange(batch)[:, None] * nb).reshape(-1), dtype=mx.int32)
        tokens = mx.array(running_sequences[:, :, cur_len - 1].reshape(-1, 1), dtype=mx.int32)

    n_ret = cfg.num_return_sequences
    out_seqs, out_scores, out_mins = [], [], []
    for b in range(batch):
        for r in range(n_ret):
            row = sequences[b, r].tolist()
            length = int(finished_lens[b, r]) + prompt_len
            row = row[:length]
            if eos in row[prompt_len:]:
                row = row[: row.index(eos, prompt_len) + 1]
            out_seqs.append(row)
            out_scores.append(float(finished_sums[b, r]) / max(int(finished_lens[b, r]), 1))
            out_mins.append(float(finished_mins[b, r]))
    return Generated(sequences=out_seqs, scores=out_scores, min_scores=out_mins)


def _row_lexsort(cand: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Per row: order by value descending, then by flat index ascending."""
    return np.stack([np.lexsort((c, -v)) for c, v in zip(cand, vals)])


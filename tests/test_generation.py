"""Generation against transformers' `generate` on tiny random-weight checkpoints: beam search (length
penalty, early stopping, no-repeat n-grams, several returned sequences), min_length, batched == one by
one, seeded sampling, scores, and the compiled decoder step.

The checkpoints use `eos_scale` so that </s> is reachable: beam search then finishes hypotheses at
different lengths, which is where length_penalty and early_stopping change the result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hf_fixtures as F
from scripts.convert_trocr_to_mlx import convert
from scripts.mlx_processor import load_mlx_processor

NEW = 24
EOS, PAD = 2, 1
# how much to scale the </s> output row so that hypotheses finish at varied lengths (tied "small" needs
# more: its </s> row is also the start token's embedding)
EOS_SCALE = {"base": 3.0, "small": 12.0}
IMAGE_SEED = {"base": 3, "small": 5}  # images on which some hypotheses do finish early


@pytest.fixture(scope="module", params=["base", "small"])
def setup(request, tmp_path_factory):
    """(HF model loaded with from_pretrained, HF folder, MLX processor, images, NHWC pixels)."""
    from transformers import VisionEncoderDecoderModel

    root = tmp_path_factory.mktemp(f"gen_{request.param}")
    hf_dir = F.save_checkpoint(F.make_model(request.param, seed=1, eos_scale=EOS_SCALE[request.param]), root / "hf")
    hf_model = VisionEncoderDecoderModel.from_pretrained(hf_dir).eval()
    proc = load_mlx_processor(convert(hf_dir, root / "mlx", verbose=False))
    images = F.random_images(4, seed=IMAGE_SEED[request.param])
    return hf_model, hf_dir, proc, images, proc.preprocess(images)


def hf_generate(setup, **gen):
    hf_model, _, _, _, pixels = setup
    with torch.no_grad():
        out = hf_model.generate(torch.from_numpy(pixels).permute(0, 3, 1, 2), **gen)
    return [strip(row) for row in out.tolist()]


def strip(row):
    """transformers pads finished rows; our sequences stop at </s>."""
    if EOS in row[1:]:
        return row[: row.index(EOS, 1) + 1]
    while row and row[-1] == PAD:
        row = row[:-1]
    return row


def hf_texts(setup, seqs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(setup[1]).batch_decode(seqs, skip_special_tokens=True)


BEAM_CASES = [
    dict(num_beams=4, length_penalty=0.6, early_stopping=True),
    dict(num_beams=4, length_penalty=2.0, early_stopping=False),
    dict(num_beams=4, length_penalty=0.6, early_stopping=False, no_repeat_ngram_size=3),
    dict(num_beams=4, length_penalty=2.0, early_stopping=True, num_return_sequences=2),
    dict(num_beams=4, length_penalty=2.0, early_stopping="never", no_repeat_ngram_size=3),
    dict(num_beams=3, length_penalty=-0.5, early_stopping="never", num_return_sequences=3),
    dict(num_beams=4, min_length=12),
]


@pytest.mark.parametrize("gen", BEAM_CASES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()))
def test_beam_search_matches_transformers(setup, gen):
    _, _, proc, _, pixels = setup
    ref = hf_generate(setup, do_sample=False, max_new_tokens=NEW, **gen)
    ours = proc.generate(pixels, max_new_tokens=NEW, **gen)
    assert ours == ref
    assert proc.batch_decode(ours) == hf_texts(setup, ref)


def test_beam_fixture_reaches_eos(setup):
    """Guard: the checkpoint must finish some hypotheses early, or the beam cases test little."""
    ours = setup[2].generate(setup[4], max_new_tokens=NEW, num_beams=4, length_penalty=0.6, num_return_sequences=4)
    assert any(s[-1] == EOS and len(s) < NEW + 1 for s in ours)


@pytest.mark.parametrize("min_length", [0, 20])
def test_greedy_matches_transformers_and_min_length(setup, min_length):
    _, _, proc, _, pixels = setup
    ref = hf_generate(setup, do_sample=False, num_beams=1, max_new_tokens=NEW, min_length=min_length)
    ours = proc.generate(pixels, max_new_tokens=NEW, min_length=min_length)
    assert ours == ref
    if min_length:
        assert all(len(s) >= min_length for s in ours)
        assert all(EOS not in s[1:min_length] for s in ours)
    else:
        assert any(len(s) < NEW + 1 for s in ours), "fixture should let greedy stop early"


@pytest.mark.parametrize("gen", [dict(), dict(num_beams=4, length_penalty=0.6, num_return_sequences=2),
                                 dict(num_beams=3, early_stopping=True, no_repeat_ngram_size=3)],
                         ids=["greedy", "beam4", "beam3-ngram"])
def test_batched_equals_one_by_one(setup, gen):
    proc, images = setup[2], setup[3]
    batched = proc.process_batch(images, batch_size=4, show_progress=False, max_new_tokens=NEW, return_scores=True, **gen)
    single = [proc.process_batch([im], batch_size=1, show_progress=False, max_new_tokens=NEW, return_scores=True,
                                 **gen)[0] for im in images]
    uneven = proc.process_batch(images, batch_size=3, show_progress=False, max_new_tokens=NEW, return_scores=True, **gen)
    flat = lambda items: [x for it in items for x in (it if isinstance(it, list) else [it])]  # noqa: E731
    for a, b, c in zip(flat(batched), flat(single), flat(uneven)):
        assert a[0] == b[0] == c[0]
        assert a[1] == pytest.approx(b[1], abs=1e-4) and a[1] == pytest.approx(c[1], abs=1e-4)
    if gen.get("num_return_sequences", 1) > 1:
        assert all(isinstance(it, list) and len(it) == gen["num_return_sequences"] for it in batched)


@pytest.mark.parametrize("gen", [dict(), dict(num_beams=3)], ids=["multinomial", "beam-sample"])
def test_sampling_seed_repeats_and_seeds_differ(setup, gen):
    proc, pixels = setup[2], setup[4]
    opts = dict(do_sample=True, top_k=0, temperature=1.5, max_new_tokens=NEW, **gen)
    a = proc.generate(pixels, seed=7, **opts)
    b = proc.generate(pixels, seed=7, **opts)
    c = proc.generate(pixels, seed=8, **opts)
    assert a == b
    assert a != c


@pytest.mark.parametrize("gen", [dict(), dict(num_beams=4, length_penalty=2.0, num_return_sequences=2),
                                 dict(do_sample=True, seed=0, top_p=0.9)], ids=["greedy", "beam", "sample"])
def test_scores_are_mean_logprobs(setup, gen):
    proc, images = setup[2], setup[3]
    out = proc.process_batch(images, batch_size=2, show_progress=False, max_new_tokens=NEW, return_scores=True, **gen)
    pairs = [p for it in out for p in (it if isinstance(it, list) else [it])]
    assert pairs and all(isinstance(t, str) and math.isfinite(s) and s <= 0 for t, s in pairs)


def test_beam_score_is_mean_of_token_logprobs(setup):
    """The beam confidence equals the mean log-softmax of the chosen tokens under teacher forcing."""
    import mlx.core as mx

    proc, pixels = setup[2], setup[4]
    seqs, scores = proc.generate(pixels[:1], max_new_tokens=NEW, num_beams=4, return_scores=True)
    ids = mx.array([seqs[0]])
    logits = proc.model(mx.array(pixels[:1]), ids[:, :-1]).astype(mx.float32)
    lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))[0]
    expected = float(np.mean([lp[i, t] for i, t in enumerate(seqs[0][1:])]))
    assert scores[0] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("gen", [dict(), dict(num_beams=4, length_penalty=0.6)], ids=["greedy", "beam"])
def test_compiled_step_gives_same_tokens(setup, gen, monkeypatch):
    proc, pixels = setup[2], setup[4]
    monkeypatch.setenv("TROCR_MLX_COMPILE", "0")
    plain = proc.generate(pixels, max_new_tokens=NEW, return_scores=True, **gen)
    monkeypatch.setenv("TROCR_MLX_COMPILE", "1")
    compiled = proc.generate(pixels, max_new_tokens=NEW, return_scores=True, **gen)
    assert plain[0] == compiled[0]
    assert np.allclose(plain[1], compiled[1], atol=1e-4)


@pytest.mark.parametrize("gen", [dict(), dict(num_beams=4, length_penalty=0.6, num_return_sequences=2)],
                         ids=["greedy", "beam"])
def test_min_scores_are_lowest_token_logprobs(setup, gen):
    """Generated.min_scores (the flagging score of scripts/confidence.py) is the lowest log-softmax of the
    chosen tokens under teacher forcing, EOS included; for every returned sequence."""
    import mlx.core as mx

    from scripts.decoding import generate_tokens

    proc, pixels = setup[2], setup[4]
    out = generate_tokens(proc.model, mx.array(pixels), proc.generation_options(max_new_tokens=NEW, **gen))
    k = gen.get("num_return_sequences", 1)
    assert len(out.min_scores) == len(out.sequences) == len(pixels) * k
    for i, seq in enumerate(out.sequences):
        logits = proc.model(mx.array(pixels[i // k:i // k + 1]), mx.array([seq[:-1]])).astype(mx.float32)
        lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))[0]
        token_lp = [lp[j, t] for j, t in enumerate(seq[1:])]
        assert out.min_scores[i] == pytest.approx(min(token_lp), abs=1e-3)
        assert out.min_scores[i] <= out.scores[i] + 1e-6


def test_greedy_min_score_matches_transformers(setup):
    """The same number from transformers' own per-token scores (compute_transition_scores)."""
    import mlx.core as mx

    from scripts.decoding import generate_tokens

    hf_model, _, proc, _, pixels = setup
    with torch.no_grad():
        out = hf_model.generate(torch.from_numpy(pixels).permute(0, 3, 1, 2), do_sample=False, num_beams=1,
                                max_new_tokens=NEW, output_scores=True, return_dict_in_generate=True)
        steps = hf_model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).numpy()
    ours = generate_tokens(proc.model, mx.array(pixels), proc.generation_options(max_new_tokens=NEW))
    for row, lp, mine in zip(out.sequences.tolist(), steps, ours.min_scores):
        n = len(strip(row)) - 1
        assert mine == pytest.approx(float(lp[:n].min()), abs=1e-4)

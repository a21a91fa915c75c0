#!/usr/bin/env python3
"""Where the time of one MLX TrOCR line goes: encoder vs decoder steps, and host overhead vs GPU work.

    python dev/profile_decode.py --dtype float16 --batch-sizes 1,32

Builds the trocr-base architecture with random weights in MLX alone (no torch needed) and times:
the encoder; one decoder step (compiled, as generation runs it); the same step's matrix work alone
(the decoder's weights multiplied by the step's activations, as a few big matmuls); and an empty
compiled call (the floor of dispatching anything). If a decoder step takes much longer than its
matmuls, and barely grows from batch 1 to 32, the step is bound by dispatching its kernels, not by
the GPU's arithmetic or memory.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import time

import mlx.core as mx
from mlx.utils import tree_flatten

from scripts.mlx_models import DTYPES, DecoderConfig, EncoderConfig, TrOCR, TrOCRConfig


def trocr_base_config() -> TrOCRConfig:
    return TrOCRConfig(
        encoder=EncoderConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                              image_size=(384, 384), patch_size=(16, 16)),
        decoder=DecoderConfig(vocab_size=50265, d_model=1024, decoder_layers=12, decoder_attention_heads=16,
                              decoder_ffn_dim=4096, cross_attention_hidden_size=768, tie_word_embeddings=False))


def timed(fn, repeats: int = 20) -> float:
    mx.eval(fn())
    mx.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn())
    mx.synchronize()
    return (time.perf_counter() - t) / repeats


def profile(dtype: str, batch_sizes, position: int = 10, total: int = 32) -> dict:
    model = TrOCR(trocr_base_config())
    model.set_dtype(DTYPES[dtype])
    mx.eval(model.parameters())
    dec_params = sum(v.size for _, v in tree_flatten(model.decoder.parameters()))
    out = {"device": str(mx.default_device()), "dtype": dtype, "decoder_parameters": dec_params, "batches": {}}
    step = model.decode_step(compiled=True)
    plain = model.decode_step(compiled=False)
    empty = mx.compile(lambda x: x + 1)
    out["empty_compiled_call_ms"] = timed(lambda: empty(mx.array(1.0)), 200) * 1e3
    for b in batch_sizes:
        px = mx.random.normal((b, 384, 384, 3)).astype(DTYPES[dtype])
        enc_ms = timed(lambda: model.encode(px), 5) * 1e3
        cross = model.decoder.cross_kv(model.encode(px))
        mx.eval(cross)
        cache = model.make_cache(b, total)
        keys, values = [c.keys for c in cache], [c.values for c in cache]
        tokens = mx.ones((b, 1), dtype=mx.int32)
        offset = mx.array(position, dtype=mx.int32)
        step_ms = timed(lambda: step(tokens, offset, cross, keys, values)[0]) * 1e3
        # the step's weight matmuls alone: every decoder Linear applied to a (b, in) activation
        linears = [m for _, m in model.decoder.named_modules() if hasattr(m, "weight") and m.weight.ndim == 2
                   and not type(m).__name__.startswith("Embedding")]
        xs = {m.weight.shape[1]: mx.random.normal((b, m.weight.shape[1])).astype(DTYPES[dtype]) for m in linears}
        matmul_ms = timed(lambda: [xs[m.weight.shape[1]] @ m.weight.T for m in linears]) * 1e3
        out["batches"][b] = {
            "encoder_ms": round(enc_ms, 3), "decoder_step_ms": round(step_ms, 3),
            "step_matmuls_only_ms": round(matmul_ms, 3), "linear_layers": len(linears),
            "decoder_step_uncompiled_ms": round(timed(lambda: plain(tokens, offset, cross, keys, values)[0]) * 1e3, 3),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float16", choices=list(DTYPES))
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--output", help="write the JSON here too")
    args = ap.parse_args(argv)
    result = profile(args.dtype, [int(b) for b in args.batch_sizes.split(",")])
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

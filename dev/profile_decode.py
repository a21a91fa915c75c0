#!/usr/bin/env python3
"""Where the time of MLX TrOCR goes: encoder vs decoder steps, per op kind, host overhead vs device work.

    python dev/profile_decode.py --random-trocr-base --dtype float16 --batch-sizes 1,32   # GPU
    python dev/profile_decode.py --model models/mlx/default --batch-sizes 1,8             # the bundled model
    python dev/profile_decode.py --random-trocr-base --dtype float32 --batch-sizes 8 --quantize 8

For each batch size it times, as generation runs them (compiled or not, see generation.use_compiled_step):
the encoder; one greedy decoder step; the host time to build one step's graph (no evaluation); the step's
weight matmuls alone (every decoder Linear on a (B, in) activation); and an empty compiled call (the
floor of dispatching anything). Then, with --per-op (default on), the encoder and one step again eagerly,
evaluated after every op, the time summed per op kind (linear, attention, layer norm, activation, ...);
"other" is what runs between the timed ops (reshape copies, residual adds, the greedy bookkeeping).
Per-op times include one device round trip per op, so on a GPU read them as proportions.

The roofline block gives the lower bound of a batch's time from the model's sizes: the bytes each step
must read (decoder weights, cross-attention K/V, the self-attention cache) over the memory bandwidth, and
the FLOPs over the peak (give --bandwidth-gbs and --peak-tflops for the device; H200 defaults).
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])
    import scripts  # noqa: F401  (before mlx: OpenBLAS for MLX on Linux CPUs, scripts/cpu_blas.py)

import argparse
import json
import time
from collections import defaultdict
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from scripts import mlx_models as M
from scripts.decoding import _encoder, _greedy_step
from scripts.generation import use_compiled_step
from scripts.mlx_models import DTYPES, DecoderConfig, EncoderConfig, TrOCR, TrOCRConfig


def trocr_base_config() -> TrOCRConfig:
    return TrOCRConfig(
        encoder=EncoderConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                              image_size=(384, 384), patch_size=(16, 16)),
        decoder=DecoderConfig(vocab_size=50265, d_model=1024, decoder_layers=12, decoder_attention_heads=16,
                              decoder_ffn_dim=4096, cross_attention_hidden_size=768, tie_word_embeddings=False))


def timed(fn, repeats: int = 20) -> float:
    """Mean seconds of fn() evaluated, after one untimed call."""
    mx.eval(fn())
    mx.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn())
    mx.synchronize()
    return (time.perf_counter() - t) / repeats


# --------------------------------------------------------------------------------------------------
# Per-op-kind timing: patch the layers' calls to evaluate their inputs, then themselves, and add up
# --------------------------------------------------------------------------------------------------


class OpTimer:
    def __init__(self):
        self.ms = defaultdict(float)
        self.count = defaultdict(int)
        self._active = False

    def wrap(self, kind: str, fn):
        def timed_call(*args, **kwargs):
            if self._active:  # an op inside a timed op (the output projection's Linear): counted by the outer
                return fn(*args, **kwargs)
            mx.eval([leaf for _, leaf in tree_flatten([list(args), kwargs]) if isinstance(leaf, mx.array)])
            mx.synchronize()
            self._active = True
            t = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
                mx.eval(out)
                mx.synchronize()
            finally:
                self._active = False
            self.ms[kind] += (time.perf_counter() - t) * 1e3
            self.count[kind] += 1
            return out

        return timed_call


@contextmanager
def per_op_timing(model: TrOCR):
    """Within the block, model ops are timed one by one (eagerly evaluated). Yields the OpTimer."""
    timer = OpTimer()
    patched = []

    def patch(owner, name, kind):
        original = getattr(owner, name)
        patched.append((owner, name, original))
        wrapped = timer.wrap(kind, original)
        if isinstance(owner, type):  # a plain function, so that it binds as a method
            setattr(owner, name, lambda self, *a, **k: wrapped(self, *a, **k))
        elif owner is mx.fast:
            setattr(owner, name, wrapped)
        else:  # a layer instance's attribute (its activation function)
            object.__setattr__(owner, name, wrapped)

    patch(nn.Linear, "__call__", "linear (matmul + bias)")
    patch(nn.QuantizedLinear, "__call__", "linear, quantized")
    patch(nn.LayerNorm, "__call__", "layer norm")
    patch(nn.Conv2d, "__call__", "patch embedding (conv)")
    patch(nn.Embedding, "__call__", "token embedding")
    patch(M.TextDecoder, "logits", "output projection")
    patch(M.KVCache, "update", "kv cache write")
    patch(mx.fast, "scaled_dot_product_attention", "attention (sdpa)")
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        patch(layer, "act", "activation")
    try:
        yield timer
    finally:
        for owner, name, original in reversed(patched):
            if isinstance(owner, type) or owner is mx.fast:
                setattr(owner, name, original)
            else:
                object.__setattr__(owner, name, original)


def per_op_profile(fn, model: TrOCR, repeats: int = 3) -> dict:
    """fn() run eagerly with per-op timing: {kind: ms per call}, plus the total and 'other'."""
    mx.eval(fn())
    totals, counts, wall = defaultdict(float), {}, 0.0
    for _ in range(repeats):
        with per_op_timing(model) as timer:
            mx.synchronize()
            t = time.perf_counter()
            mx.eval(fn())
            mx.synchronize()
            wall += (time.perf_counter() - t) * 1e3
        for k, v in timer.ms.items():
            totals[k] += v
        counts = dict(timer.count)
    out = {k: {"ms": round(v / repeats, 3), "calls": counts[k]} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    total = wall / repeats
    out["other (between timed ops)"] = {"ms": round(total - sum(v["ms"] for v in out.values()), 3), "calls": None}
    out["total, evaluated op by op"] = {"ms": round(total, 3), "calls": None}
    return out


# --------------------------------------------------------------------------------------------------
# Roofline: bytes and FLOPs of one batch, from the model's sizes
# --------------------------------------------------------------------------------------------------


def _nbytes(module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(module.parameters()))


def _in_dims(m) -> int:
    return m.scales.shape[1] * m.group_size if isinstance(m, nn.QuantizedLinear) else m.weight.shape[1]


def _linear_params(module) -> int:
    """Multiply-adds per token of the module's Linear layers (quantized ones counted unpacked)."""
    total = 0
    for _, m in module.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            total += m.scales.shape[0] * m.scales.shape[1] * m.group_size
        elif isinstance(m, nn.Linear):
            total += m.weight.size
    return total


def roofline(model: TrOCR, batch: int, new_tokens: int, bandwidth_gbs: float, peak_tflops: float) -> dict:
    """Lower bounds of one batch of `batch` lines, `new_tokens` decoder steps each."""
    cfg = model.config
    item = 2 if model.dtype in (mx.float16, mx.bfloat16) else 4
    s_enc, d, layers = cfg.encoder.seq_len, cfg.decoder.d_model, cfg.decoder.decoder_layers
    emb = model.decoder.embed_tokens.weight
    # per step: every decoder weight except the embedding tables (B rows gathered) unless tied (then read as
    # the output projection), and except cross-attention's k/v projections (run once per image)
    cross_proj = [layer.encoder_attn.kv_proj for layer in model.decoder.layers]
    dec_bytes = _nbytes(model.decoder) - (0 if cfg.decoder.tie_word_embeddings else emb.nbytes)
    dec_bytes -= sum(_nbytes(m) for m in cross_proj)
    if cfg.decoder.use_learned_position_embeddings:
        dec_bytes -= model.decoder.embed_positions.weight.nbytes
    cross_kv = batch * layers * 2 * s_enc * d * item
    self_kv = batch * layers * 2 * (new_tokens / 2) * d * item  # mean filled length
    step_bytes = dec_bytes + cross_kv + self_kv
    enc_flops = 2 * _linear_params(model.encoder) * s_enc + 4 * s_enc * s_enc * cfg.encoder.hidden_size * cfg.encoder.num_hidden_layers
    cross_proj_flops = 2 * s_enc * 2 * d * (cfg.decoder.cross_attention_hidden_size or d) * layers
    dec_linear = _linear_params(model.decoder) - sum(_linear_params(m) for m in cross_proj)
    if cfg.decoder.tie_word_embeddings:
        dec_linear += emb.size
    step_flops = batch * (2 * dec_linear + 4 * (s_enc + new_tokens / 2) * d * layers)
    total_bytes = _nbytes(model.encoder) + sum(_nbytes(m) for m in cross_proj) + new_tokens * step_bytes
    total_flops = batch * (enc_flops + cross_proj_flops) + new_tokens * step_flops
    t_mem = total_bytes / (bandwidth_gbs * 1e9)
    t_flop = total_flops / (peak_tflops * 1e12)
    t = max(t_mem, t_flop)
    return {"batch": batch, "new_tokens": new_tokens, "decoder_weight_bytes_per_step": int(dec_bytes),
            "kv_bytes_per_step": int(cross_kv + self_kv), "bytes_per_batch": int(total_bytes),
            "flops_per_batch": int(total_flops), "memory_bound_ms": round(t_mem * 1e3, 3),
            "compute_bound_ms": round(t_flop * 1e3, 3), "bound": "memory" if t_mem >= t_flop else "compute",
            "roofline_lines_per_s": round(batch / t, 1), "step_memory_bound_ms": round(step_bytes / (bandwidth_gbs * 1e9) * 1e3, 4),
            "bandwidth_gbs": bandwidth_gbs, "peak_tflops": peak_tflops}


# --------------------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------------------


def build_model(args) -> TrOCR:
    if args.model:
        model = M.load_model(args.model, dtype=args.dtype)
    else:
        model = TrOCR(trocr_base_config())
        model.set_dtype(DTYPES[args.dtype or "float32"])
        mx.eval(model.parameters())
    if args.quantize:
        M.quantize_model(model, bits=args.quantize, group_size=args.group_size)
    return model


def profile(model: TrOCR, batch_sizes, position: int = 10, total: int = 32, per_op: bool = True,
            bandwidth_gbs: float = 4800.0, peak_tflops: float = 989.0, new_tokens: int = 20) -> dict:
    compiled = use_compiled_step()
    dec_params = sum(v.size for _, v in tree_flatten(model.decoder.parameters()))
    out = {"device": str(mx.default_device()), "dtype": str(model.dtype), "compiled": compiled,
           "decoder_parameters": dec_params, "model_bytes": _nbytes(model), "batches": {}}
    empty = mx.compile(lambda x: x + 1)
    out["empty_compiled_call_ms"] = round(timed(lambda: empty(mx.array(1.0)), 200) * 1e3, 4)
    greedy = _greedy_step(model, compiled)
    encoder = _encoder(model, compiled)
    h, w = model.config.encoder.image_size
    for b in batch_sizes:
        px = mx.random.normal((b, h, w, model.config.encoder.num_channels)).astype(model.dtype)
        row = {"encoder_ms": round(timed(lambda: encoder(px), 5) * 1e3, 3)}
        cross = model.decoder.cross_kv(model.encode(px))
        mx.eval(cross)
        cache = model.make_cache(b, total)
        caches = [c.kv for c in cache]
        state = dict(tokens=mx.ones((b, 1), dtype=mx.int32), unfinished=mx.ones((b,), dtype=mx.bool_),
                     logprob_sum=mx.zeros((b,)), logprob_min=mx.zeros((b,)), n_generated=mx.zeros((b,), dtype=mx.int32))
        ids = mx.array([2, 1], dtype=mx.int32)
        ban = False  # min-length reached (a constant of the compiled step, like the position)

        def step(fn=greedy):
            return fn(state["tokens"], position, cross, caches, state["unfinished"], state["logprob_sum"],
                      state["logprob_min"], state["n_generated"], ban, ids)

        row["decoder_step_ms"] = round(timed(step) * 1e3, 3)
        t = time.perf_counter()
        for _ in range(20):
            pending = step()
        row["step_graph_build_ms"] = round((time.perf_counter() - t) / 20 * 1e3, 3)  # host only
        mx.eval(pending)
        linears = [m for _, m in model.decoder.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))]
        xs = {_in_dims(m): mx.random.normal((b, _in_dims(m))).astype(model.dtype) for m in linears}
        row["step_matmuls_only_ms"] = round(timed(lambda: [m(xs[_in_dims(m)]) for m in linears]) * 1e3, 3)
        row["linear_layers"] = len(linears)
        if per_op:
            plain = _greedy_step(model, False)
            row["encoder_per_op"] = per_op_profile(lambda: model.encode(px), model)
            row["decoder_step_per_op"] = per_op_profile(lambda: step(plain), model)
        row["roofline"] = roofline(model, b, new_tokens, bandwidth_gbs, peak_tflops)
        out["batches"][b] = row
    return out


def print_summary(result: dict) -> None:
    print(f"device {result['device']}, {result['dtype']}, compiled step: {result['compiled']}, "
          f"model {result['model_bytes'] / 1e6:.1f} MB, empty compiled call {result['empty_compiled_call_ms']} ms")
    for b, row in result["batches"].items():
        r = row["roofline"]
        print(f"batch {b}: encoder {row['encoder_ms']} ms, decoder step {row['decoder_step_ms']} ms "
              f"(graph build {row['step_graph_build_ms']} ms on the host; its matmuls alone {row['step_matmuls_only_ms']} ms); "
              f"roofline {r['roofline_lines_per_s']} lines/s ({r['bound']}-bound; a step >= {r['step_memory_bound_ms']} ms)")
        for part in ("encoder_per_op", "decoder_step_per_op"):
            if part in row:
                print(f"  {part.replace('_', ' ')}:")
                for kind, v in row[part].items():
                    calls = f" ({v['calls']} calls)" if v["calls"] else ""
                    print(f"    {kind:32s} {v['ms']:10.3f} ms{calls}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="a converted MLX model folder (e.g. models/mlx/default)")
    src.add_argument("--random-trocr-base", action="store_true", help="trocr-base architecture, random weights (default)")
    ap.add_argument("--dtype", default=None, choices=list(DTYPES),
                    help="weights dtype (default: float32 for --random-trocr-base, as load_model picks for --model)")
    ap.add_argument("--quantize", type=int, choices=[4, 8], help="quantize the Linear layers first (mlx_models.quantize_model)")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--position", type=int, default=10, help="decoder position of the timed step")
    ap.add_argument("--no-per-op", action="store_true", help="skip the per-op-kind breakdown")
    ap.add_argument("--new-tokens", type=int, default=20, help="tokens per line for the roofline")
    ap.add_argument("--bandwidth-gbs", type=float, default=4800.0, help="memory bandwidth (H200: 4800)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense matmul peak (H200 fp16: 989)")
    ap.add_argument("--output", help="write the JSON here too")
    args = ap.parse_args(argv)
    model = build_model(args)
    result = profile(model, [int(b) for b in args.batch_sizes.split(",")], position=args.position,
                     per_op=not args.no_per_op, bandwidth_gbs=args.bandwidth_gbs, peak_tflops=args.peak_tflops,
                     new_tokens=args.new_tokens)
    result["model"] = args.model or "random trocr-base"
    result["quantize"] = args.quantize
    print_summary(result)
    if args.output:
        with open(args.output, "w") as f:
            f.write(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

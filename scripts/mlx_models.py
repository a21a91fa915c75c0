"""TrOCR in MLX: a ViT/DeiT image encoder and the TrOCR text decoder, driven by the checkpoint's config.

Every option of transformers' `VisionEncoderDecoderModel` (ViT or DeiT encoder + `TrOCRForCausalLM`)
that changes the computation is read from the config and honoured here; anything we do not support
raises instead of silently computing something else. Decoding (greedy / beam / sampling) lives in
`decoding.py`; weight names are mapped in `weights.py`.

Layout: images are channels-last (B, H, W, C) as MLX convolutions expect; attention tensors are
(B, heads, length, head_dim).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from scripts.weights import DTYPES, check_and_load, checkpoint_names  # noqa: F401  (DTYPES: part of this module's API)

# XLA's (and Eigen's) float32 erf: x * P(x^2) / Q(x^2) on x clamped to [-4, 4], within 2 ulp of erf.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def _erf_rational(x: mx.array) -> mx.array:
    x = mx.clip(x, -4.0, 4.0)
    x2 = x * x
    p, q = _ERF_P[0], _ERF_Q[0]
    for c in _ERF_P[1:]:
        p = p * x2 + c
    for c in _ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


@mx.compile
def _gelu_multiply_add(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + _erf_rational(x * 0.7071067811865476))


def gelu(x: mx.array) -> mx.array:
    """transformers' "gelu": x * (1 + erf(x / sqrt 2)) / 2, exact erf. MLX's erf kernel on a CPU outside
    macOS runs one element at a time (about 40x slower than torch's; a third of the encoder's time on the
    bundled model), so there erf is the rational polynomial above, which MLX's CPU compiler fuses into one
    vectorisable loop (about 9x faster, BENCHMARKS.md); elsewhere MLX's own."""
    if mx.default_device() == mx.cpu and sys.platform != "darwin":
        return _gelu_multiply_add(x)
    return nn.gelu(x)


# transformers' ACT2FN names -> MLX functions. "gelu" is the exact (erf) GELU; the tanh forms are
# gelu_new / gelu_fast / gelu_pytorch_tanh, which MLX calls gelu_approx.
ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": nn.gelu_approx,
    "gelu_fast": nn.gelu_approx,
    "gelu_pytorch_tanh": nn.gelu_approx,
    "quick_gelu": nn.gelu_fast_approx,
    "relu": nn.relu,
    "relu6": nn.relu6,
    "silu": nn.silu,
    "swish": nn.silu,
    "tanh": mx.tanh,
    "sigmoid": mx.sigmoid,
    "mish": nn.mish,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation '{name}' is not supported (known: {', '.join(sorted(ACTIVATIONS))})") from None


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected an int or [height, width], got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass
class EncoderConfig:
    model_type: str = "vit"  # "vit" (cls token) or "deit" (cls + distillation token)
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: tuple[int, int] = (384, 384)  # (height, width)
    patch_size: tuple[int, int] = (16, 16)
    num_channels: int = 3
    qkv_bias: bool = True

    @classmethod
    def from_hf(cls, d: dict) -> "EncoderConfig":
        model_type = d.get("model_type", "vit")
        if model_type not in ("vit", "deit"):
            raise ValueError(f"encoder model_type '{model_type}' is not supported (TrOCR uses 'vit' or 'deit')")
        return cls(
            model_type=model_type,
            hidden_size=d.get("hidden_size", 768),
            num_hidden_layers=d.get("num_hidden_layers", 12),
            num_attention_heads=d.get("num_attention_heads", 12),
            intermediate_size=d.get("intermediate_size", 3072),
            hidden_act=d.get("hidden_act", "gelu"),
            layer_norm_eps=d.get("layer_norm_eps", 1e-12),
            image_size=_pair(d.get("image_size", 224)),
            patch_size=_pair(d.get("patch_size", 16)),
            num_channels=d.get("num_channels", 3),
            qkv_bias=d.get("qkv_bias", True),
        )

    @property
    def grid(self) -> tuple[int, int]:
        (h, w), (ph, pw) = self.image_size, self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        return h // ph, w // pw

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.model_type == "deit" else 1

    @property
    def seq_len(self) -> int:
        gh, gw = self.grid
        return gh * gw + self.num_prefix_tokens


@dataclass
class DecoderConfig:
    vocab_size: int = 50265
    d_model: int = 1024
    decoder_layers: int = 12
    decoder_attention_heads: int = 16
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    max_position_embeddings: int = 512
    scale_embedding: bool = False
    use_learned_position_embeddings: bool = True
    layernorm_embedding: bool = True
    cross_attention_hidden_size: Optional[int] = None
    tie_word_embeddings: bool = True
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2

    @classmethod
    def from_hf(cls, d: dict) -> "DecoderConfig":
        if d.get("model_type", "trocr") != "trocr":
            raise ValueError(f"decoder model_type '{d.get('model_type')}' is not supported (expected 'trocr')")
        eos = d.get("eos_token_id", 2)
        return cls(
            vocab_size=d.get("vocab_size", 50265),
            d_model=d.get("d_model", d.get("hidden_size", 1024)),
            decoder_layers=d.get("decoder_layers", 12),
            decoder_attention_heads=d.get("decoder_attention_heads", 16),
            decoder_ffn_dim=d.get("decoder_ffn_dim", 4096),
            activation_function=d.get("activation_function", "gelu"),
            max_position_embeddings=d.get("max_position_embeddings", 512),
            scale_embedding=d.get("scale_embedding", False),
            use_learned_position_embeddings=d.get("use_learned_position_embeddings", True),
            layernorm_embedding=d.get("layernorm_embedding", True),
            cross_attention_hidden_size=d.get("cross_attention_hidden_size"),
            tie_word_embeddings=d.get("tie_word_embeddings", True),
            pad_token_id=d.get("pad_token_id", 1) if d.get("pad_token_id") is not None else 1,
            bos_token_id=d.get("bos_token_id", 0),
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            decoder_start_token_id=d.get("decoder_start_token_id", 2),
        )


@dataclass
class TrOCRConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    decoder_start_token_id: int = 2
    pad_token_id: int = 1
    eos_token_id: int = 2
    hf_config: dict = field(default_factory=dict, repr=False)  # the original config.json, kept for export
    quantization: Optional[dict] = None  # {"bits", "group_size", "mode", "float"} for a quantized model

    @classmethod
    def from_hf(cls, d: dict) -> "TrOCRConfig":
        """From a transformers VisionEncoderDecoder config.json dict."""
        if "encoder" not in d or "decoder" not in d:
            raise ValueError("not a VisionEncoderDecoder (TrOCR) config: it has no 'encoder' and 'decoder' sections")
        dec = DecoderConfig.from_hf(d["decoder"])
        enc = EncoderConfig.from_hf(d["encoder"])
        if dec.cross_attention_hidden_size is not None and dec.cross_attention_hidden_size != enc.hidden_size:
            raise ValueError(
                f"decoder.cross_attention_hidden_size ({dec.cross_attention_hidden_size}) must equal the "
                f"encoder's hidden_size ({enc.hidden_size}), as in transformers"
            )

        def top(key, default):
            value = d.get(key)
            return default if value is None else value

        eos = top("eos_token_id", dec.eos_token_id)
        return cls(
            encoder=enc,
            decoder=dec,
            decoder_start_token_id=top("decoder_start_token_id", dec.decoder_start_token_id),
            pad_token_id=top("pad_token_id", dec.pad_token_id),
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            hf_config=d,
            quantization=d.get("quantization"),
        )

    @classmethod
    def from_file(cls, path) -> "TrOCRConfig":
        return cls.from_hf(json.loads(Path(path).read_text()))

    @property
    def has_enc_to_dec_proj(self) -> bool:
        # transformers adds this projection exactly when widths differ and no cross_attention_hidden_size is set.
        return (
            self.encoder.hidden_size != self.decoder.d_model and self.decoder.cross_attention_hidden_size is None
        )

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("hf_config")
        return out


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention, with the projections that see the same input run as one matmul.

    Self-attention (`cross=False`) projects q, k and v with one `qkv_proj`; cross-attention projects q
    from the decoder with `q_proj` and k, v from the encoder states with one `kv_proj` (once per image).
    Checkpoints keep transformers' separate q/k/v weights: `weights.fuse_projections` joins their rows
    at load time and `weights.split_projections` takes them apart again for saving and export.
    """

    def __init__(self, dims: int, num_heads: int, kv_dims: Optional[int] = None, qkv_bias: bool = True,
                 cross: bool = False):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"hidden size {dims} is not divisible by {num_heads} attention heads")
        self.num_heads = num_heads
        self.head_dim = dims // num_heads
        self.scale = self.head_dim**-0.5
        if cross:
            self.q_proj = nn.Linear(dims, dims, bias=qkv_bias)
            self.kv_proj = nn.Linear(kv_dims or dims, 2 * dims, bias=qkv_bias)
        else:
            self.qkv_proj = nn.Linear(dims, 3 * dims, bias=qkv_bias)
        self.out_proj = nn.Linear(dims, dims, bias=True)

    def split_heads(self, x: mx.array, parts: int) -> mx.array:
        """(B, N, parts * dims) -> (parts, B, heads, N, head_dim): views, no copy."""
        b, n, _ = x.shape
        return x.reshape(b, n, parts, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)

    def qkv(self, x: mx.array) -> mx.array:
        """(3, B, heads, N, head_dim): q, k, v of self-attention, one matmul."""
        return self.split_heads(self.qkv_proj(x), 3)

    def query(self, x: mx.array) -> mx.array:
        return self.split_heads(self.q_proj(x), 1)[0]

    def project_kv(self, memory: mx.array) -> tuple[mx.array, mx.array]:
        """k, v (B, heads, S, head_dim) of cross-attention over `memory`, one matmul."""
        k, v = self.split_heads(self.kv_proj(memory), 2)
        return k, v

    def attend(self, q: mx.array, k: mx.array, v: mx.array, mask=None) -> mx.array:
        """Attention of q over k, v, then the output projection. `mask` is None or "causal": MLX's fused
        attention kernels take those (an array mask sends a one-token step to the unfused fallback)."""
        b, _, n, _ = q.shape
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.out_proj(o.transpose(0, 2, 1, 3).reshape(b, n, -1))


class EncoderLayer(nn.Module):
    """Pre-norm ViT block."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg.hidden_size, cfg.num_attention_heads, qkv_bias=cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x: mx.array) -> mx.array:
        q, k, v = self.attn.qkv(self.norm1(x))
        x = x + self.attn.attend(q, k, v)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ImageEncoder(nn.Module):
    """ViT / DeiT encoder: patch embedding, [cls] (+ [dist]) tokens, learned positions, pre-norm blocks."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.patch_embed = nn.Conv2d(cfg.num_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = mx.zeros((1, 1, d))
        if cfg.model_type == "deit":
            self.dist_token = mx.zeros((1, 1, d))
        self.pos_embed = mx.zeros((1, cfg.seq_len, d))
        self.layers = [EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def __call__(self, pixel_values: mx.array) -> mx.array:
        b, h, w, c = pixel_values.shape
        if (h, w) != tuple(self.cfg.image_size) or c != self.cfg.num_channels:
            raise ValueError(
                f"pixel_values of shape (H={h}, W={w}, C={c}) do not match the model's image size "
                f"{self.cfg.image_size} with {self.cfg.num_channels} channels"
            )
        x = self.patch_embed(pixel_values.astype(self.pos_embed.dtype))
        x = x.reshape(b, -1, x.shape[-1])
        prefix = [mx.broadcast_to(self.cls_token, (b, 1, x.shape[-1]))]
        if self.cfg.model_type == "deit":
            prefix.append(mx.broadcast_to(self.dist_token, (b, 1, x.shape[-1])))
        x = mx.concatenate(prefix + [x], axis=1) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def sinusoidal_positions(num_positions: int, dims: int, padding_idx: Optional[int]) -> np.ndarray:
    """transformers' TrOCRSinusoidalPositionalEmbedding.get_embedding, in float32 as torch computes it.

    The table is not a weight of the checkpoint (transformers rebuilds it), so we compute it too.
    """
    half = dims // 2
    step = math.log(10000) / (half - 1)
    freqs = np.exp(np.arange(half, dtype=np.float32) * np.float32(-step))
    angles = np.arange(num_positions, dtype=np.float32)[:, None] * freqs[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if dims % 2:
        table = np.concatenate([table, np.zeros((num_positions, 1), np.float32)], axis=1)
    if padding_idx is not None:
        table[padding_idx] = 0
    return table.astype(np.float32)


class DecoderLayer(nn.Module):
    """Post-norm TrOCR block: self-attention, cross-attention, feed-forward."""

    def __init__(self, cfg: DecoderConfig, cross_dims: int):
        super().__init__()
        d = cfg.d_model
        self.self_attn = Attention(d, cfg.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, cfg.decoder_attention_heads, kv_dims=cross_dims, cross=True)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.decoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = activation(cfg.activation_function)

    def __call__(self, x, cross_kv: tuple[mx.array, mx.array], cache: Optional["KVCache"] = None, offset: int = 0):
        """x (B, N, d) at positions offset..offset+N-1; cross_kv: k, v (B, heads, S, head_dim). With a
        cache, k/v are written into it and the queries attend over every position up to their own; without
        one, N > 1 is a causal pass."""
        q, k, v = self.self_attn.qkv(x)
        if cache is not None:
            k, v = cache.update(k, v, offset)
        mask = "causal" if x.shape[1] > 1 else None  # bottom-right aligned: query i sees keys <= offset + i
        x = self.self_attn_layer_norm(x + self.self_attn.attend(q, k, v, mask=mask))
        q = self.encoder_attn.query(x)
        x = self.encoder_attn_layer_norm(x + self.encoder_attn.attend(q, *cross_kv))
        return self.final_layer_norm(x + self.fc2(self.act(self.fc1(x))))


class KVCache:
    """Preallocated self-attention keys and values of one layer, two arrays (B, heads, max_len, head_dim).
    (One (2, ...) array written with one update was tried, 1825409: 0.64x the lines/s at batch 32 on the
    H200, benchmarks/compare_commits_bisect_2026-12-02.log.)

    `update` writes positions offset..offset+N-1 and returns the filled part (a view), so attention
    needs no mask over unfilled positions and a one-token step runs MLX's fused vector kernel.
    """

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, dtype):
        self.keys = mx.zeros((batch, heads, max_len, head_dim), dtype=dtype)
        self.values = mx.zeros((batch, heads, max_len, head_dim), dtype=dtype)

    @property
    def kv(self) -> tuple[mx.array, mx.array]:
        """The two buffers, as the functional decode step takes and returns them."""
        return self.keys, self.values

    def update(self, k: mx.array, v: mx.array, offset: int) -> tuple[mx.array, mx.array]:
        end = offset + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions; step writes up to {end}")
        self.keys[:, :, offset:end] = k.astype(self.keys.dtype)
        self.values[:, :, offset:end] = v.astype(self.values.dtype)
        return self.keys[:, :, :end], self.values[:, :, :end]

    @classmethod
    def from_array(cls, kv: tuple[mx.array, mx.array]) -> "KVCache":
        cache = cls.__new__(cls)
        cache.keys, cache.values = kv
        return cache


class TextDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, cross_dims: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed_scale = math.sqrt(d) if cfg.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d)
        if cfg.use_learned_position_embeddings:
            # transformers' TrOCRLearnedPositionalEmbedding: 2 extra rows, positions shifted by 2.
            self.embed_positions = nn.Embedding(cfg.max_position_embeddings + 2, d)
        else:
            self._sinusoidal = mx.array(
                sinusoidal_positions(cfg.max_position_embeddings + cfg.pad_token_id + 1, d, cfg.pad_token_id)
            )
        if cfg.layernorm_embedding:
            self.layernorm_embedding = nn.LayerNorm(d)
        self.layers = [DecoderLayer(cfg, cross_dims) for _ in range(cfg.decoder_layers)]
        if not cfg.tie_word_embeddings:
            self.output_projection = nn.Linear(d, cfg.vocab_size, bias=False)

    def positions(self, tokens: mx.array, offset: int) -> mx.array:
        n = tokens.shape[1]
        if self.cfg.use_learned_position_embeddings:
            # transformers' TrOCRLearnedPositionalEmbedding: rows offset+2 .. offset+n+1 (a slice, not a gather)
            return self.embed_positions.weight[offset + 2:offset + 2 + n][None]
        # fairseq-style: positions count from padding_idx + 1, and pad tokens get the (zero) pad row.
        pad = self.cfg.pad_token_id
        idx = mx.where(tokens != pad, mx.arange(offset + pad + 1, offset + pad + 1 + n)[None], pad)
        return self._sinusoidal[idx].astype(self.embed_tokens.weight.dtype)  # gather, then cast: not the whole table per step

    def embed(self, tokens: mx.array, offset: int = 0) -> mx.array:
        x = self.embed_tokens(tokens)
        if self.embed_scale != 1.0:  # scale_embedding
            x = x * self.embed_scale
        x = x + self.positions(tokens, offset)
        if self.cfg.layernorm_embedding:
            x = self.layernorm_embedding(x)
        return x

    def logits(self, x: mx.array) -> mx.array:
        if self.cfg.tie_word_embeddings:
            return self.embed_tokens.as_linear(x)
        return self.output_projection(x)

    def cross_kv(self, memory: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Cross-attention k, v (B, heads, S, head_dim) for every layer: computed once per image, reused
        every step. Made contiguous once here: the CPU's attention (matmuls) would otherwise copy the
        strided views at every step."""
        return [tuple(mx.contiguous(t) for t in layer.encoder_attn.project_kv(memory)) for layer in self.layers]

    def __call__(self, tokens: mx.array, cross_kv, cache: Optional[list[KVCache]] = None, offset: int = 0) -> mx.array:
        """Logits for `tokens` (B, L) at positions offset..offset+L-1 (offset: a Python int).

        Without a cache the whole sequence is run causally (training, scoring); with one, keys/values
        are written into the cache and queries see every position up to their own.
        """
        x = self.embed(tokens, offset)
        for layer, ckv, c in zip(self.layers, cross_kv, cache or [None] * len(self.layers)):
            x = layer(x, ckv, c, offset)
        return self.logits(x)


class TrOCR(nn.Module):
    def __init__(self, config: TrOCRConfig):
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config.encoder)
        if config.has_enc_to_dec_proj:
            self.enc_to_dec_proj = nn.Linear(config.encoder.hidden_size, config.decoder.d_model)
        cross_dims = config.decoder.cross_attention_hidden_size or config.decoder.d_model
        self.decoder = TextDecoder(config.decoder, cross_dims)

    @property
    def dtype(self):
        return self.encoder.pos_embed.dtype

    def encode(self, pixel_values: mx.array) -> mx.array:
        """Encoder states, projected to the decoder's width when the checkpoint has enc_to_dec_proj."""
        memory = self.encoder(pixel_values)
        if self.config.has_enc_to_dec_proj:
            memory = self.enc_to_dec_proj(memory)
        return memory

    def make_cache(self, batch: int, max_len: int) -> list[KVCache]:
        d = self.config.decoder
        head_dim = d.d_model // d.decoder_attention_heads
        return [KVCache(batch, d.decoder_attention_heads, max_len, head_dim, self.dtype) for _ in range(d.decoder_layers)]

    def decode_step(self, compiled: bool = True):
        """A one-token decoder step in functional form, compiled once per model (and per shape and position):

            step(tokens (B, 1) int32, offset int, cross_kv, caches, index=None)
                -> (next-token logits (B, vocab) float32, caches)

        `caches` are the per-layer cache buffers (`[c.kv for c in make_cache(...)]`); they go in and come
        back updated, so the compiled graph holds no hidden state (the mlx-lm pattern, made explicit).
        `offset` is a Python int, a constant of the compiled graph: attention then runs over exactly the
        filled offset + 1 positions with no mask (MLX's fused one-query kernel), one graph per position.
        `index` (B,) reorders the cache rows first (beam search) inside the same compiled graph.
        The weights are declared as implicit inputs, so reloading or casting them is picked up.
        """
        steps = self.__dict__.get("_decode_steps")
        if steps is None:
            decoder = self.decoder

            def step(tokens, offset, cross_kv, caches):
                cache = [KVCache.from_array(kv) for kv in caches]
                logits = decoder(tokens, cross_kv, cache=cache, offset=offset)[:, -1, :].astype(mx.float32)
                return logits, [c.kv for c in cache]

            def step_reorder(index, tokens, offset, cross_kv, caches):
                return step(tokens, offset, cross_kv, [(k[index], v[index]) for k, v in caches])

            steps = {
                False: (step, step_reorder),
                True: (mx.compile(step, inputs=decoder), mx.compile(step_reorder, inputs=decoder)),
            }
            object.__setattr__(self, "_decode_steps", steps)
        plain, reorder = steps[bool(compiled)]

        def run(tokens, offset, cross_kv, caches, index=None):
            if index is None:
                return plain(tokens, offset, cross_kv, caches)
            return reorder(index, tokens, offset, cross_kv, caches)

        return run

    def __call__(self, pixel_values: mx.array, decoder_input_ids: mx.array) -> mx.array:
        """Teacher-forced logits (B, L, vocab), as transformers' forward with decoder_input_ids."""
        memory = self.encode(pixel_values)
        return self.decoder(decoder_input_ids, self.decoder.cross_kv(memory))


# --------------------------------------------------------------------------------------------------
# Quantization: MLX's affine quantization (nn.quantize) of the Linear layers
# --------------------------------------------------------------------------------------------------

QUANTIZE_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)


def quantize_model(model: TrOCR, bits: int = 8, group_size: int = 64) -> dict:
    """Quantize the model's Linear layers in place; returns the config.json "quantization" entry.

    Every Linear whose input width is a multiple of `group_size` is quantized (q/k/v, attention outputs,
    feed-forward, enc_to_dec_proj, an untied output projection). What stays float is listed under "float":
    the token and position embeddings, the patch-embedding convolution, the [cls]/[dist] tokens and encoder
    positions, the layer norms, a tied output projection (it is the token embedding), and any Linear whose
    width does not divide into groups.
    """
    if bits not in QUANTIZE_BITS:
        raise ValueError(f"bits must be one of {QUANTIZE_BITS}, got {bits}")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")
    skipped = []

    def predicate(path, module):
        if not isinstance(module, nn.Linear):
            return False
        if module.weight.shape[1] % group_size:
            skipped.append(path)
            return False
        return True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    float_parts = ["token embedding", "position embeddings", "patch embedding (conv)",
                   "[cls]/[dist] tokens and encoder positions", "layer norms"]
    if model.config.decoder.tie_word_embeddings:
        float_parts.append("output projection (tied to the token embedding)")
    float_parts += [f"{p} (input width not a multiple of {group_size})" for p in skipped]
    model.config.quantization = {"bits": bits, "group_size": group_size, "mode": "affine", "float": float_parts}
    return model.config.quantization


def _quantize_like(model: TrOCR, quantization: dict, weights: dict) -> None:
    """Before loading a quantized checkpoint: quantize exactly the layers it stores quantized."""
    def stored_quantized(path, module):
        return isinstance(module, nn.Linear) and all(n in weights for n in checkpoint_names(f"{path}.scales"))

    nn.quantize(model, group_size=quantization["group_size"], bits=quantization["bits"],
                mode=quantization.get("mode", "affine"), class_predicate=stored_quantized)


# --------------------------------------------------------------------------------------------------
# Loading our converted format
# --------------------------------------------------------------------------------------------------


def load_model(path, dtype: Optional[str] = None) -> TrOCR:
    """Load a converted model folder (config.json + model.safetensors or weights.npz), quantized or not
    (a quantized one has a "quantization" entry in config.json, see quantize_model).

    `dtype` ("float32" / "float16" / "bfloat16") casts the floating weights; None keeps the stored dtype,
    except that half-precision weights are widened to float32 when MLX runs on the CPU.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path}: no config.json here; is this a converted MLX model folder? "
            "(convert a transformers checkpoint with scripts/convert_trocr_to_mlx.py)"
        )
    config = TrOCRConfig.from_file(path / "config.json")
    weight_file = next((path / n for n in ("model.safetensors", "weights.npz") if (path / n).exists()), None)
    if weight_file is None:
        shards = sorted(path.glob("model-*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"{path}: no model.safetensors, model-*.safetensors or weights.npz")
        weights = {}
        for shard in shards:
            weights.update(mx.load(str(shard)))
    else:
        weights = mx.load(str(weight_file))
    model = TrOCR(config)
    if config.quantization:
        _quantize_like(model, config.quantization, weights)
        if mx.default_device() == mx.cpu and sys.platform != "darwin":
            warnings.warn(f"{path}: a quantized model; MLX's quantized matmuls on this CPU are about 9x slower than "
                          "float32 ones (BENCHMARKS.md): on a Linux CPU the float model is the faster choice",
                          stacklevel=2)
    if dtype is None and mx.default_device() == mx.cpu:
        # float16/bfloat16 matmuls have no BLAS path on the CPU backend and run many times slower
        # than float32 there; a half-precision model (like the bundled one) is widened on CPU.
        if any(v.dtype in (mx.float16, mx.bfloat16) for v in weights.values()):
            dtype = "float32"

    check_and_load(model, weights, source=str(weight_file or path), dtype=dtype)
    return model

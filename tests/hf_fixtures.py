"""Tiny random-weight TrOCR checkpoints built locally with transformers (no hub on these machines).

Each variant exercises a different part of the config space that real TrOCR checkpoints use.
Weights are drawn with a larger spread than transformers' init so that greedy decoding is decisive
(no near-ties between tokens) and runs long before it emits </s>.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scripts.char_tokenizer import build_char_tokenizer, save_char_tokenizer

VOCAB = build_char_tokenizer().get_vocab_size()

# name -> (encoder type, encoder kwargs, decoder kwargs)
VARIANTS = {
    # ViT + learned positions + GELU + layernorm_embedding, cross-attention width != d_model (trocr-base-like)
    "base": ("vit", dict(hidden_size=48, image_size=32, patch_size=8, hidden_act="gelu"),
             dict(d_model=64, activation_function="gelu", use_learned_position_embeddings=True,
                  layernorm_embedding=True, cross_attention_hidden_size=48, tie_word_embeddings=False)),
    # DeiT + ReLU + scale_embedding + cross_attention_hidden_size != d_model (trocr-small-like), tied output
    "small": ("deit", dict(hidden_size=32, image_size=32, patch_size=8, hidden_act="gelu"),
              dict(d_model=48, activation_function="relu", scale_embedding=True, layernorm_embedding=True,
                   cross_attention_hidden_size=32, tie_word_embeddings=True)),
    # sinusoidal positions + ReLU + untied output, no layernorm_embedding (trocr-large-printed-like)
    "sinusoidal": ("vit", dict(hidden_size=32, image_size=32, patch_size=8, hidden_act="gelu"),
                   dict(d_model=32, activation_function="relu", use_learned_position_embeddings=False,
                        layernorm_embedding=False, scale_embedding=True, tie_word_embeddings=False)),
    # encoder and decoder widths differ with no cross_attention_hidden_size -> enc_to_dec_proj
    "proj": ("vit", dict(hidden_size=32, image_size=32, patch_size=8, hidden_act="gelu_new", qkv_bias=False),
             dict(d_model=48, activation_function="gelu", tie_word_embeddings=False)),
    # non-square input (wide form fields) with non-square patches
    "nonsquare": ("vit", dict(hidden_size=32, image_size=[32, 96], patch_size=[16, 8], hidden_act="gelu"),
                  dict(d_model=32, activation_function="gelu", tie_word_embeddings=False)),
}


def make_config(variant: str, vocab_size: int = VOCAB, layers: int = 2):
    from transformers import DeiTConfig, TrOCRConfig, ViTConfig, VisionEncoderDecoderConfig

    enc_type, enc_kw, dec_kw = VARIANTS[variant]
    enc_cls = DeiTConfig if enc_type == "deit" else ViTConfig
    enc = enc_cls(num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64, **enc_kw)
    dec = TrOCRConfig(vocab_size=vocab_size, decoder_layers=layers, decoder_attention_heads=4, decoder_ffn_dim=64,
                      max_position_embeddings=128, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                      decoder_start_token_id=2, **dec_kw)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 1, 2
    cfg.tie_word_embeddings = dec.tie_word_embeddings
    return cfg


def _spread_weights(model, seed: int, std: float = 0.3, eos_scale=None):
    """Re-draw every weight matrix with a wider spread, so argmax decisions are far from ties.

    By default </s> is made unlikely so that decoding runs the full length. With `eos_scale` (a
    number) the </s> row of the output projection is scaled by it instead, so </s> is reachable
    (beam-search tests need finished hypotheses: length penalty, early stopping).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or "token" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        tied = model.config.decoder.tie_word_embeddings is not False
        if eos_scale is not None:
            out = model.decoder.model.decoder.embed_tokens if tied else model.decoder.output_projection
            out.weight[2].mul_(float(eos_scale))
            return model
        if not tied:
            # keep </s> unlikely so greedy runs the full length
            model.decoder.output_projection.weight[2].mul_(0.0)
        model.decoder.model.decoder.embed_tokens.weight[2].mul_(0.1)
    return model


def make_model(variant: str, seed: int = 0, eos_scale=None, std: float = 0.3, **kw):
    """A random-weight TrOCR of one variant. `eos_scale`: see _spread_weights (None: </s> unlikely);
    `std`: the spread of the weight matrices."""
    from transformers import VisionEncoderDecoderModel

    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(make_config(variant, **kw))
    return _spread_weights(model, seed, std=std, eos_scale=eos_scale).eval()


def write_preprocessor(folder: Path, image_size, legacy: bool = False):
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    cfg = {
        "do_resize": True, "do_rescale": True, "do_normalize": True, "resample": 2,
        "rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor", "processor_class": "TrOCRProcessor",
        "size": h if legacy and h == w else {"height": h, "width": w},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


def save_checkpoint(model, folder, legacy_weights: bool = False) -> Path:
    """save_pretrained + a char tokenizer + ViT preprocessor config: a complete TrOCR checkpoint folder."""
    folder = Path(folder)
    model.save_pretrained(folder)
    save_char_tokenizer(folder)
    write_preprocessor(folder, model.config.encoder.image_size)
    if legacy_weights:
        # the hub's older layout: pytorch_model.bin with pre-5.x names
        from scripts.weights import canonical_hf_name  # noqa: F401  (documents the inverse we rely on)

        state = {_legacy_name(k): v for k, v in model.state_dict().items()}
        (folder / "model.safetensors").unlink()
        torch.save(state, folder / "pytorch_model.bin")
    return folder


def _legacy_name(name: str) -> str:
    import re

    name = re.sub(r"^encoder\.layers\.(\d+)\.", r"encoder.encoder.layer.\1.", name)
    for new, old in [("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
                     ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
                     ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]:
        name = name.replace(new, old)
    return name


def random_images(n: int, seed: int = 0, sizes=((40, 120), (64, 64), (30, 200))):
    """Varied RGB images of different sizes (the processor resizes them)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append(Image.fromarray(arr))
    return out

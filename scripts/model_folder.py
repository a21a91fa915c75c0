"""MLX model folders without the trainer's dependencies: a new random-weight TrOCR and its char tokenizer,
and writing / reading the folder that `load_model` and `load_mlx_processor` read (config.json, weights sharded
when large, generation_config.json, processor/).

`scripts/mlx_trainer.py` builds and saves its models with these; so do the benchmarks (`dev/bench_workers.py`),
which run where the trainer's own imports (rapidfuzz for CER) may not be installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import mlx.core as mx
from mlx.utils import tree_flatten

from scripts.mlx_models import DTYPES, TrOCR, TrOCRConfig
from scripts.weights import split_projections

SHARD_BYTES = 15 * 2**20  # weight files above this are split (the repo keeps files under 16 MB)


def make_hf_config(vocab_size: int, image_size=(64, 512), patch_size=(16, 8), encoder_hidden=256, encoder_layers=6,
                   encoder_heads=8, encoder_mlp=1024, decoder_d_model=256, decoder_layers=4, decoder_heads=8,
                   decoder_ffn=1024, max_positions=128, activation="gelu", tie_word_embeddings=False) -> dict:
    """A transformers VisionEncoderDecoder config (ViT encoder + TrOCR decoder) as a config.json dict.

    Special ids follow the char tokenizer (and RoBERTa): <s>=0 <pad>=1 </s>=2, decoding starts with </s>."""
    enc = {"model_type": "vit", "hidden_size": encoder_hidden, "num_hidden_layers": encoder_layers,
           "num_attention_heads": encoder_heads, "intermediate_size": encoder_mlp, "hidden_act": activation,
           "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
           "layer_norm_eps": 1e-12, "image_size": list(image_size), "patch_size": list(patch_size),
           "num_channels": 3, "qkv_bias": True, "encoder_stride": 16}
    dec = {"model_type": "trocr", "vocab_size": vocab_size, "d_model": decoder_d_model,
           "decoder_layers": decoder_layers, "decoder_attention_heads": decoder_heads,
           "decoder_ffn_dim": decoder_ffn, "activation_function": activation,
           "max_position_embeddings": max_positions, "dropout": 0.0, "attention_dropout": 0.0,
           "activation_dropout": 0.0, "init_std": 0.02, "decoder_layerdrop": 0.0, "use_cache": True,
           "scale_embedding": False, "use_learned_position_embeddings": True, "layernorm_embedding": True,
           "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
           "cross_attention_hidden_size": None if encoder_hidden == decoder_d_model else encoder_hidden,
           "is_decoder": True, "add_cross_attention": True, "tie_word_embeddings": bool(tie_word_embeddings)}
    return {"model_type": "vision-encoder-decoder", "is_encoder_decoder": True, "encoder": enc, "decoder": dec,
            "decoder_start_token_id": 2, "pad_token_id": 1, "eos_token_id": 2,
            "tie_word_embeddings": bool(tie_word_embeddings)}


def preprocessor_config(image_size) -> dict:
    """transformers' ViTImageProcessor config for a (height, width) input: resize, rescale, normalise to [-1, 1]."""
    h, w = image_size
    return {"do_resize": True, "do_rescale": True, "do_normalize": True, "resample": 2, "rescale_factor": 1 / 255,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": h, "width": w},
            "image_processor_type": "ViTImageProcessor", "processor_class": "TrOCRProcessor"}


def init_weights(model: TrOCR, seed: int) -> None:
    """transformers-like init: normal(0, 0.02) matrices, embeddings and tokens; zero biases; unit norms."""
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(seed), len(params))
    new = []
    for i, (name, p) in enumerate(params):
        if name.endswith("bias"):
            value = mx.zeros_like(p)
        elif p.ndim == 1:  # layer-norm scales
            value = mx.ones_like(p)
        else:
            value = 0.02 * mx.random.normal(p.shape, key=keys[i])
        new.append((name, value.astype(p.dtype)))
    model.load_weights(new)
    mx.eval(model.parameters())


def new_model(arch: dict, processor_dir, seed: int = 0, vocab_size: Optional[int] = None) -> TrOCR:
    """A TrOCR of architecture `arch` (make_hf_config's keywords) with transformers-like random weights; writes
    the char tokenizer and the matching preprocessor_config.json to processor_dir. vocab_size defaults to the
    char tokenizer's (a larger one, e.g. trocr-base's 50265, only times like the real output layer: the
    tokenizer decodes the ids it knows and skips the rest)."""
    from scripts.char_tokenizer import build_char_tokenizer, save_char_tokenizer

    processor_dir = Path(processor_dir)
    save_char_tokenizer(processor_dir)
    (processor_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(arch["image_size"]), indent=2))
    vocab = build_char_tokenizer().get_vocab_size() if vocab_size is None else vocab_size
    model = TrOCR(TrOCRConfig.from_hf(make_hf_config(vocab, **arch)))
    init_weights(model, seed)
    return model


def save_sharded(folder: Path, stem: str, flat: dict, max_bytes: int = SHARD_BYTES, metadata=None) -> list[Path]:
    """flat {name: array} as folder/stem.safetensors, or stem-0000i-of-0000N.safetensors when larger
    than max_bytes (load_model and read_sharded glob both)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in list(folder.glob(f"{stem}.safetensors")) + list(folder.glob(f"{stem}-*-of-*.safetensors")):
        old.unlink()
    shards, current, size = [], {}, 0
    for name, value in flat.items():
        if current and size + value.nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = value
        size += value.nbytes
    shards.append(current)
    meta = {"format": "mlx", **(metadata or {})}
    if len(shards) == 1:
        paths = [folder / f"{stem}.safetensors"]
    else:
        paths = [folder / f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for path, shard in zip(paths, shards):
        mx.save_safetensors(str(path), shard, metadata=meta)
    return paths


def read_sharded(folder: Path, stem: str) -> dict:
    files = [folder / f"{stem}.safetensors"] if (folder / f"{stem}.safetensors").exists() else sorted(
        folder.glob(f"{stem}-*-of-*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no {stem}.safetensors or {stem}-*-of-*.safetensors")
    out = {}
    for f in files:
        out.update(mx.load(str(f)))
    return out


def read_generation_config(folder) -> dict:
    """A model folder's generation_config.json as a dict ({} when it has none)."""
    path = Path(folder) / "generation_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_model_folder(folder, config: TrOCRConfig, flat: dict, processor_dir: Path, dtype: Optional[str] = None,
                       max_length: int = 64, generation: Optional[dict] = None) -> Path:
    """Our MLX model folder: config.json, model weights (sharded when large), generation_config.json, processor/.
    `generation`: decoding settings to keep (e.g. the num_beams of the model a run started from); the token
    ids and max_length written are always this model's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = split_projections(flat)  # the model's fused q/k/v -> transformers' separate weights on disk
    if dtype is not None:
        flat = {k: v.astype(DTYPES[dtype]) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in flat.items()}
    save_sharded(folder, "model", flat)
    (folder / "weights.npz").unlink(missing_ok=True)
    (folder / "config.json").write_text(json.dumps(config.hf_config, indent=2))
    gen = {**(generation or {}), "decoder_start_token_id": config.decoder_start_token_id,
           "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id, "max_length": max_length}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    processor_dir = Path(processor_dir)
    if processor_dir.resolve() != (folder / "processor").resolve():
        shutil.copytree(processor_dir, folder / "processor", dirs_exist_ok=True)
    return folder

"""Checkpoints in and out: the one weight-name mapping between transformers' TrOCR and our MLX model.

Used by the converter (HF -> MLX), the loader (checks every weight) and the trainer's export (MLX -> HF).
Both HF layouts are read: transformers 5.x `save_pretrained` names (`encoder.layers.N.attention.q_proj`)
and the hub's older names (`encoder.encoder.layer.N.attention.attention.query`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

# Older hub checkpoints -> transformers 5.x names (the order matters: attention.output before output).
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}  # the dtypes a model can be stored/run in

_LEGACY_RENAMES = [
    (r"^encoder\.encoder\.layer\.(\d+)\.", r"encoder.layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"^(encoder\.layers\.\d+)\.intermediate\.dense\.", r"\1.mlp.fc1."),
    (r"^(encoder\.layers\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]

# transformers 5.x name <-> MLX name. {i}: layer number, {p}: weight|bias, {r}: any rest.
_NAME_TABLE = [
    ("encoder.embeddings.cls_token", "encoder.cls_token"),
    ("encoder.embeddings.distillation_token", "encoder.dist_token"),
    ("encoder.embeddings.position_embeddings", "encoder.pos_embed"),
    ("encoder.embeddings.patch_embeddings.projection.{p}", "encoder.patch_embed.{p}"),
    ("encoder.layers.{i}.attention.q_proj.{p}", "encoder.layers.{i}.attn.q_proj.{p}"),
    ("encoder.layers.{i}.attention.k_proj.{p}", "encoder.layers.{i}.attn.k_proj.{p}"),
    ("encoder.layers.{i}.attention.v_proj.{p}", "encoder.layers.{i}.attn.v_proj.{p}"),
    ("encoder.layers.{i}.attention.o_proj.{p}", "encoder.layers.{i}.attn.out_proj.{p}"),
    ("encoder.layers.{i}.layernorm_before.{p}", "encoder.layers.{i}.norm1.{p}"),
    ("encoder.layers.{i}.layernorm_after.{p}", "encoder.layers.{i}.norm2.{p}"),
    ("encoder.layers.{i}.mlp.fc1.{p}", "encoder.layers.{i}.fc1.{p}"),
    ("encoder.layers.{i}.mlp.fc2.{p}", "encoder.layers.{i}.fc2.{p}"),
    ("encoder.layernorm.{p}", "encoder.norm.{p}"),
    ("enc_to_dec_proj.{p}", "enc_to_dec_proj.{p}"),
    ("decoder.output_projection.weight", "decoder.output_projection.weight"),
    ("decoder.model.decoder.{r}", "decoder.{r}"),
]

# Weights transformers keeps that TrOCR never uses for text: the ViT pooler and the masked-image token.
_UNUSED = re.compile(r"^encoder\.(pooler\.|embeddings\.mask_token$)")
_CONV = {"encoder.patch_embed.weight"}
_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "r": r"(?P<r>.+)"}


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, group in _GROUPS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    return re.compile("^" + pattern + "$")


_HF_TO_MLX = [(_compile(hf), mlx) for hf, mlx in _NAME_TABLE]
_MLX_TO_HF = [(_compile(mlx), hf) for hf, mlx in _NAME_TABLE]


def canonical_hf_name(name: str) -> str:
    """Any HF TrOCR weight name -> the transformers 5.x name."""
    for pattern, repl in _LEGACY_RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def _translate(name: str, table) -> Optional[str]:
    for pattern, template in table:
        m = pattern.match(name)
        if m:
            return template.format(**m.groupdict())
    return None


def hf_to_mlx(state: dict, config) -> dict[str, mx.array]:
    """Map a transformers TrOCR state dict to our MLX names and layouts.

    Raises ValueError naming every weight that has no place in the model. Weights that transformers
    holds but TrOCR never computes with (ViT pooler, a tied output projection) are dropped on purpose.
    """
    out, unknown = {}, []
    for name, value in state.items():
        hf = canonical_hf_name(name)
        if _UNUSED.match(hf):
            continue
        if hf == "decoder.output_projection.weight" and config.decoder.tie_word_embeddings:
            continue  # tied: transformers uses embed_tokens here, whatever the file holds
        mlx_name = _translate(hf, _HF_TO_MLX)
        if mlx_name is None:
            unknown.append(name)
            continue
        value = value if isinstance(value, mx.array) else mx.array(np.asarray(value))
        if mlx_name in _CONV:
            value = value.transpose(0, 2, 3, 1)  # torch (O, I, kh, kw) -> MLX (O, kh, kw, I)
        out[mlx_name] = value
    if unknown:
        raise ValueError(f"unexpected weights that a TrOCR model has no place for: {', '.join(sorted(unknown))}")
    return out


# --------------------------------------------------------------------------------------------------
# Fused attention projections: the model runs q/k/v (self-attention) and k/v (cross-attention) as one
# matmul each; checkpoints keep transformers' separate weights. Fusing stacks their rows (in order
# q, k, v), so it is exact and reversible; quantized weights (weight/scales/biases rows) split the same way.
# --------------------------------------------------------------------------------------------------

_FUSED = re.compile(r"^(?P<m>.+)\.(?P<proj>qkv_proj|kv_proj)\.(?P<p>weight|bias|scales|biases)$")
_PARTS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "kv_proj": ("k_proj", "v_proj")}


def checkpoint_names(name: str) -> list[str]:
    """The checkpoint names a model weight is saved under: `X.qkv_proj.P` -> `X.q_proj.P`, `X.k_proj.P`,
    `X.v_proj.P`; `X.kv_proj.P` -> `X.k_proj.P`, `X.v_proj.P`; any other name -> itself."""
    m = _FUSED.match(name)
    if m is None:
        return [name]
    return [f"{m['m']}.{part}.{m['p']}" for part in _PARTS[m["proj"]]]


def split_projections(weights: dict) -> dict:
    """Fused weights -> the checkpoint's separate ones (rows in order q, k, v); others pass through."""
    out = {}
    for name, value in weights.items():
        parts = checkpoint_names(name)
        pieces = [value] if len(parts) == 1 else mx.split(value, len(parts), axis=0)
        out.update(zip(parts, pieces))
    return out


def fuse_projections(weights: dict, fused_names) -> dict:
    """The inverse of split_projections for the fused names the model has (`fused_names`): the parts
    are concatenated; a fused weight already present is kept. Parts that are missing stay missing."""
    out = dict(weights)
    for name in fused_names:
        parts = checkpoint_names(name)
        if len(parts) > 1 and name not in out and all(p in out for p in parts):
            out[name] = mx.concatenate([out.pop(p) for p in parts], axis=0)
    return out


def model_state(model) -> dict:
    """The model's weights in the checkpoint layout (separate q/k/v), ready to save or export."""
    return split_projections(dict(tree_flatten(model.parameters())))


def mlx_to_hf(weights: dict, config) -> dict[str, np.ndarray]:
    """Our MLX weights (fused or not) -> transformers 5.x state dict (numpy, float32), for export."""
    out = {}
    weights = split_projections(weights)
    quantized = sorted(k for k in weights if k.endswith(".scales"))
    if quantized:
        raise ValueError(f"a quantized model cannot be exported to transformers ({quantized[0]} and others are "
                         "quantized); export the float model it was converted from")
    for name, value in weights.items():
        hf = _translate(name, _MLX_TO_HF)
        if hf is None:
            raise ValueError(f"MLX weight '{name}' has no transformers name")
        if name in _CONV:
            value = value.transpose(0, 3, 1, 2)
        out[hf] = np.array(value.astype(mx.float32))
    return out


def check_and_load(model, weights: dict, source: str = "checkpoint", dtype: Optional[str] = None) -> None:
    """Load `weights` into `model` after checking that each weight exists, is expected and has its shape.

    The check runs in the checkpoint layout (separate q/k/v, as transformers names them), so errors name
    what the file holds; the projections are fused afterwards (see fuse_projections)."""
    own = dict(tree_flatten(model.parameters()))
    expected = split_projections(own)
    weights = split_projections(weights)  # a file with fused projections is read too
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(weights))
        if tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    def named(keys):  # our name, with the transformers name beside it where they differ
        return ", ".join(k if _translate(k, _MLX_TO_HF) in (None, k) else f"{k} (transformers: {_translate(k, _MLX_TO_HF)})"
                         for k in keys)

    problems = []
    if missing:
        problems.append(f"missing weights: {named(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {named(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches: {'; '.join(wrong)}")
    if problems:
        raise ValueError(f"{source}: weights do not match the config: " + " | ".join(problems))
    model.load_weights(list(fuse_projections(weights, own).items()), strict=True)
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        model.set_dtype(DTYPES[dtype])
    mx.eval(model.parameters())


# --------------------------------------------------------------------------------------------------
# Reading transformers checkpoints (local folder or hub id)
# --------------------------------------------------------------------------------------------------

# What a TrOCR checkpoint can hold (fetched from the hub by resolve_checkpoint). Weights, in transformers'
# order of preference: model.safetensors, its sharded form, pytorch_model.bin, its sharded form.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
CHECKPOINT_FILES = ["config.json", "generation_config.json", "processor_config.json", "preprocessor_config.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "merges.txt", "sentencepiece.bpe.model", *WEIGHT_FILES,
                    "model-*-of-*.safetensors", "pytorch_model-*-of-*.bin"]
# weights of other frameworks, named in the error when they are all a folder has
_OTHER_WEIGHTS = {"tf_model.h5": "TensorFlow", "tf_model.h5.index.json": "TensorFlow", "flax_model.msgpack": "Flax",
                  "flax_model.msgpack.index.json": "Flax", "model.onnx": "ONNX", "model.ckpt.index": "TensorFlow"}


def resolve_checkpoint(name_or_path) -> Path:
    """A local folder as is; otherwise a hub id, fetched (or found in the local HF cache) with clear errors."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: is a file; expected a checkpoint folder (with config.json) or a hub id")
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"{name}: no such folder (and not a hub id of the form 'owner/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RuntimeError(
            f"'{name}' is not a local folder, and huggingface_hub is not installed to fetch it from the hub "
            "(./setup_mlx.sh installs it with transformers; or pass a local checkpoint folder)"
        ) from None
    try:
        return Path(snapshot_download(name, allow_patterns=CHECKPOINT_FILES, local_files_only=True))
    except Exception:
        pass  # not cached: try the network below
    try:
        return Path(snapshot_download(name, allow_patterns=CHECKPOINT_FILES))
    except Exception as e:
        raise RuntimeError(
            f"could not fetch '{name}' from the Hugging Face hub and it is not in the local cache "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). If this machine is offline, "
            "download the checkpoint elsewhere and pass its local folder instead."
        ) from None


def weight_files(folder) -> list[Path]:
    """The weight files transformers would load from `folder`, in its order of preference (an index.json
    names its shards). Raises FileNotFoundError naming what was expected and what was found."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if path.exists():
            return _index_shards(path) if name.endswith(".index.json") else [path]
    # shards without their index (copied by hand): read only when all N of N are there
    for pattern in ("model-*-of-*.safetensors", "pytorch_model-*-of-*.bin"):
        shards = sorted(folder.glob(pattern))
        if shards:
            total = int(re.search(r"-of-(\d+)\.", shards[0].name).group(1))
            if len(shards) != total:
                raise FileNotFoundError(f"{folder}: {len(shards)} of {total} shards {pattern} and no index.json "
                                        "naming them; copy the whole checkpoint")
            return shards
    found = sorted(f"{n} ({kind})" for n, kind in _OTHER_WEIGHTS.items() if (folder / n).exists())
    raise FileNotFoundError(
        f"{folder}: no model weights; expected {', '.join(WEIGHT_FILES)} (with its shards)"
        + (f"; found {', '.join(found)}, which is not read: load it in transformers (from_tf / from_flax) and "
           "save_pretrained it" if found else ""))


def _index_shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index}: not valid JSON ({e})") from None
    except (KeyError, TypeError):
        raise ValueError(f"{index}: no \"weight_map\" (expected {{\"weight_map\": {{weight name: shard file}}}})") from None
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [p.name for p in shards if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{index}: names shard files that are not there: {', '.join(missing)}")
    return shards


def _read_bin(path: Path) -> dict[str, mx.array]:
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"{path}: reading .bin checkpoints needs torch (./setup_mlx.sh installs it)") from None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot read PyTorch checkpoint ({e})") from None
    return {k: mx.array(v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()) for k, v in raw.items()}


def read_hf_state_dict(folder) -> dict[str, mx.array]:
    """All weights of a transformers checkpoint folder (see weight_files). safetensors is read without torch
    (bf16 too); pytorch_model.bin (the hub's microsoft/trocr-*) needs torch and is read with weights_only."""
    state = {}
    for path in weight_files(folder):
        if path.suffix == ".bin":
            state.update(_read_bin(path))
            continue
        try:
            state.update(mx.load(str(path)))
        except Exception as e:
            raise ValueError(f"{path}: cannot read safetensors file ({e})") from None
    return state

#!/usr/bin/env python3
"""Convert a transformers TrOCR checkpoint (hub id or local folder) to our MLX format.

Writes DIR/config.json, DIR/model.safetensors (or weights.npz), DIR/generation_config.json and
DIR/processor/ (tokenizer.json, tokenizer_config.json, preprocessor_config.json). Every weight is
mapped and checked: a missing or unexpected weight stops the conversion and is named.

    python scripts/convert_trocr_to_mlx.py --input microsoft/trocr-base-handwritten --output models/mlx/trocr-base-handwritten
    python scripts/convert_trocr_to_mlx.py --input models/pytorch/my-finetune --output models/mlx/my-finetune --dtype float16
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import mlx.core as mx

from scripts.mlx_models import DTYPES, TrOCR, TrOCRConfig
from scripts.weights import check_and_load, hf_to_mlx, read_hf_state_dict, resolve_checkpoint

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "sentencepiece.bpe.model"]
GENERATION_KEYS = ["max_length", "max_new_tokens", "min_length", "num_beams", "length_penalty", "early_stopping",
                   "no_repeat_ngram_size", "do_sample", "temperature", "top_k", "top_p",
                   "decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"]


def write_processor(src: Path, dst: Path) -> None:
    """Tokenizer (always with a tokenizer.json) and image-preprocessor config into dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    if not (dst / "tokenizer.json").exists():
        build_tokenizer_json(src, dst)
    pre = src / "preprocessor_config.json"
    if not pre.exists():
        raise FileNotFoundError(f"{pre}: missing; a TrOCR checkpoint needs its image processor config")
    shutil.copy2(pre, dst / "preprocessor_config.json")


def build_tokenizer_json(src: Path, dst: Path) -> None:
    """The hub's older checkpoints ship vocab.json + merges.txt (RoBERTa BPE) or a sentencepiece model
    (XLM-R, trocr-small) without tokenizer.json; transformers converts them to a fast tokenizer."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        AutoTokenizer = None
    if AutoTokenizer is not None:
        tok = AutoTokenizer.from_pretrained(str(src), use_fast=True)
        tok.save_pretrained(str(dst))
        if (dst / "tokenizer.json").exists():
            return
    if (src / "vocab.json").exists() and (src / "merges.txt").exists():
        # Without transformers: rebuild RoBERTa's byte-level BPE with the tokenizers library.
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

        bpe = models.BPE.from_file(str(src / "vocab.json"), str(src / "merges.txt"))
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok.save(str(dst / "tokenizer.json"))
        return
    raise FileNotFoundError(f"{src}: no tokenizer.json, and no vocab.json+merges.txt to build one from "
                            "(a sentencepiece tokenizer needs transformers + sentencepiece to convert)")


def generation_defaults(src: Path, config: dict) -> dict:
    gen = {}
    for source in (config, config.get("decoder", {})):
        for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            if gen.get(k) is None and source.get(k) is not None:
                gen[k] = source[k]
    path = src / "generation_config.json"
    if path.exists():
        gen.update({k: v for k, v in json.loads(path.read_text()).items() if k in GENERATION_KEYS and v is not None})
    return gen


def convert(source, output, dtype: str = None, fmt: str = "safetensors", verbose: bool = True) -> Path:
    """Library entry point: convert `source` (folder or hub id) into `output`. Returns the output folder."""
    t0 = time.perf_counter()
    src = resolve_checkpoint(source)
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: missing; not a transformers checkpoint folder")
    hf_config = json.loads(cfg_path.read_text())
    config = TrOCRConfig.from_hf(hf_config)
    weights = hf_to_mlx(read_hf_state_dict(src), config)
    model = TrOCR(config)
    check_and_load(model, weights, source=f"cannot convert {src}", dtype=dtype)

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    from mlx.utils import tree_flatten

    flat = dict(tree_flatten(model.parameters()))
    for stale in ("model.safetensors", "weights.npz"):
        (out / stale).unlink(missing_ok=True)
    if fmt == "safetensors":
        mx.save_safetensors(str(out / "model.safetensors"), flat, metadata={"format": "mlx"})
    elif fmt == "npz":
        mx.savez(str(out / "weights.npz"), **flat)
    else:
        raise ValueError(f"--format must be safetensors or npz, got {fmt!r}")
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(generation_defaults(src, hf_config), indent=2))
    write_processor(src, out / "processor")
    if verbose:
        n = sum(v.size for v in flat.values())
        stored = next(iter(flat.values())).dtype
        print(f"converted {source} -> {out} ({len(flat)} tensors, {n / 1e6:.1f}M parameters, {stored}, "
              f"{fmt}) in {time.perf_counter() - t0:.1f}s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Reads model.safetensors without torch; pytorch_model.bin checkpoints need torch "
               "(read with weights_only=True).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="transformers checkpoint: local folder or hub id (owner/name)")
    ap.add_argument("--output", required=True, help="output folder for the MLX model")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None,
                    help="store weights in this dtype (default: as in the checkpoint)")
    ap.add_argument("--format", choices=["safetensors", "npz"], default="safetensors",
                    help="weight file: model.safetensors (default) or weights.npz")
    args = ap.parse_args(argv)
    try:
        convert(args.input, args.output, dtype=args.dtype, fmt=args.format)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

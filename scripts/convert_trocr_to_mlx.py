#!/usr/bin/env python3
"""Convert a transformers TrOCR checkpoint (hub id or local folder) to our MLX format.

Writes DIR/config.json, DIR/model.safetensors (or weights.npz), DIR/generation_config.json and
DIR/processor/ (tokenizer.json, tokenizer_config.json, preprocessor_config.json). Every weight is
mapped and checked: a missing or unexpected weight stops the conversion and is named.

Reads every layout transformers writes or has written: image settings in processor_config.json
(transformers 5.2x) or preprocessor_config.json (4.x/5.0x, the hub's "size": 384); the tokenizer as
tokenizer.json, vocab.json + merges.txt (RoBERTa BPE, trocr-base) or sentencepiece.bpe.model (XLM-R,
trocr-small), turned into a tokenizer.json checked against transformers' ids and texts; weights as
model.safetensors, pytorch_model.bin or their sharded forms (*.index.json).

    python scripts/convert_trocr_to_mlx.py --input microsoft/trocr-base-handwritten --output models/mlx/trocr-base-handwritten
    python scripts/convert_trocr_to_mlx.py --input models/pytorch/my-finetune --output models/mlx/my-finetune --dtype float16
    python scripts/convert_trocr_to_mlx.py --input microsoft/trocr-base-handwritten --output models/mlx/trocr-base-q4 \
        --dtype float16 --quantize 4 --group-size 64

--quantize 8|4 quantizes the Linear layers with MLX's affine quantization (nn.quantize, one scale and bias
per group of --group-size input weights); config.json then has a "quantization" entry that names what
stays float (embeddings, patch convolution, layer norms, a tied output projection). load_model, the
handlers and the batch processor read such a folder like any other. A quantized model cannot be exported
back to transformers; keep the float conversion for that.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])
    import scripts  # noqa: F401  (before mlx: OpenBLAS for MLX on Linux CPUs, scripts/cpu_blas.py)

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import mlx.core as mx
import numpy as np

from scripts.mlx_models import DTYPES, GROUP_SIZES, QUANTIZE_BITS, TrOCR, TrOCRConfig, quantize_model
from scripts.weights import check_and_load, hf_to_mlx, model_state, read_hf_state_dict, resolve_checkpoint

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]
GENERATION_KEYS = ["max_length", "max_new_tokens", "min_length", "num_beams", "length_penalty", "early_stopping",
                   "no_repeat_ngram_size", "do_sample", "temperature", "top_k", "top_p",
                   "decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"]
# Texts the converted tokenizer must encode and decode exactly as transformers' does (form-field lines with
# accents, punctuation and odd spacing; the spacing before punctuation is what clean_up_tokenization changes).
SAMPLE_TEXTS = ["Calle 26 # 68B-35, Bogotá D.C.", "José Pérez Núñez", "  dos  espacios ", "1.023.456.789",
                "fecha: 12/05/2024", "¿Sí? ¡No! (50%)", "correo@dominio.com", "ÀÉÎõü ñ ç", "Hello , world . it 's",
                "The quick brown fox."]


def installed_transformers():
    """transformers if installed (it reads old tokenizer layouts and cross-checks ours), else None."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def write_processor(src: Path, dst: Path, image_size) -> list[str]:
    """Image settings and tokenizer (always a tokenizer.json) into dst; returns notes for the console.

    The image settings come from processor_config.json (transformers 5.2x) or preprocessor_config.json
    (older) and are written out with every value explicit. With transformers installed, the tokenizer is
    the one transformers loads (from tokenizer.json, vocab.json + merges.txt or sentencepiece.bpe.model),
    saved by it, then checked: same ids and texts as transformers' on sample texts.
    """
    from scripts.image_settings import read_image_settings

    settings, settings_file = read_image_settings(src)
    settings.check_fits(image_size, str(settings_file))
    dst.mkdir(parents=True, exist_ok=True)
    transformers = installed_transformers()
    notes = []
    if transformers is None:
        notes.append("transformers is not installed: the image settings and the tokenizer are not cross-checked "
                     "against it")
        copy_or_build_tokenizer(src, dst)
    else:
        notes += cross_check_image_settings(transformers, src, settings, settings_file)
        notes.append(save_verified_tokenizer(transformers, src, dst))
    (dst / "preprocessor_config.json").write_text(json.dumps(settings.to_dict(), indent=2))
    return notes


def cross_check_image_settings(transformers, src: Path, ours, settings_file: Path) -> list[str]:
    """Our reading of the image settings must be transformers' own; a difference stops the conversion."""
    from scripts.image_settings import ImageSettings

    try:
        loaded = transformers.AutoImageProcessor.from_pretrained(str(src))
    except Exception as e:
        raise ValueError(f"{settings_file}: transformers cannot load this image processor either "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    theirs = ImageSettings.from_dict(loaded.to_dict(), f"{settings_file} as transformers reads it")
    if theirs != ours:
        diff = [f"{k}: ours {getattr(ours, k)!r}, transformers {getattr(theirs, k)!r}"
                for k in ours.__dataclass_fields__ if getattr(ours, k) != getattr(theirs, k)]
        raise ValueError(f"{settings_file}: read differently from transformers {transformers.__version__} "
                         f"({'; '.join(diff)}); not converting rather than preprocess images differently")
    if any(c.__name__ in ("TorchvisionBackend", "BaseImageProcessorFast") for c in type(loaded).__mro__):
        # with torchvision installed transformers resizes with torch; MLX reproduces its PIL backend
        return [f"image processor: transformers here uses {type(loaded).__name__} (torchvision backend); the MLX "
                "processor reproduces the PIL backend, so pixel values may differ slightly from it"]
    return [f"image settings ({ours.describe()}) read as transformers {transformers.__version__} reads them"]


def _tokenizer_sources(src: Path) -> str:
    if (src / "tokenizer.json").exists():
        return "tokenizer.json"
    if (src / "vocab.json").exists() and (src / "merges.txt").exists():
        return "vocab.json + merges.txt"
    if (src / "sentencepiece.bpe.model").exists():
        return "sentencepiece.bpe.model"
    raise FileNotFoundError(f"{src}: no tokenizer; expected tokenizer.json, vocab.json + merges.txt (RoBERTa BPE, "
                            "the hub's trocr-base) or sentencepiece.bpe.model (XLM-R, the hub's trocr-small)")


def save_verified_tokenizer(transformers, src: Path, dst: Path) -> str:
    """transformers' tokenizer of src, saved by transformers into dst, checked against it on SAMPLE_TEXTS."""
    from scripts.mlx_processor import TextDecoder

    source = _tokenizer_sources(src)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(src))
    except Exception as e:
        raise ValueError(f"{src / source}: transformers cannot load this tokenizer "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"{src / source}: transformers gives a slow {type(tok).__name__} (no tokenizer.json "
                         "equivalent); install the `tokenizers` and `sentencepiece` packages")
    tok.save_pretrained(str(dst))
    if not (dst / "tokenizer.json").exists():
        raise ValueError(f"{src / source}: transformers {transformers.__version__} wrote no tokenizer.json for "
                         f"its {type(tok).__name__}")
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    # Decoding depends on this setting; the saved config may leave it to the class default, so write it.
    cfg["clean_up_tokenization_spaces"] = bool(tok.clean_up_tokenization_spaces)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    ours = TextDecoder(dst)
    n = ours.tokenizer.get_vocab_size()
    sequences = []
    for text in SAMPLE_TEXTS:
        ref, got = tok(text).input_ids, ours.encode(text)
        if got != ref:
            raise ValueError(f"{dst / 'tokenizer.json'}: encodes {text!r} as {got}, transformers' "
                             f"{type(tok).__name__} of {src / source} as {ref}")
        sequences.append(ref)
    rng = np.random.default_rng(0)  # decoding also any ids a model may emit, special tokens included
    sequences += [rng.integers(0, n, 12).tolist() for _ in range(20)] + [list(range(min(n, 64)))]
    for ids in sequences:
        for skip in (True, False):
            ref, got = tok.decode(ids, skip_special_tokens=skip), ours.decode(ids, skip_special_tokens=skip)
            if got != ref:
                raise ValueError(f"{dst / 'tokenizer.json'}: decodes {ids} as {got!r}, transformers' "
                                 f"{type(tok).__name__} of {src / source} as {ref!r}")
    return (f"tokenizer: {type(tok).__name__} from {source}, same ids and texts as transformers "
            f"{transformers.__version__} on {len(sequences)} samples")


def copy_or_build_tokenizer(src: Path, dst: Path) -> None:
    """Without transformers: copy a tokenizer.json, or rebuild RoBERTa's byte-level BPE from vocab.json +
    merges.txt with the tokenizers library; a sentencepiece model needs transformers to convert."""
    source = _tokenizer_sources(src)
    if source == "tokenizer.json":
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, dst / name)
        return
    if source == "sentencepiece.bpe.model":
        raise RuntimeError(f"{src / source}: converting a sentencepiece tokenizer to tokenizer.json needs "
                           "transformers and sentencepiece (./setup_mlx.sh installs transformers; "
                           "pip install sentencepiece)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    bpe = models.BPE.from_file(str(src / "vocab.json"), str(src / "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(str(dst / "tokenizer.json"))
    if (src / "tokenizer_config.json").exists():
        shutil.copy2(src / "tokenizer_config.json", dst / "tokenizer_config.json")


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


def convert(source, output, dtype: str = None, fmt: str = "safetensors", verbose: bool = True,
            quantize: Optional[int] = None, group_size: int = 64) -> Path:
    """Library entry point: convert `source` (folder or hub id) into `output`. Returns the output folder.
    `quantize` (8 or 4 bits) quantizes the Linear layers after the dtype cast (see mlx_models.quantize_model)."""
    t0 = time.perf_counter()
    if fmt not in ("safetensors", "npz"):
        raise ValueError(f"--format must be safetensors or npz, got {fmt!r}")
    src = resolve_checkpoint(source)
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: missing; not a transformers checkpoint folder")
    hf_config = json.loads(cfg_path.read_text())
    config = TrOCRConfig.from_hf(hf_config)
    with tempfile.TemporaryDirectory() as tmp:
        # processor and weights are both checked before anything is written to `output`
        notes = write_processor(src, Path(tmp) / "processor", config.encoder.image_size)
        weights = hf_to_mlx(read_hf_state_dict(src), config)
        model = TrOCR(config)
        check_and_load(model, weights, source=f"cannot convert {src}", dtype=dtype)
        n_params = sum(v.size for v in weights.values())
        if quantize:
            hf_config = {**hf_config, "quantization": quantize_model(model, bits=quantize, group_size=group_size)}

        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        flat = model_state(model)  # transformers' layout (separate q/k/v), whatever the model fuses
        for stale in ("model.safetensors", "weights.npz"):
            (out / stale).unlink(missing_ok=True)
        if fmt == "safetensors":
            mx.save_safetensors(str(out / "model.safetensors"), flat, metadata={"format": "mlx"})
        else:
            mx.savez(str(out / "weights.npz"), **flat)
        (out / "config.json").write_text(json.dumps(hf_config, indent=2))
        (out / "generation_config.json").write_text(json.dumps(generation_defaults(src, hf_config), indent=2))
        shutil.rmtree(out / "processor", ignore_errors=True)
        shutil.copytree(Path(tmp) / "processor", out / "processor")
    if verbose:
        stored = next(iter(flat.values())).dtype
        size = sum(v.nbytes for v in flat.values())
        print(f"converted {source} -> {out} ({len(flat)} tensors, {n_params / 1e6:.1f}M parameters, "
              f"{stored}, {size / 2**20:.1f} MiB, {fmt}) in {time.perf_counter() - t0:.1f}s")
        q = hf_config.get("quantization")
        if q:
            print(f"quantized to {q['bits']} bits, groups of {q['group_size']} (MLX affine); left in float: "
                  + "; ".join(q["float"]))
        for note in notes:
            print(f"  {note}")
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
    ap.add_argument("--quantize", type=int, choices=QUANTIZE_BITS,
                    help="quantize the Linear layers to this many bits (MLX affine quantization); embeddings, "
                         "the patch convolution and layer norms stay float")
    ap.add_argument("--group-size", type=int, choices=GROUP_SIZES, default=64,
                    help="input weights per quantization scale/bias (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        convert(args.input, args.output, dtype=args.dtype, fmt=args.format, quantize=args.quantize,
                group_size=args.group_size)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

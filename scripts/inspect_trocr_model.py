#!/usr/bin/env python3
"""Inspect a transformers TrOCR checkpoint: save it locally, describe its architecture, run one OCR.

    python scripts/inspect_trocr_model.py --model microsoft/trocr-base-handwritten
    python scripts/inspect_trocr_model.py --model path/to/finetuned --image field.png

Saves the model and processor under models/pytorch/<name>/ (with the installed transformers' own
save_pretrained, so in the layout it writes) and writes architecture_info.json there
(encoder/decoder types, layers, widths, heads, image size, vocab, parameters per part, tokenizer class,
generation config). Needs torch + transformers (./setup_mlx.sh installs both).
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sample_line_image():
    """A printed test line, so the test inference needs no input file."""
    from PIL import Image, ImageDraw

    from scripts.forms import load_font

    img = Image.new("RGB", (384, 64), "white")
    ImageDraw.Draw(img).text((8, 14), "Bogotá 2024", fill="black", font=load_font(30))
    return img


def architecture_info(model, tokenizer, source: str) -> dict:
    cfg = model.config
    enc, dec = cfg.encoder, cfg.decoder

    def count(module):
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    parts = {"encoder": count(model.encoder), "decoder": count(model.decoder),
             "enc_to_dec_proj": count(getattr(model, "enc_to_dec_proj", None))}
    return {
        "source": source,
        "encoder": {"type": enc.model_type, "layers": enc.num_hidden_layers, "hidden_size": enc.hidden_size,
                    "heads": enc.num_attention_heads, "intermediate_size": enc.intermediate_size,
                    "activation": enc.hidden_act, "image_size": enc.image_size, "patch_size": enc.patch_size,
                    "qkv_bias": getattr(enc, "qkv_bias", True)},
        "decoder": {"type": dec.model_type, "layers": dec.decoder_layers, "d_model": dec.d_model,
                    "heads": dec.decoder_attention_heads, "ffn_dim": dec.decoder_ffn_dim,
                    "activation": dec.activation_function, "vocab_size": dec.vocab_size,
                    "max_position_embeddings": dec.max_position_embeddings,
                    "learned_positions": dec.use_learned_position_embeddings,
                    "scale_embedding": dec.scale_embedding, "layernorm_embedding": dec.layernorm_embedding,
                    "cross_attention_hidden_size": dec.cross_attention_hidden_size,
                    "tie_word_embeddings": dec.tie_word_embeddings},
        "parameters": {**parts, "total": sum(parts.values())},
        "tokenizer_class": type(tokenizer).__name__,
        "generation_config": model.generation_config.to_diff_dict(),
    }


def inspect(model_id: str, output_root=ROOT / "models" / "pytorch", image=None) -> dict:
    import torch
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    from scripts.weights import resolve_checkpoint

    src = resolve_checkpoint(model_id)
    name = Path(model_id.rstrip("/")).name
    out = Path(output_root) / name
    t0 = time.perf_counter()
    model = VisionEncoderDecoderModel.from_pretrained(src).eval()
    processor = TrOCRProcessor.from_pretrained(src)
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    load_time = time.perf_counter() - t0
    if out.resolve() != src.resolve():
        # the installed transformers' own layout (5.2x: processor_config.json, tokenizer.json, safetensors)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    info = architecture_info(model, tokenizer, str(src))
    from scripts.image_io import load_image

    img = load_image(image) if image is not None else sample_line_image()
    pixels = image_processor(img, return_tensors="pt").pixel_values
    t1 = time.perf_counter()
    with torch.no_grad():
        ids = model.generate(pixels, max_new_tokens=32)
    info["test_inference"] = {"image": str(image) if image else "built-in printed line 'Bogotá 2024'",
                              "text": tokenizer.batch_decode(ids, skip_special_tokens=True)[0],
                              "seconds": round(time.perf_counter() - t1, 3), "load_seconds": round(load_time, 3)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "architecture_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
    info["saved_to"] = str(out)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="hub id (owner/name) or local checkpoint folder")
    ap.add_argument("--output-root", default=str(ROOT / "models" / "pytorch"),
                    help="where models/pytorch/<name>/ goes (default: %(default)s)")
    ap.add_argument("--image", help="a text-line image for the test inference (default: a rendered line)")
    args = ap.parse_args(argv)
    try:
        info = inspect(args.model, args.output_root, args.image)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    e, d, p = info["encoder"], info["decoder"], info["parameters"]
    print(f"saved to {info['saved_to']}")
    print(f"encoder: {e['type']} {e['layers']} layers, width {e['hidden_size']}, {e['heads']} heads, "
          f"image {e['image_size']}, patch {e['patch_size']}")
    print(f"decoder: {d['type']} {d['layers']} layers, d_model {d['d_model']}, {d['heads']} heads, vocab {d['vocab_size']}, "
          f"{'learned' if d['learned_positions'] else 'sinusoidal'} positions")
    print(f"parameters: {p['total'] / 1e6:.1f}M (encoder {p['encoder'] / 1e6:.1f}M, decoder {p['decoder'] / 1e6:.1f}M)")
    t = info["test_inference"]
    print(f"test inference on {t['image']}: {t['text']!r} in {t['seconds']}s (load {t['load_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

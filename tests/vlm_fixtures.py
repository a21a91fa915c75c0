"""Tiny random-weight Qwen3-VL (Chandra 1) and Qwen3.5 (Chandra OCR 2) checkpoints, built locally.

Everything a real checkpoint folder has is made here through the public APIs of the installed
libraries: a byte-level BPE tokenizer trained with `tokenizers` on a small corpus (Qwen's special
tokens added), wrapped as transformers' Qwen2Tokenizer; transformers' own Qwen2-VL image processor
(the PIL one: no torchvision here); a Qwen-style chat template; the model from transformers'
config classes with a few layers, saved with `save_pretrained`. Conversion to MLX is mlx-vlm's own
`mlx_vlm.convert`. Nothing is downloaded.

Weights are re-drawn with a wider spread than transformers' init (norm weights included, so a
mishandled RMSNorm offset shows) so that greedy decoding is decisive and does not stop early.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
VOCAB_SIZE = 384
PATCH, MERGE = 16, 2  # Qwen3-VL / Qwen3.5 vision: 16 px patches, 2x2 merged into one LM token

# The shape of Qwen's chat template (user turn: image then text; generation prompt opens the
# assistant turn), written small. Both mlx-vlm and transformers render prompts through it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

CORPUS = [
    "OCR this image to HTML.",
    "Only use these tags, and these attributes. Guidelines: inline math, tables, formatting, images.",
    "<p>Invoice number 2024-117</p><table><tr><td>Total</td><td>1,250.00</td></tr></table>",
    "<h1>Solicitud de empleo</h1><p>Nombre: María José Pérez</p><p>Fecha: 12/03/2025</p>",
    "The quick brown fox jumps over the lazy dog. 0123456789 <br> <b>bold</b> <i>italic</i>",
]


def build_tokenizer():
    """Byte-level BPE trained on CORPUS, Qwen special tokens, as transformers' Qwen2Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    model = tok.get_vocab()
    merges = _merges(tok)
    hf = Qwen2Tokenizer(vocab=model, merges=merges, unk_token=None, eos_token="<|im_end|>",
                        pad_token="<|endoftext|>")
    hf.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    hf.add_tokens(["<|endoftext|>"], special_tokens=True)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _merges(tok):
    import json

    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
            for m in json.loads(tok.to_str())["model"]["merges"]]


def build_image_processor(max_pixels: int = 256 * 256):
    """transformers' Qwen2-VL image processor (the one Qwen3-VL and Qwen3.5 checkpoints name), PIL
    backend. transformers' Qwen3VLProcessor itself cannot be built without torchvision (its video
    processor needs it), so the reference side uses the tokenizer and this image processor directly."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=PATCH, temporal_patch_size=2, merge_size=MERGE,
        size={"shortest_edge": 32 * 32, "longest_edge": max_pixels},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def _token_ids(tokenizer) -> dict:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                eos=ids["<|im_end|>"], pad=ids["<|endoftext|>"])


def make_config(arch: str, tokenizer):
    """arch "qwen3_vl" (Chandra 1: deepstack, untied output) or "qwen3_5" (Chandra OCR 2: gated-delta
    linear attention + full attention every 4th layer, partial rotary, tied output)."""
    ids = _token_ids(tokenizer)
    vocab = len(tokenizer)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=PATCH,
                  spatial_merge_size=MERGE, temporal_patch_size=2, out_hidden_size=64,
                  num_position_embeddings=64, hidden_act="gelu_pytorch_tanh")
    tokens = {k: ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                  "vision_end_token_id")}
    if arch == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                    eos_token_id=ids["eos"], pad_token_id=ids["pad"])
        return Qwen3VLConfig(text_config=text, vision_config=dict(vision, deepstack_visual_indexes=[0]),
                             tie_word_embeddings=False, **tokens)
    if arch == "qwen3_5":
        from transformers import Qwen3_5Config

        text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                    linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
                    linear_num_key_heads=2, linear_num_value_heads=4,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                     "mrope_section": [2, 1, 1], "mrope_interleaved": True},
                    eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=True)
        return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)
    raise ValueError(f"unknown architecture {arch!r}")


def make_model(arch: str, tokenizer, seed: int = 0, std: float = 0.2):
    from transformers import Qwen3_5ForConditionalGeneration, Qwen3VLForConditionalGeneration

    cls = Qwen3VLForConditionalGeneration if arch == "qwen3_vl" else Qwen3_5ForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(make_config(arch, tokenizer)).eval()
    g = torch.Generator().manual_seed(seed)
    eos = _token_ids(tokenizer)["eos"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "norm" in name:
                # RMSNorm weights away from their init (1, or 0 in Qwen3.5's 1+w form)
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        # keep <|im_end|> unlikely so greedy runs long enough to compare many tokens
        model.get_output_embeddings().weight[eos].mul_(0.0)
    return model


def save_checkpoint(arch: str, folder, seed: int = 0, model=None, max_pixels: int = 256 * 256) -> Path:
    """The tiny model (or `model`, made by make_model) as a transformers checkpoint folder: weights,
    config, generation config, tokenizer, image processor, chat template."""
    folder = Path(folder)
    tokenizer = build_tokenizer()
    model = model if model is not None else make_model(arch, tokenizer, seed=seed)
    ids = _token_ids(tokenizer)
    model.generation_config.eos_token_id = ids["eos"]
    model.generation_config.pad_token_id = ids["pad"]
    model.save_pretrained(folder)
    if arch == "qwen3_vl":
        _legacy_rope_layout(folder / "config.json")
    tokenizer.save_pretrained(folder)
    build_image_processor(max_pixels).save_pretrained(folder)
    return folder


def _legacy_rope_layout(config_file: Path) -> None:
    """Write the config the way the published Qwen3-VL checkpoints (datalab-to/chandra,
    Qwen/Qwen3-VL-8B-Instruct; saved by transformers 4.57) have it: top-level `rope_theta` plus
    `rope_scaling`, vision `model_type` "qwen3_vl". transformers 5 writes `rope_parameters` and
    "qwen3_vl_vision" instead, which mlx-vlm 0.7.10's qwen3_vl cannot read (TypeError: missing
    'rope_theta'; ValueError: Unsupported model type); transformers 5 reads both layouts."""
    import json

    cfg = json.loads(config_file.read_text())
    text = cfg["text_config"]
    rope = dict(text.pop("rope_parameters"))
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = rope
    # transformers 4.x names the vision tower's type after the model ("qwen3_vl"), 5.x "qwen3_vl_vision"
    cfg["vision_config"]["model_type"] = cfg["model_type"]
    config_file.write_text(json.dumps(cfg, indent=2) + "\n")


def convert_checkpoint(hf_folder, mlx_folder, dtype=None) -> Path:
    """mlx-vlm's own converter, as a user runs it (`python -m mlx_vlm.convert`)."""
    from mlx_vlm.convert import convert

    convert(str(hf_folder), mlx_path=str(mlx_folder), dtype=dtype)
    return Path(mlx_folder)


def page_image(width: int, height: int, seed: int, text: str = "") -> Image.Image:
    """A page-like test picture, distinct per seed: paper-coloured noise, dark text-line bars and
    blocks (tables, figures) at random places, a line of real text."""
    rng = np.random.default_rng(seed)
    arr = (225 + rng.integers(0, 30, size=(height, width, 3))).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 16, height // 3))
        d.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 160, 3)))
    for y in range(8, height - 8, int(rng.integers(10, 24))):
        d.rectangle([6, y, 6 + int(rng.integers(width // 4, width - 12)), y + 2], fill=(20, 20, 20))
    d.text((4, 4), text or f"page {seed}", fill=(10, 10, 10))
    return img


# --------------------------------------------------------------------------------------------------
# The transformers side: the reference every MLX result is compared with
# --------------------------------------------------------------------------------------------------


def hf_inputs(tokenizer, image_processor, images, prompt: str) -> dict:
    """What transformers' Qwen3VLProcessor gives the model for pages of one size and a prompt (the
    processor class itself needs torchvision, so its three steps are done here with its own parts):
    the chat template with the image first, <|image_pad|> repeated once per merged patch, and the
    multimodal token types M-RoPE needs. One size, one prompt: every row has one length, no padding."""
    images = [images] if isinstance(images, Image.Image) else list(images)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    template = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    pixels = image_processor(images=images, return_tensors="pt")
    texts = [template.replace("<|image_pad|>", "<|image_pad|>" * (int(g.prod()) // MERGE ** 2))
             for g in pixels["image_grid_thw"]]
    enc = tokenizer(texts, return_tensors="pt")
    enc["mm_token_type_ids"] = (enc["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).long()
    return {**enc, **pixels}


def hf_generate(model, tokenizer, image_processor, image, prompt: str, max_new_tokens: int) -> list[int]:
    """transformers' greedy `generate` for one page: the generated ids, without the prompt."""
    inputs = hf_inputs(tokenizer, image_processor, image, prompt)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return _trim(out[0, inputs["input_ids"].shape[1]:].tolist(), model.generation_config.eos_token_id)


def _trim(ids: list[int], eos: int) -> list[int]:
    """Generated ids up to end-of-text (excluded: mlx-vlm reports the ids before it)."""
    return ids[:ids.index(eos)] if eos in ids else ids


def aim_end_of_text(model, tokenizer, image_processor, image, prompt: str, step: int, margin: float = 2.0):
    """Set the (untied) output row of <|im_end|> so that greedy decoding of `image` ends after exactly
    `step` tokens (0: an empty page): its logit is `margin` below the best other token at the steps
    before and `margin` above it at `step` (a least-squares solve over those steps' hidden states).
    Other tokens' logits are unchanged, so the text before the end is the same as without it."""
    eos = _token_ids(tokenizer)["eos"]
    inputs = hf_inputs(tokenizer, image_processor, image, prompt)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        model.lm_head.weight[eos] = 0.0
        ids = hf_generate(model, tokenizer, image_processor, image, prompt, step)[:step] if step else []
        if len(ids) != step:
            raise ValueError(f"the model ended the page after {len(ids)} < {step} tokens")
        if ids:
            extra = torch.tensor([ids])
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], 1)
        h = model.model(**inputs).last_hidden_state[0, prompt_len - 1:]  # the states that choose tokens 0..step
        logits = model.lm_head(h)
        logits[:, eos] = -float("inf")
        best = logits.max(-1).values
        target = best - margin
        target[-1] = best[-1] + margin
        model.lm_head.weight[eos] = torch.linalg.lstsq(h.double(), target.double()[:, None]).solution[:, 0].float()
    return model

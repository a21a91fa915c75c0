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

from scripts.char_tokenizer import build_char_tokenizer

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


def trocr_processor(image_size, kind: str = "vit", tokenizer=None):
    """A transformers TrOCRProcessor built through the public API, with by default the char tokenizer
    (tokenizers library) wrapped in transformers' fast tokenizer. kind: "vit" (ViTImageProcessor, resize to
    the model's size), "deit" (DeiTImageProcessor giving the same pixels) or "deit-crop" (DeiT resizing 4 px
    larger with its bicubic default, then center-cropping, as DeiT's 256 -> 224 default does)."""
    from transformers import DeiTImageProcessor, PreTrainedTokenizerFast, TrOCRProcessor, ViTImageProcessor

    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if tokenizer is None:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_char_tokenizer(), bos_token="<s>",
                                            eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    if kind == "deit-crop":
        images = DeiTImageProcessor(size={"height": h + 4, "width": w + 4}, crop_size={"height": h, "width": w})
    elif kind == "deit":
        images = DeiTImageProcessor(size={"height": h, "width": w}, do_center_crop=False, resample=2)
    else:
        images = ViTImageProcessor(size={"height": h, "width": w})
    return TrOCRProcessor(image_processor=images, tokenizer=tokenizer)


def save_checkpoint(model, folder) -> Path:
    """A complete TrOCR checkpoint folder as a user gets it from the installed transformers: the model's
    and the processor's save_pretrained (DeiT encoders get a DeiT image processor)."""
    folder = Path(folder)
    model.save_pretrained(folder)
    kind = "deit" if model.config.encoder.model_type == "deit" else "vit"
    trocr_processor(model.config.encoder.image_size, kind).save_pretrained(folder)
    return folder


def write_preprocessor(folder: Path, image_size, legacy: bool = False):
    """A hand-written preprocessor_config.json as transformers 4.x wrote it; legacy: the hub's microsoft/trocr-*
    form ("feature_extractor_type": "ViTFeatureExtractor", "size": 384)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    cfg = {"do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
           "processor_class": "TrOCRProcessor", "resample": 2}
    if legacy and h == w:
        cfg.update(feature_extractor_type="ViTFeatureExtractor", size=h)
    else:
        cfg.update(image_processor_type="ViTImageProcessor", do_rescale=True, rescale_factor=1 / 255,
                   size={"height": h, "width": w})
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


def save_legacy_bin(model, folder, shard_bytes=None, legacy_names: bool = True) -> list:
    """pytorch_model.bin as transformers 4.x wrote it (the hub's microsoft/trocr-* have one, with pre-5.x
    weight names); with shard_bytes, pytorch_model-0000i-of-0000N.bin + pytorch_model.bin.index.json."""
    folder = Path(folder)
    for old in list(folder.glob("model*.safetensors")) + list(folder.glob("model.safetensors.index.json")):
        old.unlink()
    state = {(_legacy_name(k) if legacy_names else k): v.contiguous() for k, v in model.state_dict().items()}
    if shard_bytes is None:
        torch.save(state, folder / "pytorch_model.bin")
        return [folder / "pytorch_model.bin"]
    shards, current, size = [], {}, 0
    for name, value in state.items():
        if current and size + value.numel() * value.element_size() > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = value
        size += value.numel() * value.element_size()
    shards.append(current)
    names = [f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        torch.save(shard, folder / name)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
             "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    return [folder / n for n in names]


CORPUS = ["Calle 26 # 68B-35, Bogotá", "José Pérez Núñez", "1.023.456.789", "fecha: 12/05/2024",
          "The quick brown fox", "Señora María López", "correo@dominio.com", "¿Sí? ¡No! (50%)"] * 40


def save_roberta_bpe(folder) -> int:
    """The hub's trocr-base tokenizer layout: vocab.json + merges.txt (byte-level BPE trained here with the
    tokenizers library), tokenizer_config.json naming RobertaTokenizer, no tokenizer.json. Returns the vocab size."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
         "unk_token": "<unk>", "mask_token": "<mask>", "model_max_length": 512, "errors": "replace",
         "clean_up_tokenization_spaces": True}, indent=2))  # as 4.x wrote it; 5.2x ignores it for BPE
    return bpe.get_vocab_size()


def save_sentencepiece(folder) -> int:
    """The hub's trocr-small tokenizer layout: sentencepiece.bpe.model (trained here with the sentencepiece
    package) and tokenizer_config.json naming XLMRobertaTokenizer. Returns transformers' vocab size
    (the fairseq offset and <mask> come on top of the sentencepiece pieces)."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(folder / "sentencepiece.bpe"),
                                   vocab_size=120, model_type="bpe", character_coverage=1.0, minloglevel=2)
    (folder / "sentencepiece.bpe.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
         "unk_token": "<unk>", "mask_token": "<mask>", "model_max_length": 512,
         "clean_up_tokenization_spaces": True}, indent=2))  # applied: not a BPE model in transformers
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder))


def _legacy_name(name: str) -> str:
    """transformers 5.x weight name -> the pre-5.x name the hub's checkpoints use."""
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

"""The MLX port against transformers itself: same encoder states, logits and greedy texts."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten

import hf_fixtures as F
from scripts.convert_trocr_to_mlx import convert
from scripts.mlx_models import TrOCR, TrOCRConfig
from scripts.mlx_processor import load_mlx_processor
from scripts.weights import check_and_load, hf_to_mlx, mlx_to_hf

NEW_TOKENS = 32


def to_mlx_model(hf_model, dtype=None) -> TrOCR:
    cfg = TrOCRConfig.from_hf(hf_model.config.to_dict())
    model = TrOCR(cfg)
    check_and_load(model, hf_to_mlx(dict(hf_model.state_dict()), cfg), dtype=dtype)
    return model


def hf_generate_texts(hf_model, hf_dir, images, **gen):
    from transformers import AutoImageProcessor, AutoTokenizer

    pixels = AutoImageProcessor.from_pretrained(hf_dir)(images, return_tensors="pt").pixel_values
    with torch.no_grad():
        out = hf_model.generate(pixels, do_sample=False, num_beams=1, **gen)
    return AutoTokenizer.from_pretrained(hf_dir).batch_decode(out, skip_special_tokens=True), out


@pytest.fixture(scope="module", params=list(F.VARIANTS))
def variant(request, tmp_path_factory):
    """(name, in-memory HF model, HF folder, converted MLX folder) for each TrOCR variant."""
    name = request.param
    hf_model = F.make_model(name, seed=1)
    root = tmp_path_factory.mktemp(name)
    hf_dir = F.save_checkpoint(hf_model, root / "hf")
    return name, hf_model, hf_dir, convert(hf_dir, root / "mlx", verbose=False)


def test_encoder_states_and_logits_match(variant):
    # Weights at transformers-like scale (the greedy fixtures spread them wider), so that 1e-4 measures
    # the port and not float32 rounding of logits in the tens under another BLAS's summation order.
    name = variant[0]
    hf_model = F.make_model(name, seed=1, std=0.1)
    model = to_mlx_model(hf_model)
    h, w = model.config.encoder.image_size
    pixels = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(3, F.VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 2
    with torch.no_grad():
        ref_enc = hf_model.encoder(pixels).last_hidden_state.numpy()
        ref_logits = hf_model(pixel_values=pixels, decoder_input_ids=ids).logits.numpy()
    fused = {k for k, _ in tree_flatten(model.parameters()) if "qkv_proj" in k or "kv_proj" in k}
    assert {"encoder.layers.0.attn.qkv_proj.weight", "decoder.layers.0.self_attn.qkv_proj.weight",
            "decoder.layers.0.encoder_attn.kv_proj.weight"} <= fused, "q/k/v should run fused"
    px = mx.array(pixels.permute(0, 2, 3, 1).numpy())
    enc = np.array(model.encoder(px))
    logits = np.array(model(px, mx.array(ids.numpy())))
    assert enc.shape == ref_enc.shape and logits.shape == ref_logits.shape
    np.testing.assert_allclose(enc, ref_enc, atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)


def test_fused_projections_export_transformers_layout(variant):
    """The model runs q/k/v (k/v for cross-attention) as one matmul, fused at load time; what is saved
    and exported is transformers' layout again, bit for bit, and the converted file holds no fused weight."""
    _, hf_model, _, mlx_dir = variant
    model = to_mlx_model(hf_model)
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    exported = mlx_to_hf(dict(tree_flatten(model.parameters())), model.config)
    assert len(exported) == len(hf_to_mlx(state, model.config))
    for name, value in exported.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    stored = mx.load(str(mlx_dir / "model.safetensors"))
    assert not [k for k in stored if "qkv_proj" in k or "kv_proj" in k]
    assert "decoder.layers.0.self_attn.q_proj.weight" in stored and "encoder.layers.0.attn.v_proj.weight" in stored


def test_cached_decoding_matches_full_forward(variant):
    """The KV-cached step path gives the same logits as the teacher-forced pass."""
    _, hf_model, _, _ = variant
    model = to_mlx_model(hf_model)
    h, w = model.config.encoder.image_size
    px = mx.array(np.random.default_rng(0).standard_normal((1, h, w, 3)).astype(np.float32))
    ids = mx.array([[2, 5, 9, 14, 7, 30]])
    full = np.array(model(px, ids))
    cross = model.decoder.cross_kv(model.encode(px))
    cache = model.make_cache(1, 16)
    steps = [np.array(model.decoder(ids[:, t:t + 1], cross, cache=cache, offset=t))[0, 0] for t in range(6)]
    np.testing.assert_allclose(np.stack(steps), full[0], atol=1e-4, rtol=0)


def test_greedy_texts_match_transformers_generate(variant):
    name, hf_model, hf_dir, mlx_dir = variant
    images = F.random_images(4, seed=3)
    if name == "sinusoidal":
        # transformers 5.x cannot reload a sinusoidal-position TrOCR (its table stays on the meta device):
        # the reference is the in-memory model; our converter rebuilt the table from the saved folder.
        from transformers import AutoImageProcessor, AutoTokenizer

        pixels = AutoImageProcessor.from_pretrained(hf_dir)(images, return_tensors="pt").pixel_values
        with torch.no_grad():
            out = hf_model.generate(pixels, do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS)
        ref = AutoTokenizer.from_pretrained(hf_dir).batch_decode(out, skip_special_tokens=True)
    else:
        from transformers import VisionEncoderDecoderModel

        reloaded = VisionEncoderDecoderModel.from_pretrained(hf_dir).eval()
        ref, out = hf_generate_texts(reloaded, hf_dir, images, max_new_tokens=NEW_TOKENS)
    assert out.shape[1] == NEW_TOKENS + 1, "fixture should generate the full length"
    assert len(set(ref)) > 1, "fixture should give different texts for different images"
    proc = load_mlx_processor(mlx_dir)
    assert proc.process_batch(images, batch_size=3, max_new_tokens=NEW_TOKENS, show_progress=False) == ref
    assert [proc.process_image(img, max_new_tokens=NEW_TOKENS) for img in images] == ref
    # max_length counts the start token, as in transformers
    assert proc.process_image(images[0], max_length=NEW_TOKENS + 1) == ref[0]
    ids = proc.generate(proc(images)["pixel_values"], max_new_tokens=NEW_TOKENS)
    assert [list(map(int, row)) for row in out.tolist()] == ids


def test_missing_weight_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf_dir = F.save_checkpoint(F.make_model("base"), tmp_path / "hf")
    state = load_file(hf_dir / "model.safetensors")
    victim = "decoder.model.decoder.layers.1.encoder_attn.k_proj.weight"
    del state[victim]
    save_file(state, hf_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing weights: decoder\.layers\.1\.encoder_attn\.k_proj\.weight"):
        convert(hf_dir, tmp_path / "mlx", verbose=False)
    assert not (tmp_path / "mlx" / "model.safetensors").exists()


def test_unexpected_weight_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf_dir = F.save_checkpoint(F.make_model("base"), tmp_path / "hf")
    state = load_file(hf_dir / "model.safetensors")
    state["decoder.model.decoder.extra_head.weight"] = np.zeros((2, 2), np.float32)
    save_file(state, hf_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"decoder\.model\.decoder\.extra_head\.weight"):
        convert(hf_dir, tmp_path / "mlx", verbose=False)


def test_cli_converter_reports_errors(tmp_path, capsys):
    from scripts.convert_trocr_to_mlx import main

    assert main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out")]) == 1
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_close_to_float32(tiny_model, tmp_path, dtype):
    hf_dir, mlx_dir = tiny_model
    out = convert(hf_dir, tmp_path / dtype, dtype=dtype, fmt="npz", verbose=False)
    stored = mx.load(str(out / "weights.npz"))
    assert {v.dtype for v in stored.values()} == {getattr(mx, dtype)}
    # on the CPU a half-precision model is widened by default (no BLAS path for fp16 there) ...
    assert load_mlx_processor(out).model.dtype == (mx.float32 if mx.default_device() == mx.cpu else getattr(mx, dtype))
    # ... and computes in half precision when asked to
    half = load_mlx_processor(out, dtype=dtype)
    full = load_mlx_processor(mlx_dir)
    assert half.model.dtype == getattr(mx, dtype)
    px = full(F.random_images(2))["pixel_values"]
    ids = mx.array([[2, 5, 9, 14]])
    a = np.array(full.model(px[:1], ids))
    b = np.array(half.model(px[:1], ids).astype(mx.float32))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > (0.995 if dtype == "float16" else 0.98)  # bf16: 8-bit mantissa
    assert isinstance(half.process_image(F.random_images(1)[0], max_new_tokens=8), str)


def test_load_dtype_override(tiny_model):
    _, mlx_dir = tiny_model
    assert load_mlx_processor(mlx_dir, dtype="bfloat16").model.dtype == mx.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_mlx_processor(mlx_dir, dtype="float8")


def test_processor_accepts_paths_arrays_and_modes(tiny_model, tmp_path):
    from PIL import Image

    _, mlx_dir = tiny_model
    proc = load_mlx_processor(mlx_dir)
    img = F.random_images(1, seed=9)[0]
    img.save(tmp_path / "line.png")
    expected = proc.process_image(img, max_new_tokens=10)
    assert proc.process_image(tmp_path / "line.png", max_new_tokens=10) == expected
    assert proc.process_image(np.asarray(img), max_new_tokens=10) == expected
    rgba = img.convert("RGBA")
    assert proc.process_image(rgba, max_new_tokens=10) == expected  # opaque alpha: same pixels
    gray = img.convert("L")
    assert proc.process_image(np.asarray(gray), max_new_tokens=10) == proc.process_image(gray.convert("RGB"), max_new_tokens=10)
    with pytest.raises(ValueError, match="missing.png"):
        proc.process_image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="unknown generation option"):
        proc.process_image(img, max_tokens=3)
    assert Image.open(tmp_path / "line.png").size == img.size


def test_generation_config_defaults_from_checkpoint(tiny_model, tmp_path):
    import shutil

    _, mlx_dir = tiny_model
    copy = tmp_path / "m"
    shutil.copytree(mlx_dir, copy)
    gen = json.loads((copy / "generation_config.json").read_text())
    gen["max_length"] = 6
    (copy / "generation_config.json").write_text(json.dumps(gen))
    proc = load_mlx_processor(copy)
    ids = proc.generate(proc(F.random_images(1))["pixel_values"])
    assert len(ids[0]) == 6  # start token + 5, from the checkpoint's generation config
    assert len(proc.generate(proc(F.random_images(1))["pixel_values"], max_length=9)[0]) == 9


@pytest.mark.slow
def test_real_trocr_base_architecture(tmp_path):
    """The real trocr-base size (ViT-base 384, 12-layer d_model 1024 decoder, vocab 50265) converts and
    decodes greedily to the same tokens and text as transformers."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import TrOCRConfig as HFTrOCRConfig, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel
    from transformers import AutoTokenizer

    enc = ViTConfig(image_size=384, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072)
    dec = HFTrOCRConfig(vocab_size=50265, d_model=1024, decoder_layers=12, decoder_attention_heads=16,
                        decoder_ffn_dim=4096, cross_attention_hidden_size=768, activation_function="gelu",
                        scale_embedding=False, layernorm_embedding=True, use_learned_position_embeddings=True,
                        tie_word_embeddings=False)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 1, 2
    torch.manual_seed(0)
    hf_model = F._spread_weights(VisionEncoderDecoderModel(cfg), seed=0, std=0.05).eval()
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(hf_dir)
    # a 50265-entry vocabulary (decode only needs id -> string)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    vocab.update({f"w{i} ": i for i in range(4, 50265)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    tok.decoder = decoders.Fuse()
    tok.save(str(hf_dir / "tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": "</s>", "pad_token": "<pad>"}))
    F.write_preprocessor(hf_dir, 384, legacy=True)
    images = F.random_images(2, seed=5)
    reloaded = VisionEncoderDecoderModel.from_pretrained(hf_dir).eval()
    ref, out = hf_generate_texts(reloaded, hf_dir, images, max_new_tokens=NEW_TOKENS)
    del reloaded, hf_model
    proc = load_mlx_processor(convert(hf_dir, tmp_path / "mlx", verbose=False))
    ids = proc.generate(proc(images)["pixel_values"], max_new_tokens=NEW_TOKENS)
    assert ids == [list(map(int, r)) for r in out.tolist()]
    assert len(ids[0]) > 10
    assert proc.process_batch(images, max_new_tokens=NEW_TOKENS, show_progress=False) == ref
    assert AutoTokenizer.from_pretrained(hf_dir).batch_decode(ids, skip_special_tokens=True) == ref


def test_gelu_matches_transformers_over_its_range():
    """"gelu" (exact erf) as torch computes it, also where the CPU path replaces MLX's erf kernel: within
    1.5e-6 (the rational erf's 1e-7 near +-1, times x in the far negative tail, where gelu is ~0)."""
    import math

    from scripts import mlx_models as M

    x = np.linspace(-12, 12, 240_001, dtype=np.float32)
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(M.activation("gelu")(mx.array(x))), ref, rtol=2e-6, atol=1.5e-6)
    erf = np.array(M._erf_rational(mx.array(x[::40])))
    np.testing.assert_allclose(erf, [math.erf(v) for v in x[::40].tolist()], rtol=0, atol=5e-7)

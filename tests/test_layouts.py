"""Every checkpoint layout transformers writes now or has written converts, and gives transformers' tokens and texts.

Each folder is made the way a user gets it: through the public save_pretrained of the installed transformers
(model and TrOCRProcessor), or by hand in the layouts of older versions and of the hub's microsoft/trocr-*
(preprocessor_config.json with "size": 384, vocab.json + merges.txt, sentencepiece.bpe.model,
pytorch_model.bin with pre-5.x names, sharded weights). The reference is transformers itself reading the
same folder (VisionEncoderDecoderModel + TrOCRProcessor.from_pretrained).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import hf_fixtures as F
from scripts.convert_trocr_to_mlx import convert
from scripts.mlx_processor import load_mlx_processor

NEW_TOKENS = 12


def char_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=F.build_char_tokenizer(), bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def saved_by_transformers(folder):
    """model.save_pretrained + TrOCRProcessor.save_pretrained (ViT): the layout today's fine-tunes have."""
    model = F.make_model("base", seed=3)
    model.save_pretrained(folder)
    F.trocr_processor(32).save_pretrained(folder)


def saved_by_transformers_deit(folder):
    """A DeiT encoder with transformers' DeiTImageProcessor (resize, then center crop), tied output."""
    model = F.make_model("small", seed=3)
    model.save_pretrained(folder)
    F.trocr_processor(32, kind="deit-crop").save_pretrained(folder)


def sharded_safetensors(folder):
    model = F.make_model("base", seed=3)
    model.save_pretrained(folder, max_shard_size="40KB")
    F.trocr_processor(32).save_pretrained(folder)
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 2 and not (folder / "model.safetensors").exists()


def hub_trocr_base(folder):
    """microsoft/trocr-base-*: pytorch_model.bin (pre-5.x names), vocab.json + merges.txt, "size": 384."""
    folder.mkdir(parents=True)
    model = F.make_model("base", seed=3, vocab_size=F.save_roberta_bpe(folder))
    model.save_pretrained(folder)
    F.save_legacy_bin(model, folder)
    F.write_preprocessor(folder, 32, legacy=True)


def hub_trocr_small_sharded_bin(folder):
    """microsoft/trocr-small-* tokenizer (sentencepiece.bpe.model, XLM-R), DeiT encoder, sharded .bin."""
    vocab = F.save_sentencepiece(folder)
    model = F.make_model("small", seed=3, vocab_size=vocab)
    model.save_pretrained(folder)
    shards = F.save_legacy_bin(model, folder, shard_bytes=40_000)
    assert len(shards) > 2
    F.write_preprocessor(folder, 32, legacy=True)


def transformers_4_layout(folder):
    """transformers 4.x: preprocessor_config.json with {"height", "width"}, tokenizer.json, pytorch_model.bin."""
    model = F.make_model("nonsquare", seed=3)
    model.save_pretrained(folder)
    F.save_legacy_bin(model, folder, legacy_names=False)
    char_tokenizer().save_pretrained(folder)
    F.write_preprocessor(folder, (32, 96))


def deit_shortest_edge(folder):
    """A DeiT processor that keeps the aspect ratio (shortest edge 36) and center-crops to the model's 32x32."""
    model = F.make_model("small", seed=3)
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "DeiTImageProcessor", "size": {"shortest_edge": 36}, "crop_size": 32,
         "processor_class": "TrOCRProcessor"}))


LAYOUTS = [saved_by_transformers, saved_by_transformers_deit, sharded_safetensors, hub_trocr_base,
           hub_trocr_small_sharded_bin, transformers_4_layout, deit_shortest_edge]


@pytest.mark.parametrize("layout", LAYOUTS, ids=[f.__name__ for f in LAYOUTS])
def test_layout_converts_with_transformers_tokens_and_texts(layout, tmp_path):
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    hf_dir = tmp_path / "hf"
    layout(hf_dir)
    images = F.random_images(3, seed=11)
    hf_processor = TrOCRProcessor.from_pretrained(hf_dir)
    hf_model = VisionEncoderDecoderModel.from_pretrained(hf_dir).eval()
    pixels = hf_processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        ref_ids = hf_model.generate(pixels, do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS)
    ref_texts = hf_processor.batch_decode(ref_ids, skip_special_tokens=True)
    assert ref_ids.shape[1] == NEW_TOKENS + 1 and any(ref_texts), "the fixture should read a full, non-empty text"

    proc = load_mlx_processor(convert(hf_dir, tmp_path / "mlx", verbose=False))
    ours = proc.preprocess(images)
    np.testing.assert_allclose(ours, pixels.permute(0, 2, 3, 1).numpy(), atol=1e-6, rtol=0)
    ids = proc.generate(ours, max_new_tokens=NEW_TOKENS)
    assert ids == [list(map(int, row)) for row in ref_ids.tolist()]
    assert proc.batch_decode(ids) == ref_texts
    assert proc.process_batch(images, max_new_tokens=NEW_TOKENS, show_progress=False) == ref_texts
    # ids for text (the trainer's labels) as transformers' tokenizer gives them
    for text in F.CORPUS[:8]:
        assert proc.text.encode(text) == hf_processor.tokenizer(text).input_ids


def test_today_save_pretrained_layout_is_the_one_tested(tmp_path):
    """Says which layout the installed transformers writes, so a change of it shows up here first."""
    import transformers

    saved_by_transformers(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "processor_config.json" in names or "preprocessor_config.json" in names, names
    if transformers.__version__.startswith("5.2"):
        assert "processor_config.json" in names and "preprocessor_config.json" not in names


# --------------------------------------------------------------------------------------------------
# Layouts we cannot read: an error that names the file and says what was expected
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def good(tmp_path):
    folder = tmp_path / "hf"
    saved_by_transformers(folder)
    return folder


def test_no_image_settings_is_named(good, tmp_path):
    (good / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"processor_config\.json.*preprocessor_config\.json"):
        convert(good, tmp_path / "mlx", verbose=False)


@pytest.mark.parametrize("settings, message", [
    ({"image_processor_type": "CLIPImageProcessor", "size": 32}, r"'CLIPImageProcessor' is not supported.*ViTImageProcessor"),
    ({"processor_class": "TrOCRProcessor", "size": 32}, r"None is not supported.*image_processor_type"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"longest_edge": 32}}, r"size .* is not supported"),
    ({"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 32}}, r"depends on the input.*32x32"),
    ({"image_processor_type": "ViTImageProcessor", "size": 48}, r"gives 48x48 images.*takes 32x32"),
    ({"image_processor_type": "DeiTImageProcessor", "size": 32}, r"center crop 224x224.*gives 224x224"),
])
def test_unreadable_image_settings_are_named(good, tmp_path, settings, message):
    (good / "processor_config.json").write_text(json.dumps({"image_processor": settings}))
    with pytest.raises(ValueError, match=r"processor_config\.json.*" + message):
        convert(good, tmp_path / "mlx", verbose=False)


def test_unreadable_weights_are_named(good, tmp_path):
    weights = good / "model.safetensors"
    weights.rename(good / "tf_model.h5")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin.*tf_model\.h5"):
        convert(good, tmp_path / "a", verbose=False)
    (good / "tf_model.h5").rename(weights)
    weights.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot read"):
        convert(good, tmp_path / "b", verbose=False)


def test_sharded_index_with_a_missing_shard_is_named(tmp_path):
    folder = tmp_path / "hf"
    sharded_safetensors(folder)
    victim = sorted(folder.glob("model-*-of-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"model\.safetensors\.index\.json.*{victim.name}"):
        convert(folder, tmp_path / "mlx", verbose=False)
    (folder / "model.safetensors.index.json").write_text("{")
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: not valid JSON"):
        convert(folder, tmp_path / "mlx", verbose=False)


def test_no_tokenizer_is_named(good, tmp_path):
    (good / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json.*vocab\.json \+ merges\.txt.*sentencepiece\.bpe\.model"):
        convert(good, tmp_path / "mlx", verbose=False)


# --------------------------------------------------------------------------------------------------
# Without transformers (./setup_mlx.sh --mlx-only): what can be read safely is, the rest says why not
# --------------------------------------------------------------------------------------------------


def test_conversion_without_transformers(tmp_path, monkeypatch, capsys):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from scripts import convert_trocr_to_mlx as C

    monkeypatch.setattr(C, "installed_transformers", lambda: None)
    # today's layout: tokenizer.json is copied, the image settings read by our own parser
    saved_by_transformers(tmp_path / "today")
    out = convert(tmp_path / "today", tmp_path / "today_mlx")
    assert "not cross-checked" in capsys.readouterr().out
    assert json.loads((out / "processor" / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}
    # vocab.json + merges.txt: rebuilt with the tokenizers library, same ids and texts as transformers
    hub_trocr_base(tmp_path / "hub")
    shutil.copy(tmp_path / "hub" / "pytorch_model.bin", tmp_path / "keep.bin")  # .bin needs torch, which is here
    out = convert(tmp_path / "hub", tmp_path / "hub_mlx", verbose=False)
    rebuilt = Tokenizer.from_file(str(out / "processor" / "tokenizer.json"))
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hub")
    for text in F.CORPUS[:8]:
        ids = hf_tok(text).input_ids
        assert rebuilt.encode(text).ids == ids
        assert rebuilt.decode(ids, skip_special_tokens=True) == hf_tok.decode(ids, skip_special_tokens=True)
    # a sentencepiece model cannot be turned into tokenizer.json without transformers: say so
    hub_trocr_small_sharded_bin(tmp_path / "small")
    with pytest.raises(RuntimeError, match=r"sentencepiece\.bpe\.model.*transformers"):
        convert(tmp_path / "small", tmp_path / "small_mlx", verbose=False)

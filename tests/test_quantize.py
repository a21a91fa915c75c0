"""Quantized conversion (--quantize 8|4): the folder says what it holds, loads everywhere a model loads,
reads, is smaller, and at 8 bits stays close to the float model's logits."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import hf_fixtures as F
from scripts.convert_trocr_to_mlx import convert, main
from scripts.mlx_models import load_model
from scripts.mlx_processor import load_mlx_processor


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(float, 8-bit, 4-bit) MLX folders of one tiny checkpoint whose widths are all multiples of 32."""
    root = tmp_path_factory.mktemp("quantized")
    hf = F.save_checkpoint(F.make_model("nonsquare", seed=4, std=0.1), root / "hf")
    return (convert(hf, root / "float", verbose=False),
            convert(hf, root / "q8", quantize=8, group_size=32, verbose=False),
            convert(hf, root / "q4", quantize=4, group_size=32, verbose=False))


def weight_bytes(folder):
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def test_quantized_folder_describes_itself_and_is_smaller(folders):
    flt, q8, q4 = folders
    for folder, bits in ((q8, 8), (q4, 4)):
        q = json.loads((folder / "config.json").read_text())["quantization"]
        assert (q["bits"], q["group_size"], q["mode"]) == (bits, 32, "affine")
        assert "token embedding" in q["float"] and "layer norms" in q["float"]
        assert not [p for p in q["float"] if "not a multiple" in p], "every Linear here divides into groups"
        stored = mx.load(str(folder / "model.safetensors"))
        # transformers' separate q/k/v names on disk, quantized
        assert stored["decoder.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
        assert "decoder.layers.0.self_attn.q_proj.scales" in stored
        assert not [k for k in stored if "qkv_proj" in k]
        assert stored["decoder.embed_tokens.weight"].dtype == mx.float32
    assert weight_bytes(q4) < weight_bytes(q8) < weight_bytes(flt)


def test_quantized_model_loads_quantized_layers(folders):
    _, q8, _ = folders
    model = load_model(q8)
    linears = [(p, m) for p, m in model.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))]
    assert linears and all(isinstance(m, nn.QuantizedLinear) for _, m in linears)
    assert model.decoder.layers[0].self_attn.qkv_proj.bits == 8
    assert isinstance(model.decoder.embed_tokens, nn.Embedding)


def test_quantized_models_read_and_8_bit_stays_close(folders):
    flt, q8, q4 = folders
    images = F.random_images(3, seed=5)
    procs = [load_mlx_processor(f) for f in folders]
    texts = [p.process_batch(images, batch_size=2, max_new_tokens=8, show_progress=False) for p in procs]
    assert all(len(t) == 3 and all(isinstance(s, str) for s in t) for t in texts)
    # teacher-forced logits: 8-bit within a few percent of the float model's spread; 4-bit further off
    pixels = procs[0](images)["pixel_values"]
    ids = mx.array([[2, 5, 9, 14, 7, 30, 11, 8]] * 3)
    ref = np.array(procs[0].model(pixels, ids))
    err8 = np.abs(np.array(procs[1].model(pixels, ids)) - ref).max() / ref.std()
    err4 = np.abs(np.array(procs[2].model(pixels, ids)) - ref).max() / ref.std()
    assert err8 < 0.05, err8
    assert err8 < err4


def test_quantized_model_refuses_transformers_export(folders, tmp_path):
    from scripts.mlx_trainer import export_hf

    with pytest.raises(ValueError, match="quantized"):
        export_hf(folders[1], tmp_path / "hf")


def test_converter_cli_quantizes(tmp_path, capsys):
    hf = F.save_checkpoint(F.make_model("nonsquare", seed=6), tmp_path / "hf")
    assert main(["--input", str(hf), "--output", str(tmp_path / "q"), "--quantize", "4", "--group-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "quantized to 4 bits" in out and "left in float" in out
    with pytest.raises(SystemExit):
        main(["--input", str(hf), "--output", str(tmp_path / "x"), "--quantize", "3"])

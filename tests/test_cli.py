"""The inference and inspection CLIs: output on good input, clear errors on bad input."""

import json

from PIL import Image

import hf_fixtures as F


def test_mlx_inference_prints_text_and_time(tiny_model, tmp_path, capsys):
    from scripts.mlx_inference import main
    from scripts.mlx_processor import load_mlx_processor

    _, mlx_dir = tiny_model
    img = F.random_images(1, seed=11)[0]
    img.save(tmp_path / "a.png")
    assert main(["--model", str(mlx_dir), "--image", str(tmp_path / "a.png"), "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    expected = load_mlx_processor(mlx_dir).process_image(img, max_new_tokens=12)
    assert f"{tmp_path / 'a.png'}\t{expected}\t(" in out


def test_mlx_inference_errors(tiny_model, tmp_path, capsys):
    from scripts.mlx_inference import main

    _, mlx_dir = tiny_model
    assert main(["--model", str(tmp_path / "no_model"), "--image", "x.png"]) == 2
    assert "no_model" in capsys.readouterr().err
    F.random_images(1)[0].save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_text("not an image")
    code = main(["--model", str(mlx_dir), "--image", str(tmp_path / "ok.png"), str(tmp_path / "bad.png"),
                 str(tmp_path / "gone.png"), "--json", "--max-new-tokens", "4"])
    captured = capsys.readouterr()
    assert code == 1
    rows = json.loads(captured.out)["results"]
    assert [bool(r["error"]) for r in rows] == [False, True, True]
    assert "bad.png: not an image" in rows[1]["error"] and "gone.png: file not found" in rows[2]["error"]


def test_inspect_writes_architecture_info(tiny_model, tmp_path):
    from scripts import inspect_trocr_model as inspect_module
    from scripts.inspect_trocr_model import inspect

    hf_dir, _ = tiny_model
    info = inspect(str(hf_dir), tmp_path / "pytorch")
    saved = tmp_path / "pytorch" / hf_dir.name
    on_disk = json.loads((saved / "architecture_info.json").read_text())
    assert on_disk["encoder"]["type"] == "vit" and on_disk["decoder"]["d_model"] == 64
    assert on_disk["decoder"]["vocab_size"] == F.VOCAB
    assert on_disk["parameters"]["total"] == sum(on_disk["parameters"][k] for k in ("encoder", "decoder", "enc_to_dec_proj"))
    assert isinstance(info["test_inference"]["text"], str)
    assert (saved / "config.json").exists()
    # what the installed transformers writes, and that converts to the same text
    from transformers import TrOCRProcessor

    from transformers import VisionEncoderDecoderModel

    processor = TrOCRProcessor.from_pretrained(saved)
    assert processor.image_processor.to_dict() == TrOCRProcessor.from_pretrained(hf_dir).image_processor.to_dict()
    ref = tmp_path / "ref"
    VisionEncoderDecoderModel.from_pretrained(hf_dir).save_pretrained(ref)
    TrOCRProcessor.from_pretrained(hf_dir).save_pretrained(ref)
    assert sorted(p.name for p in saved.iterdir()) == sorted([p.name for p in ref.iterdir()] + ["architecture_info.json"])
    from scripts.convert_trocr_to_mlx import convert
    from scripts.mlx_processor import load_mlx_processor

    proc = load_mlx_processor(convert(saved, tmp_path / "mlx", verbose=False))
    assert proc.process_image(inspect_module.sample_line_image(), max_new_tokens=32) == info["test_inference"]["text"]


def test_inspect_offline_hub_id_says_so(tmp_path, monkeypatch, capsys):
    from scripts.inspect_trocr_model import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    assert main(["--model", "microsoft/trocr-base-handwritten", "--output-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "microsoft/trocr-base-handwritten" in err and "offline" in err

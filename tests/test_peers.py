"""evaluate_peers: scoring with plug-in recognizers, and the real tesseract / rapidocr engines on a few lines."""

import json
import shutil

import pytest
from scripts import evaluate_peers as ep
from scripts import synth_data as sd


@pytest.fixture(scope="module")
def printed_lines(tmp_path_factory):
    """Five clean printed lines (matplotlib's DejaVuSans, always available) and their manifest path."""
    out = tmp_path_factory.mktemp("peers")
    sd.make_dataset(out, 5, seed=11, fonts={sd.FALLBACK_FONT: "printed"}, kinds=["name", "date", "amount", "phone"],
                    strength=0.0, progress=False)
    return out / "manifest.csv"


def test_evaluate_scores_plugged_in_recognizers(printed_lines):
    rows = sd.read_manifest(printed_lines)
    answers = iter(r["text"] for r in rows)

    def oracle(images):  # lines arrive in manifest order, so it can hand back the right answers in turn
        return [next(answers) for _ in images]

    def blank(images):
        return ["" for _ in images]

    report = ep.evaluate(printed_lines, {"oracle": oracle, "blank": blank}, batch_size=2, progress=False)
    assert report["n_lines"] == 5 and report["references"] == [r["text"] for r in rows]
    assert report["results"]["oracle"]["overall"]["cer"] == 0.0
    assert report["results"]["blank"]["overall"]["cer"] == 1.0
    assert report["results"]["blank"]["by_style"]["printed"]["n"] == 5
    assert set(report["results"]["oracle"]["by_font"]) == {"DejaVuSans"}
    assert report["predictions"]["oracle"] == report["references"]
    table = ep.format_report(report)
    assert "oracle" in table and "blank" in table and "DejaVuSans" in table


def test_evaluate_rejects_a_recognizer_that_drops_lines(printed_lines):
    with pytest.raises(ValueError, match="returned 1 texts for 5 images"):
        ep.evaluate(printed_lines, {"short": lambda images: ["x"]}, batch_size=8, progress=False)


@pytest.mark.skipif(shutil.which("tesseract") is None,
                    reason="tesseract binary not installed (apt-get install tesseract-ocr tesseract-ocr-spa, "
                           "or ./setup_mlx.sh --eval)")
def test_tesseract_reads_clean_printed_lines(printed_lines, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    assert ep.main([str(printed_lines), "--engines", "tesseract", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["results"]["tesseract"]["overall"]["n"] == 5
    assert report["results"]["tesseract"]["overall"]["cer"] < 0.15, report["predictions"]["tesseract"]
    assert "tesseract" in capsys.readouterr().out


def test_rapidocr_reads_clean_printed_lines(printed_lines):
    pytest.importorskip("rapidocr", reason="rapidocr not installed (pip install -r requirements-eval.txt)")
    report = ep.evaluate(printed_lines, {"rapidocr": ep.rapidocr_recognizer()}, progress=False)
    assert report["results"]["rapidocr"]["overall"]["cer"] < 0.15, report["predictions"]["rapidocr"]


def test_unknown_engine_is_rejected():
    with pytest.raises(ValueError, match="unknown engine"):
        ep.make_recognizer("abbyy")


def test_evaluate_model_reads_with_the_models_beam_width(tiny_model, tmp_path):
    """scripts/evaluate_model.py reads as the handlers do: the beam width of the model's
    generation_config.json unless --num-beams is given."""
    import json
    import shutil

    import hf_fixtures as F
    from scripts.evaluate_model import mlx_recognizer
    from scripts.mlx_processor import load_mlx_processor

    model = tmp_path / "model"
    shutil.copytree(tiny_model[1], model)
    gen_path = model / "generation_config.json"
    gen_path.write_text(json.dumps({**json.loads(gen_path.read_text()), "num_beams": 3, "max_length": 8}))
    images = F.random_images(6, seed=5)
    proc = load_mlx_processor(model)
    beams = proc.process_batch(images, batch_size=32, show_progress=False, num_beams=3)
    greedy = proc.process_batch(images, batch_size=32, show_progress=False, num_beams=1)
    assert beams != greedy  # else this test could not tell the two apart
    assert list(mlx_recognizer(model)(images)) == beams
    assert list(mlx_recognizer(model, num_beams=1)(images)) == greedy

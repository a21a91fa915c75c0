"""The MLX-vs-PyTorch benchmark on a tiny real checkpoint: both engines run, outputs have the seeds' keys."""

import json

import hf_fixtures as F


def test_benchmark_reports_both_frameworks_and_agreement(tiny_model, tmp_path, capsys):
    from scripts.benchmark_pytorch_vs_mlx import main

    hf_dir, mlx_dir = tiny_model
    paths = []
    for i, img in enumerate(F.random_images(3, seed=21)):
        paths.append(str(tmp_path / f"line{i}.png"))
        img.save(paths[-1])
    out = tmp_path / "bench.json"
    assert main(["--pytorch-model", str(hf_dir), "--mlx-model", str(mlx_dir), "--images", *paths,
                 "--max-length", "12", "--batch-sizes", "1,2", "--warmup", "0", "--repeats", "1",
                 "--quantize", "8", "--group-size", "32", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    for side in ("pytorch", "mlx"):
        assert result[side]["load_time"] > 0
        assert result[side]["inference"]["avg_time"] > 0 and result[side]["inference"]["throughput"] > 0
    acc = result["accuracy"]
    # float32, same checkpoint: the two frameworks must agree on every line
    assert (acc["exact_matches"], acc["total"], acc["match_rate"]) == (3, 3, 1.0)
    assert (tmp_path / "bench.png").stat().st_size > 0
    q8 = result["mlx_q8"]
    assert q8["bits"] == 8 and 0 < q8["weight_mb"] < result["mlx"]["weight_mb"]
    assert q8["inference"]["per_batch_size"]["2"]["throughput"] > 0
    assert q8["agreement_vs_mlx_float"]["total"] == 3
    printed = capsys.readouterr().out
    assert "MLX/PyTorch" in printed and "8-bit, group 32" in printed

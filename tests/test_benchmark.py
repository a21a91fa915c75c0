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


def test_gpu_bench_summary_reads_the_quantized_run_and_failed_worker_counts(tmp_path):
    """dev/gpu_bench_summary.py: float rows from bench_gpu.json, quantized rows from bench_gpu_q.json (each against
    its own file's float MLX, with the random-weights caveat), a failed worker count shown as failed."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev"))
    import gpu_bench_summary

    def side(rates, **extra):
        return {"inference": {"per_batch_size": {str(b): {"throughput": r} for b, r in rates.items()}}, **extra}

    def bench(pt, ml, **extra):
        return {"config": {"dtype": "float16", "new_tokens": 20, "random_trocr_base": True},
                "environment": {"date": "D", "gpu": "G", "mlx": "m", "torch": "t", "transformers": "tf"},
                "pytorch": side(pt), "mlx": side(ml, weight_mb=734.0), **extra}

    (tmp_path / "bench_gpu.json").write_text(json.dumps(bench({1: 5.0, 128: 480.0}, {1: 12.0, 128: 215.0},
                                                              partial=True)))
    q8 = side({1: 14.0, 32: 133.0}, bits=8, group_size=64, weight_mb=437.7,
              agreement_vs_mlx_float={"exact_matches": 1, "total": 32})
    (tmp_path / "bench_gpu_q.json").write_text(json.dumps(bench({1: 4.9, 32: 172.0}, {1: 13.7, 32: 177.5},
                                                                mlx_q8=q8)))
    (tmp_path / "bench_workers.json").write_text(json.dumps({"batch_size": 128, "lines": 1024, "complete": True, "results": [
        {"setting": "1 worker (plain run)", "lines": 1024, "lines_per_s": 150.0},
        {"setting": "4 workers", "lines": 1024, "failed_lines": 1024, "error": "worker 2 died"}]}))
    text = "\n".join(gpu_bench_summary.summarize(tmp_path))
    assert "(PARTIAL run)" in text and "   128        480.00    215.00        0.45x" in text
    assert "MLX 8-bit (group 64, 438 MB vs 734 MB float): b1 14.0 (1.02x float), b32 133.0 (0.75x float)" in text
    assert "says nothing about a trained model" in text
    assert "4 workers: FAILED (1024 of 1024 lines): worker 2 died" in text
    assert "best aggregate: MLX 215.0 lines/s (MLX, 1 process, batch 128, bench_gpu) vs transformers 480.0" in text


def test_gpu_compare_commits_runs_each_staged_tree_in_turn(tmp_path):
    """dev/gpu_compare_commits.sh: refuses unstaged commits; runs every staged tree, then the current one,
    once per pass, each from its own root, passing BATCHES through (a stand-in for python records the runs)."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = root / "dev" / "gpu_compare_commits.sh"
    rev = "pytest-compare-tree"
    old = root / ".old" / rev
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "  mlx      batch  32: $PWD $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "OUT": str(tmp_path), "BATCHES": "32", "PASSES": "2"}

    missing = subprocess.run(["bash", str(script), rev], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and f".old/{rev} missing" in missing.stderr
    assert subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True).returncode == 2

    (old / "scripts").mkdir(parents=True, exist_ok=True)  # what --stage writes (scripts/ only)
    try:
        run = subprocess.run(["bash", str(script), rev], env=env, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(old)
    lines = run.stdout.splitlines()
    assert run.returncode == 0
    assert [l for l in lines if l.startswith("==")] == [f"== {rev}, pass 1", "== now, pass 1",
                                                        f"== {rev}, pass 2", "== now, pass 2"]
    runs = [l for l in lines if l.startswith("  mlx")]
    assert len(runs) == 4 and all("--batch-sizes 32 " in l for l in runs)
    assert runs[0].split()[3] == str(old) and runs[1].split()[3] == str(root)
    assert f"compare_{rev}_2.json" in runs[2] and "compare_now_2.json" in runs[3]

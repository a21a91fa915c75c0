"""The batch processor on several worker processes and on a local Ray cluster: the same rows in the same
order as one process, resume after a kill, unreadable files as failed rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from scripts.mlx_batch_processor import MLXBatchProcessor, format_rows, main
from test_batch_processor import (BAD, SCRIPT, _data_rows, _many_images, _read, collection, full_run,  # noqa: F401
                                  mlx_model)

SAME = ("image_name", "image_path", "text", "success", "error")  # what must not depend on how it ran


def _same(rows):
    return [tuple(r[c] for c in SAME) for r in rows]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie that its (dead) parent no longer reaps counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _wait_rows(out: Path, proc: subprocess.Popen, rows: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _data_rows(out) < rows and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------


def test_two_workers_give_the_rows_of_one_process_in_input_order(full_run, mlx_model, collection, tmp_path):
    whole = _read(full_run[2])
    out = tmp_path / "w2.csv"
    assert main(["--directory", str(collection), "--recursive", "--model", str(mlx_model), "--batch-size", "2",
                 "--workers", "2", "--output-csv", str(out), "--no-progress"]) == 0
    rows = _read(out)
    assert _same(rows) == _same(whole)
    assert sum(r["success"] == "False" for r in rows) == len(BAD)
    meta = json.loads(out.with_suffix(".json").read_text())["metadata"]
    assert meta["workers"] == "2 worker processes"
    assert len({e["pid"] for e in meta["engines"]}) == 2
    assert meta["generation"]["max_length"] == 64 and meta["model_config"]["dtype"]


def test_worker_pool_library_api_and_resume_of_pages(full_run, mlx_model, collection, tmp_path):
    whole = _read(full_run[2])
    keep = [r for r in whole if r["image_name"] in ("a.png", "multi.tif[page 2]", "empty.png")]
    out = tmp_path / "partial.csv"
    out.write_text(format_rows(keep, header=True))
    with MLXBatchProcessor(mlx_model, batch_size=3, workers=2) as proc:
        assert proc.processor is None and len(proc.engines()) == 2
        new = proc.process_directory(collection, pattern=None, recursive=True, output_csv=out, resume=True,
                                     show_progress=False)
        assert len(new) == len(whole) - 3 and "multi.tif[page 2]" not in {r["image_name"] for r in new}
        assert Counter(_same(_read(out))) == Counter(_same(whole))
        # the same pool again, in memory: every row, in input order
        again = proc.process_directory(collection, pattern=None, recursive=True, show_progress=False)
    assert [(r["image_name"], r["text"]) for r in again] == [(r["image_name"], r["text"]) for r in whole]


def test_worker_that_cannot_load_the_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        MLXBatchProcessor(missing, workers=2)
    assert main(["--images", "x.png", "--model", str(missing), "--workers", "2",
                 "--output-csv", str(tmp_path / "x.csv")]) == 2


def test_workers_sigkill_mid_run_then_resume(mlx_model, tmp_path):
    n = 60
    images = _many_images(tmp_path / "lines", n)
    out = tmp_path / "run.csv"
    cmd = [sys.executable, str(SCRIPT), "--directory", str(tmp_path / "lines"), "--model", str(mlx_model),
           "--batch-size", "1", "--workers", "2", "--output-csv", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_rows(out, proc, 5)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone: its workers must notice and stop
        proc.wait()
        deadline = time.time() + 30
        while not all(_gone(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert workers and all(_gone(w) for w in workers), "worker processes outlived the killed parent"
    finally:
        _kill_group(proc)
    before = _data_rows(out)
    assert 5 <= before < n, f"kill landed outside the run ({before} rows)"
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = _read(out)
    assert [r["image_path"] for r in rows] == [str(p) for p in images]  # no gaps, no duplicates, in order
    assert all(r["success"] == "True" for r in rows)
    assert f"{before} were already done" in res.stdout


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------


def test_ray_local_cluster_kill_and_resume_gives_the_plain_run(mlx_model, collection, tmp_path):
    """A local Ray cluster (2 CPUs, small object store) over the mixed collection (odd modes, a 3-page TIFF,
    three unreadable files) plus 40 lines: killed mid-run with all its Ray processes, then --resume on a
    new cluster. The CSV is then exactly the plain one-process run: same rows, texts and failed rows, in
    the same order, once each."""
    pytest.importorskip("ray.data", reason="Ray is not installed (./setup_mlx.sh --ray installs it)")
    lines = _many_images(tmp_path / "lines", 40)
    manifest = tmp_path / "lines.txt"
    manifest.write_text("".join(f"{p}\n" for p in lines))
    inputs = ["--directory", str(collection), "--recursive", "--manifest", str(manifest), "--model", str(mlx_model),
              "--batch-size", "2", "--no-progress"]
    plain = tmp_path / "plain.csv"
    assert main(inputs + ["--output-csv", str(plain)]) == 0
    expected = _read(plain)

    out = tmp_path / "ray.csv"
    cmd = [sys.executable, str(SCRIPT), *inputs, "--ray", "--ray-num-cpus", "2", "--ray-object-store-mb", "100",
           "--ray-files-per-call", "2", "--output-csv", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_rows(out, proc, 4, timeout=240)
    finally:
        _kill_group(proc)  # the driver and the local cluster it started, at once
    before = _data_rows(out)
    assert 4 <= before < len(expected), f"kill landed outside the run ({before} rows)"
    assert _same(_read(out)) == _same(expected[:before])  # written in input order

    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr
    rows = _read(out)
    assert _same(rows) == _same(expected)
    failed = {r["image_name"]: r["error"] for r in rows if r["success"] == "False"}
    assert set(failed) == set(BAD) and all(reason in failed[name] for name, reason in BAD.items())
    assert f"{before} were already done" in res.stdout
    meta = json.loads(out.with_suffix(".json").read_text())["metadata"]
    assert meta["workers"].startswith("Ray (a local cluster): 2 actors") and meta["total_images"] == len(expected)


# --------------------------------------------------------------------------------------------------
# The workers benchmark (dev/bench_workers.py), with tiny settings
# --------------------------------------------------------------------------------------------------


def test_bench_workers_logic_on_a_tiny_random_model(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev"))
    import bench_workers

    tiny = dict(image_size=(32, 64), patch_size=(16, 16), encoder_hidden=32, encoder_layers=1, encoder_heads=2,
                encoder_mlp=64, decoder_d_model=32, decoder_layers=1, decoder_heads=2, decoder_ffn=64,
                max_positions=64)
    model = bench_workers.random_model_folder(tmp_path / "model", vocab_size=300, **tiny)
    out = tmp_path / "bench.json"
    assert bench_workers.main(["--model", str(model), "--lines", "6", "--workers", "1,2", "--batch-size", "2",
                               "--new-tokens", "4", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["setting"] for r in doc["results"]] == ["1 worker (plain run)", "2 workers"]
    assert [r["processes"] for r in doc["results"]] == [1, 2]
    assert all(r["lines"] == 6 and r["lines_per_s"] > 0 and r["same_texts_as_first"] == 6 for r in doc["results"])
    assert doc["results"][0]["speedup"] == 1.0 and doc["new_tokens"] == 4
    assert doc["environment"]["cpu"] and "load_average" in doc["environment"]
    assert "| 2 workers |" in capsys.readouterr().out
    assert doc["complete"] is True



def test_bench_workers_keeps_rows_of_a_failing_and_a_crashing_setting(tmp_path, monkeypatch):
    """A worker count that fails (the H200 at 4 workers, batch 128: crashed workers, every line failed) is a row
    with its error and the next count still runs; the JSON is rewritten after every count, so a run killed in
    a later one keeps the earlier rows. Building the random model folder does not import the trainer (whose
    metrics need rapidfuzz, absent on the GPU machine)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev"))
    import bench_workers
    import scripts.mlx_batch_processor as mbp

    tiny = dict(image_size=(32, 64), patch_size=(16, 16), encoder_hidden=32, encoder_layers=1, encoder_heads=2,
                encoder_mlp=64, decoder_d_model=32, decoder_layers=1, decoder_heads=2, decoder_ffn=64,
                max_positions=64)
    for name in [m for m in sys.modules if m in ("scripts.model_folder", "scripts.mlx_trainer", "scripts.metrics")]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh below, so what they import is seen
    model = bench_workers.random_model_folder(tmp_path / "model", vocab_size=300, **tiny)
    assert "scripts.mlx_trainer" not in sys.modules and "scripts.metrics" not in sys.modules

    real = mbp.MLXBatchProcessor

    class Flaky(real):  # 1 worker is the real plain run; 2 and 3 stand in without starting processes
        def __init__(self, model_path, workers=1, **kw):
            self.workers = workers
            if workers == 1:
                super().__init__(model_path, workers=workers, **kw)

        def process_images(self, paths, **kw):
            if self.workers == 2:  # as the crashed workers on the H200 gave: every line failed
                return [{"success": False, "text": "", "error": "worker 1 died (exit -6)"} for _ in paths]
            if self.workers == 3:
                raise KeyboardInterrupt  # not caught: stands for the process being killed in this setting
            return super().process_images(paths, **kw)

        def engines(self):
            return super().engines() if self.workers == 1 else []

        def close(self):
            if self.workers == 1:
                super().close()

    monkeypatch.setattr(mbp, "MLXBatchProcessor", Flaky)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench_workers.main(["--model", str(model), "--lines", "4", "--workers", "2,1,3", "--batch-size", "2",
                            "--new-tokens", "3", "--output", str(out)])
    doc = json.loads(out.read_text())
    assert doc["complete"] is False
    failed, plain = doc["results"]
    assert failed["setting"] == "2 workers" and failed["failed_lines"] == 4 and "died" in failed["error"]
    assert "lines_per_s" not in failed and "speedup" not in failed
    assert plain["setting"] == "1 worker (plain run)" and plain["lines_per_s"] > 0
    assert plain["speedup"] == 1.0 and plain["same_texts_as_first"] == 4  # compared with the first that ran

def test_workers_option_values():
    from scripts.batch_workers import default_workers, resolve_workers, threads_per_worker

    assert default_workers("Device(cpu, 0)") == 1
    assert default_workers("Device(gpu, 0)") == (1 if sys.platform == "darwin" else 2)
    assert resolve_workers("3") == 3 and resolve_workers("auto") >= 1
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="workers"):
            resolve_workers(bad)
    assert threads_per_worker(2, cores=2) == 1 and threads_per_worker(1, cores=16) == 16
    assert threads_per_worker(4, cores=2) == 1  # never zero threads


def test_many_workers_on_an_nvidia_gpu_are_warned_about(monkeypatch, recwarn):
    import mlx.core as mx

    from scripts import batch_workers as bw

    assert bw.resolve_workers("8") == 8 and not [w for w in recwarn if "NVIDIA GPU" in str(w.message)]  # a CPU
    monkeypatch.setattr(mx, "default_device", lambda: "Device(gpu, 0)")
    monkeypatch.setattr(bw.sys, "platform", "linux")
    with pytest.warns(RuntimeWarning, match="8 MLX processes on one NVIDIA GPU"):
        assert bw.resolve_workers("8") == 8
    recwarn.clear()
    assert bw.resolve_workers(str(bw.CUDA_SAFE_WORKERS)) == bw.CUDA_SAFE_WORKERS and not recwarn.list


def test_workers_on_an_nvidia_gpu_split_its_memory(monkeypatch):
    """Each of N workers on one NVIDIA GPU gets 1/N of MLX's memory limit (its allocator would size itself
    for the whole GPU); one worker, a CPU or Apple silicon keep MLX's own limits."""
    import mlx.core as mx

    from scripts import batch_workers as bw

    assert bw.gpu_memory_share(4) is None  # this CPU
    monkeypatch.setattr(mx, "default_device", lambda: "Device(gpu, 0)")
    monkeypatch.setattr(mx, "get_memory_limit", lambda: 120_000_000_000)
    monkeypatch.setattr(bw.sys, "platform", "linux")
    assert bw.gpu_memory_share(4) == 30_000_000_000 and bw.gpu_memory_share(1) is None
    monkeypatch.setattr(bw.sys, "platform", "darwin")
    assert bw.gpu_memory_share(4) is None

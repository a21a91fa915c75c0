#!/usr/bin/env python3
"""Aggregate lines/s of the batch processor with 1, 2, 4 ... worker processes (and Ray) on one machine.

Each setting OCRs the same line images through `MLXBatchProcessor` (the library the CLI uses: reading,
preprocessing, generation, rows in input order); lines/s is lines over the wall time of the run, after a
warm-up run through the same workers (model loads and compilation left out; the start time is reported
apart). 1 worker is the plain one-process run. Every setting's texts are compared with the first setting's
that ran. A setting that fails (workers that crash, lines that fail) is a row with its error and the next one
still runs; --output is rewritten after every setting, so a run cut short keeps the rows it has.

GPU (the lead's machine; random-weight trocr-base, float16, exactly 20 tokens a line, batch 32):
    python dev/bench_workers.py --random-trocr-base --dtype float16 --batch-size 32 --workers 1,2,4 \\
        --lines 512 --new-tokens 20 --output outputs/bench_workers.json
CPU, the bundled model on real-looking lines (synth_data.py --out lines --n 300):
    python dev/bench_workers.py --model models/mlx/default --images lines/images --workers 1,2 --ray
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from scripts import atomic

TROCR_BASE = dict(image_size=(384, 384), patch_size=(16, 16), encoder_hidden=768, encoder_layers=12,
                  encoder_heads=12, encoder_mlp=3072, decoder_d_model=1024, decoder_layers=12, decoder_heads=16,
                  decoder_ffn=4096, max_positions=512)


def random_model_folder(folder, seed: int = 0, vocab_size: int = 50265, **arch) -> Path:
    """A random-weight MLX model folder (default: the trocr-base architecture with its 50265-word output
    layer; the char tokenizer decodes what it knows and skips the rest, which is fine for timing). Built with
    scripts/model_folder.py, not the trainer, whose imports need rapidfuzz."""
    from mlx.utils import tree_flatten

    from scripts.model_folder import new_model, write_model_folder

    folder = Path(folder)
    model = new_model({**TROCR_BASE, **arch}, folder / "processor", seed, vocab_size)
    return write_model_folder(folder, model.config, dict(tree_flatten(model.parameters())), folder / "processor")


def line_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n synthetic text-line PNGs (the benchmark script's generator), written to `folder`."""
    from scripts.benchmark_pytorch_vs_mlx import synthetic_lines

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(synthetic_lines(n, seed)):
        paths.append(folder / f"line{i:05d}.png")
        img.save(paths[-1])
    return paths


def collect_images(sources, n) -> list[Path]:
    from scripts.image_io import is_image_path

    files = []
    for src in map(Path, sources):
        files.extend(sorted(p for p in src.iterdir() if is_image_path(p)) if src.is_dir() else [src])
    if not files:
        raise SystemExit(f"{', '.join(sources)}: no images")
    return files[: n or len(files)]


def measure(label: str, make, paths: list[Path], warmup: list[Path]) -> tuple[dict, list[str] | None]:
    """(result row, texts) of one setting; a setting that raises or gives failed lines is a row with its
    error and no lines/s (texts None), and the next setting still runs."""
    result = {"setting": label, "lines": len(paths)}
    t0 = time.perf_counter()
    proc = None
    try:
        proc = make()
        start = time.perf_counter() - t0
        proc.process_images(warmup, show_progress=False, handle_sigint=False)
        t0 = time.perf_counter()
        rows = proc.process_images(paths, show_progress=False, handle_sigint=False)
        wall = time.perf_counter() - t0
        engines = proc.engines()
    except Exception as e:  # a worker count the device cannot run (e.g. crashed workers) is a result too
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        if proc is not None:
            try:
                proc.close()
            except Exception as e:
                result.setdefault("error", f"close: {type(e).__name__}: {e}")
    if "error" not in result:
        failed = [r for r in rows if not r["success"]]
        if failed:
            result.update(failed_lines=len(failed), error=str(failed[0]["error"]))
    if "error" in result:
        print(f"  {label:<28} FAILED: {result.get('failed_lines', 'all')} of {len(paths)} lines: "
              f"{result['error'][:300]}", flush=True)
        return result, None
    result.update(lines=len(rows), wall_s=round(wall, 3), lines_per_s=round(len(rows) / wall, 3),
                  start_s=round(start, 2), processes=len(engines), device=engines[0]["device"] if engines else None)
    print(f"  {label:<28} {result['lines_per_s']:9.2f} lines/s  ({len(rows)} lines in {wall:.2f} s; "
          f"start {start:.1f} s)", flush=True)
    return result, [r["text"] for r in rows]


def cpu_name() -> str:
    from scripts.benchmark_pytorch_vs_mlx import cpu_name as name

    return name()


def environment() -> dict:
    import mlx.core as mx

    env = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "python": platform.python_version(),
           "mlx": mx.__version__, "mlx_device": str(mx.default_device()), "cpu": cpu_name(),
           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            env["gpu"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="an MLX model folder")
    src.add_argument("--random-trocr-base", action="store_true",
                     help="random-weight trocr-base architecture, written to a temporary folder")
    p.add_argument("--images", nargs="+", metavar="P", help="line images (files or folders; default: synthetic)")
    p.add_argument("--lines", type=int, default=None, help="how many lines (default: 256 synthetic, or all --images)")
    p.add_argument("--workers", default="1,2,4", help="worker counts to measure (1 = the plain run)")
    p.add_argument("--ray", action="store_true", help="also run each worker count > 1 as a Ray actor pool on a "
                   "local cluster (GPU: 1/N of the GPU each when Ray sees one)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    p.add_argument("--new-tokens", type=int, default=20,
                   help="exactly this many tokens a line (min = max new tokens); 0: the model's own stopping")
    p.add_argument("--output", metavar="JSON", help="write the results here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from scripts.mlx_batch_processor import MLXBatchProcessor

    counts = [int(w) for w in args.workers.split(",")]
    gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens} if args.new_tokens else {}
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        tmp = Path(tmp)
        model = args.model
        if args.random_trocr_base:
            t0 = time.perf_counter()
            model = random_model_folder(tmp / "trocr-base-random")
            print(f"random trocr-base written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        paths = (collect_images(args.images, args.lines) if args.images
                 else line_images(tmp / "lines", args.lines or 256))
        warmup = paths[: args.batch_size * max(counts) * 2]
        env = environment()
        print(f"{len(paths)} lines, batch {args.batch_size}, {env['mlx_device']}, {env.get('gpu') or env['cpu']}, "
              f"load {env.get('load_average')}", flush=True)
        results, reference = [], None
        settings = []
        for w in counts:
            settings.append((f"{w} worker{'s' if w > 1 else ''}" + (" (plain run)" if w == 1 else ""),
                             lambda w=w: MLXBatchProcessor(model, batch_size=args.batch_size, dtype=args.dtype,
                                                           workers=w, **gen)))
        if args.ray:
            from scripts.batch_ray import RayOptions

            gpu = "gpu" in env["mlx_device"].lower() and "gpu" in env
            for w in counts:
                opts = RayOptions(actors=w, gpus_per_actor=1.0 / w if gpu else 0.0,
                                  cpus_per_actor=1.0 if gpu else max(1, (os.cpu_count() or 1) // w))
                settings.append((f"Ray, {w} actor{'s' if w > 1 else ''}",
                                 lambda opts=opts: MLXBatchProcessor(model, batch_size=args.batch_size,
                                                                     dtype=args.dtype, ray=opts, **gen)))
        doc = {"environment": env, "model": "random trocr-base" if args.random_trocr_base else str(args.model),
               "batch_size": args.batch_size, "dtype": args.dtype, "new_tokens": args.new_tokens,
               "lines": len(paths), "complete": False, "results": results}
        for label, make in settings:
            result, texts = measure(label, make, paths, warmup)
            if texts is not None:
                if reference is None:
                    reference = texts  # the first setting that ran is the one the others are compared with
                result["same_texts_as_first"] = int(sum(a == b for a, b in zip(reference, texts)))
            results.append(result)
            add_speedups(results)
            if args.output:  # after every setting: a crash of a later one keeps these rows
                atomic.write_json(args.output, doc)
        doc["complete"] = True
    print("\n| setting | lines/s | x first | same texts |\n|---|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['setting']} | failed: {r['error'][:120]} | | |")
        else:
            print(f"| {r['setting']} | {r['lines_per_s']:.2f} | {r['speedup']:.2f} | {r['same_texts_as_first']}/{r['lines']} |")
    if args.output:
        atomic.write_json(args.output, doc)
        print(f"wrote {args.output}")
    return 0


def add_speedups(results: list[dict]) -> None:
    """Each row's lines/s over the first setting that ran (failed rows have none)."""
    base = next((r["lines_per_s"] for r in results if "lines_per_s" in r), None)
    for r in results:
        if "lines_per_s" in r:
            r["speedup"] = round(r["lines_per_s"] / base, 3) if base else None


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Render speed of the synthetic training stream on one process (mlx_trainer._render_chunk).

    python dev/bench_render.py --n 300 --warmup 60 --repeat 3
    python dev/bench_render.py --sheet runs/render.png --n 16   # contact sheet of samples 0..15

Measures lines/s of _render_chunk(range(start, start+n), (64, 512), SynthSource(seed, warp=1)), the work a
training worker does per batch (make_sample + to_pixels), after `--warmup` untimed samples (fonts loaded,
character maps read). Prints wall-clock lines/s and lines per CPU-second of this process (median of
--repeat passes over the same samples). The CPU may be shared: compare runs made back to back.
"""

from __future__ import annotations

if not __package__:
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=1000, help="first timed sample number")
    p.add_argument("--warp", type=float, default=1.0)
    p.add_argument("--sheet", help="write a contact sheet of samples start..start+n-1 (PNG) instead of timing")
    p.add_argument("--profile", help="write cProfile stats of one timed pass here")
    p.add_argument("--cv-threads", type=int, default=1,
                   help="OpenCV threads (default 1: one core, as a training worker; 0 leaves OpenCV's default)")
    args = p.parse_args()
    if args.cv_threads:
        import cv2

        cv2.setNumThreads(args.cv_threads)

    from scripts import mlx_trainer as T

    src = T.SynthSource(seed=args.seed, warp=args.warp, height=64)
    size = (64, 512)
    if args.sheet:
        from PIL import Image

        pixels, texts = T._render_chunk(range(args.start, args.start + args.n), size, src)
        sheet = np.concatenate([np.pad(p[..., 0], ((2, 2), (0, 0)), constant_values=0) for p in pixels])
        Image.fromarray(sheet).save(args.sheet)
        print("\n".join(f"{args.start + i}: {t}" for i, t in enumerate(texts)))
        return 0
    from scripts import synth_data

    for path, _ in src.fonts:  # character maps: read once per process, as in a long training run
        synth_data.font_missing(path)
    T._render_chunk(range(args.warmup), size, src)
    rates, cpu_rates = [], []
    for r in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        if args.profile and r == 0:
            import cProfile

            cProfile.runctx("T._render_chunk(range(args.start, args.start + args.n), size, src)", globals(), locals(),
                            args.profile)
        else:
            T._render_chunk(range(args.start, args.start + args.n), size, src)
        rates.append(args.n / (time.perf_counter() - t0))
        cpu_rates.append(args.n / (time.process_time() - c0))
    med, cpu_med = float(np.median(rates)), float(np.median(cpu_rates))
    print(json.dumps({"lines_per_s": [round(x, 1) for x in rates], "median": round(med, 1),
                      "ms_per_line": round(1000 / med, 2), "cpu_lines_per_s": round(cpu_med, 1),
                      "cpu_ms_per_line": round(1000 / cpu_med, 2), "n": args.n}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

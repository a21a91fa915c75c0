#!/usr/bin/env python3
"""The OCR stage of the form pipeline alone, for one engine: the example form's field crops through
form_pipeline.recognize_all, as the handlers run it (same batches, same generation settings), repeated.

    venv_mlx/bin/python dev/bench_form_ocr.py --engine mlx --crops outputs/form_mlx/regions
    venv_mlx/bin/python dev/bench_form_ocr.py --engine torch --model models/pytorch/default --crops outputs/form_mlx/regions

Run each engine in its own process (the MLX toolkit loads OpenBLAS for MLX on a Linux CPU). Prints wall seconds and CPU seconds (all threads) per pass; on a
shared machine the CPU seconds are the steadier figure. --threads N caps BLAS/OpenMP threads (both engines).
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["mlx", "torch"], required=True)
    ap.add_argument("--model", help="model folder (default: the handler's default)")
    ap.add_argument("--crops", required=True, help="folder of field crops (a handler run's regions/)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-beams", type=int, help="beam width (default: the model's generation_config.json, as the handlers)")
    ap.add_argument("--threads", type=int, help="BLAS / OpenMP threads")
    ap.add_argument("--output", help="append the result as one JSON line here")
    args = ap.parse_args(argv)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    from PIL import Image

    from scripts import form_pipeline as fp

    crops = [Image.open(p).convert("RGB") for p in sorted(Path(args.crops).glob("*.png"))]
    if not crops:
        raise SystemExit(f"{args.crops}: no .png crops")
    if args.engine == "mlx":
        import ocr_inference_handler_mlx as handler
    else:
        import ocr_inference_handler as handler
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
    config = fp.replace(handler.DEFAULTS, batch_size=args.batch_size, num_beams=args.num_beams)
    t0 = time.perf_counter()
    engine = handler.make_engine(args.model, "base", config)
    load = time.perf_counter() - t0
    passes = []
    for _ in range(args.repeats):
        w, c = time.perf_counter(), time.process_time()
        texts = [t for t, *_ in fp.recognize_all(engine, crops, config.batch_size)]
        passes.append({"wall_s": round(time.perf_counter() - w, 3), "cpu_s": round(time.process_time() - c, 3)})
        print(f"{args.engine}: {len(crops)} fields in {passes[-1]['wall_s']:.2f} s wall, {passes[-1]['cpu_s']:.2f} s CPU",
              flush=True)
    result = {"engine": args.engine, "model": str(engine.describe().get("model")), "fields": len(crops),
              "num_beams": engine.describe().get("num_beams"),
              "load_s": round(load, 3), "passes": passes, "threads": args.threads,
              "load_average": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "texts": texts}
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

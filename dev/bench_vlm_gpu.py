#!/usr/bin/env python3
"""Whole-page OCR speed: mlx-vlm (scripts/vlm_ocr.py, as ocr_batch.py runs it) next to transformers'
generate on the same device, in one run, on tiny random-weight Qwen3-VL (Chandra 1) and Qwen3.5
(Chandra OCR 2) checkpoints built here (tests/vlm_fixtures.py; nothing is downloaded).

    python dev/bench_vlm_gpu.py                       # GPU: bf16, 16 pages, batch 1 and 8
    python dev/bench_vlm_gpu.py --device cpu --pages 4 --new-tokens 16 --dtype float32 --size 512

Every page is a page-sized picture (default 768x1024 px -> 768 image tokens after the 2x2 merge) with
Chandra's prompt, and generates exactly --new-tokens tokens on both sides (end-of-text is made
unreachable), so both do the same work. The tiny models say nothing about Chandra's own speed (its 9B /
4B weights cannot be fetched here); they measure the engines and the batching on realistic token counts.
Reported: pages/s and generated tokens/s per side, their ratio, and how many pages gave the same ids.
"""

from __future__ import annotations

if not __package__:
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])
    sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from scripts import atomic


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("mlx", "mlx-vlm", "torch", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)"


def build(arch: str, root: Path, dtype: str, max_pixels: int):
    import vlm_fixtures as F
    from transformers import AutoModelForImageTextToText

    tok = F.build_tokenizer()
    hf = F.save_checkpoint(arch, root / arch / "hf", max_pixels=max_pixels)  # end-of-text row zeroed: pages run long
    mlx_dir = F.convert_checkpoint(hf, root / arch / "mlx", dtype=dtype)
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    hf_model = AutoModelForImageTextToText.from_pretrained(hf, dtype=torch_dtype).eval()
    return tok, F.build_image_processor(max_pixels), hf_model, mlx_dir


def time_mlx(vlm, pages, batch, prompt, new_tokens, repeats):
    from scripts.vlm_ocr import ocr_images

    ocr_images(vlm, pages[:batch], prompt, max_tokens=new_tokens)  # warm-up: compile, allocate
    times, ids = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = []
        for i in range(0, len(pages), batch):
            got, _ = ocr_images(vlm, pages[i:i + batch], prompt, max_tokens=new_tokens)
            ids += [g.tokens for g in got]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), ids


def time_hf(model, tok, ip, pages, batch, prompt, new_tokens, repeats, device):
    import vlm_fixtures as F

    def run(chunk):
        inputs = {k: v.to(device) for k, v in F.hf_inputs(tok, ip, chunk, prompt).items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        n = inputs["input_ids"].shape[1]
        return [F._trim(row[n:].tolist(), model.generation_config.eos_token_id) for row in out]

    run(pages[:batch])
    times, ids = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ids = [r for i in range(0, len(pages), batch) for r in run(pages[i:i + batch])]
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), ids


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                   help="weights on both sides (default: bfloat16 on the GPU, float32 on the CPU)")
    p.add_argument("--pages", type=int, default=16, help="pages per timed pass (default 16)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=128, help="tokens generated per page (default 128)")
    p.add_argument("--size", type=int, default=1024, help="page height in px; width 3/4 of it (default 1024)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes; the median is reported (default 2)")
    p.add_argument("--archs", nargs="+", default=["qwen3_vl", "qwen3_5"])
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")

    import mlx.core as mx
    import vlm_fixtures as F
    from scripts.vlm_ocr import CHANDRA_OCR_PROMPT, load_vlm, prepare_page

    if args.device == "cpu":
        mx.set_default_device(mx.cpu)
    height, width = args.size, args.size * 3 // 4
    max_pixels = width * height
    grid = (F.PATCH * F.MERGE, 32 * 32, max_pixels)
    pages = [prepare_page(F.page_image(width, height, i), args.size, grid) for i in range(args.pages)]
    results = {"device": _device_name(args.device), "mlx_device": str(mx.default_device()), "dtype": dtype,
               "pages": args.pages, "page_px": list(pages[0].size), "new_tokens": args.new_tokens,
               "versions": _versions(), "runs": []}
    if "qwen3_5" in args.archs and importlib.util.find_spec("fla") is None:
        results["note"] = ("transformers runs Qwen3.5's gated-delta layers with its reference PyTorch kernels "
                           "(flash-linear-attention / causal-conv1d not installed)")
        print("note:", results["note"])
    print(f"device: {results['device']} (MLX {results['mlx_device']}), {dtype}, {args.pages} pages of "
          f"{pages[0].size[0]}x{pages[0].size[1]} px, {args.new_tokens} new tokens each", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            tok, ip, hf_model, mlx_dir = build(arch, Path(tmp), dtype, max_pixels)
            hf_model.to(args.device)
            vlm = load_vlm(str(mlx_dir))
            n_image = int(ip(images=[pages[0]], return_tensors="np")["image_grid_thw"][0].prod()) // F.MERGE ** 2
            for batch in args.batches:
                t_mlx, ids_mlx = time_mlx(vlm, pages, batch, CHANDRA_OCR_PROMPT, args.new_tokens, args.repeats)
                t_hf, ids_hf = time_hf(hf_model, tok, ip, pages, batch, CHANDRA_OCR_PROMPT, args.new_tokens,
                                       args.repeats, args.device)
                same = sum(a == b for a, b in zip(ids_mlx, ids_hf))
                run = {"arch": arch, "batch": batch, "image_tokens": n_image,
                       "mlx_pages_per_s": args.pages / t_mlx, "hf_pages_per_s": args.pages / t_hf,
                       "mlx_tokens_per_s": sum(map(len, ids_mlx)) / t_mlx,
                       "hf_tokens_per_s": sum(map(len, ids_hf)) / t_hf,
                       "mlx_over_hf": t_hf / t_mlx, "same_ids": f"{same}/{len(ids_mlx)}"}
                results["runs"].append(run)
                print(f"{arch:9s} batch {batch:2d}: mlx-vlm {run['mlx_pages_per_s']:7.2f} pages/s "
                      f"({run['mlx_tokens_per_s']:8.0f} tok/s) | transformers {run['hf_pages_per_s']:7.2f} pages/s "
                      f"({run['hf_tokens_per_s']:8.0f} tok/s) | mlx/hf {run['mlx_over_hf']:.2f}x | same ids "
                      f"{run['same_ids']}", flush=True)
            del hf_model, vlm
            if args.device == "cuda":
                torch.cuda.empty_cache()
    if args.out:
        atomic.write_json(args.out, results)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

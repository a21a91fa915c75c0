"""TrOCR text-line OCR speed: transformers (PyTorch) vs our MLX port, in one run.

For both frameworks it measures load time, latency per line and lines/s for each batch size, peak memory,
and how far the two agree (exact-match rate and character error rate between their texts).

Two ways to get models:
  * real checkpoints: --pytorch-model (a transformers TrOCR folder) and --mlx-model (the same model
    converted with convert_trocr_to_mlx.py);
  * --random-trocr-base: the microsoft/trocr-base architecture (ViT-base 384 encoder, 12-layer TrOCR
    decoder, d_model 1024, vocab 50265) with random weights, built in memory and converted to MLX in
    memory (no checkpoint or network needed). Use --new-tokens N to make both frameworks generate exactly
    N tokens (min_new_tokens = max_new_tokens = N), so the timings compare the same work.

Timing covers generation from preprocessed pixel values (the preprocessing is shared and identical);
each batch size runs the whole image set `--repeats` times after `--warmup` untimed batches (a batch size
larger than the image set runs one full batch, the images repeated).

--quantize 8,4 adds MLX rows for the model quantized in memory to those bits (mlx_models.quantize_model,
groups of --group-size): weight size, lines/s, and agreement with the float MLX model's output (and with
transformers'). On random weights (--random-trocr-base) near-tied logits make quantized tokens drift from
the float ones quickly; the agreement is meaningful on a trained checkpoint.
Texts: with real checkpoints both frameworks' token ids are decoded with the checkpoint's tokenizer;
with --random-trocr-base there is no tokenizer, so "texts" are token-id sequences and the CER is a
token error rate.

Example (CPU):
    python scripts/benchmark_pytorch_vs_mlx.py --random-trocr-base --new-tokens 20 --batch-sizes 1,8 \\
        --num-images 8 --output bench.json
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import gc
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scripts import atomic


# --------------------------------------------------------------------------------------------------
# Small helpers: memory sampling, edit distance, images
# --------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


class RSSPeak:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def edit_distance(a: Sequence, b: Sequence) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def agreement(reference: list, other: list) -> dict:
    """Exact matches and CER of `other` against `reference` (strings or token sequences)."""
    exact = sum(a == b for a, b in zip(reference, other))
    dist = sum(edit_distance(a, b) for a, b in zip(reference, other))
    chars = sum(len(a) for a in reference)
    return {"exact_matches": exact, "total": len(reference), "match_rate": exact / max(len(reference), 1),
            "cer": dist / max(chars, 1)}


def synthetic_lines(n: int, seed: int = 0):
    """Text-line-like images (dark text on light paper) when no --images folder is given."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    words = "invoice total amount date name street city number account payment order due balance".split()
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=int(rng.integers(2, 6))))
        img = Image.new("RGB", (int(rng.integers(300, 600)), int(rng.integers(40, 70))), (245, 245, 240))
        ImageDraw.Draw(img).text((8, 10), text, fill=(20, 20, 20))
        out.append(img)
    return out


def load_images(sources: Optional[Sequence[str]], n: Optional[int]):
    """Text-line images from files and/or folders (image_io reads them), or synthetic lines if none."""
    if not sources:
        return synthetic_lines(n or 8)
    from scripts.image_io import is_image_path, load_image

    files = []
    for src in map(Path, sources):
        files.extend(sorted(p for p in src.iterdir() if is_image_path(p)) if src.is_dir() else [src])
    if not files:
        raise FileNotFoundError(f"{', '.join(sources)}: no images")
    return [load_image(p) for p in files[: n or len(files)]]


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def trocr_base_config():
    """microsoft/trocr-base-* architecture: ViT-base/16 at 384 + TrOCR decoder (12 x 1024, 16 heads)."""
    from transformers import TrOCRConfig, ViTConfig, VisionEncoderDecoderConfig

    enc = ViTConfig(image_size=384, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", qkv_bias=True)
    dec = TrOCRConfig(vocab_size=50265, d_model=1024, decoder_layers=12, decoder_attention_heads=16,
                      decoder_ffn_dim=4096, activation_function="gelu", max_position_embeddings=512,
                      cross_attention_hidden_size=768, use_learned_position_embeddings=True,
                      layernorm_embedding=True, scale_embedding=False, tie_word_embeddings=False,
                      pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 1, 2
    cfg.tie_word_embeddings = False
    return cfg


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def sync(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


class Setup:
    """Both models plus what is needed to feed and read them."""

    def __init__(self, args):
        import torch

        self.args = args
        self.tokenizer = None
        self.gen = {}
        t0 = time.perf_counter()
        if args.random_trocr_base:
            from transformers import VisionEncoderDecoderModel

            torch.manual_seed(args.seed)
            with RSSPeak():
                self.torch_model = VisionEncoderDecoderModel(trocr_base_config()).eval()
            self.torch_load_cpu = time.perf_counter() - t0
            self.image_size = (384, 384)
            self.gen_ids = dict(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1)
        else:
            if not (args.pytorch_model and args.mlx_model):
                raise SystemExit("give --pytorch-model and --mlx-model, or --random-trocr-base")
            from transformers import VisionEncoderDecoderModel

            from scripts.weights import resolve_checkpoint  # a folder, or a hub id with a clear offline error

            self.torch_model = VisionEncoderDecoderModel.from_pretrained(resolve_checkpoint(args.pytorch_model)).eval()
            self.torch_load_cpu = time.perf_counter() - t0
            c = self.torch_model.config
            self.gen_ids = dict(decoder_start_token_id=c.decoder_start_token_id, eos_token_id=c.eos_token_id,
                                pad_token_id=c.pad_token_id)
        self.mlx_load_time = None

    # -- PyTorch ----------------------------------------------------------------------------------
    def torch_to_device(self):
        t0 = time.perf_counter()
        self.torch_model = self.torch_model.to(device=self.args.device, dtype=torch_dtype(self.args.dtype))
        sync(self.args.device)
        return self.torch_load_cpu + time.perf_counter() - t0

    # -- MLX --------------------------------------------------------------------------------------
    def load_mlx(self, quantize: Optional[int] = None):
        """MLX model (+ processor for real checkpoints), quantized to `quantize` bits when given; returns
        load time in seconds (quantizing included)."""
        import mlx.core as mx

        t0 = time.perf_counter()
        if self.args.random_trocr_base:
            from scripts.mlx_models import TrOCR, TrOCRConfig
            from scripts.weights import check_and_load, hf_to_mlx

            cfg = TrOCRConfig.from_hf(self.torch_model.config.to_dict())
            state = {k: v.detach().float().cpu().numpy() for k, v in self.torch_model.state_dict().items()}
            model = TrOCR(cfg)
            check_and_load(model, hf_to_mlx(state, cfg), dtype=self.args.dtype)
            del state
            self.mlx_model, self.processor = model, None
        else:
            from scripts.mlx_processor import load_mlx_processor

            self.processor = load_mlx_processor(self.args.mlx_model, dtype=self.args.dtype)
            self.mlx_model = self.processor.model
        if quantize:
            from scripts.mlx_models import quantize_model

            quantize_model(self.mlx_model, bits=quantize, group_size=self.args.group_size)
        mx.eval(self.mlx_model.parameters())
        return time.perf_counter() - t0

    def mlx_weight_bytes(self) -> int:
        from mlx.utils import tree_flatten

        return sum(v.nbytes for _, v in tree_flatten(self.mlx_model.parameters()))

    def preprocess(self, images) -> np.ndarray:
        """(N, H, W, 3) float32, transformers' ViTImageProcessor numerics (our port of it)."""
        from scripts.image_settings import ImageSettings, read_image_settings
        from scripts.mlx_processor import ImagePreprocessor

        if self.args.random_trocr_base:
            pre = ImagePreprocessor(ImageSettings.vit(self.image_size), self.image_size)
        else:
            settings, settings_file = read_image_settings(Path(self.args.mlx_model) / "processor")
            pre = ImagePreprocessor(settings, self.mlx_model.config.encoder.image_size, str(settings_file))
        return pre(images)

    def gen_options(self) -> dict:
        a = self.args
        opts = dict(num_beams=a.num_beams, do_sample=False, **self.gen_ids)
        if a.new_tokens:
            opts.update(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens)
        else:
            opts.update(max_length=a.max_length)
        return opts

    def texts(self, seqs: list[list[int]]) -> list:
        if self.processor is not None:
            return self.processor.batch_decode(seqs)
        return [tuple(s) for s in seqs]


def strip_sequence(row: list[int], eos: int, pad: int) -> list[int]:
    if eos in row[1:]:
        return row[: row.index(eos, 1) + 1]
    while row and row[-1] == pad:
        row = row[:-1]
    return row


def run_torch(setup: Setup, pixels: np.ndarray, batch_size: int) -> list[list[int]]:
    import torch

    a = setup.args
    px = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device=a.device, dtype=torch_dtype(a.dtype))
    with torch.inference_mode():
        out = setup.torch_model.generate(px, **setup.gen_options())
    ids = setup.gen_ids
    return [strip_sequence(r, ids["eos_token_id"], ids["pad_token_id"]) for r in out.tolist()]


def run_mlx(setup: Setup, pixels: np.ndarray, batch_size: int) -> list[list[int]]:
    import mlx.core as mx
    from scripts.decoding import GenerationConfig, generate_tokens

    base = setup.processor.generation_config if setup.processor is not None else GenerationConfig()
    cfg = base.updated(**setup.gen_options())
    return generate_tokens(setup.mlx_model, mx.array(pixels), cfg).sequences


def time_framework(name: str, runner, setup: Setup, pixels: np.ndarray, batch_sizes, warmup: int, repeats: int):
    """Per batch size: total seconds, latency per line, lines/s, peak memory; plus the sequences."""
    import mlx.core as mx
    import torch

    a = setup.args
    detail, sequences = {}, None
    for bs in batch_sizes:
        lines = pixels if len(pixels) >= bs else np.resize(pixels, (bs,) + pixels.shape[1:])  # one full batch
        n = len(lines)
        for _ in range(warmup):
            runner(setup, lines[:bs], bs)
        if name == "pytorch" and a.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if name == "mlx":
            mx.reset_peak_memory()
        times, cpu_times, seqs = [], [], []
        with RSSPeak() as rss:
            for _ in range(repeats):
                seqs = []
                sync(a.device)
                t0, c0 = time.perf_counter(), time.process_time()
                for start in range(0, n, bs):
                    seqs.extend(runner(setup, lines[start:start + bs], bs))
                sync(a.device)
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)  # all threads; on a shared CPU, less load-bound
        seqs = seqs[:len(pixels)]  # the image set once (a larger batch repeats it)
        best, mean = min(times), float(np.mean(times))
        row = {"batch_size": bs, "lines": n, "repeats": repeats, "total_time": mean, "best_total_time": best,
               "avg_time": mean / n, "throughput": n / mean, "peak_rss_mb": rss.peak,
               "cpu_time_per_line": float(np.mean(cpu_times)) / n}
        if name == "pytorch" and a.device == "cuda":
            row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        elif name == "mlx":
            row["peak_memory_mb"] = mx.get_peak_memory() / 2**20
        else:
            row["peak_memory_mb"] = rss.peak  # CPU torch: process RSS is the best available measure
        detail[str(bs)] = row
        if sequences is None:
            sequences = seqs
        elif seqs != sequences:
            row["differs_from_first_batch_size"] = True
        print(f"  {name:8s} batch {bs:3d}: {row['avg_time'] * 1000:9.1f} ms/line  {row['throughput']:8.2f} lines/s"
              f"  ({row['cpu_time_per_line']:.2f} CPU-s/line)", flush=True)
    return detail, sequences


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def environment(args) -> dict:
    import mlx.core as mx
    import torch
    import transformers

    from scripts import cpu_blas

    env = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "python": platform.python_version(), "mlx": mx.__version__,
           "torch": torch.__version__,
           "transformers": transformers.__version__, "mlx_device": str(mx.default_device()),
           "torch_device": args.device, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
           "mlx_blas": cpu_blas.blas(), "torch_blas": torch.backends.mkl.is_available() and "MKL" or "other",
           "torch_threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_benchmark(args) -> dict:
    import torch

    batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b]
    quantize_bits(args.quantize)  # a bad --quantize fails now, not after the float runs
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.set_grad_enabled(False)
    if args.threads:  # both frameworks' CPU threads: torch's intra-op pool and the OpenBLAS MLX uses
        from scripts import cpu_blas

        torch.set_num_threads(args.threads)
        cpu_blas.set_blas_threads(args.threads)
    images = load_images(args.images, args.num_images or (None if args.images else max(batch_sizes)))
    print(f"{len(images)} images, batch sizes {batch_sizes}, num_beams {args.num_beams}, dtype {args.dtype}, "
          f"{'%d new tokens' % args.new_tokens if args.new_tokens else 'max_length %d' % args.max_length}", flush=True)

    setup = Setup(args)
    mlx_load = setup.load_mlx()
    torch_load = setup.torch_to_device()
    pixels = setup.preprocess(images)
    print(f"load: pytorch {torch_load:.2f}s, mlx {mlx_load:.2f}s" +
          ("  (random weights: pytorch = build + init, mlx = in-memory conversion)" if args.random_trocr_base else ""),
          flush=True)

    results = {"config": {k: v for k, v in vars(args).items()}, "environment": environment(args)}
    results["config"]["batch_sizes"] = batch_sizes
    outputs = {}
    for name, runner, load in (("pytorch", run_torch, torch_load), ("mlx", run_mlx, mlx_load)):
        detail, seqs = time_framework(name, runner, setup, pixels, batch_sizes, args.warmup, args.repeats)
        first = detail[str(batch_sizes[0])]
        results[name] = {"load_time": load,
                         "inference": {"avg_time": first["avg_time"], "throughput": first["throughput"],
                                       "batch_size": batch_sizes[0], "per_batch_size": detail},
                         "peak_memory_mb": max(d["peak_memory_mb"] for d in detail.values())}
        outputs[name] = seqs
        gc.collect()
    results["mlx"]["weight_mb"] = setup.mlx_weight_bytes() / 2**20
    ref, ours = setup.texts(outputs["pytorch"]), setup.texts(outputs["mlx"])
    results["accuracy"] = agreement(ref, ours)
    results["accuracy"]["compared_as"] = "token sequences" if setup.processor is None else "texts"
    results["samples"] = [{"pytorch": _show(a), "mlx": _show(b)} for a, b in list(zip(ref, ours))[:3]]
    results["ratios"] = {
        str(bs): {"throughput_mlx_over_pytorch": results["mlx"]["inference"]["per_batch_size"][str(bs)]["throughput"]
                  / results["pytorch"]["inference"]["per_batch_size"][str(bs)]["throughput"]}
        for bs in batch_sizes}
    save_json(results, args.output, partial=True)  # the float rows are safe if a quantized run fails or is cut off
    for bits in quantize_bits(args.quantize):
        name = f"mlx_q{bits}"
        try:
            del setup.mlx_model
            gc.collect()
            load = setup.load_mlx(quantize=bits)
            print(f"{name}: {bits}-bit, groups of {args.group_size}, {setup.mlx_weight_bytes() / 2**20:.0f} MB", flush=True)
            detail, seqs = time_framework("mlx", run_mlx, setup, pixels, batch_sizes, args.warmup, args.repeats)
        except Exception as e:  # e.g. a backend without quantized kernels: say so, keep the other rows
            print(f"{name}: failed ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
            results[name] = {"bits": bits, "group_size": args.group_size, "error": f"{type(e).__name__}: {e}"}
            continue
        first = detail[str(batch_sizes[0])]
        results[name] = {"load_time": load, "bits": bits, "group_size": args.group_size,
                         "weight_mb": setup.mlx_weight_bytes() / 2**20,
                         "inference": {"avg_time": first["avg_time"], "throughput": first["throughput"],
                                       "batch_size": batch_sizes[0], "per_batch_size": detail},
                         "peak_memory_mb": max(d["peak_memory_mb"] for d in detail.values()),
                         "agreement_vs_mlx_float": agreement(setup.texts(outputs["mlx"]), setup.texts(seqs)),
                         "agreement_vs_pytorch": agreement(setup.texts(outputs["pytorch"]), setup.texts(seqs))}
        save_json(results, args.output, partial=True)
        gc.collect()
    return results


def save_json(results: dict, path, partial: bool = False) -> Path:
    return atomic.write_json(path, {**results, "partial": partial})


def quantize_bits(spec) -> list[int]:
    from scripts.mlx_models import QUANTIZE_BITS

    bits = [int(b) for b in str(spec or "").split(",") if b]
    bad = [b for b in bits if b not in QUANTIZE_BITS]
    if bad:
        raise SystemExit(f"--quantize: bits must be among {QUANTIZE_BITS}, got {bad}")
    return bits


def _show(text):
    return text if isinstance(text, str) else " ".join(map(str, text))


def print_table(results: dict) -> None:
    pt, ml = results["pytorch"], results["mlx"]
    env = results["environment"]
    print()
    print(f"MLX {env['mlx']} on {env['mlx_device']}  vs  PyTorch {env['torch']} on {env['torch_device']}"
          f"  ({env.get('gpu') or env['cpu']})")
    if env["mlx_device"].startswith("Device(cpu"):
        print(f"MLX BLAS: {env['mlx_blas']}")
    print(f"{'':22s}{'PyTorch':>12s}{'MLX':>12s}{'MLX/PyTorch':>14s}")
    print(f"{'load time (s)':22s}{pt['load_time']:12.2f}{ml['load_time']:12.2f}{ml['load_time'] / pt['load_time']:14.2f}")
    for bs in results["config"]["batch_sizes"]:
        p, m = pt["inference"]["per_batch_size"][str(bs)], ml["inference"]["per_batch_size"][str(bs)]
        print(f"{'batch %d ms/line' % bs:22s}{p['avg_time'] * 1e3:12.1f}{m['avg_time'] * 1e3:12.1f}"
              f"{m['avg_time'] / p['avg_time']:14.2f}")
        print(f"{'batch %d lines/s' % bs:22s}{p['throughput']:12.2f}{m['throughput']:12.2f}"
              f"{m['throughput'] / p['throughput']:14.2f}")
        if "cpu_time_per_line" in p and "cpu_time_per_line" in m:
            print(f"{'batch %d CPU-s/line' % bs:22s}{p['cpu_time_per_line']:12.2f}{m['cpu_time_per_line']:12.2f}"
                  f"{m['cpu_time_per_line'] / max(p['cpu_time_per_line'], 1e-9):14.2f}")
        print(f"{'batch %d peak MB' % bs:22s}{p['peak_memory_mb']:12.0f}{m['peak_memory_mb']:12.0f}"
              f"{m['peak_memory_mb'] / max(p['peak_memory_mb'], 1e-9):14.2f}")
    acc = results["accuracy"]
    print(f"agreement ({acc['compared_as']}): {acc['exact_matches']}/{acc['total']} exact "
          f"({acc['match_rate']:.1%}), CER {acc['cer']:.4f}")
    quantized = [k for k in results if k.startswith("mlx_q")]
    if quantized:
        print(f"\n{'MLX weights':22s}{'MB':>10s}" + "".join(f"{'b%d lines/s' % bs:>14s}" for bs in results["config"]["batch_sizes"])
              + f"{'vs float MLX':>16s}{'CER':>8s}")
        for name in ["mlx"] + quantized:
            r = results[name]
            if "error" in r:
                print(f"{r['bits']}-bit: failed ({r['error']})")
                continue
            label = "float (" + results["config"]["dtype"] + ")" if name == "mlx" else f"{r['bits']}-bit, group {r['group_size']}"
            rates = "".join(f"{r['inference']['per_batch_size'][str(bs)]['throughput']:14.2f}" for bs in results["config"]["batch_sizes"])
            a = r.get("agreement_vs_mlx_float")
            match = f"{a['exact_matches']:>9d}/{a['total']:<6d}{a['cer']:8.4f}" if a else f"{'(reference)':>16s}{'':8s}"
            print(f"{label:22s}{r['weight_mb']:10.1f}{rates}{match}")


def write_chart(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bss = results["config"]["batch_sizes"]
    x = np.arange(len(bss))
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, label) in enumerate((("pytorch", "PyTorch (transformers)"), ("mlx", "MLX"))):
        vals = [results[name]["inference"]["per_batch_size"][str(b)]["throughput"] for b in bss]
        bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    env = results["environment"]
    ax.set_xticks(x, [str(b) for b in bss])
    ax.set_xlabel("batch size")
    ax.set_ylabel("lines / s")
    ax.set_title(f"TrOCR {results['config']['dtype']} on {env.get('gpu') or env['cpu']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--images", nargs="+", help="text-line images and/or folders of them (default: synthetic lines)")
    ap.add_argument("--num-images", type=int, help="use this many images (default: all, or max batch size if synthetic)")
    ap.add_argument("--pytorch-model", help="transformers TrOCR checkpoint folder")
    ap.add_argument("--mlx-model", help="the same model converted to MLX (convert_trocr_to_mlx.py)")
    ap.add_argument("--random-trocr-base", action="store_true", help="random-weight trocr-base architecture, in memory")
    ap.add_argument("--max-length", type=int, default=64, help="max_length (start token included)")
    ap.add_argument("--new-tokens", type=int, help="generate exactly this many tokens (min = max new tokens)")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--num-beams", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches per batch size")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes over all images per batch size")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="PyTorch device")
    ap.add_argument("--quantize", help="also time MLX quantized to these bits, e.g. 8,4 (compared with float MLX)")
    ap.add_argument("--group-size", type=int, default=64, help="quantization group size (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="CPU threads for torch and for MLX's OpenBLAS (default: theirs)")
    ap.add_argument("--output", default="benchmark_results.json", help="JSON results")
    ap.add_argument("--chart", help="PNG chart (default: --output with .png)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    results = run_benchmark(args)
    print_table(results)
    out = save_json(results, args.output)  # the numbers first, then the chart
    chart = Path(args.chart) if args.chart else out.with_suffix(".png")
    write_chart(results, chart)
    print(f"wrote {out} and {chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Train TrOCR models in MLX: fine-tune a converted checkpoint or train a small one from scratch.

    # from scratch, on an endless synthetic stream of form-field lines (nothing stored on disk)
    python scripts/mlx_trainer.py train --out runs/small --synthetic --arch small --steps 20000 --batch-size 128

    # fine-tune a converted model on a manifest (CSV/JSONL with image,text), 5% held out for validation
    python scripts/mlx_trainer.py train --out runs/ft --init models/mlx/default --train-manifest data/mine.csv \\
        --steps 2000 --lr 1e-4 --augment 0.5

    # fine-tune on the fields a person reviewed (scripts/review_server.py writes corrections.csv); the
    # held-back part is read before and after, and the CER of both is printed
    python scripts/mlx_trainer.py train --out runs/reviewed --init models/mlx/default \\
        --manifest outputs/batch/corrections.csv --val-split 0.2 --steps 300 --lr 5e-5 --warmup 20 --eval-every 50

    # continue an interrupted run (model, optimizer, step and data position are restored)
    python scripts/mlx_trainer.py train --out runs/small --resume runs/small/last --steps 20000

    # export: our MLX folder (fp16, sharded) and transformers' format
    python scripts/mlx_trainer.py export-mlx runs/small/best models/mlx/default --dtype float16
    python scripts/mlx_trainer.py export-hf models/mlx/default models/pytorch/default

A run folder holds last/ (the resumable checkpoint: an MLX model folder plus optimizer.safetensors and
trainer_state.json), best/ (the model with the lowest validation CER, an MLX model folder), history.json
and curves.png (loss and CER). Model folders are in the layout `load_mlx_processor` reads:
config.json (transformers' VisionEncoderDecoder config), model.safetensors (or model-0000N-of-0000M
shards), generation_config.json, processor/{tokenizer.json, tokenizer_config.json, preprocessor_config.json}.

Training details: labels are the tokenizer's ids (<s> text </s>), the decoder input is the labels shifted
right behind decoder_start_token_id, pad positions are ignored by the loss (token-level cross-entropy,
label smoothing optional). AdamW with linear warmup then cosine decay, global-norm gradient clipping,
gradient accumulation (the loss is normalised by the tokens of the whole accumulated batch). With
--dtype bfloat16 (the default on a GPU) the forward/backward run in bf16 and AdamW updates fp32 master
weights. Every sample is a pure function of (seed, sample number), so a resumed run sees exactly the
data it would have seen.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])
    import scripts  # noqa: F401  (before mlx: OpenBLAS for MLX on Linux CPUs, scripts/cpu_blas.py)

import argparse
import collections
import contextlib
import csv
import functools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten
from PIL import Image

from scripts.metrics import cer, wer  # imported here: a missing rapidfuzz fails at start, not at the first validation
from scripts.mlx_models import DTYPES, TrOCR
from scripts.model_folder import new_model, read_generation_config, read_sharded, save_sharded, write_model_folder
from scripts.weights import check_and_load, fuse_projections, mlx_to_hf, split_projections

# --------------------------------------------------------------------------------------------------
# Model configs for from-scratch training
# --------------------------------------------------------------------------------------------------

ARCH_PRESETS = {
    # for tests: trains in seconds on a CPU
    "tiny": dict(image_size=[32, 128], patch_size=[16, 8], encoder_hidden=64, encoder_layers=2, encoder_heads=4,
                 encoder_mlp=128, decoder_d_model=64, decoder_layers=2, decoder_heads=4, decoder_ffn=128),
    # the bundled default model: ~9M parameters, wide input for form fields
    "small": dict(image_size=[64, 512], patch_size=[16, 8], encoder_hidden=256, encoder_layers=6, encoder_heads=8,
                  encoder_mlp=1024, decoder_d_model=256, decoder_layers=4, decoder_heads=8, decoder_ffn=1024),
}
ARCH_KEYS = tuple(ARCH_PRESETS["small"]) + ("max_positions", "activation", "tie_word_embeddings")


# --------------------------------------------------------------------------------------------------
# Exporting model folders (writing and reading them: scripts/model_folder.py)
# --------------------------------------------------------------------------------------------------


def probability(text: str) -> float:
    """argparse type of the share options: a number between 0 and 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability between 0 and 1, not {text}")
    return value


def export_mlx(src, dst, dtype: Optional[str] = "float16") -> Path:
    """Copy a model folder (a checkpoint's last/ or best/) to dst as a shippable MLX model: weights only,
    cast to `dtype`, sharded below 16 MB, no optimizer or trainer state."""
    from scripts.confidence import copy_calibration
    from scripts.mlx_models import load_model

    src = Path(src)
    model = load_model(src)
    gen = read_generation_config(src)
    folder = write_model_folder(dst, model.config, dict(tree_flatten(model.parameters())), src / "processor",
                                dtype=dtype, max_length=gen.get("max_length", 64), generation=gen)
    copy_calibration(src, folder)  # the review flag's threshold (scripts/confidence.py) goes with the model
    return folder


def _flat_config(d: dict, prefix: str = "") -> dict:
    """A nested config.json as one level: {"decoder.decoder_ffn_dim": 1024, ...}."""
    out = {}
    for k, v in d.items():
        out.update(_flat_config(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def average_models(srcs: Sequence, dst, dtype: Optional[str] = "float16") -> Path:
    """A model whose every weight is the mean of the same weight in `srcs` (a "model soup": runs fine-tuned
    from one model often average into one that keeps what each learnt). The models must share their
    architecture. The first one's processor and decoding settings are copied, not its calibration: the
    soup's scores are its own (scripts/calibrate_confidence.py --write)."""
    from scripts.mlx_models import load_model

    if len(srcs) < 2:
        raise ValueError(f"average needs two or more model folders, got {len(srcs)}")
    models = [load_model(Path(s)) for s in srcs]
    first = _flat_config(models[0].config.hf_config)
    for src, model in zip(srcs[1:], models[1:]):
        other = _flat_config(model.config.hf_config)
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if diff:
            raise ValueError(f"{src} has another architecture than {srcs[0]} (config differs in {diff}): "
                             f"only models of one shape can be averaged")
    flats = [dict(tree_flatten(m.parameters())) for m in models]
    mean = {k: sum(f[k].astype(mx.float32) for f in flats) / len(flats) for k in flats[0]}
    src = Path(srcs[0])
    gen = read_generation_config(src)
    return write_model_folder(dst, models[0].config, mean, src / "processor", dtype=dtype,
                              max_length=gen.get("max_length", 64), generation=gen)


def export_hf(src, dst) -> Path:
    """Our MLX model folder -> a transformers checkpoint folder, written by the installed transformers' own
    save_pretrained (model, generation config, TrOCRProcessor): the layout a transformers fine-tune has.
    Loads with VisionEncoderDecoderModel.from_pretrained(dst) and TrOCRProcessor.from_pretrained(dst)."""
    try:
        import torch
        from transformers import (AutoImageProcessor, AutoTokenizer, GenerationConfig, TrOCRProcessor,
                                  VisionEncoderDecoderConfig, VisionEncoderDecoderModel)
    except ImportError:
        raise RuntimeError("export-hf writes the checkpoint with transformers' own save_pretrained: it needs torch "
                           "and transformers (./setup_mlx.sh installs them)") from None
    from scripts.mlx_models import load_model

    src, dst = Path(src), Path(dst)
    model = load_model(src)
    state = {k: torch.from_numpy(np.ascontiguousarray(v))
             for k, v in mlx_to_hf(dict(tree_flatten(model.parameters())), model.config).items()}
    torch.manual_seed(0)  # the ViT pooler, which TrOCR never uses, keeps transformers' init: make it repeatable
    hf = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_dict(model.config.hf_config)).eval()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    unused = {"decoder.output_projection.weight"} if model.config.decoder.tie_word_embeddings else set()
    missing = [k for k in missing if k not in unused and not k.startswith("encoder.pooler.")]
    if missing or unexpected:
        raise ValueError(f"{src}: transformers' TrOCR for this config has other weights (missing {missing}, "
                         f"unexpected {unexpected})")
    gen = read_generation_config(src)
    if gen:
        hf.generation_config = GenerationConfig.from_dict(gen)
    hf.save_pretrained(dst)
    processor = TrOCRProcessor(image_processor=AutoImageProcessor.from_pretrained(src / "processor"),
                               tokenizer=AutoTokenizer.from_pretrained(src / "processor"))
    processor.save_pretrained(dst)
    from scripts.confidence import copy_calibration

    copy_calibration(src, dst)  # the review flag's threshold (scripts/confidence.py) goes with the model
    return dst


# --------------------------------------------------------------------------------------------------
# Data: manifests, labelled folders, and the synthetic stream
# --------------------------------------------------------------------------------------------------


def read_labels(path) -> list[dict]:
    """(image, text) rows from a CSV (columns image,text; more are kept), a JSONL ({"image", "text"} per line),
    or a folder holding images and a labels file (labels.csv / labels.jsonl / labels.tsv / labels.txt with
    'file<TAB>text' lines). Image paths are made absolute, relative to the manifest's folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("manifest.csv", "labels.csv", "labels.jsonl", "labels.tsv", "labels.txt", "manifest.jsonl"):
            if (path / name).exists():
                return read_labels(path / name)
        raise FileNotFoundError(f"{path}: no labels file (labels.csv, labels.jsonl, labels.tsv, labels.txt or manifest.csv)")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix in (".tsv", ".txt"):
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                image, _, text = line.partition("\t")
                rows.append({"image": image, "text": text})
    else:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if "image" not in row or "text" not in row:
            raise ValueError(f"{path}: row {i + 1} lacks 'image' or 'text'")
        row["image"] = str((path.parent / row["image"]).resolve())
    return rows


def split_rows(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, held-back validation rows): a random `val_fraction` of them, at least one of each
    when there are two or more rows and val_fraction > 0 (a small corrections manifest still validates)."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_val = int(round(len(rows) * val_fraction))
    if val_fraction > 0 and len(rows) >= 2:
        n_val = min(max(n_val, 1), len(rows) - 1)
    return [rows[i] for i in order[n_val:]], [rows[i] for i in order[:n_val]]


class ManifestSource:
    """Labelled images; sample k of the stream is row perm(epoch)[k % n], augmented with synth_data.warp
    (shape) and synth_data.degrade (scan damage)."""

    def __init__(self, rows: list[dict], seed: int = 0, augment: float = 0.0, shuffle: bool = True, warp: float = 0.0):
        self.rows, self.seed, self.augment, self.shuffle, self.warp = rows, seed, augment, shuffle, warp
        self._perm = {}

    def __len__(self):
        return len(self.rows)

    def index(self, k: int) -> int:
        if not self.shuffle:
            return k % len(self.rows)
        epoch = k // len(self.rows)
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))}
        return int(self._perm[epoch][k % len(self.rows)])

    def get(self, k: int) -> tuple[Image.Image, str]:
        row = self.rows[self.index(k)]
        img = Image.open(row["image"])
        img.load()
        if self.warp > 0:
            from scripts.synth_data import warp

            img = warp(img, np.random.default_rng([self.seed, 8, k]), self.warp)
        if self.augment > 0:
            from scripts.synth_data import degrade

            img = degrade(img, np.random.default_rng([self.seed, 7, k]), self.augment)
        return img, row["text"]


class SynthSource:
    """An endless stream of rendered form-field lines: sample k = synth_data.make_sample(k, seed, ...)."""

    def __init__(self, seed: int = 0, style: str = "both", font_split: str = "train", fonts=None, exclude=None,
                 kinds=None, strength: float = 1.0, height: int = 64, warp: float = 0.0, layout=None,
                 handwriting_share: float | None = None, glyph_share: float = 0.0, oldstyle_share: float = 0.0,
                 glyph_shape_share: float = 0.0):
        from scripts import synth_data

        args = argparse.Namespace(style=style, font_split=font_split, fonts=fonts, exclude_fonts=exclude)
        chosen = synth_data._select_fonts(args)
        self.fonts = [(p, s) for p, s in chosen.items() if synth_data.font_problem(p) is None]
        if not self.fonts:
            raise ValueError("no usable font for the synthetic stream (./setup_mlx.sh --fonts installs them)")
        self.seed, self.kinds, self.strength, self.height = seed, tuple(kinds or synth_data.FIELD_KINDS), strength, height
        self.warp, self.layout, self.handwriting_share, self.glyph_share = warp, layout, handwriting_share, glyph_share
        self.oldstyle_share, self.glyph_shape_share = oldstyle_share, glyph_shape_share

    def get(self, k: int) -> tuple[Image.Image, str]:
        from scripts.synth_data import make_sample

        img, row = make_sample(k, self.seed, self.fonts, kinds=self.kinds, height=self.height, strength=self.strength,
                               warp_strength=self.warp, layout=self.layout,
                               handwriting_share=self.handwriting_share, glyph_share=self.glyph_share,
                               oldstyle_share=self.oldstyle_share, glyph_shape_share=self.glyph_shape_share)
        return img, row["text"]

    def describe(self) -> dict:
        from scripts.synth_data import font_name

        return {"seed": self.seed, "kinds": list(self.kinds), "strength": self.strength, "warp": self.warp,
                "layout": self.layout or "mix", "handwriting_share": self.handwriting_share,
                "glyph_share": self.glyph_share, "oldstyle_share": self.oldstyle_share,
                "glyph_shape_share": self.glyph_shape_share,
                "fonts": sorted(f"{font_name(p)} ({s})" for p, s in self.fonts)}


def to_pixels(img: Image.Image, image_size) -> np.ndarray:
    """uint8 (H, W, C): what ImagePreprocessor resizes before rescaling (PIL bilinear). Grayscale images
    stay one channel (C=1; the trainer repeats it, as RGB conversion would) to move 3x less data."""
    h, w = image_size
    img = img if img.mode in ("L", "RGB") else img.convert("RGB")
    if img.size != (w, h):
        img = img.resize((w, h), resample=Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def stack_pixels(arrays: Sequence[np.ndarray]) -> np.ndarray:
    if len({a.shape[-1] for a in arrays}) > 1:
        arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    return np.stack(arrays)


_WORKER_SOURCE = None


def _init_worker(source):
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextlib.contextmanager
def _one_opencv_thread():
    """OpenCV on one thread while the pool's workers are forked, so that they inherit it: a worker is one
    core's work, and OpenCV's own pool (a thread per core in every worker) only burns CPU time: up to 1.4x
    the CPU time per rendered line (dev/bench_render.py, shared 2-core EPYC, 2026-12-02). Set in the parent:
    cv2.setNumThreads in a forked child deadlocks once the parent has used OpenCV's threads. The parent
    gets its own setting back afterwards."""
    try:
        import cv2
    except ImportError:
        yield
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _render_chunk(ks: Sequence[int], image_size, source=None):
    source = source or _WORKER_SOURCE
    pixels, texts = [], []
    for k in ks:
        img, text = source.get(k)
        pixels.append(to_pixels(img, image_size))
        texts.append(text)
    return stack_pixels(pixels), texts


class BatchStream:
    """Batches of (uint8 pixels, texts) for sample numbers [start, start + n), rendered ahead in a pool.

    Sample numbers are global (batch b of size B holds samples b*B .. b*B+B-1), so the stream restarts
    exactly where a checkpoint left it. workers=0 renders in this process."""

    def __init__(self, source, image_size, batch_size: int, workers: int = 0, chunk: int = 16, prefetch: int = 4):
        self.source, self.image_size, self.batch_size = source, tuple(image_size), batch_size
        self.workers, self.chunk = workers, max(1, min(chunk, batch_size))
        self.pool = None
        self.pending = collections.deque()
        self.next_batch = None
        self.prefetch = prefetch
        if workers > 0:
            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with _one_opencv_thread():
                self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=(source,))

    def _submit(self, b: int):
        ks = list(range(b * self.batch_size, (b + 1) * self.batch_size))
        parts = [ks[i:i + self.chunk] for i in range(0, len(ks), self.chunk)]
        jobs = [self.pool.apply_async(_render_chunk, (p, self.image_size)) for p in parts]
        self.pending.append((b, jobs))

    def batch(self, b: int) -> tuple[np.ndarray, list[str]]:
        if self.pool is None:
            return _render_chunk(range(b * self.batch_size, (b + 1) * self.batch_size), self.image_size, self.source)
        if self.next_batch != b:  # first call or a jump: restart the queue here
            self.pending.clear()
            self.next_batch = b
        ahead = max(self.prefetch, 2 * self.workers * self.chunk // self.batch_size + 1)
        while len(self.pending) < ahead:
            self._submit(self.next_batch + len(self.pending))
        got, jobs = self.pending.popleft()
        assert got == b
        self.next_batch = b + 1
        parts = [j.get() for j in jobs]
        return stack_pixels([a for p, _ in parts for a in p]), [t for _, ts in parts for t in ts]

    def close(self):
        if self.pool is not None:
            for _, jobs in self.pending:  # let workers finish their writes: terminating one mid-write can hang join
                for job in jobs:
                    job.wait(30)
            self.pending.clear()
            self.pool.terminate()
            self.pool.join()
            self.pool = None


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


def lr_at(step: int, peak: float, warmup: int, total: int, final_fraction: float = 0.02) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine decay to final_fraction * peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainer:
    """An MLX TrOCR, its fp32 master weights, AdamW state and step; train_step / evaluate / save / load."""

    def __init__(self, model: TrOCR, processor_dir, *, lr: float = 5e-4, warmup: int = 500, total_steps: int = 10000,
                 weight_decay: float = 0.01, clip: float = 1.0, label_smoothing: float = 0.0, accum: int = 1,
                 dtype: str = "float32", max_target_length: int = 72, seed: int = 0, final_lr_fraction: float = 0.02):
        from scripts.image_settings import read_image_settings
        from scripts.mlx_processor import ImagePreprocessor, TextDecoder

        self.model, self.config = model, model.config
        self.processor_dir = Path(processor_dir)
        self.text = TextDecoder(self.processor_dir)
        settings, settings_file = read_image_settings(self.processor_dir)
        self.preprocessor = ImagePreprocessor(settings, self.config.encoder.image_size, str(settings_file))
        if settings.do_center_crop or "height" not in settings.size or settings.resample != Image.BILINEAR:
            # the training batches are resized by to_pixels (bilinear to the model's size, on worker processes)
            raise ValueError(f"{settings_file}: the trainer resizes bilinearly to height x width; this image "
                             f"processor ({settings.describe()}, resample {settings.resample}) would differ at inference")
        self.mean = mx.array(self.preprocessor.mean) if self.preprocessor.do_normalize else mx.zeros(3)
        self.std = mx.array(self.preprocessor.std) if self.preprocessor.do_normalize else mx.ones(3)
        self.scale = float(self.preprocessor.rescale_factor) if self.preprocessor.do_rescale else 1.0
        self.lr, self.warmup, self.total_steps, self.final_lr_fraction = lr, warmup, total_steps, final_lr_fraction
        self.clip, self.label_smoothing, self.accum = clip, label_smoothing, accum
        self.dtype = dtype
        self.max_target_length = max_target_length
        self.generation: dict = {}  # decoding settings saved with the model (train(): those of --init / --resume)
        self.seed = seed
        self.step = 0
        self.best_cer = float("inf")
        self.history = {"train": [], "val": []}
        self.master = {k: v.astype(mx.float32) for k, v in tree_flatten(model.parameters())}
        self.model.set_dtype(DTYPES[dtype])
        self._sync_model()
        self.optimizer = optim.AdamW(learning_rate=lr, weight_decay=weight_decay, bias_correction=True)
        self.optimizer.init(self.master)
        self._build_steps()

    # -- pieces --------------------------------------------------------------------------------------
    def _sync_model(self):
        dt = DTYPES[self.dtype]
        self.model.update(tree_unflatten([(k, v.astype(dt)) for k, v in self.master.items()]))

    def _build_steps(self):
        model, pad, smoothing = self.model, self.config.pad_token_id, self.label_smoothing
        mean, std, scale, dt = self.mean, self.std, self.scale, DTYPES[self.dtype]

        def loss_fn(pixels_u8, dec_in, labels):
            if pixels_u8.shape[-1] == 1:  # grayscale: as RGB conversion would
                pixels_u8 = mx.repeat(pixels_u8, 3, axis=-1)
            x = ((pixels_u8.astype(mx.float32) * scale - mean) / std).astype(dt)
            logits = model(x, dec_in).astype(mx.float32)
            mask = labels != pad
            ce = nn.losses.cross_entropy(logits, labels, label_smoothing=smoothing)
            return (ce * mask).sum(), mask.sum()

        loss_and_grad = nn.value_and_grad(model, loss_fn)

        def grad_step(pixels_u8, dec_in, labels):
            (loss_sum, ntok), grads = loss_and_grad(pixels_u8, dec_in, labels)
            return loss_sum, ntok, grads

        def update(grads, ntok):
            flat = {k: g.astype(mx.float32) / ntok for k, g in tree_flatten(grads)}
            flat, norm = optim.clip_grad_norm(flat, self.clip) if self.clip > 0 else (flat, optim_norm(flat))
            new = self.optimizer.apply_gradients(flat, self.master)
            self.master.update(new)
            self.model.update(tree_unflatten([(k, v.astype(dt)) for k, v in new.items()]))
            return norm

        self._loss = mx.compile(loss_fn, inputs=[model.state])
        # nn.value_and_grad swaps the traced parameters into the model: declare them as outputs too
        self._grad_step = mx.compile(grad_step, inputs=[model.state], outputs=[model.state])
        state = [model.state, self.optimizer.state, self.master]
        self._update = mx.compile(update, inputs=state, outputs=state)

    def encode_texts(self, texts: Sequence[str]) -> tuple[mx.array, mx.array]:
        """(decoder inputs, labels), both (B, L) int32, L a multiple of 8: labels = <s> text </s> + pads,
        decoder inputs = labels shifted right behind decoder_start_token_id."""
        pad, start, eos = self.config.pad_token_id, self.config.decoder_start_token_id, self.config.eos_token_id
        ids = [self.text.encode(t) for t in texts]
        ids = [x if len(x) <= self.max_target_length else x[:self.max_target_length - 1] + [eos] for x in ids]
        length = -(-max(len(x) for x in ids) // 8) * 8
        labels = np.full((len(ids), length), pad, np.int32)
        for i, x in enumerate(ids):
            labels[i, :len(x)] = x
        dec_in = np.concatenate([np.full((len(ids), 1), start, np.int32), labels[:, :-1]], axis=1)
        return mx.array(dec_in), mx.array(labels)

    def current_lr(self) -> float:
        return lr_at(self.step, self.lr, self.warmup, self.total_steps, self.final_lr_fraction)

    def train_step(self, micro_batches: Sequence[tuple[np.ndarray, Sequence[str]]]) -> dict:
        """One optimizer step over `accum` micro-batches of (uint8 pixels (B, H, W, 3), texts)."""
        lr = self.current_lr()
        self.optimizer.learning_rate = mx.array(lr, dtype=mx.float32)
        total_loss, total_tok, grads = mx.array(0.0), mx.array(0), None
        for pixels, texts in micro_batches:
            dec_in, labels = self.encode_texts(texts)
            loss_sum, ntok, g = self._grad_step(mx.array(pixels), dec_in, labels)
            grads = g if grads is None else _tree_add(grads, g)
            total_loss, total_tok = total_loss + loss_sum, total_tok + ntok
            if len(micro_batches) > 1:  # bounds memory
                mx.eval(grads, total_loss, total_tok)
        norm = self._update(grads, total_tok.astype(mx.float32))
        mx.eval(total_loss, total_tok, norm, self.master, self.optimizer.state)
        self.step += 1
        loss = (total_loss / total_tok).item()
        return {"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm.item(), "tokens": total_tok.item()}

    def loss_on(self, pixels: np.ndarray, texts: Sequence[str]) -> float:
        dec_in, labels = self.encode_texts(texts)
        loss_sum, ntok = self._loss(mx.array(pixels), dec_in, labels)
        return (loss_sum / ntok).item()

    def processor(self, max_length: Optional[int] = None):
        """The model as an MLXTrOCRProcessor (greedy decoding, as the handlers use it)."""
        from scripts.decoding import GenerationConfig
        from scripts.mlx_processor import MLXTrOCRProcessor

        gen = GenerationConfig.from_dict({"max_length": max_length or self.max_target_length,
                                          "decoder_start_token_id": self.config.decoder_start_token_id,
                                          "eos_token_id": self.config.eos_token_id,
                                          "pad_token_id": self.config.pad_token_id})
        return MLXTrOCRProcessor(self.model, self.preprocessor, self.text, gen)

    def evaluate(self, images: Sequence, texts: Sequence[str], batch_size: int = 64) -> dict:
        hyps = self.processor().process_batch(list(images), batch_size=batch_size, show_progress=False)
        return {"cer": cer(texts, hyps), "wer": wer(texts, hyps), "n": len(texts), "examples": list(zip(texts, hyps))[:5]}

    # -- checkpoints ---------------------------------------------------------------------------------
    def save_model(self, folder, dtype: Optional[str] = None) -> Path:
        return write_model_folder(folder, self.config, dict(self.master), self.processor_dir, dtype=dtype,
                                  max_length=self.max_target_length, generation=self.generation)

    def save_checkpoint(self, folder, extra: Optional[dict] = None) -> Path:
        """A resumable checkpoint: an MLX model folder (fp32 master weights) + optimizer + trainer state."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.save_model(tmp)
        opt, moments = {}, {}
        for k, v in self.optimizer.state.items():
            if isinstance(v, dict):
                for sub, a in v.items():
                    moments.setdefault(sub, {})[k] = a
            else:
                opt[k] = v
        for sub, per_param in moments.items():  # in the weights' checkpoint layout (separate q/k/v)
            opt.update({f"{k}::{sub}": a for k, a in split_projections(per_param).items()})
        save_sharded(tmp, "optimizer", opt)
        state = {"step": self.step, "best_cer": self.best_cer, "history": self.history, "seed": self.seed,
                 "lr": self.lr, "warmup": self.warmup, "total_steps": self.total_steps, "dtype": self.dtype,
                 "accum": self.accum, "label_smoothing": self.label_smoothing, "clip": self.clip,
                 "max_target_length": self.max_target_length, **(extra or {})}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder

    def load_checkpoint(self, folder) -> dict:
        folder = Path(folder)
        weights = read_sharded(folder, "model")
        check_and_load(self.model, weights, source=str(folder))
        self.master = {k: v.astype(mx.float32) for k, v in tree_flatten(self.model.parameters())}
        self.model.set_dtype(DTYPES[self.dtype])
        self._sync_model()
        try:
            flat = read_sharded(folder, "optimizer")
        except FileNotFoundError:
            print(f"[trainer] {folder}: no optimizer state; AdamW moments start from zero", file=sys.stderr)
            flat = None
        self.optimizer.init(self.master)
        if flat is not None:
            state, moments = self.optimizer.state, {}
            for k, v in flat.items():
                if "::" in k:
                    name, sub = k.split("::")
                    moments.setdefault(sub, {})[name] = v
                else:
                    state[k] = v
            for sub, per_param in moments.items():
                for name, v in fuse_projections(per_param, self.master).items():
                    state[name][sub] = v
        ts = json.loads((folder / "trainer_state.json").read_text())
        self.step, self.best_cer, self.history = ts["step"], ts.get("best_cer", float("inf")), ts.get("history", self.history)
        self._build_steps()  # the compiled update must see the new master/optimizer containers
        mx.eval(self.master, self.optimizer.state)
        return ts

    def state_arrays(self) -> dict:
        """Everything that defines the training state, flattened (for tests)."""
        out = {f"model/{k}": v for k, v in self.master.items()}
        for k, v in tree_flatten(self.optimizer.state):
            out[f"opt/{k}"] = v
        return out


def _tree_add(a, b):
    fa, fb = tree_flatten(a), dict(tree_flatten(b))
    return tree_unflatten([(k, v + fb[k]) for k, v in fa])


def optim_norm(flat: dict) -> mx.array:
    return mx.sqrt(sum((g.astype(mx.float32) ** 2).sum() for g in flat.values()))


# --------------------------------------------------------------------------------------------------
# Run driver (used by the CLI)
# --------------------------------------------------------------------------------------------------


def _growable_config(model: TrOCR) -> dict:
    """A copy of `model`'s config.json for a grown model to change (a quantized model cannot grow)."""
    import copy

    if model.config.quantization:
        raise ValueError("a quantized model cannot be grown: start from its float weights")
    return copy.deepcopy(model.config.hf_config)


def _rebuilt(model: TrOCR, hf: dict, seed: int, carry_over) -> TrOCR:
    """A model of config `hf` with transformers-like random weights, into which `carry_over(new, old)` puts
    `model`'s trained weights (both flat name -> array dicts; it changes `new` in place)."""
    from scripts.mlx_models import TrOCRConfig
    from scripts.model_folder import init_weights

    grown = TrOCR(TrOCRConfig.from_hf(hf))
    init_weights(grown, seed)
    new = dict(tree_flatten(grown.parameters()))
    carry_over(new, dict(tree_flatten(model.parameters())))
    grown.load_weights([(k, v.astype(model.dtype)) for k, v in new.items()])
    mx.eval(grown.parameters())
    return grown


def grow_encoder(model: TrOCR, num_layers: int, seed: int = 0) -> TrOCR:
    """`model` with `num_layers` encoder blocks that reads exactly as `model` does before any training step.

    The old blocks keep their order; new ones are spread evenly between them (Net2Net-style deepening), with
    transformers-like random weights except their attention output and fc2, which are zero: a pre-norm ViT
    block whose two branches output zero passes its input through unchanged, and the zero matrices still get
    gradients, so training can put the extra depth to use. Only the encoder grows this way: the TrOCR
    decoder's blocks are post-norm (a zeroed block would still re-normalise its input)."""
    old = model.config.encoder.num_hidden_layers
    if num_layers < old:
        raise ValueError(f"--grow-encoder-layers {num_layers}: the model already has {old} encoder blocks")
    hf = _growable_config(model)
    if num_layers == old:
        return model
    hf["encoder"]["num_hidden_layers"] = num_layers
    slots = [round(i * num_layers / old) for i in range(old)]  # where old block i goes

    def carry_over(new: dict, trained: dict) -> None:
        for name, value in trained.items():
            if name.startswith("encoder.layers."):
                index, rest = name[len("encoder.layers."):].split(".", 1)
                name = f"encoder.layers.{slots[int(index)]}.{rest}"
            new[name] = value
        for i in set(range(num_layers)) - set(slots):
            for part in ("attn.out_proj.weight", "attn.out_proj.bias", "fc2.weight", "fc2.bias"):
                new[f"encoder.layers.{i}.{part}"] = mx.zeros_like(new[f"encoder.layers.{i}.{part}"])

    return _rebuilt(model, hf, seed, carry_over)


def grow_mlp(model: TrOCR, encoder_mlp: int | None = None, decoder_ffn: int | None = None, seed: int = 0) -> TrOCR:
    """`model` with wider feed-forward layers (encoder MLP, decoder FFN) that reads exactly as `model` does.

    The old hidden units keep their weights; each new unit gets transformers-like random input weights and
    a zero output column in fc2, so it adds nothing before training and gets gradients from the first step
    (Net2Net-style widening of the hidden layer only: the residual width, which the layer norms see, does
    not change, so this holds for the pre-norm encoder and the post-norm decoder alike)."""
    hf = _growable_config(model)
    for option, part, key, width in (("--grow-encoder-mlp", "encoder", "intermediate_size", encoder_mlp),
                                     ("--grow-decoder-ffn", "decoder", "decoder_ffn_dim", decoder_ffn)):
        if width is not None:
            old = hf[part][key]
            if width < old:
                raise ValueError(f"{option} {width}: the model's {part} feed-forward layers are already {old} wide")
            hf[part][key] = width
    if hf == model.config.hf_config:
        return model

    def carry_over(new: dict, trained: dict) -> None:
        for name, value in trained.items():
            target = new[name]
            if target.shape != value.shape:  # fc1 rows / bias, or fc2 columns, of a widened layer
                if name.endswith("fc2.weight"):
                    value = mx.concatenate([value, mx.zeros((value.shape[0], target.shape[1] - value.shape[1]),
                                                            dtype=value.dtype)], axis=1)
                else:  # fc1.weight (more rows) or fc1.bias (more entries): the new units' random input weights
                    value = mx.concatenate([value, target[value.shape[0]:].astype(value.dtype)], axis=0)
            new[name] = value

    return _rebuilt(model, hf, seed, carry_over)


def build_model(args) -> tuple[TrOCR, Path, Path]:
    """(model, processor dir, work dir for new processor files) for --init, --resume or a new --arch."""
    grow = getattr(args, "grow_encoder_layers", None)
    widen = {"encoder_mlp": getattr(args, "grow_encoder_mlp", None), "decoder_ffn": getattr(args, "grow_decoder_ffn", None)}
    if (grow or any(widen.values())) and not args.init:
        raise ValueError("--grow-encoder-layers / --grow-encoder-mlp / --grow-decoder-ffn grow the --init model: "
                         "give --init DIR (a resumed run keeps the shape it was saved with)")
    if args.resume or args.init:
        from scripts.mlx_models import load_model

        src = Path(args.resume or args.init)
        model = load_model(src)
        if grow:
            before = model.config.encoder.num_hidden_layers
            model = grow_encoder(model, grow, args.seed)
            print(f"[trainer] encoder grown from {before} to {grow} blocks (new blocks start as identity)", flush=True)
        if any(widen.values()):
            before = (model.config.encoder.intermediate_size, model.config.decoder.decoder_ffn_dim)
            model = grow_mlp(model, seed=args.seed, **widen)
            after = (model.config.encoder.intermediate_size, model.config.decoder.decoder_ffn_dim)
            print(f"[trainer] feed-forward widths (encoder MLP, decoder FFN) {before} -> {after} "
                  "(new units start with zero output weights)", flush=True)
        return model, src / "processor", None
    arch = dict(ARCH_PRESETS["small"])
    if args.arch in ARCH_PRESETS:
        arch = dict(ARCH_PRESETS[args.arch])
    elif args.arch:
        arch.update(json.loads(Path(args.arch).read_text()) if Path(args.arch).exists() else json.loads(args.arch))
    for key in ARCH_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            arch[key] = value
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}; known: {', '.join(ARCH_KEYS)}")
    processor_dir = Path(args.out) / "processor"
    return new_model(arch, processor_dir, args.seed), processor_dir, processor_dir


def make_sources(args, image_size):
    """(train source, validation (images, texts))."""
    if args.synthetic:
        kw = dict(style=args.synth_style, font_split="train", fonts=args.fonts, exclude=args.exclude_fonts,
                  kinds=args.kinds, strength=args.synth_strength, height=image_size[0], warp=args.warp,
                  layout=None if args.layout == "mix" else args.layout, handwriting_share=args.handwriting_share,
                  glyph_share=args.glyph_share, oldstyle_share=args.oldstyle_share,
                  glyph_shape_share=args.glyph_shape_share)
        train = SynthSource(seed=args.seed, **kw)
        val_src = SynthSource(seed=args.seed + 100_000, **kw)
        val = [val_src.get(k) for k in range(args.val_size)]
        return train, ([im for im, _ in val], [t for _, t in val])
    if not args.train_manifest:
        raise ValueError("no training data: give --synthetic, --train-manifest FILE or --train-manifest FOLDER")
    rows = read_labels(args.train_manifest)
    if not rows:
        raise ValueError(f"{args.train_manifest}: no labelled lines")
    if args.val_manifest:
        val_rows = read_labels(args.val_manifest)
    else:
        rows, val_rows = split_rows(rows, args.val_split, args.seed)
    val_rows = val_rows[:args.val_size]
    train = ManifestSource(rows, seed=args.seed, augment=args.augment, warp=args.warp)
    return train, ([Image.open(r["image"]).convert("RGB") for r in val_rows], [r["text"] for r in val_rows])


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if history["train"]:
        steps = np.array([h["step"] for h in history["train"]])
        loss = np.array([h["loss"] for h in history["train"]])
        a.plot(steps, loss, lw=0.5, alpha=0.4, label="loss")
        k = max(1, len(loss) // 50)
        if len(loss) >= k:
            a.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
        a.set_yscale("log")
    a.set_xlabel("step"), a.set_ylabel("train loss"), a.grid(alpha=0.3)
    if history["train"]:  # validation before the first step (--init) has no loss to show yet
        a.legend()
    if history["val"]:
        b.plot([h["step"] for h in history["val"]], [100 * h["cer"] for h in history["val"]], "o-", label="CER")
        b.plot([h["step"] for h in history["val"]], [100 * h["wer"] for h in history["val"]], "s--", label="WER")
        if any(h["cer"] > 0 or h["wer"] > 0 for h in history["val"]):  # all zero: a log axis has nothing to show
            b.set_yscale("log")
    b.set_xlabel("step"), b.set_ylabel("validation error (%)"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(args) -> dict:
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed)
    dtype = args.dtype or ("bfloat16" if mx.default_device() == mx.gpu else "float32")
    model, processor_dir, _ = build_model(args)
    image_size = model.config.encoder.image_size
    source, (val_images, val_texts) = make_sources(args, image_size)
    stream = BatchStream(source, image_size, args.batch_size, workers=args.workers)
    trainer = Trainer(model, processor_dir, lr=args.lr, warmup=args.warmup, total_steps=args.steps,
                      weight_decay=args.weight_decay, clip=args.clip, label_smoothing=args.label_smoothing,
                      accum=args.accum, dtype=dtype, max_target_length=args.max_target_length, seed=args.seed)
    if args.resume:
        trainer.load_checkpoint(args.resume)
    if args.resume or args.init:
        # e.g. the bundled model's 4 beams: its fine-tunes read (and are calibrated) the same way unless told;
        # write_model_folder writes this model's own token ids and max_length over the rest
        trainer.generation = read_generation_config(args.resume or args.init)
    if processor_dir != out / "processor":
        shutil.copytree(processor_dir, out / "processor", dirs_exist_ok=True)
        trainer.processor_dir = out / "processor"
    n = sum(v.size for v in trainer.master.values())
    info = {"parameters": n, "dtype": dtype, "device": str(mx.default_device()), "image_size": list(image_size),
            "data": source.describe() if hasattr(source, "describe") else {"train_rows": len(source)}}
    print(f"[trainer] {n / 1e6:.2f}M parameters, {dtype} on {mx.default_device()}, image {image_size}, "
          f"batch {args.batch_size}x{args.accum}, step {trainer.step} -> {args.steps}", flush=True)
    (out / "run_info.json").write_text(json.dumps({**info, "args": vars(args)}, indent=1, default=str))

    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=trainer.step, desc="train", unit="step", dynamic_ncols=True,
               mininterval=args.bar_interval, file=sys.stdout)
    last_val = None
    before = None  # validation CER of the --init model, before any step
    recent = collections.deque(maxlen=50)
    t_loop = time.time()
    steps_this_run = 0

    def validate():
        nonlocal last_val
        res = trainer.evaluate(val_images, val_texts, batch_size=args.eval_batch_size)
        last_val = res["cer"]
        trainer.history["val"].append({"step": trainer.step, "cer": res["cer"], "wer": res["wer"],
                                       "time": time.time() - t_start})
        improved = res["cer"] < trainer.best_cer
        if improved:
            trainer.best_cer = res["cer"]
            trainer.save_model(out / "best")
        ex = "; ".join(f"{r!r}->{h!r}" for r, h in res["examples"][:2])
        tqdm.write(f"[val] step {trainer.step}: CER {res['cer']:.2%} WER {res['wer']:.2%}"
                   f"{' (best)' if improved else ''} | {ex}", file=sys.stdout)
        plot_curves(trainer.history, out / "curves.png")

    def run_steps() -> str:
        nonlocal steps_this_run
        while trainer.step < args.steps:
            b0 = trainer.step * args.accum
            micro = [stream.batch(b0 + i) for i in range(args.accum)]
            rec = trainer.train_step(micro)
            steps_this_run += 1
            recent.append(rec["loss"])
            trainer.history["train"].append({k: rec[k] for k in ("step", "loss", "lr", "grad_norm")})
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.4f}", lr=f"{rec['lr']:.2e}",
                            cer="-" if last_val is None else f"{last_val:.2%}", refresh=False)
            if args.eval_every and trainer.step % args.eval_every == 0:
                validate()
            if args.save_every and trainer.step % args.save_every == 0:
                trainer.save_checkpoint(out / "last")
            if args.time_limit and time.time() - t_start > args.time_limit:
                return "time limit"
        return "steps"

    try:  # the rendering pool is shut down last, once the checkpoint is on disk
        if args.init and not args.resume and val_texts:
            validate()  # the starting point: best/ is never worse than the model fine-tuned from
            before = last_val
        try:
            stop_reason = run_steps()
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            bar.close()
        elapsed = time.time() - t_loop
        if trainer.history["val"] == [] or trainer.history["val"][-1]["step"] != trainer.step:
            validate()
        trainer.save_checkpoint(out / "last")
        (out / "history.json").write_text(json.dumps(trainer.history))
        plot_curves(trainer.history, out / "curves.png")
    finally:
        stream.close()
    summary = {"step": trainer.step, "stopped": stop_reason, "val_lines": len(val_texts), "cer_before": before,
               "best_cer": trainer.best_cer, "last_cer": last_val,
               "steps_per_second": steps_this_run / elapsed if elapsed > 0 else None,
               "samples_per_second": steps_this_run * args.batch_size * args.accum / elapsed if elapsed > 0 else None,
               "seconds": time.time() - t_start}
    if before is not None:
        best_step = min(trainer.history["val"], key=lambda h: h["cer"])["step"]
        print(f"[trainer] held-back validation ({len(val_texts)} lines): CER {before:.2%} before, "
              f"{trainer.best_cer:.2%} best (step {best_step}, in {out / 'best'}), {last_val:.2%} at the last step",
              flush=True)
    print(f"[trainer] {json.dumps(summary)}", flush=True)
    return summary


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _pair_arg(text: str) -> list[int]:
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    return parts * 2 if len(parts) == 1 else parts


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train or fine-tune a model (see train --help)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--out", required=True, help="run folder: last/ (checkpoint), best/ (model), curves.png, history.json")
    g = t.add_argument_group("model (one of --init, --resume, or a new architecture)")
    g.add_argument("--init", metavar="DIR", help="fine-tune this MLX model folder (e.g. models/mlx/default)")
    g.add_argument("--resume", metavar="DIR", help="continue from a checkpoint (RUN/last): weights, optimizer, step, data position")
    g.add_argument("--grow-encoder-layers", type=int, metavar="N",
                   help="with --init: deepen the encoder to N blocks; the new blocks start as the identity, so the "
                        "grown model reads as the --init model before its first step (grow_encoder)")
    g.add_argument("--grow-encoder-mlp", type=int, metavar="N",
                   help="with --init: widen every encoder MLP to N hidden units (new units start with zero output "
                        "weights, so the model reads as before its first step: grow_mlp)")
    g.add_argument("--grow-decoder-ffn", type=int, metavar="N",
                   help="with --init: widen every decoder feed-forward layer to N hidden units (as --grow-encoder-mlp)")
    g.add_argument("--arch", default="small", help=f"new model: a preset ({', '.join(ARCH_PRESETS)}), a JSON file or "
                   f"a JSON string with keys {', '.join(ARCH_KEYS)}; the flags below override single keys")
    g.add_argument("--image-size", dest="image_size", type=_pair_arg, help="input HEIGHT,WIDTH, e.g. 64,512")
    g.add_argument("--patch-size", dest="patch_size", type=_pair_arg, help="patch HEIGHT,WIDTH, e.g. 16,8")
    for name, help_ in (("encoder-hidden", "ViT width"), ("encoder-layers", "ViT blocks"),
                        ("encoder-heads", "ViT attention heads"), ("encoder-mlp", "ViT MLP width"),
                        ("decoder-d-model", "decoder width"), ("decoder-layers", "decoder blocks"),
                        ("decoder-heads", "decoder heads"), ("decoder-ffn", "decoder FFN width"),
                        ("max-positions", "decoder positions")):
        g.add_argument(f"--{name}", dest=name.replace("-", "_"), type=int, help=help_)
    d = t.add_argument_group("data (--synthetic, or --train-manifest)")
    d.add_argument("--synthetic", action="store_true", help="train on an endless stream of rendered form-field lines")
    d.add_argument("--synth-style", choices=("printed", "handwriting", "both"), default="both")
    d.add_argument("--handwriting-share", type=probability, default=None, metavar="P",
                   help="synthetic, --synth-style both: the share of handwriting-font lines (default: the two "
                        "styles with equal odds)")
    d.add_argument("--glyph-share", type=probability, default=0.0, metavar="P",
                   help="synthetic: the share of handwriting lines drawn a character at a time, each glyph with "
                        "its own size, baseline, tilt and spacing (a third of P for printed lines; default 0)")
    d.add_argument("--glyph-shape-share", type=probability, default=0.0, metavar="P",
                   help="synthetic: the share of the --glyph-share lines whose glyphs also get their own slant "
                        "and width (default 0)")
    d.add_argument("--oldstyle-share", type=probability, default=0.0, metavar="P",
                   help="synthetic: the share of lines with digits, in fonts that offer old-style figures "
                        "(OpenType onum: 1 like I, 0 like o, as Georgia draws them), drawn with them (default 0)")
    d.add_argument("--synth-strength", type=float, default=1.0, help="scan degradation strength of synthetic lines")
    d.add_argument("--fonts", nargs="+", metavar="PATH", help="synthetic: exactly these font files")
    d.add_argument("--exclude-fonts", nargs="+", metavar="PATTERN", help="synthetic: drop fonts matching these patterns")
    d.add_argument("--kinds", type=lambda s: s.split(","), help="synthetic: field kinds (comma-separated)")
    d.add_argument("--layout", choices=("mix", "tight", "margins", "box"), default="mix",
                   help="synthetic: field geometry (synth_data.field_layout); mix = tight lines, margins and whole "
                        "boxes with borders and neighbours' ink (default)")
    d.add_argument("--train-manifest", "--manifest", dest="train_manifest", metavar="PATH",
                   help="CSV (image,text) / JSONL / labels.tsv, or a folder of images with one; e.g. the "
                        "corrections.csv of scripts/review_server.py")
    d.add_argument("--val-manifest", metavar="PATH", help="validation lines (default: --val-split of the training rows)")
    d.add_argument("--val-split", type=float, default=0.05, help="fraction of the manifest held out for validation "
                   "(at least one line); with --init the validation CER is also measured before training")
    d.add_argument("--val-size", type=int, default=512, help="validation lines at most")
    d.add_argument("--augment", type=float, default=0.5, help="manifest data: synth_data.degrade strength (0 = off): "
                   "rotation, scale, blur, noise, ink erosion/dilation, JPEG")
    d.add_argument("--warp", type=float, default=0.0, help="handwriting-like shape augmentation (synth_data.warp: "
                   "slant, width, elastic wobble) strength, 0 = off; applies to both data sources")
    d.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="rendering processes (0 = in-process)")
    o = t.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=10000, help="total optimizer steps (the cosine schedule ends here)")
    o.add_argument("--batch-size", type=int, default=64, help="lines per micro-batch")
    o.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (gradient accumulation)")
    o.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    o.add_argument("--warmup", type=int, default=500, help="linear warmup steps")
    o.add_argument("--weight-decay", type=float, default=0.01)
    o.add_argument("--clip", type=float, default=1.0, help="gradient global-norm clip (0 = off)")
    o.add_argument("--label-smoothing", type=float, default=0.1)
    o.add_argument("--dtype", choices=list(DTYPES), help="compute dtype (default bfloat16 on a GPU, float32 on CPU); "
                   "AdamW always updates fp32 master weights")
    o.add_argument("--max-target-length", type=int, default=72, help="token cap per line (incl. <s> and </s>)")
    o.add_argument("--seed", type=int, default=0)
    r = t.add_argument_group("validation, checkpoints, stopping")
    r.add_argument("--eval-every", type=int, default=1000, help="validate (greedy CER/WER) every N steps; keeps best/")
    r.add_argument("--eval-batch-size", type=int, default=128)
    r.add_argument("--save-every", type=int, default=1000, help="write the resumable checkpoint last/ every N steps")
    r.add_argument("--time-limit", type=float, default=0, help="stop (with a checkpoint) after this many seconds")
    r.add_argument("--bar-interval", type=float, default=1.0, help="progress bar refresh seconds")

    e = sub.add_parser("export-mlx", help="copy a checkpoint/model folder as a shippable MLX model (fp16, sharded)")
    e.add_argument("src"), e.add_argument("dst")
    e.add_argument("--dtype", choices=list(DTYPES), default="float16")
    a = sub.add_parser("average", help="average the weights of models of one architecture (a model soup), e.g. "
                       "a model and a run fine-tuned from it")
    a.add_argument("srcs", nargs="+", metavar="MODEL", help="MLX model folders (two or more)")
    a.add_argument("--out", required=True, help="folder for the averaged model (then: calibrate_confidence.py --write)")
    a.add_argument("--dtype", choices=list(DTYPES), default="float16")
    h = sub.add_parser("export-hf", help="write a transformers checkpoint (VisionEncoderDecoderModel + processor files)")
    h.add_argument("src", help="MLX model folder (models/mlx/default, RUN/best, RUN/last)")
    h.add_argument("dst", help="output folder for VisionEncoderDecoderModel.from_pretrained")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            if args.resume and args.init:
                raise ValueError(f"--resume {args.resume} continues that run's own weights, optimizer and step: "
                                 f"drop --init {args.init} when resuming")
            train(args)
        elif args.command == "export-mlx":
            print(export_mlx(args.src, args.dst, dtype=args.dtype))
        elif args.command == "average":
            print(average_models(args.srcs, args.out, dtype=args.dtype))
        elif args.command == "export-hf":
            print(export_hf(args.src, args.dst))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from scripts.text_sources import fix_hash_seed

    fix_hash_seed()  # the same seed gives the same texts in every run
    sys.exit(main())

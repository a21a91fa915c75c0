#!/usr/bin/env python3
"""Training speed, MLX vs PyTorch, for the same TrOCR model and the same batch.

    python dev/bench_training.py --model runs/small/last --batch-size 128 --steps 50

The PyTorch model is transformers' VisionEncoderDecoderModel loaded from our HF export of --model
(mlx_trainer.export_hf), so both frameworks train the very same architecture from the same weights. One
step = forward + backward + gradient clipping + AdamW on one batch, with the loss the trainer uses
(token cross-entropy over non-pad labels, label smoothing). MLX: mlx_trainer.Trainer in bfloat16 with
fp32 master weights. PyTorch: fp32 weights, bf16 autocast, fused AdamW (eager, and torch.compile with
--compile). Each side runs `--warmup` untimed steps, then `--steps` timed ones, synchronising every step.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def make_batch(model_dir: Path, batch_size: int, seed: int):
    """A batch of synthetic lines at the model's input size: (uint8 pixels (B,H,W,1|3), texts)."""
    from scripts import mlx_trainer as T
    from scripts.mlx_models import TrOCRConfig

    cfg = TrOCRConfig.from_file(model_dir / "config.json")
    src = T.SynthSource(seed=seed, height=cfg.encoder.image_size[0])
    return T._render_chunk(range(batch_size), cfg.encoder.image_size, src)


def bench_mlx(model_dir: Path, pixels, texts, steps: int, warmup: int, dtype: str) -> dict:
    import mlx.core as mx

    from scripts import mlx_trainer as T
    from scripts.mlx_models import load_model

    trainer = T.Trainer(load_model(model_dir), model_dir / "processor", lr=1e-4, warmup=1, total_steps=10**6,
                        label_smoothing=0.1, dtype=dtype)
    for _ in range(warmup):
        trainer.train_step([(pixels, texts)])
    mx.synchronize()
    t0 = time.perf_counter()
    losses = [trainer.train_step([(pixels, texts)])["loss"] for _ in range(steps)]
    dt = time.perf_counter() - t0
    return {"steps_per_s": steps / dt, "ms_per_step": 1000 * dt / steps, "first_loss": losses[0],
            "last_loss": losses[-1], "dtype": dtype}


def bench_torch(model_dir: Path, pixels, texts, steps: int, warmup: int, compile_: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import VisionEncoderDecoderModel

    from scripts import mlx_trainer as T
    from scripts.mlx_models import load_model

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = T.export_hf(model_dir, Path(tmp) / "hf")
        model = VisionEncoderDecoderModel.from_pretrained(hf_dir).cuda().train()
    trainer = T.Trainer(load_model(model_dir), model_dir / "processor")  # for its tokenizer/label layout
    x = torch.from_numpy(pixels).cuda().float()
    if x.shape[-1] == 1:
        x = x.repeat(1, 1, 1, 3)
    x = ((x / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()
    pad = model.config.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)

    def step():
        dec_in, labels = trainer.encode_texts(texts)
        dec_in = torch.from_numpy(np.array(dec_in)).long().cuda()
        labels = torch.from_numpy(np.array(labels)).long().cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(pixel_values=x, decoder_input_ids=dec_in).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=pad, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    if compile_:
        model = torch.compile(model)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"steps_per_s": steps / dt, "ms_per_step": 1000 * dt / steps, "first_loss": losses[0],
            "last_loss": losses[-1], "compiled": compile_}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="MLX model folder (a checkpoint's last/ or best/, or models/mlx/default)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--mlx-dtype", default="bfloat16")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    model_dir = Path(args.model)
    pixels, texts = make_batch(model_dir, args.batch_size, seed=12345)
    out = {"batch_size": args.batch_size, "steps": args.steps}
    try:
        import subprocess

        out["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                    text=True).stdout.strip()
    except OSError:
        out["gpu"] = None
    out["mlx"] = bench_mlx(model_dir, pixels, texts, args.steps, args.warmup, args.mlx_dtype)
    print("mlx", out["mlx"], flush=True)
    out["torch_eager"] = bench_torch(model_dir, pixels, texts, args.steps, args.warmup, False)
    print("torch eager", out["torch_eager"], flush=True)
    if args.compile:
        out["torch_compile"] = bench_torch(model_dir, pixels, texts, args.steps, args.warmup, True)
        print("torch compile", out["torch_compile"], flush=True)
    for k in ("torch_eager", "torch_compile"):
        if k in out:
            out[f"mlx_over_{k}"] = out["mlx"]["steps_per_s"] / out[k]["steps_per_s"]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

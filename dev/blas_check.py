#!/usr/bin/env python3
"""Which BLAS do MLX and torch use in one process, and how fast are they, for each import order?

Each case runs in a fresh subprocess (the binding is made at import time):
    torch-only             torch alone (its own MKL BLAS), the baseline
    torch-then-mlx         torch imported, then scripts.mlx_processor (OpenBLAS loaded after torch)
    mlx-then-torch         scripts.mlx_processor (OpenBLAS through the cblas shim), then torch
    mlx-then-torch-noshim  the same without the shim (TROCR_MLX_CBLAS_SHIM=0: all of OpenBLAS global)
    preload                LD_PRELOAD=OpenBLAS for the whole process (the old venv-wide setup)
    mlx-off                TROCR_MLX_OPENBLAS=0: MLX on the wheel's reference BLAS
For each: the library torch's sgemm_ and libmlx's cblas_sgemm were bound to (LD_DEBUG=bindings), the
mapped BLAS files (/proc/self/maps), and the best of --repeats timings of torch and MLX float32 matmuls
(trocr-base shapes: an encoder linear 577x768 @ 768x3072, a decoder MLP step 1x1024 @ 1024x4096 @ 4096x1024
at batch 1 and 8; and MLX 1024x1024 @ 1024x1024), plus the MLX result checked against numpy; with
--generate also transformers' generate of a random-weight trocr-base (1 line, 20 tokens), the whole
model as a user's script runs it. A case named twice runs twice (interleave them on a busy machine).

    venv_mlx/bin/python dev/blas_check.py                # all cases, JSON lines + a table
    venv_mlx/bin/python dev/blas_check.py --cases mlx-then-torch,torch-only --repeats 5
    venv_mlx/bin/python dev/blas_check.py --cases torch-only,mlx-then-torch,torch-only,mlx-then-torch --generate
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, os, sys, time
order = sys.argv[1]
reps = int(sys.argv[2])
sys.path.insert(0, sys.argv[3])
generate = sys.argv[4] == "1"
if order in ("torch-only", "torch-then-mlx"):
    import torch
if order != "torch-only":
    import scripts.mlx_processor  # noqa: F401  (the toolkit's MLX path)
    import mlx.core as mx
if order in ("mlx-then-torch", "mlx-then-torch-noshim", "preload", "mlx-off"):
    import torch
import numpy as np

def best(fn, n):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n)
    return min(times)

out = {"case": order}
torch.manual_seed(0)
with torch.no_grad():
    x = torch.randn(577, 768); w = torch.randn(768, 3072)
    out["torch_encoder_linear_ms"] = 1e3 * best(lambda: x @ w, 5)
    l1 = torch.nn.Linear(1024, 4096); l2 = torch.nn.Linear(4096, 1024)
    for b in (1, 8):
        y = torch.randn(b, 1, 1024)
        out[f"torch_decoder_mlp_b{b}_ms"] = 1e3 * best(lambda: l2(torch.relu(l1(y))), 50)
if order != "torch-only":
    a = mx.random.normal((1024, 1024)); b = mx.random.normal((1024, 1024))
    out["mlx_matmul_1024_ms"] = 1e3 * best(lambda: mx.eval(a @ b), 3)
    an, bn = np.array(a), np.array(b)
    out["mlx_max_abs_err"] = float(np.abs(np.array(a @ b) - an @ bn).max())
    from scripts import cpu_blas
    out["mlx_blas"] = cpu_blas.blas()
    # torch right after MLX work (OpenBLAS's threads spin a while after each call)
    with torch.no_grad():
        y = torch.randn(1, 1, 1024)
        def after_mlx():
            mx.eval(a @ b)
            t = time.perf_counter()
            for _ in range(20):
                l2(torch.relu(l1(y)))
            return (time.perf_counter() - t) / 20
        out["torch_decoder_mlp_b1_after_mlx_ms"] = 1e3 * min(after_mlx() for _ in range(reps))
if generate:  # the whole transformers model, as a user's script runs it: trocr-base size, 1 line, 20 tokens
    from scripts.benchmark_pytorch_vs_mlx import trocr_base_config
    from transformers import VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel(trocr_base_config()).eval()
    px = torch.randn(1, 3, 384, 384)
    opts = dict(max_new_tokens=20, min_new_tokens=20, num_beams=1, do_sample=False)
    with torch.inference_mode():
        out["torch_trocr_base_s_per_line"] = best(lambda: model.generate(px, **opts), 1)
maps = open("/proc/self/maps").read()
out["mapped"] = sorted({os.path.basename(p) for p in re.findall(r"(\S*(?:openblas|libblas|cblas)\S*\.so[\d.]*)", maps)})
out["torch_threads"] = torch.get_num_threads()
print("RESULT " + json.dumps(out))
'''.replace("import json, os, sys, time", "import json, os, re, sys, time")


def bindings(stderr: str) -> dict:
    """{"torch sgemm_": library, "mlx cblas_sgemm": library} from LD_DEBUG=bindings output."""
    found = {}
    for line in stderr.splitlines():
        m = re.search(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `(\w+)'", line)
        if not m:
            continue
        src, dst, sym = m.groups()
        if "libtorch_cpu" in src and sym == "sgemm_":
            found["torch sgemm_"] = os.path.basename(dst)
        if "libmlx.so" in src and sym == "cblas_sgemm":
            found["mlx cblas_sgemm"] = os.path.basename(dst)
    return found


def run_case(case: str, repeats: int, openblas: str, generate: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TROCR_MLX_OPENBLAS", "TROCR_MLX_CBLAS_SHIM")}
    if case == "mlx-then-torch-noshim":
        env["TROCR_MLX_CBLAS_SHIM"] = "0"
    if case == "preload":
        env["LD_PRELOAD"] = openblas
    if case == "mlx-off":
        env["TROCR_MLX_OPENBLAS"] = "0"
    timed = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, case, str(repeats), str(ROOT),
                            "1" if generate else "0"],
                           capture_output=True, text=True, env=env, cwd=ROOT)
    line = [ln for ln in timed.stdout.splitlines() if ln.startswith("RESULT ")]
    if timed.returncode or not line:
        raise RuntimeError(f"{case}: {timed.stderr[-2000:]}")
    result = json.loads(line[0][len("RESULT "):])
    traced = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, case, "1", str(ROOT), "0"],
                            capture_output=True, text=True, env={**env, "LD_DEBUG": "bindings"}, cwd=ROOT)
    result["bindings"] = bindings(traced.stderr)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--cases", default="torch-only,torch-then-mlx,mlx-then-torch,mlx-then-torch-noshim,preload,mlx-off")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (best is kept)")
    ap.add_argument("--generate", action="store_true",
                    help="also time transformers' generate of a random trocr-base (1 line, 20 tokens) per case")
    ap.add_argument("--output", help="JSON lines file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from scripts.cpu_blas import find_openblas

    openblas = find_openblas()
    if openblas is None:
        print("no OpenBLAS installed (apt-get install libopenblas0-pthread)", file=sys.stderr)
        return 2
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; OpenBLAS {openblas}")
    rows = []
    for case in args.cases.split(","):
        r = run_case(case, args.repeats, openblas, args.generate)
        rows.append(r)
        print(json.dumps(r), flush=True)
    if args.output:
        Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cols = ["torch_encoder_linear_ms", "torch_decoder_mlp_b1_ms", "torch_decoder_mlp_b8_ms",
            "torch_decoder_mlp_b1_after_mlx_ms", "mlx_matmul_1024_ms", "torch_trocr_base_s_per_line"]
    print("\n| case | torch sgemm_ bound to | MLX cblas_sgemm bound to | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---:|" * len(cols))
    for r in rows:
        vals = " | ".join(f"{r[c]:.2f}" if c in r else "-" for c in cols)
        print(f"| {r['case']} | {r['bindings'].get('torch sgemm_', '-')} | {r['bindings'].get('mlx cblas_sgemm', '-')} | {vals} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

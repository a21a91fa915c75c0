#!/usr/bin/env python3
"""Summary of one dev/gpu_bench.sh run: MLX/transformers ratios, the best aggregate lines/s of each,
the quantized rows and the roofline, from the JSON files the run wrote (whatever of them exists:
bench_gpu.json, bench_gpu_q.json, bench_workers.json, profile_gpu.json, profile_q4.json).

    python dev/gpu_bench_summary.py OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read(folder: Path, name: str):
    path = folder / name
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        print(f"{path}: unreadable ({e})")
        return None


def rates(side: dict) -> dict:
    return {int(bs): row["throughput"] for bs, row in side["inference"]["per_batch_size"].items()}


def bench_lines(bench: dict, label: str, best_mlx: list, best_torch: list) -> list[str]:
    """One side-by-side run's lines: header, table, agreement, its quantized rows (against its own float MLX)."""
    lines = []
    env = bench.get("environment", {})
    lines.append(f"{label}: {env.get('date', '?')}, {env.get('gpu', env.get('cpu'))}: MLX {env.get('mlx')} vs torch "
                 f"{env.get('torch')} / transformers {env.get('transformers')}, {bench['config']['dtype']}, "
                 f"{bench['config'].get('new_tokens')} tokens a line" + (" (PARTIAL run)" if bench.get("partial") else ""))
    pt, ml = rates(bench["pytorch"]), rates(bench["mlx"])
    lines.append(f"{'batch':>6s} {'transformers':>13s} {'MLX':>9s} {'MLX/transf.':>12s}   lines/s")
    for bs in sorted(pt):
        lines.append(f"{bs:6d} {pt[bs]:13.2f} {ml.get(bs, float('nan')):9.2f} {ml.get(bs, float('nan')) / pt[bs]:11.2f}x")
    if pt:
        best_torch.append((max(pt.values()), f"transformers, batch {max(pt, key=pt.get)}, {label}"))
    if ml:
        best_mlx.append((max(ml.values()), f"MLX, 1 process, batch {max(ml, key=ml.get)}, {label}"))
    acc = bench.get("accuracy")
    if acc:
        lines.append(f"MLX vs transformers: {acc['exact_matches']}/{acc['total']} identical ({acc['compared_as']}), "
                     f"error rate {acc['cer']:.4f}")
    quantized = sorted((k for k in bench if k.startswith("mlx_q")), key=lambda k: -bench[k]["bits"])
    for name in quantized:
        q = bench[name]
        if "error" in q:
            lines.append(f"MLX {q['bits']}-bit: failed: {q['error']}")
            continue
        qr = rates(q)
        a = q["agreement_vs_mlx_float"]
        lines.append(f"MLX {q['bits']}-bit (group {q['group_size']}, {q['weight_mb']:.0f} MB vs "
                     f"{bench['mlx'].get('weight_mb', float('nan')):.0f} MB float): "
                     + ", ".join(f"b{bs} {qr[bs]:.1f} ({qr[bs] / ml[bs]:.2f}x float)" for bs in sorted(qr) if bs in ml)
                     + f"; same tokens as float MLX on {a['exact_matches']}/{a['total']} lines")
        if qr:
            best_mlx.append((max(qr.values()), f"MLX {q['bits']}-bit, 1 process, batch {max(qr, key=qr.get)}, {label}"))
    if quantized and bench["config"].get("random_trocr_base"):
        lines.append("(random weights: near-uniform logits, so the quantized agreement says nothing about a trained model)")
    return lines


def summarize(folder: Path) -> list[str]:
    lines = []
    best_mlx, best_torch = [], []
    bench = read(folder, "bench_gpu.json")
    if bench is None:
        lines.append("bench_gpu.json: missing (not run, or the side-by-side benchmark did not finish its float rows)")
    else:
        lines += bench_lines(bench, "bench_gpu", best_mlx, best_torch)
    bench_q = read(folder, "bench_gpu_q.json")
    if bench_q is not None:
        lines += bench_lines(bench_q, "bench_gpu_q", best_mlx, best_torch)
    workers = read(folder, "bench_workers.json")
    if workers is not None:
        batch = f"batch {workers.get('batch_size')}, {workers.get('lines')} lines"
        if not workers.get("complete", True):
            lines.append(f"batch processor ({batch}): INCOMPLETE run, the rows it wrote:")
        for row in workers.get("results", workers.get("settings", [])):
            if isinstance(row, dict) and "lines_per_s" in row:
                lines.append(f"batch processor, {row['setting']}: {row['lines_per_s']:.1f} lines/s ({batch})")
                best_mlx.append((row["lines_per_s"], f"MLX batch processor, {row['setting']}, {batch}"))
            elif isinstance(row, dict) and "error" in row:
                lines.append(f"batch processor, {row['setting']}: FAILED ({row.get('failed_lines', 'all')} of "
                             f"{row.get('lines')} lines): {row['error'][:200]}")
    if best_mlx or best_torch:
        m, t = max(best_mlx, default=(0, "-")), max(best_torch, default=(0, "-"))
        lines.append(f"best aggregate: MLX {m[0]:.1f} lines/s ({m[1]}) vs transformers {t[0]:.1f} ({t[1]})"
                     + (f": {m[0] / t[0]:.2f}x" if t[0] else ""))
    for name, label in (("profile_gpu.json", "profile"), ("profile_q4.json", "profile, 4-bit")):
        prof = read(folder, name)
        if prof is None:
            continue
        for bs, row in prof["batches"].items():
            r = row["roofline"]
            lines.append(f"{label}, batch {bs}: encoder {row['encoder_ms']} ms, decoder step {row['decoder_step_ms']} ms "
                         f"(host graph build {row['step_graph_build_ms']} ms, matmuls alone {row['step_matmuls_only_ms']} ms); "
                         f"roofline {r['roofline_lines_per_s']} lines/s ({r['bound']}-bound: "
                         f"{r['decoder_weight_bytes_per_step'] / 1e6:.0f} MB weights + {r['kv_bytes_per_step'] / 1e6:.0f} MB K/V "
                         f"a step at {r['bandwidth_gbs']:.0f} GB/s, {r['flops_per_batch'] / 1e12:.2f} TFLOP a batch "
                         f"at {r['peak_tflops']:.0f} TFLOP/s)")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    print("\n".join(summarize(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

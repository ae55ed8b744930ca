#!/usr/bin/env python3
"""The fused cross-entropy on the CPU beside the GPU, as one Markdown table.

Reads the Google Benchmark JSON of bench_loss (CPU) and bench_loss_cuda (GPU), both run with
repetitions, and prints per (N, K), kind (fwd or fwd+bwd) and ε: the CPU median, the GPU min and
median, the GPU's speed-up, and the GPU's bandwidth at the ideal traffic (4 bytes per logit for the
forward, which reads the logits once; 8 for forward + backward, which also writes the gradient once)
as a fraction of the device-to-device copy bandwidth that bench_loss_cuda measures on the same GPU.

    bench/loss_cpu_vs_gpu.py --cpu bench_loss_cpu.json --gpu bench_loss_cuda.json
"""
import argparse
import json
import re
import statistics
import sys

CASE = re.compile(r"/(fwd|fwdbwd)/eps:([^/]+)/N:(\d+)/K:(\d+)")
IDEAL_BYTES = {"fwd": 4, "fwdbwd": 8}


def load(path):
    """Per case (kind, eps, N, K): the list of repetition times in ms, or the skip/error message."""
    try:
        with open(path) as f:
            runs = json.load(f)["benchmarks"]
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return {}, None
    times, copy_gbs = {}, None
    for r in runs:
        if r.get("run_type") == "aggregate":
            continue
        name = r.get("run_name", r["name"])
        if name.startswith("BM_DeviceCopyCuda") and not r.get("error_occurred"):
            copy_gbs = max(copy_gbs or 0.0, r["bytes_per_second"] / 1e9)
            continue
        m = CASE.search(name)
        if not m:
            continue
        key = (m[1], m[2], int(m[3]), int(m[4]))
        if r.get("error_occurred"):
            times.setdefault(key, r.get("error_message", "error"))
            continue
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[r.get("time_unit", "ns")]
        entry = times.setdefault(key, [])
        if isinstance(entry, list):
            entry.append(r["real_time"] * scale)
    return times, copy_gbs


def ms(t):
    """Milliseconds with three decimals, or four significant digits below a millisecond."""
    return f"{t:.3f}" if t >= 1 else f"{t:.4g}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", required=True)
    p.add_argument("--gpu", required=True)
    a = p.parse_args()
    cpu, _ = load(a.cpu)
    gpu, copy_gbs = load(a.gpu)
    if not gpu:
        print("no GPU benchmark results")
        return 1
    copy = f"{copy_gbs:.0f} GB/s" if copy_gbs else "not measured"
    print(f"Fused cross-entropy, index targets, fp32; GPU bandwidth at the ideal traffic (4 B/logit fwd, "
          f"8 B/logit fwd+bwd) against the measured device copy ({copy}).")
    print()
    print("| (N, K) | pass | ε | CPU 2 threads median (ms) | GPU min / median (ms) | GPU speed-up "
          "| GPU GB/s | of copy bandwidth |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(gpu, key=lambda k: (k[2] * k[3], k[2], k[0], k[1])):
        kind, eps, n, k = key
        g = gpu[key]
        c = cpu.get(key)
        c_med = statistics.median(c) if isinstance(c, list) and c else None
        c_txt = ms(c_med) if c_med is not None else "—"
        shape = f"({n}, {k})"
        label = "fwd" if kind == "fwd" else "fwd+bwd"
        if not isinstance(g, list) or not g:
            print(f"| {shape} | {label} | {eps} | {c_txt} | {g} | | | |")
            continue
        g_min, g_med = min(g), statistics.median(g)
        speed = f"{c_med / g_med:.0f}×" if c_med is not None else "—"
        gbs = IDEAL_BYTES[kind] * n * k / (g_med * 1e-3) / 1e9
        frac = f"{100 * gbs / copy_gbs:.0f} %" if copy_gbs else "—"
        print(f"| {shape} | {label} | {eps} | {c_txt} | {ms(g_min)} / {ms(g_med)} | {speed} | {gbs:.0f} | {frac} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

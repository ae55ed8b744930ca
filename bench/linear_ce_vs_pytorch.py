#!/usr/bin/python3
"""Fused linear cross-entropy, side by side: lsgrad fused, lsgrad unfused, PyTorch, in one run.

    /usr/bin/python3 bench/linear_ce_vs_pytorch.py [build/cpu/bench/bench_linear_cross_entropy]
        [--rounds 3] [--reps 1] [--warmup 1] [--threads 2] [--shapes 4096x768x50257,...]
        [--save results.jsonl | --results results.jsonl]

Forward + backward of the classifier head and the label-smoothed loss (ε = 0.1) at (N, H, V):
  - lsgrad fused:   linear_cross_entropy(h, W, y, {label_smoothing = 0.1}).backward()
  - lsgrad unfused: cross_entropy(linear(h, W), y, {label_smoothing = 0.1}).backward()
  - PyTorch:        F.cross_entropy(h @ W.T, y, label_smoothing=0.1).backward()
with h [N, H] and W [V, H] float32 leaves. Every case runs in its own process (the C++ program
bench_linear_cross_entropy for lsgrad, this script with --torch-case for PyTorch), so the peak
resident memory (getrusage ru_maxrss) is that case's alone; "extra" is that peak minus the resident
memory before the inputs were made, minus the inputs and their gradients (2·(N·H + V·H)·4 bytes).
The three cases of a shape run in turn, `rounds` times over (fused, unfused, PyTorch, fused, ...), so
that a change in the machine's load falls on all three rather than on whichever ran first; min and
median are over the timed calls of every round (each process makes its warm-up calls first).
--save writes the raw JSON lines, --results prints the table from such a file. PyTorch's OpenBLAS
runs the best core for this CPU (bench/openblas_core.py). Use Debian's /usr/bin/python3 (it has
python3-torch 1.13). All three run with OMP_WAIT_POLICY=PASSIVE and the same thread count.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = [(4096, 768, 50257), (1024, 2048, 128256), (512, 2304, 256000)]
EPS = 0.1


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def torch_case(N, H, V, reps, warmup, threads):
    """One PyTorch case in this process; prints its JSON line."""
    sys.path.insert(0, HERE)
    import openblas_core

    openblas_core.fair_blas()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    base = rss_mib()
    g = torch.Generator().manual_seed(1)
    h = torch.randn(N, H, generator=g).requires_grad_()
    W = (torch.randn(V, H, generator=g) * 0.02).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)
    ms = []
    loss = 0.0
    for r in range(warmup + reps):
        h.grad = None
        W.grad = None
        t0 = time.perf_counter()
        out = F.cross_entropy(h @ W.T, y, label_smoothing=EPS)
        out.backward()
        t1 = time.perf_counter()
        loss = out.item()
        if r >= warmup:
            ms.append((t1 - t0) * 1e3)
    print(json.dumps({"impl": "PyTorch " + torch.__version__ + " (" + openblas_core.corename() + ")", "N": N,
                      "H": H, "V": V, "threads": torch.get_num_threads(), "ms": ms, "min_ms": min(ms),
                      "median_ms": statistics.median(ms), "loss": loss, "base_rss_mib": base,
                      "peak_rss_mib": rss_mib()}))


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def merge(runs):
    """One result from the JSON lines of one case's rounds: every timed call, the largest peak."""
    ms = [t for r in runs for t in r["ms"]]
    out = dict(runs[0])
    out.update(ms=ms, min_ms=min(ms), median_ms=statistics.median(ms),
               peak_rss_mib=max(r["peak_rss_mib"] for r in runs), base_rss_mib=min(r["base_rss_mib"] for r in runs))
    return out


def table(results, threads, header):
    """Prints the markdown table of the merged results, grouped by shape in first-seen order."""
    shapes = []
    for r in results:
        if (r["N"], r["H"], r["V"]) not in shapes:
            shapes.append((r["N"], r["H"], r["V"]))
    print(header)
    print()
    print("| (N, H, V) | implementation | min ms | median ms | median / fused | peak RSS MiB | extra MiB | loss |")
    print("|---|---|---|---|---|---|---|---|")
    for N, H, V in shapes:
        rows = [r for r in results if (r["N"], r["H"], r["V"]) == (N, H, V)]
        kinds = []
        for r in rows:
            if r["impl"] not in kinds:
                kinds.append(r["impl"])
        merged = [merge([r for r in rows if r["impl"] == k]) for k in kinds]
        fused = next((m["median_ms"] for m in merged if m["impl"] == "lsgrad fused"), merged[0]["median_ms"])
        inputs_mib = 2 * (N * H + V * H) * 4 / 2**20
        for r in merged:
            extra = r["peak_rss_mib"] - r["base_rss_mib"] - inputs_mib
            print(f"| ({N}, {H}, {V}) | {r['impl']} | {r['min_ms']:.0f} | {r['median_ms']:.0f} | "
                  f"{r['median_ms'] / fused:.2f} | {r['peak_rss_mib']:.0f} | {extra:.0f} | {r['loss']:.4f} |")


def run_case(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", nargs="?", default="build/cpu/bench/bench_linear_cross_entropy")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--save", help="write the raw JSON lines here")
    ap.add_argument("--results", help="print the table from saved JSON lines instead of running")
    ap.add_argument("--torch-case", nargs=3, type=int, metavar=("N", "H", "V"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_case:
        torch_case(*a.torch_case, a.reps, a.warmup, a.threads)
        return
    if a.results:
        with open(a.results) as f:
            results = [json.loads(line) for line in f if line.strip()]
        table(results, a.threads, f"CPU: {cpu_model()}; results of {a.results}")
        return
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} not found: build it with cmake --build --preset cpu --target bench_linear_cross_entropy")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(a.threads))
    load_before = open("/proc/loadavg").read().split()[:3]
    shapes = [tuple(int(x) for x in s.split("x")) for s in a.shapes.split(",")]
    results = []
    save = open(a.save, "w") if a.save else None
    for N, H, V in shapes:
        cases = [
            [a.binary, "fused", str(N), str(H), str(V), str(a.reps), str(a.warmup)],
            [a.binary, "unfused", str(N), str(H), str(V), str(a.reps), str(a.warmup)],
            [sys.executable, os.path.abspath(__file__), "--torch-case", str(N), str(H), str(V), "--reps",
             str(a.reps), "--warmup", str(a.warmup), "--threads", str(a.threads)],
        ]
        for _ in range(a.rounds):
            for cmd in cases:
                r = run_case(cmd, env)
                print(json.dumps(r), file=sys.stderr)
                if save:
                    save.write(json.dumps(r) + "\n")
                    save.flush()
                results.append(r)
    load_after = open("/proc/loadavg").read().split()[:3]
    table(results, a.threads,
          f"CPU: {cpu_model()}; {a.threads} threads; OMP_WAIT_POLICY=PASSIVE; ε = {EPS}; {a.rounds} rounds of "
          f"{a.reps} timed call(s) after {a.warmup} warm-up; load average (1, 5, 15 min) before: "
          f"{' '.join(load_before)}, after: {' '.join(load_after)}")

if __name__ == "__main__":
    main()

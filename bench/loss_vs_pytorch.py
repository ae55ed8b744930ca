#!/usr/bin/python3
"""Fused cross-entropy forward + backward, lsgrad beside PyTorch, in one run on one machine.

    /usr/bin/python3 bench/loss_vs_pytorch.py [build/release/bench/bench_loss] [--skip-huge]

Runs lsgrad's Google Benchmark program (its BM_CrossEntropy/fwdbwd/eps:0.1 cases, and the plain fused
reference loop of bench/ce_reference.h as BM_CrossEntropy/reference/eps:0.1, with repetitions, in
one run; bench_loss checks every lsgrad case against the reference before timing it) and then
PyTorch's F.cross_entropy(logits, target, label_smoothing=0.1) forward + backward at the same (N, K)
and thread counts, and prints one markdown table. PyTorch's OpenBLAS runs the best core for this CPU
(bench/openblas_core.py), named in the header with the CPU model. Use Debian's /usr/bin/python3 (it
has python3-torch 1.13).

Both sides run with OMP_WAIT_POLICY=PASSIVE, so idle OpenMP threads sleep instead of spinning
against the measured ones. PyTorch is timed per call with time.perf_counter after warm-up calls;
each call starts from logits.grad = None, as a training step after zero_grad(set_to_none=True)
does. min and median are over the timed calls (over the repetitions for lsgrad). The ratio is
PyTorch median / lsgrad median; "lsgrad / reference" is lsgrad's median over the reference loop's
(below 1: lsgrad is faster); lsgrad's GB/s counts 12 bytes per logit at its median time, the
convention bench_loss reports with.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when OpenMP starts: before torch is imported
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openblas_core  # noqa: E402

# PyTorch's OpenBLAS on the best core for this CPU (OPENBLAS_CORETYPE is read when it loads).
BLAS_OWN_CHOICE, _ = openblas_core.fair_blas()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SHAPES = [(256, 10), (8192, 10), (4096, 32000), (16384, 50257)]
HUGE = (16384, 50257)  # about 13 GB peak in PyTorch
THREADS = [1, 2]
EPS = 0.1
BYTES_PER_LOGIT = 12


def parse_name(name):
    """'BM_CrossEntropy/fwdbwd/eps:0.1/N:4096/K:32000/threads:2' -> its parts."""
    parts = name.split("/")
    fields = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    fields["family"] = parts[0]
    fields["kind"] = next((p for p in parts[1:] if ":" not in p), None)
    return fields


def run_lsgrad(binary, reps, shapes):
    """Per-repetition real times (ms) of lsgrad's fused CE fwd+bwd and of the reference loop, keyed by
    (kind, N, K, threads), kind "fwdbwd" or "reference"."""
    if not os.path.exists(binary):
        print(f"note: {binary} not found; lsgrad columns are empty", file=sys.stderr)
        return {}
    # Google Benchmark filters are POSIX extended regexes: list the shapes, no look-ahead.
    flt = r"BM_CrossEntropy/(fwdbwd|reference)/eps:0\.1/N:(" + "|".join(f"{n}/K:{k}" for n, k in shapes) + ")/"
    cmd = [binary, f"--benchmark_filter={flt}", "--benchmark_format=json",
           f"--benchmark_repetitions={reps}", "--benchmark_report_aggregates_only=false"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    report = json.loads(proc.stdout)
    for b in report.get("benchmarks", []):
        if b.get("error_occurred"):
            sys.exit(f"{b['name']}: {b.get('error_message')}")
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    times = {}
    for b in report.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        f = parse_name(b.get("run_name", b["name"]))
        if f["family"] != "BM_CrossEntropy" or f["kind"] not in ("fwdbwd", "reference") or float(f.get("eps", -1)) != EPS:
            continue
        key = (f["kind"], int(f["N"]), int(f["K"]), int(f.get("threads", 1)))
        times.setdefault(key, []).append(b["real_time"] * scale[b.get("time_unit", "ns")])
    return times


def time_pytorch(n, k, threads, budget_s):
    """Per-call times (ms) of F.cross_entropy(..., label_smoothing=0.1) forward + backward."""
    torch.set_num_threads(threads)
    openblas_core.set_threads(threads)
    gen = torch.Generator().manual_seed(0)
    # Uniform in [-4, 4), as bench_loss's logits: the spread of trained logits.
    logits = (torch.rand(n, k, generator=gen) * 8.0 - 4.0).requires_grad_(True)
    target = torch.randint(0, k, (n,), generator=gen)

    def step():
        logits.grad = None
        loss = F.cross_entropy(logits, target, label_smoothing=EPS)
        loss.backward()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    warmup = 1 if first > 0.5 else 5
    for _ in range(warmup - 1):
        step()
    reps = int(max(3, min(200, budget_s / max(first, 1e-6))))
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        out.append((time.perf_counter() - t0) * 1e3)
    del logits, target
    return out


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def fmt(ms):
    return "—" if ms is None else (f"{ms:.3f}" if ms < 10 else f"{ms:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="?", default="build/release/bench/bench_loss",
                    help="lsgrad's bench_loss program (default: %(default)s)")
    ap.add_argument("--skip-huge", action="store_true", help=f"leave out {HUGE} (about 13 GB in PyTorch)")
    ap.add_argument("--reps", type=int, default=5, help="lsgrad repetitions (default: %(default)s)")
    ap.add_argument("--budget", type=float, default=3.0,
                    help="seconds of timed PyTorch calls per case, at least 3 calls (default: %(default)s)")
    args = ap.parse_args()

    shapes = [s for s in SHAPES if not (args.skip_huge and s == HUGE)]
    lsg = run_lsgrad(args.bench, args.reps, shapes)
    rows = []
    for n, k in shapes:
        for t in THREADS:
            pt = time_pytorch(n, k, t, args.budget)
            ls = lsg.get(("fwdbwd", n, k, t))
            ref = lsg.get(("reference", n, k, t))
            pt_min, pt_med = min(pt), statistics.median(pt)
            ls_min = min(ls) if ls else None
            ls_med = statistics.median(ls) if ls else None
            ref_min = min(ref) if ref else None
            ref_med = statistics.median(ref) if ref else None
            ratio = f"{pt_med / ls_med:.1f}×" if ls_med else "—"
            vs_ref = f"{ls_med / ref_med:.2f}" if ls_med and ref_med else "—"
            gbs = f"{BYTES_PER_LOGIT * n * k / (ls_med * 1e-3) / 1e9:.1f}" if ls_med else "—"
            rows.append(f"| ({n}, {k}) | {t} | {fmt(pt_min)} / {fmt(pt_med)} | {fmt(ls_min)} / {fmt(ls_med)} "
                        f"| {fmt(ref_min)} / {fmt(ref_med)} | {ratio} | {vs_ref} | {gbs} |")
    core = openblas_core.corename()
    own = "" if core == BLAS_OWN_CHOICE else f" (set by OPENBLAS_CORETYPE; its own choice: {BLAS_OWN_CHOICE})"
    print(f"Cross-entropy forward + backward, label_smoothing = {EPS}, fp32; {cpu_model()}; PyTorch "
          f"{torch.__version__}, OpenBLAS core {core}{own}; OMP_WAIT_POLICY=PASSIVE\n")
    print("| (N, K) | threads | PyTorch min / median (ms) | lsgrad min / median (ms) | reference loop min / median "
          "(ms) | PyTorch / lsgrad (median) | lsgrad / reference (median) | lsgrad GB/s (12 B/logit) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks bench/loss_cpu_vs_gpu.py on benchmark JSON whose table is known by hand.

GPU: a 1 GiB copy at 4000 GB/s (bytes read + written), fwd+bwd at (1000, 1000) in 0.002 ms (min
0.0019): 8 B/logit · 1e6 logits / 2e-6 s = 4000 GB/s, 100 % of the copy; the CPU's median of
(1, 3, 2) ms is 2 ms, so the speed-up is 1000×. A skipped case keeps its reason.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "loss_cpu_vs_gpu.py")


def run(name, t, unit="ms", **extra):
    return {"name": name, "run_name": name, "run_type": "iteration", "real_time": t, "time_unit": unit, **extra}


def main():
    gpu = {"benchmarks": [
        run("BM_DeviceCopyCuda/bytes:1GiB/manual_time", 0.5, bytes_per_second=4.0e12),
        run("BM_CrossEntropyCuda/fwdbwd/eps:0.1/N:1000/K:1000/manual_time", 0.0019),
        run("BM_CrossEntropyCuda/fwdbwd/eps:0.1/N:1000/K:1000/manual_time", 0.002),
        run("BM_CrossEntropyCuda/fwdbwd/eps:0.1/N:1000/K:1000/manual_time", 0.0021),
        {"name": "BM_CrossEntropyCuda/fwdbwd_median", "run_type": "aggregate", "real_time": 99.0},
        run("BM_CrossEntropyCuda/fwd/eps:0/N:256/K:10/manual_time", 0.0,
            error_occurred=True, error_message="skipped: no CUDA device: none"),
    ]}
    cpu = {"benchmarks": [
        run("BM_CrossEntropy/fwdbwd/eps:0.1/N:1000/K:1000/threads:2/real_time", t, unit="us")
        for t in (1000.0, 3000.0, 2000.0)
    ]}
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, data in (("cpu", cpu), ("gpu", gpu)):
            paths[name] = os.path.join(d, name + ".json")
            with open(paths[name], "w") as f:
                json.dump(data, f)
        out = subprocess.run([sys.executable, SCRIPT, "--cpu", paths["cpu"], "--gpu", paths["gpu"]],
                             check=True, capture_output=True, text=True).stdout
    rows = {line.split("|")[1].strip() + " " + line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in out.splitlines() if line.startswith("| (") and not line.startswith("| (N, K)")}
    expected = {
        "(1000, 1000) fwd+bwd": ["(1000, 1000)", "fwd+bwd", "0.1", "2.000", "0.0019 / 0.002", "1000×", "4000", "100 %"],
        "(256, 10) fwd": ["(256, 10)", "fwd", "0", "—", "skipped: no CUDA device: none", "", "", ""],
    }
    ok = True
    if "4000 GB/s" not in out:
        print("the copy bandwidth is missing from the header:\n" + out)
        ok = False
    for key, cells in expected.items():
        if rows.get(key) != cells:
            print(f"row {key}: expected {cells}, got {rows.get(key)}")
            ok = False
    if len(rows) != len(expected):
        print(f"expected {len(expected)} rows, got {len(rows)}:\n{out}")
        ok = False
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

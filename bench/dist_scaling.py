#!/usr/bin/env python3
"""Data-parallel throughput of the MNIST example on this machine, side by side in one run.

For the MLP and the CNN, with the same global batch of 128:
  1 process  x 2 threads   (the baseline: both cores in one process)
  2 processes x 1 thread   --dist mpi, gradients reduced during backward (overlap)
  2 processes x 1 thread   --dist mpi --no-overlap (reduced after backward)
and, for the scaling model in docs/distributed.md, 1 process x 1 thread at batch 64 (one rank's
compute per step). --bucket-mb smaller than the model's gradients gives several buckets, which is
when overlap has something to overlap. Each configuration runs --repeats times, interleaved; the table gives images/s
(training images / seconds of the epoch, data loading and evaluation excluded) as min and median.

    bench/dist_scaling.py build/cpu/examples/mnist/mnist [--repeats 3]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("mnist")
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--mpiexec", default="mpirun")
p.add_argument("--bucket-mb", default="25", help="DDP bucket size (25 MiB holds either model's gradients in one bucket)")
p.add_argument("--only-dist", action="store_true", help="only the two 2-process configurations")
args = p.parse_args()

env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMPI_MCA_btl_vader_single_copy_mechanism="none")
mpirun = [args.mpiexec, "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "OMP_NUM_THREADS=1"]
images = {"mlp": 19200, "cnn": 3200}
configs = [
    ("1 process x 2 threads, batch 128", [], ["--threads", "2", "--batch-size", "128"]),
    ("2 processes x 1 thread, batch 64 each, overlap", mpirun, ["--threads", "1", "--batch-size", "64", "--dist", "mpi"]),
    ("2 processes x 1 thread, batch 64 each, no overlap", mpirun,
     ["--threads", "1", "--batch-size", "64", "--dist", "mpi", "--no-overlap"]),
    ("1 process x 1 thread, batch 64 (one rank's compute)", [], ["--threads", "1", "--batch-size", "64"]),
]

if args.only_dist:
    configs = [c for c in configs if c[1]]
for c in configs:
    if c[1]:
        c[2].extend(["--bucket-mb", args.bucket_mb])

rates = {}
for model in ("mlp", "cnn"):
    for _ in range(args.repeats):
        for name, launcher, flags in configs:
            cmd = launcher + [args.mnist, "--model", model, "--epochs", "1", "--holdout", "0", "--test-limit", "100",
                              "--train-limit", str(images[model]), "--schedule", "constant"] + flags
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            m = re.search(r"seconds per epoch: ([0-9.]+)", out.stdout)
            if out.returncode != 0 or not m:
                sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
            rates.setdefault((model, name), []).append(images[model] / float(m.group(1)))

print("| model | configuration | images/s min | images/s median | ms per step (median) |")
print("|---|---|---:|---:|---:|")
for (model, name), r in rates.items():
    batch = 64 if "batch 64" in name else 128
    med = statistics.median(r)
    print(f"| {model} | {name} | {min(r):.0f} | {med:.0f} | {1000 * (128 if 'processes' in name else batch) / med:.1f} |")

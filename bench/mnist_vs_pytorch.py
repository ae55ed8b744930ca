#!/usr/bin/python3
"""MNIST training time per epoch, lsgrad beside PyTorch, in one run on one machine.

    /usr/bin/python3 bench/mnist_vs_pytorch.py [--mnist build/release/examples/mnist/mnist]
        [--data DIR] [--threads 2] [--models mlp,cnn] [--epochs 1] [--repeats 1]

Trains the same models with the same settings in both:
  mlp: 784-256-256-10 with ReLU, batch 128, SGD momentum 0.9, lr 0.05, cosine decay per batch
  cnn: conv3x3·32 – ReLU – maxpool2 – conv3x3·64 – ReLU – maxpool2 – fc128 – ReLU – fc10 (padding 1),
       batch 128, Adam lr 2e-3, cosine decay per batch
on all 60 000 training images (lsgrad's --holdout 0), plain cross-entropy, a fresh shuffle per
epoch, both libraries' default (PyTorch's) initialisation. PyTorch runs here with
torch.set_num_threads(t) (and OpenBLAS's own thread count set to t through ctypes); lsgrad's `mnist`
program runs as a subprocess with --threads t and --metrics-out. Both run with
OMP_WAIT_POLICY=PASSIVE, so idle OpenMP threads sleep rather than spin against the working ones
(PyTorch's best setting on few cores).

s/epoch is the training loop alone (data already in memory; batches gathered, forward, backward,
optimizer step), not the test evaluation. Each model and thread count trains --repeats times in
each library, the two alternating (PyTorch, lsgrad, PyTorch, ...) so that a busy spell of a shared
host falls on both; the table gives the median and the minimum over all the epochs of all the
repeats, and the ratio is PyTorch's median over lsgrad's: above 1 means lsgrad is faster. Accuracies are on the 10 000 test images after the
last epoch. PyTorch's OpenBLAS runs the best core for this CPU (bench/openblas_core.py: a generic
fallback is replaced through OPENBLAS_CORETYPE), named in the table's header. Use Debian's
/usr/bin/python3 (python3-torch 1.13); MNIST's IDX files are read with numpy from --data (default:
where scripts/fetch_mnist.sh puts them).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when OpenMP starts: before torch is imported
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openblas_core  # noqa: E402

# PyTorch's OpenBLAS on the best core for this CPU (OPENBLAS_CORETYPE is read when it loads).
BLAS_OWN_CHOICE, _ = openblas_core.fair_blas()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MEAN, STD = 0.1307, 0.3081
BATCH = 128
CONFIG = {
    "mlp": {"optimizer": "sgd", "lr": 0.05},
    "cnn": {"optimizer": "adam", "lr": 2e-3},
}


def default_data_dir():
    if os.environ.get("LSGRAD_DATA_DIR"):
        return os.environ["LSGRAD_DATA_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "lsgrad", "mnist")


def read_idx(path):
    """An unsigned-byte IDX file (raw) as a numpy array of its declared shape."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir, train):
    prefix = "train" if train else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"))
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - MEAN) / STD
    return x.unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64))


def build(model):
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def train_pytorch(model_name, threads, epochs, train, test, seed):
    """(seconds of each epoch's training loop, test accuracy after the last)."""
    torch.set_num_threads(threads)
    openblas_core.set_threads(threads)
    torch.manual_seed(seed)
    x, y = train
    model = build(model_name)
    cfg = CONFIG[model_name]
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    steps = epochs * ((len(y) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), BATCH):
            idx = order[start:start + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        xt, yt = test
        correct = sum(int((model(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum()) for i in range(0, len(yt), 1000))
    return seconds, correct / len(yt)


def train_lsgrad(binary, model_name, threads, epochs, data_dir, seed):
    """(seconds of each epoch, test accuracy after the last) from lsgrad's --metrics-out lines."""
    cfg = CONFIG[model_name]
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "metrics.jsonl")
        cmd = [binary, "--model", model_name, "--loss", "ce", "--optimizer", cfg["optimizer"], "--lr", str(cfg["lr"]),
               "--schedule", "cosine", "--batch-size", str(BATCH), "--epochs", str(epochs), "--threads", str(threads),
               "--holdout", "0", "--seed", str(seed), "--data", data_dir, "--metrics-out", metrics]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
        with open(metrics) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    return [line["seconds"] for line in lines], lines[-1]["test_acc"]


def blas_note():
    core = openblas_core.corename()
    own = "" if core == BLAS_OWN_CHOICE else f", set by OPENBLAS_CORETYPE; its own choice: {BLAS_OWN_CHOICE}"
    return f"PyTorch's OpenBLAS core: {core}{own}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", default="build/release/examples/mnist/mnist", help="lsgrad's mnist program")
    ap.add_argument("--data", default=default_data_dir(), help="folder of the four MNIST IDX files")
    ap.add_argument("--threads", default="2", help="comma-separated thread counts")
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="trainings per library, alternating")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not os.path.exists(args.mnist):
        sys.exit(f"{args.mnist} not found: build lsgrad first (scripts/build.sh)")

    train, test = load(args.data, True), load(args.data, False)
    rows = []
    for model_name in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            pt_s, ls_s = [], []
            for _ in range(args.repeats):
                seconds, pt_acc = train_pytorch(model_name, threads, args.epochs, train, test, args.seed)
                pt_s += seconds
                seconds, ls_acc = train_lsgrad(args.mnist, model_name, threads, args.epochs, args.data, args.seed)
                ls_s += seconds
            rows.append((model_name, threads, pt_s, ls_s, pt_acc, ls_acc))
            print(f"{model_name} threads={threads}: PyTorch {[round(s, 2) for s in pt_s]} s, "
                  f"lsgrad {[round(s, 2) for s in ls_s]} s", file=sys.stderr)

    cfg = ", ".join(f"{m}: {CONFIG[m]['optimizer']} lr {CONFIG[m]['lr']:g}" for m in args.models.split(","))
    print(f"\nMNIST, batch {BATCH}, {args.repeats} × {args.epochs} epoch(s) of 60 000 images per library, "
          f"alternating, cosine schedule ({cfg}); PyTorch {torch.__version__}, {blas_note()}; "
          f"OMP_WAIT_POLICY=PASSIVE\n")
    print("| model | threads | PyTorch s/epoch median (min) | lsgrad s/epoch median (min) | PyTorch / lsgrad "
          "| PyTorch test acc | lsgrad test acc |")
    print("|---|---|---|---|---|---|---|")
    for model_name, threads, pt_s, ls_s, pt_acc, ls_acc in rows:
        pt, ls = statistics.median(pt_s), statistics.median(ls_s)
        print(f"| {model_name} | {threads} | {pt:.2f} ({min(pt_s):.2f}) | {ls:.2f} ({min(ls_s):.2f}) | {pt / ls:.2f}× "
              f"| {100 * pt_acc:.2f} % | {100 * ls_acc:.2f} % |")


if __name__ == "__main__":
    main()

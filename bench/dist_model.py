#!/usr/bin/env python3
"""The scaling model of docs/distributed.md: data-parallel step time on p nodes from a measured
compute time per step and a ring allreduce of the gradient buckets.

  T_ar(p) = sum over buckets of [ 2(p-1)/p * S_k/B + 2(p-1)*alpha ]     ring allreduce
  T_step  = T_c + T_ar(p)   (no overlap: both models' gradients fit in one 25 MiB bucket, which is
                             ready only when backward ends, so there is nothing to overlap)
  weak scaling (batch b per node):  speedup = p * T_c / T_step, efficiency = T_c / T_step
  strong scaling (global batch G):  T_c(G/p) = T_c * (G/p) / b (compute linear in the batch),
                                    speedup = T_c(G) / T_step(p)

    bench/dist_model.py --mlp-ms 3.1 --cnn-ms 25 [--batch 64]

--mlp-ms/--cnn-ms: one node's compute time per step at --batch images (forward, backward, SGD step),
measured by bench/dist_scaling.py ("1 process x 1 thread, batch 64").
"""
import argparse

# Parameters of the MNIST example's models (examples/mnist/main.cpp), f32.
PARAMS = {"mlp": 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10,
          "cnn": 32 * 9 + 32 + 64 * 32 * 9 + 64 + 64 * 7 * 7 * 128 + 128 + 128 * 10 + 10}
NETWORKS = {"100 Gb/s InfiniBand (B = 12.5 GB/s, alpha = 2 us)": (12.5e9, 2e-6),
            "10 Gb/s Ethernet, TCP (B = 1.25 GB/s, alpha = 50 us)": (1.25e9, 50e-6)}
NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
BUCKET_CAP = 25 * 2**20


def buckets(nbytes, cap=BUCKET_CAP):
    sizes = []
    while nbytes > 0:
        sizes.append(min(nbytes, cap))
        nbytes -= sizes[-1]
    return sizes


def t_allreduce(p, sizes, bandwidth, alpha):
    if p == 1:
        return 0.0
    return sum(2 * (p - 1) / p * s / bandwidth + 2 * (p - 1) * alpha for s in sizes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlp-ms", type=float, required=True)
    ap.add_argument("--cnn-ms", type=float, required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--global-batch", type=int, default=4096)
    a = ap.parse_args()
    for model, tc_ms in (("mlp", a.mlp_ms), ("cnn", a.cnn_ms)):
        nbytes = 4 * PARAMS[model]
        sizes = buckets(nbytes)
        tc = tc_ms / 1000
        names = [n.split(" (")[0] for n in NETWORKS]
        print(f"\n{model.upper()}: {PARAMS[model]} parameters, {nbytes / 2**20:.2f} MiB of gradients in "
              f"{len(sizes)} bucket(s); T_c = {tc_ms:g} ms per step at batch {a.batch} per node; weak scaling "
              f"(batch {a.batch} per node), no overlap\n")
        print("| nodes | global batch | " + " | ".join(f"T_ar, {n} (ms) | speedup | efficiency" for n in names) + " |")
        print("|---:|---:|" + "---:|---:|---:|" * len(names))
        for p in NODES:
            cells = []
            for bw, alpha in NETWORKS.values():
                tar = t_allreduce(p, sizes, bw, alpha)
                cells.append(f"{1000 * tar:.2f} | {p * tc / (tc + tar):.1f} | {100 * tc / (tc + tar):.0f} %")
            print(f"| {p} | {p * a.batch} | " + " | ".join(cells) + " |")
        g = a.global_batch
        print(f"\n{model.upper()}, strong scaling: global batch {g} split over the nodes, no overlap\n")
        print("| nodes | batch per node | T_c (ms) | " + " | ".join(f"speedup, {n.split(' (')[0]}" for n in NETWORKS) + " |")
        print("|---:|---:|---:|" + "---:|" * len(NETWORKS))
        for p in NODES:
            tcp = tc * (g / p) / a.batch
            cells = []
            for bw, alpha in NETWORKS.values():
                cells.append(f"{tc * g / a.batch / (tcp + t_allreduce(p, sizes, bw, alpha)):.1f}")
            print(f"| {p} | {g / p:g} | {1000 * tcp:.2f} | " + " | ".join(cells) + " |")


main()

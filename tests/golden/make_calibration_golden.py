#!/usr/bin/env python3
"""References for the calibration metrics of ops/calibration.h: writes calibration_metrics.json beside
this script; tests/test_calibration.cpp reads it. Run with Debian's python3-torch (PyTorch 1.13):

    /usr/bin/python3 tests/golden/make_calibration_golden.py

Each case stores float32 probabilities (rows of a softmax of random logits at some temperature) and
labels drawn from a different temperature, so the cases are over- or under-confident, and these
references, every one computed in float64 from the stored float32 values:

- torchmetrics' top-label calibration error, its formula restated (torchmetrics is not installed
  here): confidences = max p, accuracies = (argmax p == y), bin_boundaries = linspace(0, 1, B + 1),
  indices = bucketize(confidences, boundaries, right=True) - 1, per-bin sums with scatter_add,
  acc_bin and conf_bin as means (0 for empty bins), prop_bin = count / N; then
  l1 = sum |acc - conf| * prop, l2 = sqrt(sum (acc - conf)^2 * prop), max = max |acc - conf|.
  Its bins are [lower, upper), lsgrad's (lower, upper]: they agree unless a confidence lies exactly on
  an edge, which the random cases never do (the script checks).
- equal-mass ECE: the samples sorted by confidence (stable), cut into B runs of floor((b+1)N/B) -
  floor(bN/B); the same gap formula.
- classwise ECE (Kull et al. 2019): per class k, the column p[:, k] in B equal-width bins
  (lower, upper], "right" meaning y == k; the mean over classes of the per-class l1 error.
- Brier score: mean over rows of sum_k (p_k - onehot(y)_k)^2; NLL: mean of -log p_y.
"""

import json
import os

import numpy as np
import torch

from make_golden import calibration_sample

HERE = os.path.dirname(os.path.abspath(__file__))


def torchmetrics_top_label(probs, labels, n_bins):
    probs = torch.as_tensor(probs, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    confidences, preds = probs.max(dim=1)
    accuracies = (preds == labels).to(torch.float64)
    boundaries = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    assert not any(bool((confidences == b).any()) for b in boundaries[1:-1]), "a confidence on an edge"
    indices = torch.bucketize(confidences, boundaries, right=True) - 1
    count = torch.zeros(len(boundaries), dtype=torch.float64).scatter_add_(0, indices, torch.ones_like(confidences))
    conf = torch.zeros(len(boundaries), dtype=torch.float64).scatter_add_(0, indices, confidences)
    acc = torch.zeros(len(boundaries), dtype=torch.float64).scatter_add_(0, indices, accuracies)
    conf = torch.nan_to_num(conf / count)
    acc = torch.nan_to_num(acc / count)
    prop = count / count.sum()
    gap = (acc - conf).abs()
    return {
        "l1": float((gap * prop).sum()),
        "l2": float(torch.sqrt(((acc - conf) ** 2 * prop).sum())),
        "max": float(gap.max()),
    }


def gaps_ece(conf, hit, groups):
    n = len(conf)
    ece = 0.0
    for idx in groups:
        if len(idx) == 0:
            continue
        ece += len(idx) / n * abs(hit[idx].mean() - conf[idx].mean())
    return ece


def equal_mass_ece(probs, labels, n_bins):
    p = probs.astype(np.float64)
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == labels).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    n = len(conf)
    groups = [order[(b * n) // n_bins:((b + 1) * n) // n_bins] for b in range(n_bins)]
    return gaps_ece(conf, hit, groups)


def equal_width_groups(values, n_bins):
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    groups = []
    for b in range(n_bins):
        mask = (values > edges[b]) & (values <= edges[b + 1])
        if b == 0:
            mask |= values == 0.0
        groups.append(np.nonzero(mask)[0])
    return groups


def classwise_ece(probs, labels, n_bins):
    p = probs.astype(np.float64)
    k = p.shape[1]
    total = 0.0
    for c in range(k):
        col = p[:, c]
        total += gaps_ece(col, (labels == c).astype(np.float64), equal_width_groups(col, n_bins))
    return total / k


def main():
    rng = np.random.default_rng(20261130)
    cases = []
    for name, n, k, bins, temp in [("overconfident", 450, 10, 15, 0.4), ("underconfident", 300, 10, 15, 3.0),
                                   ("three_classes_10_bins", 200, 3, 10, 1.0), ("five_bins", 150, 4, 5, 0.7)]:
        probs, labels = calibration_sample(rng, n, k, temp)
        p64 = probs.astype(np.float64)
        tm = torchmetrics_top_label(probs, labels, bins)
        onehot = np.eye(k)[labels]
        cases.append({
            "name": name, "N": n, "K": k, "bins": bins,
            # The shortest decimal that reads back as the same float32 (C++ reads them as float).
            "probs": [float(np.format_float_positional(v, unique=True)) for v in probs.reshape(-1)],
            "labels": labels.tolist(),
            "torchmetrics_l1": tm["l1"], "torchmetrics_l2": tm["l2"], "torchmetrics_max": tm["max"],
            "ece_equal_mass": equal_mass_ece(probs, labels, bins),
            "classwise_ece": classwise_ece(probs, labels, bins),
            "brier": float(((p64 - onehot) ** 2).sum(axis=1).mean()),
            "nll": float(-np.log(p64[np.arange(n), labels]).mean()),
        })
    with open(os.path.join(HERE, "calibration_metrics.json"), "w") as f:
        json.dump({"generator": "tests/golden/make_calibration_golden.py", "torch": torch.__version__,
                   "cases": cases}, f, indent=None)
        f.write("\n")


if __name__ == "__main__":
    main()

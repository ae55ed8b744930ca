#!/usr/bin/python3
"""Reference values for lsgrad's loss layer, computed with PyTorch.

Run with Debian's interpreter (it has python3-torch 1.13):

    /usr/bin/python3 tests/golden/make_golden.py

Writes cross_entropy.json, nll_loss.json, kl_div.json, bce.json, distillation.json, calibration.json
and mixup.json beside this script. tests/test_loss_golden.cpp, test_calibration.cpp and test_mixup.cpp read them.

Inputs are not stored (except for small cases, as a check of the formulas): they come from integer
formulas that C++ reproduces bit-exactly, every step in float32 (an integer below 2^24 converts to
float32 exactly, and one IEEE division rounds the same way in both languages):

    logits   x[i,k] = float32(((i*7919 + k*104729 + seed) % 2001) - 1000) / float32(div)
    weight   w[k]   = float32(0.5) + float32((k*37 + 11) % 17) / float32(16)       (also pos_weight)
    unit     u[i,k] = float32((i*13 + k*29 + seed) % 101) / float32(100)           (in [0, 1])
    prob     t[i,k] = float32(m[i,k]) / float32(S_i),  m[i,k] = (i*17 + k*23 + seed) % 50,
                      S_i = sum_k m[i,k]                                          (rows sum to ~1)
    logunit  l[i,k] = -float32((i*13 + k*29 + seed) % 101) / float32(20)          (in [-5, 0])
    upstream g[j]   = float32(1 + j % 3) / float32(2), j the flat index of the unreduced loss

Index targets are stored explicitly (N values). With reduction "none" the stored gradient is that of
sum_j g[j] * loss[j]; with "sum", "mean", "batchmean" it is that of the scalar loss.

References are computed in float64 by PyTorch from the exact float32 inputs and stored rounded to
float32, so they carry no float32 rounding of their own. For K >= 1000 only sampled gradient entries
[i, k, value] are stored, plus per-row sums and per-row sums of absolute values of the gradient.

Cases where LOSSES.md deliberately departs from PyTorch (a Mean over all-ignored rows is 0, not NaN;
kl_div's t = 0 term with input = -inf is 0, not NaN; a negative smoothing factor is an error) are not
here: the C++ tests pin those rules on their own.
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
FULL_GRAD_MAX = 200  # store the whole gradient up to this many elements
FORMULAS = {
    "logits": "x[i,k] = float32(((i*7919 + k*104729 + seed) % 2001) - 1000) / float32(div)",
    "weight": "w[k] = float32(0.5) + float32((k*37 + 11) % 17) / float32(16)",
    "unit": "u[i,k] = float32((i*13 + k*29 + seed) % 101) / float32(100)",
    "prob": "t[i,k] = float32(m) / float32(S_i), m = (i*17 + k*23 + seed) % 50, S_i = sum_k m",
    "logunit": "l[i,k] = -float32((i*13 + k*29 + seed) % 101) / float32(20)",
    "upstream": "g[j] = float32(1 + j % 3) / float32(2), j = flat index of the unreduced loss",
    "reference": "torch float64 on the exact float32 inputs, stored rounded to float32",
    "none_gradient": "reduction none: gradient of sum_j g[j]*loss[j]; otherwise of the scalar loss",
}


def grid(n, k):
    i = np.arange(n, dtype=np.int64)[:, None]
    c = np.arange(k, dtype=np.int64)[None, :]
    return i, c


def logits(n, k, seed, div=100):
    i, c = grid(n, k)
    v = ((i * 7919 + c * 104729 + seed) % 2001) - 1000
    return v.astype(np.float32) / np.float32(div)


def weights(k):
    c = np.arange(k, dtype=np.int64)
    return np.float32(0.5) + ((c * 37 + 11) % 17).astype(np.float32) / np.float32(16)


def unit(n, k, seed):
    i, c = grid(n, k)
    return ((i * 13 + c * 29 + seed) % 101).astype(np.float32) / np.float32(100)


def logunit(n, k, seed):
    i, c = grid(n, k)
    return -(((i * 13 + c * 29 + seed) % 101).astype(np.float32) / np.float32(20))


def prob(n, k, seed):
    i, c = grid(n, k)
    m = (i * 17 + c * 23 + seed) % 50
    s = m.sum(axis=1, keepdims=True)
    return m.astype(np.float32) / s.astype(np.float32)


def upstream(shape):
    j = np.arange(int(np.prod(shape)), dtype=np.int64)
    return ((1 + j % 3).astype(np.float32) / np.float32(2)).reshape(shape)


def f32(a):
    """Float32 values as the shortest decimal that reads back as the same float32."""
    a = np.asarray(a, dtype=np.float32).ravel()
    return [float(str(v)) for v in a]


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32).astype(np.float64))


def backprop(loss, reduction):
    """Gradient seed: the upstream formula for unreduced losses, 1 for scalars."""
    if reduction == "none":
        loss.backward(t64(upstream(tuple(loss.shape))))
    else:
        loss.backward()


def grad_record(case, g, targets=None):
    """Stores the gradient whole when small, else sampled entries plus per-row sums."""
    g = g.numpy()
    n, k = g.shape
    if n * k <= FULL_GRAD_MAX:
        case["grad"] = f32(g)
        return
    samples = []
    for i in range(n):
        cols = {0, k - 1, (i * 97 + 13) % k, (i * 7919 + 5) % k}
        if targets is not None and 0 <= targets[i] < k:
            cols.add(int(targets[i]))
        for c in sorted(cols):
            samples.append([i, c, f32([g[i, c]])[0]])
    case["grad_samples"] = samples
    case["grad_row_sums"] = [float(v) for v in g.sum(axis=1)]
    case["grad_row_abs_sums"] = [float(v) for v in np.abs(g).sum(axis=1)]


def loss_record(case, loss):
    v = loss.detach().numpy()
    case["loss"] = f32(v) if v.ndim else f32([v])[0]


REDUCTIONS = ["none", "sum", "mean"]


def index_targets(n, k, seed, ignore_index, ignored_rows):
    y = [(i * 131 + seed * 7 + 3) % k for i in range(n)]
    for r in ignored_rows:
        y[r] = ignore_index
    return y


# Index-target variants: (name, weight, ignore_index, ignored rows, eps, div, which K).
CE_VARIANTS = [
    ("plain", False, -100, [], 0.0, 100, None),
    ("weight", True, -100, [], 0.0, 100, None),
    ("ignore", False, -100, [1, -1], 0.0, 100, None),
    ("eps", False, -100, [], 0.15, 100, None),
    ("ignore_eps", False, -100, [1, -1], 0.15, 100, None),
    ("weight_eps", True, -100, [], 0.15, 100, None),
    ("weight_ignore_eps", True, -100, [1, -1], 0.15, 100, None),
    ("weight_ignore_in_range_eps", True, 3, [1, -1], 0.15, 100, {10, 1000, 32000}),
    ("large_eps", False, -100, [], 0.1, 1, {10, 1000}),
]
KS = [1, 2, 10, 1000, 32000]


def rows_for(k):
    return 6 if k <= 10 else 8


def ce_index_cases():
    cases = []
    seed = 0
    for k in KS:
        for vname, use_w, ign, ign_rows, eps, div, only in CE_VARIANTS:
            if only is not None and k not in only:
                continue
            for red in REDUCTIONS:
                seed += 1
                n = rows_for(k)
                rows = [r % n for r in ign_rows]
                y = index_targets(n, k, seed, ign, rows)
                x = logits(n, k, seed, div)
                xt = t64(x).requires_grad_(True)
                w = t64(weights(k)) if use_w else None
                loss = F.cross_entropy(xt, torch.tensor(y), weight=w, ignore_index=ign,
                                       reduction=red, label_smoothing=eps)
                backprop(loss, red)
                case = {"name": f"ce_{vname}_{red}_K{k}", "target_kind": "index", "N": n, "K": k,
                        "seed": seed, "div": div, "reduction": red, "label_smoothing": eps,
                        "ignore_index": ign, "weight": use_w, "target": y}
                if n * k <= FULL_GRAD_MAX:
                    case["logits"] = f32(x)
                loss_record(case, loss)
                grad_record(case, xt.grad, y)
                cases.append(case)
    return cases


def ce_prob_cases():
    cases = []
    seed = 500
    for k in KS:
        for vname, use_w, eps in [("prob", False, 0.0), ("prob_eps", False, 0.15),
                                  ("prob_weight", True, 0.0), ("prob_weight_eps", True, 0.15)]:
            for red in REDUCTIONS:
                seed += 1
                n = rows_for(k)
                x = logits(n, k, seed)
                t = prob(n, k, seed)
                xt = t64(x).requires_grad_(True)
                w = t64(weights(k)) if use_w else None
                loss = F.cross_entropy(xt, t64(t), weight=w, reduction=red, label_smoothing=eps)
                backprop(loss, red)
                case = {"name": f"ce_{vname}_{red}_K{k}", "target_kind": "prob", "N": n, "K": k,
                        "seed": seed, "div": 100, "reduction": red, "label_smoothing": eps,
                        "weight": use_w}
                if n * k <= FULL_GRAD_MAX:
                    case["logits"] = f32(x)
                    case["prob_target"] = f32(t)
                loss_record(case, loss)
                grad_record(case, xt.grad)
                cases.append(case)
    return cases


def nll_cases():
    cases = []
    seed = 1000
    for k in [1, 2, 10, 1000]:
        for vname, use_w, ign, ign_rows in [("plain", False, -100, []), ("weight", True, -100, []),
                                            ("ignore", False, -100, [1, -1]),
                                            ("weight_ignore", True, -100, [1, -1])]:
            for red in REDUCTIONS:
                seed += 1
                n = rows_for(k)
                rows = [r % n for r in ign_rows]
                y = index_targets(n, k, seed, ign, rows)
                x = logits(n, k, seed)
                xt = t64(x).requires_grad_(True)
                w = t64(weights(k)) if use_w else None
                loss = F.nll_loss(xt, torch.tensor(y), weight=w, ignore_index=ign, reduction=red)
                backprop(loss, red)
                case = {"name": f"nll_{vname}_{red}_K{k}", "N": n, "K": k, "seed": seed, "div": 100,
                        "reduction": red, "ignore_index": ign, "weight": use_w, "target": y}
                loss_record(case, loss)
                grad_record(case, xt.grad, y)
                cases.append(case)
    return cases


def kl_cases():
    cases = []
    seed = 2000
    for n, k in [(5, 7), (8, 1000)]:
        for log_target in [False, True]:
            for red in ["none", "sum", "mean", "batchmean"]:
                seed += 1
                x = logits(n, k, seed)
                t = logunit(n, k, seed) if log_target else unit(n, k, seed)
                xt = t64(x).requires_grad_(True)
                loss = F.kl_div(xt, t64(t), reduction=red, log_target=log_target)
                backprop(loss, red)
                case = {"name": f"kl_{red}_{'logtarget' if log_target else 'prob'}_{n}x{k}",
                        "N": n, "K": k, "seed": seed, "div": 100, "reduction": red,
                        "log_target": log_target,
                        "target_formula": "logunit" if log_target else "unit"}
                if n * k <= FULL_GRAD_MAX:
                    case["input"] = f32(x)
                    case["target"] = f32(t)
                v = loss.detach().numpy()
                if red == "none" and n * k > FULL_GRAD_MAX:
                    case["loss_row_sums"] = [float(s) for s in v.sum(axis=1)]
                    case["loss_samples"] = [[i, c, f32([v[i, c]])[0]]
                                            for i in range(n) for c in (0, (i * 97 + 13) % k, k - 1)]
                else:
                    loss_record(case, loss)
                grad_record(case, xt.grad)
                cases.append(case)
    return cases


def bce_cases():
    cases = []
    seed = 3000
    n, c = 6, 5
    for vname, use_pw, use_w, eps, div in [("plain", False, False, 0.0, 100),
                                          ("pos_weight", True, False, 0.0, 100),
                                          ("weight", False, True, 0.0, 100),
                                          ("eps", False, False, 0.1, 100),
                                          ("pos_weight_eps", True, False, 0.1, 100),
                                          ("large", False, False, 0.0, 10)]:
        for red in REDUCTIONS:
            seed += 1
            x = logits(n, c, seed, div)
            t = unit(n, c, seed)
            # Keras-style smoothing, the rule lsgrad applies inside the op.
            ts = t64(t) * (1.0 - eps) + eps / 2.0
            xt = t64(x).requires_grad_(True)
            pw = t64(weights(c)) if use_pw else None
            w = t64(weights(c)) if use_w else None
            loss = F.binary_cross_entropy_with_logits(xt, ts, weight=w, pos_weight=pw, reduction=red)
            backprop(loss, red)
            case = {"name": f"bce_{vname}_{red}", "N": n, "K": c, "seed": seed, "div": div,
                    "reduction": red, "label_smoothing": eps, "pos_weight": use_pw, "weight": use_w,
                    "input": f32(x), "target": f32(t)}
            loss_record(case, loss)
            grad_record(case, xt.grad)
            cases.append(case)
    return cases


def distillation_cases():
    """alpha*T^2*KL(softmax(teacher/T) || softmax(student/T)) (batchmean) + (1-alpha)*CE(student, y, eps);
    the teacher is logits(N, K, teacher_seed, div=50) and gets no gradient."""
    cases = []
    seed = 4000
    for k in [10, 1000]:
        for temp, alpha, eps in [(1.0, 0.5, 0.0), (4.0, 0.5, 0.0), (4.0, 0.9, 0.1), (2.0, 0.0, 0.1),
                                 (3.0, 1.0, 0.0)]:
            seed += 1
            n = rows_for(k)
            tseed = seed + 100
            y = index_targets(n, k, seed, -100, [])
            xt = t64(logits(n, k, seed)).requires_grad_(True)
            teacher = t64(logits(n, k, tseed, 50))
            kl = F.kl_div(F.log_softmax(xt / temp, dim=1), F.softmax(teacher / temp, dim=1), reduction="batchmean")
            loss = alpha * temp * temp * kl + (1.0 - alpha) * F.cross_entropy(xt, torch.tensor(y), label_smoothing=eps)
            loss.backward()
            case = {"name": f"distill_T{temp:g}_a{alpha:g}_eps{eps:g}_K{k}".replace(".", "p"), "N": n, "K": k,
                    "seed": seed, "div": 100, "teacher_seed": tseed, "teacher_div": 50, "temperature": temp,
                    "alpha": alpha, "label_smoothing": eps, "target": y}
            loss_record(case, loss)
            grad_record(case, xt.grad, y)
            cases.append(case)
    return cases


# --- calibration: a numpy reference for ECE ---------------------------------------------------

def ece_reference(probs, labels, bins):
    """Equal-width bins with edges b/bins (float64); a sample with confidence c lies in the bin with
    lower < c <= upper, confidence 0 in the first bin; the prediction is the first arg-max."""
    probs = probs.astype(np.float64)
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == labels).astype(np.float64)
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    table = []
    ece = 0.0
    n = len(labels)
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        mask = (conf > lo) & (conf <= hi)
        if b == 0:
            mask |= conf == 0.0
        cnt = int(mask.sum())
        acc = float(correct[mask].mean()) if cnt else 0.0
        mc = float(conf[mask].mean()) if cnt else 0.0
        ece += cnt / n * abs(acc - mc)
        table.append({"lower": lo, "upper": hi, "count": cnt, "accuracy": acc, "confidence": mc})
    return ece, table


def calibration_sample(rng, n, k, temp):
    """n rows of k classes: labels drawn from softmax(z) for z ~ N(0, 2²), and the float32
    probabilities softmax(z / temp) a model with that temperature would report (temp < 1:
    over-confident, > 1: under-confident)."""
    z = rng.normal(size=(n, k)) * 2.0
    p_true = np.exp(z - z.max(axis=1, keepdims=True))
    p_true /= p_true.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p_true], dtype=np.int64)
    zt = z / temp
    p = np.exp(zt - zt.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32), labels


def calibration_cases():
    rng = np.random.default_rng(20261123)
    cases = []
    for name, n, k, bins, temp in [("random_15", 400, 10, 15, 1.0), ("overconfident_10", 300, 4, 10, 0.3),
                                   ("underconfident_15", 300, 10, 15, 4.0), ("one_bin", 50, 3, 1, 1.0)]:
        p, labels = calibration_sample(rng, n, k, temp)
        ece, table = ece_reference(p, labels, bins)
        cases.append({"name": name, "N": n, "K": k, "bins": bins, "probs": f32(p),
                      "labels": labels.tolist(), "ece": ece, "table": table})
    # Confidences exactly on bin edges (0.5, 1.0, 0.25 are exact in float32 and float64), ties in
    # the arg-max (the first index wins) and a zero row.
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [0.75, 0.25], [0.0, 0.0], [0.5, 0.5]],
                 dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1], dtype=np.int64)
    for bins in (4, 10):
        ece, table = ece_reference(p, labels, bins)
        cases.append({"name": f"edges_{bins}", "N": 6, "K": 2, "bins": bins, "probs": f32(p),
                      "labels": labels.tolist(), "ece": ece, "table": table})
    return cases


def temperature_case():
    """Logits of a miscalibrated model and the NLL-minimising temperature by golden section in
    float64 on log T, refined to 1e-10."""
    rng = np.random.default_rng(7)
    n, k = 256, 6
    z = rng.normal(size=(n, k)) * 1.5
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p], dtype=np.int64)
    x = (z * 2.7).astype(np.float32)  # over-confident: the answer is near 2.7
    x64 = torch.from_numpy(x.astype(np.float64))
    y = torch.from_numpy(labels)

    def nll(log_t):
        return float(F.cross_entropy(x64 / np.exp(log_t), y, reduction="mean"))

    a, b = np.log(1e-2), np.log(1e2)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    while b - a > 1e-12:
        if nll(c) < nll(d):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    t = float(np.exp((a + b) / 2.0))
    return {"name": "miscalibrated_256x6", "N": n, "K": k, "logits": f32(x), "labels": labels.tolist(),
            "temperature": t, "nll_at_temperature": nll(np.log(t)), "nll_at_1": nll(0.0)}


# --- mixup: timm's mixup_target formula, replicated with torch --------------------------------

def timm_mixup_target(target, num_classes, lam, smoothing):
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = torch.full((target.numel(), num_classes), off, dtype=torch.float64).scatter_(
        1, target.view(-1, 1), on)
    y2 = torch.full((target.numel(), num_classes), off, dtype=torch.float64).scatter_(
        1, target.flip(0).view(-1, 1), on)
    return y1 * lam + y2 * (1.0 - lam)


def mixup_cases():
    cases = []
    for name, y, k, lam, eps in [
        ("scalar_plain", [0, 1, 2, 3], 5, 0.7, 0.0),
        ("scalar_eps", [4, 0, 2, 2, 1, 3], 5, 0.3, 0.1),
        ("odd_batch", [1, 0, 2], 3, 0.6, 0.2),
        ("lam_one", [0, 1], 4, 1.0, 0.1),
        ("lam_zero", [0, 1, 2], 4, 0.0, 0.0),
        ("per_row", [0, 1, 2, 3], 6, [0.9, 0.55, 0.55, 0.9], 0.1),
        ("per_row_elem", [5, 1, 0, 3, 2], 10, [0.2, 1.0, 0.75, 0.4, 0.6], 0.05),
    ]:
        lam_t = torch.tensor(lam, dtype=torch.float64).view(-1, 1) if isinstance(lam, list) else lam
        t = timm_mixup_target(torch.tensor(y), k, lam_t, eps)
        cases.append({"name": name, "target": y, "num_classes": k, "lam": lam, "label_smoothing": eps,
                      "expected": [float(v) for v in t.numpy().ravel()]})
    return cases


def write(name, payload):
    payload = {"torch_version": torch.__version__, "generator": "tests/golden/make_golden.py",
               "formulas": FORMULAS, **payload}
    path = os.path.join(HERE, name)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, separators=(",", ":"))
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"{name}: {os.path.getsize(path)} bytes, {len(payload.get('cases', []))} cases")


def main():
    torch.set_num_threads(1)
    write("cross_entropy.json", {"cases": ce_index_cases() + ce_prob_cases()})
    write("nll_loss.json", {"cases": nll_cases()})
    write("kl_div.json", {"cases": kl_cases()})
    write("bce.json", {"cases": bce_cases()})
    write("distillation.json", {"cases": distillation_cases()})
    write("calibration.json", {"cases": calibration_cases(), "temperature": temperature_case()})
    write("mixup.json", {"cases": mixup_cases()})


if __name__ == "__main__":
    main()

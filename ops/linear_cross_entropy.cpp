// The fused linear cross-entropy op: validation, the block sizes, the kernel call through the
// device's LinearCrossEntropyKernels table and the autograd record. With Mean or Sum the kernel
// computes dh, dW and db in the forward pass and backward multiplies them by the upstream scalar
// (detail::FusedSaved); with None the upstream gradient has one value per row, which cannot be
// applied to a finished dW, so backward runs the kernel again with those row factors.
#include "lsgrad/ops/linear_cross_entropy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <utility>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/checked.h"
#include "lsgrad/core/error.h"
#include "lsgrad/ops/loss_kernels.h"

namespace lsg {
namespace {

constexpr const char* kOp = "linear_cross_entropy";

TensorOptions like(const Tensor& x) { return {.dtype = x.dtype(), .device = x.device()}; }

// Everything one kernel call needs, checked and contiguous.
struct Inputs {
    Tensor h, W, b, target, target_b, lambda, class_weight;
    LinearCrossEntropyOptions o;
    Reduction reduction = Reduction::Mean;
    int64_t N = 0, H = 0, V = 0;
    int64_t chunk_rows = 1, chunk_classes = 1;
};

void check_target(const Tensor& t, const char* what, int64_t N, const Tensor& h) {
    LSG_CHECK_OP(kOp, t.defined(), what, " is an undefined tensor");
    LSG_CHECK_OP(kOp, t.dtype() == DType::i64 && t.dim() == 1 && t.size(0) == N, what, " must be int64 [", N,
                 "] for hidden ", h.shape(), ", got ", t.dtype(), " ", t.shape());
    detail::check_same_device(kOp, t, what, h, "hidden");
}

void check_finite_nonnegative(double v, const char* what) {
    LSG_CHECK_OP(kOp, std::isfinite(v) && v >= 0.0, what, " must be finite and ≥ 0, got ", v);
}

int64_t checked_chunk(const std::optional<int64_t>& c, int64_t fallback, const char* what) {
    if (!c) return fallback;
    LSG_CHECK_OP(kOp, *c >= 1, what, " must be ≥ 1, got ", *c);
    return *c;
}

// λ as N values of hidden's dtype, each checked to lie in [0, 1].
Tensor checked_lambda(const Tensor& lam, int64_t N, const Tensor& h) {
    LSG_CHECK_OP(kOp, lam.defined(), "lambda is an undefined tensor");
    LSG_CHECK_OP(kOp, is_floating(lam.dtype()), "lambda must be floating, got ", lam.dtype(), " ", lam.shape());
    detail::check_same_device(kOp, lam, "lambda", h, "hidden");
    const bool one = lam.numel() == 1 && lam.dim() <= 1;
    const bool per_row = lam.numel() == N && (lam.dim() == 1 || (lam.dim() == 2 && lam.size(1) == 1));
    LSG_CHECK_OP(kOp, one || per_row, "lambda must have shape [], [1], [", N, "] or [", N, ", 1], got ", lam.shape());
    const Tensor host = lam.to(Device::cpu()).to(DType::f64).contiguous();
    const double* v = host.data<double>();
    for (int64_t i = 0; i < host.numel(); ++i)
        LSG_CHECK_OP(kOp, v[i] >= 0.0 && v[i] <= 1.0, "lambda ", v[i], " of row ", i, " is outside [0, 1]");
    const Tensor flat = lam.to(h.dtype()).reshape({lam.numel()});
    return (one ? flat.expand({N}) : flat).contiguous();
}

Inputs check_inputs(const Tensor& hidden, const Tensor& weight, const Tensor& target, const Tensor* target_b,
                    const Tensor* lambda, const LinearCrossEntropyOptions& o, const Tensor& bias) {
    detail::check_floating(kOp, hidden, "hidden");
    detail::check_floating(kOp, weight, "weight");
    LSG_CHECK_OP(kOp, hidden.dim() == 2, "hidden must have shape [N, H], got ", hidden.shape());
    LSG_CHECK_OP(kOp, weight.dim() == 2, "weight must have shape [V, H], got ", weight.shape());
    LSG_CHECK_OP(kOp, weight.size(1) == hidden.size(1), "weight ", weight.shape(), " does not match hidden ",
                 hidden.shape(), ": H = ", hidden.size(1), " but weight has ", weight.size(1), " columns");
    LSG_CHECK_OP(kOp, weight.size(0) >= 1, "weight must have at least one class, got ", weight.shape());
    LSG_CHECK_OP(kOp, weight.dtype() == hidden.dtype(), "weight is ", weight.dtype(), " but hidden is ",
                 hidden.dtype());
    detail::check_same_device(kOp, weight, "weight", hidden, "hidden");
    Inputs in;
    in.N = hidden.size(0);
    in.H = hidden.size(1);
    in.V = weight.size(0);
    if (bias.defined()) {
        detail::check_floating(kOp, bias, "bias");
        LSG_CHECK_OP(kOp, bias.dim() == 1 && bias.size(0) == in.V, "bias must have shape [", in.V, "], got ",
                     bias.shape());
        LSG_CHECK_OP(kOp, bias.dtype() == hidden.dtype(), "bias is ", bias.dtype(), " but hidden is ", hidden.dtype());
        detail::check_same_device(kOp, bias, "bias", hidden, "hidden");
    }
    check_target(target, target_b ? "target_a" : "target", in.N, hidden);
    if (target_b) check_target(*target_b, "target_b", in.N, hidden);
    detail::check_smoothing(kOp, o.label_smoothing);
    detail::check_smoothing_classes(kOp, in.V, o.smoothing, o.padding_idx);
    check_finite_nonnegative(o.z_loss, "z_loss");
    check_finite_nonnegative(o.softcap, "softcap");
    const int64_t bytes = static_cast<int64_t>(dtype_size(hidden.dtype()));
    const LinearCrossEntropyChunks def =
        linear_cross_entropy_default_chunks(in.N, in.H, in.V, bytes, autograd::needs_grad({weight}));
    in.chunk_rows = checked_chunk(o.chunk_rows, def.rows, "chunk_rows");
    in.chunk_classes = checked_chunk(o.chunk_classes, def.classes, "chunk_classes");
    // The block is allocated: its size must not overflow.
    checked::numel(kOp, {std::min(in.chunk_rows, std::max<int64_t>(in.N, 1)), std::min(in.chunk_classes, in.V)},
                   bytes);
    // Checked before any copy: a backend without the table (CUDA and the CPU have one) says so plainly.
    LSG_CHECK_OP(kOp, hidden.device().is_cpu() || backend(hidden.device()).linear_cross_entropy != nullptr,
                 "not implemented on ", hidden.device(), ": its backend has no fused linear cross-entropy kernels");
    in.h = hidden.contiguous();
    in.W = weight.contiguous();
    in.b = bias.defined() ? bias.contiguous() : Tensor();
    in.class_weight = detail::checked_weight(kOp, o.weight, in.h, in.V);
    // CPU targets are checked here; CUDA ones on the device by the kernel (a bad row is recorded and
    // raised at the next synchronising call, as for cross_entropy), so they never travel to the host.
    in.target = target.contiguous();
    detail::check_kernel_targets(kOp, in.target, in.V, o.ignore_index);
    if (target_b) {
        in.target_b = target_b->contiguous();
        detail::check_kernel_targets(kOp, in.target_b, in.V, o.ignore_index);
        in.lambda = checked_lambda(*lambda, in.N, in.h);
    }
    in.o = o;
    in.reduction = o.reduction == Reduction::BatchMean ? Reduction::Mean : o.reduction;
    return in;
}

struct Grads {
    Tensor h, W, b;
};

// Runs the kernel: the loss (per row for None), and the gradients asked for in G (for an upstream
// gradient of 1, times row_scale when given).
Tensor run(const Inputs& in, const Tensor& row_scale, Grads* G, bool gh, bool gw, bool gb) {
    Tensor rows = empty({in.N}, like(in.h));
    Tensor out = in.reduction == Reduction::None ? rows : empty({}, like(in.h));
    LinearCrossEntropyArgs a;
    a.dtype = in.h.dtype();
    a.rows = in.N;
    a.hidden = in.H;
    a.classes = in.V;
    a.input = in.h.raw_data();
    a.weight = in.W.raw_data();
    a.bias = in.b.defined() ? in.b.raw_data() : nullptr;
    a.target = in.target.data<int64_t>();
    a.target_b = in.target_b.defined() ? in.target_b.data<int64_t>() : nullptr;
    a.lambda = in.lambda.defined() ? in.lambda.raw_data() : nullptr;
    a.class_weight = in.class_weight.defined() ? in.class_weight.raw_data() : nullptr;
    a.label_smoothing = in.o.label_smoothing;
    a.off_target = in.o.smoothing == Smoothing::OffTarget;
    a.padding_idx = in.o.padding_idx.value_or(-1);
    a.ignore_index = in.o.ignore_index;
    a.z_loss = in.o.z_loss;
    a.softcap = in.o.softcap;
    a.chunk_rows = in.chunk_rows;
    a.chunk_classes = in.chunk_classes;
    a.row_loss = rows.raw_data();
    a.row_scale = row_scale.defined() ? row_scale.raw_data() : nullptr;
    if (gh) {
        G->h = empty({in.N, in.H}, like(in.h));
        a.grad_input = G->h.raw_data();
    }
    if (gw) {
        G->W = empty({in.V, in.H}, like(in.h));
        a.grad_weight = G->W.raw_data();
    }
    if (gb) {
        G->b = empty({in.V}, like(in.h));
        a.grad_bias = G->b.raw_data();
    }
    a.reduction = in.reduction;
    a.reduced = in.reduction == Reduction::None ? nullptr : out.raw_data();
    kernel_table(in.h.device(), &Backend::linear_cross_entropy, "linear cross-entropy")
        .forward(kernel_context(in.h.device()), a);
    return out;
}

// The loss with its autograd record on the contiguous inputs in.h, in.W, in.b.
Tensor linear_cross_entropy_impl(const Inputs& in) {
    const bool gh = autograd::needs_grad({in.h});
    const bool gw = autograd::needs_grad({in.W});
    const bool gb = in.b.defined() && autograd::needs_grad({in.b});
    if (!gh && !gw && !gb) return run(in, Tensor(), nullptr, false, false, false);
    if (in.reduction == Reduction::None) {
        Tensor out = run(in, Tensor(), nullptr, false, false, false);
        auto saved = std::make_shared<Inputs>(in);
        autograd::record(kOp, out, {in.h, in.W, in.b}, [saved, gh, gw, gb](const Tensor& g) {
            const Tensor scale = g.to(saved->h.dtype()).contiguous();
            Grads G;
            run(*saved, scale, &G, gh, gw, gb);
            return std::vector<Tensor>{G.h, G.W, G.b};
        });
        return out;
    }
    Grads G;
    Tensor out = run(in, Tensor(), &G, gh, gw, gb);
    auto saved = std::make_shared<std::array<detail::FusedSaved, 3>>();
    const Tensor grads[3] = {G.h, G.W, G.b};
    for (size_t i = 0; i < 3; ++i) {
        (*saved)[i].grad = grads[i];
        (*saved)[i].rows = grads[i].defined() ? grads[i].numel() : 0;
        (*saved)[i].cols = 1;
    }
    autograd::record(kOp, out, {in.h, in.W, in.b}, [saved](const Tensor& g) {
        std::vector<Tensor> out_grads;
        for (const detail::FusedSaved& s : *saved) out_grads.push_back(s.grad.defined() ? s.backward(g) : Tensor());
        return out_grads;
    });
    return out;
}

}  // namespace

LinearCrossEntropyChunks linear_cross_entropy_default_chunks(int64_t rows, int64_t hidden, int64_t classes,
                                                            int64_t dtype_bytes, bool weight_grad) {
    constexpr int64_t kMinRows = 32;
    const int64_t budget = kLinearCrossEntropyBlockBytes / std::max<int64_t>(dtype_bytes, 1);
    const int64_t n = std::max<int64_t>(rows, 1);
    // All the logits when they fit; all rows in class chunks when the kernel can keep the chunks'
    // logits in dW (rows ≤ H); else whole rows while kMinRows of them fit, else class blocks of
    // kMinRows rows.
    if (classes <= budget / n) return {n, classes};
    if (weight_grad && rows <= hidden && budget / n >= 1) return {n, budget / n};
    const int64_t bv = std::max<int64_t>(1, std::min(classes, budget / kMinRows));
    const int64_t br = std::max<int64_t>(1, std::min(std::max<int64_t>(rows, 1), budget / bv));
    return {br, bv};
}

Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& target,
                            const LinearCrossEntropyOptions& options, const Tensor& bias) {
    const Inputs in = check_inputs(hidden, weight, target, nullptr, nullptr, options, bias);
    return linear_cross_entropy_impl(in);
}

Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const MixedTargets& target,
                            const LinearCrossEntropyOptions& options, const Tensor& bias) {
    const Inputs in = check_inputs(hidden, weight, target.target_a, &target.target_b, &target.lambda, options, bias);
    return linear_cross_entropy_impl(in);
}

}  // namespace lsg

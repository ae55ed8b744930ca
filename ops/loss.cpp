// The loss layer's ops: validation, buffers from the caching allocator, the kernel call through the
// device's LossKernels table, and the autograd record. The fused losses compute their gradient in
// the forward pass (the row is in cache then); their backward rescales that buffer by the upstream
// gradient on the device (on the CPU, a single upstream gradient of exactly 1 hands it over as it
// is). No op here waits for a device: CUDA target checks are deferred (see ops/loss.h).
#include "lsgrad/ops/loss.h"

#include <cmath>
#include <memory>
#include <utility>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/checked.h"
#include "lsgrad/core/error.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/ops/loss_math.h"
#include "lsgrad/ops/reduce.h"

namespace lsg {

[[noreturn]] void fail_target_out_of_range(const char* op, int64_t row, int64_t value, int64_t K,
                                           int64_t ignore_index) {
    detail::fail(op, "target ", value, " of row ", row, " is out of range: classes are [0, ", K,
                 ") and ignore_index is ", ignore_index);
}

namespace detail {

// ---- checks and backward shared with ops/linear_cross_entropy.cpp (see ops/loss_kernels.h) ----

void check_floating(const char* op, const Tensor& t, const char* what) {
    LSG_CHECK_OP(op, t.defined(), what, " is an undefined tensor");
    LSG_CHECK_OP(op, is_floating(t.dtype()), what, " must be float32 or float64, got ", t.dtype(), " ", t.shape());
}

void check_same_device(const char* op, const Tensor& a, const char* what_a, const Tensor& b, const char* what_b) {
    LSG_CHECK_OP(op, a.device() == b.device(), what_a, " is on ", a.device(), " but ", what_b, " is on ", b.device());
}

void check_smoothing(const char* op, double eps) {
    LSG_CHECK_OP(op, eps >= 0.0 && eps <= 1.0, "label_smoothing must lie in [0, 1], got ", eps);
}

namespace {
// Checks that every class index of a CPU target lies in [0, K) or equals ignore_index; names the
// first bad row and its value.
void check_index_targets(const char* op, const Tensor& target, int64_t K, int64_t ignore_index) {
    const int64_t* t = target.data<int64_t>();
    const int64_t N = target.numel();
    for (int64_t i = 0; i < N; ++i) {
        const int64_t v = t[i];
        if (v != ignore_index && (v < 0 || v >= K)) fail_target_out_of_range(op, i, v, K, ignore_index);
    }
}
}  // namespace

// The target check of a fused index-target loss: here for CPU targets, before the kernel (which
// trusts them). A CUDA kernel checks its targets on the device and records the first bad one there;
// the next synchronising call raises the same error, so targets are never copied to the host.
void check_kernel_targets(const char* op, const Tensor& target, int64_t K, int64_t ignore_index) {
    if (target.device().is_cpu()) check_index_targets(op, target, K, ignore_index);
}

// An optional class-weight tensor: 1-D [K], the logits' dtype and device, contiguous.
Tensor checked_weight(const char* op, const Tensor& weight, const Tensor& x, int64_t K) {
    if (!weight.defined()) return weight;
    LSG_CHECK_OP(op, weight.dim() == 1 && weight.size(0) == K, "weight must have shape [", K, "] (one per class), got ",
                 weight.shape());
    LSG_CHECK_OP(op, weight.dtype() == x.dtype(), "weight is ", weight.dtype(), " but the input is ", x.dtype());
    check_same_device(op, weight, "weight", x, "input");
    return weight.contiguous();
}

void check_smoothing_classes(const char* op, int64_t K, Smoothing smoothing, std::optional<int64_t> padding_idx) {
    if (smoothing == Smoothing::OffTarget) {
        const int64_t need = padding_idx ? 3 : 2;
        LSG_CHECK_OP(op, K >= need, "Smoothing::OffTarget needs at least ", need, " classes",
                     padding_idx ? " with a padding index" : "", ", got K = ", K);
    }
    if (padding_idx) {
        LSG_CHECK_OP(op, smoothing == Smoothing::OffTarget, "padding_idx needs Smoothing::OffTarget");
        LSG_CHECK_OP(op, *padding_idx >= 0 && *padding_idx < K, "padding_idx ", *padding_idx, " is out of range [0, ",
                     K, ")");
    }
}

Tensor FusedSaved::backward(const Tensor& g_in) const {
    const Tensor g = g_in.dtype() == grad.dtype() ? g_in.contiguous() : g_in.to(grad.dtype()).contiguous();
    if (!per_row && g.device().is_cpu() && g.item<double>() == 1.0) return grad;
    Tensor out = empty(grad.shape(), TensorOptions{.dtype = grad.dtype(), .device = grad.device()});
    ScaleRowsArgs a;
    a.dtype = grad.dtype();
    a.rows = rows;
    a.cols = cols;
    a.saved_grad = grad.raw_data();
    a.upstream = g.raw_data();
    a.per_row = per_row;
    a.out = out.raw_data();
    loss_kernels(grad.device()).scale_rows(kernel_context(grad.device()), a);
    return out;
}

}  // namespace detail

namespace {

using detail::check_floating;
using detail::check_kernel_targets;
using detail::check_same_device;
using detail::check_smoothing;
using detail::check_smoothing_classes;
using detail::checked_weight;
using detail::FusedSaved;

bool is_mean(Reduction r) { return r == Reduction::Mean || r == Reduction::BatchMean; }

TensorOptions like(const Tensor& x) { return {.dtype = x.dtype(), .device = x.device()}; }

// The result of a fused loss: per-row values for None, else a 0-d tensor.
Tensor result_tensor(const Tensor& rows, Reduction reduction) {
    return reduction == Reduction::None ? rows : empty({}, like(rows));
}

// ---- cross-entropy, index targets -----------------------------------------------------------

// Runs the fused kernel; G (when defined) receives the gradient for an upstream gradient of 1.
Tensor run_ce_index(const Tensor& x, const Tensor& target, const Tensor& weight, const CrossEntropyOptions& o,
                    Reduction reduction, Tensor* G) {
    const int64_t N = x.size(0), K = x.size(1);
    Tensor rows = empty({N}, like(x));
    Tensor out = result_tensor(rows, reduction);
    CrossEntropyIndexArgs a;
    a.dtype = x.dtype();
    a.rows = N;
    a.classes = K;
    a.logits = x.raw_data();
    a.target = target.data<int64_t>();
    a.weight = weight.defined() ? weight.raw_data() : nullptr;
    a.label_smoothing = o.label_smoothing;
    a.off_target = o.smoothing == Smoothing::OffTarget;
    a.padding_idx = o.padding_idx.value_or(-1);
    a.ignore_index = o.ignore_index;
    a.row_loss = rows.raw_data();
    if (G) {
        *G = empty({N, K}, like(x));
        a.grad = G->raw_data();
    }
    a.reduction = reduction;
    a.reduced = reduction == Reduction::None ? nullptr : out.raw_data();
    loss_kernels(x.device()).cross_entropy_index(kernel_context(x.device()), a);
    return out;
}

Tensor cross_entropy_index(const Tensor& logits, const Tensor& target_in, const CrossEntropyOptions& o) {
    const char* op = "cross_entropy";
    const int64_t N = logits.size(0), K = logits.size(1);
    LSG_CHECK_OP(op, target_in.dim() == 1 && target_in.size(0) == N, "index target must have shape [", N,
                 "] for logits ", logits.shape(), ", got ", target_in.shape());
    check_smoothing_classes(op, K, o.smoothing, o.padding_idx);
    const Tensor x = logits.contiguous();
    const Tensor target = target_in.contiguous();
    const Tensor weight = checked_weight(op, o.weight, x, K);
    check_kernel_targets(op, target, K, o.ignore_index);

    const Reduction reduction = o.reduction == Reduction::BatchMean ? Reduction::Mean : o.reduction;
    if (!autograd::needs_grad({x})) return run_ce_index(x, target, weight, o, reduction, nullptr);

    auto saved = std::make_shared<FusedSaved>();
    Tensor out = run_ce_index(x, target, weight, o, reduction, &saved->grad);
    saved->rows = N;
    saved->cols = K;
    saved->per_row = reduction == Reduction::None;
    autograd::record(op, out, {x}, [saved](const Tensor& g) { return std::vector<Tensor>{saved->backward(g)}; });
    return out;
}

// ---- cross-entropy, probability targets -----------------------------------------------------

struct ProbGrads {
    Tensor x, t;
};

Tensor run_ce_prob(const Tensor& x, const Tensor& t, const Tensor& weight, double eps, Reduction reduction,
                   bool grad_x, bool grad_t, ProbGrads* G) {
    const int64_t N = x.size(0), K = x.size(1);
    Tensor rows = empty({N}, like(x));
    Tensor out = result_tensor(rows, reduction);
    CrossEntropyProbArgs a;
    a.dtype = x.dtype();
    a.rows = N;
    a.classes = K;
    a.logits = x.raw_data();
    a.target = t.raw_data();
    a.weight = weight.defined() ? weight.raw_data() : nullptr;
    a.label_smoothing = eps;
    a.row_loss = rows.raw_data();
    if (grad_x) {
        G->x = empty({N, K}, like(x));
        a.grad = G->x.raw_data();
    }
    if (grad_t) {
        G->t = empty({N, K}, like(x));
        a.grad_target = G->t.raw_data();
    }
    a.reduction = reduction;
    a.reduced = reduction == Reduction::None ? nullptr : out.raw_data();
    loss_kernels(x.device()).cross_entropy_prob(kernel_context(x.device()), a);
    return out;
}

Tensor cross_entropy_prob(const char* op, const Tensor& logits, const Tensor& target, const Tensor& weight_in,
                          double eps, Reduction reduction_in) {
    LSG_CHECK_OP(op, target.shape() == logits.shape(), "probability target must have the logits' shape ",
                 logits.shape(), ", got ", target.shape());
    LSG_CHECK_OP(op, target.dtype() == logits.dtype(), "target is ", target.dtype(), " but the logits are ",
                 logits.dtype());
    const Tensor x = logits.contiguous();
    const Tensor t = target.contiguous();
    const Tensor weight = checked_weight(op, weight_in, x, x.size(1));
    const Reduction reduction = reduction_in == Reduction::BatchMean ? Reduction::Mean : reduction_in;
    const bool gx = autograd::needs_grad({x}), gt = autograd::needs_grad({t});
    ProbGrads G;
    Tensor out = run_ce_prob(x, t, weight, eps, reduction, gx, gt, &G);
    if (!gx && !gt) return out;
    const int64_t N = x.size(0), K = x.size(1);
    auto sx = std::make_shared<FusedSaved>();
    auto st = std::make_shared<FusedSaved>();
    for (auto* s : {sx.get(), st.get()}) {
        s->rows = N;
        s->cols = K;
        s->per_row = reduction == Reduction::None;
    }
    sx->grad = G.x;
    st->grad = G.t;
    autograd::record(op, out, {x, t}, [sx, st, gx, gt](const Tensor& g) {
        return std::vector<Tensor>{gx ? sx->backward(g) : Tensor(), gt ? st->backward(g) : Tensor()};
    });
    return out;
}

// Checks shared by every loss on logits [N, K].
void check_logits(const char* op, const Tensor& logits, const Tensor& target) {
    check_floating(op, logits, "input");
    LSG_CHECK_OP(op, logits.dim() == 2, "input must have shape [N, K], got ", logits.shape());
    LSG_CHECK_OP(op, target.defined(), "target is an undefined tensor");
    check_same_device(op, logits, "input", target, "target");
}

// The result of a pointwise loss with its gradients for an upstream gradient of 1 already in `gx`
// and `gt` (each may be undefined): reduces and records.
Tensor finish_pointwise(const char* op, const Tensor& pointwise, Reduction reduction, double scale, const Tensor& x,
                        const Tensor& t, Tensor gx, Tensor gt) {
    Tensor out = pointwise;
    if (reduction != Reduction::None) {
        out = empty({}, like(pointwise));
        SumArgs a;
        a.dtype = pointwise.dtype();
        a.n = pointwise.numel();
        a.x = pointwise.raw_data();
        a.scale = scale;
        a.out = out.raw_data();
        loss_kernels(pointwise.device()).sum(kernel_context(pointwise.device()), a);
    }
    if (!gx.defined() && !gt.defined()) return out;
    const int64_t n = pointwise.numel();
    auto sx = std::make_shared<FusedSaved>();
    auto st = std::make_shared<FusedSaved>();
    for (auto* s : {sx.get(), st.get()}) {
        s->rows = n;
        s->cols = 1;
        s->per_row = reduction == Reduction::None;
    }
    const bool has_x = gx.defined(), has_t = gt.defined();
    sx->grad = std::move(gx);
    st->grad = std::move(gt);
    autograd::record(op, out, {x, t}, [sx, st, has_x, has_t, shape_x = x.shape()](const Tensor& g) {
        Tensor a = has_x ? sx->backward(g).view(shape_x) : Tensor();
        Tensor b = has_t ? st->backward(g).view(shape_x) : Tensor();
        return std::vector<Tensor>{a, b};
    });
    return out;
}

}  // namespace

// ---- public ops -------------------------------------------------------------------------------

Tensor smooth_targets(const Tensor& target, int64_t num_classes, double label_smoothing, Smoothing smoothing,
                      std::optional<int64_t> padding_idx, DType dtype) {
    const char* op = "smooth_targets";
    LSG_CHECK_OP(op, target.defined() && target.dtype() == DType::i64 && target.dim() == 1,
                 "target must be int64 class indices of shape [N], got ",
                 target.defined() ? dtype_name(target.dtype()) : "undefined", " ",
                 target.defined() ? target.shape() : Shape{});
    LSG_CHECK_OP(op, is_floating(dtype), "dtype must be float32 or float64, got ", dtype);
    LSG_CHECK_OP(op, num_classes >= 1, "num_classes must be positive, got ", num_classes);
    check_smoothing(op, label_smoothing);
    const int64_t K = num_classes;
    detail::check_smoothing_classes(op, K, smoothing, padding_idx);
    const Tensor host = target.device().is_cpu() ? target.contiguous() : target.to(Device::cpu()).contiguous();
    const int64_t N = host.numel();
    const int64_t* y = host.data<int64_t>();
    // No ignore_index here: every target must be a class (no sentinel value is accepted).
    for (int64_t i = 0; i < N; ++i)
        LSG_CHECK_OP(op, y[i] >= 0 && y[i] < K, "target ", y[i], " of row ", i, " is out of range: classes are [0, ", K,
                     ")");
    checked::numel(op, {N, K}, static_cast<int64_t>(dtype_size(dtype)));
    const int64_t pad = padding_idx.value_or(-1);
    Tensor q = empty({N, K}, {.dtype = dtype});
    visit_dtype<float, double>(dtype, [&]<class T>() {
        const auto sw = detail::smooth_weights<double>(label_smoothing, K, smoothing == Smoothing::OffTarget, pad >= 0);
        T* out = q.data<T>();
        for (int64_t i = 0; i < N; ++i)
            for (int64_t k = 0; k < K; ++k) out[i * K + k] = static_cast<T>(detail::smooth_target(sw, k, y[i], pad));
    });
    return target.device().is_cpu() ? q : q.to(target.device());
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options) {
    const char* op = "cross_entropy";
    check_logits(op, logits, target);
    check_smoothing(op, options.label_smoothing);
    if (target.dtype() == DType::i64) return cross_entropy_index(logits, target, options);
    LSG_CHECK_OP(op, is_floating(target.dtype()), "target must be int64 indices or floating probabilities");
    LSG_CHECK_OP(op, options.smoothing == Smoothing::Uniform && !options.padding_idx,
                 "probability targets take Uniform smoothing only (no OffTarget, no padding_idx)");
    return cross_entropy_prob(op, logits, target, options.weight, options.label_smoothing, options.reduction);
}

Tensor soft_target_cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction) {
    const char* op = "soft_target_cross_entropy";
    check_logits(op, logits, target);
    LSG_CHECK_OP(op, is_floating(target.dtype()), "target must be floating probabilities, got ", target.dtype());
    return cross_entropy_prob(op, logits, target, Tensor(), 0.0, reduction);
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& target_in, const NLLLossOptions& options) {
    const char* op = "nll_loss";
    check_logits(op, log_probs, target_in);
    const int64_t N = log_probs.size(0), K = log_probs.size(1);
    LSG_CHECK_OP(op, target_in.dtype() == DType::i64, "target must be int64 class indices, got ", target_in.dtype());
    LSG_CHECK_OP(op, target_in.dim() == 1 && target_in.size(0) == N, "target must have shape [", N, "] for input ",
                 log_probs.shape(), ", got ", target_in.shape());
    const Tensor x = log_probs.contiguous();
    const Tensor target = target_in.contiguous();
    const Tensor weight = checked_weight(op, options.weight, x, K);
    check_kernel_targets(op, target, K, options.ignore_index);
    const Reduction reduction = options.reduction == Reduction::BatchMean ? Reduction::Mean : options.reduction;
    auto run = [=](Tensor* G) {
        Tensor rows = empty({N}, like(x));
        Tensor out = result_tensor(rows, reduction);
        if (G) *G = empty({N, K}, like(x));
        NllLossArgs a;
        a.dtype = x.dtype();
        a.rows = N;
        a.classes = K;
        a.log_probs = x.raw_data();
        a.target = target.data<int64_t>();
        a.weight = weight.defined() ? weight.raw_data() : nullptr;
        a.ignore_index = options.ignore_index;
        a.row_loss = rows.raw_data();
        a.grad = G ? G->raw_data() : nullptr;
        a.reduction = reduction;
        a.reduced = reduction == Reduction::None ? nullptr : out.raw_data();
        loss_kernels(x.device()).nll_loss(kernel_context(x.device()), a);
        return out;
    };
    if (!autograd::needs_grad({x})) return run(nullptr);
    auto saved = std::make_shared<FusedSaved>();
    Tensor out = run(&saved->grad);
    saved->rows = N;
    saved->cols = K;
    saved->per_row = reduction == Reduction::None;
    autograd::record(op, out, {x}, [saved](const Tensor& g) { return std::vector<Tensor>{saved->backward(g)}; });
    return out;
}

Tensor kl_div(const Tensor& input_in, const Tensor& target_in, Reduction reduction, bool log_target) {
    const char* op = "kl_div";
    check_floating(op, input_in, "input");
    check_floating(op, target_in, "target");
    check_same_device(op, input_in, "input", target_in, "target");
    LSG_CHECK_OP(op, input_in.shape() == target_in.shape(), "input ", input_in.shape(), " and target ",
                 target_in.shape(), " must have the same shape");
    LSG_CHECK_OP(op, input_in.dtype() == target_in.dtype(), "input is ", input_in.dtype(), " but target is ",
                 target_in.dtype());
    const Tensor x = input_in.contiguous(), t = target_in.contiguous();
    const int64_t n = x.numel();
    const int64_t batch = x.dim() == 0 ? 1 : x.size(0);
    double scale = 1.0;
    if (reduction == Reduction::Mean) scale = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
    if (reduction == Reduction::BatchMean) scale = batch > 0 ? 1.0 / static_cast<double>(batch) : 0.0;
    const bool gx = autograd::needs_grad({x}), gt = autograd::needs_grad({t});
    Tensor pointwise = empty(x.shape(), like(x));
    Tensor Gx = gx ? empty(x.shape(), like(x)) : Tensor();
    Tensor Gt = gt ? empty(x.shape(), like(x)) : Tensor();
    // Gradients for an upstream gradient of 1: the reduction's factor for reduced losses, 1 per
    // element for None (the upstream gradient then supplies the rest).
    KlDivArgs a;
    a.dtype = x.dtype();
    a.n = n;
    a.input = x.raw_data();
    a.target = t.raw_data();
    a.log_target = log_target;
    a.out = pointwise.raw_data();
    a.scale = reduction == Reduction::None ? 1.0 : scale;
    a.grad_input = gx ? Gx.raw_data() : nullptr;
    a.grad_target = gt ? Gt.raw_data() : nullptr;
    loss_kernels(x.device()).kl_div(kernel_context(x.device()), a);
    return finish_pointwise(op, pointwise, reduction, scale, x, t, Gx, Gt);
}

Tensor binary_cross_entropy_with_logits(const Tensor& x_in, const Tensor& t_in, const BCEWithLogitsOptions& o) {
    const char* op = "binary_cross_entropy_with_logits";
    check_floating(op, x_in, "input");
    check_floating(op, t_in, "target");
    check_same_device(op, x_in, "input", t_in, "target");
    check_smoothing(op, o.label_smoothing);
    LSG_CHECK_OP(op, x_in.shape() == t_in.shape(), "input ", x_in.shape(), " and target ", t_in.shape(),
                 " must have the same shape");
    LSG_CHECK_OP(op, x_in.dtype() == t_in.dtype(), "input is ", x_in.dtype(), " but target is ", t_in.dtype());
    const Tensor x = x_in.contiguous(), t = t_in.contiguous();
    const int64_t n = x.numel();
    const int64_t inner = x.dim() == 0 ? 1 : x.size(-1);
    const int64_t outer = inner > 0 ? n / inner : 0;
    Tensor pw, w;
    if (o.pos_weight.defined()) {
        check_floating(op, o.pos_weight, "pos_weight");
        check_same_device(op, o.pos_weight, "pos_weight", x, "input");
        LSG_CHECK_OP(op, o.pos_weight.dtype() == x.dtype(), "pos_weight is ", o.pos_weight.dtype(),
                     " but the input is ", x.dtype());
        LSG_CHECK_OP(op, o.pos_weight.numel() == inner && o.pos_weight.dim() <= 1,
                     "pos_weight must have shape [", inner, "] (the input's last dim), got ", o.pos_weight.shape());
        pw = o.pos_weight.contiguous();
    }
    if (o.weight.defined()) {
        check_floating(op, o.weight, "weight");
        check_same_device(op, o.weight, "weight", x, "input");
        LSG_CHECK_OP(op, o.weight.dtype() == x.dtype(), "weight is ", o.weight.dtype(), " but the input is ",
                     x.dtype());
        w = o.weight.expand(x.shape()).contiguous();
    }
    double scale = 1.0;
    if (is_mean(o.reduction)) scale = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
    const bool gx = autograd::needs_grad({x}), gt = autograd::needs_grad({t});
    Tensor pointwise = empty(x.shape(), like(x));
    Tensor Gx = gx ? empty(x.shape(), like(x)) : Tensor();
    Tensor Gt = gt ? empty(x.shape(), like(x)) : Tensor();
    BceWithLogitsArgs a;
    a.dtype = x.dtype();
    a.outer = outer;
    a.inner = inner;
    a.input = x.raw_data();
    a.target = t.raw_data();
    a.pos_weight = pw.defined() ? pw.raw_data() : nullptr;
    a.weight = w.defined() ? w.raw_data() : nullptr;
    a.label_smoothing = o.label_smoothing;
    a.out = pointwise.raw_data();
    a.scale = o.reduction == Reduction::None ? 1.0 : scale;
    a.grad_input = gx ? Gx.raw_data() : nullptr;
    a.grad_target = gt ? Gt.raw_data() : nullptr;
    loss_kernels(x.device()).bce_with_logits(kernel_context(x.device()), a);
    return finish_pointwise(op, pointwise, o.reduction == Reduction::BatchMean ? Reduction::Mean : o.reduction, scale,
                            x, t, Gx, Gt);
}

Tensor distillation_loss(const Tensor& student, const Tensor& teacher, const Tensor& target,
                         const DistillationOptions& o) {
    const char* op = "distillation_loss";
    check_logits(op, student, target);
    check_floating(op, teacher, "teacher");
    check_same_device(op, student, "student", teacher, "teacher");
    LSG_CHECK_OP(op, teacher.shape() == student.shape(), "teacher ", teacher.shape(), " and student ",
                 student.shape(), " logits must have the same shape");
    LSG_CHECK_OP(op, o.temperature >= kMinTemperature && o.temperature <= kMaxTemperature,
                 "temperature must lie in [", kMinTemperature, ", ", kMaxTemperature, "], got ", o.temperature);
    LSG_CHECK_OP(op, o.alpha >= 0.0 && o.alpha <= 1.0, "alpha must lie in [0, 1], got ", o.alpha);
    check_smoothing(op, o.label_smoothing);
    const double T = o.temperature;
    // The soft term runs in float64 (see kMaxTemperature): float32 would overflow x/T for a tiny T
    // and magnify its rounding by T² for a large one.
    const Tensor log_p = log_softmax(affine(student.to(DType::f64), 1.0 / T, 0.0), 1);
    const Tensor log_q = log_softmax(affine(teacher.detach().to(DType::f64), 1.0 / T, 0.0), 1);
    const Tensor soft = (kl_div(log_p, log_q, Reduction::BatchMean, true) * (o.alpha * T * T)).to(student.dtype());
    CrossEntropyOptions ce;
    ce.label_smoothing = o.label_smoothing;
    const Tensor hard = cross_entropy(student, target, ce);
    return soft + hard * (1.0 - o.alpha);
}

}  // namespace lsg

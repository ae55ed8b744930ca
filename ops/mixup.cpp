// mixup_targets: a small host loop (N·K writes); the targets are data, never differentiated.
#include "lsgrad/ops/mixup.h"

#include <cmath>
#include <vector>

#include "lsgrad/core/checked.h"
#include "lsgrad/core/error.h"

namespace lsg {
namespace {

constexpr const char* op = "mixup_targets";

Tensor mixed(const Tensor& target, int64_t num_classes, const std::vector<double>& lambda, double eps, DType dtype) {
    LSG_CHECK_OP(op, num_classes >= 1, "num_classes must be at least 1, got ", num_classes);
    LSG_CHECK_OP(op, eps >= 0.0 && eps <= 1.0, "label_smoothing must lie in [0, 1], got ", eps);
    LSG_CHECK_OP(op, is_floating(dtype), "the targets' dtype must be floating, got ", dtype);
    const std::vector<int64_t> y = target.to_vector<int64_t>();
    const int64_t n = static_cast<int64_t>(y.size());
    for (int64_t i = 0; i < n; ++i) {
        LSG_CHECK_OP(op, y[i] >= 0 && y[i] < num_classes, "target ", y[i], " of row ", i, " is outside [0, ",
                     num_classes, ")");
        // The comparisons are false for NaN too.
        LSG_CHECK_OP(op, lambda[i] >= 0.0 && lambda[i] <= 1.0, "lambda ", lambda[i], " of row ", i,
                     " is outside [0, 1]");
    }
    checked::numel(op, {n, num_classes}, static_cast<int64_t>(sizeof(double)));
    const double off = eps / static_cast<double>(num_classes);
    const double on = 1.0 - eps + off;
    std::vector<double> q(static_cast<size_t>(n * num_classes), off);
    for (int64_t i = 0; i < n; ++i) {
        double* row = q.data() + i * num_classes;
        // Own class: λ·on + (1 − λ)·off; partner's class: λ·off + (1 − λ)·on; same class: on.
        row[y[i]] += lambda[i] * (on - off);
        row[y[n - 1 - i]] += (1.0 - lambda[i]) * (on - off);
    }
    Tensor out = from_vector<double>(q, {n, num_classes}).to(dtype);
    return out.to(target.device());
}

void check_target(const Tensor& target) {
    LSG_CHECK_OP(op, target.defined(), "undefined target");
    LSG_CHECK_OP(op, target.dtype() == DType::i64, "expected int64 class indices, got ", target.dtype());
    LSG_CHECK_OP(op, target.dim() == 1, "expected target of shape [N], got ", target.shape());
}

}  // namespace

Tensor mixup_targets(const Tensor& target, int64_t num_classes, double lambda, double label_smoothing, DType dtype) {
    check_target(target);
    return mixed(target, num_classes, std::vector<double>(static_cast<size_t>(target.size(0)), lambda),
                 label_smoothing, dtype);
}

Tensor mixup_targets(const Tensor& target, int64_t num_classes, const Tensor& lambda, double label_smoothing,
                     DType dtype) {
    check_target(target);
    LSG_CHECK_OP(op, lambda.defined() && is_floating(lambda.dtype()), "lambda must be a floating tensor");
    const int64_t n = target.size(0);
    const bool shape_ok = (lambda.dim() == 1 && lambda.size(0) == n) ||
                          (lambda.dim() == 2 && lambda.size(0) == n && lambda.size(1) == 1);
    LSG_CHECK_OP(op, shape_ok, "lambda of shape ", lambda.shape(), " does not give one value per row of target ",
                 target.shape());
    return mixed(target, num_classes, lambda.detach().to_vector<double>(), label_smoothing, dtype);
}

}  // namespace lsg

#include "lsgrad/nn/loss.h"

#include "lsgrad/core/error.h"

namespace lsg::nn {

Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& target) const {
    return cross_entropy(logits, target, options_);
}

Tensor LinearCrossEntropyLoss::forward(const Tensor& hidden, const Tensor& weight, const Tensor& target,
                                       const Tensor& bias) const {
    return linear_cross_entropy(hidden, weight, target, options_, bias);
}

Tensor LinearCrossEntropyLoss::forward(const Tensor& hidden, const Tensor& weight, const MixedTargets& target,
                                       const Tensor& bias) const {
    return linear_cross_entropy(hidden, weight, target, options_, bias);
}

Tensor NLLLoss::forward(const Tensor& log_probs, const Tensor& target) const {
    return nll_loss(log_probs, target, options_);
}

Tensor KLDivLoss::forward(const Tensor& input, const Tensor& target) const {
    return kl_div(input, target, reduction_, log_target_);
}

Tensor SoftTargetCrossEntropy::forward(const Tensor& logits, const Tensor& target) const {
    return soft_target_cross_entropy(logits, target, reduction_);
}

Tensor BCEWithLogitsLoss::forward(const Tensor& x, const Tensor& t) const {
    return binary_cross_entropy_with_logits(x, t, options_);
}

Tensor DistillationLoss::forward(const Tensor& student, const Tensor& teacher, const Tensor& target) const {
    return distillation_loss(student, teacher, target, options_);
}

Tensor LabelSmoothing::forward(const Tensor& x, const Tensor& target) {
    LSG_CHECK_OP("LabelSmoothing", x.defined() && x.dim() == 2 && x.size(1) == size_,
                 "input must have shape [N, ", size_, "], got ", x.defined() ? x.shape() : Shape{});
    true_dist_ = smooth_targets(target, size_, smoothing_, Smoothing::OffTarget, padding_idx_, x.dtype());
    if (true_dist_.device() != x.device()) true_dist_ = true_dist_.to(x.device());
    return kl_div(x, true_dist_, Reduction::Sum);
}

}  // namespace lsg::nn

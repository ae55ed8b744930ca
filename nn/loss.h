// Loss modules: each holds the options of its functional op in ops/loss.h and applies them in
// forward(), as torch.nn's loss modules do. Calling a module is calling forward().
#pragma once

#include <cstdint>
#include <optional>

#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/linear_cross_entropy.h"
#include "lsgrad/ops/loss.h"

namespace lsg::nn {

// cross_entropy(logits [N, K], target i64 [N] or probabilities [N, K], options).
class CrossEntropyLoss {
public:
    explicit CrossEntropyLoss(CrossEntropyOptions options = {}) : options_(std::move(options)) {}
    Tensor forward(const Tensor& logits, const Tensor& target) const;
    Tensor operator()(const Tensor& logits, const Tensor& target) const { return forward(logits, target); }
    const CrossEntropyOptions& options() const { return options_; }

private:
    CrossEntropyOptions options_;
};

// The fused classifier head and loss: linear_cross_entropy(hidden [N, H], weight [V, H], target,
// options, bias [V] optional) = cross_entropy(hidden·weightᵀ + bias, target) (plus z-loss and
// soft-cap when set) without the N×V logits; target is i64 [N] or MixedTargets (mixup / CutMix).
class LinearCrossEntropyLoss {
public:
    explicit LinearCrossEntropyLoss(LinearCrossEntropyOptions options = {}) : options_(std::move(options)) {}
    Tensor forward(const Tensor& hidden, const Tensor& weight, const Tensor& target,
                   const Tensor& bias = Tensor()) const;
    Tensor forward(const Tensor& hidden, const Tensor& weight, const MixedTargets& target,
                   const Tensor& bias = Tensor()) const;
    Tensor operator()(const Tensor& hidden, const Tensor& weight, const Tensor& target,
                      const Tensor& bias = Tensor()) const {
        return forward(hidden, weight, target, bias);
    }
    Tensor operator()(const Tensor& hidden, const Tensor& weight, const MixedTargets& target,
                      const Tensor& bias = Tensor()) const {
        return forward(hidden, weight, target, bias);
    }
    const LinearCrossEntropyOptions& options() const { return options_; }

private:
    LinearCrossEntropyOptions options_;
};

// nll_loss(log_probs [N, K], target i64 [N], options).
class NLLLoss {
public:
    explicit NLLLoss(NLLLossOptions options = {}) : options_(std::move(options)) {}
    Tensor forward(const Tensor& log_probs, const Tensor& target) const;
    Tensor operator()(const Tensor& log_probs, const Tensor& target) const { return forward(log_probs, target); }

private:
    NLLLossOptions options_;
};

// kl_div(input log-probabilities, target, reduction, log_target); BatchMean (the KL per sample)
// unless told otherwise.
class KLDivLoss {
public:
    explicit KLDivLoss(Reduction reduction = Reduction::BatchMean, bool log_target = false)
        : reduction_(reduction), log_target_(log_target) {}
    Tensor forward(const Tensor& input, const Tensor& target) const;
    Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target); }

private:
    Reduction reduction_;
    bool log_target_;
};

// timm's SoftTargetCrossEntropy: mean over rows of Σ_k −t_k·log softmax(x)_k.
class SoftTargetCrossEntropy {
public:
    explicit SoftTargetCrossEntropy(Reduction reduction = Reduction::Mean) : reduction_(reduction) {}
    Tensor forward(const Tensor& logits, const Tensor& target) const;
    Tensor operator()(const Tensor& logits, const Tensor& target) const { return forward(logits, target); }

private:
    Reduction reduction_;
};

// binary_cross_entropy_with_logits(x, t, options).
class BCEWithLogitsLoss {
public:
    explicit BCEWithLogitsLoss(BCEWithLogitsOptions options = {}) : options_(std::move(options)) {}
    Tensor forward(const Tensor& x, const Tensor& t) const;
    Tensor operator()(const Tensor& x, const Tensor& t) const { return forward(x, t); }

private:
    BCEWithLogitsOptions options_;
};

// distillation_loss(student, teacher, target, options).
class DistillationLoss {
public:
    explicit DistillationLoss(DistillationOptions options = {}) : options_(options) {}
    Tensor forward(const Tensor& student, const Tensor& teacher, const Tensor& target) const;
    Tensor operator()(const Tensor& student, const Tensor& teacher, const Tensor& target) const {
        return forward(student, teacher, target);
    }

private:
    DistillationOptions options_;
};

// The Annotated Transformer's LabelSmoothing module, reproduced exactly: called with
// log-probabilities x [N, size] and class indices target i64 [N], it returns
//   KLDivLoss(reduction = Sum)(x, smooth_targets(target, size, smoothing, OffTarget, padding_idx)),
// i.e. 1 − ε on the class, ε/(size − 2) on every class but it and padding_idx, 0 on padding_idx and
// on every row whose target is padding_idx. true_dist() is the last target distribution used.
class LabelSmoothing {
public:
    LabelSmoothing(int64_t size, int64_t padding_idx, double smoothing = 0.0)
        : size_(size), padding_idx_(padding_idx), smoothing_(smoothing) {}
    Tensor forward(const Tensor& x, const Tensor& target);
    Tensor operator()(const Tensor& x, const Tensor& target) { return forward(x, target); }
    const Tensor& true_dist() const { return true_dist_; }

private:
    int64_t size_;
    int64_t padding_idx_;
    double smoothing_;
    Tensor true_dist_;
};

}  // namespace lsg::nn

// The loss layer: cross-entropy (hard, smoothed in both conventions, soft), NLL, KL divergence,
// binary cross-entropy with logits and distillation, all differentiable. The semantics are those
// of the loss-layer contract (docs: LOSSES.md); where they depart from PyTorch it is on purpose and
// said so below.
//
// Notation: logits x [N, K]; p = softmax(x) per row; lse_i = log Σ_k e^{x_ik}; ε the smoothing
// factor; w optional class weights [K]; y_i the class index of row i.
#pragma once

#include <cstdint>
#include <optional>

#include "lsgrad/core/tensor.h"

namespace lsg {

// How per-element (or per-row) losses become the result.
//   None:      the per-row (per-element for kl_div / BCE) losses, unreduced.
//   Sum:       their sum, a 0-d tensor.
//   Mean:      their mean (for weighted index targets: Σ loss_i / Σ w_{y_i} over rows that are not
//              ignored, as PyTorch); for kl_div the mean over every element (PyTorch's default,
//              which is not the KL divergence).
//   BatchMean: sum ÷ N, the KL divergence per sample (kl_div only; elsewhere the same as Mean).
enum class Reduction { None, Sum, Mean, BatchMean };

// Where label smoothing puts the mass taken from the true class (K classes, ε the factor):
//   Uniform:   true class 1 − ε + ε/K, every other class ε/K (PyTorch, timm, TF/Keras, apex).
//   OffTarget: true class 1 − ε, every other class ε/(K − 1) (Annotated Transformer, fairseq);
//              with a padding index p: every other class but p gets ε/(K − 2), column p gets 0, and a
//              row whose target is p is all zeros.
enum class Smoothing { Uniform, OffTarget };

struct CrossEntropyOptions {
    // ε in [0, 1].
    double label_smoothing = 0.0;
    Smoothing smoothing = Smoothing::Uniform;
    // Index targets equal to this give loss 0 and gradient 0 and leave every denominator; it may
    // lie outside [0, K).
    int64_t ignore_index = -100;
    // Only with Smoothing::OffTarget (index targets): the padding class. Rows whose target is the
    // padding class are treated as ignored (loss 0, gradient 0, outside the Mean denominator).
    std::optional<int64_t> padding_idx;
    // None, Sum or Mean (BatchMean means Mean here).
    Reduction reduction = Reduction::Mean;
    // Optional class weights [K], same dtype as the logits; undefined for none.
    Tensor weight;
};

// Smoothed one-hot targets q [N, K] from class indices target (i64 [N]) following `smoothing` (see
// Smoothing); rows sum to 1 except the all-zero padding rows. dtype f32 unless given.
//   smooth_targets({0}, 3, 0.1, OffTarget) = [[0.9, 0.05, 0.05]]
//   smooth_targets({1}, 2, 0.1, Uniform)   = [[0.05, 0.95]]
// Targets must lie in [0, K); padding_idx requires OffTarget and K ≥ 3.
Tensor smooth_targets(const Tensor& target, int64_t num_classes, double label_smoothing = 0.0,
                      Smoothing smoothing = Smoothing::Uniform, std::optional<int64_t> padding_idx = std::nullopt,
                      DType dtype = DType::f32);

// Cross-entropy of logits x [N, K] (f32 or f64) against
//   - index targets (i64 [N]):   loss_i = Σ_k q_ik·w_k·(lse_i − x_ik), q the smoothed target of
//     row i (see Smoothing; w = 1 without weights). For Uniform this is PyTorch's weighted formula
//     (1 − ε)·w_y·(lse − x_y) + (ε/K)·Σ_k w_k·(lse − x_k). Mean divides by Σ w_{y_i} over the rows
//     that are not ignored (their count without weights). A batch in which every row is ignored
//     gives 0 and zero gradients (PyTorch gives NaN for Mean).
//   - probability targets t ([N, K], the logits' dtype): loss_i = −Σ_k w_k·t'_ik·log p_ik with
//     t' = t(1 − ε) + ε/K (Uniform only); Mean divides by N; t is not checked to be a distribution.
// Computed by a fused one-pass kernel that, when the logits require grad, writes the gradient
// scale_i·(Σ_k q_ik w_k · p_ij − q_ij w_j) in the same pass. −inf logits (masked classes) are allowed.
// Returns a 0-d tensor, or [N] for Reduction::None.
// An index target outside [0, K) that is not ignore_index is an lsg::Error naming the op, the first
// bad row, its value, K and ignore_index: raised at once for CPU tensors; for CUDA tensors the
// kernel records it on the device (the op never waits for the GPU) and the next synchronising call
// raises the same error: item(), a copy to the host (.to(Device::cpu()), to_vector) or
// lsg::synchronize(device) (core/stream.h). The bad rows count as ignored until then.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options = {});

struct NLLLossOptions {
    int64_t ignore_index = -100;
    // None, Sum or Mean (BatchMean means Mean here).
    Reduction reduction = Reduction::Mean;
    // Optional class weights [K]; undefined for none.
    Tensor weight;
};

// Negative log-likelihood of log-probabilities [N, K] against indices (i64 [N]):
// loss_i = −w_{y_i}·log_probs[i, y_i]; Mean divides by Σ w_{y_i} over rows that are not ignored;
// all rows ignored gives 0 (PyTorch: NaN). Returns 0-d, or [N] for None.
// An out-of-range target is raised as for cross_entropy (at once on the CPU, at the next
// synchronising call on CUDA).
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const NLLLossOptions& options = {});

// KL divergence with `input` log-probabilities and `target` probabilities (log-probabilities with
// log_target), both of one shape whose first dim is the batch N:
//   pointwise t·(log t − input), exactly 0 where t = 0 even when input = −inf (xlogy; PyTorch: NaN);
//   log_target: e^t·(t − input), 0 where t = −inf.
// Reductions: BatchMean (÷ N, the KL per sample; default), Sum, Mean (÷ numel, PyTorch's default,
// not the KL), None (pointwise, input's shape). Differentiable in input and target.
Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::BatchMean,
              bool log_target = false);

// timm's SoftTargetCrossEntropy: loss_i = Σ_k −t_ik·log p_ik for logits [N, K] and soft targets t
// [N, K] (e.g. mixup targets); t = 0 with log p = −inf contributes 0. Mean over rows by default.
Tensor soft_target_cross_entropy(const Tensor& logits, const Tensor& target,
                                 Reduction reduction = Reduction::Mean);

struct BCEWithLogitsOptions {
    // ε in [0, 1]: targets become t(1 − ε) + ε/2 (Keras).
    double label_smoothing = 0.0;
    // Optional weight of the positive term, broadcast along the last dim ([C] for x [..., C]).
    Tensor pos_weight;
    // None, Sum or Mean (BatchMean means Mean).
    Reduction reduction = Reduction::Mean;
    // Optional per-element weight, broadcastable to x.
    Tensor weight;
};

// Binary cross-entropy on logits x and targets t of one shape:
// loss = w·[(1 − t)·x + (1 + (pw − 1)·t)·softplus(−x)], which equals
// −w·[pw·t·log σ(x) + (1 − t)·log(1 − σ(x))] and stays finite for any finite |x|.
Tensor binary_cross_entropy_with_logits(const Tensor& x, const Tensor& t, const BCEWithLogitsOptions& options = {});

struct DistillationOptions {
    // T > 0: both distributions are softened by dividing the logits by T.
    double temperature = 1.0;
    // α in [0, 1]: the weight of the teacher term.
    double alpha = 0.5;
    // ε of the hard-label term (Uniform smoothing).
    double label_smoothing = 0.0;
};

// Knowledge distillation (Hinton et al.) for student and teacher logits [N, K] and class indices
// target (i64 [N]):
//   α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) (batch mean) + (1 − α)·cross_entropy(student,
//   target, ε). The teacher gets no gradient (it is detached). Returns a 0-d tensor.
//   The temperature must lie in [kMinTemperature, kMaxTemperature]. The soft term is computed in
//   float64: x/T stays finite down to T = 1e-100 (float32 logits, or float64 ones up to 1e150), and
//   its rounding error, about T²·2⁻⁵² times the logits' scale (KL is a difference of log-sum-exps
//   of size 1 that T² magnifies), stays below float32's resolution up to T = 1e4. Beyond that the
//   result would be rounding noise (in float32, NaN past T ≈ 1e19), so it is an lsg::Error.
inline constexpr double kMinTemperature = 1e-100;
inline constexpr double kMaxTemperature = 1e4;
Tensor distillation_loss(const Tensor& student, const Tensor& teacher, const Tensor& target,
                         const DistillationOptions& options = {});

}  // namespace lsg

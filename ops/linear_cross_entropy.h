// Fused linear cross-entropy: the classifier head and the loss of ops/loss.h together, a chunk of
// rows and classes at a time, so the N×V logits are never held (N = 8192 tokens × V = 128 256 classes
// is 4 GB of fp32 logits, twice that with their gradient).
//
// Notation: hidden h [N, H], weight W [V, H], optional bias b [V]; the logits are
// x_ij = c(h_i·W_j + b_j), with c the optional soft-cap c(u) = s·tanh(u/s) (identity when s = 0);
// lse_i = log Σ_j e^{x_ij}; q_i the target distribution of row i (Smoothing in ops/loss.h).
//
// Semantics (the rules of cross_entropy with index targets; LOSSES.md):
//   loss_i = Σ_j q_ij·w_j·(lse_i − x_ij)  +  z·lse_i²
// for a row that is neither ignored (target = ignore_index) nor a padding row (target =
// padding_idx); such a row gives loss 0 and gradient 0 (the z-loss included). q follows
// `label_smoothing` and `smoothing` exactly as cross_entropy does (Uniform: 1 − ε + ε/V on the class
// and ε/V elsewhere; OffTarget: 1 − ε and ε/(V − 1), ε/(V − 2) with padding, 0 on the padding
// column); w are the optional class weights (1 without). With z = 0 and s = 0,
//   linear_cross_entropy(h, W, y, o, b) == cross_entropy(linear(h, W, b), y, o)
// for every CrossEntropyOptions. Reductions: None gives [N]; Sum Σ_i loss_i; Mean Σ_i loss_i / D with
// D = Σ w_{y_i} over the rows that count (their number without weights); D = 0 (every row ignored)
// gives 0 and zero gradients (PyTorch: NaN). The z-loss term is not multiplied by a class weight.
//
// Mixed index targets (mixup, CutMix) without an [N, V] target: with target_b and lambda,
//   loss_i = λ_i·loss_i(y_i) + (1 − λ_i)·loss_i(y_b,i),   D = Σ_i λ_i·d(y_i) + (1 − λ_i)·d(y_b,i),
// d(y) = w_y (1 without weights; 0 for an ignored or padding target), each part as above. Since the
// loss is linear in q this equals the loss against the mixed target λ·q(y) + (1 − λ)·q(y_b): with
// y_b the batch reversed and Uniform smoothing, the loss of mixup_targets (ops/mixup.h) under
// soft_target_cross_entropy. λ = 1 (or y_b = y) gives the unmixed loss exactly.
//
// Gradients for hidden, weight and bias (exact, fp32 or f64 accumulation as the inputs):
//   ∂loss/∂x_ij = scale_i·(W_i·p_ij − Q_ij + 2z·lse_i·c_i·p_ij)·c′(u_ij),  p = softmax(x_i),
// W_i = Σ_j Q_ij, Q_ij = Σ_parts λ·q_j·w_j, c_i the weight of the row's counting parts (1 unmixed),
// c′ = 1 − (x/s)² with the soft-cap (1 without), scale_i the reduction's factor times the upstream
// gradient; then dh = G·W, dW = Gᵀ·h, db = Σ_i G_i. With Mean or Sum they are computed in the
// forward pass while each chunk of logits is in cache, and backward only multiplies them by the
// upstream scalar; with None (per-row upstream gradients, which cannot be applied to the finished
// dW) backward runs the fused pass again with those row factors.
//
// Memory: the logits live only as one [chunk_rows, chunk_classes] block (by default at most
// kLinearCrossEntropyBlockBytes), plus a few numbers per row; nothing N×V is ever allocated. The
// default schedule (linear_cross_entropy_default_chunks) is, in order of preference:
//   - all N×V logits in one block when they fit: one product per gradient, as unfused;
//   - with dW asked for and N ≤ H: all rows, in class chunks of budget/N. A chunk's logits [N, bv]
//     fit in the bv rows of dW that its gradient will overwrite, so the forward sweep (online
//     log-sum-exp across chunks) leaves them there and the gradient sweep copies each chunk into the
//     block before writing its dW: three products, each over all N rows, no recomputation;
//   - else whole rows (chunk_classes = V) while 32 of them fit the budget (V ≤ 491 520 in f32): each
//     logit computed once, but W is read twice and dW read and written once per row block, so the
//     memory traffic of the products falls as 1/chunk_rows;
//   - else blocks of 32 rows in class chunks, with a second sweep that recomputes the logits for the
//     gradient (one more product).
// Chunk sizes given in the options pick among the same schedules: one row block with class chunks
// is staged in dW whenever dW is asked for and N ≤ H.
//
// Errors (lsg::Error naming linear_cross_entropy, the shapes and the bad value): undefined inputs,
// hidden not 2-D floating, weight not [V, H] with hidden's H, bias not [V], mismatched dtypes or
// devices, a target not int64 [N], a target outside [0, V) that is not ignore_index (naming the row),
// ε outside [0, 1] or NaN, z or s negative, infinite or NaN, a chunk size ≤ 0, λ outside [0, 1] or NaN
// or not one value or N values, the OffTarget / padding_idx rules of cross_entropy. On CUDA a bad
// target is found by the kernel and raised at the next synchronising call, as for cross_entropy.
//
// Kernels: the CPU's (ops/linear_cross_entropy_cpu.cpp) through the packed GEMM with OpenMP; CUDA's
// (cuda/linear_cross_entropy.cu) with the same block schedule, cuBLAS for the three products and
// fused kernels for the row statistics, losses, gradient and bias sums; both take every formula from
// ops/loss_math.h and sum in a fixed order.
#pragma once

#include <cstdint>
#include <optional>

#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/loss.h"

namespace lsg {

struct LinearCrossEntropyOptions : CrossEntropyOptions {
    // z ≥ 0: the weight of PaLM's z-loss z·lse² per counting row (0: off).
    double z_loss = 0.0;
    // s ≥ 0: Gemma 2's logit soft-cap x = s·tanh(u/s) (0: off).
    double softcap = 0.0;
    // Rows and classes per block of logits (each ≥ 1); unset picks them from a memory budget (see
    // the header comment).
    std::optional<int64_t> chunk_rows;
    std::optional<int64_t> chunk_classes;
};

// Mixed index targets: row i's target is λ_i·q(target_a_i) + (1 − λ_i)·q(target_b_i).
struct MixedTargets {
    Tensor target_a;  // i64 [N]
    Tensor target_b;  // i64 [N]
    // One λ for the batch ([] or [1]) or one per row ([N] or [N, 1]), floating, on the targets'
    // device, each in [0, 1].
    Tensor lambda;
};

// The cross-entropy of the logits h·Wᵀ + b (soft-capped when asked) against index targets
// (i64 [N]), without holding them; see the header comment for the formula, shapes and errors.
// Returns a 0-d tensor, or [N] for Reduction::None. Differentiable in hidden, weight and bias.
Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& target,
                            const LinearCrossEntropyOptions& options = {}, const Tensor& bias = Tensor());

// The same against mixed index targets (mixup / CutMix).
Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const MixedTargets& target,
                            const LinearCrossEntropyOptions& options = {}, const Tensor& bias = Tensor());

// The memory budget of the default block of logits.
inline constexpr int64_t kLinearCrossEntropyBlockBytes = int64_t(60) << 20;

// The default block of logits for N rows of H features and V classes of `dtype_bytes` bytes each,
// with or without a weight gradient: {rows, classes} (the schedule is described above).
struct LinearCrossEntropyChunks {
    int64_t rows;
    int64_t classes;
};
LinearCrossEntropyChunks linear_cross_entropy_default_chunks(int64_t rows, int64_t hidden, int64_t classes,
                                                            int64_t dtype_bytes, bool weight_grad);

}  // namespace lsg

// The loss layer's kernel table: raw-pointer kernels, one argument struct per kernel, registered per
// device in its Backend (core/backend.h): the CPU table by ops/ (ops/loss_cpu.cpp), the CUDA one by
// cuda/. Kernels compute only: ops/loss.cpp has checked shapes, dtypes and devices, allocated
// contiguous outputs and records autograd. It checks the range of CPU class targets too; the CUDA
// kernels check theirs on the device (a bad row is skipped and recorded there, then raised with
// fail_target_out_of_range at the next synchronising call), so targets never travel to the host and
// the op never waits. Every kernel is called with the op's KernelContext and issues its work on its
// stream. Pointers are device pointers of ctx's device; `dtype` (f32 or f64) types every floating
// buffer of one call. Internal to lsgrad: not installed.
#pragma once

#include <cstdint>
#include <optional>

#include "lsgrad/core/backend.h"
#include "lsgrad/core/dtype.h"
#include "lsgrad/ops/loss.h"

namespace lsg {

// Fused cross-entropy of logits [rows, classes] against class indices (see ce_row_loss in
// ops/loss_math.h for the formula).
struct CrossEntropyIndexArgs {
    DType dtype = DType::f32;
    int64_t rows = 0;
    int64_t classes = 0;
    const void* logits = nullptr;    // [rows, classes], row-major
    const int64_t* target = nullptr;  // [rows], each in [0, classes) or ignore_index
    const void* weight = nullptr;     // [classes] class weights, or null for none
    double label_smoothing = 0.0;
    bool off_target = false;          // Smoothing::OffTarget
    int64_t padding_idx = -1;         // the padding class (OffTarget only), −1 for none
    int64_t ignore_index = -100;
    void* row_loss = nullptr;  // out [rows]: loss_i (0 for ignored and padding rows)
    void* lse = nullptr;       // out [rows] or null: lse_i = log Σ_k e^{x_ik}
    // out [rows, classes] or null: s·(W_i·p_ij − q_ij·w_j), 0 for ignored rows, with s the
    // reduction's scale (1/D for Mean, else 1). Written in the pass that computes the row's lse,
    // while the row is still in cache.
    void* grad = nullptr;
    // None: only row_loss. Sum: *reduced = Σ_i loss_i. Mean (or BatchMean): *reduced =
    // Σ_i loss_i / D and the gradient scaled by 1/D, D = Σ w_{y_i} over the rows that are
    // neither ignored nor padding (their count without weights; detail::mean_denominator in
    // ops/loss_math.h); D = 0 gives 0 and zero gradients.
    // The kernel computes D itself, so no host round trip is needed. Sums run in double, in row
    // order: bit-identical results at a fixed thread count.
    Reduction reduction = Reduction::None;
    void* reduced = nullptr;  // out, one element
};

// Cross-entropy against probability targets: t'_ik = t_ik·(1 − ε) + ε/K,
// loss_i = Σ_k w_k·t'_ik·(lse_i − x_ik) (a zero t' contributes 0 even where x = −inf);
// grad_ij = s·(W_i·p_ij − w_j·t'_ij) with W_i = Σ_k w_k·t'_ik and s the reduction's scale.
struct CrossEntropyProbArgs {
    DType dtype = DType::f32;
    int64_t rows = 0;
    int64_t classes = 0;
    const void* logits = nullptr;  // [rows, classes]
    const void* target = nullptr;  // [rows, classes]
    const void* weight = nullptr;  // [classes] or null
    double label_smoothing = 0.0;
    void* row_loss = nullptr;  // out [rows]
    void* lse = nullptr;       // out [rows] or null
    void* grad = nullptr;      // out [rows, classes] or null
    // out [rows, classes] or null: ∂loss_i/∂t_ij = −s·(1 − ε)·w_j·(x_ij − lse_i).
    void* grad_target = nullptr;
    // As for index targets, except that Mean divides by rows.
    Reduction reduction = Reduction::None;
    void* reduced = nullptr;
};

// NLL of log-probabilities lp [rows, classes]: loss_i = −w_{y_i}·lp[i, y_i] (0 for ignored rows);
// grad (or null) [rows, classes] gets −s·w_{y_i} at (i, y_i), 0 elsewhere. Reductions as for
// CrossEntropyIndexArgs (Mean divides by Σ w_{y_i} over the rows that are not ignored).
struct NllLossArgs {
    DType dtype = DType::f32;
    int64_t rows = 0;
    int64_t classes = 0;
    const void* log_probs = nullptr;  // [rows, classes]
    const int64_t* target = nullptr;  // [rows], each in [0, classes) or ignore_index
    const void* weight = nullptr;     // [classes] or null
    int64_t ignore_index = -100;
    void* row_loss = nullptr;  // out [rows]
    void* grad = nullptr;      // out [rows, classes] or null
    Reduction reduction = Reduction::None;
    void* reduced = nullptr;  // out, one element
};

// Backward of a fused loss from its saved gradient G [rows, cols]: out_ij = G_ij·g_i (per_row: g
// has `rows` entries) or G_ij·g_0 (g a single element). g is read on the device: no host wait.
struct ScaleRowsArgs {
    DType dtype = DType::f32;
    int64_t rows = 0;
    int64_t cols = 0;
    const void* saved_grad = nullptr;  // G [rows, cols]
    const void* upstream = nullptr;    // g [rows] or [1]
    bool per_row = false;
    void* out = nullptr;  // [rows, cols]
};

// *out = scale·Σ_i x_i, summed in double in index order.
struct SumArgs {
    DType dtype = DType::f32;
    int64_t n = 0;
    const void* x = nullptr;  // [n]
    double scale = 1.0;
    void* out = nullptr;  // one element
};

// KL divergence pointwise over n elements: out = kl_point (or kl_point_log_target); when
// grad_input / grad_target are non-null also their derivatives times `scale` (a single factor for
// the reduction), see ops/loss_math.h.
struct KlDivArgs {
    DType dtype = DType::f32;
    int64_t n = 0;
    const void* input = nullptr;   // [n]
    const void* target = nullptr;  // [n]
    bool log_target = false;
    void* out = nullptr;  // [n]
    double scale = 1.0;
    void* grad_input = nullptr;   // [n] or null
    void* grad_target = nullptr;  // [n] or null
};

// Binary cross-entropy with logits over x, t [outer, inner]: t' = t(1 − ε) + ε/2,
// out = w·bce_point(x, t', pw) with pw = pos_weight[j % inner] (1 when null) and w = weight[i]
// (1 when null; weight already broadcast to [outer, inner]); gradients times `scale` when
// requested (grad_target with the (1 − ε) of the smoothing).
struct BceWithLogitsArgs {
    DType dtype = DType::f32;
    int64_t outer = 0;
    int64_t inner = 0;
    const void* input = nullptr;       // x [outer, inner]
    const void* target = nullptr;      // t [outer, inner]
    const void* pos_weight = nullptr;  // [inner] or null
    const void* weight = nullptr;      // [outer, inner] or null
    double label_smoothing = 0.0;
    void* out = nullptr;  // [outer, inner]
    double scale = 1.0;
    void* grad_input = nullptr;   // [outer, inner] or null
    void* grad_target = nullptr;  // [outer, inner] or null
};

// Fused linear cross-entropy (ops/linear_cross_entropy.h has the formula): the logits
// x = c(h·Wᵀ + b) of a [chunk_rows, chunk_classes] block at a time, their per-row log-sum-exp online
// across class blocks, the loss, and (when grad_* are set) the gradient of each block folded into
// dh, dW and db at once. CPU targets are trusted (the op has checked them); the CUDA kernel checks its
// own as the other CUDA loss kernels do (see the top of this file). λ and row_scale are in dtype.
struct LinearCrossEntropyArgs {
    DType dtype = DType::f32;
    int64_t rows = 0;     // N
    int64_t hidden = 0;   // H
    int64_t classes = 0;  // V
    const void* input = nullptr;   // h [N, H]
    const void* weight = nullptr;  // W [V, H]
    const void* bias = nullptr;    // b [V] or null
    const int64_t* target = nullptr;    // [N], each in [0, V) or ignore_index
    const int64_t* target_b = nullptr;  // [N] second targets of mixed rows, or null (unmixed)
    const void* lambda = nullptr;       // [N] weight of `target` when target_b is set
    const void* class_weight = nullptr;  // [V] or null
    double label_smoothing = 0.0;
    bool off_target = false;
    int64_t padding_idx = -1;
    int64_t ignore_index = -100;
    double z_loss = 0.0;
    double softcap = 0.0;  // 0: no soft-cap
    int64_t chunk_rows = 1;
    int64_t chunk_classes = 1;
    void* row_loss = nullptr;  // out [N]: loss_i
    // [N] or null: an extra factor of row i's gradient (the upstream gradient of Reduction::None).
    const void* row_scale = nullptr;
    // Out or null: dh [N, H], dW [V, H], db [V] for the reduction's scale (times row_scale), written
    // (not accumulated).
    void* grad_input = nullptr;
    void* grad_weight = nullptr;
    void* grad_bias = nullptr;
    // As CrossEntropyIndexArgs: None leaves `reduced` alone; Sum and Mean write Σ loss_i (÷ D).
    Reduction reduction = Reduction::None;
    void* reduced = nullptr;
};

class LinearCrossEntropyKernels {
public:
    virtual ~LinearCrossEntropyKernels() = default;
    virtual void forward(const KernelContext& ctx, const LinearCrossEntropyArgs& args) = 0;
};

class LossKernels {
public:
    virtual ~LossKernels() = default;

    // The fused index-target cross-entropy: one pass per row computes max, Σ e^x, Σ w·x and x_y
    // online, then (when args.grad is set) writes the row's gradient while it is in cache.
    virtual void cross_entropy_index(const KernelContext& ctx, const CrossEntropyIndexArgs& args) = 0;
    // The probability-target cross-entropy (two passes per row: lse, then loss and gradients).
    virtual void cross_entropy_prob(const KernelContext& ctx, const CrossEntropyProbArgs& args) = 0;
    virtual void scale_rows(const KernelContext& ctx, const ScaleRowsArgs& args) = 0;
    virtual void nll_loss(const KernelContext& ctx, const NllLossArgs& args) = 0;
    virtual void sum(const KernelContext& ctx, const SumArgs& args) = 0;
    virtual void kl_div(const KernelContext& ctx, const KlDivArgs& args) = 0;
    virtual void bce_with_logits(const KernelContext& ctx, const BceWithLogitsArgs& args) = 0;
};

// Throws the error of a class target outside [0, K) that is not ignore_index, naming its row and
// value: the one message of the CPU check and of the CUDA kernels' deferred report.
[[noreturn]] void fail_target_out_of_range(const char* op, int64_t row, int64_t value, int64_t K,
                                           int64_t ignore_index);

namespace detail {

// Σ_k e^{x_k − m} over x [n] (m finite, x_k ≤ m or NaN), each term stored in out[k] when out is not
// null (out may be x): on the CPU, with the loss kernels' exponential (AVX-512 where cpu_isa() runs
// it, else lm_exp_normal), each term exactly 0 below lm_exp_floor. For the fused linear
// cross-entropy's f32 rows (ops/linear_cross_entropy_cpu.cpp).
float exp_shift_sum_f32(const float* x, int64_t n, float m, float* out);

// The argument checks of the loss layer's ops (ops/loss.cpp), shared by the fused linear
// cross-entropy: each throws an lsg::Error naming op, the shapes and the bad value.
// t is defined and float32 / float64 (`what` names it).
void check_floating(const char* op, const Tensor& t, const char* what);
void check_same_device(const char* op, const Tensor& a, const char* what_a, const Tensor& b, const char* what_b);
// ε in [0, 1] (NaN fails).
void check_smoothing(const char* op, double eps);
// K ≥ 2 for OffTarget (K ≥ 3 with a padding index); padding_idx only with OffTarget and in [0, K).
void check_smoothing_classes(const char* op, int64_t K, Smoothing smoothing, std::optional<int64_t> padding_idx);
// Every class index of a CPU target in [0, K) or equal to ignore_index (a CUDA target is checked
// by its kernel, see the top of this file).
void check_kernel_targets(const char* op, const Tensor& target, int64_t K, int64_t ignore_index);
// An optional class-weight tensor: 1-D [K], x's dtype and device; returned contiguous.
Tensor checked_weight(const char* op, const Tensor& weight, const Tensor& x, int64_t K);

// The state a fused loss keeps for its backward: its gradient for an upstream gradient of 1 (per
// row for None). The engine never writes into a gradient it receives (leaves get a copy), so the
// buffer can be handed over and still serve a retained graph walked again.
struct FusedSaved {
    Tensor grad;
    int64_t rows = 0;  // the upstream gradient has `rows` entries when per_row
    int64_t cols = 0;
    bool per_row = false;

    // grad scaled by the upstream gradient g, which the kernel reads where it lives: reading a
    // device scalar on the host would wait for the device. A CPU scalar is read for free, and the
    // buffer itself is handed over when it is exactly 1 (the usual loss.backward()).
    Tensor backward(const Tensor& g_in) const;
};

}  // namespace detail

// The loss kernel table of `device`, from its Backend.
inline LossKernels& loss_kernels(Device device) { return kernel_table(device, &Backend::loss, "loss"); }
// The CPU table (ops/loss_cpu.cpp), which ops/ registers.
LossKernels& cpu_loss_kernels();
// The CPU linear cross-entropy table (ops/linear_cross_entropy_cpu.cpp), which ops/ registers.
LinearCrossEntropyKernels& cpu_linear_cross_entropy_kernels();

}  // namespace lsg

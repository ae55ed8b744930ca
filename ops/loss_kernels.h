// The loss layer's device dispatch: a table of raw-pointer kernels per device, as core/backend.h
// does for the tensor ops. The CPU table is in ops/loss_cpu.cpp, the CUDA one in cuda/ (or the
// CPU-only stub, which throws "built without CUDA"). Kernels compute only: ops/loss.cpp has checked
// shapes, dtypes and devices, allocated contiguous outputs and records autograd. It checks the range
// of CPU class targets too; the CUDA kernels check theirs on the device (a bad row is skipped, then
// reported with fail_target_out_of_range after the kernels), so targets never travel to the host.
// Pointers are device pointers of the tensors' device; `dtype` (f32 or f64) types every floating
// buffer of one call.
#pragma once

#include <cstdint>

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
    // out [rows, classes] or null: grad_scale·(W_i·p_ij − q_ij·w_j), 0 for ignored rows. Written in
    // the pass that computes the row's lse, while the row is still in cache.
    void* grad = nullptr;
    double grad_scale = 1.0;
    // None: only row_loss. Sum: *reduced = Σ_i loss_i. Mean (or BatchMean): *reduced =
    // Σ_i loss_i / D and the gradient scale divided by D, D = Σ w_{y_i} over the rows that are
    // neither ignored nor padding (their count without weights); D = 0 gives 0 and zero gradients.
    // The kernel computes D itself, so no host round trip is needed. Sums run in double, in row
    // order: bit-identical results at a fixed thread count.
    Reduction reduction = Reduction::None;
    void* reduced = nullptr;  // out, one element
};

// Cross-entropy against probability targets: t'_ik = t_ik·(1 − ε) + ε/K,
// loss_i = Σ_k w_k·t'_ik·(lse_i − x_ik) (a zero t' contributes 0 even where x = −inf);
// grad_ij = grad_scale·(W_i·p_ij − w_j·t'_ij) with W_i = Σ_k w_k·t'_ik.
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
    double grad_scale = 1.0;
    // out [rows, classes] or null: ∂loss_i/∂t_ij = −grad_scale·(1 − ε)·w_j·(x_ij − lse_i).
    void* grad_target = nullptr;
    // As for index targets, except that Mean divides by rows.
    Reduction reduction = Reduction::None;
    void* reduced = nullptr;
};

class LossKernels {
public:
    virtual ~LossKernels() = default;

    // The fused index-target cross-entropy: one pass per row computes max, Σ e^x, Σ w·x and x_y
    // online, then (when args.grad is set) writes the row's gradient while it is in cache.
    virtual void cross_entropy_index(const CrossEntropyIndexArgs& args) = 0;
    // The probability-target cross-entropy (two passes per row: lse, then loss and gradients).
    virtual void cross_entropy_prob(const CrossEntropyProbArgs& args) = 0;
    // Backward of a fused loss from its saved gradient G [rows, cols]:
    // out_ij = G_ij·g_i (per_row: g has `rows` entries) or G_ij·g_0 (g a single element).
    virtual void scale_rows(DType dtype, int64_t rows, int64_t cols, const void* saved_grad,
                            const void* upstream, bool per_row, void* out) = 0;
    // NLL of log-probabilities lp [rows, classes]: loss_i = −w_{y_i}·lp[i, y_i] (0 for ignored rows);
    // grad (or null) [rows, classes] gets −grad_scale·w_{y_i} at (i, y_i), 0 elsewhere. Reductions
    // as for cross_entropy_index (Mean divides by Σ w_{y_i} over rows that are not ignored).
    virtual void nll_loss(DType dtype, int64_t rows, int64_t classes, const void* log_probs, const int64_t* target,
                          const void* weight, int64_t ignore_index, void* row_loss, void* grad, double grad_scale,
                          Reduction reduction, void* reduced) = 0;
    // *out = scale·Σ_i x_i, summed in double in index order.
    virtual void sum(DType dtype, int64_t n, const void* x, double scale, void* out) = 0;
    // KL divergence pointwise over n elements: out = kl_point (or kl_point_log_target); when
    // grad_input / grad_target are non-null also their derivatives times `scale` (a single factor
    // for the reduction), see ops/loss_math.h.
    virtual void kl_div(DType dtype, int64_t n, const void* input, const void* target, bool log_target,
                        void* out, double scale, void* grad_input, void* grad_target) = 0;
    // Binary cross-entropy with logits over x, t [outer, inner]: t' = t(1 − ε) + ε/2,
    // out = w·bce_point(x, t', pw) with pw = pos_weight[j % inner] (1 when null) and
    // w = weight[i] (1 when null; weight already broadcast to [outer, inner]); gradients times
    // `scale` when requested (grad_t with the (1 − ε) of the smoothing).
    virtual void bce_with_logits(DType dtype, int64_t outer, int64_t inner, const void* x, const void* t,
                                 const void* pos_weight, const void* weight, double label_smoothing,
                                 void* out, double scale, void* grad_x, void* grad_t) = 0;
};

// Throws the error of a class target outside [0, K) that is not ignore_index, naming its row and
// value: the one message of the CPU check and the CUDA kernels' report.
[[noreturn]] void fail_target_out_of_range(const char* op, int64_t row, int64_t value, int64_t K,
                                           int64_t ignore_index);

// The loss kernel table of `device`.
LossKernels& loss_kernels(Device device);
LossKernels& cpu_loss_kernels();
// Defined in cuda/ (or by the CPU-only stub, which throws "built without CUDA").
LossKernels& cuda_loss_kernels();

}  // namespace lsg

// The optimizers' kernel table: fused update kernels, registered per device in its Backend
// (core/backend.h): the CPU table by optim/optim_kernels.cpp, the CUDA one by cuda/. Both run the
// per-element arithmetic of optim/optim_math.h. Kernels compute only: the optimizer has checked
// that the buffers are contiguous, of one dtype (f32 or f64) and on one device, and precomputed the
// step's scalars. Internal to lsgrad: not installed.
#pragma once

#include <cstdint>

#include "lsgrad/core/backend.h"
#include "lsgrad/core/dtype.h"

namespace lsg {

// One SGD update of n elements (see optim::SGD for the rule).
struct SgdStepArgs {
    DType dtype = DType::f32;
    int64_t n = 0;
    void* param = nullptr;           // [n], updated in place
    const void* grad = nullptr;      // [n]
    void* momentum_buffer = nullptr;  // [n], updated in place; null when momentum == 0
    double lr = 0.0;
    double momentum = 0.0;
    double dampening = 0.0;
    double weight_decay = 0.0;
    bool nesterov = false;
    bool first_step = false;  // the buffer is set to g instead of being decayed
};

// One Adam/AdamW update of n elements (see optim::Adam for the rule).
struct AdamStepArgs {
    DType dtype = DType::f32;
    int64_t n = 0;
    void* param = nullptr;       // [n], updated in place
    const void* grad = nullptr;  // [n]
    void* exp_avg = nullptr;     // m [n], updated in place
    void* exp_avg_sq = nullptr;  // v [n], updated in place
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double l2 = 0.0;                  // Adam's weight decay, added to the gradient
    double decay_factor = 1.0;        // AdamW's 1 − lr·weight_decay, multiplied into p first
    double step_size = 0.0;           // lr / (1 − β1^t)
    double bias_correction2_sqrt = 1.0;  // √(1 − β2^t)
};

class OptimizerKernels {
public:
    virtual ~OptimizerKernels() = default;
    // Pointers are device pointers of ctx's device; the update is issued on ctx's stream.
    virtual void sgd(const KernelContext& ctx, const SgdStepArgs& args) = 0;
    virtual void adam(const KernelContext& ctx, const AdamStepArgs& args) = 0;
};

// The optimizer kernel table of `device`, from its Backend.
inline OptimizerKernels& optimizer_kernels(Device device) {
    return kernel_table(device, &Backend::optimizer, "optimizer");
}

}  // namespace lsg

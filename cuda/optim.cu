// The fused optimizer updates on CUDA: one thread per element runs the update of optim/optim_math.h,
// reading and writing each buffer once per step.
#include "device.h"
#include "kernel_util.cuh"
#include "lsgrad/optim/optim_kernels.h"
#include "lsgrad/optim/optim_math.h"

namespace lsg {
namespace cuda {
namespace {

template <class T>
__global__ void sgd_kernel(int64_t n, T* p, const T* g, T* buf, T lr, T momentum, T dampening, T weight_decay,
                           bool nesterov, bool first_step) {
    for (int64_t i = grid_index(); i < n; i += grid_stride())
        optim_math::sgd_update(p[i], g[i], buf ? buf + i : nullptr, lr, momentum, dampening, weight_decay, nesterov,
                               first_step);
}

template <class T>
__global__ void adam_kernel(int64_t n, T* p, const T* g, T* m, T* v, optim_math::AdamCoefficients<T> c) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) optim_math::adam_update(p[i], g[i], m[i], v[i], c);
}

class CudaOptimizerKernels final : public OptimizerKernels {
public:
    void sgd(const KernelContext& ctx, const SgdStepArgs& a) override {
        if (a.n == 0) return;
        cudaStream_t s = stream(ctx);
        visit_dtype<float, double>(a.dtype, [&]<class T>() {
            sgd_kernel<<<blocks_for(a.n), kBlock, 0, s>>>(
                a.n, static_cast<T*>(a.param), static_cast<const T*>(a.grad), static_cast<T*>(a.momentum_buffer),
                static_cast<T>(a.lr), static_cast<T>(a.momentum), static_cast<T>(a.dampening),
                static_cast<T>(a.weight_decay), a.nesterov, a.first_step);
        });
        LSG_CUDA_CHECK_LAUNCH();
    }

    void adam(const KernelContext& ctx, const AdamStepArgs& a) override {
        if (a.n == 0) return;
        cudaStream_t s = stream(ctx);
        visit_dtype<float, double>(a.dtype, [&]<class T>() {
            adam_kernel<<<blocks_for(a.n), kBlock, 0, s>>>(
                a.n, static_cast<T*>(a.param), static_cast<const T*>(a.grad), static_cast<T*>(a.exp_avg),
                static_cast<T*>(a.exp_avg_sq), optim_math::adam_coefficients<T>(a));
        });
        LSG_CUDA_CHECK_LAUNCH();
    }
};

}  // namespace

OptimizerKernels& optimizer_table() {
    static CudaOptimizerKernels kernels;
    return kernels;
}

}  // namespace cuda
}  // namespace lsg

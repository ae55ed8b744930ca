// The CPU optimizer kernels: one pass over p, g and the state per parameter, split across OpenMP
// threads for large tensors, running the shared arithmetic of optim/optim_math.h.
#include "lsgrad/optim/optim_kernels.h"

#include "lsgrad/optim/optim_math.h"

namespace lsg {

namespace {

// Parameters below this count update on the calling thread. A step is one short pass per tensor,
// and waking a second thread for it (OMP_WAIT_POLICY=PASSIVE, 2-vCPU VM) cost more than it saved:
// an MLP epoch at 2 threads took 0.60 s with its 200 704-weight SGD step split, 0.54 s without.
// The CNN's 401 408-weight Adam step (four arrays in, three out) still gains from a second thread.
constexpr int64_t kOptimizerGrain = int64_t{1} << 18;

class CpuOptimizerKernels final : public OptimizerKernels {
public:
    void sgd(const KernelContext&, const SgdStepArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { run_sgd<T>(a); });
    }
    void adam(const KernelContext&, const AdamStepArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { run_adam<T>(a); });
    }

private:
    template <class T>
    static void run_sgd(const SgdStepArgs& a) {
        T* p = static_cast<T*>(a.param);
        const T* g = static_cast<const T*>(a.grad);
        T* buf = static_cast<T*>(a.momentum_buffer);
        const T lr = static_cast<T>(a.lr), mom = static_cast<T>(a.momentum), damp = static_cast<T>(a.dampening),
                wd = static_cast<T>(a.weight_decay);
        const bool nesterov = a.nesterov, first = a.first_step;
#pragma omp parallel for schedule(static) if (a.n >= kOptimizerGrain)
        for (int64_t i = 0; i < a.n; ++i)
            optim_math::sgd_update<T>(p[i], g[i], buf ? buf + i : nullptr, lr, mom, damp, wd, nesterov, first);
    }

    template <class T>
    static void run_adam(const AdamStepArgs& a) {
        T* p = static_cast<T*>(a.param);
        const T* g = static_cast<const T*>(a.grad);
        T* m = static_cast<T*>(a.exp_avg);
        T* v = static_cast<T*>(a.exp_avg_sq);
        const optim_math::AdamCoefficients<T> c = optim_math::adam_coefficients<T>(a);
#pragma omp parallel for schedule(static) if (a.n >= kOptimizerGrain)
        for (int64_t i = 0; i < a.n; ++i)
            optim_math::adam_update<T>(p[i], g[i], m[i], v[i], c);
    }
};

}  // namespace

namespace detail {
// Called from the generated lsgrad/backends.cpp (see core/backend.h).
void register_cpu_optimizers() {
    static CpuOptimizerKernels kernels;
    backend_slot(DeviceType::cpu).optimizer = &kernels;
}
}  // namespace detail

}  // namespace lsg

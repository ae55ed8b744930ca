// Registers the CPU kernel tables of ops/ in the CPU's Backend (core/backend.h): the tensor kernels
// (defined beside their ops, see ops/cpu_kernels.h) and the loss kernels (ops/loss_cpu.cpp).
#include "lsgrad/core/backend.h"
#include "lsgrad/ops/cpu_kernels.h"
#include "lsgrad/ops/loss_kernels.h"

namespace lsg::detail {

// Called from the generated lsgrad/backends.cpp.
void register_cpu_ops() {
    static CpuTensorKernels tensor;
    Backend& b = backend_slot(DeviceType::cpu);
    b.tensor = &tensor;
    b.loss = &cpu_loss_kernels();
    b.linear_cross_entropy = &cpu_linear_cross_entropy_kernels();
}

}  // namespace lsg::detail

#include "lsgrad/core/backend.h"

#include "lsgrad/ops/cpu_kernels.h"

namespace lsg {

TensorKernels& cpu_tensor_kernels() {
    static CpuTensorKernels kernels;
    return kernels;
}

TensorKernels& tensor_kernels(Device device) {
    if (device.is_cpu()) return cpu_tensor_kernels();
    return cuda_tensor_kernels();
}

}  // namespace lsg

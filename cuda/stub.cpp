// The CUDA backend of a CPU-only build: every entry point says so instead of failing obscurely.
#include "lsgrad/core/allocator.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/error.h"

namespace lsg {

bool cuda_is_available() { return false; }
int cuda_device_count() { return 0; }
const char* cuda_unavailable_reason() {
    return "lsgrad was built without CUDA (configure with -DLSGRAD_CUDA=ON where nvcc is installed)";
}

// The message carries cuda_unavailable_reason(), as the CUDA build's does when no device answers.
Allocator& cuda_allocator(int index) { LSG_FAIL("cannot use cuda:", index, ": ", cuda_unavailable_reason()); }

TensorKernels& cuda_tensor_kernels() {
    LSG_FAIL("cannot run on cuda: built without CUDA (configure with -DLSGRAD_CUDA=ON)");
}

}  // namespace lsg

namespace lsg {
class LossKernels;
LossKernels& cuda_loss_kernels() {
    LSG_FAIL("cannot run a loss on cuda: built without CUDA (configure with -DLSGRAD_CUDA=ON)");
}
}  // namespace lsg

namespace lsg {
class OptimizerKernels;
OptimizerKernels& cuda_optimizer_kernels() {
    LSG_FAIL("cannot run an optimizer step on cuda: built without CUDA (configure with -DLSGRAD_CUDA=ON)");
}
}  // namespace lsg

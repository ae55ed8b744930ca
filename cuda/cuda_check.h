// Error checks for CUDA runtime and cuBLAS calls: a failed call throws lsg::Error naming the file,
// the line, the expression and the library's own description, so a device failure reads like every
// other lsgrad error and never aborts the process.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace lsg::cuda {

// Throws lsg::Error("lsg::cuda: <file>:<line>: <expr> failed: <name>: <description>").
[[noreturn]] void fail_cuda(cudaError_t status, const char* expr, const char* file, int line);
[[noreturn]] void fail_cublas(cublasStatus_t status, const char* expr, const char* file, int line);

inline void check_cuda(cudaError_t status, const char* expr, const char* file, int line) {
    if (status != cudaSuccess) [[unlikely]]
        fail_cuda(status, expr, file, line);
}
inline void check_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) [[unlikely]]
        fail_cublas(status, expr, file, line);
}

}  // namespace lsg::cuda

#define LSG_CUDA_CHECK(expr) ::lsg::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
#define LSG_CUBLAS_CHECK(expr) ::lsg::cuda::check_cublas((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: reports a bad launch configuration at the launch site (errors inside the
// kernel surface at the next synchronising call).
#define LSG_CUDA_CHECK_LAUNCH() LSG_CUDA_CHECK(cudaGetLastError())

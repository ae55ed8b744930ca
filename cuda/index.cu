// CUDA kernels of the indexing ops (ops/index.cpp has the CPU ones and the semantics). Indices are
// checked by the ops before a kernel runs. The accumulating kernels give each output column
// (o, i) to one thread, which adds its j's in order: no atomics, the same bits on every run, and
// repeated indices accumulate as on the CPU.
#include "device.h"
#include "kernel_util.cuh"

namespace lsg {
namespace cuda {
namespace {

// out[o, j, i] = x[o, index[o, j, i], i]
template <class T>
__global__ void gather_kernel(const T* x, const int64_t* index, int64_t outer, int64_t n, int64_t m, int64_t inner,
                              T* out) {
    const int64_t total = outer * m * inner;
    for (int64_t k = grid_index(); k < total; k += grid_stride()) {
        const int64_t o = k / (m * inner), i = k % inner;
        out[k] = x[(o * n + index[k]) * inner + i];
    }
}

// dx[o, index[o, j, i], i] += grad[o, j, i]
template <class T>
__global__ void scatter_add_kernel(const T* grad, const int64_t* index, int64_t outer, int64_t n, int64_t m,
                                   int64_t inner, T* dx) {
    for (int64_t c = grid_index(); c < outer * inner; c += grid_stride()) {
        const int64_t o = c / inner, i = c % inner;
        for (int64_t j = 0; j < m; ++j) {
            const int64_t k = (o * m + j) * inner + i;
            dx[(o * n + index[k]) * inner + i] += grad[k];
        }
    }
}

// out[o, j, i] = x[o, index[j], i]
template <class T>
__global__ void index_select_kernel(const T* x, const int64_t* index, int64_t outer, int64_t n, int64_t m,
                                    int64_t inner, T* out) {
    const int64_t total = outer * m * inner;
    for (int64_t k = grid_index(); k < total; k += grid_stride()) {
        const int64_t o = k / (m * inner), j = k / inner % m, i = k % inner;
        out[k] = x[(o * n + index[j]) * inner + i];
    }
}

// dx[o, index[j], i] += grad[o, j, i]
template <class T>
__global__ void index_add_kernel(const T* grad, const int64_t* index, int64_t outer, int64_t n, int64_t m,
                                 int64_t inner, T* dx) {
    for (int64_t c = grid_index(); c < outer * inner; c += grid_stride()) {
        const int64_t o = c / inner, i = c % inner;
        for (int64_t j = 0; j < m; ++j) dx[(o * n + index[j]) * inner + i] += grad[(o * m + j) * inner + i];
    }
}

}  // namespace
}  // namespace cuda

using cuda::blocks_for;
using cuda::kBlock;

void CudaTensorKernels::gather(const KernelContext& ctx, const Tensor& x, const Tensor& index, int64_t outer, int64_t n,
                               int64_t m, int64_t inner, Tensor& out) {
    if (outer * m * inner == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype(x.dtype(), [&]<class T>() {
        cuda::gather_kernel<<<blocks_for(outer * m * inner), kBlock, 0, s>>>(
            static_cast<const T*>(x.raw_data()), index.data<int64_t>(), outer, n, m, inner, static_cast<T*>(out.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::scatter_add(const KernelContext& ctx, const Tensor& grad, const Tensor& index, int64_t outer,
                                    int64_t n, int64_t m, int64_t inner, Tensor& dx) {
    if (outer * m * inner == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype(grad.dtype(), [&]<class T>() {
        cuda::scatter_add_kernel<<<blocks_for(outer * inner), kBlock, 0, s>>>(
            static_cast<const T*>(grad.raw_data()), index.data<int64_t>(), outer, n, m, inner,
            static_cast<T*>(dx.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::index_select(const KernelContext& ctx, const Tensor& x, const Tensor& index, int64_t outer,
                                     int64_t n, int64_t m, int64_t inner, Tensor& out) {
    if (outer * m * inner == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype(x.dtype(), [&]<class T>() {
        cuda::index_select_kernel<<<blocks_for(outer * m * inner), kBlock, 0, s>>>(
            static_cast<const T*>(x.raw_data()), index.data<int64_t>(), outer, n, m, inner, static_cast<T*>(out.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::index_add(const KernelContext& ctx, const Tensor& grad, const Tensor& index, int64_t outer,
                                  int64_t n, int64_t m, int64_t inner, Tensor& dx) {
    if (outer * m * inner == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype(grad.dtype(), [&]<class T>() {
        cuda::index_add_kernel<<<blocks_for(outer * inner), kBlock, 0, s>>>(
            static_cast<const T*>(grad.raw_data()), index.data<int64_t>(), outer, n, m, inner,
            static_cast<T*>(dx.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

}  // namespace lsg

// CUDA kernels of convolution and pooling (ops/conv.cpp has the CPU ones and the semantics). The
// backward kernels gather instead of scatter: a thread per input pixel sums what every window that
// covers it contributes, in window order, so no atomics are needed and the bits are reproducible.
#include "device.h"
#include "kernel_util.cuh"
#include "lsgrad/ops/conv_math.h"

namespace lsg {
namespace cuda {
namespace {

// cols[n, (c·kh + u)·kw + v, i·ow + j] = x[n, c, i·s_h + u − p_h, j·s_w + v − p_w] or 0 (the
// layout of detail::col_offset).
template <class T>
__global__ void im2col_kernel(const T* x, Window2d g, T* cols) {
    const int64_t L = g.out_h * g.out_w, CKK = g.channels * g.kernel_h * g.kernel_w, total = g.batch * CKK * L;
    for (int64_t k = grid_index(); k < total; k += grid_stride()) {
        const int64_t n = k / (CKK * L), r = k / L % CKK, l = k % L;
        const int64_t c = r / (g.kernel_h * g.kernel_w), u = r / g.kernel_w % g.kernel_h, v = r % g.kernel_w;
        const int64_t i = l / g.out_w, j = l % g.out_w;
        const int64_t h = i * g.stride_h + u - g.pad_h, w = j * g.stride_w + v - g.pad_w;
        cols[k] = (h >= 0 && h < g.height && w >= 0 && w < g.width)
                      ? x[((n * g.channels + c) * g.height + h) * g.width + w]
                      : T(0);
    }
}

// The output positions i whose window row (or column) offset u = h + pad − i·stride lies in
// [0, kernel): i from ceil((h + pad − kernel + 1) / stride) to floor((h + pad) / stride), clipped.
struct Span {
    int64_t lo, hi;  // inclusive; empty when lo > hi
};
__device__ inline Span covering(int64_t h, int64_t pad, int64_t kernel, int64_t stride, int64_t out) {
    const int64_t top = h + pad;
    const int64_t lo = top - kernel + 1 <= 0 ? 0 : (top - kernel + 1 + stride - 1) / stride;
    const int64_t hi = top / stride < out - 1 ? top / stride : out - 1;
    return {lo, hi};
}

// dx[n, c, h, w] += Σ over the windows covering (h, w) of the column entry that read it.
template <class T>
__global__ void col2im_kernel(const T* cols, Window2d g, T* dx) {
    const int64_t total = g.batch * g.channels * g.height * g.width;
    for (int64_t k = grid_index(); k < total; k += grid_stride()) {
        const int64_t w = k % g.width, h = k / g.width % g.height, c = k / (g.width * g.height) % g.channels,
                      n = k / (g.width * g.height * g.channels);
        const Span si = covering(h, g.pad_h, g.kernel_h, g.stride_h, g.out_h);
        const Span sj = covering(w, g.pad_w, g.kernel_w, g.stride_w, g.out_w);
        T acc = T(0);
        for (int64_t i = si.lo; i <= si.hi; ++i) {
            const int64_t u = h + g.pad_h - i * g.stride_h;
            for (int64_t j = sj.lo; j <= sj.hi; ++j) {
                const int64_t v = w + g.pad_w - j * g.stride_w;
                acc += cols[detail::col_offset(g, n, (c * g.kernel_h + u) * g.kernel_w + v) + i * g.out_w + j];
            }
        }
        dx[k] = acc;
    }
}

template <class T>
__global__ void max_pool2d_kernel(const T* x, Window2d g, T* out, int64_t* argmax) {
    const int64_t total = g.batch * g.channels * g.out_h * g.out_w;
    for (int64_t k = grid_index(); k < total; k += grid_stride()) {
        const int64_t j = k % g.out_w, i = k / g.out_w % g.out_h, p = k / (g.out_w * g.out_h);
        const detail::WindowMax<T> m = detail::pool_window_max(x + p * g.height * g.width, g, i, j);
        out[k] = m.value;
        argmax[k] = m.index;
    }
}

// dx[p, h, w] = Σ grad over the windows of plane p whose argmax is (h, w): every element written.
template <class T>
__global__ void max_pool2d_backward_kernel(const T* grad, const int64_t* argmax, Window2d g, T* dx) {
    const int64_t L = g.out_h * g.out_w, total = g.batch * g.channels * g.height * g.width;
    for (int64_t k = grid_index(); k < total; k += grid_stride()) {
        const int64_t w = k % g.width, h = k / g.width % g.height, p = k / (g.width * g.height);
        const int64_t flat = h * g.width + w;
        const Span si = covering(h, g.pad_h, g.kernel_h, g.stride_h, g.out_h);
        const Span sj = covering(w, g.pad_w, g.kernel_w, g.stride_w, g.out_w);
        T acc = T(0);
        for (int64_t i = si.lo; i <= si.hi; ++i)
            for (int64_t j = sj.lo; j <= sj.hi; ++j) {
                const int64_t o = p * L + i * g.out_w + j;
                if (argmax[o] == flat) acc += grad[o];
            }
        dx[k] = acc;
    }
}

}  // namespace
}  // namespace cuda

using cuda::blocks_for;
using cuda::kBlock;

void CudaTensorKernels::im2col(const KernelContext& ctx, const Tensor& x, const Window2d& g, Tensor& cols) {
    const int64_t total = cols.numel();
    if (total == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        cuda::im2col_kernel<<<blocks_for(total), kBlock, 0, s>>>(static_cast<const T*>(x.raw_data()), g,
                                                                 static_cast<T*>(cols.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::col2im(const KernelContext& ctx, const Tensor& cols, const Window2d& g, Tensor& dx) {
    const int64_t total = dx.numel();
    if (total == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(dx.dtype(), [&]<class T>() {
        cuda::col2im_kernel<<<blocks_for(total), kBlock, 0, s>>>(static_cast<const T*>(cols.raw_data()), g,
                                                                 static_cast<T*>(dx.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::max_pool2d(const KernelContext& ctx, const Tensor& x, const Window2d& g, Tensor& out,
                                   Tensor& argmax) {
    const int64_t total = out.numel();
    if (total == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        cuda::max_pool2d_kernel<<<blocks_for(total), kBlock, 0, s>>>(
            static_cast<const T*>(x.raw_data()), g, static_cast<T*>(out.raw_data()), argmax.data<int64_t>());
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::max_pool2d_backward(const KernelContext& ctx, const Tensor& grad, const Tensor& argmax,
                                            const Window2d& g, Tensor& dx) {
    const int64_t total = dx.numel();
    if (total == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(grad.dtype(), [&]<class T>() {
        cuda::max_pool2d_backward_kernel<<<blocks_for(total), kBlock, 0, s>>>(
            static_cast<const T*>(grad.raw_data()), argmax.data<int64_t>(), g, static_cast<T*>(dx.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

}  // namespace lsg

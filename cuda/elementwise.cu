// CUDA kernels of the elementwise ops (copy, fill, unary, binary, where, random, dropout): one
// thread per element, grid-stride, with the formulas of ops/elementwise_math.h and the Philox draws
// of core/philox.h, so both devices compute the same values.
#include <array>

#include "device.h"
#include "kernel_util.cuh"
#include "lsgrad/core/philox.h"
#include "lsgrad/ops/elementwise_math.h"

namespace lsg {
namespace cuda {
namespace {

// Dims a strided launch supports after merging (detail::merge_dims); only tensors whose layout
// cannot be merged into fewer dims reach this.
constexpr int kMaxDims = 8;

// Per-operand element offsets of flat index i over a merged shape. The dims are walked with
// compile-time indices so the arrays stay in the kernel's parameter space.
template <int N>
struct Indexer {
    int nd;
    int64_t sizes[kMaxDims];
    int64_t strides[N][kMaxDims];

    __device__ void offsets(int64_t i, int64_t (&off)[N]) const {
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] = 0;
        if (nd == 1) {
#pragma unroll
            for (int k = 0; k < N; ++k) off[k] = i * strides[k][0];
            return;
        }
#pragma unroll
        for (int d = kMaxDims - 1; d >= 0; --d) {
            if (d >= nd) continue;
            const int64_t q = i / sizes[d];
            const int64_t r = i - q * sizes[d];
            i = q;
#pragma unroll
            for (int k = 0; k < N; ++k) off[k] += r * strides[k][d];
        }
    }
};

template <int N>
Indexer<N> make_indexer(const Shape& shape, const std::array<Shape, N>& strides) {
    const detail::MergedDims<N> m = detail::merge_dims<N>(shape, strides);
    LSG_CHECK_OP("cuda", m.sizes.size() <= kMaxDims, "a strided CUDA kernel handles at most ", kMaxDims,
                 " dims after merging, shape ", shape, " needs ", m.sizes.size());
    Indexer<N> ix{};
    ix.nd = static_cast<int>(m.sizes.size());
    for (int d = 0; d < ix.nd; ++d) {
        ix.sizes[d] = m.sizes[d];
        for (int k = 0; k < N; ++k) ix.strides[k][d] = m.strides[k][d];
    }
    return ix;
}

template <class D, class S>
__global__ void copy_kernel(int64_t n, Indexer<2> ix, D* dst, const S* src) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) {
        int64_t off[2];
        ix.offsets(i, off);
        dst[off[0]] = static_cast<D>(src[off[1]]);
    }
}

template <class T>
__global__ void fill_kernel(int64_t n, T* dst, T value) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) dst[i] = value;
}

template <class T>
__global__ void unary_kernel(UnaryOp op, int64_t n, const T* x, T* y, T a, T b) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] = detail::apply_unary(op, x[i], a, b);
}

template <class T>
__global__ void unary_backward_kernel(UnaryOp op, int64_t n, const T* g, const T* x, const T* y, T* dx, T a, T b) {
    for (int64_t i = grid_index(); i < n; i += grid_stride())
        dx[i] = g[i] * detail::unary_derivative(op, x[i], y[i], a, b);
}

template <class T>
__global__ void binary_kernel(BinaryOp op, int64_t n, Indexer<3> ix, T* out, const T* a, const T* b) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) {
        int64_t off[3];
        ix.offsets(i, off);
        out[off[0]] = detail::apply_binary(op, a[off[1]], b[off[2]]);
    }
}

template <class T, class C>
__global__ void where_kernel(int64_t n, Indexer<4> ix, T* out, const C* cond, const T* a, const T* b) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) {
        int64_t off[4];
        ix.offsets(i, off);
        out[off[0]] = cond[off[1]] != C(0) ? a[off[2]] : b[off[3]];
    }
}

template <class T>
__global__ void random_kernel(int64_t n, T* out, bool normal, uint64_t seed, uint64_t offset) {
    for (int64_t i = grid_index(); i < n; i += grid_stride())
        out[i] = static_cast<T>(normal ? philox::normal(seed, offset + i) : philox::uniform(seed, offset + i));
}

template <class T>
__global__ void dropout_kernel(int64_t n, const T* x, T* out, T* mask, float keep, T scale, uint64_t seed,
                               uint64_t offset) {
    for (int64_t i = grid_index(); i < n; i += grid_stride()) {
        const T m = philox::uniform(seed, offset + i) < keep ? scale : T(0);
        mask[i] = m;
        out[i] = x[i] * m;
    }
}

}  // namespace
}  // namespace cuda

using cuda::blocks_for;
using cuda::kBlock;

void CudaTensorKernels::copy(const KernelContext& ctx, const Tensor& src, Tensor& dst) {
    const int64_t n = dst.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    const auto ix = cuda::make_indexer<2>(dst.shape(), {dst.strides(), src.strides()});
    visit_dtype(dst.dtype(), [&]<class D>() {
        visit_dtype(src.dtype(), [&]<class S>() {
            cuda::copy_kernel<D, S><<<blocks_for(n), kBlock, 0, s>>>(n, ix, static_cast<D*>(dst.raw_data()),
                                                                      static_cast<const S*>(src.raw_data()));
        });
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::fill(const KernelContext& ctx, Tensor& dst, double value) {
    const int64_t n = dst.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype(dst.dtype(), [&]<class T>() {
        cuda::fill_kernel<<<blocks_for(n), kBlock, 0, s>>>(n, static_cast<T*>(dst.raw_data()), static_cast<T>(value));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::unary(const KernelContext& ctx, UnaryOp op, const Tensor& x, Tensor& out, double a, double b) {
    const int64_t n = x.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        cuda::unary_kernel<<<blocks_for(n), kBlock, 0, s>>>(op, n, static_cast<const T*>(x.raw_data()),
                                                            static_cast<T*>(out.raw_data()), static_cast<T>(a),
                                                            static_cast<T>(b));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::unary_backward(const KernelContext& ctx, UnaryOp op, const Tensor& grad, const Tensor& x,
                                       const Tensor& y, Tensor& dx, double a, double b) {
    const int64_t n = x.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        cuda::unary_backward_kernel<<<blocks_for(n), kBlock, 0, s>>>(
            op, n, static_cast<const T*>(grad.raw_data()), static_cast<const T*>(x.raw_data()),
            static_cast<const T*>(y.raw_data()), static_cast<T*>(dx.raw_data()), static_cast<T>(a), static_cast<T>(b));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::binary(const KernelContext& ctx, BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    const auto ix = cuda::make_indexer<3>(out.shape(), {out.strides(), a.strides(), b.strides()});
    visit_dtype(out.dtype(), [&]<class T>() {
        cuda::binary_kernel<<<blocks_for(n), kBlock, 0, s>>>(op, n, ix, static_cast<T*>(out.raw_data()),
                                                             static_cast<const T*>(a.raw_data()),
                                                             static_cast<const T*>(b.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::where(const KernelContext& ctx, const Tensor& cond, const Tensor& a, const Tensor& b,
                              Tensor& out) {
    const int64_t n = out.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    const auto ix = cuda::make_indexer<4>(out.shape(), {out.strides(), cond.strides(), a.strides(), b.strides()});
    visit_dtype(out.dtype(), [&]<class T>() {
        visit_dtype(cond.dtype(), [&]<class C>() {
            cuda::where_kernel<<<blocks_for(n), kBlock, 0, s>>>(
                n, ix, static_cast<T*>(out.raw_data()), static_cast<const C*>(cond.raw_data()),
                static_cast<const T*>(a.raw_data()), static_cast<const T*>(b.raw_data()));
        });
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::random(const KernelContext& ctx, Tensor& out, bool normal, uint64_t seed, uint64_t offset) {
    const int64_t n = out.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype(out.dtype(), [&]<class T>() {
        cuda::random_kernel<<<blocks_for(n), kBlock, 0, s>>>(n, static_cast<T*>(out.raw_data()), normal, seed, offset);
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::dropout(const KernelContext& ctx, const Tensor& x, double p, uint64_t seed, uint64_t offset,
                                Tensor& out, Tensor& mask) {
    const int64_t n = x.numel();
    if (n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        cuda::dropout_kernel<<<blocks_for(n), kBlock, 0, s>>>(
            n, static_cast<const T*>(x.raw_data()), static_cast<T*>(out.raw_data()), static_cast<T*>(mask.raw_data()),
            static_cast<float>(1.0 - p), static_cast<T>(1.0 / (1.0 - p)), seed, offset);
    });
    LSG_CUDA_CHECK_LAUNCH();
}

}  // namespace lsg

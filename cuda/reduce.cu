// CUDA kernels of the reductions and softmax (ops/reduce.cpp has the CPU ones and the semantics).
// Every reduction runs in a fixed order for a given shape (per-thread strided partials, then a
// tree in shared memory), so results are the same bits from run to run; sums accumulate in double.
#include <cmath>

#include "device.h"
#include "kernel_util.cuh"

namespace lsg {
namespace cuda {
namespace {

constexpr int kReduceThreads = 256;

// The [outer, n, inner] reduction's launch: a block reduces TX adjacent columns of one outer slice,
// its TY thread rows splitting n (j = ty, ty + TY, ...). TX = 1 for inner = 1, so the whole block
// then works on one contiguous row.
struct ReduceShape {
    int tx, ty;
};
ReduceShape reduce_shape(int64_t inner) {
    int tx = 1;
    while (tx < 32 && tx < inner) tx *= 2;
    return {tx, kReduceThreads / tx};
}

template <class T>
__global__ void reduce_sum_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, T* out) {
    __shared__ double part[kReduceThreads];
    const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x, TY = blockDim.y;
    for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
        const int64_t i = static_cast<int64_t>(blockIdx.x) * TX + tx;
        double acc = 0.0;
        if (i < inner)
            for (int64_t j = ty; j < n; j += TY) acc += static_cast<double>(x[(o * n + j) * inner + i]);
        part[ty * TX + tx] = acc;
        __syncthreads();
        for (int h = TY / 2; h > 0; h /= 2) {
            if (ty < h) part[ty * TX + tx] += part[(ty + h) * TX + tx];
            __syncthreads();
        }
        if (ty == 0 && i < inner) out[o * inner + i] = static_cast<T>(part[tx]);
        __syncthreads();
    }
}

// A candidate extremum: its value and index along n (−1 when the thread saw no element).
template <class T>
struct Candidate {
    T v;
    int64_t j;
};

// The better of two candidates under "a NaN wins, else the extremum, ties and NaNs to the lower
// index": the order-free form of the CPU's first-wins scan.
template <class T>
__device__ Candidate<T> better(Candidate<T> a, Candidate<T> b, bool want_max) {
    if (a.j < 0) return b;
    if (b.j < 0) return a;
    const bool an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) return (an && bn) ? (a.j < b.j ? a : b) : (an ? a : b);
    if (a.v == b.v) return a.j < b.j ? a : b;
    return (want_max ? a.v > b.v : a.v < b.v) ? a : b;
}

template <class T>
__global__ void reduce_extremum_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, bool want_max, bool arg,
                                       void* out) {
    __shared__ T val[kReduceThreads];
    __shared__ int64_t idx[kReduceThreads];
    const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x, TY = blockDim.y;
    for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
        const int64_t i = static_cast<int64_t>(blockIdx.x) * TX + tx;
        Candidate<T> c{T(0), -1};
        if (i < inner)
            for (int64_t j = ty; j < n; j += TY) c = better(c, Candidate<T>{x[(o * n + j) * inner + i], j}, want_max);
        val[ty * TX + tx] = c.v;
        idx[ty * TX + tx] = c.j;
        __syncthreads();
        for (int h = TY / 2; h > 0; h /= 2) {
            if (ty < h) {
                const int a = ty * TX + tx, b = (ty + h) * TX + tx;
                const Candidate<T> r = better(Candidate<T>{val[a], idx[a]}, Candidate<T>{val[b], idx[b]}, want_max);
                val[a] = r.v;
                idx[a] = r.j;
            }
            __syncthreads();
        }
        if (ty == 0 && i < inner) {
            if (arg) static_cast<int64_t*>(out)[o * inner + i] = idx[tx];
            else static_cast<T*>(out)[o * inner + i] = val[tx];
        }
        __syncthreads();
    }
}

// Threads per softmax row: a warp for short rows, up to 256 for long ones.
int row_threads(int64_t n) {
    int t = 32;
    while (t < 256 && t < n) t *= 2;
    return t;
}

// The CPU's running max: std::max(m, x) keeps m when x is NaN.
struct MaxKeep {
    template <class T>
    __device__ T operator()(T a, T b) const {
        return a < b ? b : a;
    }
};

// One block per row (o, i) of n elements at stride `inner`.
template <class T>
__global__ void softmax_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, bool log, T* y) {
    __shared__ T smax[32];
    __shared__ double ssum[32];
    for (int64_t r = blockIdx.x; r < outer * inner; r += gridDim.x) {
        const int64_t base = (r / inner) * n * inner + r % inner;
        T m = -INFINITY;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = MaxKeep{}(m, x[base + j * inner]);
        m = block_reduce(m, MaxKeep{}, smax);
        // An all −inf row has no finite maximum; subtracting 0 keeps exp(−inf) = 0 instead of NaN.
        if (isinf(m) && m < 0) m = T(0);
        double s = 0.0;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += ::exp(static_cast<double>(x[base + j * inner] - m));
        s = block_reduce(s, Plus{}, ssum);
        if (log) {
            const T lse = m + static_cast<T>(::log(s));
            for (int64_t j = threadIdx.x; j < n; j += blockDim.x) y[base + j * inner] = x[base + j * inner] - lse;
        } else {
            const double inv = 1.0 / s;
            for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
                y[base + j * inner] = static_cast<T>(::exp(static_cast<double>(x[base + j * inner] - m)) * inv);
        }
    }
}

template <class T>
__global__ void softmax_backward_kernel(const T* g, const T* y, int64_t outer, int64_t n, int64_t inner, bool log,
                                        T* dx) {
    __shared__ double ssum[32];
    for (int64_t r = blockIdx.x; r < outer * inner; r += gridDim.x) {
        const int64_t base = (r / inner) * n * inner + r % inner;
        double s = 0.0;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            const int64_t k = base + j * inner;
            s += log ? static_cast<double>(g[k]) : static_cast<double>(g[k]) * y[k];
        }
        s = block_reduce(s, Plus{}, ssum);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            const int64_t k = base + j * inner;
            dx[k] = log ? static_cast<T>(g[k] - ::exp(static_cast<double>(y[k])) * s) : static_cast<T>(y[k] * (g[k] - s));
        }
    }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, int64_t(1) << 20)); }

}  // namespace
}  // namespace cuda

void CudaTensorKernels::reduce(const KernelContext& ctx, ReduceOp op, const Tensor& x, int64_t outer, int64_t n,
                               int64_t inner, Tensor& out) {
    if (outer * inner == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    const cuda::ReduceShape rs = cuda::reduce_shape(inner);
    const dim3 block(rs.tx, rs.ty);
    const dim3 grid(static_cast<unsigned>((inner + rs.tx - 1) / rs.tx),
                    static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        if (op == ReduceOp::sum) {
            cuda::reduce_sum_kernel<<<grid, block, 0, s>>>(xp, outer, n, inner, static_cast<T*>(out.raw_data()));
        } else {
            const bool want_max = op == ReduceOp::max || op == ReduceOp::argmax;
            const bool arg = op == ReduceOp::argmax || op == ReduceOp::argmin;
            cuda::reduce_extremum_kernel<<<grid, block, 0, s>>>(xp, outer, n, inner, want_max, arg, out.raw_data());
        }
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::softmax(const KernelContext& ctx, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                                bool log, Tensor& out) {
    if (outer * inner == 0 || n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        cuda::softmax_kernel<<<cuda::row_blocks(outer * inner), cuda::row_threads(n), 0, s>>>(
            static_cast<const T*>(x.raw_data()), outer, n, inner, log, static_cast<T*>(out.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

void CudaTensorKernels::softmax_backward(const KernelContext& ctx, const Tensor& grad, const Tensor& y, int64_t outer,
                                         int64_t n, int64_t inner, bool log, Tensor& dx) {
    if (outer * inner == 0 || n == 0) return;
    cudaStream_t s = cuda::stream(ctx);
    visit_dtype<float, double>(y.dtype(), [&]<class T>() {
        cuda::softmax_backward_kernel<<<cuda::row_blocks(outer * inner), cuda::row_threads(n), 0, s>>>(
            static_cast<const T*>(grad.raw_data()), static_cast<const T*>(y.raw_data()), outer, n, inner, log,
            static_cast<T*>(dx.raw_data()));
    });
    LSG_CUDA_CHECK_LAUNCH();
}

}  // namespace lsg

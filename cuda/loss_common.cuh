// What the CUDA loss kernels share (loss.cu, linear_cross_entropy.cu): the online row statistics
// and their merge, the preparing kernel (target checks with the deferred error report, the Mean
// denominator and Σ w, left in device memory so no kernel waits for the host) and the fixed-order
// sum of the per-row losses. Internal to cuda/.
#pragma once

#include <cstdint>

#include "device.h"
#include "kernel_util.cuh"
#include "lsgrad/ops/loss_math.h"

namespace lsg::cuda {

// The online state of a row: max m, Σ e^{x − m}, and Σ w·(x − c) over the non-padding classes.
template <class T>
struct RowStats {
    T m, s, sdx;
};
template <class T>
__device__ inline RowStats<T> shuffle_xor(unsigned mask, RowStats<T> v, int offset, int width) {
    return {__shfl_xor_sync(mask, v.m, offset, width), __shfl_xor_sync(mask, v.s, offset, width),
            __shfl_xor_sync(mask, v.sdx, offset, width)};
}
struct MergeStats {
    template <class T>
    __device__ RowStats<T> operator()(RowStats<T> a, RowStats<T> b) const {
        const detail::LseState<T> st = detail::lse_merge(detail::LseState<T>{a.m, a.s}, detail::LseState<T>{b.m, b.s});
        return {st.m, st.s, a.sdx + b.sdx};
    }
};

// Two double sums (the probability-target loss and mass of a row; a denominator and Σ w).
struct Sums {
    double a, b;
};
__device__ inline Sums shuffle_xor(unsigned mask, Sums v, int offset, int width) {
    return {__shfl_xor_sync(mask, v.a, offset, width), __shfl_xor_sync(mask, v.b, offset, width)};
}
struct AddSums {
    __device__ Sums operator()(Sums x, Sums y) const { return {x.a + y.a, x.b + y.b}; }
};

// What the preparing kernel leaves for the others, in device memory.
struct Aux {
    double inv_denom;  // detail::reduction_scale: 1/D for Mean (0 when D = 0), 1 otherwise
    double sum_w;      // Σ_{k ≠ pad} w_k
};

// The bad target the preparing kernel found, and the call it belongs to.
struct TargetCheck {
    TargetErrorSlot slot;  // the device's deferred error record
    const char* op;
    int64_t ignore;
};

inline constexpr int kPrepThreads = 512;

// One block. A row's target comes in parts (detail::target_parts: one part, or two with target_b
// and λ for mixed rows); a part is skipped (no loss, no gradient, not in D) when its class is
// ignore_index or the padding class; an out-of-range class is skipped too, and the first such row
// found (the block's minimum in shared memory, so one thread can read its value after; `target`
// before `target_b`, as the CPU checks them) is written to the device's error record unless an
// earlier call's error already holds it. D = Σ_i Σ_parts share·w_y (detail::parts_denominator_term).
template <class T>
__global__ void __launch_bounds__(kPrepThreads)
    prepare_kernel(int64_t N, int64_t K, const int64_t* target, const int64_t* target_b, const T* lam, const T* w,
                   int64_t pad, bool mean, TargetCheck check, Aux* aux) {
    const int64_t ignore = check.ignore;
    __shared__ Sums smem[32];
    __shared__ unsigned long long bad_row[2];
    if (threadIdx.x < 2) bad_row[threadIdx.x] = ~0ull;
    __syncthreads();
    Sums acc{0.0, 0.0};
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
        const int64_t ya = target[i], yb = target_b ? target_b[i] : ignore;
        if (ya != ignore && (ya < 0 || ya >= K)) atomicMin(&bad_row[0], static_cast<unsigned long long>(i));
        if (yb != ignore && (yb < 0 || yb >= K)) atomicMin(&bad_row[1], static_cast<unsigned long long>(i));
        acc.a += detail::parts_denominator_term(detail::target_parts(target, target_b, lam, i, K, ignore, pad), w,
                                                ignore, pad);
    }
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) acc.b += detail::class_mass_term(w, k, pad);
    acc = block_reduce(acc, AddSums{}, smem);  // ends with __syncthreads: bad_row is final
    if (threadIdx.x == 0) {
        aux->inv_denom = detail::reduction_scale(mean, acc.a);
        aux->sum_w = acc.b;
        const int j = bad_row[0] != ~0ull ? 0 : 1;
        if (bad_row[j] != ~0ull && atomicCAS(check.slot.claim, 0, 1) == 0) {
            TargetError* rec = check.slot.record;
            rec->op = check.op;
            rec->row = static_cast<long long>(bad_row[j]);
            rec->value = static_cast<long long>((j == 0 ? target : target_b)[bad_row[j]]);
            rec->classes = static_cast<long long>(K);
            rec->ignore_index = static_cast<long long>(ignore);
            __threadfence_system();  // the fields reach the host before the flag
            *static_cast<volatile int*>(&rec->flag) = 1;
        }
    }
}

// Runs the preparing kernel, which fills aux and records a bad target, on stream s (target_b and
// lam null for unmixed targets).
template <class T>
void prepare(cudaStream_t s, const KernelContext& ctx, const char* op, Aux* aux, int64_t N, int64_t K,
             const int64_t* target, const int64_t* target_b, const T* lam, const T* w, int64_t pad, int64_t ignore,
             bool mean) {
    const TargetCheck check{target_error_slot(ctx), op, ignore};
    prepare_kernel<<<1, kPrepThreads, 0, s>>>(N, K, target, target_b, lam, w, pad, mean, check, aux);
    LSG_CUDA_CHECK_LAUNCH();
}

// Σ_i x_i in double in a fixed order, times scale (and times aux->inv_denom when given); one block.
inline constexpr int kSumThreads = 512;
template <class T>
__global__ void __launch_bounds__(kSumThreads) sum_kernel(int64_t n, const T* x, double scale, const Aux* aux, T* out) {
    __shared__ double smem[32];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(x[i]);
    s = block_reduce(s, Plus{}, smem);
    if (threadIdx.x == 0) *out = static_cast<T>(s * scale * (aux ? aux->inv_denom : 1.0));
}

template <class T>
void reduce_rows(cudaStream_t s, int64_t n, const T* x, double scale, const Aux* aux, void* out) {
    sum_kernel<<<1, kSumThreads, 0, s>>>(n, x, scale, aux, static_cast<T*>(out));
    LSG_CUDA_CHECK_LAUNCH();
}

}  // namespace lsg::cuda

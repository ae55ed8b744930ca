// The CUDA kernel of the fused linear cross-entropy (ops/linear_cross_entropy.h has the formula),
// with the block schedule of the CPU kernel (ops/linear_cross_entropy_cpu.cpp). For each block of
// rows [r0, r0 + br):
//   pass 1, for each block of classes [v0, v0 + bv): the logits h·Wᵀ of the block by cuBLAS, then one
//     thread block per row adds the bias, soft-caps, reduces max, Σ e^{x − max} and Σ w·(x − c) in a
//     fixed order and merges them into the row's online log-sum-exp (detail::lse_merge); the last
//     class block writes the row's loss (detail::parts_row_loss);
//   pass 2 (only with gradients), for each block of classes: the logits again (unless the block holds
//     whole rows: then pass 1 left the capped logits in it), the gradient G in place of them
//     (detail::linear_ce_grad), then dh[r0:] (+)= G·W[v0:] and dW[v0:] (+)= Gᵀ·h[r0:] by cuBLAS and
//     db[v0:] (+)= Σ_rows G, one thread per class adding the rows in order.
// First a preparing kernel (loss_common.cuh) checks the targets on the device (a bad part is skipped
// and recorded, raised at the next synchronising call), computes the Mean denominator and Σ w, and a
// warp per row finds the row's pivot logit. Every formula is the CPU's, from ops/loss_math.h; every
// sum runs in a fixed order with no float atomics, so a run gives the same bits every time. All of it
// is issued on the KernelContext's stream, with no host wait; the block of logits and the per-row
// state come from the caching allocator.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "device.h"
#include "kernel_util.cuh"
#include "loss_common.cuh"
#include "lsgrad/core/error.h"
#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/ops/loss_math.h"

namespace lsg {
namespace cuda {
namespace {

using detail::LseState;
using detail::SmoothWeights;
using detail::TargetParts;

constexpr const char* kOp = "linear_cross_entropy";

// A row's state across its class blocks.
template <class T>
struct RowState {
    T m, s;    // the online log-sum-exp
    T sdx;     // Σ_{k ≠ pad} w_k·(x_k − c)
    T x_y[2];  // the logits at the classes of the row's target parts
    T pivot;   // c (detail::ce_pivot)
};

// The constants of one call, read by every kernel.
template <class T>
struct Lce {
    int64_t N, H, V;
    const T* h;  // [N, H]
    const T* W;  // [V, H]
    const T* b;  // [V] or null
    const T* w;  // class weights [V] or null
    const T* lam;        // [N] or null
    const T* row_scale;  // [N] or null
    const int64_t* target;
    const int64_t* target_b;  // or null
    int64_t pad, ignore;
    SmoothWeights<T> sw;
    T z, cap;
    const Aux* aux;
    RowState<T>* st;  // [N]
    T* loss;          // [N]
};

template <class T>
__device__ inline TargetParts parts_of(const Lce<T>& p, int64_t i) {
    return detail::target_parts(p.target, p.target_b, p.lam, i, p.V, p.ignore, p.pad);
}

// A warp per row: the pivot c = ce_pivot(softcap(h_i·W_y + b_y)) of the row's first counting part
// (0 when none counts), and the row's state set to that of no element.
constexpr int kPivotThreads = 256;
template <class T>
__global__ void __launch_bounds__(kPivotThreads) pivot_kernel(Lce<T> p) {
    const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / 32; i < p.N;
         i += static_cast<int64_t>(gridDim.x) * warps) {
        const int64_t y = detail::pivot_class(parts_of(p, i));
        T u = T(0);
        if (y >= 0) {  // the same for the whole warp
            const T* hi = p.h + i * p.H;
            const T* wy = p.W + y * p.H;
            for (int64_t j = lane; j < p.H; j += 32) u += hi[j] * wy[j];
            u = group_reduce(u, Plus{}, 32, 0xffffffffu);
        }
        if (lane == 0) {
            RowState<T> s{};
            s.m = detail::lm_neg_inf<T>();
            if (y >= 0) s.pivot = detail::ce_pivot(detail::softcap(u + (p.b ? p.b[y] : T(0)), p.cap));
            p.st[i] = s;
        }
    }
}

// Threads of the per-row kernels: a block per row of the class block, about 8 classes per thread up
// to 256 threads.
constexpr int kRowThreads = 256;
int row_threads(int64_t bv) { return bv <= 256 ? 32 : (bv <= 2048 ? 128 : kRowThreads); }
unsigned row_blocks(int64_t br) { return static_cast<unsigned>(std::clamp<int64_t>(br, 1, int64_t(1) << 20)); }

// Pass 1 on the block L [br, bv] of raw logits h·Wᵀ (classes v0..): each row's statistics merged
// into its state; with keep, L becomes the capped logits for pass 2; on the last class block, the
// row's loss.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    stats_kernel(Lce<T> p, int64_t r0, int64_t br, int64_t v0, int64_t bv, T* L, bool keep, bool last) {
    __shared__ RowStats<T> smem[32];
    for (int64_t r = blockIdx.x; r < br; r += gridDim.x) {
        const int64_t i = r0 + r;
        T* x = L + r * bv;
        RowState<T>& state = p.st[i];
        const TargetParts parts = parts_of(p, i);
        // Read field by field: x_y is written below by the thread that holds the class.
        const T pivot = state.pivot;
        const LseState<T> before{state.m, state.s};
        const T sdx_before = state.sdx;
        RowStats<T> acc{detail::lm_neg_inf<T>(), T(0), T(0)};
        for (int64_t k = threadIdx.x; k < bv; k += blockDim.x) {
            const int64_t c = v0 + k;
            const T v = detail::softcap(p.b ? x[k] + p.b[c] : x[k], p.cap);
            if (keep) x[k] = v;
            LseState<T> ls{acc.m, acc.s};
            detail::lse_update(ls, v);
            acc.m = ls.m;
            acc.s = ls.s;
            if (c != p.pad) acc.sdx += (p.w ? p.w[c] : T(1)) * (v - pivot);
            for (int j = 0; j < 2; ++j)
                if (c == parts.y[j]) state.x_y[j] = v;
        }
        acc = block_reduce(acc, MergeStats{}, smem);  // its __syncthreads also publish x_y
        if (threadIdx.x == 0) {
            const LseState<T> st = detail::lse_merge(before, LseState<T>{acc.m, acc.s});
            const T sdx = sdx_before + acc.sdx;
            state.m = st.m;
            state.s = st.s;
            state.sdx = sdx;
            if (last)
                p.loss[i] = detail::parts_row_loss(p.sw, parts, st, pivot, state.x_y, p.w,
                                                   static_cast<T>(p.aux->sum_w), sdx, p.z);
        }
    }
}

// Pass 2 on the block L [br, bv] (raw logits h·Wᵀ when raw, else pass 1's capped logits): L becomes
// the gradient G with respect to the uncapped logits, scaled by the reduction and row_scale.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    grad_kernel(Lce<T> p, int64_t r0, int64_t br, int64_t v0, int64_t bv, T* L, bool raw) {
    const T sum_w = static_cast<T>(p.aux->sum_w);
    const T reduction_scale = static_cast<T>(p.aux->inv_denom);
    for (int64_t r = blockIdx.x; r < br; r += gridDim.x) {
        const int64_t i = r0 + r;
        T* x = L + r * bv;
        const RowState<T> state = p.st[i];
        const LseState<T> st{state.m, state.s};
        const TargetParts parts = parts_of(p, i);
        const detail::PartsGrad<T> pg = detail::parts_grad(p.sw, parts, st, p.w, sum_w, p.z);
        const T scale = reduction_scale * (p.row_scale ? p.row_scale[i] : T(1));
        const T log_s = detail::lm_log(st.s);
        for (int64_t k = threadIdx.x; k < bv; k += blockDim.x) {
            if (!pg.counts) {
                x[k] = T(0);
                continue;
            }
            const int64_t c = v0 + k;
            const T v = raw ? detail::softcap(p.b ? x[k] + p.b[c] : x[k], p.cap) : x[k];
            x[k] = detail::linear_ce_grad(scale, pg.mass, detail::softmax_prob(v, st.m, log_s),
                                          detail::parts_target(p.sw, parts, c, p.pad), p.w ? p.w[c] : T(1), v, p.cap);
        }
    }
}

// db [bv] = Σ_r G[r, :] (first) or db + Σ_r G[r, :], each class adding the rows in order.
template <class T>
__global__ void bias_grad_kernel(int64_t br, int64_t bv, const T* G, T* db, bool first) {
    for (int64_t k = grid_index(); k < bv; k += grid_stride()) {
        T acc = first ? T(0) : db[k];
        for (int64_t r = 0; r < br; ++r) acc += G[r * bv + k];
        db[k] = acc;
    }
}

// Row-major C [m, n] = op(A)·op(B) + beta·C through cuBLAS on the handle's stream, with the operands
// swapped as in cuda/matmul.cpp; lda, ldb, ldc are the row lengths of the stored matrices (≥ 1 for
// cuBLAS, also where k = 0).
template <class T>
void gemm(cublasHandle_t hd, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
    if (m == 0 || n == 0) return;
    const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    const int la = static_cast<int>(std::max<int64_t>(1, lda)), lb = static_cast<int>(std::max<int64_t>(1, ldb));
    const int lc = static_cast<int>(std::max<int64_t>(1, ldc));
    const T one = T(1);
    if constexpr (sizeof(T) == sizeof(float))
        LSG_CUBLAS_CHECK(cublasSgemm(hd, op_b, op_a, N, M, K, &one, B, lb, A, la, &beta, C, lc));
    else
        LSG_CUBLAS_CHECK(cublasDgemm(hd, op_b, op_a, N, M, K, &one, B, lb, A, la, &beta, C, lc));
}

template <class T>
void forward_impl(const KernelContext& ctx, const LinearCrossEntropyArgs& a) {
    cudaStream_t s = stream(ctx);
    const int64_t N = a.rows, H = a.hidden, V = a.classes;
    const int64_t BR = std::min(a.chunk_rows, std::max<int64_t>(N, 1));
    const int64_t BV = std::min(a.chunk_classes, V);
    LSG_CHECK_OP(kOp, BR <= INT_MAX && BV <= INT_MAX && H <= INT_MAX, "cuBLAS takes 32-bit sizes, got a block of ",
                 BR, " rows × ", BV, " classes with H = ", H);
    Lce<T> p{};
    p.N = N;
    p.H = H;
    p.V = V;
    p.h = static_cast<const T*>(a.input);
    p.W = static_cast<const T*>(a.weight);
    p.b = static_cast<const T*>(a.bias);
    p.w = static_cast<const T*>(a.class_weight);
    p.lam = static_cast<const T*>(a.lambda);
    p.row_scale = static_cast<const T*>(a.row_scale);
    p.target = a.target;
    p.target_b = a.target_b;
    p.pad = a.padding_idx;
    p.ignore = a.ignore_index;
    p.sw = detail::smooth_weights<T>(static_cast<T>(a.label_smoothing), V, a.off_target, a.padding_idx >= 0);
    p.z = static_cast<T>(a.z_loss);
    p.cap = static_cast<T>(a.softcap);
    p.loss = static_cast<T*>(a.row_loss);
    const Scratch aux_buf(ctx, sizeof(Aux));
    Aux* aux = aux_buf.as<Aux>();
    p.aux = aux;
    const bool mean = a.reduction == Reduction::Mean || a.reduction == Reduction::BatchMean;
    prepare(s, ctx, kOp, aux, N, V, a.target, a.target_b, p.lam, p.w, a.padding_idx, a.ignore_index, mean);

    T* dh = static_cast<T*>(a.grad_input);
    T* dW = static_cast<T*>(a.grad_weight);
    T* db = static_cast<T*>(a.grad_bias);
    const bool grads = dh || dW || db;
    if (N == 0) {
        // The first row block writes dW and db; without rows they are 0.
        if (dW) LSG_CUDA_CHECK(cudaMemsetAsync(dW, 0, static_cast<size_t>(V * H) * sizeof(T), s));
        if (db) LSG_CUDA_CHECK(cudaMemsetAsync(db, 0, static_cast<size_t>(V) * sizeof(T), s));
    } else {
        const Scratch state_buf(ctx, static_cast<size_t>(N) * sizeof(RowState<T>));
        const Scratch block_buf(ctx, static_cast<size_t>(BR * BV) * sizeof(T));
        p.st = state_buf.as<RowState<T>>();
        T* L = block_buf.as<T>();
        pivot_kernel<<<blocks_for(N, kPivotThreads / 32), kPivotThreads, 0, s>>>(p);
        LSG_CUDA_CHECK_LAUNCH();
        cublasHandle_t hd = cublas(ctx);
        const bool whole_rows = BV == V;
        const int threads = row_threads(BV);
        for (int64_t r0 = 0; r0 < N; r0 += BR) {
            const int64_t br = std::min(BR, N - r0);
            const T* h = p.h + r0 * H;
            for (int64_t v0 = 0; v0 < V; v0 += BV) {
                const int64_t bv = std::min(BV, V - v0);
                gemm<T>(hd, false, true, br, bv, H, h, H, p.W + v0 * H, H, T(0), L, bv);
                stats_kernel<<<row_blocks(br), threads, 0, s>>>(p, r0, br, v0, bv, L, whole_rows && grads,
                                                                v0 + bv == V);
                LSG_CUDA_CHECK_LAUNCH();
            }
            if (!grads) continue;
            for (int64_t v0 = 0; v0 < V; v0 += BV) {
                const int64_t bv = std::min(BV, V - v0);
                if (!whole_rows) gemm<T>(hd, false, true, br, bv, H, h, H, p.W + v0 * H, H, T(0), L, bv);
                grad_kernel<<<row_blocks(br), threads, 0, s>>>(p, r0, br, v0, bv, L, !whole_rows);
                LSG_CUDA_CHECK_LAUNCH();
                // The first class block writes dh's rows, the first row block dW's and db's.
                const T beta_h = v0 == 0 ? T(0) : T(1), beta_w = r0 == 0 ? T(0) : T(1);
                if (dh) gemm<T>(hd, false, false, br, H, bv, L, bv, p.W + v0 * H, H, beta_h, dh + r0 * H, H);
                if (dW) gemm<T>(hd, true, false, bv, H, br, L, bv, h, H, beta_w, dW + v0 * H, H);
                if (db) {
                    bias_grad_kernel<<<blocks_for(bv), kBlock, 0, s>>>(br, bv, L, db + v0, r0 == 0);
                    LSG_CUDA_CHECK_LAUNCH();
                }
            }
        }
    }
    if (a.reduction != Reduction::None) reduce_rows(s, N, p.loss, 1.0, aux, a.reduced);
}

class CudaLinearCrossEntropyKernels final : public LinearCrossEntropyKernels {
public:
    void forward(const KernelContext& ctx, const LinearCrossEntropyArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { forward_impl<T>(ctx, a); });
    }
};

}  // namespace

LinearCrossEntropyKernels& linear_cross_entropy_table() {
    static CudaLinearCrossEntropyKernels kernels;
    return kernels;
}

}  // namespace cuda
}  // namespace lsg

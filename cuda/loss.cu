// The CUDA loss kernels (ops/loss_kernels.h), computing with the shared arithmetic of
// ops/loss_math.h. The fused cross-entropy sizes its work to K:
//   - K ≤ 1024: a warp-aligned group of 1 to 32 lanes per row (about 8 logits per lane), so a warp
//     works on up to 32 rows at once (MNIST's K = 10: 16 rows per warp);
//   - K > 1024: a block per row (K = 32000 and up).
// A row is read once for its statistics (online max and Σ e^{x − max}, Σ w·(x − c), x_y) with
// 128-bit loads between a scalar head and tail, the group merges them in a fixed butterfly order,
// and when a gradient is wanted the same group writes it while the row is still in L1/L2, with
// streaming stores into its own buffer. Per-row losses land in a buffer that one block sums in
// double in a fixed order: no float atomics, the same bits on every run.
//
// A small preparing kernel runs first: it validates the targets (recording the first bad row and its
// value in the device's deferred error record, no device-side assert) and computes the Mean
// denominator and Σ w with the rules of ops/loss_math.h, so the fused kernel can scale the gradient
// without a host round trip. Nothing here waits for the device: the next synchronising call raises
// the recorded error as the CPU check's lsg::Error (see TargetError in device.h). The preparing
// kernel, the row statistics and the final sum are shared with the fused linear cross-entropy
// (loss_common.cuh). Every launcher issues on the stream of the KernelContext it is given.
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

// ---- row access ----------------------------------------------------------------------------------

// The 128-bit vector of an element type and its component-wise apply.
template <class T>
struct Vec128;
template <>
struct Vec128<float> {
    using type = float4;
    static constexpr int n = 4;
};
template <>
struct Vec128<double> {
    using type = double2;
    static constexpr int n = 2;
};

template <class Fn>
__device__ inline void each(float4 v, int64_t k, Fn& fn) {
    fn(k, v.x);
    fn(k + 1, v.y);
    fn(k + 2, v.z);
    fn(k + 3, v.w);
}
template <class Fn>
__device__ inline void each(double2 v, int64_t k, Fn& fn) {
    fn(k, v.x);
    fn(k + 1, v.y);
}
template <class Fn>
__device__ inline float4 map(float4 v, int64_t k, Fn& fn) {
    return {fn(k, v.x), fn(k + 1, v.y), fn(k + 2, v.z), fn(k + 3, v.w)};
}
template <class Fn>
__device__ inline double2 map(double2 v, int64_t k, Fn& fn) {
    return {fn(k, v.x), fn(k + 1, v.y)};
}

// Elements before the row's first 16-byte boundary.
template <class T>
__device__ inline int64_t head_of(const T* row, int64_t K) {
    const int64_t past = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % 16) / static_cast<int64_t>(sizeof(T));
    const int64_t head = past ? Vec128<T>::n - past : 0;
    return head < K ? head : K;
}

// Calls fn(k, x_k) for the elements of row [0, K) dealt to `lane` of `lanes` cooperating threads: a
// scalar head up to a 16-byte boundary, 128-bit loads, a scalar tail.
template <class T, class Fn>
__device__ inline void for_row(const T* row, int64_t K, int lane, int lanes, Fn&& fn) {
    using V = Vec128<T>;
    const int64_t head = head_of(row, K);
    for (int64_t k = lane; k < head; k += lanes) fn(k, row[k]);
    const int64_t nv = (K - head) / V::n;
    const auto* vp = reinterpret_cast<const typename V::type*>(row + head);
    for (int64_t v = lane; v < nv; v += lanes) each(vp[v], head + v * V::n, fn);
    for (int64_t k = head + nv * V::n + lane; k < K; k += lanes) fn(k, row[k]);
}

// out[k] = fn(k, x_k) over the same elements, with streaming stores (the gradient is not read
// again by this kernel, so it should not evict the logits): 128-bit when out has the row's
// alignment, else scalar.
template <class T, class Fn>
__device__ inline void map_row(const T* row, T* out, int64_t K, int lane, int lanes, Fn&& fn) {
    using V = Vec128<T>;
    if ((reinterpret_cast<uintptr_t>(row) ^ reinterpret_cast<uintptr_t>(out)) % 16 != 0) {
        for (int64_t k = lane; k < K; k += lanes) __stcs(out + k, fn(k, row[k]));
        return;
    }
    const int64_t head = head_of(row, K);
    for (int64_t k = lane; k < head; k += lanes) __stcs(out + k, fn(k, row[k]));
    const int64_t nv = (K - head) / V::n;
    const auto* vp = reinterpret_cast<const typename V::type*>(row + head);
    auto* op = reinterpret_cast<typename V::type*>(out + head);
    for (int64_t v = lane; v < nv; v += lanes) __stcs(op + v, map(vp[v], head + v * V::n, fn));
    for (int64_t k = head + nv * V::n + lane; k < K; k += lanes) __stcs(out + k, fn(k, row[k]));
}

// ---- groups of threads sharing a row -------------------------------------------------------------

// `width` lanes of one warp (a power of two up to 32, aligned), reducing by butterfly.
struct LaneGroup {
    int lane, size;
    unsigned mask;
    template <class V, class Op>
    __device__ V reduce(V v, Op op) const {
        return group_reduce(v, op, size, mask);
    }
};

// A whole block; `smem` holds 32 values of the largest type reduced.
struct BlockGroup {
    int lane, size;
    void* smem;
    template <class V, class Op>
    __device__ V reduce(V v, Op op) const {
        return block_reduce(v, op, static_cast<V*>(smem));
    }
};

// Lanes per row for K ≤ kMaxWarpK: about 8 logits per lane (two 128-bit loads), at most a warp.
constexpr int64_t kMaxWarpK = 1024;
constexpr int kRowsThreads = 256;
int lanes_for(int64_t K) {
    int w = 1;
    while (w < 32 && w * 8 < K) w *= 2;
    return w;
}
// Threads of the block-per-row kernels: more loads in flight for the longest rows.
int block_threads(int64_t K) { return K >= 16384 ? 512 : 256; }

// Runs fn(group, row) for every row with the launch shape of K: `width` lanes per row (≤ 32) or,
// with width 0, the whole block per row.
template <class Fn>
__device__ inline void for_each_row(int64_t N, int width, Fn&& fn) {
    if (width == 0) {
        __shared__ alignas(16) unsigned char smem[32 * 32];
        const BlockGroup g{static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), smem};
        for (int64_t row = blockIdx.x; row < N; row += gridDim.x) fn(g, row);
        return;
    }
    const int per_block = blockDim.x / width;
    const int first = threadIdx.x % 32 / width * width;  // the group's first lane in its warp
    const LaneGroup g{static_cast<int>(threadIdx.x) % width, width,
                      width == 32 ? 0xffffffffu : ((1u << width) - 1u) << first};
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / width; row < N;
         row += static_cast<int64_t>(gridDim.x) * per_block)
        fn(g, row);
}

struct Launch {
    unsigned blocks;
    int threads;
    int width;  // 0: a block per row
};
Launch row_launch(int64_t N, int64_t K) {
    if (K > kMaxWarpK) {
        return {static_cast<unsigned>(std::clamp<int64_t>(N, 1, int64_t(1) << 20)), block_threads(K), 0};
    }
    const int width = lanes_for(K);
    const int64_t per_block = kRowsThreads / width;
    return {static_cast<unsigned>(std::clamp<int64_t>((N + per_block - 1) / per_block, 1, int64_t(1) << 20)),
            kRowsThreads, width};
}

// ---- index-target cross-entropy ----------------------------------------------------------------------

template <class T>
struct CeIndex {
    int64_t N, K;
    const T* x;
    const int64_t* target;
    const T* w;  // or null
    SmoothWeights<T> sw;
    int64_t pad, ignore;
    T sum_w;  // without weights; with weights aux->sum_w
    const Aux* aux;
    T* loss;
    T* lse;   // or null
    T* grad;  // or null
};

template <class T>
__global__ void __launch_bounds__(512, 1) ce_index_kernel(CeIndex<T> p, int width) {
    for_each_row(p.N, width, [&](const auto& g, int64_t i) {
        const T* x = p.x + i * p.K;
        const int64_t y = p.target[i];
        const bool skip = detail::index_row_skipped(y, p.ignore, p.pad) || y < 0 || y >= p.K;
        const T x_y = skip ? T(0) : x[y];
        const T pivot = detail::ce_pivot(x_y);
        RowStats<T> r{detail::lm_neg_inf<T>(), T(0), T(0)};
        for_row(x, p.K, g.lane, g.size, [&](int64_t k, T v) {
            LseState<T> st{r.m, r.s};
            detail::lse_update(st, v);
            r.m = st.m;
            r.s = st.s;
            if (k != p.pad) r.sdx += (p.w ? p.w[k] : T(1)) * (v - pivot);
        });
        r = g.reduce(r, MergeStats{});
        const LseState<T> st{r.m, r.s};
        if (p.lse && g.lane == 0) p.lse[i] = detail::lse_value(st);
        T* gi = p.grad ? p.grad + i * p.K : nullptr;
        if (skip) {
            if (g.lane == 0) p.loss[i] = T(0);
            if (gi) map_row(x, gi, p.K, g.lane, g.size, [](int64_t, T) { return T(0); });
            return;
        }
        const T w_y = p.w ? p.w[y] : T(1);
        const T sum_w = p.w ? static_cast<T>(p.aux->sum_w) : p.sum_w;
        if (g.lane == 0)
            p.loss[i] = detail::ce_row_loss(p.sw, detail::lse_minus(st, pivot), x_y - pivot, w_y, sum_w, r.sdx);
        if (!gi) return;
        const T W = detail::ce_row_mass(p.sw, w_y, sum_w);
        const T log_s = detail::lm_log(st.s);
        const T scale = static_cast<T>(p.aux->inv_denom);
        map_row(x, gi, p.K, g.lane, g.size, [&](int64_t k, T v) {
            return detail::ce_grad(scale, W, detail::softmax_prob(v, st.m, log_s),
                                   detail::smooth_target(p.sw, k, y, p.pad), p.w ? p.w[k] : T(1));
        });
    });
}

// ---- probability-target cross-entropy ------------------------------------------------------------------

template <class T>
struct CeProb {
    int64_t N, K;
    const T* x;
    const T* t;
    const T* w;  // or null
    T keep, spread;  // t' = t·keep + spread
    T scale;         // gradient scale, the Mean division included
    T* loss;
    T* lse;     // or null
    T* grad;    // or null
    T* grad_t;  // or null
};

template <class T>
__global__ void __launch_bounds__(512, 1) ce_prob_kernel(CeProb<T> p, int width) {
    for_each_row(p.N, width, [&](const auto& g, int64_t i) {
        const T* x = p.x + i * p.K;
        const T* t = p.t + i * p.K;
        RowStats<T> r{detail::lm_neg_inf<T>(), T(0), T(0)};
        for_row(x, p.K, g.lane, g.size, [&](int64_t, T v) {
            LseState<T> st{r.m, r.s};
            detail::lse_update(st, v);
            r.m = st.m;
            r.s = st.s;
        });
        r = g.reduce(r, MergeStats{});
        const T log_s = detail::lm_log(r.s);
        if (p.lse && g.lane == 0) p.lse[i] = r.m + log_s;
        // A zero target weight contributes 0 even where x = −inf. The loss and W run in double: W's
        // rounding would show in every gradient element.
        Sums lw{0.0, 0.0};
        for_row(x, p.K, g.lane, g.size, [&](int64_t k, T v) {
            const T q = detail::prob_target(t[k], p.keep, p.spread) * (p.w ? p.w[k] : T(1));
            lw.a += static_cast<double>(detail::ce_prob_term(q, v, r.m, log_s));
            lw.b += static_cast<double>(q);
        });
        lw = g.reduce(lw, AddSums{});
        if (g.lane == 0) p.loss[i] = static_cast<T>(lw.a);
        const T W = static_cast<T>(lw.b);
        if (p.grad)
            map_row(x, p.grad + i * p.K, p.K, g.lane, g.size, [&](int64_t k, T v) {
                return detail::ce_grad(p.scale, W, detail::softmax_prob(v, r.m, log_s),
                                       detail::prob_target(t[k], p.keep, p.spread), p.w ? p.w[k] : T(1));
            });
        if (p.grad_t)
            map_row(x, p.grad_t + i * p.K, p.K, g.lane, g.size, [&](int64_t k, T v) {
                return p.scale * p.keep * (p.w ? p.w[k] : T(1)) * detail::neg_log_prob(v, r.m, log_s);
            });
    });
}

// ---- pointwise kernels ------------------------------------------------------------------------------

template <class T>
__global__ void scale_rows_kernel(int64_t rows, int64_t cols, const T* G, const T* g, bool per_row, T* out) {
    for (int64_t k = grid_index(); k < rows * cols; k += grid_stride()) out[k] = G[k] * (per_row ? g[k / cols] : g[0]);
}

// Thread k of N·K' (K' = K with a gradient, else 1) handles element (k / K', k % K'); column 0 also
// writes the row's loss.
template <class T>
__global__ void nll_kernel(int64_t N, int64_t K, const T* lp, const int64_t* target, const T* w, int64_t ignore,
                           T* loss, T* grad, const Aux* aux) {
    const int64_t cols = grad ? K : 1;
    for (int64_t k = grid_index(); k < N * cols; k += grid_stride()) {
        const int64_t i = k / cols, j = k % cols;
        const int64_t y = target[i];
        const bool skip = detail::index_row_skipped(y, ignore, -1) || y < 0 || y >= K;
        const T w_y = skip ? T(0) : (w ? w[y] : T(1));
        if (j == 0) loss[i] = skip ? T(0) : -w_y * lp[i * K + y];
        if (grad) grad[k] = (!skip && j == y) ? -static_cast<T>(aux->inv_denom) * w_y : T(0);
    }
}

template <class T>
__global__ void kl_div_kernel(int64_t n, const T* input, const T* target, bool log_target, T* out, T scale, T* gi,
                              T* gt) {
    for (int64_t i = grid_index(); i < n; i += grid_stride())
        detail::kl_element(i, input, target, log_target, scale, out, gi, gt);
}

template <class T>
__global__ void bce_kernel(int64_t n, int64_t inner, const T* x, const T* t, const T* pw, const T* w,
                           detail::BinarySmoothing<T> sm, T* out, T scale, T* gx, T* gt) {
    for (int64_t i = grid_index(); i < n; i += grid_stride())
        detail::bce_element(i, inner, x, t, pw, w, sm, scale, out, gx, gt);
}

// ---- launchers -------------------------------------------------------------------------------------------

bool is_mean(Reduction r) { return r == Reduction::Mean || r == Reduction::BatchMean; }

template <class T>
void cross_entropy_index_impl(const KernelContext& ctx, const CrossEntropyIndexArgs& a) {
    cudaStream_t s = stream(ctx);
    const Scratch aux_buf(ctx, sizeof(Aux));
    Aux* aux = aux_buf.as<Aux>();
    const T* w = static_cast<const T*>(a.weight);
    prepare(s, ctx, "cross_entropy", aux, a.rows, a.classes, a.target, nullptr, static_cast<const T*>(nullptr), w,
            a.padding_idx, a.ignore_index, is_mean(a.reduction));
    if (a.rows > 0) {
        CeIndex<T> p{};
        p.N = a.rows;
        p.K = a.classes;
        p.x = static_cast<const T*>(a.logits);
        p.target = a.target;
        p.w = w;
        p.sw = detail::smooth_weights<T>(static_cast<T>(a.label_smoothing), a.classes, a.off_target, a.padding_idx >= 0);
        p.pad = a.padding_idx;
        p.ignore = a.ignore_index;
        p.sum_w = static_cast<T>(a.classes - (a.padding_idx >= 0 ? 1 : 0));
        p.aux = aux;
        p.loss = static_cast<T*>(a.row_loss);
        p.lse = static_cast<T*>(a.lse);
        p.grad = static_cast<T*>(a.grad);
        const Launch l = row_launch(a.rows, a.classes);
        ce_index_kernel<<<l.blocks, l.threads, 0, s>>>(p, l.width);
        LSG_CUDA_CHECK_LAUNCH();
    }
    if (a.reduction != Reduction::None) reduce_rows(s, a.rows, static_cast<const T*>(a.row_loss), 1.0, aux, a.reduced);
}

template <class T>
void cross_entropy_prob_impl(const KernelContext& ctx, const CrossEntropyProbArgs& a) {
    cudaStream_t s = stream(ctx);
    const double inv = detail::reduction_scale(is_mean(a.reduction), static_cast<double>(a.rows));
    if (a.rows > 0) {
        CeProb<T> p{};
        p.N = a.rows;
        p.K = a.classes;
        p.x = static_cast<const T*>(a.logits);
        p.t = static_cast<const T*>(a.target);
        p.w = static_cast<const T*>(a.weight);
        p.keep = static_cast<T>(1.0 - a.label_smoothing);
        p.spread = static_cast<T>(a.label_smoothing / static_cast<double>(a.classes));
        p.scale = static_cast<T>(inv);
        p.loss = static_cast<T*>(a.row_loss);
        p.lse = static_cast<T*>(a.lse);
        p.grad = static_cast<T*>(a.grad);
        p.grad_t = static_cast<T*>(a.grad_target);
        const Launch l = row_launch(a.rows, a.classes);
        ce_prob_kernel<<<l.blocks, l.threads, 0, s>>>(p, l.width);
        LSG_CUDA_CHECK_LAUNCH();
    }
    if (a.reduction != Reduction::None) reduce_rows(s, a.rows, static_cast<const T*>(a.row_loss), inv, nullptr, a.reduced);
}

template <class T>
void nll_impl(const KernelContext& ctx, const NllLossArgs& a) {
    cudaStream_t s = stream(ctx);
    const Scratch aux_buf(ctx, sizeof(Aux));
    Aux* aux = aux_buf.as<Aux>();
    const T* w = static_cast<const T*>(a.weight);
    T* loss = static_cast<T*>(a.row_loss);
    T* grad = static_cast<T*>(a.grad);
    prepare(s, ctx, "nll_loss", aux, a.rows, a.classes, a.target, nullptr, static_cast<const T*>(nullptr), w, -1,
            a.ignore_index, is_mean(a.reduction));
    const int64_t work = a.rows * (grad ? a.classes : 1);
    if (work > 0) {
        nll_kernel<<<blocks_for(work), kBlock, 0, s>>>(a.rows, a.classes, static_cast<const T*>(a.log_probs), a.target,
                                                       w, a.ignore_index, loss, grad, aux);
        LSG_CUDA_CHECK_LAUNCH();
    }
    if (a.reduction != Reduction::None) reduce_rows(s, a.rows, loss, 1.0, aux, a.reduced);
}

class CudaLossKernels final : public LossKernels {
public:
    void cross_entropy_index(const KernelContext& ctx, const CrossEntropyIndexArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { cross_entropy_index_impl<T>(ctx, a); });
    }
    void cross_entropy_prob(const KernelContext& ctx, const CrossEntropyProbArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { cross_entropy_prob_impl<T>(ctx, a); });
    }
    void scale_rows(const KernelContext& ctx, const ScaleRowsArgs& a) override {
        if (a.rows * a.cols == 0) return;
        cudaStream_t s = stream(ctx);
        visit_dtype<float, double>(a.dtype, [&]<class T>() {
            scale_rows_kernel<<<blocks_for(a.rows * a.cols), kBlock, 0, s>>>(
                a.rows, a.cols, static_cast<const T*>(a.saved_grad), static_cast<const T*>(a.upstream), a.per_row,
                static_cast<T*>(a.out));
        });
        LSG_CUDA_CHECK_LAUNCH();
    }
    void nll_loss(const KernelContext& ctx, const NllLossArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { nll_impl<T>(ctx, a); });
    }
    void sum(const KernelContext& ctx, const SumArgs& a) override {
        cudaStream_t s = stream(ctx);
        visit_dtype<float, double>(
            a.dtype, [&]<class T>() { reduce_rows(s, a.n, static_cast<const T*>(a.x), a.scale, nullptr, a.out); });
    }
    void kl_div(const KernelContext& ctx, const KlDivArgs& a) override {
        if (a.n == 0) return;
        cudaStream_t s = stream(ctx);
        visit_dtype<float, double>(a.dtype, [&]<class T>() {
            kl_div_kernel<<<blocks_for(a.n), kBlock, 0, s>>>(
                a.n, static_cast<const T*>(a.input), static_cast<const T*>(a.target), a.log_target,
                static_cast<T*>(a.out), static_cast<T>(a.scale), static_cast<T*>(a.grad_input),
                static_cast<T*>(a.grad_target));
        });
        LSG_CUDA_CHECK_LAUNCH();
    }
    void bce_with_logits(const KernelContext& ctx, const BceWithLogitsArgs& a) override {
        const int64_t n = a.outer * a.inner;
        if (n == 0) return;
        cudaStream_t s = stream(ctx);
        visit_dtype<float, double>(a.dtype, [&]<class T>() {
            bce_kernel<<<blocks_for(n), kBlock, 0, s>>>(
                n, a.inner, static_cast<const T*>(a.input), static_cast<const T*>(a.target),
                static_cast<const T*>(a.pos_weight), static_cast<const T*>(a.weight),
                detail::binary_smoothing<T>(a.label_smoothing), static_cast<T*>(a.out), static_cast<T>(a.scale),
                static_cast<T*>(a.grad_input), static_cast<T*>(a.grad_target));
        });
        LSG_CUDA_CHECK_LAUNCH();
    }
};

}  // namespace

LossKernels& loss_table() {
    static CudaLossKernels kernels;
    return kernels;
}

}  // namespace cuda
}  // namespace lsg

// The CPU kernel of the fused linear cross-entropy (ops/linear_cross_entropy.h has the formula).
//
// For each block of rows [r0, r1):
//   pass 1, for each block of classes [v0, v1): the logits L = h[r0:r1]·W[v0:v1]ᵀ (+ b, soft-capped)
//     through the packed GEMM (ops/gemm.h, OpenMP inside), then per row (rows in parallel) the
//     block's max and Σ e^{x − max} merged into the row's online log-sum-exp (detail::lse_merge),
//     Σ w_k·(x_k − c) and the target logits;
//   the row losses (detail::parts_row_loss: ce_row_loss per target part, plus z·lse²);
//   pass 2 (only with gradients), for each block of classes: the logits again (unless the block
//     holds whole rows: then they are still in the buffer), the gradient G in place of them
//     (detail::linear_ce_grad), then dh[r0:r1] += G·W[v0:v1], dW[v0:v1] += Gᵀ·h[r0:r1] and db[v0:v1] += Σ G
//     before the next block overwrites the buffer.
// When the block holds whole rows and there is no soft-cap, pass 1 leaves e^{x − max} in the buffer,
// so each logit costs one exponential. Every sum runs in a fixed order: a seeded run is
// bit-identical at a fixed thread count (the GEMM's sums do not depend on it at all).
#include <algorithm>
#include <cmath>
#include <vector>

#include "lsgrad/core/parallel.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/gemm.h"
#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/ops/loss_math.h"

namespace lsg {
namespace {

using detail::LseState;
using detail::SmoothWeights;
using detail::TargetParts;

// Below this many logits per block the per-row work runs on the calling thread.
constexpr int64_t kParallelMinWork = 32768;
// Columns per task when the bias gradient sums a block's rows.
constexpr int64_t kBiasColumns = 1024;

template <class T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
          T beta, T* c, int64_t ldc) {
    if constexpr (sizeof(T) == sizeof(float))
        detail::gemm_f32(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    else
        detail::gemm_f64(ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

// The per-call constants and the per-row state of one call.
template <class T>
struct Call {
    const LinearCrossEntropyArgs& a;
    int64_t N, H, V;
    const T* h;
    const T* W;
    const T* b;
    const T* w;  // class weights or null
    const T* lam;
    const T* row_scale;
    SmoothWeights<T> sw;
    T sum_w;  // Σ_{k ≠ pad} w_k
    T z, cap;
    double scale;  // the reduction's factor
    // Per row: the online lse, the pivot c, Σ_{k ≠ pad} w_k·(x_k − c), and the logits at the two
    // targets.
    std::vector<LseState<T>> st;
    std::vector<T> pivot, sdx, xa, xb;

    explicit Call(const LinearCrossEntropyArgs& args) : a(args) {}

    TargetParts parts(int64_t i) const {
        return detail::target_parts(a.target, a.target_b, lam, i, V, a.ignore_index, a.padding_idx);
    }
    T weight_of(int64_t k) const { return w ? w[k] : T(1); }
};

// The soft-capped logit h_i·W_y + b_y of one row: the pivot of the row's sums.
template <class T>
T target_logit(const Call<T>& c, int64_t i, int64_t y) {
    const T* hi = c.h + i * c.H;
    const T* wy = c.W + y * c.H;
    T u = T(0);
    for (int64_t j = 0; j < c.H; ++j) u += hi[j] * wy[j];
    if (c.b) u += c.b[y];
    return detail::softcap(u, c.cap);
}

// L [br, bv] = h[r0:r0+br]·W[v0:v0+bv]ᵀ + b[v0:], soft-capped.
template <class T>
void block_logits(const Call<T>& c, int64_t r0, int64_t br, int64_t v0, int64_t bv, T* L, bool parallel) {
    gemm<T>(false, true, br, bv, c.H, c.h + r0 * c.H, c.H, c.W + v0 * c.H, c.H, T(0), L, bv);
    if (!c.b && c.cap == T(0)) return;
    guarded_parallel_for(br, parallel, [&](int64_t r) {
        T* x = L + r * bv;
        if (c.b)
            for (int64_t k = 0; k < bv; ++k) x[k] += c.b[v0 + k];
        if (c.cap > T(0))
            for (int64_t k = 0; k < bv; ++k) x[k] = detail::softcap(x[k], c.cap);
    });
}

// Pass 1 on row i's block x [bv] (classes v0..): merges its statistics into row i's state. With
// keep_exp (the block is the whole row), x is replaced by e^{x − max} for the gradient.
template <class T>
void row_stats(Call<T>& c, int64_t i, T* x, int64_t v0, int64_t bv, bool keep_exp) {
    // The simd reductions reassociate (a fixed order for a given build and CPU); a NaN the max may
    // pass over still reaches s through its exponential.
    T m = detail::lm_neg_inf<T>();
#pragma omp simd reduction(max : m)
    for (int64_t k = 0; k < bv; ++k) m = x[k] > m ? x[k] : m;
    const T piv = c.pivot[i];
    const int64_t pad = c.a.padding_idx;
    T dx = T(0);
    if (c.w) {
#pragma omp simd reduction(+ : dx)
        for (int64_t k = 0; k < bv; ++k) dx += c.w[v0 + k] * (x[k] - piv);
    } else {
#pragma omp simd reduction(+ : dx)
        for (int64_t k = 0; k < bv; ++k) dx += x[k] - piv;
    }
    // The padding class is outside Σ w·(x − c); a masked (−inf) padding logit is recomputed
    // without rather than subtracted (which would give NaN).
    if (pad >= v0 && pad < v0 + bv) {
        const T xp = x[pad - v0];
        if (xp != detail::lm_neg_inf<T>()) {
            dx -= c.weight_of(pad) * (xp - piv);
        } else {
            dx = T(0);
            for (int64_t k = 0; k < bv; ++k)
                if (v0 + k != pad) dx += c.weight_of(v0 + k) * (x[k] - piv);
        }
    }
    c.sdx[i] += dx;
    for (int which = 0; which < 2; ++which) {
        const int64_t y = which == 0 ? c.a.target[i] : (c.a.target_b ? c.a.target_b[i] : -1);
        if (y >= v0 && y < v0 + bv) (which == 0 ? c.xa : c.xb)[i] = x[y - v0];
    }
    T s = T(0);
    if (m == detail::lm_neg_inf<T>()) {
        // Only masked logits, or NaNs the max passed over: s is 0, or NaN.
        for (int64_t k = 0; k < bv; ++k)
            if (x[k] != x[k]) s = x[k];
    } else if constexpr (sizeof(T) == sizeof(float)) {
        s = detail::exp_shift_sum_f32(x, bv, m, keep_exp ? x : nullptr);
    } else {
        for (int64_t k = 0; k < bv; ++k) {
            const T e = detail::lm_exp_normal(x[k] - m);
            if (keep_exp) x[k] = e;
            s += e;
        }
    }
    c.st[i] = detail::lse_merge(c.st[i], LseState<T>{m, s});
}

// Row i's loss from its finished statistics.
template <class T>
T row_loss(const Call<T>& c, int64_t i) {
    const T x_y[2] = {c.xa[i], c.xb[i]};
    return detail::parts_row_loss(c.sw, c.parts(i), c.st[i], c.pivot[i], x_y, c.w, c.sum_w, c.sdx[i], c.z);
}

// Pass 2 on row i's block: x [bv] holds its logits (or, with from_exp, e^{x − m_block} with m_block
// the row's max when the block is the whole row) and becomes its gradient.
template <class T>
void row_grad(const Call<T>& c, int64_t i, T* x, int64_t v0, int64_t bv, bool from_exp) {
    const LseState<T> st = c.st[i];
    const TargetParts parts = c.parts(i);
    const detail::PartsGrad<T> pg = detail::parts_grad(c.sw, parts, st, c.w, c.sum_w, c.z);
    if (!pg.counts) {
        std::fill(x, x + bv, T(0));
        return;
    }
    const T scale = static_cast<T>(c.scale) * (c.row_scale ? c.row_scale[i] : T(1));
    const T Wz = pg.mass, off = pg.off;
    const T log_s = detail::lm_log(st.s);
    const T inv_s = T(1) / st.s;
    auto prob = [&](T xk) { return from_exp ? xk * inv_s : detail::softmax_prob(xk, st.m, log_s); };
    const int64_t specials[3] = {c.a.target[i], c.a.target_b ? c.a.target_b[i] : -1, c.a.padding_idx};
    T fixed[3] = {};
    for (int j = 0; j < 3; ++j) {
        const int64_t k = specials[j];
        if (k >= v0 && k < v0 + bv) {
            const T xk = x[k - v0];
            const T q = detail::parts_target(c.sw, parts, k, c.a.padding_idx);
            fixed[j] = detail::linear_ce_grad(scale, Wz, prob(xk), q, c.weight_of(k), xk, c.cap);
        }
    }
    if (c.cap > T(0)) {
        for (int64_t k = 0; k < bv; ++k)
            x[k] = detail::linear_ce_grad(scale, Wz, prob(x[k]), off, c.weight_of(v0 + k), x[k], c.cap);
    } else if (from_exp) {
        const T sp = scale * Wz * inv_s, so = scale * off;
        if (c.w)
            for (int64_t k = 0; k < bv; ++k) x[k] = sp * x[k] - so * c.w[v0 + k];
        else
            for (int64_t k = 0; k < bv; ++k) x[k] = sp * x[k] - so;
    } else {
        for (int64_t k = 0; k < bv; ++k)
            x[k] = detail::ce_grad(scale, Wz, detail::softmax_prob(x[k], st.m, log_s), off, c.weight_of(v0 + k));
    }
    for (int j = 0; j < 3; ++j) {
        const int64_t k = specials[j];
        if (k >= v0 && k < v0 + bv) x[k - v0] = fixed[j];
    }
}

template <class T>
void forward_impl(const LinearCrossEntropyArgs& a) {
    Call<T> c(a);
    c.N = a.rows;
    c.H = a.hidden;
    c.V = a.classes;
    c.h = static_cast<const T*>(a.input);
    c.W = static_cast<const T*>(a.weight);
    c.b = static_cast<const T*>(a.bias);
    c.w = static_cast<const T*>(a.class_weight);
    c.lam = static_cast<const T*>(a.lambda);
    c.row_scale = static_cast<const T*>(a.row_scale);
    const int64_t N = c.N, H = c.H, V = c.V, pad = a.padding_idx;
    c.sw = detail::smooth_weights<T>(static_cast<T>(a.label_smoothing), V, a.off_target, pad >= 0);
    double sum_w = 0.0, D = 0.0;
    for (int64_t k = 0; k < V; ++k) sum_w += detail::class_mass_term(c.w, k, pad);
    c.sum_w = static_cast<T>(sum_w);
    c.z = static_cast<T>(a.z_loss);
    c.cap = static_cast<T>(a.softcap);
    for (int64_t i = 0; i < N; ++i) D += detail::parts_denominator_term(c.parts(i), c.w, a.ignore_index, pad);
    const bool mean = a.reduction == Reduction::Mean || a.reduction == Reduction::BatchMean;
    c.scale = detail::reduction_scale(mean, D);

    T* loss = static_cast<T*>(a.row_loss);
    T* dh = static_cast<T*>(a.grad_input);
    T* dW = static_cast<T*>(a.grad_weight);
    T* db = static_cast<T*>(a.grad_bias);
    const bool grads = dh || dW || db;
    // The first row block writes dW and db, the later ones add to them; without rows they are 0.
    if (N == 0 && dW) std::fill(dW, dW + V * H, T(0));
    if (N == 0 && db) std::fill(db, db + V, T(0));

    const int64_t BR = std::min(a.chunk_rows, std::max<int64_t>(N, 1));
    const int64_t BV = std::min(a.chunk_classes, V);
    const bool whole_rows = BV == V;
    const bool keep_exp = whole_rows && grads && c.cap == T(0);
    // Staged: one row block split into class chunks, with dW asked for and N ≤ H. A chunk's logits
    // [N, bv] then fit in the rows of dW that the chunk's gradient will overwrite (bv·H elements), so
    // pass 1 leaves them there and pass 2 reads them back instead of recomputing them: three
    // products, as unfused, with the workspace block holding one chunk's gradient.
    const bool staged = dW && N > 0 && BR >= N && !whole_rows && N <= H;
    Tensor block = empty({BR * BV}, {.dtype = a.dtype});
    T* L = block.data<T>();
    c.st.assign(size_t(N), detail::lse_init<T>());
    c.pivot.assign(size_t(N), T(0));
    c.sdx.assign(size_t(N), T(0));
    c.xa.assign(size_t(N), T(0));
    c.xb.assign(size_t(N), T(0));
    guarded_parallel_for(N, N * H >= kParallelMinWork, [&](int64_t i) {
        const int64_t y = detail::pivot_class(c.parts(i));
        c.pivot[i] = y >= 0 ? detail::ce_pivot(target_logit(c, i, y)) : T(0);
    });

    // The gradient products of the block G = L [br, bv] (rows r0.., classes v0..): dh += G·W,
    // dW = or += Gᵀ·h (the first row block writes; staged, the chunk's rows of dW, already copied
    // out), db likewise.
    auto fold = [&](int64_t r0, int64_t br, int64_t v0, int64_t bv, bool par) {
        if (dh) gemm<T>(false, false, br, H, bv, L, bv, c.W + v0 * H, H, v0 == 0 ? T(0) : T(1), dh + r0 * H, H);
        if (dW) gemm<T>(true, false, bv, H, br, L, bv, c.h + r0 * H, H, r0 == 0 ? T(0) : T(1), dW + v0 * H, H);
        if (db) {
            const int64_t tiles = (bv + kBiasColumns - 1) / kBiasColumns;
            guarded_parallel_for(tiles, par, [&](int64_t t) {
                const int64_t k0 = t * kBiasColumns, k1 = std::min(bv, k0 + kBiasColumns);
                if (r0 == 0) std::fill(db + v0 + k0, db + v0 + k1, T(0));
                for (int64_t r = 0; r < br; ++r) {
                    const T* g = L + r * bv;
                    for (int64_t k = k0; k < k1; ++k) db[v0 + k] += g[k];
                }
            });
        }
    };

    // Where pass 1 leaves the logits of the class chunk at v0: the block, or (staged) the chunk's rows
    // of dW, from which pass 2 copies them into the block.
    auto logits_of = [&](int64_t v0) { return staged ? dW + v0 * H : L; };
    for (int64_t r0 = 0; r0 < N; r0 += BR) {
        const int64_t br = std::min(BR, N - r0);
        const bool par = br >= 2 && br * BV >= kParallelMinWork;
        for (int64_t v0 = 0; v0 < V; v0 += BV) {
            const int64_t bv = std::min(BV, V - v0);
            T* X = logits_of(v0);
            block_logits(c, r0, br, v0, bv, X, par);
            guarded_parallel_for(br, par, [&](int64_t r) { row_stats(c, r0 + r, X + r * bv, v0, bv, keep_exp); });
        }
        for (int64_t i = r0; i < r0 + br; ++i) loss[i] = row_loss(c, i);
        if (!grads) continue;
        for (int64_t v0 = 0; v0 < V; v0 += BV) {
            const int64_t bv = std::min(BV, V - v0);
            const T* X = logits_of(v0);
            if (!whole_rows && !staged) block_logits(c, r0, br, v0, bv, L, par);
            guarded_parallel_for(br, par, [&](int64_t r) {
                if (staged) std::copy(X + r * bv, X + (r + 1) * bv, L + r * bv);
                row_grad(c, r0 + r, L + r * bv, v0, bv, keep_exp);
            });
            fold(r0, br, v0, bv, par);
        }
    }
    if (a.reduction != Reduction::None) {
        double s = 0.0;
        for (int64_t i = 0; i < N; ++i) s += static_cast<double>(loss[i]);
        *static_cast<T*>(a.reduced) = static_cast<T>(s * c.scale);
    }
}

class CpuLinearCrossEntropyKernels final : public LinearCrossEntropyKernels {
public:
    void forward(const KernelContext&, const LinearCrossEntropyArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { forward_impl<T>(a); });
    }
};

}  // namespace

LinearCrossEntropyKernels& cpu_linear_cross_entropy_kernels() {
    static CpuLinearCrossEntropyKernels kernels;
    return kernels;
}

}  // namespace lsg

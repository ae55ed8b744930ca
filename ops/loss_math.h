// The arithmetic of the loss layer, per element and per row, shared by the CPU kernels
// (ops/loss_cpu.cpp) and the CUDA kernels: the same inline functions run on both, so the CPU tests
// check the arithmetic the GPU runs. Only plain C math functions (expf, log1p, ...) and no
// exceptions: everything here must compile as device code.
//
// Notation: a row x_0..x_{K-1} of logits, y its class index, ε the smoothing factor, w_k optional
// class weights (1 without), p = softmax(x), lse = log Σ_k e^{x_k}.
#pragma once

#include <math.h>
#include <stdint.h>

#include "lsgrad/core/hostdevice.h"

namespace lsg::detail {

// ---- overloads of the C math functions by precision ----------------------------------------
LSG_HD inline float lm_exp(float x) { return expf(x); }
LSG_HD inline double lm_exp(double x) { return ::exp(x); }
LSG_HD inline float lm_log(float x) { return logf(x); }
LSG_HD inline double lm_log(double x) { return ::log(x); }
LSG_HD inline float lm_log1p(float x) { return log1pf(x); }
LSG_HD inline double lm_log1p(double x) { return ::log1p(x); }
LSG_HD inline float lm_tanh(float x) { return tanhf(x); }
LSG_HD inline double lm_tanh(double x) { return ::tanh(x); }
template <class T>
LSG_HD inline T lm_neg_inf() {
    return -static_cast<T>(INFINITY);
}

// The log-sum-exp and softmax arithmetic never produces a subnormal number: on many x86 CPUs each
// one costs a microcode assist (a 4.7x slower (8192, 10) cross-entropy on an Intel Xeon). Below
// lm_exp_floor, e^x is taken as exactly 0 instead: e^−87 = 1.6e−38 is just above float's smallest
// normal number 1.18e−38 (e^−708 = 3.3e−308 above double's 2.2e−308), so what is dropped is below
// the smallest normal number, far below any rounding of a row sum ≥ 1. The vector kernels' exp
// approximations select 0 below the same floor.
LSG_HD constexpr float lm_exp_floor(float) { return -87.0f; }
LSG_HD constexpr double lm_exp_floor(double) { return -708.0; }
// e^x when it is a normal number (or +inf, or NaN for NaN), else exactly 0.
template <class T>
LSG_HD inline T lm_exp_normal(T x) {
    return x < lm_exp_floor(x) ? T(0) : lm_exp(x);
}

// ---- online log-sum-exp ---------------------------------------------------------------------
// The running state of lse over the elements seen so far: m their maximum, s = Σ e^{x − m}.
// Masked elements (−inf) contribute e^{−inf} = 0 and never form −inf − (−inf); a row of only −inf
// keeps m = −inf, s = 0, so lse = −inf rather than NaN. A NaN element makes s NaN (the row's result
// is NaN and nothing else is touched).
template <class T>
struct LseState {
    T m;
    T s;
};

template <class T>
LSG_HD inline LseState<T> lse_init() {
    return {lm_neg_inf<T>(), T(0)};
}

// Adds element x: a new maximum rescales s by e^{m_old − x} (0 when m_old = −inf).
template <class T>
LSG_HD inline void lse_update(LseState<T>& st, T x) {
    if (x > st.m) {
        st.s = st.s * lm_exp_normal(st.m - x) + T(1);
        st.m = x;
    } else if (x != lm_neg_inf<T>()) {
        st.s += lm_exp_normal(x - st.m);
    }
}

// The state of the union of the elements of a and b (for per-lane, per-thread or per-warp parts).
// A part whose max is −inf holds only masked elements, and NaNs: its s is 0, or NaN, and passes
// through unscaled (never e^{−inf − m} times NaN, nor dropped), so a NaN beside masked elements
// still reaches the row.
template <class T>
LSG_HD inline LseState<T> lse_merge(LseState<T> a, LseState<T> b) {
    const T m = a.m > b.m ? a.m : b.m;
    if (m == lm_neg_inf<T>()) return {m, a.s + b.s};
    const T sa = a.m == lm_neg_inf<T>() ? a.s : a.s * lm_exp_normal(a.m - m);
    const T sb = b.m == lm_neg_inf<T>() ? b.s : b.s * lm_exp_normal(b.m - m);
    return {m, sa + sb};
}

// lse = m + log s; −inf for an empty or all-masked row.
template <class T>
LSG_HD inline T lse_value(LseState<T> st) {
    return st.m + lm_log(st.s);
}

// lse − c as (m − c) + log s, without rounding lse itself: with logits near 1e7 (or 1e4) the
// rounding of lse in float is 1 (or 1e-3), which lse − x_y must not inherit.
template <class T>
LSG_HD inline T lse_minus(LseState<T> st, T c) {
    return (st.m - c) + lm_log(st.s);
}

// ---- smoothed targets ------------------------------------------------------------------------
// The target distribution of a row with class y: `on` on y, `off` on every other class, 0 on the
// padding class; a row whose class is the padding class is all 0.
//   Uniform:             on = 1 − ε + ε/K, off = ε/K
//   OffTarget:           on = 1 − ε,       off = ε/(K − 1)
//   OffTarget + padding: on = 1 − ε,       off = ε/(K − 2)
// Callers check K ≥ 2 (K ≥ 3 with padding) for OffTarget.
template <class T>
struct SmoothWeights {
    T on;
    T off;
};

template <class T>
LSG_HD inline SmoothWeights<T> smooth_weights(T eps, int64_t K, bool off_target, bool has_padding) {
    if (!off_target) return {T(1) - eps + eps / T(K), eps / T(K)};
    return {T(1) - eps, eps / T(K - (has_padding ? 2 : 1))};
}

// q_k of a row with class y; padding < 0 means none.
template <class T>
LSG_HD inline T smooth_target(SmoothWeights<T> sw, int64_t k, int64_t y, int64_t padding) {
    if (padding >= 0 && (y == padding || k == padding)) return T(0);
    return k == y ? sw.on : sw.off;
}

// ---- which rows count: ignore_index, padding, the Mean denominator ----------------------------
// The rules of every index-target loss (cross-entropy, nll_loss) on both backends. A row whose
// class is ignore_index or the padding class (pad < 0: none) is skipped: loss 0, gradient 0, and it
// does not count in the Mean denominator D = Σ w_{y_i} over the rows that are not skipped (their
// count without weights). D = 0 (every row skipped) gives a loss of 0 and zero gradients, not NaN.
LSG_HD inline bool index_row_skipped(int64_t y, int64_t ignore_index, int64_t pad) {
    return y == ignore_index || (pad >= 0 && y == pad);
}

// Row i's share of D: w_y, or 1 without weights (a skipped row adds 0).
template <class T>
LSG_HD inline double mean_denominator_term(const T* w, int64_t y, int64_t ignore_index, int64_t pad) {
    if (index_row_skipped(y, ignore_index, pad)) return 0.0;
    return w ? static_cast<double>(w[y]) : 1.0;
}

// Class k's share of Σ_{k ≠ pad} w_k, the mass the smoothing spreads (K or K − 1 without weights).
template <class T>
LSG_HD inline double class_mass_term(const T* w, int64_t k, int64_t pad) {
    if (k == pad) return 0.0;
    return w ? static_cast<double>(w[k]) : 1.0;
}

// The factor of the loss sum and of every gradient: 1/D for Mean (0 when D = 0), 1 otherwise.
LSG_HD inline double reduction_scale(bool mean, double denominator) {
    if (!mean) return 1.0;
    return denominator != 0.0 ? 1.0 / denominator : 0.0;
}

// a·v, or exactly 0 when a = 0: a term with a zero coefficient is skipped, not 0·inf = NaN. (A
// vector type overloads it, with a NaN coefficient multiplying as here.)
template <class T>
LSG_HD inline T times_unless_zero(T a, T v) {
    return a != T(0) ? a * v : T(0);
}

// ---- cross-entropy of one row against an index target ---------------------------------------
// loss = Σ_k q_k·w_k·(lse − x_k), computed from row statistics so the row is read once:
//   loss = (on − off)·w_y·(lse − x_y) + off·(Σw·(lse − c) − Σ_k w_k·(x_k − c)),
// the sums over the non-padding classes, with lse_c = lse − c and dx_y = x_y − c given relative to a
// pivot c (x_y when finite, else 0; see ce_pivot) so that a large common shift of the logits (1e7)
// cancels exactly instead of K·lse against Σx. For Uniform, on − off = 1 − ε and off = ε/K:
// PyTorch's weighted formula (1 − ε)·w_y·(lse − x_y) + (ε/K)·Σ_k w_k·(lse − x_k). Terms with a zero
// coefficient are skipped, so ε = 0 with masked (−inf) non-target classes stays finite. Written
// with arithmetic and times_unless_zero only, so that a vector kernel can run it on one row per lane.
template <class T>
LSG_HD inline T ce_row_loss(SmoothWeights<T> sw, T lse_c, T dx_y, T w_y, T sum_w, T sum_w_dx) {
    const T a = (sw.on - sw.off) * w_y;
    return times_unless_zero(a, lse_c - dx_y) + times_unless_zero(sw.off, sum_w * lse_c - sum_w_dx);
}

// The pivot of ce_row_loss: x_y when finite, else 0.
template <class T>
LSG_HD inline T ce_pivot(T x_y) {
    return (x_y - x_y == T(0)) ? x_y : T(0);
}

// W = Σ_k q_k·w_k, the factor of p_j in the gradient (1 without weights, except padding rows: 0).
template <class T>
LSG_HD inline T ce_row_mass(SmoothWeights<T> sw, T w_y, T sum_w) {
    return (sw.on - sw.off) * w_y + sw.off * sum_w;
}

// p_j = e^{(x_j − m) − log s}: x_j − m is exact, so p keeps full precision whatever the offset of
// the row. A masked class (x_j = −inf) has p_j = 0, and so has one whose p_j would be subnormal.
template <class T>
LSG_HD inline T softmax_prob(T x_j, T m, T log_s) {
    return lm_exp_normal((x_j - m) - log_s);
}

// ∂loss/∂x_j = scale·(W·p_j − q_j·w_j); finite for a masked class even when the loss is +inf.
template <class T>
LSG_HD inline T ce_grad(T scale, T W, T p_j, T q_j, T w_j) {
    return scale * (W * p_j - q_j * w_j);
}

// ---- index targets in parts: mixed rows (mixup, CutMix) -------------------------------------------
// A row's index target as up to two parts: class y[j] with share[j], 1 for an unmixed row, λ_i and
// 1 − λ_i for a mixed one (target_b and lam set). A part that does not count has share 0: its class
// is ignore_index, the padding class (pad ≥ 0) or outside [0, K) (which the CPU ops reject and the
// CUDA kernels record and skip), or it is the absent second part of an unmixed row. Used by the fused
// linear cross-entropy (ops/linear_cross_entropy.h) on both backends and by the CUDA loss kernels'
// Mean denominator.
struct TargetParts {
    int64_t y[2];
    double share[2];
};

template <class T>
LSG_HD inline TargetParts target_parts(const int64_t* target, const int64_t* target_b, const T* lam, int64_t i,
                                       int64_t K, int64_t ignore_index, int64_t pad) {
    // No loop over the parts: the struct must stay in registers in device code.
    const int64_t ya = target[i], yb = target_b ? target_b[i] : int64_t(-1);
    const double l = target_b ? static_cast<double>(lam[i]) : 1.0;
    auto counts = [&](int64_t y) { return !index_row_skipped(y, ignore_index, pad) && y >= 0 && y < K; };
    return {{ya, yb}, {counts(ya) ? l : 0.0, target_b && counts(yb) ? 1.0 - l : 0.0}};
}

// The row's share of the Mean denominator: Σ_parts share·mean_denominator_term.
template <class T>
LSG_HD inline double parts_denominator_term(const TargetParts& p, const T* w, int64_t ignore_index, int64_t pad) {
    double d = 0.0;
    for (int j = 0; j < 2; ++j)
        if (p.share[j] != 0.0) d += p.share[j] * mean_denominator_term(w, p.y[j], ignore_index, pad);
    return d;
}

// The class whose logit pivots the row's sums (ce_pivot): the first counting part's, −1 when none
// counts.
LSG_HD inline int64_t pivot_class(const TargetParts& p) {
    return p.share[0] != 0.0 ? p.y[0] : (p.share[1] != 0.0 ? p.y[1] : int64_t(-1));
}

// Gemma 2's logit soft-cap c(u) = s·tanh(u/s) (identity when s = 0) and its derivative from the capped
// logit x: c′(u) = 1 − tanh² = 1 − (x/s)² (1 when s = 0).
template <class T>
LSG_HD inline T softcap(T u, T s) {
    return s > T(0) ? s * lm_tanh(u / s) : u;
}
template <class T>
LSG_HD inline T softcap_grad(T x, T s) {
    return s > T(0) ? T(1) - (x / s) * (x / s) : T(1);
}

// The loss of a row in parts from its finished statistics (st, the pivot c, sum_w_dx =
// Σ_{k ≠ pad} w_k·(x_k − c), x_y[j] the logit at part j's class):
//   loss = Σ_parts share·ce_row_loss(...) + c_i·z·lse²,  c_i = Σ_parts share
// (the z-loss, PaLM's, only for a row that counts and never times a class weight).
template <class T>
LSG_HD inline T parts_row_loss(SmoothWeights<T> sw, const TargetParts& p, LseState<T> st, T pivot, const T* x_y,
                               const T* w, T sum_w, T sum_w_dx, T z) {
    T loss = T(0);
    double counted = 0.0;
    for (int j = 0; j < 2; ++j) {
        if (p.share[j] == 0.0) continue;
        const T l = ce_row_loss(sw, lse_minus(st, pivot), x_y[j] - pivot, w ? w[p.y[j]] : T(1), sum_w, sum_w_dx);
        loss += static_cast<T>(p.share[j]) * l;
        counted += p.share[j];
    }
    if (z != T(0) && counted != 0.0) {
        const T lse = lse_value(st);
        loss += static_cast<T>(counted) * z * lse * lse;
    }
    return loss;
}

// The row constants of the gradient of a row in parts: mass = Σ_parts share·ce_row_mass + 2z·lse·c_i
// (the z-loss adds 2z·lse·p_j per counting share: the same form as the mass term), off =
// Σ_parts share·off (q_j·w_j/w_j of every class but the parts' classes and padding), counts = c_i ≠ 0.
template <class T>
struct PartsGrad {
    T mass;
    T off;
    bool counts;
};
template <class T>
LSG_HD inline PartsGrad<T> parts_grad(SmoothWeights<T> sw, const TargetParts& p, LseState<T> st, const T* w, T sum_w,
                                      T z) {
    double counted = 0.0;
    T mass = T(0), off = T(0);
    for (int j = 0; j < 2; ++j) {
        if (p.share[j] == 0.0) continue;
        counted += p.share[j];
        mass += static_cast<T>(p.share[j]) * ce_row_mass(sw, w ? w[p.y[j]] : T(1), sum_w);
        off += static_cast<T>(p.share[j]) * sw.off;
    }
    if (z != T(0) && counted != 0.0) mass += T(2) * z * lse_value(st) * static_cast<T>(counted);
    return {mass, off, counted != 0.0};
}

// q_k of a row in parts: Σ_parts share·smooth_target(k) (0 on the padding class).
template <class T>
LSG_HD inline T parts_target(SmoothWeights<T> sw, const TargetParts& p, int64_t k, int64_t pad) {
    T q = T(0);
    for (int j = 0; j < 2; ++j)
        if (p.share[j] != 0.0) q += static_cast<T>(p.share[j]) * smooth_target(sw, k, p.y[j], pad);
    return q;
}

// ∂loss/∂u_j of the fused linear cross-entropy at the capped logit x_j: ce_grad·c′(u_j).
template <class T>
LSG_HD inline T linear_ce_grad(T scale, T W, T p_j, T q_j, T w_j, T x_j, T cap) {
    return ce_grad(scale, W, p_j, q_j, w_j) * softcap_grad(x_j, cap);
}

// ---- cross-entropy of one row against a probability target --------------------------------------
// t' = t·keep + spread: Uniform smoothing of a probability target (keep = 1 − ε, spread = ε/K).
template <class T>
LSG_HD inline T prob_target(T t, T keep, T spread) {
    return t * keep + spread;
}

// −log p_k = (m − x_k) + log s, from the exact difference x_k − m as in softmax_prob.
template <class T>
LSG_HD inline T neg_log_prob(T x_k, T m, T log_s) {
    return (m - x_k) + log_s;
}

// Class k's term of the row's loss, q·(−log p_k) with q = w_k·t'_k: exactly 0 where q = 0, even
// for a masked class (x_k = −inf, −log p_k = +inf).
template <class T>
LSG_HD inline T ce_prob_term(T q, T x_k, T m, T log_s) {
    return q != T(0) ? q * neg_log_prob(x_k, m, log_s) : T(0);
}

// ---- KL divergence, pointwise ----------------------------------------------------------------
// t·(log t − input), exactly 0 where t = 0 (xlogy semantics, even when input = −inf).
template <class T>
LSG_HD inline T kl_point(T input, T t) {
    return t == T(0) ? T(0) : t * (lm_log(t) - input);
}
// With log-probability targets: e^t·(t − input), 0 where t = −inf.
template <class T>
LSG_HD inline T kl_point_log_target(T input, T t) {
    return t == lm_neg_inf<T>() ? T(0) : lm_exp(t) * (t - input);
}
// ∂/∂input = −t (−e^t with log targets).
template <class T>
LSG_HD inline T kl_grad_input(T t, bool log_target) {
    return log_target ? -lm_exp(t) : -t;
}
// ∂/∂t = log t + 1 − input (e^t·(t − input + 1) with log targets); 0 where the term is pinned to 0.
template <class T>
LSG_HD inline T kl_grad_target(T input, T t, bool log_target) {
    if (log_target) return t == lm_neg_inf<T>() ? T(0) : lm_exp(t) * (t - input + T(1));
    return t == T(0) ? T(0) : lm_log(t) + T(1) - input;
}
// Element i of kl_div over flat buffers: out[i] the pointwise term and, where gi / gt are not null,
// gi[i] = scale·∂/∂input and gt[i] = scale·∂/∂t (scale: the reduction's factor). The CPU loop and the
// CUDA grid-stride loop both call this, so the element's arithmetic is written once.
template <class T>
LSG_HD inline void kl_element(int64_t i, const T* input, const T* target, bool log_target, T scale, T* out, T* gi,
                              T* gt) {
    const T x = input[i], t = target[i];
    out[i] = log_target ? kl_point_log_target(x, t) : kl_point(x, t);
    if (gi) gi[i] = scale * kl_grad_input(t, log_target);
    if (gt) gt[i] = scale * kl_grad_target(x, t, log_target);
}

// ---- binary cross-entropy with logits, pointwise ---------------------------------------------
// softplus(z) = log(1 + e^z), finite for any finite z.
template <class T>
LSG_HD inline T softplus(T z) {
    const T a = z < T(0) ? -z : z;
    return (z > T(0) ? z : T(0)) + lm_log1p(lm_exp(-a));
}
// σ(x) without overflow.
template <class T>
LSG_HD inline T sigmoid(T x) {
    if (x >= T(0)) return T(1) / (T(1) + lm_exp(-x));
    const T e = lm_exp(x);
    return e / (T(1) + e);
}
// −[pw·t·log σ(x) + (1 − t)·log(1 − σ(x))] = pw·t·softplus(−x) + (1 − t)·softplus(x): both terms
// are non-negative, so nothing cancels for large |x| (e^−100 stays e^−100).
template <class T>
LSG_HD inline T bce_point(T x, T t, T pw) {
    return pw * t * softplus(-x) + (T(1) - t) * softplus(x);
}
// ∂/∂x = (1 − t)·σ(x) − pw·t·σ(−x)  (σ(x) − t when pw = 1).
template <class T>
LSG_HD inline T bce_grad_x(T x, T t, T pw) {
    return (T(1) - t) * sigmoid(x) - pw * t * sigmoid(-x);
}
// ∂/∂t = pw·softplus(−x) − softplus(x).
template <class T>
LSG_HD inline T bce_grad_t(T x, T pw) {
    return pw * softplus(-x) - softplus(x);
}
// Keras' smoothing of a binary target, t' = t·keep + half with keep = 1 − ε and half = ε/2.
template <class T>
struct BinarySmoothing {
    T keep;
    T half;
};
template <class T>
LSG_HD inline BinarySmoothing<T> binary_smoothing(double eps) {
    return {static_cast<T>(1.0 - eps), static_cast<T>(eps / 2.0)};
}

// Element i of binary_cross_entropy_with_logits over x, t [outer, inner] (flat index i):
//   out[i] = w_i·bce_point(x_i, t'_i, pw_{i mod inner}),
//   gx[i] = scale·w_i·bce_grad_x(x_i, t'_i, pw),  gt[i] = scale·w_i·(1 − ε)·bce_grad_t(x_i, pw),
// pw = 1 when pos_weight is null, w_i = 1 when weight is null (else already broadcast to [outer,
// inner]); gx / gt only where not null. The CPU loop and the CUDA grid-stride loop both call this.
template <class T>
LSG_HD inline void bce_element(int64_t i, int64_t inner, const T* x, const T* t, const T* pos_weight, const T* weight,
                               BinarySmoothing<T> sm, T scale, T* out, T* gx, T* gt) {
    const T pw = pos_weight ? pos_weight[i % inner] : T(1);
    const T w = weight ? weight[i] : T(1);
    const T ts = t[i] * sm.keep + sm.half;
    out[i] = w * bce_point(x[i], ts, pw);
    if (gx) gx[i] = scale * w * bce_grad_x(x[i], ts, pw);
    if (gt) gt[i] = scale * w * sm.keep * bce_grad_t(x[i], pw);
}

}  // namespace lsg::detail

// The CPU loss kernels. Every kernel has a portable path written with the shared arithmetic of
// ops/loss_math.h (templated on the element type; it is the only f64 path and the reference the
// vector paths are tested against) and, for f32 on x86-64 CPUs with AVX-512 (cpu_isa(), checked at
// run time), a vectorised fused path for index-target cross-entropy:
//   - K ≤ 16: a row is one masked vector; e^{x − max} is computed once and reused for the gradient.
//   - K > 16: one read of the row keeps per-lane running max / Σ e^{x − max} / Σ w·(x − c) (online
//     softmax, rescaling only the lanes whose max grew), then, while the row is in L1/L2, a second
//     sweep writes the gradient; for large outputs with non-temporal stores, so the gradient buffer
//     is not read before it is written (8 bytes of DRAM traffic per logit instead of 12).
// Other CPUs (AVX2-only x86, aarch64) and f64 run the portable path.
// Rows are split into one contiguous block per OpenMP thread (deterministic, many rows per thread
// for small K); problems under kParallelMinWork logits run on the calling thread.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/ops/cpu_isa.h"
#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/ops/loss_math.h"

#if defined(LSG_X86_64)
// GCC 12's _mm512_reduce_* expand through _mm256_undefined_ps(), which -Wmaybe-uninitialized
// reports as a use of an uninitialised value inside the compiler's own header (a known false
// positive); silence that one warning for this file only.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

namespace lsg {
namespace {

using detail::LseState;
using detail::SmoothWeights;

// Below this many logits a loss runs on the calling thread: waking the OpenMP team costs more than
// it saves (libtorch's (256, 10) cross-entropy is 2.3x slower on 2 threads than on 1).
constexpr int64_t kParallelMinWork = 32768;
// Gradient buffers larger than this (bytes) are written with non-temporal stores: they cannot stay
// in cache anyway, and ordinary stores would first read every line of the buffer.
constexpr int64_t kStreamMinBytes = int64_t(8) << 20;

// Runs fn(begin, end) over [0, rows): one contiguous block per thread, or all on this thread for
// small problems. The split depends only on rows and the thread count.
template <class Fn>
void for_row_blocks(int64_t rows, int64_t work, Fn&& fn) {
    if (work < kParallelMinWork || rows < 2 || omp_get_max_threads() == 1) {
        fn(int64_t(0), rows);
        return;
    }
#pragma omp parallel
    {
        const int64_t nt = omp_get_num_threads();
        const int64_t t = omp_get_thread_num();
        fn(rows * t / nt, rows * (t + 1) / nt);
    }
}

// Whether the f32 AVX-512 paths run.
bool vector_f32() {
#if defined(LSG_X86_64)
    return detail::cpu_isa() == detail::CpuIsa::avx512;
#else
    return false;
#endif
}

// ---- index-target cross-entropy ---------------------------------------------------------------

// The per-call constants of an index-target cross-entropy.
template <class T>
struct CeCall {
    int64_t K;
    const T* w;       // class weights or null
    SmoothWeights<T> sw;
    int64_t pad;      // padding class or −1
    int64_t ignore;
    T sum_w;          // Σ_{k ≠ pad} w_k (K or K − 1 without weights)
    T scale;          // gradient scale
};

template <class T>
bool ce_row_skipped(const CeCall<T>& c, int64_t y) {
    return y == c.ignore || (c.pad >= 0 && y == c.pad);
}

// One row with the shared arithmetic, element by element: the reference and the f64 path.
template <class T>
void ce_row_portable(const CeCall<T>& c, const T* x, int64_t y, T* loss, T* lse_out, T* g) {
    const bool skip = ce_row_skipped(c, y);
    const T x_y = skip ? T(0) : x[y];
    const T pivot = detail::ce_pivot(x_y);
    LseState<T> st = detail::lse_init<T>();
    T sdx = 0;
    for (int64_t k = 0; k < c.K; ++k) {
        detail::lse_update(st, x[k]);
        if (k != c.pad) sdx += (c.w ? c.w[k] : T(1)) * (x[k] - pivot);
    }
    if (lse_out) *lse_out = detail::lse_value(st);
    if (skip) {
        *loss = T(0);
        if (g) std::fill(g, g + c.K, T(0));
        return;
    }
    const T w_y = c.w ? c.w[y] : T(1);
    *loss = detail::ce_row_loss(c.sw, detail::lse_minus(st, pivot), x_y - pivot, w_y, c.sum_w, sdx);
    if (!g) return;
    const T W = detail::ce_row_mass(c.sw, w_y, c.sum_w);
    const T log_s = detail::lm_log(st.s);
    for (int64_t k = 0; k < c.K; ++k)
        g[k] = detail::ce_grad(c.scale, W, detail::softmax_prob(x[k], st.m, log_s),
                               detail::smooth_target(c.sw, k, y, c.pad), c.w ? c.w[k] : T(1));
}

// ---- AVX-512 f32 paths ------------------------------------------------------------------------
#if defined(LSG_X86_64)
LSG_TARGET_BEGIN_AVX512

// e^x for 16 floats, about 1 ulp: Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, Cephes' degree-6
// polynomial for e^r, then scalef by 2^n (which saturates to 0 / +inf without integer overflow).
// Inputs are clamped to [−104, 89] first so −inf gives 0 and +inf gives +inf; NaN stays NaN (the
// clamps return their second operand when it is NaN).
inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 e = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(e, n);
}

inline __mmask16 tail_mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// Per-lane online log-sum-exp plus Σ w·(x − c) of one vector (lanes outside `m` untouched).
template <bool Weighted>
inline void ce_accumulate16(__m512 v, __m512 wv, __mmask16 m, __m512 pivot, __m512& vmax, __m512& vsum,
                            __m512& vdx) {
    const __mmask16 grew = _mm512_mask_cmp_ps_mask(m, v, vmax, _CMP_GT_OQ);
    if (grew) {
        // e^{old max − new max} is 0 for a lane whose old max was −inf.
        const __m512 nm = _mm512_mask_mov_ps(vmax, grew, v);
        vsum = _mm512_mask_mul_ps(vsum, grew, vsum, exp16(_mm512_sub_ps(vmax, nm)));
        vmax = nm;
    }
    // Masked (−inf) logits add nothing and never form −inf − (−inf).
    const __mmask16 live = _mm512_mask_cmp_ps_mask(m, v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
    vsum = _mm512_mask_add_ps(vsum, live, vsum, exp16(_mm512_sub_ps(v, vmax)));
    const __m512 d = _mm512_sub_ps(v, pivot);
    vdx = Weighted ? _mm512_mask3_fmadd_ps(wv, d, vdx, m) : _mm512_mask_add_ps(vdx, m, vdx, d);
}

// The row's state from the per-lane states, as detail::lse_merge: a lane with max −inf holds sum 0,
// or NaN when a NaN met only masked logits there, and its sum is added unscaled.
inline LseState<float> merge_lanes(__m512 vmax, __m512 vsum) {
    const float M = _mm512_reduce_max_ps(vmax);
    if (M == -INFINITY) return {M, _mm512_reduce_add_ps(vsum)};
    const __mmask16 live = _mm512_cmp_ps_mask(vmax, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
    const __m512 s = _mm512_mask_mul_ps(vsum, live, vsum, exp16(_mm512_sub_ps(vmax, _mm512_set1_ps(M))));
    return {M, _mm512_reduce_add_ps(s)};
}

// Σ_{k ≠ pad} w_k·(x_k − c) from the sum over all k: subtract the padding term, or recompute the
// sum without it when x_pad = −inf (whose term would turn the difference into NaN).
template <bool Weighted>
float drop_padding(const CeCall<float>& c, const float* x, float pivot, float sdx) {
    if (c.pad < 0) return sdx;
    const float wp = Weighted ? c.w[c.pad] : 1.0f;
    if (x[c.pad] != -INFINITY) return sdx - wp * (x[c.pad] - pivot);
    float s = 0;
    for (int64_t k = 0; k < c.K; ++k)
        if (k != c.pad) s += (Weighted ? c.w[k] : 1.0f) * (x[k] - pivot);
    return s;
}

// The row's target weight q_k·w_k at the two special columns, for the gradient fix-up.
template <bool Weighted>
void ce_fix_special(const CeCall<float>& c, const float* x, int64_t y, float m, float log_s, float W, float* g) {
    g[y] = detail::ce_grad(c.scale, W, detail::softmax_prob(x[y], m, log_s), c.sw.on, Weighted ? c.w[y] : 1.0f);
    if (c.pad >= 0)
        g[c.pad] = detail::ce_grad(c.scale, W, detail::softmax_prob(x[c.pad], m, log_s), 0.0f,
                                   Weighted ? c.w[c.pad] : 1.0f);
}

// K ≤ 16: the row is one vector; its exponentials are reused for the gradient.
template <bool Weighted>
void ce_rows_small_avx512(const CeCall<float>& c, const float* x, const int64_t* target, int64_t r0, int64_t r1,
                          float* loss, float* lse_out, float* grad) {
    const int64_t K = c.K;
    const __mmask16 m = tail_mask(K);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512 wv = Weighted ? _mm512_maskz_loadu_ps(m, c.w) : _mm512_set1_ps(1.0f);
    const __m512 offw = _mm512_mul_ps(_mm512_set1_ps(c.sw.off), wv);
    for (int64_t i = r0; i < r1; ++i) {
        const float* xi = x + i * K;
        const int64_t y = target[i];
        const __m512 v = _mm512_mask_loadu_ps(ninf, m, xi);
        const float M = _mm512_reduce_max_ps(v);
        const bool empty = M == -INFINITY;
        const __m512 e = exp16(_mm512_sub_ps(v, _mm512_set1_ps(M)));
        // A row of only −inf has S = 0 (lse = −inf), unless it holds a NaN, which the max may have
        // passed over: then S is NaN, as on the portable path.
        const float S = empty ? (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) ? NAN : 0.0f) : _mm512_reduce_add_ps(e);
        const float log_s = logf(S);
        const float lse = M + log_s;
        if (lse_out) lse_out[i] = lse;
        float* gi = grad ? grad + i * K : nullptr;
        if (ce_row_skipped(c, y)) {
            loss[i] = 0.0f;
            if (gi) _mm512_mask_storeu_ps(gi, m, _mm512_setzero_ps());
            continue;
        }
        const float x_y = xi[y];
        const float pivot = detail::ce_pivot(x_y);
        const float w_y = Weighted ? c.w[y] : 1.0f;
        float sdx = 0.0f;
        if (c.sw.off != 0.0f) {
            const __m512 d = _mm512_maskz_sub_ps(m, v, _mm512_set1_ps(pivot));
            sdx = drop_padding<Weighted>(c, xi, pivot, _mm512_reduce_add_ps(Weighted ? _mm512_mul_ps(wv, d) : d));
        }
        loss[i] = detail::ce_row_loss(c.sw, (M - pivot) + log_s, x_y - pivot, w_y, c.sum_w, sdx);
        if (!gi) continue;
        const float W = detail::ce_row_mass(c.sw, w_y, c.sum_w);
        // p = e / S, except that an all-masked row keeps the portable path's NaN.
        const __m512 p = empty ? exp16(_mm512_sub_ps(v, _mm512_set1_ps(lse))) : _mm512_mul_ps(e, _mm512_set1_ps(1.0f / S));
        // q·w: off·w_k, on·w_y at the target, 0 at the padding class.
        __m512 qw = _mm512_mask_mov_ps(offw, static_cast<__mmask16>(1u << y), _mm512_set1_ps(c.sw.on * w_y));
        if (c.pad >= 0) qw = _mm512_mask_mov_ps(qw, static_cast<__mmask16>(1u << c.pad), _mm512_setzero_ps());
        const __m512 scale = _mm512_set1_ps(c.scale);
        _mm512_mask_storeu_ps(gi, m, _mm512_mul_ps(scale, _mm512_fmsub_ps(_mm512_set1_ps(W), p, qw)));
    }
}

// K > 16: one online sweep for the statistics, one sweep writing the gradient.
template <bool Weighted, bool Stream>
void ce_rows_large_avx512(const CeCall<float>& c, const float* x, const int64_t* target, int64_t r0, int64_t r1,
                          float* loss, float* lse_out, float* grad) {
    const int64_t K = c.K;
    const int64_t Kv = K & ~int64_t(15);
    const __mmask16 mt = tail_mask(K - Kv);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = r0; i < r1; ++i) {
        const float* xi = x + i * K;
        const int64_t y = target[i];
        const bool skip = ce_row_skipped(c, y);
        const float x_y = skip ? 0.0f : xi[y];
        const float pivot = detail::ce_pivot(x_y);
        const __m512 vp = _mm512_set1_ps(pivot);
        __m512 vmax = _mm512_set1_ps(-INFINITY), vsum = _mm512_setzero_ps(), vdx = _mm512_setzero_ps();
        for (int64_t k = 0; k < Kv; k += 16) {
            const __m512 wv = Weighted ? _mm512_loadu_ps(c.w + k) : one;
            ce_accumulate16<Weighted>(_mm512_loadu_ps(xi + k), wv, 0xFFFF, vp, vmax, vsum, vdx);
        }
        if (mt) {
            const __m512 wv = Weighted ? _mm512_maskz_loadu_ps(mt, c.w + Kv) : one;
            ce_accumulate16<Weighted>(_mm512_maskz_loadu_ps(mt, xi + Kv), wv, mt, vp, vmax, vsum, vdx);
        }
        const LseState<float> st = merge_lanes(vmax, vsum);
        if (lse_out) lse_out[i] = detail::lse_value(st);
        float* gi = grad ? grad + i * K : nullptr;
        if (skip) {
            loss[i] = 0.0f;
            if (gi) std::memset(gi, 0, sizeof(float) * K);
            continue;
        }
        const float w_y = Weighted ? c.w[y] : 1.0f;
        const float sdx = drop_padding<Weighted>(c, xi, pivot, _mm512_reduce_add_ps(vdx));
        loss[i] = detail::ce_row_loss(c.sw, detail::lse_minus(st, pivot), x_y - pivot, w_y, c.sum_w, sdx);
        if (!gi) continue;
        const float W = detail::ce_row_mass(c.sw, w_y, c.sum_w);
        const float log_s = logf(st.s);
        const __m512 vm = _mm512_set1_ps(st.m), vls = _mm512_set1_ps(log_s), vW = _mm512_set1_ps(W), vs = _mm512_set1_ps(c.scale);
        const __m512 voff = _mm512_set1_ps(c.sw.off);
        auto grad16 = [&](int64_t k, __mmask16 m) {
            const __m512 v = _mm512_maskz_loadu_ps(m, xi + k);
            const __m512 q = Weighted ? _mm512_mul_ps(voff, _mm512_maskz_loadu_ps(m, c.w + k)) : voff;
            return _mm512_mul_ps(vs, _mm512_fmsub_ps(vW, exp16(_mm512_sub_ps(_mm512_sub_ps(v, vm), vls)), q));
        };
        int64_t k = 0;
        if (Stream) {
            // Non-temporal stores need 64-byte alignment: a masked head brings gi + k there.
            const int64_t head = std::min<int64_t>(K, ((64 - (reinterpret_cast<uintptr_t>(gi) & 63)) & 63) / 4);
            if (head) _mm512_mask_storeu_ps(gi, tail_mask(head), grad16(0, tail_mask(head)));
            for (k = head; k + 16 <= K; k += 16) _mm512_stream_ps(gi + k, grad16(k, 0xFFFF));
        } else {
            for (; k + 16 <= K; k += 16) _mm512_storeu_ps(gi + k, grad16(k, 0xFFFF));
        }
        if (k < K) _mm512_mask_storeu_ps(gi + k, tail_mask(K - k), grad16(k, tail_mask(K - k)));
        ce_fix_special<Weighted>(c, xi, y, st.m, log_s, W, gi);
    }
    if (Stream) _mm_sfence();
}

template <bool Weighted>
void ce_rows_avx512(const CeCall<float>& c, bool stream, const float* x, const int64_t* target, int64_t r0,
                    int64_t r1, float* loss, float* lse_out, float* grad) {
    if (c.K <= 16)
        ce_rows_small_avx512<Weighted>(c, x, target, r0, r1, loss, lse_out, grad);
    else if (stream && grad)
        ce_rows_large_avx512<Weighted, true>(c, x, target, r0, r1, loss, lse_out, grad);
    else
        ce_rows_large_avx512<Weighted, false>(c, x, target, r0, r1, loss, lse_out, grad);
}

// The lse state of one row (the first sweep of the probability-target kernel).
LseState<float> row_lse_avx512(const float* x, int64_t K) {
    const int64_t Kv = K & ~int64_t(15);
    const __mmask16 mt = tail_mask(K - Kv);
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    __m512 vmax = _mm512_set1_ps(-INFINITY), vsum = zero, vdx = zero;
    for (int64_t k = 0; k < Kv; k += 16) ce_accumulate16<false>(_mm512_loadu_ps(x + k), one, 0xFFFF, zero, vmax, vsum, vdx);
    if (mt) ce_accumulate16<false>(_mm512_maskz_loadu_ps(mt, x + Kv), one, mt, zero, vmax, vsum, vdx);
    return merge_lanes(vmax, vsum);
}

LSG_TARGET_END
#endif  // LSG_X86_64

// Σ_i loss_i in double, in row order (the same bits whatever the thread count), scaled.
template <class T>
void reduce_rows(const T* loss, int64_t rows, double scale, T* out) {
    double s = 0.0;
    for (int64_t i = 0; i < rows; ++i) s += static_cast<double>(loss[i]);
    *out = static_cast<T>(s * scale);
}

template <class T>
void cross_entropy_index_impl(const CrossEntropyIndexArgs& a) {
    const T* x = static_cast<const T*>(a.logits);
    const T* w = static_cast<const T*>(a.weight);
    const int64_t N = a.rows, K = a.classes;
    CeCall<T> c{};
    c.K = K;
    c.w = w;
    c.pad = a.padding_idx;
    c.ignore = a.ignore_index;
    c.sw = detail::smooth_weights<T>(static_cast<T>(a.label_smoothing), K, a.off_target, a.padding_idx >= 0);
    double sum_w = 0.0;
    for (int64_t k = 0; k < K; ++k)
        if (k != c.pad) sum_w += w ? static_cast<double>(w[k]) : 1.0;
    c.sum_w = static_cast<T>(sum_w);

    // The Mean denominator from the targets alone, so the gradient can be written in the same pass.
    const bool mean = a.reduction == Reduction::Mean || a.reduction == Reduction::BatchMean;
    double denom = 1.0;
    if (mean) {
        denom = 0.0;
        for (int64_t i = 0; i < N; ++i)
            if (!ce_row_skipped(c, a.target[i])) denom += w ? static_cast<double>(w[a.target[i]]) : 1.0;
    }
    const double inv = denom != 0.0 ? 1.0 / denom : 0.0;
    c.scale = static_cast<T>(a.grad_scale * (mean ? inv : 1.0));

    T* loss = static_cast<T*>(a.row_loss);
    T* lse = static_cast<T*>(a.lse);
    T* grad = static_cast<T*>(a.grad);
    bool vector = false;
    if constexpr (std::is_same_v<T, float>) vector = vector_f32();
    [[maybe_unused]] const bool stream = grad && N * K * int64_t(sizeof(T)) >= kStreamMinBytes;
    for_row_blocks(N, N * K, [&](int64_t r0, int64_t r1) {
#if defined(LSG_X86_64)
        if constexpr (std::is_same_v<T, float>) {
            if (vector) {
                if (w)
                    ce_rows_avx512<true>(c, stream, x, a.target, r0, r1, loss, lse, grad);
                else
                    ce_rows_avx512<false>(c, stream, x, a.target, r0, r1, loss, lse, grad);
                return;
            }
        }
#endif
        for (int64_t i = r0; i < r1; ++i)
            ce_row_portable(c, x + i * K, a.target[i], loss + i, lse ? lse + i : nullptr,
                            grad ? grad + i * K : nullptr);
    });
    if (a.reduction != Reduction::None) reduce_rows(loss, N, mean ? inv : 1.0, static_cast<T*>(a.reduced));
}

// ---- probability-target cross-entropy ----------------------------------------------------------

template <class T>
LseState<T> row_lse(const T* x, int64_t K, [[maybe_unused]] bool vector) {
#if defined(LSG_X86_64)
    if constexpr (std::is_same_v<T, float>) {
        if (vector) return row_lse_avx512(x, K);
    }
#endif
    LseState<T> st = detail::lse_init<T>();
    for (int64_t k = 0; k < K; ++k) detail::lse_update(st, x[k]);
    return st;
}

template <class T>
void cross_entropy_prob_impl(const CrossEntropyProbArgs& a) {
    const T* x = static_cast<const T*>(a.logits);
    const T* t = static_cast<const T*>(a.target);
    const T* w = static_cast<const T*>(a.weight);
    const int64_t N = a.rows, K = a.classes;
    const T keep = static_cast<T>(1.0 - a.label_smoothing);
    const T spread = static_cast<T>(a.label_smoothing / static_cast<double>(K));
    const bool mean = a.reduction == Reduction::Mean || a.reduction == Reduction::BatchMean;
    const double inv = mean ? (N > 0 ? 1.0 / static_cast<double>(N) : 0.0) : 1.0;
    const T scale = static_cast<T>(a.grad_scale * inv);
    T* loss = static_cast<T*>(a.row_loss);
    T* lse_out = static_cast<T*>(a.lse);
    T* grad = static_cast<T*>(a.grad);
    T* grad_t = static_cast<T*>(a.grad_target);
    bool vector = false;
    if constexpr (std::is_same_v<T, float>) vector = vector_f32();
    for_row_blocks(N, N * K, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; ++i) {
            const T* xi = x + i * K;
            const T* ti = t + i * K;
            const LseState<T> st = row_lse(xi, K, vector);
            const T log_s = detail::lm_log(st.s);
            if (lse_out) lse_out[i] = st.m + log_s;
            // A zero target weight contributes 0 even where x = −inf (log p = −inf). The sums run in
            // double: W's rounding would show in every gradient element (a row's gradient sums to
            // W·Σp − W).
            double li = 0, Wd = 0;
            for (int64_t k = 0; k < K; ++k) {
                const T q = detail::prob_target(ti[k], keep, spread) * (w ? w[k] : T(1));
                li += static_cast<double>(detail::ce_prob_term(q, xi[k], st.m, log_s));
                Wd += static_cast<double>(q);
            }
            loss[i] = static_cast<T>(li);
            const T W = static_cast<T>(Wd);
            if (grad) {
                T* gi = grad + i * K;
                for (int64_t k = 0; k < K; ++k)
                    gi[k] = detail::ce_grad(scale, W, detail::softmax_prob(xi[k], st.m, log_s),
                                            detail::prob_target(ti[k], keep, spread), w ? w[k] : T(1));
            }
            if (grad_t) {
                T* gi = grad_t + i * K;
                for (int64_t k = 0; k < K; ++k)
                    gi[k] = scale * keep * (w ? w[k] : T(1)) * detail::neg_log_prob(xi[k], st.m, log_s);
            }
        }
    });
    if (a.reduction != Reduction::None) reduce_rows(loss, N, inv, static_cast<T*>(a.reduced));
}

// ---- pointwise kernels ---------------------------------------------------------------------------

template <class T>
void scale_rows_impl(int64_t rows, int64_t cols, const T* G, const T* g, bool per_row, T* out) {
    for_row_blocks(rows, rows * cols, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; ++i) {
            const T s = per_row ? g[i] : g[0];
            const T* Gi = G + i * cols;
            T* oi = out + i * cols;
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) oi[j] = Gi[j] * s;
        }
    });
}

template <class T>
void nll_impl(int64_t N, int64_t K, const T* lp, const int64_t* target, const T* w, int64_t ignore, T* loss, T* grad,
              double grad_scale, Reduction reduction, T* reduced) {
    const bool mean = reduction == Reduction::Mean || reduction == Reduction::BatchMean;
    double denom = 0.0;
    for (int64_t i = 0; i < N; ++i)
        if (target[i] != ignore) denom += w ? static_cast<double>(w[target[i]]) : 1.0;
    const double inv = mean ? (denom != 0.0 ? 1.0 / denom : 0.0) : 1.0;
    const T scale = static_cast<T>(grad_scale * inv);
    for_row_blocks(N, N * K, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; ++i) {
            const int64_t y = target[i];
            const bool skip = y == ignore;
            const T w_y = skip ? T(0) : (w ? w[y] : T(1));
            loss[i] = skip ? T(0) : -w_y * lp[i * K + y];
            if (grad) {
                std::fill(grad + i * K, grad + (i + 1) * K, T(0));
                if (!skip) grad[i * K + y] = -scale * w_y;
            }
        }
    });
    if (reduction != Reduction::None) reduce_rows(loss, N, inv, reduced);
}

template <class T>
void kl_div_impl(int64_t n, const T* input, const T* target, bool log_target, T* out, T scale, T* gi, T* gt) {
    for_row_blocks(n, n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) detail::kl_element(i, input, target, log_target, scale, out, gi, gt);
    });
}

template <class T>
void bce_impl(int64_t outer, int64_t inner, const T* x, const T* t, const T* pw, const T* w, double eps, T* out,
              T scale, T* gx, T* gt) {
    const auto sm = detail::binary_smoothing<T>(eps);
    for_row_blocks(outer, outer * inner, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0 * inner; i < r1 * inner; ++i)
            detail::bce_element(i, inner, x, t, pw, w, sm, scale, out, gx, gt);
    });
}

class CpuLossKernels final : public LossKernels {
public:
    void cross_entropy_index(const CrossEntropyIndexArgs& a) override {
        if (a.dtype == DType::f64)
            cross_entropy_index_impl<double>(a);
        else
            cross_entropy_index_impl<float>(a);
    }
    void cross_entropy_prob(const CrossEntropyProbArgs& a) override {
        if (a.dtype == DType::f64)
            cross_entropy_prob_impl<double>(a);
        else
            cross_entropy_prob_impl<float>(a);
    }
    void scale_rows(DType dtype, int64_t rows, int64_t cols, const void* G, const void* g, bool per_row,
                    void* out) override {
        if (dtype == DType::f64)
            scale_rows_impl(rows, cols, static_cast<const double*>(G), static_cast<const double*>(g), per_row,
                            static_cast<double*>(out));
        else
            scale_rows_impl(rows, cols, static_cast<const float*>(G), static_cast<const float*>(g), per_row,
                            static_cast<float*>(out));
    }
    void nll_loss(DType dtype, int64_t rows, int64_t classes, const void* lp, const int64_t* target, const void* w,
                  int64_t ignore, void* row_loss, void* grad, double grad_scale, Reduction reduction,
                  void* reduced) override {
        if (dtype == DType::f64)
            nll_impl(rows, classes, static_cast<const double*>(lp), target, static_cast<const double*>(w), ignore,
                     static_cast<double*>(row_loss), static_cast<double*>(grad), grad_scale, reduction,
                     static_cast<double*>(reduced));
        else
            nll_impl(rows, classes, static_cast<const float*>(lp), target, static_cast<const float*>(w), ignore,
                     static_cast<float*>(row_loss), static_cast<float*>(grad), grad_scale, reduction,
                     static_cast<float*>(reduced));
    }
    void sum(DType dtype, int64_t n, const void* x, double scale, void* out) override {
        if (dtype == DType::f64)
            reduce_rows(static_cast<const double*>(x), n, scale, static_cast<double*>(out));
        else
            reduce_rows(static_cast<const float*>(x), n, scale, static_cast<float*>(out));
    }
    void kl_div(DType dtype, int64_t n, const void* input, const void* target, bool log_target, void* out,
                double scale, void* gi, void* gt) override {
        if (dtype == DType::f64)
            kl_div_impl(n, static_cast<const double*>(input), static_cast<const double*>(target), log_target,
                        static_cast<double*>(out), scale, static_cast<double*>(gi), static_cast<double*>(gt));
        else
            kl_div_impl(n, static_cast<const float*>(input), static_cast<const float*>(target), log_target,
                        static_cast<float*>(out), static_cast<float>(scale), static_cast<float*>(gi),
                        static_cast<float*>(gt));
    }
    void bce_with_logits(DType dtype, int64_t outer, int64_t inner, const void* x, const void* t, const void* pw,
                         const void* w, double eps, void* out, double scale, void* gx, void* gt) override {
        if (dtype == DType::f64)
            bce_impl(outer, inner, static_cast<const double*>(x), static_cast<const double*>(t),
                     static_cast<const double*>(pw), static_cast<const double*>(w), eps, static_cast<double*>(out),
                     scale, static_cast<double*>(gx), static_cast<double*>(gt));
        else
            bce_impl(outer, inner, static_cast<const float*>(x), static_cast<const float*>(t),
                     static_cast<const float*>(pw), static_cast<const float*>(w), eps, static_cast<float*>(out),
                     static_cast<float>(scale), static_cast<float*>(gx), static_cast<float*>(gt));
    }
};

}  // namespace

LossKernels& cpu_loss_kernels() {
    static CpuLossKernels kernels;
    return kernels;
}

LossKernels& loss_kernels(Device device) {
    if (device.is_cuda()) return cuda_loss_kernels();
    return cpu_loss_kernels();
}

}  // namespace lsg

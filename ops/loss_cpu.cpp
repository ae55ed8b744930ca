// The CPU loss kernels. Every kernel has a portable path written with the shared arithmetic of
// ops/loss_math.h (templated on the element type; it is the only f64 path and the reference the
// vector paths are tested against) and, for f32 on x86-64 CPUs with AVX-512 (cpu_isa(), checked at
// run time), a vectorised fused path for index-target cross-entropy:
//   - K ≤ 16: sixteen rows at a time, one lane per row (the block's columns gathered, so a row's
//     max and sums are vertical arithmetic, not horizontal reductions), the gradient written as K
//     full vectors; the last rows, and blocks with a NaN or no finite maximum, one vector a row.
//   - K > 16: one read of the row keeps per-lane running max / Σ e^{x − max} / Σ w·(x − c) (online
//     softmax, rescaling only the lanes whose max grew), then, while the row is in L1/L2, a second
//     sweep writes the gradient; for large outputs with non-temporal stores, so the gradient buffer
//     is not read before it is written (8 bytes of DRAM traffic per logit instead of 12).
// Other CPUs (AVX2-only x86, aarch64) and f64 run the portable path.
// Rows are split into one contiguous block per OpenMP thread (deterministic, many rows per thread
// for small K); problems under kParallelMinWork logits run on the calling thread.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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

// ---- subnormal-free gradients ---------------------------------------------------------------------
// No kernel produces a subnormal number (see lm_exp_floor in loss_math.h): the exponentials select 0
// below the floor, and a softmax probability p is kept in a gradient scale·(W·p − q·w) only when W·p
// and scale·W·p are normal numbers, else taken as exactly 0. The dropped terms are below the
// smallest normal number in absolute value.

// The smallest p kept, for a call whose rows' masses W are ≥ w_min (rows with W = 0 multiply p by 0
// exactly): 2·T_min / (w_min·min(1, |scale|)), clamped to [2·T_min, 2] (2: no p ≤ 1 is kept, for
// scale = 0). The factor 2 covers the rounding of p = e/S and of W·p.
template <class T>
T grad_prob_floor(T scale, T w_min) {
    const double lowest = 2.0 * static_cast<double>(std::numeric_limits<T>::min());
    const double d = static_cast<double>(w_min) * std::min(1.0, std::abs(static_cast<double>(scale)));
    const double f = d > 0.0 ? lowest / d : 2.0;
    return static_cast<T>(std::clamp(f, lowest, 2.0));
}

// p, or 0 below the floor (NaN stays NaN).
template <class T>
T grad_prob(T p, T floor) {
    return p < floor ? T(0) : p;
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
    T p_floor;        // grad_prob_floor of the call
};

template <class T>
bool ce_row_skipped(const CeCall<T>& c, int64_t y) {
    return detail::index_row_skipped(y, c.ignore, c.pad);
}

// The lse state of row x [K] and, when sdx is given, *sdx = Σ_{k ≠ pad} w_k·(x_k − pivot), with the
// shared arithmetic element by element, in 16 interleaved partial sums merged at the end (the
// vector path's 16 lanes): one running float sum over K = 32000 elements drifts past the loss
// layer's tolerance against PyTorch, sixteen sums of K/16 do not.
template <class T>
LseState<T> row_lse_portable(const T* x, int64_t K, const T* w, int64_t pad, T pivot, T* sdx) {
    constexpr int64_t lanes = 16;
    LseState<T> part[lanes];
    T dx[lanes] = {};
    for (LseState<T>& p : part) p = detail::lse_init<T>();
    for (int64_t k = 0; k < K; ++k) {
        detail::lse_update(part[k % lanes], x[k]);
        if (sdx && k != pad) dx[k % lanes] += (w ? w[k] : T(1)) * (x[k] - pivot);
    }
    LseState<T> st = part[0];
    T s = dx[0];
    for (int64_t j = 1; j < lanes; ++j) {
        st = detail::lse_merge(st, part[j]);
        s += dx[j];
    }
    if (sdx) *sdx = s;
    return st;
}

// One row with the shared arithmetic, element by element: the reference and the f64 path.
template <class T>
void ce_row_portable(const CeCall<T>& c, const T* x, int64_t y, T* loss, T* lse_out, T* g) {
    const bool skip = ce_row_skipped(c, y);
    const T x_y = skip ? T(0) : x[y];
    const T pivot = detail::ce_pivot(x_y);
    T sdx = 0;
    const LseState<T> st = row_lse_portable(x, c.K, c.w, c.pad, pivot, &sdx);
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
        g[k] = detail::ce_grad(c.scale, W, grad_prob(detail::softmax_prob(x[k], st.m, log_s), c.p_floor),
                               detail::smooth_target(c.sw, k, y, c.pad), c.w ? c.w[k] : T(1));
}

// ---- AVX-512 f32 paths ------------------------------------------------------------------------
#if defined(LSG_X86_64)
LSG_TARGET_BEGIN_AVX512

// e^x for 16 floats, about 1 ulp: Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, Cephes' degree-6
// polynomial for e^r, then scalef by 2^n. Never subnormal: the arithmetic runs on x clamped to
// [lm_exp_floor, 89] (so every lane's result, used or not, is a normal number or +inf), and lanes
// below the floor, −inf included, then select exactly 0. +inf gives +inf; NaN stays NaN (the clamps
// return their second operand when it is NaN, and an unordered compare selects nothing).
inline __m512 exp16(__m512 x) {
    const __m512 floor = _mm512_set1_ps(detail::lm_exp_floor(0.0f));
    const __mmask16 zero = _mm512_cmp_ps_mask(x, floor, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(floor, x));
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
    return _mm512_mask_mov_ps(_mm512_scalef_ps(e, n), zero, _mm512_setzero_ps());
}

// p where p ≥ floor or p is NaN, else 0 (grad_prob for 16 lanes).
inline __m512 grad_prob16(__m512 p, __m512 floor) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, floor, _CMP_NLT_UQ), p);
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
    g[y] = detail::ce_grad(c.scale, W, grad_prob(detail::softmax_prob(x[y], m, log_s), c.p_floor), c.sw.on,
                           Weighted ? c.w[y] : 1.0f);
    if (c.pad >= 0)
        g[c.pad] = detail::ce_grad(c.scale, W, grad_prob(detail::softmax_prob(x[c.pad], m, log_s), c.p_floor), 0.0f,
                                   Weighted ? c.w[c.pad] : 1.0f);
}

// K ≤ 16, a row at a time: the row is one vector; its exponentials are reused for the gradient.
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
        // p = e / S, except that an all-masked row keeps the portable path's NaN. e below floor·S
        // gives p = 0 (grad_prob), decided before the division so that no subnormal is formed.
        const __m512 p = empty ? exp16(_mm512_sub_ps(v, _mm512_set1_ps(lse)))
                               : _mm512_mul_ps(grad_prob16(e, _mm512_set1_ps(c.p_floor * S)), _mm512_set1_ps(1.0f / S));
        // q·w: off·w_k, on·w_y at the target, 0 at the padding class.
        __m512 qw = _mm512_mask_mov_ps(offw, static_cast<__mmask16>(1u << y), _mm512_set1_ps(c.sw.on * w_y));
        if (c.pad >= 0) qw = _mm512_mask_mov_ps(qw, static_cast<__mmask16>(1u << c.pad), _mm512_setzero_ps());
        const __m512 scale = _mm512_set1_ps(c.scale);
        _mm512_mask_storeu_ps(gi, m, _mm512_mul_ps(scale, _mm512_fmsub_ps(_mm512_set1_ps(W), p, qw)));
    }
}

// ---- K ≤ 16, sixteen rows at a time ---------------------------------------------------------------
// One lane per row: the rows' statistics (max, Σ e^{x − max}, Σ w·(x − c), x_y) come from vertical
// arithmetic on the block's K columns, gathered, instead of horizontal reductions per row; the
// shared row formulas run on all 16 rows at once (F16 below); the gradient is written in the
// row-major layout, whose 16·K floats are exactly K full vectors, each lane fetching its row's
// statistics by a permutation.

// Sixteen f32, one per row, for the shared formulas of loss_math.h: they use only arithmetic and
// times_unless_zero. The lanes live in a 64-byte array, not in an __m512 member: the shared
// templates are compiled for the baseline ISA, where an __m512 passed by value has another calling
// convention than in this file's AVX-512 functions (without -march, the formulas would read
// garbage when not inlined); an aligned array is passed in memory by both.
struct F16 {
    alignas(64) float lane[16];
    F16(float x) {
        __m512 v = _mm512_set1_ps(x);
        // Hides that the lanes are equal. Knowing it, clang computes on such splats in lane 0 of a
        // full-width instruction whose other lanes hold stale register contents; a stale subnormal
        // there raises MXCSR.DE and costs a microcode assist on Intel, for a value then discarded.
        asm("" : "+v"(v));
        _mm512_store_ps(lane, v);
    }
    F16(__m512 x) { _mm512_store_ps(lane, x); }
    __m512 v() const { return _mm512_load_ps(lane); }
};
inline F16 operator+(const F16& a, const F16& b) { return _mm512_add_ps(a.v(), b.v()); }
inline F16 operator-(const F16& a, const F16& b) { return _mm512_sub_ps(a.v(), b.v()); }
inline F16 operator*(const F16& a, const F16& b) { return _mm512_mul_ps(a.v(), b.v()); }
// a·v where a ≠ 0 (a NaN compares unequal, so it multiplies), else exactly 0.
inline F16 times_unless_zero(const F16& a, const F16& v) {
    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(a.v(), _mm512_setzero_ps(), _CMP_NEQ_UQ), a.v(), v.v());
}

// ln x for 16 floats in [1, 2^24] (a row sum Σ e^{x − max} of at most 16 terms, the largest 1),
// within 2 ulp: x = m·2^e with m ∈ [0.75, 1.5), ln m = 2·atanh(s) = 2s·(1 + s²/3 + … + s⁸/9),
// s = (m − 1)/(m + 1) ∈ [−1/7, 1/5], where the next term is below 4e−9.
inline __m512 log16(__m512 x) {
    const __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_src);
    const __m512 one = _mm512_set1_ps(1.0f);
    // getmant halves a mantissa ≥ 1.5, whose exponent is then one more than getexp's.
    const __m512 e = _mm512_mask_add_ps(_mm512_getexp_ps(x), _mm512_cmp_ps_mask(m, one, _CMP_LT_OQ),
                                        _mm512_getexp_ps(x), one);
    const __m512 s = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    const __m512 s2 = _mm512_mul_ps(s, s);
    __m512 poly = _mm512_set1_ps(1.0f / 9.0f);
    poly = _mm512_fmadd_ps(poly, s2, _mm512_set1_ps(1.0f / 7.0f));
    poly = _mm512_fmadd_ps(poly, s2, _mm512_set1_ps(1.0f / 5.0f));
    poly = _mm512_fmadd_ps(poly, s2, _mm512_set1_ps(1.0f / 3.0f));
    const __m512 ln_m = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_add_ps(s, s), s2), poly, _mm512_add_ps(s, s));
    // e·ln 2 with ln 2 split so that e·ln2_hi is exact.
    return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693145751953125f),
                           _mm512_fmadd_ps(e, _mm512_set1_ps(1.428606765330187e-06f), ln_m));
}

// For each of the K vectors of a block, every element's row and column (element 16j + l of the
// block is row (16j + l) / K, column (16j + l) % K), and the gather offsets of the rows.
struct SmallBlockLayout {
    __m512i row[16];
    __m512i col[16];
    __m512i first;  // lane·K: the offset of each row's first logit
    explicit SmallBlockLayout(int64_t K) {
        for (int64_t j = 0; j < K; ++j) {
            alignas(64) int32_t r[16], k[16];
            for (int l = 0; l < 16; ++l) {
                r[l] = static_cast<int32_t>((16 * j + l) / K);
                k[l] = static_cast<int32_t>((16 * j + l) % K);
            }
            row[j] = _mm512_load_si512(r);
            col[j] = _mm512_load_si512(k);
        }
        first = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                   _mm512_set1_epi32(static_cast<int32_t>(K)));
    }
};

// The 16 rows at x [16, K] with targets t [16]. Returns false, having written nothing, when a row
// holds a NaN or has no finite maximum (all −inf, or +inf): the row-at-a-time path keeps the
// portable path's conventions for those.
template <bool Weighted>
bool ce_block16_avx512(const CeCall<float>& c, const SmallBlockLayout& lay, const float* x, const int64_t* t,
                       float* loss, float* lse_out, float* g) {
    const int64_t K = c.K;
    alignas(64) int32_t ys[16];
    __mmask16 live = 0;
    for (int l = 0; l < 16; ++l) {
        const bool skip = ce_row_skipped(c, t[l]);
        ys[l] = skip ? -1 : static_cast<int32_t>(t[l]);
        live |= static_cast<__mmask16>(!skip) << l;
    }
    const __m512i yv = _mm512_load_si512(ys);
    const __m512 zero = _mm512_setzero_ps();
    __m512 col[16];
    __m512 M = _mm512_set1_ps(-INFINITY);
    __mmask16 nan = 0;
    for (int64_t k = 0; k < K; ++k) {
        col[k] = _mm512_i32gather_ps(_mm512_add_epi32(lay.first, _mm512_set1_epi32(static_cast<int32_t>(k))), x, 4);
        nan |= _mm512_cmp_ps_mask(col[k], col[k], _CMP_UNORD_Q);
        M = _mm512_max_ps(M, col[k]);
    }
    if (nan || _mm512_cmp_ps_mask(_mm512_sub_ps(M, M), zero, _CMP_NEQ_UQ)) return false;
    __m512 S = zero;
    for (int64_t k = 0; k < K; ++k) S = _mm512_add_ps(S, exp16(_mm512_sub_ps(col[k], M)));
    const __m512 log_s = log16(S);
    if (lse_out) _mm512_storeu_ps(lse_out, _mm512_add_ps(M, log_s));
    // x_y of the live rows (0 elsewhere), the pivot and Σ_{k ≠ pad} w_k·(x_k − pivot).
    const __m512 x_y = _mm512_mask_i32gather_ps(zero, live, _mm512_add_epi32(lay.first, yv), x, 4);
    const __m512 pivot = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_sub_ps(x_y, x_y), zero, _CMP_EQ_OQ), x_y);
    __m512 sdx = zero;
    if (c.sw.off != 0.0f)
        for (int64_t k = 0; k < K; ++k) {
            if (k == c.pad) continue;
            const __m512 d = _mm512_sub_ps(col[k], pivot);
            sdx = Weighted ? _mm512_fmadd_ps(_mm512_set1_ps(c.w[k]), d, sdx) : _mm512_add_ps(sdx, d);
        }
    const __m512 w_y = Weighted ? _mm512_mask_i32gather_ps(zero, live, yv, c.w, 4) : _mm512_set1_ps(1.0f);
    const SmoothWeights<F16> sw{F16(c.sw.on), F16(c.sw.off)};
    const F16 row_loss = detail::ce_row_loss<F16>(sw, _mm512_add_ps(_mm512_sub_ps(M, pivot), log_s),
                                                  _mm512_sub_ps(x_y, pivot), w_y, c.sum_w, sdx);
    _mm512_storeu_ps(loss, _mm512_maskz_mov_ps(live, row_loss.v()));
    if (!g) return true;
    // g = scale·(W·p − q·w), with q·w = off·w_k, on·w_y at the target, 0 at the padding class, and
    // 0 for a skipped row; p as in the row path (grad_prob before the division).
    const __m512 W = detail::ce_row_mass<F16>(sw, w_y, c.sum_w).v();
    const __m512 onw = _mm512_mul_ps(_mm512_set1_ps(c.sw.on), w_y), sfloor = _mm512_mul_ps(_mm512_set1_ps(c.p_floor), S),
                 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), S), scale = _mm512_set1_ps(c.scale),
                 off = _mm512_set1_ps(c.sw.off);
    const __m512i liv = _mm512_maskz_set1_epi32(live, 1), pad = _mm512_set1_epi32(static_cast<int32_t>(c.pad));
    for (int64_t j = 0; j < K; ++j) {
        const __m512i r = lay.row[j], k = lay.col[j];
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + 16 * j), _mm512_permutexvar_ps(r, M)));
        const __m512 p = _mm512_mul_ps(grad_prob16(e, _mm512_permutexvar_ps(r, sfloor)), _mm512_permutexvar_ps(r, inv));
        __m512 qw = Weighted ? _mm512_mul_ps(off, _mm512_i32gather_ps(k, c.w, 4)) : off;
        qw = _mm512_mask_mov_ps(qw, _mm512_cmpeq_epi32_mask(_mm512_permutexvar_epi32(r, yv), k),
                                _mm512_permutexvar_ps(r, onw));
        qw = _mm512_mask_mov_ps(qw, _mm512_cmpeq_epi32_mask(k, pad), zero);
        const __m512i row_live = _mm512_permutexvar_epi32(r, liv);
        const __m512 gv = _mm512_mul_ps(scale, _mm512_fmsub_ps(_mm512_permutexvar_ps(r, W), p, qw));
        _mm512_storeu_ps(g + 16 * j, _mm512_maskz_mov_ps(_mm512_test_epi32_mask(row_live, row_live), gv));
    }
    return true;
}

// K ≤ 16: blocks of 16 rows (ce_block16_avx512); the last rows and the blocks it declines row by row.
template <bool Weighted>
void ce_rows_small_blocked_avx512(const CeCall<float>& c, const float* x, const int64_t* target, int64_t r0,
                                  int64_t r1, float* loss, float* lse_out, float* grad) {
    const SmallBlockLayout lay(c.K);
    int64_t i = r0;
    for (; i + 16 <= r1; i += 16) {
        if (!ce_block16_avx512<Weighted>(c, lay, x + i * c.K, target + i, loss + i, lse_out ? lse_out + i : nullptr,
                                         grad ? grad + i * c.K : nullptr))
            ce_rows_small_avx512<Weighted>(c, x, target, i, i + 16, loss, lse_out, grad);
    }
    ce_rows_small_avx512<Weighted>(c, x, target, i, r1, loss, lse_out, grad);
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
        const __m512 voff = _mm512_set1_ps(c.sw.off), vfloor = _mm512_set1_ps(c.p_floor);
        auto grad16 = [&](int64_t k, __mmask16 m) {
            const __m512 v = _mm512_maskz_loadu_ps(m, xi + k);
            const __m512 q = Weighted ? _mm512_mul_ps(voff, _mm512_maskz_loadu_ps(m, c.w + k)) : voff;
            const __m512 p = grad_prob16(exp16(_mm512_sub_ps(_mm512_sub_ps(v, vm), vls)), vfloor);
            return _mm512_mul_ps(vs, _mm512_fmsub_ps(vW, p, q));
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
        ce_rows_small_blocked_avx512<Weighted>(c, x, target, r0, r1, loss, lse_out, grad);
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

// Σ_k e^{x_k − m} over x [n] in 16 lane sums, storing each term in out when out is not null.
float exp_shift_sum_avx512(const float* x, int64_t n, float m, float* out) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 vsum = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + k), vm));
        if (out) _mm512_storeu_ps(out + k, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (k < n) {
        const __mmask16 mt = tail_mask(n - k);
        const __m512 e = _mm512_maskz_mov_ps(mt, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mt, x + k), vm)));
        if (out) _mm512_mask_storeu_ps(out + k, mt, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    return _mm512_reduce_add_ps(vsum);
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
    for (int64_t k = 0; k < K; ++k) sum_w += detail::class_mass_term(w, k, c.pad);
    c.sum_w = static_cast<T>(sum_w);

    // The Mean denominator from the targets alone, so the gradient can be written in the same pass.
    const bool mean = a.reduction == Reduction::Mean || a.reduction == Reduction::BatchMean;
    double denom = 0.0;
    if (mean)
        for (int64_t i = 0; i < N; ++i) denom += detail::mean_denominator_term(w, a.target[i], c.ignore, c.pad);
    const double inv = detail::reduction_scale(mean, denom);
    c.scale = static_cast<T>(inv);
    T w_min = std::numeric_limits<T>::infinity();
    for (int64_t k = 0; k < K; ++k) {
        const T W = detail::ce_row_mass(c.sw, w ? w[k] : T(1), c.sum_w);
        if (k != c.pad && W > T(0) && W < w_min) w_min = W;
    }
    c.p_floor = grad_prob_floor(c.scale, w_min);

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
    if (a.reduction != Reduction::None) reduce_rows(loss, N, inv, static_cast<T*>(a.reduced));
}

// ---- probability-target cross-entropy ----------------------------------------------------------

template <class T>
LseState<T> row_lse(const T* x, int64_t K, [[maybe_unused]] bool vector) {
#if defined(LSG_X86_64)
    if constexpr (std::is_same_v<T, float>) {
        if (vector) return row_lse_avx512(x, K);
    }
#endif
    return row_lse_portable<T>(x, K, nullptr, -1, T(0), nullptr);
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
    const double inv = detail::reduction_scale(mean, static_cast<double>(N));
    const T scale = static_cast<T>(inv);
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
                const T floor = grad_prob_floor(scale, W);
                for (int64_t k = 0; k < K; ++k)
                    gi[k] = detail::ce_grad(scale, W, grad_prob(detail::softmax_prob(xi[k], st.m, log_s), floor),
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
void scale_rows_impl(const ScaleRowsArgs& a) {
    const T* G = static_cast<const T*>(a.saved_grad);
    const T* g = static_cast<const T*>(a.upstream);
    T* out = static_cast<T*>(a.out);
    const int64_t cols = a.cols;
    for_row_blocks(a.rows, a.rows * cols, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; ++i) {
            const T s = a.per_row ? g[i] : g[0];
            const T* Gi = G + i * cols;
            T* oi = out + i * cols;
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) oi[j] = Gi[j] * s;
        }
    });
}

template <class T>
void nll_impl(const NllLossArgs& a) {
    const int64_t N = a.rows, K = a.classes, ignore = a.ignore_index;
    const T* lp = static_cast<const T*>(a.log_probs);
    const T* w = static_cast<const T*>(a.weight);
    const int64_t* target = a.target;
    T* loss = static_cast<T*>(a.row_loss);
    T* grad = static_cast<T*>(a.grad);
    const bool mean = a.reduction == Reduction::Mean || a.reduction == Reduction::BatchMean;
    double denom = 0.0;
    for (int64_t i = 0; i < N; ++i) denom += detail::mean_denominator_term(w, target[i], ignore, int64_t(-1));
    const double inv = detail::reduction_scale(mean, denom);
    const T scale = static_cast<T>(inv);
    for_row_blocks(N, N * K, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; ++i) {
            const int64_t y = target[i];
            const bool skip = detail::index_row_skipped(y, ignore, -1);
            const T w_y = skip ? T(0) : (w ? w[y] : T(1));
            loss[i] = skip ? T(0) : -w_y * lp[i * K + y];
            if (grad) {
                std::fill(grad + i * K, grad + (i + 1) * K, T(0));
                if (!skip) grad[i * K + y] = -scale * w_y;
            }
        }
    });
    if (a.reduction != Reduction::None) reduce_rows(loss, N, inv, static_cast<T*>(a.reduced));
}

template <class T>
void kl_div_impl(const KlDivArgs& a) {
    const T* input = static_cast<const T*>(a.input);
    const T* target = static_cast<const T*>(a.target);
    T* out = static_cast<T*>(a.out);
    T* gi = static_cast<T*>(a.grad_input);
    T* gt = static_cast<T*>(a.grad_target);
    const T scale = static_cast<T>(a.scale);
    for_row_blocks(a.n, a.n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) detail::kl_element(i, input, target, a.log_target, scale, out, gi, gt);
    });
}

template <class T>
void bce_impl(const BceWithLogitsArgs& a) {
    const T* x = static_cast<const T*>(a.input);
    const T* t = static_cast<const T*>(a.target);
    const T* pw = static_cast<const T*>(a.pos_weight);
    const T* w = static_cast<const T*>(a.weight);
    T* out = static_cast<T*>(a.out);
    T* gx = static_cast<T*>(a.grad_input);
    T* gt = static_cast<T*>(a.grad_target);
    const T scale = static_cast<T>(a.scale);
    const int64_t inner = a.inner;
    const auto sm = detail::binary_smoothing<T>(a.label_smoothing);
    for_row_blocks(a.outer, a.outer * inner, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0 * inner; i < r1 * inner; ++i)
            detail::bce_element(i, inner, x, t, pw, w, sm, scale, out, gx, gt);
    });
}

// Every entry point picks the element type with visit_dtype and runs on the calling thread (the
// CPU has one stream: the work is done when the call returns).
class CpuLossKernels final : public LossKernels {
public:
    void cross_entropy_index(const KernelContext&, const CrossEntropyIndexArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { cross_entropy_index_impl<T>(a); });
    }
    void cross_entropy_prob(const KernelContext&, const CrossEntropyProbArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { cross_entropy_prob_impl<T>(a); });
    }
    void scale_rows(const KernelContext&, const ScaleRowsArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { scale_rows_impl<T>(a); });
    }
    void nll_loss(const KernelContext&, const NllLossArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { nll_impl<T>(a); });
    }
    void sum(const KernelContext&, const SumArgs& a) override {
        visit_dtype<float, double>(
            a.dtype, [&]<class T>() { reduce_rows(static_cast<const T*>(a.x), a.n, a.scale, static_cast<T*>(a.out)); });
    }
    void kl_div(const KernelContext&, const KlDivArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { kl_div_impl<T>(a); });
    }
    void bce_with_logits(const KernelContext&, const BceWithLogitsArgs& a) override {
        visit_dtype<float, double>(a.dtype, [&]<class T>() { bce_impl<T>(a); });
    }
};

}  // namespace

float detail::exp_shift_sum_f32(const float* x, int64_t n, float m, float* out) {
#if defined(LSG_X86_64)
    if (vector_f32()) return exp_shift_sum_avx512(x, n, m, out);
#endif
    float s = 0.0f;
    for (int64_t k = 0; k < n; ++k) {
        const float e = detail::lm_exp_normal(x[k] - m);
        if (out) out[k] = e;
        s += e;
    }
    return s;
}

LossKernels& cpu_loss_kernels() {
    static CpuLossKernels kernels;
    return kernels;
}

}  // namespace lsg

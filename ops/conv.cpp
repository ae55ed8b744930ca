// Convolution and pooling: forward, backward and the OpenMP CPU kernels.
#include "lsgrad/ops/conv.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/checked.h"
#include "lsgrad/core/parallel.h"
#include "lsgrad/ops/conv_math.h"
#include "lsgrad/ops/cpu_isa.h"
#include "lsgrad/ops/cpu_kernels.h"
#include "lsgrad/ops/elementwise_math.h"
#include "lsgrad/ops/gemm.h"
#include "lsgrad/ops/reduce.h"

#if defined(LSG_X86_64)
// GCC 12's AVX-512 intrinsics expand through _mm*_undefined_*(), which -Wmaybe-uninitialized
// reports inside the compiler's own header (a known false positive); silence it for this file.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

namespace lsg {

// ================================ CPU kernels ====================================================

namespace {

// relu' of the ReLU's output y: y > 0 exactly where its input was (a NaN input gives y = 0, as it
// gives relu'(x) = 0), so the fused backward masks with the output it keeps.
template <class T>
inline T relu_grad(T grad, T y) {
    return grad * detail::unary_derivative(UnaryOp::relu, y, y, T(0), T(0));
}

// The columns [j0, j1) of kernel offset v whose input pixel lies inside the image (the rest read
// the zero padding): j·s_w + v − p_w ∈ [0, W).
struct ColumnRange {
    int64_t j0, j1;
};

ColumnRange inside_columns(const Window2d& g, int64_t v) {
    const int64_t j0 = std::clamp<int64_t>((g.pad_w - v + g.stride_w - 1) / g.stride_w, 0, g.out_w);
    const int64_t j1 = std::clamp<int64_t>((g.width + g.pad_w - v + g.stride_w - 1) / g.stride_w, j0, g.out_w);
    return {j0, j1};
}

// Short runs (an MNIST row is 14 or 28 pixels, a padding run one): compilers turn a plain copy or
// fill loop into a memcpy/memset call, which costs more than the run itself. These move fixed
// 64-, 32- and 16-byte blocks, which compile to vector moves, overlapping the last block with the
// one before instead of looping over a tail; runs over two blocks long do call memcpy/memset.
template <class T>
inline void copy_run(T* __restrict d, const T* __restrict s, int64_t n) {
    constexpr int64_t V = 64 / sizeof(T);
    if (n > 2 * V) {
        std::memcpy(d, s, size_t(n) * sizeof(T));  // long enough to pay for the call
    } else if (n >= V) {
        std::memcpy(d, s, 64);
        std::memcpy(d + n - V, s + n - V, 64);
    } else if (n >= V / 2) {
        std::memcpy(d, s, 32);
        std::memcpy(d + n - V / 2, s + n - V / 2, 32);
    } else if (n >= V / 4) {
        std::memcpy(d, s, 16);
        std::memcpy(d + n - V / 4, s + n - V / 4, 16);
    } else {
        // A fixed trip count with a guard: a loop up to n would become a memcpy call again.
        for (int64_t j = 0; j < V / 4 - 1; ++j)
            if (j < n) d[j] = s[j];
    }
}

template <class T>
inline void zero_run(T* d, int64_t n) {
    constexpr int64_t V = 64 / sizeof(T);
    if (n > 2 * V) {
        std::memset(d, 0, size_t(n) * sizeof(T));
    } else if (n >= V) {
        std::memset(d, 0, 64);
        std::memset(d + n - V, 0, 64);
    } else if (n >= V / 2) {
        std::memset(d, 0, 32);
        std::memset(d + n - V / 2, 0, 32);
    } else if (n >= V / 4) {
        std::memset(d, 0, 16);
        std::memset(d + n - V / 4, 0, 16);
    } else {
        for (int64_t j = 0; j < V / 4 - 1; ++j)
            if (j < n) d[j] = T(0);
    }
}

// A stride-1 layer whose output is as wide as its input ("same" padding, every 3×3 layer here):
// column row (c, u, v) is plane c shifted by (u − p_h, v − p_w). Its output rows [i0, i1) lie inside
// the image, and output index k of them pairs with plane[k + shift], except in the columns outside
// [j0, j1), which wrapped around a row end. [lo, hi) is that run clipped to the plane; what the
// clipping leaves out are wrapped columns of the first and last rows.
bool is_shifted_plane(const Window2d& g) { return g.stride_h == 1 && g.stride_w == 1 && g.out_w == g.width; }

struct ShiftedRun {
    ColumnRange inside;
    int64_t i0, i1, shift, lo, hi;
};

ShiftedRun shifted_run(const Window2d& g, int64_t u, int64_t v) {
    const int64_t W = g.width;
    ShiftedRun s{inside_columns(g, v), 0, 0, (u - g.pad_h) * W + (v - g.pad_w), 0, 0};
    s.i0 = std::clamp<int64_t>(g.pad_h - u, 0, g.out_h);
    s.i1 = std::clamp<int64_t>(g.height + g.pad_h - u, s.i0, g.out_h);
    s.lo = std::max(s.i0 * W, -s.shift);
    s.hi = std::min(s.i1 * W, g.height * W - s.shift);
    return s;
}

// Zeroes the wrapped columns of rows [i0, i1) of one column row d [oh·ow].
template <class T>
void zero_wrapped(T* d, const Window2d& g, const ShiftedRun& s) {
    for (int64_t i = s.i0; i < s.i1; ++i) {
        zero_run(d + i * g.width, s.inside.j0);
        zero_run(d + i * g.width + s.inside.j1, g.width - s.inside.j1);
    }
}

// One image's columns: cols[(c·kh + u)·kw + v, i·ow + j] = img[c, i·s_h + u − p_h, j·s_w + v − p_w],
// or 0 in the padding. img is [C, H, W], cols [C·kh·kw, oh·ow].
template <class T>
void im2col_image(const T* __restrict img, const Window2d& g, T* __restrict cols) {
    const int64_t rows = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
    const bool shifted_plane = is_shifted_plane(g);
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t c = r / (g.kernel_h * g.kernel_w), u = r / g.kernel_w % g.kernel_h, v = r % g.kernel_w;
        const T* plane = img + c * g.height * g.width;
        if (shifted_plane) {
            // The rows inside the image copy as one run; the rest, and the wrapped columns, are zeros.
            const ShiftedRun s = shifted_run(g, u, v);
            T* d = cols + r * L;
            zero_run(d, s.i0 * g.width);
            zero_run(d + s.i1 * g.width, (g.out_h - s.i1) * g.width);
            if (s.hi > s.lo) copy_run(d + s.lo, plane + (s.lo + s.shift), s.hi - s.lo);
            zero_wrapped(d, g, s);
            continue;
        }
        const ColumnRange cols_in = inside_columns(g, v);
        const int64_t j0 = cols_in.j0, j1 = cols_in.j1;
        for (int64_t i = 0; i < g.out_h; ++i) {
            const int64_t h = i * g.stride_h + u - g.pad_h;
            T* d = cols + r * L + i * g.out_w;
            if (h < 0 || h >= g.height) {
                zero_run(d, g.out_w);
                continue;
            }
            const T* s0 = plane + h * g.width + j0 * g.stride_w + v - g.pad_w;
            zero_run(d, j0);
            if (g.stride_w == 1) {
                copy_run(d + j0, s0, j1 - j0);
            } else {
                for (int64_t j = j0; j < j1; ++j) d[j] = s0[(j - j0) * g.stride_w];
            }
            zero_run(d + j1, g.out_w - j1);
        }
    }
}

// The adjoint of im2col_image: each column entry is added to the pixel of img [C, H, W] it was read
// from (entries read from the padding are dropped).
template <class T>
void col2im_image(const T* __restrict cols, const Window2d& g, T* __restrict img) {
    const int64_t L = g.out_h * g.out_w;
    for (int64_t c = 0; c < g.channels; ++c) {
        T* plane = img + c * g.height * g.width;
        for (int64_t u = 0; u < g.kernel_h; ++u)
            for (int64_t v = 0; v < g.kernel_w; ++v) {
                const T* src = cols + ((c * g.kernel_h + u) * g.kernel_w + v) * L;
                const ColumnRange cols_in = inside_columns(g, v);
                const int64_t j0 = cols_in.j0, j1 = cols_in.j1;
                for (int64_t i = 0; i < g.out_h; ++i) {
                    const int64_t h = i * g.stride_h + u - g.pad_h;
                    if (h < 0 || h >= g.height) continue;
                    T* dst = plane + h * g.width + j0 * g.stride_w + v - g.pad_w;
                    const T* from = src + i * g.out_w;
                    if (g.stride_w == 1) {
#pragma omp simd
                        for (int64_t j = j0; j < j1; ++j) dst[j - j0] += from[j];
                    } else {
                        for (int64_t j = j0; j < j1; ++j) dst[(j - j0) * g.stride_w] += from[j];
                    }
                }
            }
    }
}

// col2im_image for columns the caller no longer needs (the fused backward's scratch): a stride-1
// "same" layer adds each shifted plane as one run (see im2col_image) after zeroing the entries of
// the columns that wrapped around a row end, so that the run adds 0 where they land.
template <class T>
void col2im_image_consuming(T* __restrict cols, const Window2d& g, T* __restrict img) {
    if (!is_shifted_plane(g)) return col2im_image(cols, g, img);
    const int64_t L = g.out_h * g.out_w;
    for (int64_t r = 0; r < g.channels * g.kernel_h * g.kernel_w; ++r) {
        const int64_t c = r / (g.kernel_h * g.kernel_w), u = r / g.kernel_w % g.kernel_h, v = r % g.kernel_w;
        const ShiftedRun s = shifted_run(g, u, v);
        T* d = cols + r * L;
        zero_wrapped(d, g, s);
        if (s.hi <= s.lo) continue;
        T* to = img + c * g.height * g.width + (s.lo + s.shift);
        const T* from = d + s.lo;
#pragma omp simd
        for (int64_t k = 0; k < s.hi - s.lo; ++k) to[k] += from[k];
    }
}

// C = op(A)·op(B) + beta·C in the element type: the CPU GEMM of gemm.h, alpha = 1. Leading
// dimensions are at least 1 (BLAS's rule), so that an empty operand (no input channels) passes.
void gemm_typed(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
    detail::gemm_f32(ta, tb, m, n, k, 1.0f, a, std::max<int64_t>(lda, 1), b, std::max<int64_t>(ldb, 1), beta, c,
                     std::max<int64_t>(ldc, 1));
}
void gemm_typed(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
                int64_t ldb, double beta, double* c, int64_t ldc) {
    detail::gemm_f64(ta, tb, m, n, k, 1.0, a, std::max<int64_t>(lda, 1), b, std::max<int64_t>(ldb, 1), beta, c,
                     std::max<int64_t>(ldc, 1));
}

// Images per partial weight gradient in conv2d_backward: a fixed count, so that dW's summation order
// (images in order within a group, then groups in order) does not depend on the thread count.
constexpr int64_t kImagesPerGradGroup = 8;


}  // namespace

void CpuTensorKernels::im2col(const KernelContext&, const Tensor& x, const Window2d& g, Tensor& cols) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* cp = static_cast<T*>(cols.raw_data());
        const int64_t image = g.channels * g.height * g.width;
#pragma omp parallel for schedule(static) if (g.batch > 1 && cols.numel() >= kParallelGrain)
        for (int64_t n = 0; n < g.batch; ++n) im2col_image(xp + n * image, g, cp + detail::col_offset(g, n, 0));
    });
}

void CpuTensorKernels::col2im(const KernelContext&, const Tensor& cols, const Window2d& g, Tensor& dx) {
    visit_dtype(dx.dtype(), [&]<class T>() {
        const T* cp = static_cast<const T*>(cols.raw_data());
        T* xp = static_cast<T*>(dx.raw_data());
        const int64_t image = g.channels * g.height * g.width;
        // Each image is written by one thread, in a fixed order.
#pragma omp parallel for schedule(static) if (g.batch > 1 && cols.numel() >= kParallelGrain)
        for (int64_t n = 0; n < g.batch; ++n) col2im_image(cp + detail::col_offset(g, n, 0), g, xp + n * image);
    });
}

namespace {

#if defined(LSG_X86_64)
// One [H, W] plane of a 2×2, stride-2, unpadded f32 max-pool with AVX-512: each output row's
// windows are de-interleaved into four candidate vectors (top-left, top-right, bottom-left,
// bottom-right, the raster order) and reduced with masked selects that follow pool_takes exactly.
// A scalar loop mispredicts its compare on about every other element of real activations.
// Loads are full 32-float reads wherever they stay before `end` (one past the input tensor), the
// lanes past the row being discarded: a masked load whose mask leaves lanes off ran 3× slower than
// a plain one on AMD Zen 5 (the 28-pixel rows of an MNIST layer), so only the tensor's last rows
// use them.
LSG_TARGET_AVX512 void pool2x2_plane_avx512(const float* img, const float* end, const Window2d& g, float* out,
                                            int64_t* arg) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t i = 0; i < g.out_h; ++i) {
        const float* r0 = img + 2 * i * g.width;
        const float* r1 = r0 + g.width;
        for (int64_t j0 = 0; j0 < g.out_w; j0 += 16) {
            const int64_t n = std::min<int64_t>(16, g.out_w - j0);
            const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
            const __mmask16 lo = static_cast<__mmask16>((1u << std::min<int64_t>(2 * n, 16)) - 1);
            const __mmask16 hi = static_cast<__mmask16>(2 * n > 16 ? (1u << (2 * n - 16)) - 1 : 0);
            __m512 a0, a1, b0, b1;
            if (end - (r1 + 2 * j0) >= 32) {
                a0 = _mm512_loadu_ps(r0 + 2 * j0), a1 = _mm512_loadu_ps(r0 + 2 * j0 + 16);
                b0 = _mm512_loadu_ps(r1 + 2 * j0), b1 = _mm512_loadu_ps(r1 + 2 * j0 + 16);
            } else {
                a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * j0), a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * j0 + 16);
                b0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * j0), b1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * j0 + 16);
            }
            const __m512 c[4] = {_mm512_permutex2var_ps(a0, even, a1), _mm512_permutex2var_ps(a0, odd, a1),
                                 _mm512_permutex2var_ps(b0, even, b1), _mm512_permutex2var_ps(b0, odd, b1)};
            __m512 best = c[0];
            __m512i q = _mm512_setzero_si512();
            for (int t = 1; t < 4; ++t) {
                // pool_takes: val > best, or val is NaN while best is not.
                const __mmask16 takes = _mm512_cmp_ps_mask(c[t], best, _CMP_GT_OQ) |
                                        (_mm512_cmp_ps_mask(c[t], c[t], _CMP_UNORD_Q) &
                                         _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
                best = _mm512_mask_mov_ps(best, takes, c[t]);
                q = _mm512_mask_mov_epi32(q, takes, _mm512_set1_epi32(t));
            }
            _mm512_mask_storeu_ps(out + i * g.out_w + j0, m, best);
            // index = 2i·W + 2j + (q & 1) + (q >> 1)·W, in 64 bits.
            const __m512i col = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(j0))), 1),
                                                 _mm512_and_si512(q, _mm512_set1_epi32(1)));
            const __m512i row = _mm512_srli_epi32(q, 1);
            for (int half = 0; half < 2; ++half) {
                const __m512i c64 = _mm512_cvtepi32_epi64(half ? _mm512_extracti32x8_epi32(col, 1) : _mm512_castsi512_si256(col));
                const __m512i r64 = _mm512_cvtepi32_epi64(half ? _mm512_extracti32x8_epi32(row, 1) : _mm512_castsi512_si256(row));
                const __m512i idx = _mm512_add_epi64(_mm512_add_epi64(c64, _mm512_set1_epi64(2 * i * g.width)),
                                                     _mm512_mullo_epi64(r64, _mm512_set1_epi64(g.width)));
                _mm512_mask_storeu_epi64(arg + i * g.out_w + j0 + 8 * half, static_cast<__mmask8>(m >> (8 * half)), idx);
            }
        }
    }
}

#endif  // LSG_X86_64

// The vector path for one plane when the CPU has it (false: use the portable search).
template <class T>
bool pool2x2_fast([[maybe_unused]] const T* img, [[maybe_unused]] const T* end, [[maybe_unused]] const Window2d& g,
                  [[maybe_unused]] T* out, [[maybe_unused]] int64_t* arg) {
#if defined(LSG_X86_64)
    if constexpr (std::is_same_v<T, float>) {
        if (detail::cpu_isa() == detail::CpuIsa::avx512) {
            pool2x2_plane_avx512(img, end, g, out, arg);
            return true;
        }
    }
#endif
    return false;
}

// One plane img [H, W] of max_pool2d with window g: out and arg [oh, ow]. `end` is one past the
// buffer img lies in (the vector path reads full vectors up to it).
template <class T>
void pool_plane(const T* img, const T* end, const Window2d& g, T* out, int64_t* arg) {
    // The common 2×2, stride-2, unpadded window (every CNN here) has a vector path; other windows,
    // and CPUs without AVX-512, go through the shared per-window search.
    const bool two_by_two = g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 &&
                            g.pad_h == 0 && g.pad_w == 0;
    if (two_by_two && pool2x2_fast(img, end, g, out, arg)) return;
    for (int64_t i = 0; i < g.out_h; ++i)
        for (int64_t j = 0; j < g.out_w; ++j) {
            const detail::WindowMax<T> m = detail::pool_window_max(img, g, i, j);
            out[i * g.out_w + j] = m.value;
            arg[i * g.out_w + j] = m.index;
        }
}

// The adjoint of pool_plane for one plane: d [H, W] = Σ over windows k whose argmax is h of
// grad[k]·relu'(out[k]) when relu (out: the pooled ReLU output), else of grad[k]. Writes all of d.
// Windows that do not overlap and have no padding (every CNN's 2×2 pool) have distinct argmaxes,
// so each lands with a plain store instead of a load-add-store.
template <class T>
void unpool_plane(const T* __restrict grad, const T* __restrict out, const int64_t* __restrict arg, const Window2d& g,
                  bool relu, T* __restrict d) {
    const int64_t L = g.out_h * g.out_w;
    std::fill_n(d, g.height * g.width, T(0));
    const bool disjoint = g.kernel_h <= g.stride_h && g.kernel_w <= g.stride_w && g.pad_h == 0 && g.pad_w == 0;
    if (disjoint && relu)
        for (int64_t k = 0; k < L; ++k) d[arg[k]] = relu_grad(grad[k], out[k]);
    else if (disjoint)
        for (int64_t k = 0; k < L; ++k) d[arg[k]] = grad[k];
    else if (relu)
        for (int64_t k = 0; k < L; ++k) d[arg[k]] += relu_grad(grad[k], out[k]);
    else
        for (int64_t k = 0; k < L; ++k) d[arg[k]] += grad[k];
}

}  // namespace

void CpuTensorKernels::max_pool2d(const KernelContext&, const Tensor& x, const Window2d& g, Tensor& out,
                                  Tensor& argmax) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* op = static_cast<T*>(out.raw_data());
        int64_t* ap = argmax.data<int64_t>();
        const int64_t planes = g.batch * g.channels, L = g.out_h * g.out_w;
#pragma omp parallel for schedule(static) if (planes * g.height * g.width >= kParallelGrain)
        for (int64_t p = 0; p < planes; ++p)
            pool_plane(xp + p * g.height * g.width, xp + x.numel(), g, op + p * L, ap + p * L);
    });
}

void CpuTensorKernels::max_pool2d_backward(const KernelContext&, const Tensor& grad, const Tensor& argmax,
                                           const Window2d& g, Tensor& dx) {
    visit_dtype(grad.dtype(), [&]<class T>() {
        const T* gp = static_cast<const T*>(grad.raw_data());
        const int64_t* ap = argmax.data<int64_t>();
        T* dp = static_cast<T*>(dx.raw_data());
        const int64_t planes = g.batch * g.channels, L = g.out_h * g.out_w;
        const int64_t HW = g.height * g.width;
        // Each plane is zeroed just before its scatter, while it is in cache: no separate pass
        // zeroes dx first.
#pragma omp parallel for schedule(static) if (planes * HW >= kParallelGrain)
        for (int64_t p = 0; p < planes; ++p) unpool_plane<T>(gp + p * L, nullptr, ap + p * L, g, false, dp + p * HW);
    });
}

// Per image: im2col into this thread's scratch (L2-sized for MNIST-class layers), the bias rows, the
// GEMM reading the columns while they are hot, then the epilogue while the output is: the ReLU, and
// the pool from scratch, so that a pooled layer never stores its full-size output. No
// [N, C·kh·kw, oh·ow] buffer is written.
void CpuTensorKernels::conv2d(const KernelContext&, const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Window2d& g, const ConvEpilogue& e, Tensor& out, Tensor& argmax) {
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        const int64_t O = w.shape()[0], CKK = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
        const Window2d& pw = e.pool_window;
        const int64_t PL = pw.out_h * pw.out_w;
        const bool across = detail::gemm_batch_across_threads(g.batch, O * CKK * L);
        // Per thread: the columns, and the image's output when it is pooled.
        const int64_t per_slot = CKK * L + (e.pool ? O * L : 0);
        Tensor scratch = empty({across ? omp_get_max_threads() : 1, per_slot}, {.dtype = x.dtype()});
        const T* xp = static_cast<const T*>(x.raw_data());
        const T* wp = static_cast<const T*>(w.raw_data());
        const T* bp = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
        T* op = static_cast<T*>(out.raw_data());
        int64_t* ap = e.pool ? argmax.data<int64_t>() : nullptr;
        T* sp = static_cast<T*>(scratch.raw_data());
        guarded_parallel_for(g.batch, across, [&](int64_t n) {
            T* cols = sp + (across ? omp_get_thread_num() : 0) * per_slot;
            im2col_image(xp + n * g.channels * g.height * g.width, g, cols);
            T* y = e.pool ? cols + CKK * L : op + n * O * L;
            if (bp)
                for (int64_t r = 0; r < O; ++r) std::fill_n(y + r * L, L, bp[r]);
            gemm_typed(false, false, O, L, CKK, wp, CKK, cols, L, bp ? T(1) : T(0), y, L);
            if (e.relu) {
#pragma omp simd
                for (int64_t i = 0; i < O * L; ++i) y[i] = detail::apply_unary(UnaryOp::relu, y[i], T(0), T(0));
            }
            if (e.pool)
                for (int64_t r = 0; r < O; ++r)
                    pool_plane(y + r * L, y + O * L, pw, op + (n * O + r) * PL, ap + (n * O + r) * PL);
        });
    });
}

// Per group of kImagesPerGradGroup images, per image: g[n] formed in scratch (the pool's gradient
// unpooled, or grad[n], masked by the ReLU), its row sums added to the group's db, the columns again
// (cheaper than keeping [N, C·kh·kw, oh·ow] from the forward), dWᵀ's partial += cols·g[n]ᵀ,
// dcols = wᵀ·g[n] and their col2im into dx[n], all in one thread's cache. The groups' partials are
// summed in group order, so the summation order does not depend on the thread count.
void CpuTensorKernels::conv2d_backward(const KernelContext&, const Tensor& x, const Tensor& w, const Tensor& grad,
                                       const ConvEpilogue& e, const Tensor& out, const Tensor& argmax,
                                       const Window2d& g, Tensor& dx, Tensor& dw, Tensor& db) {
    visit_dtype<float, double>(x.dtype(), [&]<class T>() {
        const int64_t O = w.shape()[0], CKK = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
        const int64_t image = g.channels * g.height * g.width;
        const int64_t groups = (g.batch + kImagesPerGradGroup - 1) / kImagesPerGradGroup;
        const bool across = detail::gemm_batch_across_threads(groups, O * CKK * L);
        const int64_t slots = across ? omp_get_max_threads() : 1;
        const Window2d& pw = e.pool_window;
        const int64_t PL = pw.out_h * pw.out_w, GL = e.pool ? PL : L;  // grad's plane size
        const bool own_g = e.pool || e.relu;  // g[n] is formed in scratch
        // Per thread: the columns (for dw), dcols (for dx) and g of one image.
        const int64_t cols_size = dw.defined() ? CKK * L : 0, dcols_size = dx.defined() ? CKK * L : 0;
        const int64_t per_slot = cols_size + dcols_size + (own_g ? O * L : 0);
        const TensorOptions like{.dtype = x.dtype()};
        Tensor scratch = empty({slots, per_slot}, like);
        // Per group: dw's partial, transposed [CKK, O], then db's [O].
        const int64_t part_size = (dw.defined() ? O * CKK : 0) + (db.defined() ? O : 0);
        Tensor partial = empty({groups, part_size}, like);
        const T* xp = static_cast<const T*>(x.raw_data());
        const T* wp = static_cast<const T*>(w.raw_data());
        const T* gp = static_cast<const T*>(grad.raw_data());
        const T* yp = e.relu ? static_cast<const T*>(out.raw_data()) : nullptr;
        const int64_t* ap = e.pool ? argmax.data<int64_t>() : nullptr;
        T* sp = static_cast<T*>(scratch.raw_data());
        T* pp = static_cast<T*>(partial.raw_data());
        T* dxp = dx.defined() ? static_cast<T*>(dx.raw_data()) : nullptr;
        guarded_parallel_for(groups, across, [&](int64_t grp) {
            T* cols = sp + (across ? omp_get_thread_num() : 0) * per_slot;
            T* dcols = cols + cols_size;
            T* gs = dcols + dcols_size;
            T* pdw = dw.defined() ? pp + grp * part_size : nullptr;
            T* pdb = db.defined() ? pp + grp * part_size + part_size - O : nullptr;
            const int64_t n0 = grp * kImagesPerGradGroup, n1 = std::min(g.batch, n0 + kImagesPerGradGroup);
            for (int64_t n = n0; n < n1; ++n) {
                const T* gn = gp + n * O * GL;
                if (e.pool) {
                    for (int64_t r = 0; r < O; ++r) {
                        const int64_t at = (n * O + r) * PL;
                        unpool_plane(gn + r * PL, yp ? yp + at : nullptr, ap + at, pw, e.relu, gs + r * L);
                    }
                    gn = gs;
                } else if (e.relu) {
                    const T* yn = yp + n * O * L;
#pragma omp simd
                    for (int64_t i = 0; i < O * L; ++i) gs[i] = relu_grad(gn[i], yn[i]);
                    gn = gs;
                }
                if (pdb)
                    for (int64_t o = 0; o < O; ++o) {
                        T s = T(0);
#pragma omp simd reduction(+ : s)
                        for (int64_t l = 0; l < L; ++l) s += gn[o * L + l];
                        pdb[o] = n == n0 ? s : pdb[o] + s;
                    }
                if (pdw) {
                    // As dWᵀ [CKK, O] = cols · g[n]ᵀ: the output channels (a multiple of 16 in most
                    // layers) span the GEMM's vector columns and the columns are read in place;
                    // g[n]·colsᵀ packed a transpose of the columns and left a partial vector at
                    // C·9 (measured per image, one thread: 64×288×196 44.8 → 37.4 us, 32×9×784
                    // 9.2 → 5.9 us).
                    im2col_image(xp + n * image, g, cols);
                    gemm_typed(false, true, CKK, O, L, cols, L, gn, L, n == n0 ? T(0) : T(1), pdw, O);
                }
                if (dxp) {
                    gemm_typed(true, false, CKK, L, O, wp, CKK, gn, L, T(0), dcols, L);
                    std::fill_n(dxp + n * image, image, T(0));
                    col2im_image_consuming(dcols, g, dxp + n * image);
                }
            }
        });
        if (part_size == 0) return;
        // The sums over groups, in group order (an empty batch has zero gradients); dw's partials
        // are transposed, [CKK, O].
        T* dwp = dw.defined() ? static_cast<T*>(dw.raw_data()) : nullptr;
        T* dbp = db.defined() ? static_cast<T*>(db.raw_data()) : nullptr;
        const int64_t dw_size = dwp ? O * CKK : 0;
#pragma omp parallel for schedule(static) if (part_size * groups >= kParallelGrain)
        for (int64_t i = 0; i < part_size; ++i) {
            T s = T(0);
            for (int64_t grp = 0; grp < groups; ++grp) s += pp[grp * part_size + i];
            if (i < dw_size) dwp[i % O * CKK + i / O] = s;
            else dbp[i - dw_size] = s;
        }
    });
}

// ================================ the composed defaults ==========================================
// A backend without fused convolution kernels (CUDA) runs these: im2col, GEMM and col2im over the
// whole batch, each one launch.

void TensorKernels::conv2d(const KernelContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                           const Window2d& g, const ConvEpilogue& e, Tensor& out, Tensor& argmax) {
    const int64_t O = w.shape()[0], CKK = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
    const TensorOptions like{.dtype = x.dtype(), .device = x.device()};
    Tensor cols = empty({g.batch, CKK, L}, like);
    im2col(ctx, x, g, cols);
    Tensor y = e.pool ? empty({g.batch, O, g.out_h, g.out_w}, like) : out;
    // The bias is preloaded into the accumulator, and y[n] = W · cols[n] comes out in NCHW order.
    if (bias.defined()) y.view({g.batch, O, L}).copy_(bias.view({1, O, 1}).expand({g.batch, O, L}));
    gemm(ctx, false, false, O, L, CKK, 1.0, w, 0, cols, CKK * L, bias.defined() ? 1.0 : 0.0, y, O * L, g.batch);
    if (e.relu) unary(ctx, UnaryOp::relu, y, y, 0.0, 0.0);
    if (e.pool) max_pool2d(ctx, y, e.pool_window, out, argmax);
}

void TensorKernels::conv2d_backward(const KernelContext& ctx, const Tensor& x, const Tensor& w, const Tensor& grad,
                                    const ConvEpilogue& e, const Tensor& out, const Tensor& argmax, const Window2d& g,
                                    Tensor& dx, Tensor& dw, Tensor& db) {
    const int64_t O = w.shape()[0], CKK = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
    const TensorOptions like{.dtype = x.dtype(), .device = x.device()};
    Tensor gm = grad;
    if (e.relu) {
        // relu'(y) from the output: out > 0 exactly where the ReLU's input was (a pooled out is
        // the ReLU output at its argmax).
        gm = empty(grad.shape(), like);
        unary_backward(ctx, UnaryOp::relu, grad, out, out, gm, 0.0, 0.0);
    }
    if (e.pool) {
        Tensor unpooled = empty({g.batch, O, g.out_h, g.out_w}, like);
        max_pool2d_backward(ctx, gm, argmax, e.pool_window, unpooled);
        gm = unpooled;
    }
    if (dw.defined()) {
        // dW = Σ_n g[n] · cols[n]ᵀ: the per-image products as one batched GEMM, then a
        // fixed-order sum over the batch.
        Tensor cols = empty({g.batch, CKK, L}, like);
        im2col(ctx, x, g, cols);
        Tensor per_image = empty({g.batch, O, CKK}, like);
        gemm(ctx, false, true, O, CKK, L, 1.0, gm, O * L, cols, CKK * L, 0.0, per_image, O * CKK, g.batch);
        dw.copy_(sum(per_image, {0}));
    }
    if (db.defined()) db.copy_(sum(gm.view({g.batch, O, L}), {0, 2}));
    if (dx.defined()) {
        Tensor dcols = empty({g.batch, CKK, L}, like);
        gemm(ctx, true, false, CKK, L, O, 1.0, w, 0, gm, O * L, 0.0, dcols, CKK * L, g.batch);
        fill(ctx, dx, 0.0);
        col2im(ctx, dcols, g, dx);
    }
}

// ================================ ops ============================================================
namespace {

// Bound on padded extents: kernels form sums up to about four times one, which must fit in int64.
constexpr int64_t kMaxExtent = int64_t{1} << 61;

Window2d window(const char* op, const Shape& x, int64_t kh, int64_t kw, std::array<int64_t, 2> stride,
                std::array<int64_t, 2> padding) {
    LSG_CHECK_OP(op, x.size() == 4, "expects input [N, C, H, W], got shape ", x);
    LSG_CHECK_OP(op, stride[0] > 0 && stride[1] > 0, "stride must be positive, got [", stride[0], ", ", stride[1], "]");
    LSG_CHECK_OP(op, padding[0] >= 0 && padding[1] >= 0, "padding must be non-negative, got [", padding[0], ", ",
                 padding[1], "]");
    LSG_CHECK_OP(op, kh > 0 && kw > 0, "kernel size must be positive, got [", kh, ", ", kw, "]");
    Window2d g{x[0], x[1], x[2], x[3], kh, kw, stride[0], stride[1], padding[0], padding[1], 0, 0};
    // The kernels form sums up to about twice the padded extent (h + p + s − 1 with s clamped
    // below): checked here once, so that no index arithmetic inside them can wrap around.
    int64_t padded_h = 0, padded_w = 0;
    LSG_CHECK_OP(op, padding[0] <= kMaxExtent && padding[1] <= kMaxExtent && g.height <= kMaxExtent && g.width <= kMaxExtent &&
                         (padded_h = g.height + 2 * g.pad_h) <= kMaxExtent && (padded_w = g.width + 2 * g.pad_w) <= kMaxExtent,
                 "padding [", padding[0], ", ", padding[1], "] around input ", x, " is too large (padded sizes must stay below 2^61)");
    LSG_CHECK_OP(op, padded_h >= kh && padded_w >= kw, "kernel [", kh, ", ", kw, "] is larger than the padded input ",
                 x, " (padding [", padding[0], ", ", padding[1], "])");
    g.out_h = (padded_h - kh) / g.stride_h + 1;
    g.out_w = (padded_w - kw) / g.stride_w + 1;
    // A stride beyond the padded extent gives one output position; clamping it changes no index
    // the kernels visit (only position 0 exists) and keeps i·stride within the padded extent.
    g.stride_h = std::min(g.stride_h, padded_h);
    g.stride_w = std::min(g.stride_w, padded_w);
    return g;
}

// A max-pool's window over input x: stride {0, 0} means the kernel size.
Window2d pool_window(const char* op, const Shape& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                     std::array<int64_t, 2> padding) {
    LSG_CHECK_OP(op, kernel[0] > 0 && kernel[1] > 0, "kernel must be positive, got [", kernel[0], ", ", kernel[1], "]");
    if (stride[0] == 0 && stride[1] == 0) stride = kernel;
    // p ≤ ⌊k/2⌋ is 2p ≤ k without forming 2p, which a huge padding would overflow.
    LSG_CHECK_OP(op, padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2, "padding [", padding[0], ", ",
                 padding[1], "] must be at most half the kernel [", kernel[0], ", ", kernel[1], "]");
    return window(op, x, kernel[0], kernel[1], stride, padding);
}

// A max-pool's arguments, as max_pool2d takes them.
struct PoolArgs {
    std::array<int64_t, 2> kernel, stride, padding;
};

// conv2d, then the ReLU when relu and the max-pool when pool is given: the ops conv2d, conv2d_relu
// and conv2d_relu_max_pool2d, which `op` names in errors.
Tensor convolution(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                   std::array<int64_t, 2> stride, std::array<int64_t, 2> padding, bool relu,
                   const PoolArgs* pool = nullptr) {
    LSG_CHECK_OP(op, weight.dim() == 4, "expects weight [O, C, kh, kw], got shape ", weight.shape());
    LSG_CHECK_OP(op, x.dtype() == weight.dtype() && is_floating(x.dtype()), "input ", x.dtype(), " and weight ",
                 weight.dtype(), " must be the same floating dtype");
    LSG_CHECK_OP(op, x.device() == weight.device(), "input on ", x.device(), ", weight on ", weight.device());
    const Window2d g = window(op, x.shape(), weight.shape()[2], weight.shape()[3], stride, padding);
    LSG_CHECK_OP(op, weight.shape()[1] == g.channels, "input ", x.shape(), " has ", g.channels, " channels, weight ",
                 weight.shape(), " expects ", weight.shape()[1]);
    const int64_t O = weight.shape()[0], CKK = g.channels * g.kernel_h * g.kernel_w;
    if (bias.defined())
        LSG_CHECK_OP(op, bias.dim() == 1 && bias.shape()[0] == O && bias.dtype() == x.dtype() && bias.device() == x.device(),
                     "bias ", bias.shape(), " does not match weight ", weight.shape());
    ConvEpilogue e{.relu = relu, .pool = pool != nullptr};
    if (pool) e.pool_window = pool_window(op, {g.batch, O, g.out_h, g.out_w}, pool->kernel, pool->stride, pool->padding);
    const Shape out_shape = pool ? Shape{g.batch, O, e.pool_window.out_h, e.pool_window.out_w}
                                 : Shape{g.batch, O, g.out_h, g.out_w};
    Tensor xc = x.detach().contiguous();
    Tensor w2 = weight.detach().contiguous().view({O, CKK});
    Tensor out = empty(out_shape, {.dtype = x.dtype(), .device = x.device()});
    Tensor arg = pool ? empty(out_shape, {.dtype = DType::i64, .device = x.device()}) : Tensor();
    tensor_kernels(x.device()).conv2d(kernel_context(x.device()), xc, w2, bias.defined() ? bias.detach().contiguous() : Tensor(),
                                      g, e, out, arg);
    const bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    // The backward keeps the input, not its columns: they are rebuilt per image (9× smaller for a
    // 3×3 kernel, and the rebuild is cheaper than a pass over a saved [N, C·kh·kw, oh·ow] buffer).
    // With the ReLU it keeps the output too, for the mask (detached: the output holds this node).
    auto backward = [=, y = relu ? out.detach() : Tensor()](const Tensor& grad) {
        const TensorOptions gl{.dtype = grad.dtype(), .device = grad.device()};
        Tensor dx = gx ? empty({g.batch, g.channels, g.height, g.width}, gl) : Tensor();
        Tensor dw = gw ? empty({O, CKK}, gl) : Tensor();
        Tensor db = gb ? empty({O}, gl) : Tensor();
        if (gx || gw || gb)
            tensor_kernels(grad.device()).conv2d_backward(kernel_context(grad.device()), xc, w2, grad.contiguous(), e, y,
                                                          arg, g, dx, dw, db);
        if (gw) dw = dw.view({O, g.channels, g.kernel_h, g.kernel_w});
        return std::vector<Tensor>{dx, dw, db};
    };
    if (bias.defined()) autograd::record(op, out, {x, weight, bias}, backward);
    else autograd::record(op, out, {x, weight}, backward);
    return out;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, std::array<int64_t, 2> stride,
              std::array<int64_t, 2> padding) {
    return convolution("conv2d", x, weight, bias, stride, padding, false);
}

Tensor conv2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, std::array<int64_t, 2> stride,
                   std::array<int64_t, 2> padding) {
    return convolution("conv2d_relu", x, weight, bias, stride, padding, true);
}

Tensor conv2d_relu_max_pool2d(const Tensor& x, const Tensor& weight, const Tensor& bias, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding, std::array<int64_t, 2> pool_kernel,
                              std::array<int64_t, 2> pool_stride, std::array<int64_t, 2> pool_padding) {
    const PoolArgs pool{pool_kernel, pool_stride, pool_padding};
    return convolution("conv2d_relu_max_pool2d", x, weight, bias, stride, padding, true, &pool);
}

Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding) {
    LSG_CHECK(is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype());
    const Window2d g = pool_window("max_pool2d", x.shape(), kernel, stride, padding);
    Tensor xc = x.detach().contiguous();
    Tensor out = empty({g.batch, g.channels, g.out_h, g.out_w}, {.dtype = x.dtype(), .device = x.device()});
    Tensor arg = empty(out.shape(), {.dtype = DType::i64, .device = x.device()});
    tensor_kernels(x.device()).max_pool2d(kernel_context(x.device()), xc, g, out, arg);
    autograd::record("max_pool2d", out, {x}, [g, arg, dtype = x.dtype()](const Tensor& grad) {
        Tensor dx = empty({g.batch, g.channels, g.height, g.width}, {.dtype = dtype, .device = grad.device()});
        tensor_kernels(grad.device()).max_pool2d_backward(kernel_context(grad.device()), grad.contiguous(), arg, g, dx);
        return std::vector<Tensor>{dx};
    });
    return out;
}

}  // namespace lsg

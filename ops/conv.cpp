// Convolution and pooling: forward, backward and the OpenMP CPU kernels.
#include "lsgrad/ops/conv.h"

#include <algorithm>
#include <type_traits>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/checked.h"
#include "lsgrad/ops/conv_math.h"
#include "lsgrad/ops/cpu_isa.h"
#include "lsgrad/ops/cpu_kernels.h"
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

// cols[n, (c·kh + u)·kw + v, i·ow + j] = x[n, c, i·s_h + u − p_h, j·s_w + v − p_w] or 0: one
// [C·kh·kw, oh·ow] matrix per image, so W·cols[n] is image n's output already in NCHW order.
void CpuTensorKernels::im2col(const KernelContext&, const Tensor& x, const Window2d& g, Tensor& cols) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* cp = static_cast<T*>(cols.raw_data());
        const int64_t rows = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
#pragma omp parallel for schedule(static) collapse(2) if (rows * g.batch * L >= kParallelGrain)
        for (int64_t n = 0; n < g.batch; ++n)
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t c = r / (g.kernel_h * g.kernel_w), u = r / g.kernel_w % g.kernel_h, v = r % g.kernel_w;
                const T* img = xp + (n * g.channels + c) * g.height * g.width;
                T* dst = cp + detail::col_offset(g, n, r);
                for (int64_t i = 0; i < g.out_h; ++i) {
                    const int64_t h = i * g.stride_h + u - g.pad_h;
                    T* d = dst + i * g.out_w;
                    if (h < 0 || h >= g.height) {
                        for (int64_t j = 0; j < g.out_w; ++j) d[j] = T(0);
                        continue;
                    }
                    const T* src = img + h * g.width;
                    // Columns [j0, j1) read inside the image; only the padded ends need zeros.
                    const int64_t j0 = std::clamp<int64_t>((g.pad_w - v + g.stride_w - 1) / g.stride_w, 0, g.out_w);
                    const int64_t j1 = std::clamp<int64_t>((g.width + g.pad_w - v + g.stride_w - 1) / g.stride_w, j0, g.out_w);
                    for (int64_t j = 0; j < j0; ++j) d[j] = T(0);
                    const T* s0 = src + j0 * g.stride_w + v - g.pad_w;
                    if (g.stride_w == 1) {
                        std::copy_n(s0, j1 - j0, d + j0);
                    } else {
                        for (int64_t j = j0; j < j1; ++j) d[j] = s0[(j - j0) * g.stride_w];
                    }
                    for (int64_t j = j1; j < g.out_w; ++j) d[j] = T(0);
                }
            }
    });
}

// The adjoint of im2col: each column entry is added back to the input pixel it was read from.
void CpuTensorKernels::col2im(const KernelContext&, const Tensor& cols, const Window2d& g, Tensor& dx) {
    visit_dtype(dx.dtype(), [&]<class T>() {
        const T* cp = static_cast<const T*>(cols.raw_data());
        T* xp = static_cast<T*>(dx.raw_data());
        const int64_t L = g.out_h * g.out_w;
        // Parallel over (n, c) image planes: each plane is written by one thread, in a fixed order.
#pragma omp parallel for schedule(static) if (g.batch * g.channels * g.kernel_h * g.kernel_w * L >= kParallelGrain)
        for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
            const int64_t n = nc / g.channels, c = nc % g.channels;
            T* img = xp + nc * g.height * g.width;
            for (int64_t u = 0; u < g.kernel_h; ++u)
                for (int64_t v = 0; v < g.kernel_w; ++v) {
                    const T* src = cp + detail::col_offset(g, n, (c * g.kernel_h + u) * g.kernel_w + v);
                    // Columns [j0, j1) land inside the image (see im2col); the rest were padding.
                    const int64_t j0 = std::clamp<int64_t>((g.pad_w - v + g.stride_w - 1) / g.stride_w, 0, g.out_w);
                    const int64_t j1 = std::clamp<int64_t>((g.width + g.pad_w - v + g.stride_w - 1) / g.stride_w, j0, g.out_w);
                    for (int64_t i = 0; i < g.out_h; ++i) {
                        const int64_t h = i * g.stride_h + u - g.pad_h;
                        if (h < 0 || h >= g.height) continue;
                        T* dst = img + h * g.width + j0 * g.stride_w + v - g.pad_w;
                        const T* from = src + i * g.out_w;
                        for (int64_t j = j0; j < j1; ++j) dst[(j - j0) * g.stride_w] += from[j];
                    }
                }
        }
    });
}

namespace {

#if defined(LSG_X86_64)
// One [H, W] plane of a 2×2, stride-2, unpadded f32 max-pool with AVX-512: each output row's
// windows are de-interleaved into four candidate vectors (top-left, top-right, bottom-left,
// bottom-right, the raster order) and reduced with masked selects that follow pool_takes exactly.
// A scalar loop mispredicts its compare on about every other element of real activations.
LSG_TARGET_AVX512 void pool2x2_plane_avx512(const float* img, const Window2d& g, float* out, int64_t* arg) {
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
            const __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * j0), a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * j0 + 16);
            const __m512 b0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * j0), b1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * j0 + 16);
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
bool pool2x2_fast([[maybe_unused]] const T* img, [[maybe_unused]] const Window2d& g, [[maybe_unused]] T* out,
                  [[maybe_unused]] int64_t* arg) {
#if defined(LSG_X86_64)
    if constexpr (std::is_same_v<T, float>) {
        if (detail::cpu_isa() == detail::CpuIsa::avx512) {
            pool2x2_plane_avx512(img, g, out, arg);
            return true;
        }
    }
#endif
    return false;
}

}  // namespace

void CpuTensorKernels::max_pool2d(const KernelContext&, const Tensor& x, const Window2d& g, Tensor& out,
                                  Tensor& argmax) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* op = static_cast<T*>(out.raw_data());
        int64_t* ap = argmax.data<int64_t>();
        const int64_t planes = g.batch * g.channels;
        // The common 2×2, stride-2, unpadded window (every CNN here) has a vector path; other
        // windows, and CPUs without AVX-512, go through the shared per-window search.
        const bool two_by_two = g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 &&
                                g.pad_h == 0 && g.pad_w == 0;
#pragma omp parallel for schedule(static) if (planes * g.height * g.width >= kParallelGrain)
        for (int64_t p = 0; p < planes; ++p) {
            const T* img = xp + p * g.height * g.width;
            if (two_by_two && pool2x2_fast(img, g, op + p * g.out_h * g.out_w, ap + p * g.out_h * g.out_w)) continue;
            for (int64_t i = 0; i < g.out_h; ++i)
                for (int64_t j = 0; j < g.out_w; ++j) {
                    const int64_t k = (p * g.out_h + i) * g.out_w + j;
                    const detail::WindowMax<T> m = detail::pool_window_max(img, g, i, j);
                    op[k] = m.value;
                    ap[k] = m.index;
                }
        }
    });
}

void CpuTensorKernels::max_pool2d_backward(const KernelContext&, const Tensor& grad, const Tensor& argmax,
                                           const Window2d& g, Tensor& dx) {
    visit_dtype(grad.dtype(), [&]<class T>() {
        const T* gp = static_cast<const T*>(grad.raw_data());
        const int64_t* ap = argmax.data<int64_t>();
        T* dp = static_cast<T*>(dx.raw_data());
        const int64_t planes = g.batch * g.channels, L = g.out_h * g.out_w;
#pragma omp parallel for schedule(static) if (planes * L >= kParallelGrain)
        for (int64_t p = 0; p < planes; ++p)
            for (int64_t k = 0; k < L; ++k) dp[p * g.height * g.width + ap[p * L + k]] += gp[p * L + k];
    });
}

// ================================ ops ============================================================
namespace {

// Bound on padded extents: kernels form sums up to about four times one, which must fit in int64.
constexpr int64_t kMaxExtent = int64_t{1} << 61;

Window2d window(const char* op, const Tensor& x, int64_t kh, int64_t kw, std::array<int64_t, 2> stride,
                std::array<int64_t, 2> padding) {
    LSG_CHECK_OP(op, x.dim() == 4, "expects input [N, C, H, W], got shape ", x.shape());
    LSG_CHECK_OP(op, stride[0] > 0 && stride[1] > 0, "stride must be positive, got [", stride[0], ", ", stride[1], "]");
    LSG_CHECK_OP(op, padding[0] >= 0 && padding[1] >= 0, "padding must be non-negative, got [", padding[0], ", ",
                 padding[1], "]");
    LSG_CHECK_OP(op, kh > 0 && kw > 0, "kernel size must be positive, got [", kh, ", ", kw, "]");
    Window2d g{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3], kh, kw, stride[0], stride[1],
               padding[0], padding[1], 0, 0};
    // The kernels form sums up to about twice the padded extent (h + p + s − 1 with s clamped
    // below): checked here once, so that no index arithmetic inside them can wrap around.
    int64_t padded_h = 0, padded_w = 0;
    LSG_CHECK_OP(op, padding[0] <= kMaxExtent && padding[1] <= kMaxExtent && g.height <= kMaxExtent && g.width <= kMaxExtent &&
                         (padded_h = g.height + 2 * g.pad_h) <= kMaxExtent && (padded_w = g.width + 2 * g.pad_w) <= kMaxExtent,
                 "padding [", padding[0], ", ", padding[1], "] around input ", x.shape(), " is too large (padded sizes must stay below 2^61)");
    LSG_CHECK_OP(op, padded_h >= kh && padded_w >= kw, "kernel [", kh, ", ", kw, "] is larger than the padded input ",
                 x.shape(), " (padding [", padding[0], ", ", padding[1], "])");
    g.out_h = (padded_h - kh) / g.stride_h + 1;
    g.out_w = (padded_w - kw) / g.stride_w + 1;
    // A stride beyond the padded extent gives one output position; clamping it changes no index
    // the kernels visit (only position 0 exists) and keeps i·stride within the padded extent.
    g.stride_h = std::min(g.stride_h, padded_h);
    g.stride_w = std::min(g.stride_w, padded_w);
    return g;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, std::array<int64_t, 2> stride,
              std::array<int64_t, 2> padding) {
    LSG_CHECK(weight.dim() == 4, "expects weight [O, C, kh, kw], got shape ", weight.shape());
    LSG_CHECK(x.dtype() == weight.dtype() && is_floating(x.dtype()), "input ", x.dtype(), " and weight ", weight.dtype(),
              " must be the same floating dtype");
    LSG_CHECK(x.device() == weight.device(), "input on ", x.device(), ", weight on ", weight.device());
    const Window2d g = window("conv2d", x, weight.shape()[2], weight.shape()[3], stride, padding);
    LSG_CHECK(weight.shape()[1] == g.channels, "input ", x.shape(), " has ", g.channels, " channels, weight ",
              weight.shape(), " expects ", weight.shape()[1]);
    const int64_t O = weight.shape()[0], CKK = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w;
    if (bias.defined())
        LSG_CHECK(bias.dim() == 1 && bias.shape()[0] == O && bias.dtype() == x.dtype() && bias.device() == x.device(),
                  "bias ", bias.shape(), " does not match weight ", weight.shape());
    TensorKernels& k = tensor_kernels(x.device());
    const KernelContext ctx = kernel_context(x.device());
    const TensorOptions like{.dtype = x.dtype(), .device = x.device()};
    Tensor xc = x.detach().contiguous();
    Tensor cols = empty({g.batch, CKK, L}, like);
    k.im2col(ctx, xc, g, cols);
    Tensor w2 = weight.detach().contiguous().view({O, CKK});
    // out[n] [O, L] = W · cols[n], with the bias preloaded into the accumulator: the output comes
    // out in NCHW order, with no permute.
    Tensor out = empty({g.batch, O, g.out_h, g.out_w}, like);
    if (bias.defined()) out.view({g.batch, O, L}).copy_(bias.detach().view({1, O, 1}).expand({g.batch, O, L}));
    k.gemm(ctx, false, false, O, L, CKK, 1.0, w2, 0, cols, CKK * L, bias.defined() ? 1.0 : 0.0, out, O * L, g.batch);
    const bool gx = x.requires_grad(), gw = weight.requires_grad();
    auto backward = [=](const Tensor& grad) {
        TensorKernels& kk = tensor_kernels(grad.device());
        const KernelContext gctx = kernel_context(grad.device());
        const TensorOptions gl{.dtype = grad.dtype(), .device = grad.device()};
        Tensor g3 = grad.contiguous().view({g.batch, O, L});
        Tensor dx, dw;
        if (gw) {
            // dW = Σ_n g[n] · cols[n]ᵀ: the per-image products as one batched GEMM (one image per
            // thread), then a fixed-order sum over the batch.
            Tensor per_image = empty({g.batch, O, CKK}, gl);
            kk.gemm(gctx, false, true, O, CKK, L, 1.0, g3, O * L, cols, CKK * L, 0.0, per_image, O * CKK, g.batch);
            dw = sum(per_image, {0}).view({O, g.channels, g.kernel_h, g.kernel_w});
        }
        if (gx) {
            // dcols[n] = Wᵀ · g[n], then folded back onto the input.
            Tensor dcols = empty({g.batch, CKK, L}, gl);
            kk.gemm(gctx, true, false, CKK, L, O, 1.0, w2, 0, g3, O * L, 0.0, dcols, CKK * L, g.batch);
            dx = zeros({g.batch, g.channels, g.height, g.width}, gl);
            kk.col2im(gctx, dcols, g, dx);
        }
        return std::vector<Tensor>{dx, dw, sum(g3, {0, 2})};
    };
    if (bias.defined()) autograd::record("conv2d", out, {x, weight, bias}, backward);
    else autograd::record("conv2d", out, {x, weight}, backward);
    return out;
}

Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding) {
    LSG_CHECK(kernel[0] > 0 && kernel[1] > 0, "kernel must be positive, got [", kernel[0], ", ", kernel[1], "]");
    if (stride[0] == 0 && stride[1] == 0) stride = kernel;
    // p ≤ ⌊k/2⌋ is 2p ≤ k without forming 2p, which a huge padding would overflow.
    LSG_CHECK(padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2, "padding [", padding[0], ", ", padding[1],
              "] must be at most half the kernel [", kernel[0], ", ", kernel[1], "]");
    LSG_CHECK(is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype());
    const Window2d g = window("max_pool2d", x, kernel[0], kernel[1], stride, padding);
    Tensor xc = x.detach().contiguous();
    Tensor out = empty({g.batch, g.channels, g.out_h, g.out_w}, {.dtype = x.dtype(), .device = x.device()});
    Tensor arg = empty(out.shape(), {.dtype = DType::i64, .device = x.device()});
    tensor_kernels(x.device()).max_pool2d(kernel_context(x.device()), xc, g, out, arg);
    autograd::record("max_pool2d", out, {x}, [g, arg, dtype = x.dtype()](const Tensor& grad) {
        Tensor dx = zeros({g.batch, g.channels, g.height, g.width}, {.dtype = dtype, .device = grad.device()});
        tensor_kernels(grad.device()).max_pool2d_backward(kernel_context(grad.device()), grad.contiguous(), arg, g, dx);
        return std::vector<Tensor>{dx};
    });
    return out;
}

}  // namespace lsg

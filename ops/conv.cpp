// Convolution and pooling: forward, backward and the OpenMP CPU kernels.
#include "lsgrad/ops/conv.h"

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/ops/conv_math.h"
#include "lsgrad/ops/cpu_kernels.h"
#include "lsgrad/ops/reduce.h"

namespace lsg {

// ================================ CPU kernels ====================================================

// cols[(c·kh + u)·kw + v, (n·oh + i)·ow + j] = x[n, c, i·s_h + u − p_h, j·s_w + v − p_w] or 0.
void CpuTensorKernels::im2col(const Tensor& x, const Window2d& g, Tensor& cols) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* cp = static_cast<T*>(cols.raw_data());
        const int64_t rows = g.channels * g.kernel_h * g.kernel_w, L = g.out_h * g.out_w, NL = g.batch * L;
#pragma omp parallel for schedule(static) collapse(2) if (rows * NL >= kParallelGrain)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t n = 0; n < g.batch; ++n) {
                const int64_t c = r / (g.kernel_h * g.kernel_w), u = r / g.kernel_w % g.kernel_h, v = r % g.kernel_w;
                const T* img = xp + (n * g.channels + c) * g.height * g.width;
                T* dst = cp + r * NL + n * L;
                for (int64_t i = 0; i < g.out_h; ++i) {
                    const int64_t h = i * g.stride_h + u - g.pad_h;
                    T* d = dst + i * g.out_w;
                    if (h < 0 || h >= g.height) {
                        for (int64_t j = 0; j < g.out_w; ++j) d[j] = T(0);
                        continue;
                    }
                    const T* src = img + h * g.width;
                    for (int64_t j = 0; j < g.out_w; ++j) {
                        const int64_t w = j * g.stride_w + v - g.pad_w;
                        d[j] = (w >= 0 && w < g.width) ? src[w] : T(0);
                    }
                }
            }
    });
}

// The adjoint of im2col: each column entry is added back to the input pixel it was read from.
void CpuTensorKernels::col2im(const Tensor& cols, const Window2d& g, Tensor& dx) {
    visit_dtype(dx.dtype(), [&]<class T>() {
        const T* cp = static_cast<const T*>(cols.raw_data());
        T* xp = static_cast<T*>(dx.raw_data());
        const int64_t L = g.out_h * g.out_w, NL = g.batch * L;
        // Parallel over (n, c) image planes: each plane is written by one thread, in a fixed order.
#pragma omp parallel for schedule(static) if (g.batch * g.channels * g.kernel_h * g.kernel_w * L >= kParallelGrain)
        for (int64_t nc = 0; nc < g.batch * g.channels; ++nc) {
            const int64_t n = nc / g.channels, c = nc % g.channels;
            T* img = xp + nc * g.height * g.width;
            for (int64_t u = 0; u < g.kernel_h; ++u)
                for (int64_t v = 0; v < g.kernel_w; ++v) {
                    const T* src = cp + ((c * g.kernel_h + u) * g.kernel_w + v) * NL + n * L;
                    for (int64_t i = 0; i < g.out_h; ++i) {
                        const int64_t h = i * g.stride_h + u - g.pad_h;
                        if (h < 0 || h >= g.height) continue;
                        for (int64_t j = 0; j < g.out_w; ++j) {
                            const int64_t w = j * g.stride_w + v - g.pad_w;
                            if (w >= 0 && w < g.width) img[h * g.width + w] += src[i * g.out_w + j];
                        }
                    }
                }
        }
    });
}

void CpuTensorKernels::max_pool2d(const Tensor& x, const Window2d& g, Tensor& out, Tensor& argmax) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* op = static_cast<T*>(out.raw_data());
        int64_t* ap = argmax.data<int64_t>();
        const int64_t planes = g.batch * g.channels;
#pragma omp parallel for schedule(static) if (planes * g.height * g.width >= kParallelGrain)
        for (int64_t p = 0; p < planes; ++p) {
            const T* img = xp + p * g.height * g.width;
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

void CpuTensorKernels::max_pool2d_backward(const Tensor& grad, const Tensor& argmax, const Window2d& g, Tensor& dx) {
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

Window2d window(const char* op, const Tensor& x, int64_t kh, int64_t kw, std::array<int64_t, 2> stride,
                std::array<int64_t, 2> padding) {
    LSG_CHECK_OP(op, x.dim() == 4, "expects input [N, C, H, W], got shape ", x.shape());
    LSG_CHECK_OP(op, stride[0] > 0 && stride[1] > 0, "stride must be positive, got [", stride[0], ", ", stride[1], "]");
    LSG_CHECK_OP(op, padding[0] >= 0 && padding[1] >= 0, "padding must be non-negative, got [", padding[0], ", ",
                 padding[1], "]");
    Window2d g{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3], kh, kw, stride[0], stride[1],
               padding[0], padding[1], 0, 0};
    g.out_h = (g.height + 2 * g.pad_h - kh) / g.stride_h + 1;
    g.out_w = (g.width + 2 * g.pad_w - kw) / g.stride_w + 1;
    LSG_CHECK_OP(op, g.height + 2 * g.pad_h >= kh && g.width + 2 * g.pad_w >= kw, "kernel [", kh, ", ", kw,
                 "] is larger than the padded input ", x.shape());
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
    Tensor xc = x.detach().contiguous();
    Tensor cols = empty({CKK, g.batch * L}, {.dtype = x.dtype(), .device = x.device()});
    k.im2col(xc, g, cols);
    Tensor w2 = weight.detach().contiguous().view({O, CKK});
    // [O, N·L] = W · cols, with the bias preloaded into the accumulator.
    Tensor y = empty({O, g.batch * L}, {.dtype = x.dtype(), .device = x.device()});
    if (bias.defined()) y.copy_(bias.detach().view({O, 1}).expand({O, g.batch * L}));
    k.gemm(false, false, O, g.batch * L, CKK, 1.0, w2, 0, cols, 0, bias.defined() ? 1.0 : 0.0, y, 0, 1);
    Tensor out = y.view({O, g.batch, g.out_h, g.out_w}).permute({1, 0, 2, 3}).contiguous();
    const bool gx = x.requires_grad(), gw = weight.requires_grad();
    auto backward = [=](const Tensor& grad) {
        TensorKernels& kk = tensor_kernels(grad.device());
        Tensor g2 = grad.contiguous().view({g.batch, O, L}).permute({1, 0, 2}).contiguous().view({O, g.batch * L});
        Tensor dx, dw;
        if (gw) {
            dw = empty({O, CKK}, {.dtype = grad.dtype(), .device = grad.device()});
            kk.gemm(false, true, O, CKK, g.batch * L, 1.0, g2, 0, cols, 0, 0.0, dw, 0, 1);
            dw = dw.view({O, g.channels, g.kernel_h, g.kernel_w});
        }
        if (gx) {
            Tensor dcols = empty({CKK, g.batch * L}, {.dtype = grad.dtype(), .device = grad.device()});
            kk.gemm(true, false, CKK, g.batch * L, O, 1.0, w2, 0, g2, 0, 0.0, dcols, 0, 1);
            dx = zeros({g.batch, g.channels, g.height, g.width}, {.dtype = grad.dtype(), .device = grad.device()});
            kk.col2im(dcols, g, dx);
        }
        return std::vector<Tensor>{dx, dw, sum(g2, {1})};
    };
    if (bias.defined()) autograd::record("conv2d", out, {x, weight, bias}, backward);
    else autograd::record("conv2d", out, {x, weight}, backward);
    return out;
}

Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding) {
    LSG_CHECK(kernel[0] > 0 && kernel[1] > 0, "kernel must be positive, got [", kernel[0], ", ", kernel[1], "]");
    if (stride[0] == 0 && stride[1] == 0) stride = kernel;
    LSG_CHECK(padding[0] * 2 <= kernel[0] && padding[1] * 2 <= kernel[1], "padding [", padding[0], ", ", padding[1],
              "] must be at most half the kernel [", kernel[0], ", ", kernel[1], "]");
    LSG_CHECK(is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype());
    const Window2d g = window("max_pool2d", x, kernel[0], kernel[1], stride, padding);
    Tensor xc = x.detach().contiguous();
    Tensor out = empty({g.batch, g.channels, g.out_h, g.out_w}, {.dtype = x.dtype(), .device = x.device()});
    Tensor arg = empty(out.shape(), {.dtype = DType::i64, .device = x.device()});
    tensor_kernels(x.device()).max_pool2d(xc, g, out, arg);
    autograd::record("max_pool2d", out, {x}, [g, arg, dtype = x.dtype()](const Tensor& grad) {
        Tensor dx = zeros({g.batch, g.channels, g.height, g.width}, {.dtype = dtype, .device = grad.device()});
        tensor_kernels(grad.device()).max_pool2d_backward(grad.contiguous(), arg, g, dx);
        return std::vector<Tensor>{dx};
    });
    return out;
}

}  // namespace lsg

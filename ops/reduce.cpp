// Reductions and softmax: forward, backward and the OpenMP CPU kernels.
#include "lsgrad/ops/reduce.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/ops/cpu_kernels.h"
#include "lsgrad/ops/elementwise.h"

namespace lsg {

// ================================ CPU kernels ====================================================

void CpuTensorKernels::reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        // Columns are processed in blocks so that a [1, N, K] reduction (a bias gradient) still
        // spreads over threads; each output element is owned by one thread and summed in index order.
        constexpr int64_t kBlock = 256;
        const int64_t blocks = (inner + kBlock - 1) / kBlock;
        const bool par = outer * n * inner >= kParallelGrain;
        if (op == ReduceOp::sum && inner == 1) {
            // Contiguous rows: eight interleaved double accumulators break the add-latency chain
            // and vectorise; they are combined in a fixed order, so the bits do not depend on the
            // thread count.
            T* o_ = static_cast<T*>(out.raw_data());
#pragma omp parallel for schedule(static) if (par)
            for (int64_t o = 0; o < outer; ++o) {
                const T* row = xp + o * n;
                double acc[8] = {};
                int64_t j = 0;
                for (; j + 8 <= n; j += 8)
                    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(row[j + l]);
                for (; j < n; ++j) acc[j % 8] += static_cast<double>(row[j]);
                o_[o] = static_cast<T>(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
            }
            return;
        }
#pragma omp parallel for schedule(static) if (par)
        for (int64_t task = 0; task < outer * blocks; ++task) {
            const int64_t o = task / blocks, i0 = (task % blocks) * kBlock, i1 = std::min(inner, i0 + kBlock);
            const T* base = xp + o * n * inner;
            if (op == ReduceOp::sum) {
                double acc[kBlock];
                std::fill_n(acc, i1 - i0, 0.0);
                for (int64_t j = 0; j < n; ++j)
                    for (int64_t i = i0; i < i1; ++i) acc[i - i0] += static_cast<double>(base[j * inner + i]);
                T* o_ = static_cast<T*>(out.raw_data()) + o * inner;
                for (int64_t i = i0; i < i1; ++i) o_[i] = static_cast<T>(acc[i - i0]);
                continue;
            }
            const bool want_max = op == ReduceOp::max || op == ReduceOp::argmax;
            for (int64_t i = i0; i < i1; ++i) {
                T best = base[i];
                int64_t arg = 0;
                for (int64_t j = 1; j < n; ++j) {
                    const T v = base[j * inner + i];
                    // NaN wins and stays, as in PyTorch; otherwise the first extremum wins.
                    if (best != best) break;
                    if (v != v || (want_max ? v > best : v < best)) {
                        best = v;
                        arg = j;
                    }
                }
                if (op == ReduceOp::argmax || op == ReduceOp::argmin) static_cast<int64_t*>(out.raw_data())[o * inner + i] = arg;
                else static_cast<T*>(out.raw_data())[o * inner + i] = best;
            }
        }
    });
}

void CpuTensorKernels::softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& out) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* yp = static_cast<T*>(out.raw_data());
#pragma omp parallel for schedule(static) if (outer * n * inner >= kParallelGrain)
        for (int64_t r = 0; r < outer * inner; ++r) {
            const int64_t o = r / inner, i = r % inner;
            const T* row = xp + o * n * inner + i;
            T* yr = yp + o * n * inner + i;
            T m = -std::numeric_limits<T>::infinity();
            for (int64_t j = 0; j < n; ++j) m = std::max(m, row[j * inner]);
            // An all −inf row has no finite maximum; subtracting 0 keeps exp(−inf) = 0 instead of NaN.
            if (std::isinf(m) && m < 0) m = T(0);
            double s = 0;
            for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(row[j * inner] - m));
            if (log) {
                const T lse = m + static_cast<T>(std::log(s));
                for (int64_t j = 0; j < n; ++j) yr[j * inner] = row[j * inner] - lse;
            } else {
                const double inv = 1.0 / s;
                for (int64_t j = 0; j < n; ++j) yr[j * inner] = static_cast<T>(std::exp(static_cast<double>(row[j * inner] - m)) * inv);
            }
        }
    });
}

void CpuTensorKernels::softmax_backward(const Tensor& grad, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
                                        bool log, Tensor& dx) {
    visit_dtype(y.dtype(), [&]<class T>() {
        const T* gp = static_cast<const T*>(grad.raw_data());
        const T* yp = static_cast<const T*>(y.raw_data());
        T* dp = static_cast<T*>(dx.raw_data());
#pragma omp parallel for schedule(static) if (outer * n * inner >= kParallelGrain)
        for (int64_t r = 0; r < outer * inner; ++r) {
            const int64_t base = (r / inner) * n * inner + r % inner;
            double s = 0;
            for (int64_t j = 0; j < n; ++j) {
                const int64_t k = base + j * inner;
                s += log ? static_cast<double>(gp[k]) : static_cast<double>(gp[k]) * yp[k];
            }
            for (int64_t j = 0; j < n; ++j) {
                const int64_t k = base + j * inner;
                dp[k] = log ? static_cast<T>(gp[k] - std::exp(static_cast<double>(yp[k])) * s)
                            : static_cast<T>(yp[k] * (gp[k] - s));
            }
        }
    });
}

// ================================ ops ============================================================
namespace {

// The [outer, n, inner] factorisation of x's shape around `dim`.
void split_at(const Shape& shape, int64_t dim, int64_t& outer, int64_t& n, int64_t& inner) {
    outer = 1;
    inner = 1;
    for (int64_t d = 0; d < dim; ++d) outer *= shape[d];
    n = shape.empty() ? 1 : shape[dim];
    for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
}

Shape reduced_shape(const Shape& shape, int64_t dim, bool keepdim) {
    Shape s = shape;
    if (s.empty()) return s;
    if (keepdim) s[dim] = 1;
    else s.erase(s.begin() + dim);
    return s;
}

// One reduction over one dim, without autograd.
Tensor reduce_dim(ReduceOp op, const char* name, const Tensor& x, int64_t dim, bool keepdim) {
    dim = wrap_dim(name, dim, x.dim());
    int64_t outer, n, inner;
    split_at(x.shape(), dim, outer, n, inner);
    const bool arg = op == ReduceOp::argmax || op == ReduceOp::argmin;
    if (op != ReduceOp::sum) LSG_CHECK_OP(name, n > 0, "cannot reduce an empty dim ", dim, " of shape ", x.shape());
    Tensor out = empty(reduced_shape(x.shape(), dim, keepdim), {.dtype = arg ? DType::i64 : x.dtype(), .device = x.device()});
    tensor_kernels(x.device()).reduce(op, x.detach().contiguous(), outer, n, inner, out);
    return out;
}

std::vector<int64_t> normalize_dims(const char* op, std::vector<int64_t> dims, int64_t ndim) {
    for (int64_t& d : dims) d = wrap_dim(op, d, ndim);
    std::sort(dims.begin(), dims.end());
    LSG_CHECK_OP(op, std::adjacent_find(dims.begin(), dims.end()) == dims.end(), "dims ", dims, " repeat");
    return dims;
}

Tensor extremum_dim(ReduceOp op, const char* name, const Tensor& x, int64_t dim, bool keepdim) {
    LSG_CHECK_OP(name, x.dtype() != DType::i64 || !x.requires_grad(), "integer tensors have no gradient");
    Tensor values = reduce_dim(op, name, x, dim, keepdim);
    if (autograd::needs_grad({x})) {
        const int64_t d = x.dim() == 0 ? 0 : wrap_dim(name, dim, x.dim());
        Tensor idx = reduce_dim(op == ReduceOp::max ? ReduceOp::argmax : ReduceOp::argmin, name, x, dim, true);
        autograd::record(name, values, {x}, [idx, d, keepdim, shape = x.shape(), dtype = x.dtype()](const Tensor& g) {
            Tensor gk = keepdim || shape.empty() ? g : g.unsqueeze(d);
            Tensor dx = zeros(shape, {.dtype = dtype, .device = g.device()});
            if (shape.empty()) return std::vector<Tensor>{g};
            int64_t outer, n, inner;
            split_at(shape, d, outer, n, inner);
            tensor_kernels(g.device()).scatter_add(gk.contiguous(), idx, outer, n, 1, inner, dx);
            return std::vector<Tensor>{dx};
        });
    }
    return values;
}

}  // namespace

Tensor sum(const Tensor& x) {
    if (x.dim() == 0) return x.clone();
    return sum(x.reshape({-1}), {0}, false);
}

Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
    dims = normalize_dims("sum", std::move(dims), x.dim());
    if (x.dim() == 0) return x.clone();
    Tensor out = x.detach();
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) out = reduce_dim(ReduceOp::sum, "sum", out, *it, true);
    if (!keepdim)
        for (auto it = dims.rbegin(); it != dims.rend(); ++it) out = out.squeeze(*it);
    autograd::record("sum", out, {x}, [shape = x.shape(), dims, keepdim](const Tensor& g) {
        Tensor gk = g;
        if (!keepdim)
            for (int64_t d : dims) gk = gk.unsqueeze(d);
        return std::vector<Tensor>{gk.expand(shape).contiguous()};
    });
    return out;
}

Tensor mean(const Tensor& x) {
    LSG_CHECK(is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype());
    // An empty tensor gives 0/0 = NaN, as in PyTorch.
    return sum(x) / static_cast<double>(x.numel());
}

Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
    LSG_CHECK(is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype());
    int64_t count = 1;
    for (int64_t d : normalize_dims("mean", dims, x.dim())) count *= x.dim() == 0 ? 1 : x.shape()[d];
    return sum(x, std::move(dims), keepdim) / static_cast<double>(count);
}

Tensor Tensor::sum() const { return lsg::sum(*this); }
Tensor Tensor::mean() const { return lsg::mean(*this); }

Tensor amax(const Tensor& x) { return amax(x.reshape({-1}), 0, false); }
Tensor amax(const Tensor& x, int64_t dim, bool keepdim) { return extremum_dim(ReduceOp::max, "amax", x, dim, keepdim); }
Tensor amin(const Tensor& x, int64_t dim, bool keepdim) { return extremum_dim(ReduceOp::min, "amin", x, dim, keepdim); }
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return reduce_dim(ReduceOp::argmax, "argmax", x, dim, keepdim); }
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) { return reduce_dim(ReduceOp::argmin, "argmin", x, dim, keepdim); }

Tensor sum_to(const Tensor& g, const Shape& shape) {
    if (g.shape() == shape) return g;
    LSG_CHECK(g.dim() >= static_cast<int64_t>(shape.size()), "cannot sum shape ", g.shape(), " to ", shape);
    const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
    for (int64_t d = lead; d < g.dim(); ++d)
        LSG_CHECK(shape[d - lead] == g.shape()[d] || shape[d - lead] == 1, "cannot sum shape ", g.shape(), " to ", shape);
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < g.dim(); ++d)
        if (d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1)) dims.push_back(d);
    Tensor out = dims.empty() ? g : sum(g, dims, true);
    return out.reshape(shape);
}

namespace {
Tensor softmax_impl(const char* name, const Tensor& x, int64_t dim, bool log) {
    LSG_CHECK_OP(name, is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype(), " ", x.shape());
    dim = wrap_dim(name, dim, x.dim());
    int64_t outer, n, inner;
    split_at(x.shape(), dim, outer, n, inner);
    Tensor xc = x.detach().contiguous();
    Tensor y = empty_like(xc);
    tensor_kernels(x.device()).softmax(xc, outer, n, inner, log, y);
    autograd::record(name, y, {x}, [yd = y.detach(), outer, n, inner, log](const Tensor& g) {
        Tensor dx = empty_like(yd);
        tensor_kernels(yd.device()).softmax_backward(g.contiguous(), yd, outer, n, inner, log, dx);
        return std::vector<Tensor>{dx};
    });
    return y;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl("log_softmax", x, dim, true); }

}  // namespace lsg

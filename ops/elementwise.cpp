// Elementwise ops: forward, backward and the OpenMP CPU kernels (copy, fill, unary, binary, where,
// random, dropout).
#include "lsgrad/ops/elementwise.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/philox.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/ops/cpu_kernels.h"
#include "lsgrad/ops/elementwise_math.h"
#include "lsgrad/ops/reduce.h"

namespace lsg {

// ================================ CPU kernels ====================================================
namespace {

// Walks the elements of `shape` for N operands with their own element strides, calling
// body(ptr_offsets, count, inner_strides) once per innermost run. Adjacent dims that are
// contiguous for every operand are merged first, so contiguous tensors become one run, which is
// then split across threads when large.
template <size_t N, class Body>
void for_each_run(const Shape& shape, const std::array<Shape, N>& strides, Body&& body) {
    const detail::MergedDims<N> merged = detail::merge_dims<N>(shape, strides);
    const Shape& dims = merged.sizes;
    const std::array<Shape, N>& st = merged.strides;
    const int64_t inner = dims.back();
    const int64_t rows = numel(dims) / std::max<int64_t>(inner, 1);
    const size_t nd = dims.size();
    std::array<int64_t, N> inner_st;
    for (size_t k = 0; k < N; ++k) inner_st[k] = st[k].back();
    const int64_t total = rows * inner;
    if (total == 0) return;

    if (rows == 1) {
        // One long run: split it into per-thread chunks.
        const int64_t chunks = total >= kParallelGrain ? std::min<int64_t>(omp_get_max_threads(), total / 4096 + 1) : 1;
#pragma omp parallel for schedule(static) if (chunks > 1)
        for (int64_t c = 0; c < chunks; ++c) {
            const int64_t lo = inner * c / chunks, hi = inner * (c + 1) / chunks;
            std::array<int64_t, N> off;
            for (size_t k = 0; k < N; ++k) off[k] = lo * inner_st[k];
            body(off, hi - lo, inner_st);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (total >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
        std::array<int64_t, N> off{};
        int64_t rem = r;
        for (size_t d = nd - 1; d-- > 0;) {
            const int64_t i = rem % dims[d];
            rem /= dims[d];
            for (size_t k = 0; k < N; ++k) off[k] += i * st[k][d];
        }
        body(off, inner, inner_st);
    }
}

using detail::apply_binary;
using detail::apply_unary;
using detail::unary_derivative;

// Runs fn(i) for i < n, in parallel when n is large enough to pay for the threads: one contiguous
// block per thread, each running a plain loop over its own copy of fn. (An `omp parallel for simd`
// over a lambda held by reference made GCC emit gathers and scatters: 8x slower on relu.)
template <class Fn>
void parallel_for(int64_t n, const Fn& fn) {
    if (n < kParallelGrain || omp_get_max_threads() == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
#pragma omp parallel
    {
        const Fn local = fn;
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        for (int64_t i = lo; i < hi; ++i) local(i);
    }
}

}  // namespace

void CpuTensorKernels::copy(const KernelContext&, const Tensor& src, Tensor& dst) {
    visit_dtype(dst.dtype(), [&]<class D>() {
        visit_dtype(src.dtype(), [&]<class S>() {
            const S* s = static_cast<const S*>(src.raw_data());
            D* d = static_cast<D*>(dst.raw_data());
            for_each_run<2>(dst.shape(), {dst.strides(), src.strides()},
                            [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
                                D* dp = d + off[0];
                                const S* sp = s + off[1];
                                if (st[0] == 1 && st[1] == 1) {
                                    for (int64_t i = 0; i < n; ++i) dp[i] = static_cast<D>(sp[i]);
                                } else if (st[0] == 1 && st[1] == 0) {
                                    // A broadcast source (a bias spread over a row): a fill.
                                    std::fill_n(dp, n, static_cast<D>(*sp));
                                } else {
                                    for (int64_t i = 0; i < n; ++i) dp[i * st[0]] = static_cast<D>(sp[i * st[1]]);
                                }
                            });
        });
    });
}

void CpuTensorKernels::fill(const KernelContext&, Tensor& dst, double value) {
    visit_dtype(dst.dtype(), [&]<class T>() {
        T* d = static_cast<T*>(dst.raw_data());
        const T v = static_cast<T>(value);
        parallel_for(dst.numel(), [=](int64_t i) { d[i] = v; });
    });
}

void CpuTensorKernels::unary(const KernelContext&, UnaryOp op, const Tensor& x, Tensor& out, double a, double b) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* yp = static_cast<T*>(out.raw_data());
        const T ta = static_cast<T>(a), tb = static_cast<T>(b);
        // One switch per call, not per element: each case is its own vectorisable loop.
        switch (op) {
#define LSG_UNARY_CASE(name) \
    case UnaryOp::name: parallel_for(x.numel(), [=](int64_t i) { yp[i] = apply_unary(UnaryOp::name, xp[i], ta, tb); }); break;
            LSG_UNARY_CASE(neg) LSG_UNARY_CASE(exp) LSG_UNARY_CASE(log) LSG_UNARY_CASE(sqrt) LSG_UNARY_CASE(relu)
            LSG_UNARY_CASE(sigmoid) LSG_UNARY_CASE(tanh) LSG_UNARY_CASE(abs) LSG_UNARY_CASE(affine)
            LSG_UNARY_CASE(pow) LSG_UNARY_CASE(clamp)
#undef LSG_UNARY_CASE
        }
    });
}

void CpuTensorKernels::unary_backward(const KernelContext&, UnaryOp op, const Tensor& grad, const Tensor& x,
                                      const Tensor& y, Tensor& dx, double a, double b) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* gp = static_cast<const T*>(grad.raw_data());
        const T* xp = static_cast<const T*>(x.raw_data());
        const T* yp = static_cast<const T*>(y.raw_data());
        T* dp = static_cast<T*>(dx.raw_data());
        const T ta = static_cast<T>(a), tb = static_cast<T>(b);
        // As in unary(): the op is a constant in each loop, so the derivative inlines and vectorises.
        switch (op) {
#define LSG_UNARY_BACKWARD_CASE(name)                                                                         \
    case UnaryOp::name:                                                                                       \
        parallel_for(x.numel(),                                                                               \
                     [=](int64_t i) { dp[i] = gp[i] * unary_derivative(UnaryOp::name, xp[i], yp[i], ta, tb); }); \
        break;
            LSG_UNARY_BACKWARD_CASE(neg) LSG_UNARY_BACKWARD_CASE(exp) LSG_UNARY_BACKWARD_CASE(log)
            LSG_UNARY_BACKWARD_CASE(sqrt) LSG_UNARY_BACKWARD_CASE(relu) LSG_UNARY_BACKWARD_CASE(sigmoid)
            LSG_UNARY_BACKWARD_CASE(tanh) LSG_UNARY_BACKWARD_CASE(abs) LSG_UNARY_BACKWARD_CASE(affine)
            LSG_UNARY_BACKWARD_CASE(pow) LSG_UNARY_BACKWARD_CASE(clamp)
#undef LSG_UNARY_BACKWARD_CASE
        }
    });
}

void CpuTensorKernels::binary(const KernelContext&, BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
    visit_dtype(out.dtype(), [&]<class T>() {
        const T* ap = static_cast<const T*>(a.raw_data());
        const T* bp = static_cast<const T*>(b.raw_data());
        T* op_ = static_cast<T*>(out.raw_data());
        for_each_run<3>(out.shape(), {out.strides(), a.strides(), b.strides()},
                        [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
                            T* o = op_ + off[0];
                            const T* x = ap + off[1];
                            const T* y = bp + off[2];
                            if (st[1] == 1 && st[2] == 1) {
                                for (int64_t i = 0; i < n; ++i) o[i] = apply_binary(op, x[i], y[i]);
                            } else if (st[1] == 1 && st[2] == 0) {
                                const T yv = *y;
                                for (int64_t i = 0; i < n; ++i) o[i] = apply_binary(op, x[i], yv);
                            } else if (st[1] == 0 && st[2] == 1) {
                                const T xv = *x;
                                for (int64_t i = 0; i < n; ++i) o[i] = apply_binary(op, xv, y[i]);
                            } else {
                                for (int64_t i = 0; i < n; ++i)
                                    o[i * st[0]] = apply_binary(op, x[i * st[1]], y[i * st[2]]);
                            }
                        });
    });
}

void CpuTensorKernels::where(const KernelContext&, const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
    visit_dtype(out.dtype(), [&]<class T>() {
        visit_dtype(cond.dtype(), [&]<class C>() {
            const C* cp = static_cast<const C*>(cond.raw_data());
            const T* ap = static_cast<const T*>(a.raw_data());
            const T* bp = static_cast<const T*>(b.raw_data());
            T* o = static_cast<T*>(out.raw_data());
            for_each_run<4>(out.shape(), {out.strides(), cond.strides(), a.strides(), b.strides()},
                            [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) {
                                for (int64_t i = 0; i < n; ++i)
                                    o[off[0] + i * st[0]] = cp[off[1] + i * st[1]] != C(0) ? ap[off[2] + i * st[2]]
                                                                                           : bp[off[3] + i * st[3]];
                            });
        });
    });
}

void CpuTensorKernels::random(const KernelContext&, Tensor& out, bool normal, uint64_t seed, uint64_t offset) {
    visit_dtype(out.dtype(), [&]<class T>() {
        T* o = static_cast<T*>(out.raw_data());
        if (normal) parallel_for(out.numel(), [=](int64_t i) { o[i] = static_cast<T>(philox::normal(seed, offset + i)); });
        else parallel_for(out.numel(), [=](int64_t i) { o[i] = static_cast<T>(philox::uniform(seed, offset + i)); });
    });
}

void CpuTensorKernels::dropout(const KernelContext&, const Tensor& x, double p, uint64_t seed, uint64_t offset,
                               Tensor& out, Tensor& mask) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        T* o = static_cast<T*>(out.raw_data());
        T* m = static_cast<T*>(mask.raw_data());
        const T scale = static_cast<T>(1.0 / (1.0 - p));
        const float keep = static_cast<float>(1.0 - p);
        parallel_for(x.numel(), [=](int64_t i) {
            m[i] = philox::uniform(seed, offset + i) < keep ? scale : T(0);
            o[i] = xp[i] * m[i];
        });
    });
}

// ================================ ops ============================================================
namespace {

void check_same(const char* op, const Tensor& a, const Tensor& b) {
    LSG_CHECK_OP(op, a.dtype() == b.dtype(), "dtypes differ: ", a.dtype(), " ", a.shape(), " and ", b.dtype(), " ",
                 b.shape());
    LSG_CHECK_OP(op, a.device() == b.device(), "tensors are on different devices: ", a.device(), " and ",
                 b.device());
}

Tensor binary_forward(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
    check_same(name, a, b);
    const Shape shape = broadcast_shapes(name, a.shape(), b.shape());
    Tensor out = empty(shape, {.dtype = a.dtype(), .device = a.device()});
    tensor_kernels(a.device())
        .binary(kernel_context(a.device()), op, a.detach().expand(shape), b.detach().expand(shape), out);
    return out;
}

Tensor unary_forward(const char* name, UnaryOp op, const Tensor& x, double a = 0, double b = 0) {
    LSG_CHECK_OP(name, is_floating(x.dtype()), "needs a floating tensor, got ", x.dtype(), " ", x.shape());
    Tensor xc = x.detach().contiguous();
    Tensor y = empty_like(xc);
    tensor_kernels(x.device()).unary(kernel_context(x.device()), op, xc, y, a, b);
    autograd::record(name, y, {x}, [op, a, b, xc, yd = y.detach()](const Tensor& g) {
        Tensor dx = empty_like(xc);
        tensor_kernels(xc.device()).unary_backward(kernel_context(xc.device()), op, g.contiguous(), xc, yd, dx, a, b);
        return std::vector<Tensor>{dx};
    });
    return y;
}

}  // namespace

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
    const size_t n = std::max(a.size(), b.size());
    Shape out(n);
    for (size_t i = 0; i < n; ++i) {
        const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
        const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
        LSG_CHECK_OP(op, da == db || da == 1 || db == 1, "shapes ", a, " and ", b, " cannot be broadcast (dim ", i,
                     ": ", da, " vs ", db, ")");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward("add", BinaryOp::add, a, b);
    autograd::record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
        return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)};
    });
    return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward("sub", BinaryOp::sub, a, b);
    autograd::record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
        return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)};
    });
    return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward("mul", BinaryOp::mul, a, b);
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    autograd::record("mul", out, {a, b}, [ad = a.detach(), bd = b.detach(), ga, gb](const Tensor& g) {
        return std::vector<Tensor>{ga ? sum_to(g * bd, ad.shape()) : Tensor(),
                                   gb ? sum_to(g * ad, bd.shape()) : Tensor()};
    });
    return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
    if (a.dtype() == DType::i64 && b.dtype() == DType::i64) {
        const std::vector<int64_t> divisor = b.to_vector<int64_t>();
        LSG_CHECK(std::find(divisor.begin(), divisor.end(), 0) == divisor.end(), "integer division by zero (divisor ",
                  b.shape(), ")");
    }
    Tensor out = binary_forward("div", BinaryOp::div, a, b);
    const bool gb = b.requires_grad();
    autograd::record("div", out, {a, b}, [ad = a.detach(), bd = b.detach(), gb](const Tensor& g) {
        Tensor ga = sum_to(g / bd, ad.shape());
        Tensor gbv = gb ? sum_to(neg(g * ad / (bd * bd)), bd.shape()) : Tensor();
        return std::vector<Tensor>{ga, gbv};
    });
    return out;
}

namespace {
// max/min backward: the winner takes the gradient, ties split it evenly.
Tensor extremum(const char* name, BinaryOp op, BinaryOp wins, const Tensor& a, const Tensor& b) {
    Tensor out = binary_forward(name, op, a, b);
    autograd::record(name, out, {a, b}, [ad = a.detach(), bd = b.detach(), wins](const Tensor& g) {
        Tensor share = binary_forward("extremum", wins, ad, bd) + binary_forward("extremum", BinaryOp::eq, ad, bd) * 0.5;
        return std::vector<Tensor>{sum_to(g * share, ad.shape()), sum_to(g * (1.0 - share), bd.shape())};
    });
    return out;
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum("maximum", BinaryOp::maximum, BinaryOp::gt, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum("minimum", BinaryOp::minimum, BinaryOp::lt, a, b); }

Tensor eq(const Tensor& a, const Tensor& b) { return binary_forward("eq", BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary_forward("ne", BinaryOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary_forward("lt", BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary_forward("le", BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary_forward("gt", BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary_forward("ge", BinaryOp::ge, a, b); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
    check_same("where", a, b);
    LSG_CHECK(cond.device() == a.device(), "condition is on ", cond.device(), ", values on ", a.device());
    const Shape shape = broadcast_shapes("where", cond.shape(), broadcast_shapes("where", a.shape(), b.shape()));
    Tensor out = empty(shape, {.dtype = a.dtype(), .device = a.device()});
    Tensor c = cond.detach().expand(shape);
    tensor_kernels(a.device())
        .where(kernel_context(a.device()), c, a.detach().expand(shape), b.detach().expand(shape), out);
    autograd::record("where", out, {a, b}, [c, sa = a.shape(), sb = b.shape()](const Tensor& g) {
        Tensor z = zeros({}, {.dtype = g.dtype(), .device = g.device()});
        return std::vector<Tensor>{sum_to(where(c, g, z), sa), sum_to(where(c, z, g), sb)};
    });
    return out;
}

Tensor neg(const Tensor& x) { return unary_forward("neg", UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary_forward("exp", UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary_forward("log", UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary_forward("sqrt", UnaryOp::sqrt, x); }
Tensor relu(const Tensor& x) { return unary_forward("relu", UnaryOp::relu, x); }
Tensor sigmoid(const Tensor& x) { return unary_forward("sigmoid", UnaryOp::sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary_forward("tanh", UnaryOp::tanh, x); }
Tensor abs(const Tensor& x) { return unary_forward("abs", UnaryOp::abs, x); }
Tensor pow(const Tensor& x, double exponent) { return unary_forward("pow", UnaryOp::pow, x, exponent); }
Tensor affine(const Tensor& x, double scale, double shift) {
    return unary_forward("affine", UnaryOp::affine, x, scale, shift);
}
Tensor clamp(const Tensor& x, double lo, double hi) {
    LSG_CHECK(!std::isnan(lo) && !std::isnan(hi), "bounds must not be NaN, got lo ", lo, " and hi ", hi);
    LSG_CHECK(lo <= hi, "lo ", lo, " is greater than hi ", hi);
    return unary_forward("clamp", UnaryOp::clamp, x, lo, hi);
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double s) { return affine(a, 1.0, s); }
Tensor operator+(double s, const Tensor& a) { return affine(a, 1.0, s); }
Tensor operator-(const Tensor& a, double s) { return affine(a, 1.0, -s); }
Tensor operator-(double s, const Tensor& a) { return affine(a, -1.0, s); }
Tensor operator*(const Tensor& a, double s) { return affine(a, s, 0.0); }
Tensor operator*(double s, const Tensor& a) { return affine(a, s, 0.0); }
Tensor operator/(const Tensor& a, double s) { return affine(a, 1.0 / s, 0.0); }
Tensor operator/(double s, const Tensor& a) {
    return div(full({}, s, {.dtype = a.dtype(), .device = a.device()}), a);
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) {
    LSG_CHECK(a.shape() == b.shape(), "shapes differ: ", a.shape(), " and ", b.shape());
    const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
    for (size_t i = 0; i < x.size(); ++i) {
        if (std::isnan(x[i]) || std::isnan(y[i])) {
            if (!(equal_nan && std::isnan(x[i]) && std::isnan(y[i]))) return false;
            continue;
        }
        if (x[i] == y[i]) continue;  // equal infinities
        if (!(std::abs(x[i] - y[i]) <= atol + rtol * std::abs(y[i]))) return false;
    }
    return true;
}

Tensor dropout(const Tensor& x, double p, bool training) {
    LSG_CHECK(p >= 0.0 && p <= 1.0, "probability must be in [0, 1], got ", p);
    if (!training || p == 0.0) return x;
    if (p == 1.0) return x * 0.0;
    Tensor xc = x.detach().contiguous();
    Tensor out = empty_like(xc), mask = empty_like(xc);
    Generator& gen = default_generator();
    tensor_kernels(x.device())
        .dropout(kernel_context(x.device()), xc, p, gen.seed(), gen.advance(static_cast<uint64_t>(x.numel())), out,
                 mask);
    autograd::record("dropout", out, {x}, [mask](const Tensor& g) { return std::vector<Tensor>{g * mask}; });
    return out;
}

}  // namespace lsg

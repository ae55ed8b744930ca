// Matrix products: forward, backward and the CPU GEMM dispatch.
#include "lsgrad/ops/matmul.h"

#include <algorithm>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/parallel.h"
#include "lsgrad/ops/cpu_kernels.h"
#include "lsgrad/ops/gemm.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/reduce.h"

namespace lsg {

void CpuTensorKernels::gemm(const KernelContext&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            double alpha, const Tensor& a, int64_t stride_a, const Tensor& b, int64_t stride_b,
                            double beta, Tensor& c, int64_t stride_c, int64_t batch) {
    // Leading dimensions of at least 1 (BLAS's rule): with k = 0 the GEMM writes C = β·C and reads
    // neither operand, which may then have no storage at all.
    const int64_t lda = std::max<int64_t>(trans_a ? m : k, 1), ldb = std::max<int64_t>(trans_b ? k : n, 1);
    // Many small products (a convolution's per-image GEMMs, below the size at which the GEMM
    // parallelises itself) run one per thread; a large product parallelises inside the GEMM. Either
    // way each C[i] is computed by one fixed schedule.
    const bool across = detail::gemm_batch_across_threads(batch, m * n * k);
    // Typed pointers are taken (and their dtype checks run) before the region; the kernels' own
    // checks and allocations may still throw, so the loop is guarded.
    LSG_CHECK_OP("gemm", a.dtype() == c.dtype() && b.dtype() == c.dtype() && is_floating(c.dtype()), "operands ",
                 a.dtype(), " and ", b.dtype(), " for a ", c.dtype(), " result");
    const bool f64 = c.dtype() == DType::f64;
    const int64_t ldc = std::max<int64_t>(n, 1);
    char* const pa = static_cast<char*>(a.raw_data());
    char* const pb = static_cast<char*>(b.raw_data());
    char* const pc = static_cast<char*>(c.raw_data());
    const int64_t esize = static_cast<int64_t>(dtype_size(c.dtype()));
    guarded_parallel_for(batch, across, [&](int64_t i) {
        if (f64) {
            detail::gemm_f64(trans_a, trans_b, m, n, k, alpha, reinterpret_cast<const double*>(pa + i * stride_a * esize),
                             lda, reinterpret_cast<const double*>(pb + i * stride_b * esize), ldb, beta,
                             reinterpret_cast<double*>(pc + i * stride_c * esize), ldc);
        } else {
            detail::gemm_f32(trans_a, trans_b, m, n, k, static_cast<float>(alpha),
                             reinterpret_cast<const float*>(pa + i * stride_a * esize), lda,
                             reinterpret_cast<const float*>(pb + i * stride_b * esize), ldb, static_cast<float>(beta),
                             reinterpret_cast<float*>(pc + i * stride_c * esize), ldc);
        }
    });
}

namespace {

// The rows of x viewed as [rows, x.size(-1)]: the product of its leading sizes (which reshape's -1
// cannot infer when x is empty).
int64_t rows_of(const Tensor& x) {
    int64_t rows = 1;
    for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);  // a sub-product of a valid shape
    return rows;
}

// A GEMM operand: a row-major matrix (or batch of them) and whether to use its transpose. A
// transposed view (w.t()) is passed as its contiguous original with the flag flipped, not copied.
struct Operand {
    Tensor t;
    bool trans;
};

Operand operand(const Tensor& x, bool trans) {
    Tensor d = x.detach();
    if (d.is_contiguous()) return {d, trans};
    Tensor tt = d.transpose(-1, -2);
    if (tt.is_contiguous()) return {tt, !trans};
    return {d.contiguous(), trans};
}

// op(a) · op(b) for 2-D or same-batch 3-D tensors, without autograd.
Tensor product(const Tensor& a, bool ta, const Tensor& b, bool tb, double beta = 0.0, Tensor c = Tensor()) {
    const Operand A = operand(a, ta), B = operand(b, tb);
    const bool batched = a.dim() == 3;
    const int64_t batch = batched ? a.shape()[0] : 1;
    const int64_t m = ta ? a.size(-1) : a.size(-2), k = ta ? a.size(-2) : a.size(-1);
    const int64_t n = tb ? b.size(-2) : b.size(-1);
    if (!c.defined()) c = empty(batched ? Shape{batch, m, n} : Shape{m, n}, {.dtype = a.dtype(), .device = a.device()});
    if (m * n > 0)
        tensor_kernels(a.device())
            .gemm(kernel_context(a.device()), A.trans, B.trans, m, n, k, 1.0, A.t, m * k, B.t, k * n, beta, c, m * n,
                  batch);
    return c;
}

void check_operands(const char* op, const Tensor& a, const Tensor& b) {
    LSG_CHECK_OP(op, a.dtype() == b.dtype(), "dtypes differ: ", a.dtype(), " ", a.shape(), " and ", b.dtype(), " ",
                 b.shape());
    LSG_CHECK_OP(op, a.dtype() != DType::i64, "integer matrix products are not supported (", a.shape(), " · ",
                 b.shape(), ")");
    LSG_CHECK_OP(op, a.device() == b.device(), "operands on different devices: ", a.device(), " and ", b.device());
}

}  // namespace

namespace {
// a·b for checked 2-D or same-batch 3-D operands, with its backward: dA = g·Bᵀ, dB = Aᵀ·g.
Tensor product_op(const char* name, const Tensor& a, const Tensor& b) {
    Tensor out = product(a, false, b, false);
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    autograd::record(name, out, {a, b}, [ad = a.detach(), bd = b.detach(), ga, gb](const Tensor& g) {
        return std::vector<Tensor>{ga ? product(g, false, bd, true) : Tensor(), gb ? product(ad, true, g, false) : Tensor()};
    });
    return out;
}
}  // namespace

Tensor mm(const Tensor& a, const Tensor& b) {
    check_operands("mm", a, b);
    LSG_CHECK(a.dim() == 2 && b.dim() == 2 && a.shape()[1] == b.shape()[0], "cannot multiply ", a.shape(), " by ",
              b.shape());
    return product_op("mm", a, b);
}

Tensor bmm(const Tensor& a, const Tensor& b) {
    check_operands("bmm", a, b);
    LSG_CHECK(a.dim() == 3 && b.dim() == 3 && a.shape()[0] == b.shape()[0] && a.shape()[2] == b.shape()[1],
              "cannot multiply ", a.shape(), " by ", b.shape(), " batch-wise");
    return product_op("bmm", a, b);
}

Tensor matmul(const Tensor& a, const Tensor& b) {
    check_operands("matmul", a, b);
    LSG_CHECK(a.dim() >= 1 && b.dim() >= 1, "both operands need at least one dim, got ", a.shape(), " and ", b.shape());
    LSG_CHECK(a.size(-1) == b.size(b.dim() == 1 ? 0 : -2), "cannot multiply ", a.shape(), " by ", b.shape(),
              ": inner sizes differ");
    if (a.dim() == 1 && b.dim() == 1) return mm(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
    if (a.dim() == 1) return matmul(a.unsqueeze(0), b).squeeze(-2);
    if (b.dim() == 1) return matmul(a, b.unsqueeze(1)).squeeze(-1);
    if (a.dim() == 2 && b.dim() == 2) return mm(a, b);
    const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
    if (b.dim() == 2) {
        // Fold a's batch into its rows: one large GEMM instead of many small ones.
        Shape out_shape(a.shape().begin(), a.shape().end() - 1);
        out_shape.push_back(n);
        return mm(a.reshape({a.numel() == 0 ? rows_of(a) : -1, k}), b).reshape(out_shape);
    }
    const Shape batch = broadcast_shapes("matmul", Shape(a.shape().begin(), a.shape().end() - 2),
                                         Shape(b.shape().begin(), b.shape().end() - 2));
    Shape sa = batch, sb = batch, out_shape = batch;
    sa.insert(sa.end(), {m, k});
    sb.insert(sb.end(), {k, n});
    out_shape.insert(out_shape.end(), {m, n});
    const int64_t nb = numel(batch);  // explicit: reshape cannot infer -1 when m, k or n is 0
    return bmm(a.expand(sa).reshape({nb, m, k}), b.expand(sb).reshape({nb, k, n})).reshape(out_shape);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    check_operands("linear", x, weight);
    LSG_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.shape()[1], "input ", x.shape(),
              " does not match weight ", weight.shape(), " (expected [..., ", weight.dim() == 2 ? weight.shape()[1] : -1,
              "])");
    const int64_t in = weight.shape()[1], out_features = weight.shape()[0];
    if (bias.defined()) {
        check_operands("linear", x, bias);
        LSG_CHECK(bias.dim() == 1 && bias.shape()[0] == out_features, "bias ", bias.shape(), " does not match weight ",
                  weight.shape());
    }
    Tensor x2 = x.detach().reshape({x.numel() == 0 ? rows_of(x) : -1, in});
    Tensor y = empty({x2.shape()[0], out_features}, {.dtype = x.dtype(), .device = x.device()});
    if (bias.defined()) y.copy_(bias.detach().expand(y.shape()));
    product(x2, false, weight, true, bias.defined() ? 1.0 : 0.0, y);
    Shape out_shape(x.shape().begin(), x.shape().end() - 1);
    out_shape.push_back(out_features);
    y = y.view(out_shape);
    const bool gx = x.requires_grad(), gw = weight.requires_grad();
    auto backward = [x2, wd = weight.detach(), gx, gw, xshape = x.shape(), out_features](const Tensor& g) {
        Tensor g2 = g.reshape({-1, out_features});
        std::vector<Tensor> grads{gx ? product(g2, false, wd, false).view(xshape) : Tensor(),
                                  gw ? product(g2, true, x2, false) : Tensor()};
        grads.push_back(sum(g2, {0}));
        return grads;
    };
    if (bias.defined()) autograd::record("linear", y, {x, weight, bias}, backward);
    else autograd::record("linear", y, {x, weight}, backward);
    return y;
}

}  // namespace lsg

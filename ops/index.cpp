// Indexing and joining: forward, backward and the CPU kernels.
#include "lsgrad/ops/index.h"

#include <algorithm>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/checked.h"
#include "lsgrad/ops/cpu_kernels.h"

namespace lsg {

// ================================ CPU kernels ====================================================
namespace {

// Index values are checked by the op before the kernel runs, so kernels index without checks.
template <class Fn>
void for_outer_inner(int64_t outer, int64_t m, int64_t inner, Fn&& fn) {
#pragma omp parallel for schedule(static) if (outer * m * inner >= kParallelGrain)
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < m; ++j)
            for (int64_t i = 0; i < inner; ++i) fn(o, j, i);
}

// index_select's rows come from anywhere in x (a shuffled batch of a data set far larger than the
// caches): each starts with a cache and TLB miss that a plain copy waits out, which made the MNIST
// loader's gather 15 % of an MLP step. The row kRowsAhead places on is requested while this one is
// copied, its first 4 KiB (an MNIST image is 3 KiB; longer rows stream, and the hardware prefetcher
// follows them).
constexpr int64_t kRowsAhead = 2;

inline void prefetch_row(const void* row, size_t bytes) {
    const char* p = static_cast<const char*>(row);
    for (size_t b = 0; b < std::min<size_t>(bytes, 4096); b += 64) __builtin_prefetch(p + b, 0, 3);
}

}  // namespace

void CpuTensorKernels::gather(const KernelContext&, const Tensor& x, const Tensor& index, int64_t outer, int64_t n,
                              int64_t m, int64_t inner, Tensor& out) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        const int64_t* ip = index.data<int64_t>();
        T* op = static_cast<T*>(out.raw_data());
        for_outer_inner(outer, m, inner, [&](int64_t o, int64_t j, int64_t i) {
            const int64_t k = (o * m + j) * inner + i;
            op[k] = xp[(o * n + ip[k]) * inner + i];
        });
    });
}

void CpuTensorKernels::scatter_add(const KernelContext&, const Tensor& grad, const Tensor& index, int64_t outer,
                                   int64_t n, int64_t m, int64_t inner, Tensor& dx) {
    visit_dtype(grad.dtype(), [&]<class T>() {
        const T* gp = static_cast<const T*>(grad.raw_data());
        const int64_t* ip = index.data<int64_t>();
        T* dp = static_cast<T*>(dx.raw_data());
        // One thread per o, serial over j: repeated indices accumulate in a fixed order.
        for_outer_inner(outer, m, inner, [&](int64_t o, int64_t j, int64_t i) {
            const int64_t k = (o * m + j) * inner + i;
            dp[(o * n + ip[k]) * inner + i] += gp[k];
        });
    });
}

void CpuTensorKernels::index_select(const KernelContext&, const Tensor& x, const Tensor& index, int64_t outer,
                                    int64_t n, int64_t m, int64_t inner, Tensor& out) {
    visit_dtype(x.dtype(), [&]<class T>() {
        const T* xp = static_cast<const T*>(x.raw_data());
        const int64_t* ip = index.data<int64_t>();
        T* op = static_cast<T*>(out.raw_data());
#pragma omp parallel for schedule(static) if (outer * m * inner >= kParallelGrain)
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t j = 0; j < m; ++j) {
                if (j + kRowsAhead < m) prefetch_row(xp + (o * n + ip[j + kRowsAhead]) * inner, inner * sizeof(T));
                std::copy_n(xp + (o * n + ip[j]) * inner, inner, op + (o * m + j) * inner);
            }
    });
}

void CpuTensorKernels::index_add(const KernelContext&, const Tensor& grad, const Tensor& index, int64_t outer,
                                 int64_t n, int64_t m, int64_t inner, Tensor& dx) {
    visit_dtype(grad.dtype(), [&]<class T>() {
        const T* gp = static_cast<const T*>(grad.raw_data());
        const int64_t* ip = index.data<int64_t>();
        T* dp = static_cast<T*>(dx.raw_data());
        for_outer_inner(outer, m, inner, [&](int64_t o, int64_t j, int64_t i) {
            dp[(o * n + ip[j]) * inner + i] += gp[(o * m + j) * inner + i];
        });
    });
}

// ================================ ops ============================================================
namespace {

void check_indices(const char* op, const Tensor& index, int64_t n, int64_t dim, const Shape& x_shape) {
    LSG_CHECK_OP(op, index.dtype() == DType::i64, "index must be int64, got ", index.dtype());
    const std::vector<int64_t> v = index.to_vector<int64_t>();
    for (size_t k = 0; k < v.size(); ++k)
        LSG_CHECK_OP(op, v[k] >= 0 && v[k] < n, "index ", v[k], " at position ", k, " is out of range [0, ", n,
                     ") for dim ", dim, " of shape ", x_shape);
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
    dim = wrap_dim("gather", dim, x.dim());
    LSG_CHECK(index.dim() == x.dim(), "index ", index.shape(), " must have as many dims as input ", x.shape());
    for (int64_t d = 0; d < x.dim(); ++d)
        LSG_CHECK(d == dim || index.shape()[d] == x.shape()[d], "index ", index.shape(), " and input ", x.shape(),
                  " differ outside dim ", dim);
    LSG_CHECK(index.device() == x.device(), "index is on ", index.device(), ", input on ", x.device());
    const int64_t n = x.dim() == 0 ? 1 : x.shape()[dim];
    check_indices("gather", index, n, dim, x.shape());
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < dim; ++d) outer *= x.shape()[d];
    for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[d];
    const int64_t m = x.dim() == 0 ? 1 : index.shape()[dim];
    Tensor idx = index.contiguous();
    Tensor out = empty(index.shape(), {.dtype = x.dtype(), .device = x.device()});
    tensor_kernels(x.device())
        .gather(kernel_context(x.device()), x.detach().contiguous(), idx, outer, n, m, inner, out);
    autograd::record("gather", out, {x}, [=, shape = x.shape(), dtype = x.dtype()](const Tensor& g) {
        Tensor dx = zeros(shape, {.dtype = dtype, .device = g.device()});
        tensor_kernels(g.device()).scatter_add(kernel_context(g.device()), g.contiguous(), idx, outer, n, m, inner, dx);
        return std::vector<Tensor>{dx};
    });
    return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
    dim = wrap_dim("index_select", dim, x.dim());
    LSG_CHECK(index.dim() == 1, "index must be 1-D, got shape ", index.shape());
    LSG_CHECK(index.device() == x.device(), "index is on ", index.device(), ", input on ", x.device());
    LSG_CHECK(x.dim() > 0, "input must have at least one dim");
    const int64_t n = x.shape()[dim];
    check_indices("index_select", index, n, dim, x.shape());
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < dim; ++d) outer *= x.shape()[d];
    for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[d];
    const int64_t m = index.numel();
    Shape shape = x.shape();
    shape[dim] = m;
    Tensor idx = index.contiguous();
    Tensor out = empty(shape, {.dtype = x.dtype(), .device = x.device()});
    tensor_kernels(x.device())
        .index_select(kernel_context(x.device()), x.detach().contiguous(), idx, outer, n, m, inner, out);
    autograd::record("index_select", out, {x}, [=, xshape = x.shape(), dtype = x.dtype()](const Tensor& g) {
        Tensor dx = zeros(xshape, {.dtype = dtype, .device = g.device()});
        tensor_kernels(g.device()).index_add(kernel_context(g.device()), g.contiguous(), idx, outer, n, m, inner, dx);
        return std::vector<Tensor>{dx};
    });
    return out;
}

Tensor one_hot(const Tensor& index, int64_t num_classes, DType dtype) {
    LSG_CHECK(index.dtype() == DType::i64, "index must be int64, got ", index.dtype());
    LSG_CHECK(num_classes > 0, "num_classes must be positive, got ", num_classes);
    check_indices("one_hot", index, num_classes, -1, {num_classes});
    Shape shape = index.shape();
    shape.push_back(num_classes);
    checked::numel("one_hot", shape, static_cast<int64_t>(dtype_size(dtype)));
    Tensor out = zeros(shape, {.dtype = dtype, .device = index.device()});
    Tensor idx = index.contiguous().reshape({index.numel(), 1});
    Tensor ones_ = ones({index.numel(), 1}, {.dtype = dtype, .device = index.device()});
    Tensor flat = out.view({index.numel(), num_classes});
    tensor_kernels(index.device())
        .scatter_add(kernel_context(index.device()), ones_, idx, index.numel(), num_classes, 1, 1, flat);
    return out;
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
    LSG_CHECK(!tensors.empty(), "expects a non-empty list of tensors");
    const Tensor& first = tensors.front();
    LSG_CHECK(first.dim() > 0, "zero-dimensional tensors cannot be concatenated (use stack)");
    dim = wrap_dim("cat", dim, first.dim());
    Shape shape = first.shape();
    shape[dim] = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const Tensor& t = tensors[i];
        LSG_CHECK(t.dim() == first.dim() && t.dtype() == first.dtype() && t.device() == first.device(), "tensor ", i,
                  " (", t.dtype(), " ", t.shape(), " on ", t.device(), ") does not match tensor 0 (", first.dtype(), " ",
                  first.shape(), " on ", first.device(), ")");
        for (int64_t d = 0; d < t.dim(); ++d)
            LSG_CHECK(d == dim || t.shape()[d] == first.shape()[d], "tensor ", i, " has shape ", t.shape(),
                      ", tensor 0 has ", first.shape(), ": they differ outside dim ", dim);
        LSG_CHECK(!__builtin_add_overflow(shape[dim], t.shape()[dim], &shape[dim]), "the sizes along dim ", dim,
                  " add up past int64 at tensor ", i, " (", t.shape()[dim], ")");
    }
    Tensor out = empty(shape, {.dtype = first.dtype(), .device = first.device()});
    std::vector<int64_t> starts, sizes;
    int64_t at = 0;
    for (const Tensor& t : tensors) {
        Tensor part = out.narrow(dim, at, t.shape()[dim]);
        tensor_kernels(out.device()).copy(kernel_context(out.device()), t.detach(), part);
        starts.push_back(at);
        sizes.push_back(t.shape()[dim]);
        at += t.shape()[dim];
    }
    autograd::record_list("cat", out, tensors, [dim, starts, sizes](const Tensor& g) {
        std::vector<Tensor> grads;
        for (size_t i = 0; i < sizes.size(); ++i) grads.push_back(g.narrow(dim, starts[i], sizes[i]).contiguous());
        return grads;
    });
    return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
    LSG_CHECK(!tensors.empty(), "expects a non-empty list of tensors");
    dim = wrap_dim("stack", dim, tensors.front().dim() + 1);
    std::vector<Tensor> parts;
    parts.reserve(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        LSG_CHECK(tensors[i].shape() == tensors.front().shape(), "tensor ", i, " has shape ", tensors[i].shape(),
                  ", tensor 0 has ", tensors.front().shape());
        parts.push_back(tensors[i].unsqueeze(dim));
    }
    return cat(parts, dim);
}

}  // namespace lsg

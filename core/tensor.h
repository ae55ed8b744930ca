// Tensor: a strided view of reference-counted storage, with the autograd record that makes it
// differentiable. Copying a Tensor copies a handle (like torch.Tensor); views share storage.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lsgrad/core/allocator.h"
#include "lsgrad/core/dtype.h"
#include "lsgrad/core/error.h"

namespace lsg {

using Shape = std::vector<int64_t>;

namespace autograd {
class Node;
}

// A block of device memory owned by one or more tensors; returned to its allocator's cache when
// the last tensor lets go.
class Storage {
public:
    Storage(size_t nbytes, Device device);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() const { return data_; }
    size_t nbytes() const { return nbytes_; }
    Device device() const { return device_; }
    // The autograd version counter (PyTorch's tensor._version), shared by every view of this
    // storage: each in-place write bumps it, and backward compares it with the value each op
    // recorded when it saved its inputs.
    uint64_t version() const { return version_; }
    void bump_version() { ++version_; }

private:
    void* data_;
    size_t nbytes_;
    Device device_;
    uint64_t version_ = 0;
};

// What a factory makes: zeros({2, 3}, {.dtype = DType::f64, .requires_grad = true}).
struct TensorOptions {
    DType dtype = DType::f32;
    Device device = Device::cpu();
    bool requires_grad = false;
};

class Tensor;

// The shared state behind a Tensor handle.
struct TensorImpl {
    std::shared_ptr<Storage> storage;
    Shape shape;
    Shape strides;  // in elements
    int64_t offset = 0;  // in elements
    DType dtype = DType::f32;
    bool requires_grad = false;
    std::shared_ptr<TensorImpl> grad;
    std::shared_ptr<autograd::Node> grad_fn;     // the op that made this tensor; null for leaves
    std::shared_ptr<autograd::Node> grad_accum;  // leaves that require grad: where gradients land
    // Called, in registration order, each time a backward has accumulated into this leaf's grad
    // (see Tensor::register_post_accumulate_grad_hook); keyed by the id that removes them.
    std::vector<std::pair<uint64_t, std::function<void(const Tensor&)>>> post_accumulate_grad_hooks;
};

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    bool defined() const { return impl_ != nullptr; }

    // ---- metadata ---------------------------------------------------------------------------
    const Shape& shape() const { return impl().shape; }
    const Shape& sizes() const { return impl().shape; }
    // Size of `dim`; negative dims count from the end, as in PyTorch.
    int64_t size(int64_t dim) const;
    const Shape& strides() const { return impl().strides; }
    int64_t stride(int64_t dim) const;
    int64_t offset() const { return impl().offset; }
    int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
    int64_t numel() const;
    DType dtype() const { return impl().dtype; }
    Device device() const { return impl().storage->device(); }
    bool is_contiguous() const;
    const std::shared_ptr<Storage>& storage() const { return impl().storage; }
    // True when both tensors view the same storage.
    bool shares_storage(const Tensor& other) const { return storage() == other.storage(); }

    // Typed pointer to element [0, ..., 0]; checks that T matches dtype(). Device memory on CUDA.
    template <class T>
    T* data() const {
        LSG_CHECK(dtype_of<T>() == dtype(), "tensor is ", dtype(), ", not ", dtype_name(dtype_of<T>()));
        return static_cast<T*>(raw_data());
    }
    void* raw_data() const;

    // ---- conversion -------------------------------------------------------------------------
    // A copy on `device` (this tensor itself when it is already there). Differentiable.
    Tensor to(Device device) const;
    // A copy converted to `dtype` (this tensor itself when it already is). Differentiable.
    Tensor to(DType dtype) const;
    // This tensor when its strides are row-major, else a row-major copy. Differentiable.
    Tensor contiguous() const;
    // A row-major copy with its own storage. Differentiable.
    Tensor clone() const;
    // The single element of a one-element tensor, converted to T.
    template <class T = double>
    T item() const;
    // All elements in row-major order, converted to T (copied to the host first).
    template <class T>
    std::vector<T> to_vector() const;
    // "tensor([[1.0000, 2.0000], ...], dtype=float32)": values, shape summary for large tensors.
    std::string str() const;

    // Σ of all elements (0-d), accumulated in double in index order; mean = Σ/numel (NaN when
    // empty, as in PyTorch). Differentiable; lsg::sum(x) and lsg::mean(x) of ops/reduce.h are these.
    Tensor sum() const;
    Tensor mean() const;

    // ---- views (share storage; differentiable) ----------------------------------------------
    // Same elements in a new shape; one dim may be -1. view() requires compatible strides,
    // reshape() copies when needed.
    Tensor view(Shape shape) const;
    Tensor reshape(Shape shape) const;
    // Dims start_dim..end_dim merged into one.
    Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
    Tensor transpose(int64_t dim0, int64_t dim1) const;
    // Transpose of a 2-D tensor.
    Tensor t() const;
    Tensor permute(std::vector<int64_t> dims) const;
    // Elements start..start+length-1 of `dim`.
    Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
    // Elements start, start+step, ... < end of `dim` (end clamped to the size, negatives count back).
    Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
    // Element `index` of `dim`, which is removed.
    Tensor select(int64_t dim, int64_t index) const;
    Tensor squeeze() const;
    Tensor squeeze(int64_t dim) const;
    Tensor unsqueeze(int64_t dim) const;
    // Size-1 dims repeated (stride 0) to `shape`; -1 keeps a dim; new leading dims may be added.
    Tensor expand(Shape shape) const;

    // ---- autograd ---------------------------------------------------------------------------
    bool requires_grad() const { return impl().requires_grad; }
    // Marks a leaf as needing gradients (throws on a non-leaf, as PyTorch does).
    Tensor& requires_grad_(bool requires_grad = true);
    // True for tensors no differentiable op produced.
    bool is_leaf() const { return impl().grad_fn == nullptr; }
    // The accumulated gradient (undefined until a backward reaches this leaf).
    Tensor grad() const;
    // Replaces the gradient (an undefined tensor clears it).
    void set_grad(const Tensor& grad);
    // Clears the accumulated gradient, as optimizer.zero_grad(set_to_none=True) does.
    void zero_grad();
    // Calls hook(*this) each time a backward has finished accumulating into this leaf's grad()
    // (once per backward that reaches it, after every contribution of that backward is summed),
    // as PyTorch's register_post_accumulate_grad_hook: what data-parallel training uses to start
    // reducing a gradient while the rest of backward runs. Throws on a tensor that is not a leaf
    // requiring grad. Returns an id for remove_post_accumulate_grad_hook.
    uint64_t register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook);
    // Removes the hook of that id (an unknown id is ignored: the hook is already gone).
    void remove_post_accumulate_grad_hook(uint64_t id);
    const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
    // The same data, cut from the graph: no grad_fn, requires_grad false. Shares storage.
    Tensor detach() const;
    // Back-propagates from this tensor. With no `grad`, this must be a one-element tensor and the
    // seed is 1. Gradients accumulate into leaves' grad(); the graph is freed unless retain_graph.
    void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

    // ---- in-place, outside autograd (optimizers, initialisers) ------------------------------
    // Every in-place write bumps the storage's version counter (see Storage::version), so that a
    // backward through an op that saved this tensor before the write raises instead of computing
    // a wrong gradient. Code that writes through raw_data() calls bump_version() itself.
    uint64_t version() const { return storage()->version(); }
    void bump_version() const { storage()->bump_version(); }
    Tensor& fill_(double value);
    Tensor& zero_() { return fill_(0.0); }
    // Copies src's values (broadcast to this shape, converted to this dtype, from any device).
    Tensor& copy_(const Tensor& src);

    TensorImpl& impl() const;
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

private:
    std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- factories ------------------------------------------------------------------------------
// Uninitialised storage for `shape` (a 64-byte aligned block from the caching allocator).
Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
// A zero-dimensional tensor holding `value`.
Tensor scalar_tensor(double value, TensorOptions options = {});
// [0, 1, ..., end-1] and [start, start+step, ... < end]; default dtype i64, as torch.arange.
Tensor arange(int64_t end, TensorOptions options = {.dtype = DType::i64});
Tensor arange(double start, double end, double step, TensorOptions options = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);

// g [.., shape] summed over the dims that broadcasting added or expanded so that it has `shape`:
// the backward of expand() and of broadcasting ops. For backward functions (not differentiable).
Tensor sum_to(const Tensor& g, const Shape& shape);
// A tensor holding `values` (row-major) in `shape` (Shape{} makes a 0-d tensor of one value).
// dtype from T unless options say otherwise.
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions options = {.dtype = dtype_of<T>()});
// The same, 1-D, as torch.tensor([...]).
template <class T>
Tensor from_vector(const std::vector<T>& values) {
    return from_vector(values, Shape{static_cast<int64_t>(values.size())});
}
// Literals: tensor({1.f, 2.f}) is f32 [2], tensor({1.0, 2.0}, {2, 1}) f64 [2, 1].
Tensor tensor(std::initializer_list<float> values);
Tensor tensor(std::initializer_list<float> values, const Shape& shape, TensorOptions options = {});
Tensor tensor(std::initializer_list<double> values);
Tensor tensor(std::initializer_list<double> values, const Shape& shape, TensorOptions options = {.dtype = DType::f64});

// Number of elements of a shape.
int64_t numel(const Shape& shape);
// Row-major strides of a shape.
Shape contiguous_strides(const Shape& shape);
// Wraps a possibly negative dim into [0, ndim) or throws naming `op`.
int64_t wrap_dim(const char* op, int64_t dim, int64_t ndim);

extern template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
extern template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
extern template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);
extern template float Tensor::item<float>() const;
extern template double Tensor::item<double>() const;
extern template int64_t Tensor::item<int64_t>() const;
extern template std::vector<float> Tensor::to_vector<float>() const;
extern template std::vector<double> Tensor::to_vector<double>() const;
extern template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

}  // namespace lsg

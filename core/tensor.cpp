#include "lsgrad/core/tensor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <ostream>
#include <sstream>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/checked.h"

namespace lsg {

// ---- Storage ------------------------------------------------------------------------------------

Storage::Storage(size_t nbytes, Device device)
    : data_(allocator(device).allocate(nbytes)), nbytes_(nbytes), device_(device) {}

Storage::~Storage() { allocator(device_).deallocate(data_, nbytes_); }

// ---- shape helpers ------------------------------------------------------------------------------

int64_t numel(const Shape& shape) { return checked::numel("numel", shape); }

Shape contiguous_strides(const Shape& shape) { return checked::contiguous_strides("contiguous_strides", shape); }

int64_t wrap_dim(const char* op, int64_t dim, int64_t ndim) {
    const int64_t n = std::max<int64_t>(ndim, 1);
    LSG_CHECK_OP(op, dim >= -n && dim < n, "dim ", dim, " is out of range for a tensor of ", ndim,
                 " dims (expected in [", -n, ", ", n - 1, "])");
    return dim < 0 ? dim + n : dim;
}

namespace {

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, TensorOptions options) {
    const int64_t elem = static_cast<int64_t>(dtype_size(options.dtype));
    const int64_t n = checked::numel("empty", shape, elem);
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(static_cast<size_t>(n) * static_cast<size_t>(elem), options.device);
    impl->shape = shape;
    impl->strides = checked::contiguous_strides("empty", shape);
    impl->dtype = options.dtype;
    impl->requires_grad = options.requires_grad;
    return impl;
}

// A view of `base` with new geometry; differentiable through `backward`.
Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset, const char* name,
                 autograd::BackwardFn backward) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = base.storage();
    impl->shape = std::move(shape);
    impl->strides = std::move(strides);
    impl->offset = offset;
    impl->dtype = base.dtype();
    Tensor out(std::move(impl));
    autograd::record_view(name, out, base, std::move(backward));
    return out;
}

// Resolves a single -1 in `shape` for `n` elements.
Shape infer_shape(const char* op, Shape shape, int64_t n, const Shape& from) {
    int64_t known = 1, infer = -1;
    bool zero = false;  // a 0 in `shape`: -1 is then ambiguous, as in PyTorch
    for (size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == -1) {
            LSG_CHECK_OP(op, infer < 0, "only one dim may be -1, got ", shape);
            infer = static_cast<int64_t>(i);
        } else {
            LSG_CHECK_OP(op, shape[i] >= 0, "invalid size in shape ", shape);
            LSG_CHECK_OP(op, !__builtin_mul_overflow(known, std::max<int64_t>(shape[i], 1), &known), "shape ", shape,
                         " has more elements than fit in int64");
            if (shape[i] == 0) zero = true;
        }
    }
    if (infer >= 0) {
        LSG_CHECK_OP(op, !zero && n % known == 0, "shape ", shape, " is invalid for input of shape ",
                     from, " (", n, " elements)");
        shape[infer] = n / known;
    }
    LSG_CHECK_OP(op, checked::numel(op, shape) == n, "shape ", shape, " is invalid for input of shape ", from, " (", n,
                 " elements)");
    return shape;
}

// Strides that view `t` as `shape` without a copy, or empty when its layout does not allow it
// (PyTorch's computeStride: each run of merged dims must be contiguous within itself).
Shape view_strides(const Tensor& t, const Shape& shape) {
    if (t.numel() == 0 || t.is_contiguous()) return contiguous_strides(shape);
    const Shape& old_shape = t.shape();
    const Shape& old_strides = t.strides();
    Shape strides(shape.size());
    int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
    int64_t chunk_base_stride = old_strides.back();
    int64_t tensor_numel = 1, view_numel = 1;
    for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
        tensor_numel *= old_shape[d];
        if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                --view_d;
            }
            if (view_numel != tensor_numel) return {};
            if (d > 0) {
                chunk_base_stride = old_strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    if (view_d != -1) return {};
    return strides;
}

}  // namespace

// ---- metadata -----------------------------------------------------------------------------------

TensorImpl& Tensor::impl() const {
    LSG_CHECK(impl_ != nullptr, "the tensor is undefined (default-constructed or a missing gradient)");
    return *impl_;
}

int64_t Tensor::size(int64_t dim) const { return shape()[wrap_dim("size", dim, this->dim())]; }
int64_t Tensor::stride(int64_t dim) const { return strides()[wrap_dim("stride", dim, this->dim())]; }
int64_t Tensor::numel() const { return lsg::numel(shape()); }

bool Tensor::is_contiguous() const {
    int64_t expected = 1;
    for (int64_t d = dim() - 1; d >= 0; --d) {
        if (shape()[d] == 1) continue;
        if (strides()[d] != expected) return false;
        expected *= shape()[d];
    }
    return true;
}

void* Tensor::raw_data() const {
    return static_cast<char*>(storage()->data()) + offset() * static_cast<int64_t>(dtype_size(dtype()));
}

// ---- conversion ---------------------------------------------------------------------------------

Tensor Tensor::to(Device target) const {
    if (target == device()) return *this;
    Tensor src = contiguous();
    Tensor out = empty(shape(), {.dtype = dtype(), .device = target});
    const size_t nbytes = static_cast<size_t>(numel()) * dtype_size(dtype());
    if (target.is_cuda()) {
        allocator(target).copy_host(out.raw_data(), src.raw_data(), nbytes, true);
    } else {
        allocator(device()).copy_host(out.raw_data(), src.raw_data(), nbytes, false);
    }
    const Device from = device();
    autograd::record_view("to", out, *this, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
    return out;
}

Tensor Tensor::to(DType target) const {
    if (target == dtype()) return *this;
    Tensor out = empty(shape(), {.dtype = target, .device = device()});
    tensor_kernels(device()).copy(kernel_context(device()), *this, out);
    if (is_floating(target) && is_floating(dtype())) {
        const DType from = dtype();
        autograd::record_view("to", out, *this, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
    }
    return out;
}

Tensor Tensor::contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
}

Tensor Tensor::clone() const {
    Tensor out = empty(shape(), {.dtype = dtype(), .device = device()});
    tensor_kernels(device()).copy(kernel_context(device()), *this, out);
    autograd::record_view("clone", out, *this, [](const Tensor& g) { return std::vector<Tensor>{g}; });
    return out;
}

template <class T>
T Tensor::item() const {
    LSG_CHECK(numel() == 1, "a tensor with ", numel(), " elements (shape ", shape(),
              ") cannot be converted to a scalar");
    return to_vector<T>()[0];
}

template <class T>
std::vector<T> Tensor::to_vector() const {
    Tensor host = detach().to(Device::cpu()).contiguous();
    std::vector<T> out(static_cast<size_t>(numel()));
    visit_dtype(dtype(), [&]<class S>() {
        const S* p = host.data<S>();
        for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(p[i]);
    });
    return out;
}

template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

std::string Tensor::str() const {
    std::ostringstream os;
    os << *this;
    return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
    if (!t.defined()) return os << "tensor(undefined)";
    const std::vector<double> v = t.to_vector<double>();
    const Shape& shape = t.shape();
    const bool integral = t.dtype() == DType::i64;
    // Large tensors print their first and last three entries per dim, as PyTorch does past 1000.
    const bool summarize = v.size() > 1000;
    const Shape strides = contiguous_strides(shape);
    auto fmt = [&](double x) {
        char buf[32];
        if (integral) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(x));
        else std::snprintf(buf, sizeof buf, "%.4f", x);
        return std::string(buf);
    };
    auto rec = [&](auto&& self, size_t d, int64_t base) -> void {
        if (d == shape.size()) {
            os << fmt(v[static_cast<size_t>(base)]);
            return;
        }
        os << '[';
        const int64_t n = shape[d];
        for (int64_t i = 0; i < n; ++i) {
            if (summarize && n > 6 && i == 3) {
                os << "...";
                i = n - 4;
                if (d + 1 < shape.size()) os << ",\n" << std::string(d + 8, ' ');
                else os << ", ";
                continue;
            }
            if (i) os << (d + 1 < shape.size() ? ",\n" + std::string(d + 8, ' ') : ", ");
            self(self, d + 1, base + i * strides[d]);
        }
        os << ']';
    };
    os << "tensor(";
    rec(rec, 0, 0);
    std::ostringstream meta;
    detail::append(meta, shape);
    os << ", shape=" << meta.str() << ", dtype=" << t.dtype();
    if (!t.device().is_cpu()) os << ", device=" << t.device();
    if (t.requires_grad()) os << ", requires_grad=True";
    return os << ')';
}

// ---- views --------------------------------------------------------------------------------------

Tensor Tensor::view(Shape new_shape) const {
    new_shape = infer_shape("view", std::move(new_shape), numel(), shape());
    Shape new_strides = view_strides(*this, new_shape);
    LSG_CHECK(!new_strides.empty() || new_shape.empty(), "cannot view a tensor of shape ", shape(), " strides ",
              strides(), " as ", new_shape, ": its layout is not compatible (use reshape())");
    const Shape old_shape = shape();
    return make_view(*this, new_shape, new_strides, offset(), "view",
                     [old_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(old_shape)}; });
}

Tensor Tensor::reshape(Shape new_shape) const {
    new_shape = infer_shape("reshape", std::move(new_shape), numel(), shape());
    if (!view_strides(*this, new_shape).empty() || new_shape.empty()) return view(new_shape);
    return contiguous().view(new_shape);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
    if (dim() == 0) return reshape({1});
    start_dim = wrap_dim("flatten", start_dim, dim());
    end_dim = wrap_dim("flatten", end_dim, dim());
    LSG_CHECK(start_dim <= end_dim, "start_dim ", start_dim, " is after end_dim ", end_dim);
    Shape s(shape().begin(), shape().begin() + start_dim);
    int64_t merged = 1;
    for (int64_t d = start_dim; d <= end_dim; ++d) merged *= shape()[d];  // a sub-product of numel(): fits
    s.push_back(merged);
    s.insert(s.end(), shape().begin() + end_dim + 1, shape().end());
    return reshape(s);
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
    std::vector<int64_t> perm(static_cast<size_t>(dim()));
    std::iota(perm.begin(), perm.end(), 0);
    if (dim() == 0) return *this;
    std::swap(perm[wrap_dim("transpose", dim0, dim())], perm[wrap_dim("transpose", dim1, dim())]);
    return permute(perm);
}

Tensor Tensor::t() const {
    LSG_CHECK(dim() <= 2, "expects a tensor of at most 2 dims, got shape ", shape());
    return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::permute(std::vector<int64_t> dims) const {
    LSG_CHECK(static_cast<int64_t>(dims.size()) == dim(), "dims ", dims, " do not match a tensor of shape ", shape());
    Shape s(dims.size()), st(dims.size());
    std::vector<int64_t> inverse(dims.size(), -1);
    for (size_t i = 0; i < dims.size(); ++i) {
        const int64_t d = wrap_dim("permute", dims[i], dim());
        LSG_CHECK(inverse[d] < 0, "dim ", d, " repeats in ", dims);
        inverse[d] = static_cast<int64_t>(i);
        s[i] = shape()[d];
        st[i] = strides()[d];
    }
    return make_view(*this, s, st, offset(), "permute",
                     [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
    d = wrap_dim("narrow", d, dim());
    if (start < 0) start += shape()[d];
    // Compared without forming start + length, which a hostile length would overflow.
    LSG_CHECK(start >= 0 && length >= 0 && start <= shape()[d] && length <= shape()[d] - start, "start ", start,
              " and length ", length, " are out of bounds for dim ", d, " of shape ", shape());
    return slice(d, start, start + length, 1);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
    d = wrap_dim("slice", d, dim());
    LSG_CHECK(step > 0, "step must be positive, got ", step);
    const int64_t n = shape()[d];
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = std::clamp<int64_t>(start, 0, n);
    end = std::clamp<int64_t>(end, start, n);
    Shape s = shape(), st = strides();
    s[d] = (end - start) / step + ((end - start) % step != 0);  // ⌈(end − start) / step⌉ without overflow
    st[d] *= step;
    const Shape full_shape = shape();
    const DType dt = dtype();
    return make_view(*this, s, st, offset() + start * strides()[d], "slice",
                     [=](const Tensor& g) {
                         Tensor dx = zeros(full_shape, {.dtype = dt, .device = g.device()});
                         dx.slice(d, start, end, step).copy_(g);
                         return std::vector<Tensor>{dx};
                     });
}

Tensor Tensor::select(int64_t d, int64_t index) const {
    d = wrap_dim("select", d, dim());
    const int64_t n = shape()[d];
    LSG_CHECK(index >= -n && index < n, "index ", index, " is out of bounds for dim ", d, " of shape ", shape());
    if (index < 0) index += n;
    return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::squeeze() const {
    Shape s;
    for (int64_t x : shape())
        if (x != 1) s.push_back(x);
    return reshape(s);
}

Tensor Tensor::squeeze(int64_t d) const {
    if (dim() == 0) return *this;
    d = wrap_dim("squeeze", d, dim());
    if (shape()[d] != 1) return *this;
    Shape s = shape(), st = strides();
    s.erase(s.begin() + d);
    st.erase(st.begin() + d);
    const Shape old_shape = shape();
    return make_view(*this, s, st, offset(), "squeeze",
                     [old_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(old_shape)}; });
}

Tensor Tensor::unsqueeze(int64_t d) const {
    d = wrap_dim("unsqueeze", d, dim() + 1);
    Shape s = shape(), st = strides();
    const int64_t stride = d < dim() ? strides()[d] * shape()[d] : 1;
    s.insert(s.begin() + d, 1);
    st.insert(st.begin() + d, stride);
    return make_view(*this, s, st, offset(), "unsqueeze",
                     [d](const Tensor& g) { return std::vector<Tensor>{g.squeeze(d)}; });
}

Tensor Tensor::expand(Shape target) const {
    LSG_CHECK(target.size() >= shape().size(), "cannot expand shape ", shape(), " to ", target);
    const size_t lead = target.size() - shape().size();
    Shape st(target.size(), 0);
    for (size_t i = 0; i < target.size(); ++i) {
        if (i < lead) {
            LSG_CHECK(target[i] >= 0, "cannot expand shape ", shape(), " to ", target, ": new dims need a size");
            continue;
        }
        const int64_t have = shape()[i - lead];
        if (target[i] == -1) target[i] = have;
        LSG_CHECK(have == target[i] || have == 1, "cannot expand shape ", shape(), " to ", target, ": dim ", i,
                  " has size ", have, ", not 1 or ", target[i]);
        st[i] = have == target[i] ? strides()[i - lead] : 0;
    }
    checked::numel("expand", target);
    const Shape old_shape = shape();
    return make_view(*this, target, st, offset(), "expand",
                     [old_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, old_shape)}; });
}

// ---- whole-tensor reductions ----------------------------------------------------------------------
// Core's own reductions, through the device's reduce kernel: the backward of broadcasting needs
// sum_to, and x.sum() / x.mean() are members. ops/reduce.cpp's sum(x) and mean(x) call these.

Tensor Tensor::sum() const {
    if (dim() == 0) return clone();
    Tensor out = empty({}, {.dtype = dtype(), .device = device()});
    tensor_kernels(device()).reduce(kernel_context(device()), ReduceOp::sum, detach().contiguous(), 1, numel(), 1, out);
    autograd::record("sum", out, {*this},
                     [shape = shape()](const Tensor& g) { return std::vector<Tensor>{g.expand(shape).contiguous()}; });
    return out;
}

Tensor Tensor::mean() const {
    LSG_CHECK(is_floating(dtype()), "needs a floating tensor, got ", dtype());
    // Σ·(1/n): an empty tensor gives 0·inf = NaN, as in PyTorch.
    const double inv = 1.0 / static_cast<double>(numel());
    const Tensor s = detach().sum();
    Tensor out = empty({}, {.dtype = dtype(), .device = device()});
    tensor_kernels(device()).unary(kernel_context(device()), UnaryOp::affine, s, out, inv, 0.0);
    autograd::record("mean", out, {*this}, [shape = shape(), inv](const Tensor& g) {
        Tensor gs = empty(g.shape(), {.dtype = g.dtype(), .device = g.device()});
        tensor_kernels(g.device()).unary(kernel_context(g.device()), UnaryOp::affine, g.contiguous(), gs, inv, 0.0);
        return std::vector<Tensor>{gs.expand(shape).contiguous()};
    });
    return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
    if (g.shape() == shape) return g;
    LSG_CHECK(g.dim() >= static_cast<int64_t>(shape.size()), "cannot sum shape ", g.shape(), " to ", shape);
    const int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
    for (int64_t d = lead; d < g.dim(); ++d)
        LSG_CHECK(shape[d - lead] == g.shape()[d] || shape[d - lead] == 1, "cannot sum shape ", g.shape(), " to ", shape);
    Tensor out = g.detach();
    // One dim at a time from the last, each viewed as the middle of [outer, n, inner].
    for (int64_t d = g.dim() - 1; d >= 0; --d) {
        if (d >= lead && !(shape[d - lead] == 1 && g.shape()[d] != 1)) continue;
        Shape kept = out.shape();
        int64_t outer = 1, inner = 1;
        for (int64_t i = 0; i < d; ++i) outer *= kept[i];
        for (size_t i = d + 1; i < kept.size(); ++i) inner *= kept[i];
        const int64_t n = kept[d];
        kept[d] = 1;
        Tensor r = empty(kept, {.dtype = g.dtype(), .device = g.device()});
        tensor_kernels(g.device())
            .reduce(kernel_context(g.device()), ReduceOp::sum, out.contiguous(), outer, n, inner, r);
        out = r;
    }
    return out.reshape(shape);
}

// ---- autograd -----------------------------------------------------------------------------------

Tensor& Tensor::requires_grad_(bool requires_grad) {
    LSG_CHECK(is_leaf() || requires_grad, "can only change requires_grad of a leaf tensor");
    LSG_CHECK(!requires_grad || is_floating(dtype()), "only floating tensors can require grad, got ", dtype());
    impl().requires_grad = requires_grad;
    return *this;
}

Tensor Tensor::grad() const { return Tensor(impl().grad); }

void Tensor::set_grad(const Tensor& grad) {
    if (grad.defined())
        LSG_CHECK(grad.shape() == shape(), "gradient of shape ", grad.shape(), " for a tensor of shape ", shape());
    impl().grad = grad.impl_ptr();
}

void Tensor::zero_grad() { impl().grad.reset(); }

uint64_t Tensor::register_post_accumulate_grad_hook(std::function<void(const Tensor&)> hook) {
    LSG_CHECK(is_leaf() && requires_grad(), "a post-accumulate-grad hook needs a leaf that requires grad, got a ",
              is_leaf() ? "leaf that does not require grad" : "non-leaf (the result of an op)", " of shape ",
              shape());
    LSG_CHECK(hook != nullptr, "the hook is empty");
    // Ids are unique within the process, so a stale id never removes another owner's hook.
    static std::atomic<uint64_t> next_id{1};
    const uint64_t id = next_id++;
    impl().post_accumulate_grad_hooks.emplace_back(id, std::move(hook));
    return id;
}

void Tensor::remove_post_accumulate_grad_hook(uint64_t id) {
    auto& hooks = impl().post_accumulate_grad_hooks;
    std::erase_if(hooks, [id](const auto& entry) { return entry.first == id; });
}

Tensor Tensor::detach() const {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = storage();
    impl->shape = shape();
    impl->strides = strides();
    impl->offset = offset();
    impl->dtype = dtype();
    return Tensor(std::move(impl));
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
    LSG_CHECK(requires_grad(), "the tensor (shape ", shape(), ") does not require grad and has no grad_fn");
    Tensor seed = grad;
    if (!seed.defined()) {
        LSG_CHECK(numel() == 1, "grad can be implicitly created only for one-element outputs, got shape ", shape(),
                  " (pass a gradient)");
        seed = ones(shape(), {.dtype = dtype(), .device = device()});
    }
    LSG_CHECK(seed.shape() == shape(), "gradient of shape ", seed.shape(), " for an output of shape ", shape());
    // A seed is converted to the output's dtype and device, never reinterpreted; an integer seed
    // for a floating output is refused (as PyTorch does), since its values would be truncated.
    LSG_CHECK(is_floating(seed.dtype()), "gradient must be floating, got ", seed.dtype(), " ", seed.shape(),
              " for an output of dtype ", dtype());
    seed = seed.detach().to(dtype()).to(device());
    autograd::run_backward(*this, seed, retain_graph);
}

// ---- in-place -----------------------------------------------------------------------------------

Tensor& Tensor::fill_(double value) {
    bump_version();
    if (is_contiguous()) {
        tensor_kernels(device()).fill(kernel_context(device()), *this, value);
    } else {
        Tensor src = full({}, value, {.dtype = dtype(), .device = device()});
        copy_(src);
    }
    return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
    Tensor s = src.detach();
    if (s.device() != device()) s = s.to(device());
    LSG_CHECK(s.dim() <= dim(), "cannot copy a tensor of shape ", s.shape(), " into one of shape ", shape());
    for (int64_t d = 0; d < s.dim(); ++d) {
        const int64_t have = s.shape()[static_cast<size_t>(d)], want = shape()[static_cast<size_t>(d + dim() - s.dim())];
        LSG_CHECK(have == want || have == 1, "cannot copy a tensor of shape ", s.shape(), " into one of shape ",
                  shape(), " (not broadcastable)");
    }
    s = s.expand(shape());
    bump_version();
    tensor_kernels(device()).copy(kernel_context(device()), s, *this);
    return *this;
}

// ---- factories ----------------------------------------------------------------------------------

Tensor empty(const Shape& shape, TensorOptions options) { return Tensor(make_impl(shape, options)); }

Tensor full(const Shape& shape, double value, TensorOptions options) {
    const bool rg = options.requires_grad;
    options.requires_grad = false;
    Tensor t = empty(shape, options);
    tensor_kernels(options.device).fill(kernel_context(options.device), t, value);
    if (rg) t.requires_grad_();
    return t;
}

Tensor zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }
Tensor ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }
Tensor scalar_tensor(double value, TensorOptions options) { return full({}, value, options); }

Tensor arange(int64_t end, TensorOptions options) { return arange(0.0, static_cast<double>(end), 1.0, options); }

Tensor arange(double start, double end, double step, TensorOptions options) {
    LSG_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end), "invalid range start=", start, " end=", end,
              " step=", step);
    // The count is checked in double before the conversion (out of range, it would be undefined).
    const double count = std::max(0.0, std::ceil((end - start) / step));
    LSG_CHECK(count < 9.2e18, "range start=", start, " end=", end, " step=", step, " has ", count,
              " elements, more than fit in int64");
    const auto n = static_cast<int64_t>(count);
    std::vector<double> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = start + static_cast<double>(i) * step;
    return from_vector(v, Shape{n}, {.dtype = DType::f64}).to(options.dtype).to(options.device);
}

Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions options) {
    LSG_CHECK(numel(shape) == static_cast<int64_t>(values.size()), "shape ", shape, " needs ", numel(shape),
              " values, got ", values.size());
    Tensor host = empty(shape, {.dtype = dtype_of<T>()});
    std::copy(values.begin(), values.end(), host.data<T>());
    Tensor t = host.to(options.dtype).to(options.device);
    if (options.requires_grad) t.requires_grad_();
    return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, TensorOptions);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, TensorOptions);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, TensorOptions);

Tensor tensor(std::initializer_list<float> values) { return from_vector(std::vector<float>(values)); }
Tensor tensor(std::initializer_list<float> values, const Shape& shape, TensorOptions options) {
    return from_vector(std::vector<float>(values), shape, options);
}
Tensor tensor(std::initializer_list<double> values) { return from_vector(std::vector<double>(values)); }
Tensor tensor(std::initializer_list<double> values, const Shape& shape, TensorOptions options) {
    return from_vector(std::vector<double>(values), shape, options);
}

}  // namespace lsg

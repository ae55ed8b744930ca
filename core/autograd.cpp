#include "lsgrad/core/autograd.h"

#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "lsgrad/core/backend.h"

namespace lsg::autograd {
namespace {

// a + b for gradient accumulation, through the device's add kernel (backward runs without grad
// mode, so nothing is recorded). Both gradients have the shape of the tensor they belong to; the
// sum takes the wider dtype.
Tensor accumulate(const Tensor& a, const Tensor& b) {
    LSG_CHECK(a.shape() == b.shape() && a.device() == b.device(), "gradients of one tensor disagree: ", a.shape(),
              " on ", a.device(), " and ", b.shape(), " on ", b.device());
    const DType dtype = a.dtype() == DType::f64 || b.dtype() == DType::f64 ? DType::f64 : a.dtype();
    const Tensor x = a.dtype() == dtype ? a : a.to(dtype);
    const Tensor y = b.dtype() == dtype ? b : b.to(dtype);
    Tensor out = empty(a.shape(), {.dtype = dtype, .device = a.device()});
    tensor_kernels(a.device()).binary(kernel_context(a.device()), BinaryOp::add, x, y, out);
    return out;
}

thread_local bool grad_enabled = true;

// The node of one recorded op; its backward closure holds the saved tensors until release().
class FunctionNode final : public Node {
public:
    FunctionNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}

    std::vector<Tensor> apply(const Tensor& grad_output) override {
        LSG_CHECK_OP(name_, fn_ != nullptr,
                     "trying to backward through the graph a second time (its saved tensors were freed by the "
                     "first backward); pass retain_graph=true to the first backward");
        check_versions();
        return fn_(grad_output);
    }
    void release() override {
        fn_ = nullptr;
        saved_.clear();
    }
    std::string name() const override { return name_; }

    // Remembers input i's storage and version at record time.
    void save_version(size_t input, const Tensor& t) {
        saved_.push_back({input, t.storage(), t.version(), t.shape()});
    }

private:
    struct SavedVersion {
        size_t input;
        std::weak_ptr<Storage> storage;  // weak: a dead storage was not saved, nothing to check
        uint64_t version;
        Shape shape;
    };

    void check_versions() const {
        for (const SavedVersion& s : saved_) {
            const auto storage = s.storage.lock();
            if (!storage || storage->version() == s.version) continue;
            ::lsg::detail::fail(name_, "input ", s.input, " (shape ", s.shape, "), saved for the backward of ", name_,
                                ", was modified by an in-place operation: its version is ", storage->version(),
                                ", it was ", s.version, " when saved");
        }
    }

    const char* name_;
    BackwardFn fn_;
    std::vector<SavedVersion> saved_;
};

// Where a leaf's gradients land. Holds the leaf weakly so that the graph does not keep
// parameters alive, and accumulates into a buffer of its own (never an alias of a gradient that
// another tensor may also receive).
class AccumulateGrad final : public Node {
public:
    explicit AccumulateGrad(const std::shared_ptr<TensorImpl>& leaf) : leaf_(leaf) {}

    std::vector<Tensor> apply(const Tensor& grad) override {
        auto leaf = leaf_.lock();
        if (!leaf) return {};
        Tensor g = grad;
        if (g.dtype() != leaf->dtype) g = g.to(leaf->dtype);
        if (!leaf->grad) {
            // A gradient that nothing else references (a fused loss's buffer once its node has
            // been released, a fresh matmul result) is adopted as it is; anything shared is
            // copied, so that a later in-place accumulation cannot write through an alias.
            const bool sole_owner = g.impl_ptr().use_count() <= 2 && g.storage().use_count() == 1 &&
                                    g.is_contiguous() && g.offset() == 0 && g.grad_fn() == nullptr;
            leaf->grad = sole_owner ? g.impl_ptr() : g.contiguous().clone().impl_ptr();
        } else {
            Tensor acc(leaf->grad);
            acc.copy_(accumulate(acc, g));
        }
        // A copy: a hook may register or remove hooks of this leaf.
        const auto hooks = leaf->post_accumulate_grad_hooks;
        const Tensor handle(leaf);
        for (const auto& entry : hooks) entry.second(handle);
        return {};
    }
    std::string name() const override { return "AccumulateGrad"; }

private:
    std::weak_ptr<TensorImpl> leaf_;
};

// The node that receives the gradient of `t`: its grad_fn, or for a leaf its accumulator.
std::shared_ptr<Node> gradient_edge(const Tensor& t) {
    if (!t.defined() || !t.requires_grad()) return nullptr;
    TensorImpl& impl = t.impl();
    if (impl.grad_fn) return impl.grad_fn;
    if (!impl.grad_accum) impl.grad_accum = std::make_shared<AccumulateGrad>(t.impl_ptr());
    return impl.grad_accum;
}

}  // namespace

bool GradMode::is_enabled() { return grad_enabled; }
void GradMode::set_enabled(bool enabled) { grad_enabled = enabled; }

namespace {
template <class Range>
bool any_requires_grad(const Range& inputs) {
    if (!grad_enabled) return false;
    for (const Tensor& t : inputs)
        if (t.defined() && t.requires_grad()) return true;
    return false;
}

template <class Range>
void record_range(const char* name, Tensor& out, const Range& inputs, BackwardFn fn, bool saves_inputs = true) {
    if (!any_requires_grad(inputs)) return;
    auto node = std::make_shared<FunctionNode>(name, std::move(fn));
    node->next.reserve(inputs.size());
    size_t i = 0;
    for (const Tensor& t : inputs) {
        node->next.push_back(gradient_edge(t));
        if (saves_inputs && t.defined()) node->save_version(i, t);
        ++i;
    }
    TensorImpl& impl = out.impl();
    impl.grad_fn = std::move(node);
    impl.requires_grad = true;
}
}  // namespace

bool needs_grad(std::initializer_list<Tensor> inputs) { return any_requires_grad(inputs); }
bool needs_grad(const std::vector<Tensor>& inputs) { return any_requires_grad(inputs); }

void record(const char* name, Tensor& out, std::initializer_list<Tensor> inputs, BackwardFn fn) {
    record_range(name, out, inputs, std::move(fn));
}
void record_view(const char* name, Tensor& out, const Tensor& base, BackwardFn fn) {
    record_range(name, out, std::initializer_list<Tensor>{base}, std::move(fn), false);
}
void record_list(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn) {
    record_range(name, out, inputs, std::move(fn));
}

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
    NoGradGuard no_grad;
    std::shared_ptr<Node> root_node = gradient_edge(root);
    if (!root_node) return;

    // Topological order by an iterative depth-first search: a node comes after every node that
    // consumes its output, so walking `order` backwards visits each node once all of its output's
    // gradient has arrived.
    std::vector<Node*> order;
    std::unordered_set<Node*> seen{root_node.get()};
    std::vector<std::pair<Node*, size_t>> stack{{root_node.get(), 0}};
    while (!stack.empty()) {
        auto& [node, child] = stack.back();
        if (child < node->next.size()) {
            Node* next = node->next[child++].get();
            if (next && seen.insert(next).second) stack.emplace_back(next, 0);
        } else {
            order.push_back(node);
            stack.pop_back();
        }
    }

    std::unordered_map<Node*, Tensor> pending;
    pending[root_node.get()] = grad;
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
        Node* node = *it;
        auto found = pending.find(node);
        if (found == pending.end()) continue;
        Tensor g = std::move(found->second);
        pending.erase(found);
        std::vector<Tensor> input_grads = node->apply(g);
        for (size_t i = 0; i < node->next.size() && i < input_grads.size(); ++i) {
            Node* next = node->next[i].get();
            if (!next || !input_grads[i].defined()) continue;
            auto [slot, inserted] = pending.try_emplace(next, input_grads[i]);
            if (!inserted) slot->second = accumulate(slot->second, input_grads[i]);
        }
        if (!retain_graph) node->release();
    }
}

}  // namespace lsg::autograd

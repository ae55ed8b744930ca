// Define-by-run reverse-mode autodiff. Each differentiable op records a Node: its backward
// function (holding only what backward needs) and edges to the nodes that produced its inputs.
// Tensor::backward() sorts the graph topologically, walks it in reverse, accumulates into leaves'
// grad(), and frees the saved tensors unless asked to retain the graph.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg::autograd {

// One recorded op: gradients of its inputs from the gradient of its output.
class Node {
public:
    virtual ~Node() = default;
    // Input gradients, one per entry of next (undefined where an input needs none), each of the
    // input's shape. Called with grad mode off.
    virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
    // Drops the saved tensors after a backward without retain_graph.
    virtual void release() {}
    // The op's name, for messages ("mul", "cross_entropy").
    virtual std::string name() const = 0;

    // The producer of each input: its grad_fn, the accumulator of a leaf, or null.
    std::vector<std::shared_ptr<Node>> next;
};

// The backward of one op. It must not capture the op's output tensor handle itself (that would
// make a cycle output -> node -> output and leak the graph): capture out.detach() instead.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

// Whether an op on these inputs must record: grad mode is on and an input requires grad.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Makes `out` the result of op `name` on `inputs` with backward `fn`: sets out's grad_fn and
// requires_grad. Does nothing when needs_grad(inputs) is false.
void record(const char* name, Tensor& out, std::initializer_list<Tensor> inputs, BackwardFn fn);
// The same for an op whose backward reads no input data (views, to, clone): an in-place write to
// `base` between forward and backward is then no error (other ops' inputs are, see run_backward).
void record_view(const char* name, Tensor& out, const Tensor& base, BackwardFn fn);
// The same for ops with a variable number of inputs (cat, stack).
void record_list(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn);

// Back-propagates `grad` (same shape as `root`) through root's graph; see Tensor::backward. Before
// a node's backward runs, the version of each input it recorded is compared with its storage's
// version now (when that storage still lives): an in-place write in between is an lsg::Error
// naming the op, as in PyTorch. Ops are treated as saving all their inputs (view ops none), which
// is stricter than PyTorch for ops such as add that save nothing.
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

// Thread-local switch for recording; ops record only while it is on (the default).
class GradMode {
public:
    static bool is_enabled();
    static void set_enabled(bool enabled);
};

}  // namespace lsg::autograd

namespace lsg {

// Turns recording off in its scope (evaluation, optimizer updates), as torch.no_grad().
class NoGradGuard {
public:
    NoGradGuard() : previous_(autograd::GradMode::is_enabled()) { autograd::GradMode::set_enabled(false); }
    ~NoGradGuard() { autograd::GradMode::set_enabled(previous_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool previous_;
};

}  // namespace lsg

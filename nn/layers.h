// The standard layers, with torch.nn's names, arguments and default initialisation.
// Parameters are public members (as in libtorch) and are also registered with the Module base,
// so named_parameters() and state_dict() see them under PyTorch's names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lsgrad/core/rng.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/nn/module.h"

namespace lsg::nn {

// A (height, width) pair that a single number converts to: Conv2d(1, 32, 3) or Conv2d(1, 32, {3, 5}).
struct Size2 {
    int64_t h, w;
    Size2(int64_t both) : h(both), w(both) {}  // NOLINT: implicit on purpose, as PyTorch's int-or-tuple
    Size2(int64_t height, int64_t width) : h(height), w(width) {}
};

// y = x·Wᵀ + b for x [..., in_features] → [..., out_features]; weight [out, in], bias [out].
// Init (PyTorch's): W ~ kaiming_uniform_(a = √5), i.e. U(−1/√in, 1/√in); b ~ U(−1/√in, 1/√in).
class Linear : public Module {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator());
    Tensor forward(const Tensor& x) override;
    std::string name() const override;
    // Re-draws weight and bias with the default initialisation.
    void reset_parameters(Generator& gen = default_generator());

    int64_t in_features, out_features;
    Tensor weight, bias;  // bias undefined when built without one
};

class MaxPool2d;

// 2-D convolution of x [N, in, H, W] → [N, out, (H + 2p − k)/s + 1, (W + 2p − k)/s + 1] (see
// lsg::conv2d); weight [out, in, kh, kw], bias [out]. Init as Linear with fan_in = in·kh·kw.
class Conv2d : public Module {
public:
    Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel_size, Size2 stride = 1, Size2 padding = 0,
           bool bias = true, Generator& gen = default_generator());
    Tensor forward(const Tensor& x) override;
    // relu(forward(x)) as one op (lsg::conv2d_relu); Sequential calls it for a Conv2d followed by a ReLU.
    Tensor forward_relu(const Tensor& x) const;
    // pool(relu(forward(x))) as one op (lsg::conv2d_relu_max_pool2d), for a Conv2d, ReLU, MaxPool2d run.
    Tensor forward_relu_max_pool(const Tensor& x, const MaxPool2d& pool) const;
    std::string name() const override;
    void reset_parameters(Generator& gen = default_generator());

    int64_t in_channels, out_channels;
    Size2 kernel_size, stride, padding;
    Tensor weight, bias;

private:
    // x must be [N, in_channels, H, W]; `op` names the caller in the error.
    void check_input(const char* op, const Tensor& x) const;
};

// Window maximum over x [N, C, H, W] (see lsg::max_pool2d); stride 0 means the kernel size.
class MaxPool2d : public Module {
public:
    explicit MaxPool2d(Size2 kernel_size, Size2 stride = 0, Size2 padding = 0);
    Tensor forward(const Tensor& x) override;
    std::string name() const override;

    Size2 kernel_size, stride, padding;
};

// max(x, 0), any shape.
class ReLU : public Module {
public:
    Tensor forward(const Tensor& x) override;
    std::string name() const override;
};

// In training, zeroes each element with probability p and scales the rest by 1/(1 − p)
// (lsg::dropout, default generator); the identity in eval mode.
class Dropout : public Module {
public:
    explicit Dropout(double p = 0.5);
    Tensor forward(const Tensor& x) override;
    std::string name() const override;

    double p;
};

// Merges dims start_dim..end_dim: [N, C, H, W] → [N, C·H·W] with the defaults.
class Flatten : public Module {
public:
    explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1);
    Tensor forward(const Tensor& x) override;
    std::string name() const override;

    int64_t start_dim, end_dim;
};

// Applies its children in order; they are named "0", "1", ... as in torch.nn.Sequential. A Conv2d
// directly followed by a ReLU (exactly those types) runs as one op, lsg::conv2d_relu, or with a
// MaxPool2d after them as lsg::conv2d_relu_max_pool2d: the same values and gradients (see there)
// without storing the activations in between.
//   auto net = std::make_shared<Sequential>(std::make_shared<Linear>(784, 256),
//                                           std::make_shared<ReLU>(), std::make_shared<Linear>(256, 10));
class Sequential : public Module {
public:
    Sequential() = default;
    template <class... M>
    explicit Sequential(std::shared_ptr<M>... modules) {
        (push_back(std::move(modules)), ...);
    }
    // Appends a module as child "<size()>".
    void push_back(std::shared_ptr<Module> module);
    Tensor forward(const Tensor& x) override;
    std::string name() const override;

    size_t size() const { return layers_.size(); }
    const std::shared_ptr<Module>& operator[](size_t i) const;

    // The penultimate-layer hook. get_classifier() is the last child that is a Linear (timm's name
    // for a model's head); forward_pre_logits(x) applies the children before it, in order, and
    // returns the activations that Linear receives, i.e. PyTorch's model[:i](x) for i = the index of
    // the last Linear, or timm's forward_head(x, pre_logits=True). For a classifier whose last child
    // is its Linear, get_classifier()->forward(forward_pre_logits(x)) equals forward(x). Only direct
    // children count (a Linear inside a nested Sequential is not looked into); training mode is
    // whatever the children are in. Both throw lsg::Error when no child is a Linear.
    std::shared_ptr<Linear> get_classifier() const;
    Tensor forward_pre_logits(const Tensor& x);

private:
    // Applies children [0, end) in order, Conv2d–ReLU(–MaxPool2d) runs as one fused op.
    Tensor apply(const Tensor& x, size_t end);
    // Index of the last Linear child; throws naming `op` when there is none.
    size_t last_linear_index(const char* op) const;

    std::vector<std::shared_ptr<Module>> layers_;
};

// Batch normalisation over x [N, C, H, W] per channel c:
//   y = (x − μ_c) / √(σ²_c + eps) · weight_c + bias_c.
// Training: μ, σ² are the batch mean and biased variance over (N, H, W), and the running
// statistics move as running = (1 − momentum)·running + momentum·batch, with the unbiased
// variance (× n/(n − 1), n = N·H·W) for running_var; num_batches_tracked counts the updates.
// Eval: μ, σ² are running_mean, running_var. weight starts at 1, bias at 0, running_mean at 0,
// running_var at 1 (PyTorch's defaults and state_dict names).
class BatchNorm2d : public Module {
public:
    explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1);
    Tensor forward(const Tensor& x) override;
    std::string name() const override;

    int64_t num_features;
    double eps, momentum;
    Tensor weight, bias;                                      // parameters [C]
    Tensor running_mean, running_var, num_batches_tracked;  // buffers [C], [C], i64 scalar
};

}  // namespace lsg::nn

#include "lsgrad/nn/layers.h"

#include <cmath>
#include <sstream>
#include <typeinfo>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/error.h"
#include "lsgrad/nn/init.h"
#include "lsgrad/ops/conv.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/matmul.h"
#include "lsgrad/ops/reduce.h"

namespace lsg::nn {

namespace {

std::string pair_str(Size2 s) {
    std::ostringstream os;
    os << '(' << s.h << ", " << s.w << ')';
    return os.str();
}

// PyTorch's default for Linear and Conv2d: weight ~ kaiming_uniform_(a = √5) = U(±1/√fan_in),
// bias ~ U(±1/√fan_in).
void default_init(const Tensor& weight, const Tensor& bias, Generator& gen) {
    init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::fan_in, init::Nonlinearity::leaky_relu, gen);
    if (bias.defined()) {
        const int64_t fan_in = init::calculate_fan_in_and_fan_out(weight).first;
        const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
        init::uniform_(bias, -bound, bound, gen);
    }
}

}  // namespace

// ---- Linear ------------------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator& gen) : in_features(in), out_features(out) {
    LSG_CHECK(in > 0 && out > 0, "in_features and out_features must be positive, got ", in, " and ", out);
    weight = register_parameter("weight", empty({out, in}));
    if (with_bias) bias = register_parameter("bias", empty({out}));
    reset_parameters(gen);
}

void Linear::reset_parameters(Generator& gen) { default_init(weight, bias, gen); }

Tensor Linear::forward(const Tensor& x) {
    LSG_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "Linear(", in_features, " → ", out_features,
              ") expects input [..., ", in_features, "], got ", x.shape());
    return linear(x, weight, bias);
}

std::string Linear::name() const {
    std::ostringstream os;
    os << "Linear(in_features=" << in_features << ", out_features=" << out_features
       << ", bias=" << (bias.defined() ? "True" : "False") << ')';
    return os.str();
}

// ---- Conv2d ------------------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in, int64_t out, Size2 kernel, Size2 stride_, Size2 padding_, bool with_bias, Generator& gen)
    : in_channels(in), out_channels(out), kernel_size(kernel), stride(stride_), padding(padding_) {
    LSG_CHECK(in > 0 && out > 0, "in_channels and out_channels must be positive, got ", in, " and ", out);
    LSG_CHECK(kernel.h > 0 && kernel.w > 0, "kernel_size must be positive, got ", pair_str(kernel));
    LSG_CHECK(stride.h > 0 && stride.w > 0, "stride must be positive, got ", pair_str(stride));
    LSG_CHECK(padding.h >= 0 && padding.w >= 0, "padding must be non-negative, got ", pair_str(padding));
    weight = register_parameter("weight", empty({out, in, kernel.h, kernel.w}));
    if (with_bias) bias = register_parameter("bias", empty({out}));
    reset_parameters(gen);
}

void Conv2d::reset_parameters(Generator& gen) { default_init(weight, bias, gen); }

void Conv2d::check_input(const char* op, const Tensor& x) const {
    LSG_CHECK_OP(op, x.dim() == 4 && x.size(1) == in_channels, name(), " expects input [N, ", in_channels,
                 ", H, W], got ", x.shape());
}

Tensor Conv2d::forward(const Tensor& x) {
    check_input(__func__, x);
    return conv2d(x, weight, bias, {stride.h, stride.w}, {padding.h, padding.w});
}

Tensor Conv2d::forward_relu(const Tensor& x) const {
    check_input(__func__, x);
    return conv2d_relu(x, weight, bias, {stride.h, stride.w}, {padding.h, padding.w});
}

Tensor Conv2d::forward_relu_max_pool(const Tensor& x, const MaxPool2d& pool) const {
    check_input(__func__, x);
    return conv2d_relu_max_pool2d(x, weight, bias, {stride.h, stride.w}, {padding.h, padding.w},
                                  {pool.kernel_size.h, pool.kernel_size.w}, {pool.stride.h, pool.stride.w},
                                  {pool.padding.h, pool.padding.w});
}

std::string Conv2d::name() const {
    std::ostringstream os;
    os << "Conv2d(" << in_channels << ", " << out_channels << ", kernel_size=" << pair_str(kernel_size)
       << ", stride=" << pair_str(stride);
    if (padding.h != 0 || padding.w != 0) os << ", padding=" << pair_str(padding);
    if (!bias.defined()) os << ", bias=False";
    os << ')';
    return os.str();
}

// ---- MaxPool2d ---------------------------------------------------------------------------------

MaxPool2d::MaxPool2d(Size2 kernel, Size2 stride_, Size2 padding_)
    : kernel_size(kernel),
      stride(stride_.h == 0 && stride_.w == 0 ? kernel : stride_),
      padding(padding_) {
    LSG_CHECK(kernel.h > 0 && kernel.w > 0, "kernel_size must be positive, got ", pair_str(kernel));
    LSG_CHECK(stride.h > 0 && stride.w > 0, "stride must be positive (or 0 for the kernel size), got ",
              pair_str(stride_));
    LSG_CHECK(padding.h >= 0 && padding.w >= 0 && 2 * padding.h <= kernel.h && 2 * padding.w <= kernel.w,
              "padding must be between 0 and half the kernel size, got ", pair_str(padding), " for kernel ",
              pair_str(kernel));
}

Tensor MaxPool2d::forward(const Tensor& x) {
    return max_pool2d(x, {kernel_size.h, kernel_size.w}, {stride.h, stride.w}, {padding.h, padding.w});
}

std::string MaxPool2d::name() const {
    std::ostringstream os;
    os << "MaxPool2d(kernel_size=" << pair_str(kernel_size) << ", stride=" << pair_str(stride)
       << ", padding=" << pair_str(padding) << ')';
    return os.str();
}

// ---- ReLU, Dropout, Flatten --------------------------------------------------------------------

Tensor ReLU::forward(const Tensor& x) { return relu(x); }
std::string ReLU::name() const { return "ReLU()"; }

Dropout::Dropout(double p_) : p(p_) {
    LSG_CHECK(p >= 0.0 && p <= 1.0, "dropout probability must be in [0, 1], got ", p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training()); }

std::string Dropout::name() const {
    std::ostringstream os;
    os << "Dropout(p=" << p << ')';
    return os.str();
}

Flatten::Flatten(int64_t start, int64_t end) : start_dim(start), end_dim(end) {}

Tensor Flatten::forward(const Tensor& x) { return x.flatten(start_dim, end_dim); }

std::string Flatten::name() const {
    std::ostringstream os;
    os << "Flatten(start_dim=" << start_dim << ", end_dim=" << end_dim << ')';
    return os.str();
}

// ---- Sequential --------------------------------------------------------------------------------

void Sequential::push_back(std::shared_ptr<Module> module) {
    register_module(std::to_string(layers_.size()), module);
    layers_.push_back(std::move(module));
}

Tensor Sequential::forward(const Tensor& x) { return apply(x, layers_.size()); }

namespace {

// Whether `m` is exactly an M (not a subclass, whose own forward must run).
template <class M>
bool is_exactly(const std::shared_ptr<Module>& m) {
    const Module& ref = *m;
    return typeid(ref) == typeid(M);
}

}  // namespace

Tensor Sequential::apply(const Tensor& x, size_t end) {
    Tensor h = x;
    for (size_t i = 0; i < end; ++i) {
        // Conv2d–ReLU runs as lsg::conv2d_relu, and Conv2d–ReLU–MaxPool2d as
        // lsg::conv2d_relu_max_pool2d: the same values and gradients without passes over the
        // activations in between.
        if (i + 1 < end && is_exactly<Conv2d>(layers_[i]) && is_exactly<ReLU>(layers_[i + 1])) {
            const auto& conv = static_cast<const Conv2d&>(*layers_[i]);
            if (i + 2 < end && is_exactly<MaxPool2d>(layers_[i + 2])) {
                h = conv.forward_relu_max_pool(h, static_cast<const MaxPool2d&>(*layers_[i + 2]));
                i += 2;
            } else {
                h = conv.forward_relu(h);
                ++i;
            }
            continue;
        }
        h = layers_[i]->forward(h);
    }
    return h;
}

std::string Sequential::name() const { return "Sequential"; }

const std::shared_ptr<Module>& Sequential::operator[](size_t i) const {
    LSG_CHECK(i < layers_.size(), "index ", i, " is out of range for a Sequential of ", layers_.size(), " modules");
    return layers_[i];
}

size_t Sequential::last_linear_index(const char* op) const {
    for (size_t i = layers_.size(); i-- > 0;)
        if (std::dynamic_pointer_cast<Linear>(layers_[i])) return i;
    LSG_CHECK_OP(op, false, "none of the ", layers_.size(), " children of this Sequential is a Linear");
    return 0;
}

std::shared_ptr<Linear> Sequential::get_classifier() const {
    return std::dynamic_pointer_cast<Linear>(layers_[last_linear_index("Sequential::get_classifier")]);
}

Tensor Sequential::forward_pre_logits(const Tensor& x) {
    return apply(x, last_linear_index("Sequential::forward_pre_logits"));
}

// ---- BatchNorm2d -------------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(int64_t features, double eps_, double momentum_)
    : num_features(features), eps(eps_), momentum(momentum_) {
    LSG_CHECK(features > 0, "num_features must be positive, got ", features);
    LSG_CHECK(eps > 0.0, "eps must be positive, got ", eps);
    LSG_CHECK(momentum >= 0.0 && momentum <= 1.0, "momentum must be in [0, 1], got ", momentum);
    weight = register_parameter("weight", ones({features}));
    bias = register_parameter("bias", zeros({features}));
    running_mean = register_buffer("running_mean", zeros({features}));
    running_var = register_buffer("running_var", ones({features}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {.dtype = DType::i64}));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
    LSG_CHECK(x.dim() == 4 && x.size(1) == num_features, name(), " expects input [N, ", num_features,
              ", H, W], got ", x.shape());
    const int64_t C = num_features;
    const Shape per_channel{1, C, 1, 1};
    const Tensor w = weight.view(per_channel), b = bias.view(per_channel);
    if (!is_training()) {
        // y = x·scale + shift with the per-channel scale = w/√(running_var + eps) and
        // shift = b − running_mean·scale: two passes over x.
        const Tensor scale = w / sqrt(running_var.view(per_channel) + eps);
        const Tensor shift = b - running_mean.view(per_channel) * scale;
        return x * scale + shift;
    }
    const int64_t n = x.size(0) * x.size(2) * x.size(3);
    LSG_CHECK(n > 1, "expected more than 1 value per channel when training, got input ", x.shape());
    const Tensor mu = mean(x, {0, 2, 3}, true);
    const Tensor centered = x - mu;
    const Tensor var = mean(centered * centered, {0, 2, 3}, true);  // biased, as the normalisation uses
    const Tensor y = centered * (w / sqrt(var + eps)) + b;
    {
        NoGradGuard no_grad;
        const double unbias = static_cast<double>(n) / static_cast<double>(n - 1);
        const Tensor batch_mean = mu.detach().view({C}).to(running_mean.dtype());
        const Tensor batch_var = var.detach().view({C}).to(running_var.dtype());
        running_mean.copy_(affine(running_mean, 1.0 - momentum, 0.0) + batch_mean * momentum);
        running_var.copy_(affine(running_var, 1.0 - momentum, 0.0) + batch_var * (momentum * unbias));
        num_batches_tracked.fill_(static_cast<double>(num_batches_tracked.item<int64_t>() + 1));
    }
    return y;
}

std::string BatchNorm2d::name() const {
    std::ostringstream os;
    os << "BatchNorm2d(" << num_features << ", eps=" << eps << ", momentum=" << momentum << ')';
    return os.str();
}

}  // namespace lsg::nn

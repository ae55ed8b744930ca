#include "lsgrad/nn/init.h"

#include <cmath>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/error.h"
#include "lsgrad/ops/elementwise.h"

namespace lsg::nn::init {

namespace {

void check_floating(const char* op, const Tensor& t) {
    LSG_CHECK_OP(op, t.defined(), "the tensor is undefined");
    LSG_CHECK_OP(op, is_floating(t.dtype()), "needs a floating tensor, got ", t.dtype());
}

// Overwrites t's elements with src's (same shape) outside autograd, keeping t's handle.
Tensor assign(const Tensor& t, const Tensor& src) {
    Tensor handle = t;
    handle.copy_(src);
    return handle;
}

Tensor draw(const Tensor& t, bool normal, double scale, double shift, Generator& gen) {
    NoGradGuard no_grad;
    const TensorOptions options{.dtype = t.dtype(), .device = t.device()};
    const Tensor r = normal ? randn(t.shape(), options, gen) : rand(t.shape(), options, gen);
    return assign(t, affine(r, scale, shift));
}

double fan(const char* op, const Tensor& t, FanMode mode) {
    const auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
    const int64_t f = mode == FanMode::fan_in ? fan_in : fan_out;
    LSG_CHECK_OP(op, f > 0, "the fan is 0 for a tensor of shape ", t.shape());
    return static_cast<double>(f);
}

}  // namespace

double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param) {
    switch (nonlinearity) {
        case Nonlinearity::linear:
        case Nonlinearity::conv1d:
        case Nonlinearity::conv2d:
        case Nonlinearity::conv3d:
        case Nonlinearity::sigmoid: return 1.0;
        case Nonlinearity::tanh: return 5.0 / 3.0;
        case Nonlinearity::relu: return std::sqrt(2.0);
        case Nonlinearity::leaky_relu: {
            const double slope = param.value_or(0.01);
            return std::sqrt(2.0 / (1.0 + slope * slope));
        }
        case Nonlinearity::selu: return 3.0 / 4.0;
    }
    LSG_FAIL("unknown nonlinearity");
}

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
    LSG_CHECK(t.defined() && t.dim() >= 2, "fan in and fan out need a tensor of at least 2 dims, got shape ",
              t.defined() ? t.shape() : Shape{});
    int64_t receptive = 1;
    for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
    return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor uniform_(const Tensor& t, double a, double b, Generator& gen) {
    check_floating("uniform_", t);
    LSG_CHECK(a <= b, "a (", a, ") must not exceed b (", b, ")");
    return draw(t, false, b - a, a, gen);
}

Tensor normal_(const Tensor& t, double mean, double std, Generator& gen) {
    check_floating("normal_", t);
    LSG_CHECK(std >= 0.0, "std must be non-negative, got ", std);
    return draw(t, true, std, mean, gen);
}

Tensor constant_(const Tensor& t, double value) {
    LSG_CHECK(t.defined(), "the tensor is undefined");
    Tensor handle = t;
    handle.fill_(value);
    return handle;
}

Tensor zeros_(const Tensor& t) { return constant_(t, 0.0); }
Tensor ones_(const Tensor& t) { return constant_(t, 1.0); }

Tensor kaiming_uniform_(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity, Generator& gen) {
    check_floating("kaiming_uniform_", t);
    const double std = calculate_gain(nonlinearity, a) / std::sqrt(fan("kaiming_uniform_", t, mode));
    const double bound = std::sqrt(3.0) * std;
    return draw(t, false, 2.0 * bound, -bound, gen);
}

Tensor kaiming_normal_(const Tensor& t, double a, FanMode mode, Nonlinearity nonlinearity, Generator& gen) {
    check_floating("kaiming_normal_", t);
    const double std = calculate_gain(nonlinearity, a) / std::sqrt(fan("kaiming_normal_", t, mode));
    return draw(t, true, std, 0.0, gen);
}

Tensor xavier_uniform_(const Tensor& t, double gain, Generator& gen) {
    check_floating("xavier_uniform_", t);
    const double sum = fan("xavier_uniform_", t, FanMode::fan_in) + fan("xavier_uniform_", t, FanMode::fan_out);
    const double bound = gain * std::sqrt(6.0 / sum);
    return draw(t, false, 2.0 * bound, -bound, gen);
}

Tensor xavier_normal_(const Tensor& t, double gain, Generator& gen) {
    check_floating("xavier_normal_", t);
    const double sum = fan("xavier_normal_", t, FanMode::fan_in) + fan("xavier_normal_", t, FanMode::fan_out);
    return draw(t, true, gain * std::sqrt(2.0 / sum), 0.0, gen);
}

}  // namespace lsg::nn::init

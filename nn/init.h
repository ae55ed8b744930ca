// Parameter initialisers with torch.nn.init's names and formulas. Each fills its tensor in place
// (outside autograd, so it works on leaves that require grad) from `gen` and returns the same
// handle. The draws come from lsgrad's Philox generator, so values match PyTorch's in
// distribution, not bit for bit.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include "lsgrad/core/rng.h"
#include "lsgrad/core/tensor.h"

namespace lsg::nn::init {

enum class Nonlinearity { linear, conv1d, conv2d, conv3d, sigmoid, tanh, relu, leaky_relu, selu };
enum class FanMode { fan_in, fan_out };

// The recommended gain for a nonlinearity: 1 for linear/conv/sigmoid, 5/3 for tanh, √2 for relu,
// √(2/(1 + slope²)) for leaky_relu (slope = param, default 0.01), 3/4 for selu.
double calculate_gain(Nonlinearity nonlinearity, std::optional<double> param = std::nullopt);

// (fan_in, fan_out) of a weight of at least 2 dims: fan_in = size(1)·receptive, fan_out =
// size(0)·receptive, receptive = Π size(2..) (1 for a matrix).
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t);

// U(a, b).
Tensor uniform_(const Tensor& t, double a = 0.0, double b = 1.0, Generator& gen = default_generator());
// N(mean, std²).
Tensor normal_(const Tensor& t, double mean = 0.0, double std = 1.0, Generator& gen = default_generator());
Tensor constant_(const Tensor& t, double value);
Tensor zeros_(const Tensor& t);
Tensor ones_(const Tensor& t);

// U(−bound, bound), bound = gain·√(3/fan), gain = calculate_gain(nonlinearity, a), fan per mode.
// PyTorch's layer default is a = √5 (bound = 1/√fan_in).
Tensor kaiming_uniform_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                        Nonlinearity nonlinearity = Nonlinearity::leaky_relu, Generator& gen = default_generator());
// N(0, std²), std = gain/√fan.
Tensor kaiming_normal_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                       Nonlinearity nonlinearity = Nonlinearity::leaky_relu, Generator& gen = default_generator());
// U(−bound, bound), bound = gain·√(6/(fan_in + fan_out)).
Tensor xavier_uniform_(const Tensor& t, double gain = 1.0, Generator& gen = default_generator());
// N(0, std²), std = gain·√(2/(fan_in + fan_out)).
Tensor xavier_normal_(const Tensor& t, double gain = 1.0, Generator& gen = default_generator());

}  // namespace lsg::nn::init

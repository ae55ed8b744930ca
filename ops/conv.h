// 2-D convolution and max pooling over NCHW tensors.
#pragma once

#include <array>

#include "lsgrad/core/tensor.h"

namespace lsg {

// out[n, o, i, j] = bias[o] + Σ_{c, u, v} weight[o, c, u, v] · x[n, c, i·s_h + u − p_h, j·s_w + v − p_w]
// (zero padding) for x [N, C, H, W], weight [O, C, kh, kw], bias [O] or undefined; out is
// [N, O, (H + 2p_h − kh)/s_h + 1, (W + 2p_w − kw)/s_w + 1]. im2col + GEMM. Differentiable.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), std::array<int64_t, 2> stride = {1, 1},
              std::array<int64_t, 2> padding = {0, 0});
// relu(conv2d(x, weight, bias, stride, padding)) as one op: the same values and gradients as the two
// ops (relu(NaN) = 0 and relu'(0) = 0 as lsg::relu's), with the ReLU applied while each image's
// output is in cache and its mask applied inside the convolution's backward, so that neither makes
// a pass of its own over the activations. nn::Sequential runs a Conv2d followed by a ReLU through it.
Tensor conv2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                   std::array<int64_t, 2> stride = {1, 1}, std::array<int64_t, 2> padding = {0, 0});
// max_pool2d(relu(conv2d(x, weight, bias, stride, padding)), pool_kernel, pool_stride, pool_padding)
// as one op: the pool runs on each image's ReLU output while it is in cache, so that the full-size
// activations are never stored (the backward keeps the pooled output and its argmax). The same
// values and gradients as the three ops, except that each window's gradient is masked by the ReLU
// before it lands on its argmax (two overlapping windows' gradients that sum to ±inf give 0 there,
// not NaN). nn::Sequential runs a Conv2d, ReLU, MaxPool2d run through it.
Tensor conv2d_relu_max_pool2d(const Tensor& x, const Tensor& weight, const Tensor& bias, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding, std::array<int64_t, 2> pool_kernel,
                              std::array<int64_t, 2> pool_stride = {0, 0}, std::array<int64_t, 2> pool_padding = {0, 0});
// out[n, c, i, j] = max over the kernel window at (i·s − p, j·s − p) of x [N, C, H, W], padding
// never chosen; stride defaults to the kernel size. The gradient goes to the first maximum.
Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride = {0, 0},
                  std::array<int64_t, 2> padding = {0, 0});

}  // namespace lsg

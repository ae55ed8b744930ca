// Elementwise ops, all differentiable. Binary ops broadcast as NumPy/PyTorch do: shapes are aligned
// from the right and a dim of size 1 stretches; both operands must share dtype and device.
#pragma once

#include "lsgrad/core/tensor.h"

namespace lsg {

// The broadcast shape of a and b, or an error naming `op` and both shapes.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);

// a + b, a − b, a·b, a / b (broadcast).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// max(a, b) and min(a, b) (broadcast); at ties the gradient is split evenly, as in PyTorch.
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
// Comparisons (broadcast), 1 where true and 0 elsewhere, in the operands' dtype; not differentiable.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// cond ≠ 0 ? a : b (broadcast over all three); differentiable in a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// −x, e^x, ln x, √x, max(x, 0), 1/(1 + e^−x), tanh x, |x| (floating x).
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor abs(const Tensor& x);
// x^exponent for a scalar exponent.
Tensor pow(const Tensor& x, double exponent);
// min(max(x, lo), hi); the gradient passes where lo ≤ x ≤ hi.
Tensor clamp(const Tensor& x, double lo, double hi);
// scale·x + shift in one pass.
Tensor affine(const Tensor& x, double scale, double shift);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(const Tensor& a, double s);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(const Tensor& a, double s);
Tensor operator/(double s, const Tensor& a);

// Elementwise a ≈ b: |a − b| ≤ atol + rtol·|b|, NaNs equal when equal_nan; shapes must match.
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8, bool equal_nan = false);

// Randomly zeroes elements with probability p and scales the rest by 1/(1 − p) when training;
// the identity otherwise. Differentiable; seeded by the default generator.
Tensor dropout(const Tensor& x, double p, bool training);

}  // namespace lsg

// What the CPU (ops/elementwise.cpp) and CUDA (cuda/elementwise.cu) elementwise kernels share: the
// per-element formulas of the unary ops, their derivatives and the binary ops, as LSG_HD functions
// that compile as host and device code, and the merging of strided dims both launchers iterate over.
// The formulas exist once, so the CPU tests check the arithmetic the GPU runs.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>

#include "lsgrad/core/backend.h"
#include "lsgrad/core/hostdevice.h"

namespace lsg::detail {

// op(x) for UnaryOp op; a and b are the op's parameters (affine: a·x + b, pow: x^a, clamp: [a, b]).
template <class T>
LSG_HD inline T apply_unary(UnaryOp op, T x, T a, T b) {
    switch (op) {
        case UnaryOp::neg: return -x;
        case UnaryOp::exp: return std::exp(x);
        case UnaryOp::log: return std::log(x);
        case UnaryOp::sqrt: return std::sqrt(x);
        case UnaryOp::relu: return x > T(0) ? x : T(0);
        case UnaryOp::sigmoid: return T(1) / (T(1) + std::exp(-x));
        case UnaryOp::tanh: return std::tanh(x);
        case UnaryOp::abs: return std::abs(x);
        case UnaryOp::affine: return a * x + b;
        case UnaryOp::pow: return std::pow(x, a);
        case UnaryOp::clamp: return std::min(std::max(x, a), b);
    }
    return x;
}

// d op(x) / dx, from x and y = op(x).
template <class T>
LSG_HD inline T unary_derivative(UnaryOp op, T x, T y, T a, T b) {
    switch (op) {
        case UnaryOp::neg: return T(-1);
        case UnaryOp::exp: return y;
        case UnaryOp::log: return T(1) / x;
        case UnaryOp::sqrt: return T(0.5) / y;
        case UnaryOp::relu: return x > T(0) ? T(1) : T(0);
        case UnaryOp::sigmoid: return y * (T(1) - y);
        case UnaryOp::tanh: return T(1) - y * y;
        case UnaryOp::abs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
        case UnaryOp::affine: return a;
        case UnaryOp::pow: return a == T(0) ? T(0) : a * std::pow(x, a - T(1));
        case UnaryOp::clamp: return (x >= a && x <= b) ? T(1) : T(0);
    }
    return T(0);
}

// a op b; comparisons give 1 or 0.
template <class T>
LSG_HD inline T apply_binary(BinaryOp op, T a, T b) {
    switch (op) {
        case BinaryOp::add: return a + b;
        case BinaryOp::sub: return a - b;
        case BinaryOp::mul: return a * b;
        case BinaryOp::div: return a / b;
        case BinaryOp::maximum: return (a != a || a > b) ? a : b;  // NaN propagates, as torch.maximum
        case BinaryOp::minimum: return (a != a || a < b) ? a : b;
        case BinaryOp::eq: return a == b;
        case BinaryOp::ne: return a != b;
        case BinaryOp::lt: return a < b;
        case BinaryOp::le: return a <= b;
        case BinaryOp::gt: return a > b;
        case BinaryOp::ge: return a >= b;
    }
    return a;
}

// The iteration space of N operands viewed over one shape, each with its own element strides:
// size-1 dims dropped, and adjacent dims merged wherever every operand steps across them as across
// one dim, so that contiguous tensors become a single run. Never empty: a 0-d or all-ones shape
// gives one dim of size 1. The CPU kernels walk it in runs of its last dim; the CUDA kernels turn a
// flat index into per-operand offsets with it.
template <size_t N>
struct MergedDims {
    Shape sizes;
    std::array<Shape, N> strides;
};

template <size_t N>
MergedDims<N> merge_dims(const Shape& shape, const std::array<Shape, N>& strides) {
    MergedDims<N> m;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 1) continue;
        const bool merge = !m.sizes.empty() && [&] {
            for (size_t k = 0; k < N; ++k)
                if (m.strides[k].back() != strides[k][d] * shape[d]) return false;
            return true;
        }();
        if (merge) {
            m.sizes.back() *= shape[d];
            for (size_t k = 0; k < N; ++k) m.strides[k].back() = strides[k][d];
        } else {
            m.sizes.push_back(shape[d]);
            for (size_t k = 0; k < N; ++k) m.strides[k].push_back(strides[k][d]);
        }
    }
    if (m.sizes.empty()) {
        m.sizes.push_back(1);
        for (size_t k = 0; k < N; ++k) m.strides[k].push_back(0);
    }
    return m;
}

}  // namespace lsg::detail

// Checked int64 arithmetic for every shape, stride, size and offset that comes from user input or
// from a file. Each helper throws lsg::Error naming the public op and the shape instead of
// wrapping around: a shape whose element count or byte size does not fit in int64 never reaches
// an allocation, and so a tensor's numel, strides and byte size are always representable.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "lsgrad/core/error.h"

namespace lsg {

using Shape = std::vector<int64_t>;

namespace checked {

// a + b, or lsg::Error("lsg::<op>: <what> a + b overflows int64").
inline int64_t add(const char* op, int64_t a, int64_t b, const char* what = "size") {
    int64_t r = 0;
    LSG_CHECK_OP(op, !__builtin_add_overflow(a, b, &r), what, " ", a, " + ", b, " overflows int64");
    return r;
}

// a · b, or lsg::Error("lsg::<op>: <what> a · b overflows int64").
inline int64_t mul(const char* op, int64_t a, int64_t b, const char* what = "size") {
    int64_t r = 0;
    LSG_CHECK_OP(op, !__builtin_mul_overflow(a, b, &r), what, " ", a, " · ", b, " overflows int64");
    return r;
}

// Π shape[i] for a shape of non-negative sizes; lsg::Error naming `op` and the shape when a size
// is negative or when the product (or, with elem_size > 1, the byte size numel · elem_size) does
// not fit in int64. A shape holding a 0 has 0 elements whatever its other sizes, as in PyTorch,
// but those sizes must still be non-negative and their product representable once the 0 is
// replaced by 1 (so that its strides are), as PyTorch also requires.
inline int64_t numel(const char* op, const Shape& shape, int64_t elem_size = 1) {
    int64_t n = 1, nonzero = elem_size;
    bool has_zero = false;
    for (int64_t s : shape) {
        LSG_CHECK_OP(op, s >= 0, "negative size ", s, " in shape ", shape);
        if (s == 0) {
            has_zero = true;
            continue;
        }
        LSG_CHECK_OP(op, !__builtin_mul_overflow(nonzero, s, &nonzero), "shape ", shape,
                     " has more elements than fit in int64 (", elem_size, "-byte elements)");
        n = nonzero / elem_size;
    }
    return has_zero ? 0 : n;
}

// Row-major strides of `shape` (in elements; a size-0 dim counts as 1), checked as numel is.
inline Shape contiguous_strides(const char* op, const Shape& shape) {
    numel(op, shape);
    Shape strides(shape.size());
    int64_t s = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        strides[i] = s;
        s *= shape[i] > 1 ? shape[i] : 1;
    }
    return strides;
}

// The element offset Σ index[i] · stride[i] + base, checked; for views built from user indices.
inline int64_t offset(const char* op, int64_t base, int64_t index, int64_t stride) {
    return add(op, base, mul(op, index, stride, "offset"), "offset");
}

}  // namespace checked
}  // namespace lsg

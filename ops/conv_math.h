// What the CPU (ops/conv.cpp) and CUDA (cuda/conv.cu) pooling kernels share: the window maximum
// of one output position, as an LSG_HD function, so both devices pick the same element.
#pragma once

#include <cmath>
#include <cstdint>

#include "lsgrad/core/backend.h"
#include "lsgrad/core/hostdevice.h"

namespace lsg::detail {

// The maximum of plane img [H, W] over the window of output (i, j) and its flat index h·W + w;
// padding is never chosen (−inf and −1 when the window lies entirely in the padding). The first
// maximum wins; a NaN wins over any number, as in PyTorch.
template <class T>
struct WindowMax {
    T value;
    int64_t index;
};

// Whether a window element `val` replaces the running maximum `best`: larger wins, ties keep the
// first, and a NaN wins over any number (as in PyTorch).
template <class T>
LSG_HD inline bool pool_takes(T val, T best) {
    return val > best || (val != val && best == best);
}

template <class T>
LSG_HD inline WindowMax<T> pool_window_max(const T* img, const Window2d& g, int64_t i, int64_t j) {
    T best = -static_cast<T>(INFINITY);
    int64_t arg = -1;
    for (int64_t u = 0; u < g.kernel_h; ++u) {
        const int64_t h = i * g.stride_h + u - g.pad_h;
        if (h < 0 || h >= g.height) continue;
        for (int64_t v = 0; v < g.kernel_w; ++v) {
            const int64_t w = j * g.stride_w + v - g.pad_w;
            if (w < 0 || w >= g.width) continue;
            const T val = img[h * g.width + w];
            if (arg < 0 || pool_takes(val, best)) {
                best = val;
                arg = h * g.width + w;
            }
        }
    }
    return {best, arg};
}

// Where column entry (image n, row r = (c·kh + u)·kw + v) starts in the im2col buffer
// [N, C·kh·kw, oh·ow]: one matrix per image, so W·cols[n] is image n's NCHW output.
LSG_HD inline int64_t col_offset(const Window2d& g, int64_t n, int64_t r) {
    return (n * g.channels * g.kernel_h * g.kernel_w + r) * g.out_h * g.out_w;
}

}  // namespace lsg::detail

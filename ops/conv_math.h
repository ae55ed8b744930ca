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
            if (arg < 0 || val > best || (val != val && best == best)) {
                best = val;
                arg = h * g.width + w;
            }
        }
    }
    return {best, arg};
}

}  // namespace lsg::detail

// Per-element optimizer updates shared by the CPU kernels and the CUDA kernels, so the CPU tests
// check the arithmetic that the GPU runs. T is float or double; the step's scalars arrive in
// double and are rounded to T once, as PyTorch's kernels do. Complements such as 1 − β2 are formed
// in double before rounding: in float, 1 − (float)0.999 loses four digits.
#pragma once

#include <cmath>

#include "lsgrad/core/philox.h"  // LSG_HD

namespace lsg::optim_math {

// Qualified: lsg::sqrt (the tensor op) would hide the C functions here.
LSG_HD inline float root(float x) { return ::sqrtf(x); }
LSG_HD inline double root(double x) { return ::sqrt(x); }

// SGD on one element (see optim::SGD): updates p and, when momentum ≠ 0, buf.
template <class T>
LSG_HD inline void sgd_update(T& p, T g, T* buf, T lr, T momentum, T one_minus_dampening, T weight_decay,
                              bool nesterov, bool first_step) {
    if (weight_decay != T(0)) g += weight_decay * p;
    if (buf != nullptr) {
        const T b = first_step ? g : momentum * *buf + one_minus_dampening * g;
        *buf = b;
        g = nesterov ? g + momentum * b : b;
    }
    p -= lr * g;
}

// Adam/AdamW on one element (see optim::Adam): updates p, m and v.
template <class T>
LSG_HD inline void adam_update(T& p, T g, T& m, T& v, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T l2,
                               T decay_factor, T step_size, T bias_correction2_sqrt) {
    if (l2 != T(0)) g += l2 * p;
    p *= decay_factor;
    // m moves as PyTorch's lerp(m, g, 1 − β1) does for weights below 1/2.
    m += one_minus_beta1 * (g - m);
    v = beta2 * v + one_minus_beta2 * g * g;
    const T denom = root(v) / bias_correction2_sqrt + eps;
    p -= step_size * m / denom;
}

}  // namespace lsg::optim_math

// Per-element optimizer updates shared by the CPU kernels and the CUDA kernels, so the CPU tests
// check the arithmetic that the GPU runs. T is float or double; the step's scalars arrive in
// double and are rounded to T once, as PyTorch's kernels do. Adam's complements 1 − β are formed
// in double before rounding: in float, 1 − (float)0.999 keeps only four correct digits.
#pragma once

#include <cmath>

#include "lsgrad/core/hostdevice.h"
#include "lsgrad/optim/optim_kernels.h"

namespace lsg::optim_math {

// Qualified: lsg::sqrt (the tensor op) would hide the C functions here.
LSG_HD inline float root(float x) { return ::sqrtf(x); }
LSG_HD inline double root(double x) { return ::sqrt(x); }

// SGD on one element (see optim::SGD): updates p and, when momentum ≠ 0, buf.
template <class T>
LSG_HD inline void sgd_update(T& p, T g, T* buf, T lr, T momentum, T dampening, T weight_decay, bool nesterov,
                              bool first_step) {
    if (weight_decay != T(0)) g += weight_decay * p;
    if (buf != nullptr) {
        const T b = first_step ? g : momentum * *buf + (T(1) - dampening) * g;
        *buf = b;
        g = nesterov ? g + momentum * b : b;
    }
    p -= lr * g;
}

// The scalars of one Adam step in T (see AdamStepArgs), passed by value to the kernels.
template <class T>
struct AdamCoefficients {
    T one_minus_beta1, beta2, one_minus_beta2, eps, l2, decay_factor, step_size, bias_correction2_sqrt;
};

// The one place the step's double scalars are rounded to T, for both backends.
template <class T>
inline AdamCoefficients<T> adam_coefficients(const AdamStepArgs& a) {
    return {static_cast<T>(1.0 - a.beta1),     static_cast<T>(a.beta2),     static_cast<T>(1.0 - a.beta2),
            static_cast<T>(a.eps),             static_cast<T>(a.l2),        static_cast<T>(a.decay_factor),
            static_cast<T>(a.step_size),       static_cast<T>(a.bias_correction2_sqrt)};
}

// Adam/AdamW on one element (see optim::Adam): updates p, m and v.
template <class T>
LSG_HD inline void adam_update(T& p, T g, T& m, T& v, const AdamCoefficients<T>& c) {
    if (c.l2 != T(0)) g += c.l2 * p;
    p *= c.decay_factor;
    // m moves as PyTorch's lerp(m, g, 1 − β1) does for weights below 1/2.
    m += c.one_minus_beta1 * (g - m);
    v = c.beta2 * v + c.one_minus_beta2 * g * g;
    const T denom = root(v) / c.bias_correction2_sqrt + c.eps;
    p -= c.step_size * m / denom;
}

}  // namespace lsg::optim_math

// f64 central-difference gradient check for any differentiable op.
//
// For f(inputs) with output y, the check compares the analytic gradient of L = Σ v ⊙ y (v a fixed
// pseudo-random upstream gradient, so backward sees an upstream gradient that is not 1, per element
// for unreduced outputs) with (L(x + h) − L(x − h)) / 2h for every element of every input that
// requires grad. With unit_upstream the output must be one element and backward runs with the
// implicit seed 1 instead (the path a training loop takes).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <vector>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/tensor.h"

namespace lsg::testing {

struct GradcheckOptions {
    double step = 1e-6;
    double atol = 1e-6;
    double rtol = 1e-4;
    bool unit_upstream = false;
};

inline ::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                            const std::vector<Tensor>& inputs, GradcheckOptions opt = {}) {
    for (const Tensor& x : inputs)
        if (x.requires_grad() && (x.dtype() != DType::f64 || !x.is_contiguous() || !x.is_leaf()))
            return ::testing::AssertionFailure() << "gradcheck needs contiguous f64 leaves";
    for (const Tensor& x : inputs)
        if (x.requires_grad()) const_cast<Tensor&>(x).zero_grad();

    const Tensor y = f(inputs);
    std::vector<double> v(static_cast<size_t>(y.numel()), 1.0);
    if (!opt.unit_upstream) {
        uint64_t s = 0x9E3779B97F4A7C15ull;
        for (double& e : v) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            e = 0.25 + 1.5 * static_cast<double>(s >> 11) / static_cast<double>(1ull << 53);
        }
    }
    auto weighted = [&](const Tensor& out) {
        const std::vector<double> o = out.to_vector<double>();
        double L = 0.0;
        for (size_t i = 0; i < o.size(); ++i) L += v[i] * o[i];
        return L;
    };
    if (opt.unit_upstream) {
        if (y.numel() != 1) return ::testing::AssertionFailure() << "unit_upstream needs a one-element output";
        y.backward();
    } else {
        y.backward(from_vector<double>(v, y.shape(), {.dtype = y.dtype()}));
    }

    std::ostringstream errors;
    int bad = 0;
    for (size_t n = 0; n < inputs.size(); ++n) {
        const Tensor& x = inputs[n];
        if (!x.requires_grad()) continue;
        const Tensor g = x.grad();
        if (!g.defined()) return ::testing::AssertionFailure() << "input " << n << " received no gradient";
        const std::vector<double> analytic = g.to_vector<double>();
        double* data = x.data<double>();
        for (int64_t i = 0; i < x.numel(); ++i) {
            const double keep = data[i];
            double plus, minus;
            {
                NoGradGuard ng;
                data[i] = keep + opt.step;
                plus = weighted(f(inputs));
                data[i] = keep - opt.step;
                minus = weighted(f(inputs));
                data[i] = keep;
            }
            const double numeric = (plus - minus) / (2.0 * opt.step);
            const double a = analytic[static_cast<size_t>(i)];
            if (!(std::abs(a - numeric) <= opt.atol + opt.rtol * std::abs(numeric))) {
                if (++bad <= 8) errors << "\n  input " << n << " element " << i << ": analytic " << a << ", numeric " << numeric;
            }
        }
    }
    if (bad) return ::testing::AssertionFailure() << bad << " gradient elements differ:" << errors.str();
    return ::testing::AssertionSuccess();
}

}  // namespace lsg::testing

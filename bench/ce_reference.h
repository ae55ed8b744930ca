// The yardstick of the fused cross-entropy benchmarks: the obvious fused loop, one row at a time.
#pragma once

#include <cstdint>

namespace lsg::bench {

// Mean cross-entropy with Uniform label smoothing ε of logits x [N, K] (finite) against class
// indices y [N] (in [0, K)), and its gradient dL/dx [N, K] written in the same pass:
//   q_k = ε/K + (1 − ε)·[k = y],  loss = (1/N)·Σ_i Σ_k q_ik·(lse_i − x_ik),
//   grad_ik = (softmax(x_i)_k − q_ik) / N.
// Per row: the max, Σ e^{x − max} and Σ x, then the gradient; `#pragma omp simd` loops, rows split
// over `threads` OpenMP threads when there are at least 32768 logits. Compiled with -ffast-math (its
// exponentials vectorise through libmvec): what a careful programmer writes in an afternoon.
float reference_cross_entropy(const float* x, const int64_t* y, int64_t N, int64_t K, float eps, float* grad,
                              int threads);

}  // namespace lsg::bench

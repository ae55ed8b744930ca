// See ce_reference.h. Built with -ffast-math (bench/CMakeLists.txt).
#include "ce_reference.h"

#include <algorithm>
#include <cmath>

namespace lsg::bench {

float reference_cross_entropy(const float* x, const int64_t* y, int64_t N, int64_t K, float eps, float* grad,
                              int threads) {
    const float off = eps / static_cast<float>(K), on = 1.0f - eps + off;
    const float inv_n = 1.0f / static_cast<float>(N);
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) num_threads(threads) if (threads > 1 && N * K >= 32768)
    for (int64_t i = 0; i < N; ++i) {
        const float* xi = x + i * K;
        float* gi = grad + i * K;
        float m = xi[0];
#pragma omp simd reduction(max : m)
        for (int64_t k = 0; k < K; ++k) m = std::max(m, xi[k]);
        float s = 0.0f, sx = 0.0f;
#pragma omp simd reduction(+ : s, sx)
        for (int64_t k = 0; k < K; ++k) {
            s += std::exp(xi[k] - m);
            sx += xi[k];
        }
        const float lse = m + std::log(s);
        total += (on - off) * (lse - xi[y[i]]) + off * (static_cast<float>(K) * lse - sx);
        const float scale = inv_n / s;
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) gi[k] = std::exp(xi[k] - m) * scale - off * inv_n;
        gi[y[i]] -= (on - off) * inv_n;
    }
    return static_cast<float>(total * inv_n);
}

}  // namespace lsg::bench

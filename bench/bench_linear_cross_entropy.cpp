// Fused linear cross-entropy against lsgrad's unfused composition, forward + backward, one case per
// process so that its peak resident memory (getrusage ru_maxrss) is its own:
//
//   bench_linear_cross_entropy fused|unfused N H V [timed calls = 3] [warm-up calls = 1]
//
// fused:   linear_cross_entropy(h, W, y, {label_smoothing = 0.1}).backward()
// unfused: cross_entropy(linear(h, W), y, {label_smoothing = 0.1}).backward()
// h [N, H] and W [V, H] are float32 leaves requiring grad (W with standard deviation 0.02, as an
// initialised head), y uniform classes. Each call starts from h.grad and W.grad zeroed, as a training step does.
// Prints one JSON line: the times of the timed calls (ms), their min and median, the loss, the
// resident memory at start and its peak (MiB) and the thread count. bench/linear_ce_vs_pytorch.py runs it beside PyTorch.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "lsgrad/lsgrad.h"

namespace {

double peak_rss_mib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s fused|unfused N H V [timed calls] [warm-up calls]\n", argv[0]);
        return 2;
    }
    const std::string mode = argv[1];
    if (mode != "fused" && mode != "unfused") {
        std::fprintf(stderr, "mode must be fused or unfused, got %s\n", mode.c_str());
        return 2;
    }
    const int64_t N = std::atoll(argv[2]), H = std::atoll(argv[3]), V = std::atoll(argv[4]);
    const int reps = argc > 5 ? std::atoi(argv[5]) : 3;
    const int warmup = argc > 6 ? std::atoi(argv[6]) : 1;
    const double base_rss = peak_rss_mib();
    try {
        using namespace lsg;
        // Uniform values with the variance of N(0, 1) (h) and N(0, 0.02²) (W), from a plain
        // generator: the library's Philox normal draws take a minute for a 256000 × 2304 weight.
        std::mt19937_64 pick(2);
        auto uniform = [&](const Shape& shape, float sd) {
            Tensor t = empty(shape);
            float* p = t.data<float>();
            const float a = sd * 1.7320508f;  // U(−a, a) has standard deviation a/√3
            for (int64_t i = 0; i < t.numel(); ++i)
                p[i] = a * (static_cast<float>(pick() >> 40) * (2.0f / 16777216.0f) - 1.0f);
            return t;
        };
        Tensor h = uniform({N, H}, 1.0f);
        Tensor W = uniform({V, H}, 0.02f);
        std::vector<int64_t> classes(static_cast<size_t>(N));
        for (int64_t& c : classes) c = static_cast<int64_t>(pick() % static_cast<uint64_t>(V));
        const Tensor y = from_vector<int64_t>(classes, {N});
        h.requires_grad_();
        W.requires_grad_();
        LinearCrossEntropyOptions o;
        o.label_smoothing = 0.1;
        std::vector<double> ms;
        double loss = 0.0;
        for (int r = 0; r < warmup + reps; ++r) {
            h.zero_grad();
            W.zero_grad();
            const auto t0 = std::chrono::steady_clock::now();
            const Tensor l = mode == "fused" ? linear_cross_entropy(h, W, y, o) : cross_entropy(linear(h, W), y, o);
            l.backward();
            const auto t1 = std::chrono::steady_clock::now();
            loss = l.item<double>();
            if (r >= warmup) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
        std::vector<double> sorted = ms;
        std::sort(sorted.begin(), sorted.end());
        const double median = sorted.empty() ? 0.0
                              : sorted.size() % 2 ? sorted[sorted.size() / 2]
                                                  : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
        std::printf("{\"impl\": \"lsgrad %s\", \"N\": %lld, \"H\": %lld, \"V\": %lld, \"threads\": %d, \"ms\": [", mode.c_str(),
                    static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(V),
                    omp_get_max_threads());
        for (size_t i = 0; i < ms.size(); ++i) std::printf("%s%.3f", i ? ", " : "", ms[i]);
        std::printf("], \"min_ms\": %.3f, \"median_ms\": %.3f, \"loss\": %.6f, \"base_rss_mib\": %.1f, "
                    "\"peak_rss_mib\": %.1f}\n",
                    sorted.empty() ? 0.0 : sorted.front(), median, loss, base_rss, peak_rss_mib());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_linear_cross_entropy: %s\n", e.what());
        return 1;
    }
    return 0;
}

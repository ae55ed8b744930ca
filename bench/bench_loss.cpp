// Fused cross-entropy on the CPU: forward, and forward + backward (loss.backward() into x.grad),
// with ε = 0 and 0.1, at MNIST-sized and vocabulary-sized (N, K), on 1 and 2 threads. Also the bare
// kernel (forward writing the gradient, no autograd) to show what the engine adds, and the plain
// fused reference loop (ce_reference.h, kind "reference") as the yardstick: before any lsgrad case
// is timed, its loss (and gradient, where it makes one) is checked against the reference's on the
// same data, and a mismatch fails the case instead of timing it.
// Names parse as BM_CrossEntropy/<kind>/eps:<ε>/N:<N>/K:<K>/threads:<t>; GB/s counts 12 bytes per
// logit (read x, write the gradient, and the read the gradient costs a cache hierarchy that must
// fetch a line before writing it), the convention of the PyTorch side-by-side table.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/loss.h"
#include "lsgrad/ops/loss_kernels.h"

#include "ce_reference.h"

namespace {

// Logits and targets per shape, made once (the largest is 3.3 GB) with a cheap deterministic
// generator: roughly uniform in [-4, 4), like trained logits' spread.
struct Data {
    lsg::Tensor x;
    lsg::Tensor y;
};
Data& data(int64_t N, int64_t K) {
    static std::map<std::pair<int64_t, int64_t>, Data> cache;
    auto it = cache.find({N, K});
    if (it != cache.end()) return it->second;
    cache.clear();  // keep one shape's buffers at a time
    Data d;
    d.x = lsg::empty({N, K});
    float* x = d.x.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
        uint64_t s = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(i + 1);
        for (int64_t k = 0; k < K; ++k) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[i * K + k] = static_cast<float>(static_cast<double>(s >> 40) / static_cast<double>(1ull << 24) * 8.0 - 4.0);
        }
    }
    std::vector<int64_t> y(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) y[i] = (i * 7919) % K;
    d.y = lsg::from_vector<int64_t>(y, {N});
    return cache.emplace(std::make_pair(N, K), std::move(d)).first->second;
}

enum class Kind { Fwd, FwdBwd, Kernel, Reference };

// The reference's loss and gradient for this shape and ε (computed on one thread).
struct Reference {
    float loss;
    std::vector<float> grad;
};
Reference reference(const Data& d, int64_t N, int64_t K, double eps) {
    Reference r{0.0f, std::vector<float>(static_cast<size_t>(N * K))};
    r.loss = lsg::bench::reference_cross_entropy(d.x.data<float>(), d.y.data<int64_t>(), N, K, static_cast<float>(eps),
                                                 r.grad.data(), 1);
    return r;
}

// Empty when `loss` (and `grad`, unless null) match the reference within f32 rounding of the
// row sums, else what differs.
std::string mismatch(const Reference& r, float loss, const float* grad) {
    if (!(std::abs(loss - r.loss) <= 1e-4f * (1.0f + std::abs(r.loss))))
        return "loss " + std::to_string(loss) + " vs reference " + std::to_string(r.loss);
    if (!grad) return "";
    float scale = 0.0f, worst = 0.0f;
    for (size_t i = 0; i < r.grad.size(); ++i) {
        scale = std::max(scale, std::abs(r.grad[i]));
        worst = std::max(worst, std::abs(grad[i] - r.grad[i]));
    }
    if (!(worst <= 1e-4f * scale)) return "gradient differs by " + std::to_string(worst) + " (largest " + std::to_string(scale) + ")";
    return "";
}

void run(benchmark::State& state, Kind kind, double eps, int64_t N, int64_t K, int threads) {
    omp_set_num_threads(threads);
    Data& d = data(N, K);
    lsg::CrossEntropyOptions o;
    o.label_smoothing = eps;
    lsg::Tensor x = d.x.detach();
    if (kind == Kind::FwdBwd) x.requires_grad_();
    // The bare kernel's buffers, made once.
    lsg::Tensor rows = lsg::empty({N}), grad = kind == Kind::Kernel ? lsg::empty({N, K}) : lsg::Tensor();
    lsg::Tensor total = lsg::empty({});
    lsg::CrossEntropyIndexArgs a;
    a.rows = N;
    a.classes = K;
    a.logits = x.raw_data();
    a.target = d.y.data<int64_t>();
    a.label_smoothing = eps;
    a.row_loss = rows.raw_data();
    a.grad = kind == Kind::Kernel ? grad.raw_data() : nullptr;
    a.reduction = lsg::Reduction::Mean;
    a.reduced = total.raw_data();
    auto once = [&] {
        if (kind == Kind::Kernel) {
            lsg::cpu_loss_kernels().cross_entropy_index(lsg::kernel_context(lsg::Device::cpu()), a);
        } else {
            lsg::Tensor loss = lsg::cross_entropy(x, d.y, o);
            if (kind == Kind::FwdBwd) {
                loss.backward();
                x.zero_grad();
            }
            benchmark::DoNotOptimize(loss);
        }
    };
    if (kind == Kind::Reference) {
        std::vector<float> g(static_cast<size_t>(N * K));
        auto ref = [&] {
            benchmark::DoNotOptimize(lsg::bench::reference_cross_entropy(d.x.data<float>(), d.y.data<int64_t>(), N, K,
                                                                         static_cast<float>(eps), g.data(), threads));
        };
        ref();
        for (auto _ : state) ref();
    } else {
        // Checked against the reference first; this untimed call also leaves every buffer in the
        // caching allocator, so no timed iteration page-faults.
        const Reference r = reference(d, N, K, eps);
        std::string bad;
        if (kind == Kind::Kernel) {
            once();
            bad = mismatch(r, total.item<float>(), grad.data<float>());
        } else {
            lsg::Tensor loss = lsg::cross_entropy(x, d.y, o);
            if (kind == Kind::FwdBwd) loss.backward();
            bad = mismatch(r, loss.item<float>(), kind == Kind::FwdBwd ? x.grad().data<float>() : nullptr);
            if (kind == Kind::FwdBwd) x.zero_grad();
        }
        if (!bad.empty()) {
            state.SkipWithError(("differs from the reference loop: " + bad).c_str());
            return;
        }
        for (auto _ : state) once();
    }
    state.counters["GB/s"] = benchmark::Counter(12.0 * static_cast<double>(N) * static_cast<double>(K),
                                                benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

const int registered = [] {
    const std::pair<int64_t, int64_t> shapes[] = {{256, 10}, {8192, 10}, {4096, 32000}, {16384, 50257}};
    const std::pair<Kind, const char*> kinds[] = {
        {Kind::Fwd, "fwd"}, {Kind::FwdBwd, "fwdbwd"}, {Kind::Kernel, "kernel"}, {Kind::Reference, "reference"}};
    for (auto [N, K] : shapes)
        for (auto [kind, kname] : kinds)
            for (double eps : {0.0, 0.1})
                for (int threads : {1, 2}) {
                    const std::string name = std::string("BM_CrossEntropy/") + kname + "/eps:" + (eps == 0.0 ? "0" : "0.1") +
                                             "/N:" + std::to_string(N) + "/K:" + std::to_string(K) +
                                             "/threads:" + std::to_string(threads);
                    auto* b = benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
                        run(s, kind, eps, N, K, threads);
                    });
                    b->UseRealTime()->Unit(benchmark::kMillisecond);
                    // Large shapes: a few iterations give a stable figure; small ones run 0.2 s.
                    if (N * K > (int64_t(1) << 24)) b->Iterations(N * K > (int64_t(1) << 28) ? 1 : 8);
                    else b->MinTime(0.2);
                }
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();

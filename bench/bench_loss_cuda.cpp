// Fused cross-entropy on CUDA: forward, and forward + backward (loss.backward() into x.grad), with
// ε = 0 and 0.1, at the shapes of bench_loss.cpp plus (65536, 128256) (a 128k vocabulary: 33.6 GB of
// logits and as much gradient), timed with CUDA events around each iteration (manual time). GB/s
// counts 12 bytes per logit, as the CPU benchmark does. Names parse as
// BM_CrossEntropyCuda/<kind>/eps:<ε>/N:<N>/K:<K>. BM_DeviceCopyCuda is the yardstick: a 1 GiB
// device-to-device copy, bytes read plus written, the bandwidth a memory-bound kernel can reach on
// this GPU. Without a CUDA device (or in a build without CUDA) every case reports
// "skipped: <reason>" and the program still exits 0.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lsgrad/core/allocator.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/loss.h"

#ifdef LSGRAD_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

#ifdef LSGRAD_WITH_CUDA
// Throws instead of timing garbage when an event call fails.
void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Logits uniform in [-4, 4) made on the device (the largest shape is 3.3 GB), targets i·7919 mod K.
struct Data {
    lsg::Tensor x, y;
};
Data& data(int64_t N, int64_t K) {
    static Data d;
    static std::pair<int64_t, int64_t> shape{0, 0};
    if (shape != std::make_pair(N, K)) {
        d = Data{};  // one shape's buffers at a time
        lsg::Generator gen(1);
        d.x = lsg::affine(lsg::rand({N, K}, {.device = lsg::Device::cuda()}, gen), 8.0, -4.0).detach();
        std::vector<int64_t> y(static_cast<size_t>(N));
        for (int64_t i = 0; i < N; ++i) y[static_cast<size_t>(i)] = (i * 7919) % K;
        d.y = lsg::from_vector<int64_t>(y, {N}).to(lsg::Device::cuda());
        shape = {N, K};
    }
    return d;
}
#endif

// Reports the case skipped, with the reason, when no CUDA device answers; true if it did.
bool skip_without_device(benchmark::State& state) {
    if (lsg::cuda_is_available()) return false;
    // Static: older Google Benchmark keeps the pointer it is given.
    static const std::string message = std::string("skipped: ") + lsg::cuda_unavailable_reason();
    state.SkipWithError(message.c_str());
    for (auto _ : state) {
    }
    return true;
}

#ifdef LSGRAD_WITH_CUDA
// Times fn() with CUDA events, once per iteration. The events go on the legacy default stream, which
// waits for and is waited on by lsgrad's streams (blocking streams, cudaStreamCreate), so they
// bracket exactly the work fn() issues.
template <class Fn>
void time_with_events(benchmark::State& state, Fn&& fn) {
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    for (auto _ : state) {
        check(cudaEventRecord(start), "cudaEventRecord");
        fn();
        check(cudaEventRecord(stop), "cudaEventRecord");
        check(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        state.SetIterationTime(static_cast<double>(ms) / 1e3);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
}
#endif

void copy_bandwidth(benchmark::State& state) {
    if (skip_without_device(state)) return;
#ifdef LSGRAD_WITH_CUDA
    const int64_t n = int64_t(1) << 28;  // 1 GiB of fp32
    lsg::Tensor src = lsg::zeros({n}, {.device = lsg::Device::cuda()});
    lsg::Tensor dst = lsg::empty({n}, {.device = lsg::Device::cuda()});
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    time_with_events(state, [&] {
        check(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), bytes, cudaMemcpyDeviceToDevice),
              "cudaMemcpyAsync");
    });
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(bytes));
#endif
}

void run(benchmark::State& state, bool backward, double eps, int64_t N, int64_t K) {
    if (skip_without_device(state)) return;
#ifdef LSGRAD_WITH_CUDA
    Data& d = data(N, K);
    lsg::Tensor x = d.x.detach();
    if (backward) x.requires_grad_();
    lsg::CrossEntropyOptions o;
    o.label_smoothing = eps;
    auto once = [&] {
        lsg::Tensor loss = lsg::cross_entropy(x, d.y, o);
        if (backward) {
            loss.backward();
            x.zero_grad();
        }
    };
    // One untimed call: the caching allocator then holds every buffer.
    once();
    time_with_events(state, once);
    state.counters["GB/s"] = benchmark::Counter(12.0 * static_cast<double>(N) * static_cast<double>(K),
                                                benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
#endif
}

const int registered = [] {
    benchmark::RegisterBenchmark("BM_DeviceCopyCuda/bytes:1GiB", copy_bandwidth)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    const std::pair<int64_t, int64_t> shapes[] = {
        {256, 10}, {8192, 10}, {4096, 32000}, {16384, 50257}, {65536, 128256}};
    for (auto [N, K] : shapes)
        for (bool backward : {false, true})
            for (double eps : {0.0, 0.1}) {
                const std::string name = std::string("BM_CrossEntropyCuda/") + (backward ? "fwdbwd" : "fwd") +
                                         "/eps:" + (eps == 0.0 ? "0" : "0.1") + "/N:" + std::to_string(N) +
                                         "/K:" + std::to_string(K);
                benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { run(s, backward, eps, N, K); })
                    ->UseManualTime()
                    ->Unit(benchmark::kMillisecond);
            }
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();

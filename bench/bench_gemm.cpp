// lsgrad's single-precision GEMM, and OpenBLAS's sgemm beside it when built with
// LSGRAD_BENCH_OPENBLAS, on the MLP's products and 1024^3, on 1 and 2 threads.
// Arguments are (M, K, N, threads): C[M,N] = A[M,K] * B[K,N], all row-major, no transposes, beta = 0;
// so "256x784x256" is (256 x 784) * (784 x 256). GFLOP/s counts 2 M N K per iteration against wall
// time. Run with OMP_WAIT_POLICY=PASSIVE so idle threads of one library do not spin against the other.
// OpenBLAS 0.3.21 does not know AMD family 1Ah CPUs and falls back to its AVX2 (Haswell) kernels at
// about half its speed; OPENBLAS_CORETYPE=SkylakeX makes it use its AVX-512 kernels, the fair yardstick:
//   OMP_WAIT_POLICY=PASSIVE OPENBLAS_CORETYPE=SkylakeX bench_gemm --benchmark_repetitions=5
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <random>
#include <vector>

#include "lsgrad/ops/gemm.h"

#ifdef LSGRAD_BENCH_OPENBLAS
extern "C" {
// From OpenBLAS's cblas.h, declared here so the benchmark builds without its include path.
enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b, int m, int n,
                 int k, float alpha, const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
void openblas_set_num_threads(int threads);
}
#endif

namespace {

struct Operands {
    int64_t m, k, n;
    std::vector<float> a, b, c;
    explicit Operands(const benchmark::State& state)
        : m(state.range(0)), k(state.range(1)), n(state.range(2)), a(size_t(m * k)), b(size_t(k * n)),
          c(size_t(m * n)) {
        std::mt19937 rng(42);
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        for (float& x : a) x = dist(rng);
        for (float& x : b) x = dist(rng);
    }
    void report(benchmark::State& state) const {
        state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k),
                                                       benchmark::Counter::kIsIterationInvariantRate,
                                                       benchmark::Counter::kIs1000);
    }
};

void BM_lsgrad_sgemm(benchmark::State& state) {
    Operands op(state);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(int(state.range(3)));
    for (auto _ : state) {
        lsg::detail::gemm_f32(false, false, op.m, op.n, op.k, 1.0f, op.a.data(), op.k, op.b.data(), op.n, 0.0f,
                              op.c.data(), op.n);
        benchmark::DoNotOptimize(op.c.data());
        benchmark::ClobberMemory();
    }
    omp_set_num_threads(saved);
    op.report(state);
}

#ifdef LSGRAD_BENCH_OPENBLAS
void BM_openblas_sgemm(benchmark::State& state) {
    Operands op(state);
    openblas_set_num_threads(int(state.range(3)));
    for (auto _ : state) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(op.m), int(op.n), int(op.k), 1.0f, op.a.data(),
                    int(op.k), op.b.data(), int(op.n), 0.0f, op.c.data(), int(op.n));
        benchmark::DoNotOptimize(op.c.data());
        benchmark::ClobberMemory();
    }
    op.report(state);
}
#endif

// (M, K, N): the MLP's forward (batch 128), its 256-row batch, the weight gradient, and 1024^3.
void shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"M", "K", "N", "threads"});
    const int64_t mkn[][3] = {{128, 784, 256}, {256, 784, 256}, {784, 128, 256}, {1024, 1024, 1024}};
    for (const auto& s : mkn)
        for (int64_t threads : {1, 2}) b->Args({s[0], s[1], s[2], threads});
    b->UseRealTime();
}

}  // namespace

BENCHMARK(BM_lsgrad_sgemm)->Apply(shapes);
#ifdef LSGRAD_BENCH_OPENBLAS
BENCHMARK(BM_openblas_sgemm)->Apply(shapes);
#endif

BENCHMARK_MAIN();

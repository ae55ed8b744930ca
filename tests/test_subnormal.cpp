// The fused cross-entropy kernels never produce a subnormal number. On many x86 CPUs every subnormal
// result or operand costs a microcode assist (about 100 cycles), so a masked lane clamped into the
// subnormal range made (8192, 10) 4.7x slower on an Intel Xeon; on AMD Zen the assist is nearly free
// and only the floating-point status flags show it. So each kernel (small K, large K, the streamed
// gradient, the probability-target path; every instruction set this CPU runs) gets adversarial rows
// (−inf masks in the first, middle and tail lanes, spreads of 0.5 to 1000 so that every magnitude of
// e^{x − max} down to far below the smallest normal number occurs, a Mean scale of 1/N) with the
// status flags cleared, and the underflow flag (and on x86 MXCSR.DE, on aarch64 FPSR.IDC) must still
// be clear afterwards. The kernel must not touch the caller's control bits (no FTZ/DAZ), and its
// results equal the f64 path's within f32 rounding.
#include <gtest/gtest.h>
#include <omp.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "lsgrad/ops/cpu_isa.h"
#include "lsgrad/ops/loss.h"
#include "test_util.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

using lsg::CrossEntropyOptions;
using lsg::Reduction;
using lsg::Smoothing;
using lsg::Tensor;
using lsg::detail::CpuIsa;

constexpr double kInf = std::numeric_limits<double>::infinity();

// The floating-point status of the calling thread: the "input was subnormal" flag (x86 MXCSR.DE,
// aarch64 FPSR.IDC; FE_* has no name for it) and the control bits (rounding, FTZ, DAZ, masks).
#if defined(__x86_64__)
constexpr unsigned kMxcsrDenormal = 1u << 1;
constexpr unsigned kMxcsrFlags = 0x3Fu;
bool denormal_operand_flag() { return (_mm_getcsr() & kMxcsrDenormal) != 0; }
void clear_denormal_operand_flag() { _mm_setcsr(_mm_getcsr() & ~kMxcsrFlags); }
unsigned control_bits() { return _mm_getcsr() & ~kMxcsrFlags; }
#elif defined(__aarch64__)
constexpr uint64_t kFpsrIdc = 1u << 7;
uint64_t fpsr() {
    uint64_t v;
    asm volatile("mrs %0, fpsr" : "=r"(v));
    return v;
}
bool denormal_operand_flag() { return (fpsr() & kFpsrIdc) != 0; }
void clear_denormal_operand_flag() { asm volatile("msr fpsr, %0" : : "r"(fpsr() & ~kFpsrIdc)); }
unsigned control_bits() {
    uint64_t v;
    asm volatile("mrs %0, fpcr" : "=r"(v));
    return static_cast<unsigned>(v);
}
#else
bool denormal_operand_flag() { return false; }
void clear_denormal_operand_flag() {}
unsigned control_bits() { return 0; }
#endif

// Runs fn with the status flags cleared; fails the test if it raised underflow or met a subnormal
// operand, or changed the control bits.
template <class Fn>
void expect_no_subnormal(const std::string& what, Fn&& fn) {
    const unsigned control = control_bits();
    std::feclearexcept(FE_ALL_EXCEPT);
    clear_denormal_operand_flag();
    fn();
    const bool underflow = std::fetestexcept(FE_UNDERFLOW) != 0;
    const bool denormal = denormal_operand_flag();
    EXPECT_FALSE(underflow) << what << ": raised FE_UNDERFLOW (a subnormal result)";
    EXPECT_FALSE(denormal) << what << ": met a subnormal operand";
    EXPECT_EQ(control_bits(), control) << what << ": changed the floating-point control bits";
}

// Restores the active instruction set and the thread count; runs everything on the calling thread
// meanwhile (the status flags are per thread).
class OneThreadRestoreIsa {
public:
    OneThreadRestoreIsa() : isa_(lsg::detail::cpu_isa()), threads_(omp_get_max_threads()) { omp_set_num_threads(1); }
    ~OneThreadRestoreIsa() {
        lsg::detail::set_cpu_isa(isa_);
        omp_set_num_threads(threads_);
    }

private:
    CpuIsa isa_;
    int threads_;
};

// Rows of N x K logits built to provoke subnormals: row i has spread s_i (x = offset − s·u, u in
// [0, 1)), and every third row has −inf in its first class (the online max's first update starts
// from −inf), every fifth class and its last class (a tail lane); targets always sit on a finite
// logit, and the last row is all −inf with an ignored target.
struct Rows {
    std::vector<double> x;
    std::vector<int64_t> y;
};
Rows adversarial_rows(int64_t N, int64_t K, unsigned seed) {
    static const double spreads[] = {0.5, 20.0, 80.0, 88.0, 101.0, 150.0, 1000.0};
    static const double offsets[] = {0.0, 30.0, -45.0};
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    Rows r{std::vector<double>(size_t(N * K)), std::vector<int64_t>(size_t(N))};
    for (int64_t i = 0; i < N; ++i) {
        const double s = spreads[i % 7], o = offsets[i % 3];
        double* xi = r.x.data() + i * K;
        for (int64_t k = 0; k < K; ++k) xi[k] = o - s * u(rng);
        int64_t y = int64_t(rng() % uint64_t(K));
        if (i % 3 == 2 && K > 2) {
            xi[0] = -kInf;
            xi[K - 1] = -kInf;
            for (int64_t k = 0; k < K; k += 5) xi[k] = -kInf;
            y = 1 + int64_t(rng() % uint64_t(K - 2));
            if (y % 5 == 0) y -= 1;
        }
        r.y[size_t(i)] = y;
    }
    if (N > 1) {
        for (int64_t k = 0; k < K; ++k) r.x[size_t((N - 1) * K + k)] = -kInf;
        r.y[size_t(N - 1)] = -100;
    }
    return r;
}

template <class T>
Tensor leaf(const std::vector<double>& v, lsg::Shape s) {
    Tensor t = lsg::from_vector<T>(std::vector<T>(v.begin(), v.end()), std::move(s));
    t.requires_grad_();
    return t;
}

// f32 against f64: NaN where NaN, equal infinities, otherwise within f32 rounding of the row
// arithmetic.
void expect_close(const std::string& what, double got, double want, double tol) {
    if (std::isnan(want) || std::isnan(got)) {
        EXPECT_EQ(std::isnan(got), std::isnan(want)) << what << ": " << got << " vs " << want;
        return;
    }
    if (std::isinf(want)) {
        EXPECT_EQ(got, want) << what;
        return;
    }
    EXPECT_NEAR(got, want, tol * (1.0 + std::abs(want))) << what;
}

// Gradients: NaN where NaN, else within 2e-6 (the gradients here are at most 1 in magnitude).
void expect_gradient_close(const std::string& what, const std::vector<float>& got, const std::vector<double>& want) {
    double worst = 0;
    size_t nan_mismatch = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(got[i]) || std::isnan(want[i])) {
            nan_mismatch += std::isnan(got[i]) != std::isnan(want[i]);
            continue;
        }
        worst = std::max(worst, std::abs(double(got[i]) - want[i]));
    }
    EXPECT_EQ(nan_mismatch, 0u) << what << " gradient: NaN in one precision only";
    EXPECT_LT(worst, 2e-6) << what << " gradient";
}

// The f32 cross-entropy of logits xv [N, K] on every instruction set this CPU runs: forward and
// backward free of subnormals, and equal to the f64 path's loss and gradient.
void check_every_isa(const std::string& label, const std::vector<double>& xv, int64_t N, int64_t K,
                     const Tensor& target, const CrossEntropyOptions& o, double ref_loss,
                     const std::vector<double>& ref_grad) {
    for (CpuIsa isa : lsg::testing::supported_cpu_isas()) {
        lsg::detail::set_cpu_isa(isa);
        const std::string what = std::string(lsg::detail::cpu_isa_name(isa)) + " " + label;
        Tensor x = leaf<float>(xv, {N, K});
        Tensor loss;
        expect_no_subnormal(what, [&] {
            loss = lsg::cross_entropy(x, target, o);
            loss.backward();
        });
        expect_close(what + " loss", loss.item<double>(), ref_loss, 1e-5);
        expect_gradient_close(what, x.grad().to_vector<float>(), ref_grad);
    }
}

struct Variant {
    const char* name;
    double eps;
    Smoothing smoothing;
    bool weighted;
    bool padding;
    Reduction reduction;
};
const Variant kVariants[] = {
    {"plain mean", 0.0, Smoothing::Uniform, false, false, Reduction::Mean},
    {"uniform 0.1 weighted mean", 0.1, Smoothing::Uniform, true, false, Reduction::Mean},
    {"off-target 0.1 padding sum", 0.1, Smoothing::OffTarget, false, true, Reduction::Sum},
};

CrossEntropyOptions options(const Variant& v, int64_t K, const std::vector<double>& w, bool f64) {
    CrossEntropyOptions o;
    o.label_smoothing = v.eps;
    o.smoothing = v.smoothing;
    o.reduction = v.reduction;
    if (v.padding) o.padding_idx = K - 1;
    if (v.weighted)
        o.weight = f64 ? lsg::from_vector<double>(w, {K})
                       : lsg::from_vector<float>(std::vector<float>(w.begin(), w.end()), {K});
    return o;
}

// Index targets: K ≤ 16 (one vector per row), K > 16 (online sweep), K = 32000 with 80 rows (the
// streamed gradient, ≥ 8 MiB).
TEST(Subnormal, CrossEntropyIndexEveryKernel) {
    OneThreadRestoreIsa guard;
    for (int64_t K : {1, 2, 10, 15, 16, 17, 1000, 32000}) {
        const int64_t N = K >= 32000 ? 80 : K >= 1000 ? 40 : 512;
        const Rows rows = adversarial_rows(N, K, unsigned(K));
        std::vector<double> w(static_cast<size_t>(K));
        std::mt19937 rng(unsigned(K) + 7);
        for (auto& e : w) e = 0.1 + 2.0 * std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        for (const Variant& v : kVariants) {
            if (v.smoothing == Smoothing::OffTarget && K < 3) continue;
            std::vector<int64_t> y = rows.y;
            if (v.padding)
                for (auto& t : y)
                    if (t == K - 1) t = 1;
            const Tensor target = lsg::from_vector<int64_t>(y, {N});
            Tensor ref = leaf<double>(rows.x, {N, K});
            const Tensor ref_loss = lsg::cross_entropy(ref, target, options(v, K, w, true));
            ref_loss.backward();
            const std::vector<double> ref_grad = ref.grad().to_vector<double>();
            check_every_isa("K=" + std::to_string(K) + " N=" + std::to_string(N) + " " + v.name, rows.x, N, K, target,
                            options(v, K, w, false), ref_loss.item<double>(), ref_grad);
        }
    }
}

// Probability targets: the row's log-sum-exp sweep and the per-element gradient.
TEST(Subnormal, CrossEntropyProbabilityTargets) {
    OneThreadRestoreIsa guard;
    for (int64_t K : {1, 2, 10, 16, 17, 1000}) {
        const int64_t N = K >= 1000 ? 40 : 256;
        const Rows rows = adversarial_rows(N, K, unsigned(K) + 100);
        // Targets: a distribution over the finite logits of each row (0 on masked classes).
        std::vector<double> t(rows.x.size(), 0.0);
        std::mt19937 rng(unsigned(K) + 101);
        for (int64_t i = 0; i < N; ++i) {
            double sum = 0;
            for (int64_t k = 0; k < K; ++k)
                if (!std::isinf(rows.x[size_t(i * K + k)])) sum += (t[size_t(i * K + k)] = 0.05 + double(rng() % 100));
            for (int64_t k = 0; k < K && sum > 0; ++k) t[size_t(i * K + k)] /= sum;
        }
        for (double eps : {0.0, 0.1}) {
            CrossEntropyOptions o;
            o.label_smoothing = eps;
            Tensor ref = leaf<double>(rows.x, {N, K});
            const Tensor ref_loss = lsg::cross_entropy(ref, lsg::from_vector<double>(t, {N, K}), o);
            ref_loss.backward();
            const std::vector<double> ref_grad = ref.grad().to_vector<double>();
            const Tensor target = lsg::from_vector<float>(std::vector<float>(t.begin(), t.end()), {N, K});
            check_every_isa("K=" + std::to_string(K) + " eps=" + std::to_string(eps), rows.x, N, K, target, o,
                            ref_loss.item<double>(), ref_grad);
        }
    }
}

}  // namespace

// lsg::detail::gemm_f32 / gemm_f64 against a naive f64 triple loop, on every kernel set this CPU can
// run, over a table of shapes chosen to hit the kernels' edges: sizes below, at and past the register
// tile and the cache blocks, all four transpose combinations, leading dimensions wider than the
// matrices, and NaN everywhere the GEMM must not read or write.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/ops/cpu_isa.h"
#include "lsgrad/ops/gemm.h"

namespace {

using lsg::detail::CpuIsa;

struct Case {
    bool ta, tb;
    int64_t m, n, k;
    double alpha, beta;
    int64_t pad;  // extra elements per row in lda, ldb and ldc
};

std::string describe(const Case& c) {
    std::ostringstream os;
    os << (c.ta ? "A^T" : "A") << "*" << (c.tb ? "B^T" : "B") << " m=" << c.m << " n=" << c.n << " k=" << c.k
       << " alpha=" << c.alpha << " beta=" << c.beta << " pad=" << c.pad;
    return os.str();
}

std::vector<CpuIsa> supported_isas() {
    std::vector<CpuIsa> out;
    for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512})
        if (lsg::detail::cpu_isa_supported(isa)) out.push_back(isa);
    return out;
}

// Restores the kernel set and thread count a test changed, even when an assertion returns early.
class Restore {
public:
    Restore() : isa_(lsg::detail::cpu_isa()), threads_(omp_get_max_threads()) {}
    ~Restore() {
        lsg::detail::set_cpu_isa(isa_);
        omp_set_num_threads(threads_);
    }

private:
    CpuIsa isa_;
    int threads_;
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A stored rows x cols matrix with row stride ld; the ld - cols padding and a guard band of
// `guard` elements before and after are NaN.
template <class T>
struct Padded {
    int64_t rows, cols, ld, guard;
    std::vector<T> buf;
    Padded(int64_t r, int64_t c, int64_t pad, int64_t g = 64)
        : rows(r), cols(c), ld((c > 1 ? c : 1) + pad), guard(g), buf(size_t(r * ld + 2 * g), T(kNaN)) {}
    T* data() { return buf.data() + guard; }
    const T* data() const { return buf.data() + guard; }
    T& at(int64_t i, int64_t j) { return data()[i * ld + j]; }
    T at(int64_t i, int64_t j) const { return data()[i * ld + j]; }
    // Whether element `idx` of buf lies outside the rows x cols matrix.
    bool outside(int64_t idx) const {
        const int64_t rel = idx - guard;
        return rel < 0 || rel >= rows * ld || rel % ld >= cols;
    }
};

template <class T>
void fill_random(Padded<T>& p, std::mt19937& rng) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < p.rows; ++i)
        for (int64_t j = 0; j < p.cols; ++j) p.at(i, j) = T(dist(rng));
}

template <class T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
    if constexpr (sizeof(T) == 4)
        lsg::detail::gemm_f32(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        lsg::detail::gemm_f64(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Runs one case on the current kernel set and thread count and checks every output element
// against the f64 reference, within the worst-case rounding bound of a k-term dot product, and
// that nothing outside C changed.
template <class T>
void check_case(const Case& cs, uint32_t seed) {
    SCOPED_TRACE(describe(cs) + (sizeof(T) == 4 ? " f32" : " f64"));
    std::mt19937 rng(seed);
    Padded<T> a(cs.ta ? cs.k : cs.m, cs.ta ? cs.m : cs.k, cs.pad);
    Padded<T> b(cs.tb ? cs.n : cs.k, cs.tb ? cs.k : cs.n, cs.pad);
    Padded<T> c(cs.m, cs.n, cs.pad);
    fill_random(a, rng);
    fill_random(b, rng);
    if (cs.beta != 0.0) fill_random(c, rng);  // beta == 0: C stays NaN and must be ignored
    const Padded<T> c0 = c;
    const T alpha = T(cs.alpha), beta = T(cs.beta);

    gemm<T>(cs.ta, cs.tb, cs.m, cs.n, cs.k, alpha, a.data(), a.ld, b.data(), b.ld, beta, c.data(), c.ld);

    auto op_a = [&](int64_t i, int64_t p) { return double(cs.ta ? a.at(p, i) : a.at(i, p)); };
    auto op_b = [&](int64_t p, int64_t j) { return double(cs.tb ? b.at(j, p) : b.at(p, j)); };
    const double eps = std::numeric_limits<T>::epsilon();
    int64_t bad = 0;
    for (int64_t i = 0; i < cs.m; ++i)
        for (int64_t j = 0; j < cs.n; ++j) {
            double sum = 0.0, mag = 0.0;
            for (int64_t p = 0; p < cs.k; ++p) {
                sum += op_a(i, p) * op_b(p, j);
                mag += std::fabs(op_a(i, p) * op_b(p, j));
            }
            double ref = double(alpha) * sum;
            mag = std::fabs(double(alpha)) * mag;
            if (beta != T(0)) {
                ref += double(beta) * double(c0.at(i, j));
                mag += std::fabs(double(beta) * double(c0.at(i, j)));
            }
            const double tol = 2.0 * double(cs.k + 3) * eps * mag + std::numeric_limits<T>::min();
            const double got = double(c.at(i, j));
            if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
                ADD_FAILURE() << "C[" << i << "," << j << "] = " << got << ", reference " << ref << " (tol " << tol
                              << ")";
        }
    EXPECT_EQ(bad, 0);
    for (int64_t idx = 0; idx < int64_t(c.buf.size()); ++idx)
        if (c.outside(idx)) {
            ASSERT_TRUE(std::isnan(c.buf[size_t(idx)])) << "wrote outside C at buffer index " << idx;
        }
}

std::vector<Case> edge_cases() {
    std::vector<Case> cases;
    // Every transpose combination over sizes around the 6-row tile, the 8/16-lane vectors, the
    // 64-column tile, the k block (256/384) and the column block (256/512).
    const int64_t shapes[][3] = {{1, 1, 1},    {7, 13, 29},  {2, 3, 5},    {6, 16, 8},    {6, 64, 1},
                                 {5, 17, 3},   {13, 65, 31}, {1, 100, 7},  {100, 1, 7},   {11, 10, 300},
                                 {37, 129, 385}, {19, 530, 260}, {64, 64, 64}, {3, 47, 777}, {50, 33, 2}};
    for (const auto& s : shapes)
        for (int t = 0; t < 4; ++t) cases.push_back({bool(t & 1), bool(t & 2), s[0], s[1], s[2], 1.0, 0.0, 0});
    // alpha/beta, write-only C (NaN-filled), and leading dimensions wider than the matrices.
    cases.push_back({false, false, 23, 70, 41, 0.5, 2.0, 0});
    cases.push_back({true, false, 23, 70, 41, -1.5, 1.0, 3});
    cases.push_back({false, true, 23, 70, 41, 2.0, -0.25, 17});
    cases.push_back({true, true, 23, 70, 41, 1.0, 0.0, 5});
    cases.push_back({false, false, 9, 130, 400, 0.75, 1.0, 1});
    cases.push_back({true, true, 71, 33, 300, -2.0, 0.5, 9});
    // k == 0 and alpha == 0: C = beta * C without touching A or B.
    cases.push_back({false, false, 7, 9, 0, 1.0, 0.5, 2});
    cases.push_back({false, false, 7, 9, 0, 1.0, 0.0, 2});
    cases.push_back({true, false, 7, 9, 5, 0.0, 3.0, 0});
    return cases;
}

// Products big enough to run on several threads: the MLP's, (M, K, N) forward 128x784x256 with W^T,
// the weight gradient and the input gradient in the transposes Linear uses, then two narrow ones
// (n below one register tile per thread) that split rows instead of columns.
std::vector<Case> parallel_cases() {
    return {{false, true, 128, 256, 784, 1.0, 0.0, 0},  {false, false, 256, 256, 784, 1.0, 0.0, 0},
            {true, false, 784, 256, 128, 1.0, 1.0, 0},  {false, false, 128, 784, 256, 1.0, 0.0, 0},
            {false, false, 2500, 10, 700, 1.0, 0.0, 0}, {true, true, 1500, 37, 300, -0.5, 2.0, 3}};
}

TEST(Gemm, EdgeShapesEveryKernelSet) {
    Restore restore;
    for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(lsg::detail::cpu_isa_name(isa));
        lsg::detail::set_cpu_isa(isa);
        uint32_t seed = 1;
        for (const Case& cs : edge_cases()) {
            check_case<float>(cs, seed);
            check_case<double>(cs, seed++);
        }
    }
}

TEST(Gemm, ParallelShapesEveryKernelSet) {
    Restore restore;
    omp_set_num_threads(3);  // several threads even on a one-core machine
    for (CpuIsa isa : supported_isas()) {
        SCOPED_TRACE(lsg::detail::cpu_isa_name(isa));
        lsg::detail::set_cpu_isa(isa);
        uint32_t seed = 100;
        for (const Case& cs : parallel_cases()) check_case<float>(cs, seed++);
        check_case<double>(parallel_cases()[0], seed++);
        check_case<double>(parallel_cases()[5], seed);
    }
}

TEST(Gemm, OneThreadAndManyThreadsGiveTheSameBits) {
    Restore restore;
    // (m, n, k): columns split among threads, then rows (n = 10 is narrower than a register tile).
    const int64_t shapes[][3] = {{256, 784, 256}, {2500, 10, 700}};
    for (const auto& shape : shapes) {
        const int64_t m = shape[0], n = shape[1], k = shape[2];
        std::mt19937 rng(7);
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        std::vector<float> a(size_t(m * k)), b(size_t(k * n));
        for (float& x : a) x = dist(rng);
        for (float& x : b) x = dist(rng);
        for (CpuIsa isa : supported_isas()) {
            SCOPED_TRACE(std::string(lsg::detail::cpu_isa_name(isa)) + " m=" + std::to_string(m) + " n=" + std::to_string(n));
            lsg::detail::set_cpu_isa(isa);
            std::vector<std::vector<float>> results;
            for (int threads : {1, 2, 3}) {
                omp_set_num_threads(threads);
                for (int t = 0; t < 4; ++t) {
                    std::vector<float> c(size_t(m * n), 0.25f);
                    lsg::detail::gemm_f32(t & 1, t & 2, m, n, k, 1.0f, a.data(), (t & 1) ? m : k, b.data(),
                                          (t & 2) ? k : n, 0.5f, c.data(), n);
                    results.push_back(std::move(c));
                }
            }
            for (size_t r = 4; r < results.size(); ++r)
                EXPECT_EQ(std::memcmp(results[r].data(), results[r % 4].data(), results[r].size() * sizeof(float)), 0)
                    << "threads run " << r / 4 << ", transposes " << r % 4;
        }
    }
}

TEST(Gemm, RejectsBadArguments) {
    std::vector<float> a(64, 1.0f), b(64, 1.0f), c(64, 0.0f);
    EXPECT_THROW(lsg::detail::gemm_f32(false, false, -1, 2, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2),
                 lsg::Error);
    // lda 3 is narrower than op(A)'s 4 columns.
    EXPECT_THROW(lsg::detail::gemm_f32(false, false, 2, 2, 4, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2),
                 lsg::Error);
    // With trans_b, B is stored n x k, so ldb must be >= k.
    EXPECT_THROW(lsg::detail::gemm_f32(false, true, 2, 2, 4, 1.0f, a.data(), 4, b.data(), 2, 0.0f, c.data(), 2),
                 lsg::Error);
    EXPECT_THROW(lsg::detail::gemm_f64(false, false, 2, 5, 2, 1.0, nullptr, 2, nullptr, 5, 0.0, nullptr, 5),
                 lsg::Error);
    try {
        lsg::detail::gemm_f32(false, false, 2, 2, 4, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2);
    } catch (const lsg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("lsg::gemm_f32: lda=3"), std::string::npos) << e.what();
    }
}

TEST(Gemm, KernelSetSelection) {
    Restore restore;
    EXPECT_TRUE(lsg::detail::cpu_isa_supported(CpuIsa::portable));
    EXPECT_TRUE(lsg::detail::cpu_isa_supported(lsg::detail::cpu_isa()));
    for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512}) {
        if (lsg::detail::cpu_isa_supported(isa)) {
            lsg::detail::set_cpu_isa(isa);
            EXPECT_EQ(lsg::detail::cpu_isa(), isa);
        } else {
            EXPECT_THROW(lsg::detail::set_cpu_isa(isa), lsg::Error);
        }
    }
}

}  // namespace

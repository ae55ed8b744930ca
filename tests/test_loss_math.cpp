// The shared loss arithmetic (ops/loss_math.h) and the raw CPU loss kernels, against hand-computed
// values and a double-precision reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/ops/loss_math.h"

namespace {

using namespace lsg::detail;
constexpr double kInf = std::numeric_limits<double>::infinity();

double lse_of(const std::vector<double>& xs) {
    LseState<double> st = lse_init<double>();
    for (double x : xs) lse_update(st, x);
    return lse_value(st);
}

TEST(LossMath, OnlineLseMatchesDirectFormula) {
    const std::vector<double> xs = {0.5, -1.0, 3.0, 2.0, -7.0};
    double m = 3.0, s = 0.0;
    for (double x : xs) s += std::exp(x - m);
    EXPECT_NEAR(lse_of(xs), m + std::log(s), 1e-15);
}

TEST(LossMath, LseMergeEqualsOnePass) {
    const std::vector<double> a = {1.0, -2.0, 4.0}, b = {10.0, 0.0};
    LseState<double> sa = lse_init<double>(), sb = lse_init<double>();
    for (double x : a) lse_update(sa, x);
    for (double x : b) lse_update(sb, x);
    EXPECT_NEAR(lse_value(lse_merge(sa, sb)), lse_of({1.0, -2.0, 4.0, 10.0, 0.0}), 1e-14);
    EXPECT_NEAR(lse_value(lse_merge(sb, sa)), lse_of({1.0, -2.0, 4.0, 10.0, 0.0}), 1e-14);
    // Merging with an empty (or all-masked) part changes nothing and makes no NaN.
    EXPECT_EQ(lse_value(lse_merge(sa, lse_init<double>())), lse_value(sa));
    EXPECT_EQ(lse_value(lse_merge(lse_init<double>(), lse_init<double>())), -kInf);
}

// A part whose elements are −inf and one NaN has m = −inf and s = NaN: the NaN must survive a merge
// with a part that has a finite maximum, in either order, and with another masked part.
TEST(LossMath, LseMergeKeepsTheNaNOfAMaskedPart) {
    LseState<double> finite = lse_init<double>(), masked_nan = lse_init<double>();
    for (double x : {1.0, -2.0}) lse_update(finite, x);
    for (double x : {-kInf, std::nan(""), -kInf}) lse_update(masked_nan, x);
    EXPECT_TRUE(std::isnan(lse_value(lse_merge(finite, masked_nan))));
    EXPECT_TRUE(std::isnan(lse_value(lse_merge(masked_nan, finite))));
    EXPECT_TRUE(std::isnan(lse_value(lse_merge(masked_nan, lse_init<double>()))));
    EXPECT_TRUE(std::isnan(lse_value(lse_merge(lse_init<double>(), masked_nan))));
    // A masked part without NaN still adds nothing.
    LseState<double> masked = lse_init<double>();
    for (double x : {-kInf, -kInf}) lse_update(masked, x);
    EXPECT_EQ(lse_value(lse_merge(finite, masked)), lse_value(finite));
    EXPECT_EQ(lse_value(lse_merge(masked, masked)), -kInf);
}

TEST(LossMath, MaskedElementsContributeNothing) {
    EXPECT_NEAR(lse_of({-kInf, 0.0, -kInf, 0.0}), std::log(2.0), 1e-15);
    // An all-masked row: −inf − (−inf) must not make NaN inside the state.
    const double all = lse_of({-kInf, -kInf, -kInf});
    EXPECT_EQ(all, -kInf);
    EXPECT_TRUE(std::isnan(lse_of({0.0, std::nan(""), 1.0})));
}

TEST(LossMath, LseIsShiftInvariant) {
    EXPECT_NEAR(lse_of({1e4, 1e4 - 1.0}) - 1e4, std::log(1.0 + std::exp(-1.0)), 1e-12);
    EXPECT_NEAR(lse_of({-1e4, -1e4 - 1.0}) + 1e4, std::log(1.0 + std::exp(-1.0)), 1e-12);
}

TEST(LossMath, SmoothWeightsOfBothConventions) {
    auto u = smooth_weights<double>(0.1, 4, false, false);
    EXPECT_DOUBLE_EQ(u.on, 1 - 0.1 + 0.1 / 4);
    EXPECT_DOUBLE_EQ(u.off, 0.1 / 4);
    auto o = smooth_weights<double>(0.1, 3, true, false);
    EXPECT_DOUBLE_EQ(o.on, 0.9);
    EXPECT_DOUBLE_EQ(o.off, 0.05);
    auto p = smooth_weights<double>(0.5, 5, true, true);
    EXPECT_DOUBLE_EQ(p.off, 0.5 / 3);
    EXPECT_EQ(smooth_target(p, 0, 2, 0), 0.0);  // the padding column
    EXPECT_EQ(smooth_target(p, 3, 0, 0), 0.0);  // a padding row
    EXPECT_DOUBLE_EQ(smooth_target(p, 2, 2, 0), 0.5);
}

TEST(LossMath, RowLossEqualsWeightedSumOverTargets) {
    std::mt19937 rng(3);
    std::normal_distribution<double> nd(0.0, 2.0);
    const int64_t K = 7;
    for (bool off : {false, true})
        for (int64_t pad : {int64_t(-1), int64_t(4)}) {
            if (pad >= 0 && !off) continue;
            std::vector<double> x(K), w(K);
            for (auto& v : x) v = nd(rng) + 1e3;  // a large common offset must not hurt
            for (auto& v : w) v = 0.5 + std::abs(nd(rng));
            const int64_t y = 2;
            const auto sw = smooth_weights<double>(0.2, K, off, pad >= 0);
            const double lse = lse_of(x), c = ce_pivot(x[y]);
            double sum_w = 0, sdx = 0, expect = 0, mass = 0;
            for (int64_t k = 0; k < K; ++k) {
                const double q = smooth_target(sw, k, y, pad);
                expect += q * w[k] * (lse - x[k]);
                mass += q * w[k];
                if (k == pad) continue;
                sum_w += w[k];
                sdx += w[k] * (x[k] - c);
            }
            EXPECT_NEAR(ce_row_loss(sw, lse - c, x[y] - c, w[y], sum_w, sdx), expect, 1e-9);
            EXPECT_NEAR(ce_row_mass(sw, w[y], sum_w), mass, 1e-12);
        }
}

// ---- the per-row arithmetic of the fused linear cross-entropy (both backends run it) -------------

TEST(LossMath, TargetPartsShareRowsAndSkipWhatDoesNotCount) {
    const int64_t K = 6, ignore = -100, pad = 5;
    const int64_t a[] = {1, -100, 5, 9, -2, 3};
    const int64_t b[] = {2, 4, 0, 3, 1, 3};
    const double lam[] = {0.25, 0.5, 0.75, 0.125, 1.0, 0.0};
    // Unmixed: share 1, or 0 for ignore_index, the padding class and a class outside [0, K) (the CUDA
    // kernels' skip of a bad target, which the CPU op rejects before).
    const double unmixed[] = {1, 0, 0, 0, 0, 1};
    for (int64_t i = 0; i < 6; ++i) {
        const TargetParts p = target_parts<double>(a, nullptr, nullptr, i, K, ignore, pad);
        EXPECT_EQ(p.y[0], a[i]);
        EXPECT_EQ(p.share[0], unmixed[i]) << i;
        EXPECT_EQ(p.share[1], 0.0) << i;
        EXPECT_EQ(pivot_class(p), unmixed[i] != 0 ? a[i] : -1) << i;
    }
    // Mixed: λ and 1 − λ, each part skipped on its own.
    const double share_a[] = {0.25, 0, 0, 0, 0, 0.0};
    const double share_b[] = {0.75, 0.5, 0.25, 0.875, 0.0, 1.0};
    for (int64_t i = 0; i < 6; ++i) {
        const TargetParts p = target_parts(a, b, lam, i, K, ignore, pad);
        EXPECT_EQ(p.y[1], b[i]);
        EXPECT_EQ(p.share[0], share_a[i]) << i;
        EXPECT_EQ(p.share[1], share_b[i]) << i;
        EXPECT_EQ(pivot_class(p), share_a[i] != 0 ? a[i] : (share_b[i] != 0 ? b[i] : -1)) << i;
    }
    // The Mean denominator: Σ share·w_y over the parts that count.
    const double w[] = {0.5, 1.5, 2.0, 3.0, 4.0, 7.0};
    EXPECT_DOUBLE_EQ(parts_denominator_term(target_parts(a, b, lam, 0, K, ignore, pad), w, ignore, pad),
                     0.25 * 1.5 + 0.75 * 2.0);
    EXPECT_DOUBLE_EQ(parts_denominator_term(target_parts(a, b, lam, 3, K, ignore, pad), w, ignore, pad), 0.875 * 3.0);
    const TargetParts unmixed_bad = target_parts<double>(a, nullptr, nullptr, 3, K, ignore, pad);
    EXPECT_DOUBLE_EQ(parts_denominator_term(unmixed_bad, w, ignore, pad), 0.0);
}

TEST(LossMath, SoftcapAndItsDerivative) {
    for (double s : {0.5, 2.0, 30.0})
        for (double u : {-40.0, -1.0, 0.0, 0.3, 5.0}) {
            const double x = softcap(u, s);
            EXPECT_NEAR(x, s * std::tanh(u / s), 1e-15);
            const double h = 1e-6;
            EXPECT_NEAR(softcap_grad(x, s), (softcap(u + h, s) - softcap(u - h, s)) / (2 * h), 1e-8) << s << " " << u;
        }
    EXPECT_EQ(softcap(7.5, 0.0), 7.5);
    EXPECT_EQ(softcap_grad(7.5, 0.0), 1.0);
}

// A mixed row's loss and gradient against the direct formula: loss(u) = Σ_k Q_k·(lse − x_k) +
// c·z·lse² with x = softcap(u), Q_k = Σ_parts share·q_k·w_k; the gradient by central differences.
TEST(LossMath, PartsRowLossAndGradientMatchTheDirectFormula) {
    std::mt19937 rng(5);
    std::normal_distribution<double> nd(0.0, 1.5);
    const int64_t K = 8, ignore = -100;
    for (int64_t pad : {int64_t(-1), int64_t(6)})
        for (double cap : {0.0, 2.5})
            for (double z : {0.0, 0.05}) {
                std::vector<double> u(K), w(K);
                for (auto& v : u) v = nd(rng);
                for (auto& v : w) v = 0.5 + std::abs(nd(rng));
                const int64_t ta[] = {3}, tb[] = {pad >= 0 ? int64_t(1) : int64_t(7)};
                const double lam[] = {0.3};
                const auto sw = smooth_weights<double>(0.1, K, pad >= 0, pad >= 0);
                const TargetParts p = target_parts(ta, tb, lam, 0, K, ignore, pad);
                auto direct = [&](const std::vector<double>& uu) {
                    std::vector<double> x(K);
                    for (int64_t k = 0; k < K; ++k) x[k] = softcap(uu[k], cap);
                    const double lse = lse_of(x);
                    double l = 0.0;
                    for (int64_t k = 0; k < K; ++k) {
                        const double q =
                            0.3 * smooth_target(sw, k, ta[0], pad) + 0.7 * smooth_target(sw, k, tb[0], pad);
                        l += q * w[k] * (lse - x[k]);
                    }
                    return l + z * lse * lse;
                };
                std::vector<double> x(K);
                LseState<double> st = lse_init<double>();
                for (int64_t k = 0; k < K; ++k) {
                    x[k] = softcap(u[k], cap);
                    lse_update(st, x[k]);
                }
                const double c = ce_pivot(x[pivot_class(p)]);
                double sum_w = 0.0, sdx = 0.0;
                for (int64_t k = 0; k < K; ++k) {
                    sum_w += class_mass_term(w.data(), k, pad);
                    if (k != pad) sdx += w[k] * (x[k] - c);
                }
                const double x_y[2] = {x[p.y[0]], x[p.y[1]]};
                const std::string what = "pad " + std::to_string(pad) + " cap " + std::to_string(cap) + " z " +
                                         std::to_string(z);
                EXPECT_NEAR(parts_row_loss(sw, p, st, c, x_y, w.data(), sum_w, sdx, z), direct(u), 1e-12) << what;
                const PartsGrad<double> pg = parts_grad(sw, p, st, w.data(), sum_w, z);
                EXPECT_TRUE(pg.counts);
                const double log_s = std::log(st.s);
                for (int64_t k = 0; k < K; ++k) {
                    std::vector<double> up = u, um = u;
                    const double h = 1e-6;
                    up[k] += h;
                    um[k] -= h;
                    const double g = linear_ce_grad(0.5, pg.mass, softmax_prob(x[k], st.m, log_s),
                                                    parts_target(sw, p, k, pad), w[k], x[k], cap);
                    EXPECT_NEAR(g, 0.5 * (direct(up) - direct(um)) / (2 * h), 1e-7) << what << " class " << k;
                }
            }
}

TEST(LossMath, PartsOfARowThatDoesNotCountGiveNothing) {
    const int64_t ta[] = {-100}, tb[] = {2};
    const double lam[] = {1.0};  // the second part's share is 0
    const TargetParts p = target_parts(ta, tb, lam, 0, 4, -100, -1);
    const auto sw = smooth_weights<double>(0.1, 4, false, false);
    const LseState<double> st{1.0, 2.0};
    const double x_y[2] = {0.0, 0.0};
    EXPECT_EQ(parts_row_loss<double>(sw, p, st, 0.0, x_y, nullptr, 4.0, 0.3, 0.1), 0.0);
    EXPECT_FALSE(parts_grad<double>(sw, p, st, nullptr, 4.0, 0.1).counts);
    EXPECT_EQ(parts_target(sw, p, 2, -1), 0.0);
}

TEST(LossMath, GradientOfMaskedClassIsFinite) {
    const double g = ce_grad(1.0, 1.0, softmax_prob(-kInf, 0.3, 0.2), 0.05, 1.0);
    EXPECT_DOUBLE_EQ(g, -0.05);
}

TEST(LossMath, KlAndBcePointwise) {
    EXPECT_EQ(kl_point(-kInf, 0.0), 0.0);
    EXPECT_EQ(kl_point_log_target(-kInf, -kInf), 0.0);
    EXPECT_NEAR(kl_point(std::log(0.25), 0.5), 0.5 * std::log(2.0), 1e-15);
    // Stable for large |x|: log(1 + e^−100) and 100 + log(1 + e^−100).
    EXPECT_NEAR(bce_point(100.0, 1.0, 1.0), std::exp(-100.0), 1e-50);
    EXPECT_NEAR(bce_point(-100.0, 1.0, 1.0), 100.0, 1e-12);
    EXPECT_NEAR(bce_point(-100.0, 0.0, 1.0), std::exp(-100.0), 1e-50);
    EXPECT_NEAR(bce_grad_x(0.3, 0.7, 1.0), 1 / (1 + std::exp(-0.3)) - 0.7, 1e-15);
}

// The fused f32 kernel writes exactly rows·classes gradient values: NaN sentinels around every
// buffer stay untouched, at K that are and are not multiples of the vector width.
TEST(LossKernelsCpu, FusedKernelStaysInsideItsBuffers) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int64_t K : {1, 10, 16, 17, 33, 1003}) {
        const int64_t N = 5, guard = 32;
        std::vector<float> x(N * K), grad(N * K + 2 * guard, nan), loss(N + 2 * guard, nan), lse(N + 2 * guard, nan);
        std::mt19937 rng(static_cast<unsigned>(K));
        std::normal_distribution<float> nd(0.f, 3.f);
        for (auto& v : x) v = nd(rng);
        std::vector<int64_t> y(N);
        for (auto& v : y) v = static_cast<int64_t>(rng() % K);
        lsg::CrossEntropyIndexArgs a;
        a.rows = N;
        a.classes = K;
        a.logits = x.data();
        a.target = y.data();
        a.label_smoothing = 0.1;
        a.row_loss = loss.data() + guard;
        a.lse = lse.data() + guard;
        a.grad = grad.data() + guard;
        lsg::cpu_loss_kernels().cross_entropy_index(lsg::kernel_context(lsg::Device::cpu()), a);
        for (int64_t i = 0; i < guard; ++i) {
            EXPECT_TRUE(std::isnan(grad[i]) && std::isnan(grad[guard + N * K + i])) << "K = " << K;
            EXPECT_TRUE(std::isnan(loss[i]) && std::isnan(loss[guard + N + i])) << "K = " << K;
        }
        for (int64_t i = 0; i < N * K; ++i) EXPECT_FALSE(std::isnan(grad[guard + i])) << "K = " << K;
        // Each gradient row sums to 0 (Σ p = Σ q = 1).
        for (int64_t i = 0; i < N; ++i) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) s += grad[guard + i * K + k];
            EXPECT_NEAR(s, 0.0, 1e-5) << "K = " << K;
        }
    }
}

// NaN in a row whose other elements share its vector lane (or part) only with −inf: the row's lse,
// loss and gradient are NaN, the rows around it untouched, and an all-masked row keeps lse = −inf.
// Rows: 0 finite; 1 all −inf but one NaN; 2 all −inf but a NaN at 0 and a finite target at K − 1
// (a lane of only −inf and NaN beside a lane with a finite maximum, whatever the lane split);
// 3 all −inf; 4 finite. Run for f32 (the vector path where the CPU has one) and f64 (portable).
template <class T>
void expect_nan_in_masked_lane_reaches_the_row(int64_t K) {
    const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
    const int64_t N = 5;
    std::vector<T> x(N * K, -inf);
    std::mt19937 rng(static_cast<unsigned>(K));
    std::normal_distribution<T> nd(T(0), T(2));
    for (int64_t k = 0; k < K; ++k) x[k] = nd(rng), x[4 * K + k] = nd(rng);
    x[1 * K + K / 2] = nan;
    x[2 * K + 0] = nan;
    x[2 * K + K - 1] = T(0.5);
    const std::vector<int64_t> y = {1, 0, K - 1, 0, 2};
    for (double eps : {0.0, 0.1}) {
        std::vector<T> loss(N), lse(N), grad(N * K);
        lsg::CrossEntropyIndexArgs a;
        a.dtype = std::is_same_v<T, double> ? lsg::DType::f64 : lsg::DType::f32;
        a.rows = N;
        a.classes = K;
        a.logits = x.data();
        a.target = y.data();
        a.label_smoothing = eps;
        a.row_loss = loss.data();
        a.lse = lse.data();
        a.grad = grad.data();
        lsg::cpu_loss_kernels().cross_entropy_index(lsg::kernel_context(lsg::Device::cpu()), a);
        const std::string at = "K = " + std::to_string(K) + ", eps = " + std::to_string(eps);
        for (int64_t i : {0, 4}) {
            EXPECT_TRUE(std::isfinite(lse[i]) && std::isfinite(loss[i])) << at << ", row " << i;
            for (int64_t k = 0; k < K; ++k) EXPECT_TRUE(std::isfinite(grad[i * K + k])) << at << ", row " << i;
        }
        for (int64_t i : {1, 2}) {
            EXPECT_TRUE(std::isnan(lse[i])) << at << ", row " << i << ": lse " << lse[i];
            EXPECT_TRUE(std::isnan(loss[i])) << at << ", row " << i << ": loss " << loss[i];
            for (int64_t k = 0; k < K; ++k) EXPECT_TRUE(std::isnan(grad[i * K + k])) << at << ", row " << i;
        }
        EXPECT_EQ(lse[3], -inf) << at;
    }
}

TEST(LossKernelsCpu, NaNInAMaskedLaneReachesTheRow) {
    for (int64_t K : {10, 16, 37, 1000}) {
        expect_nan_in_masked_lane_reaches_the_row<float>(K);
        expect_nan_in_masked_lane_reaches_the_row<double>(K);
    }
}

}  // namespace

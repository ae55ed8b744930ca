// The loss layer against the contract (LOSSES.md): its worked examples and identities, f64
// finite-difference gradients for every loss, reduction and option, adversarial logits,
// ignore_index semantics, bad input, determinism, and the fused kernel against composed ops.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "gradcheck.h"
#include "test_util.h"
#include "lsgrad/core/autograd.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/index.h"
#include "lsgrad/ops/loss.h"
#include "lsgrad/ops/reduce.h"
#include "lsgrad/nn/loss.h"

namespace {

using lsg::CrossEntropyOptions;
using lsg::DType;
using lsg::Reduction;
using lsg::Shape;
using lsg::Smoothing;
using lsg::Tensor;
using lsg::testing::gradcheck;

constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor f64(const std::vector<double>& v, Shape s, bool rg = false) {
    Tensor t = lsg::from_vector<double>(v, std::move(s));
    if (rg) t.requires_grad_();
    return t;
}
Tensor f32(const std::vector<float>& v, Shape s, bool rg = false) {
    Tensor t = lsg::from_vector<float>(v, std::move(s));
    if (rg) t.requires_grad_();
    return t;
}
Tensor idx(const std::vector<int64_t>& v) { return lsg::from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}); }

std::vector<double> randn(int64_t n, unsigned seed, double sd = 2.0) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd(0.0, sd);
    std::vector<double> v(static_cast<size_t>(n));
    for (auto& e : v) e = nd(rng);
    return v;
}
std::vector<int64_t> classes(int64_t n, int64_t K, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (auto& e : v) e = static_cast<int64_t>(rng() % static_cast<unsigned>(K));
    return v;
}
std::vector<float> to_f32(const std::vector<double>& v) { return {v.begin(), v.end()}; }

CrossEntropyOptions ce_opts(double eps = 0.0, Reduction r = Reduction::Mean) {
    CrossEntropyOptions o;
    o.label_smoothing = eps;
    o.reduction = r;
    return o;
}

// Per-row losses and the reduced value of index-target cross-entropy in double on the host,
// straight from the definition loss_i = Σ_k q_ik·w_k·(lse_i − x_ik).
struct RefCe {
    std::vector<double> rows;
    double sum = 0, denom = 0;
};
RefCe ref_ce(const std::vector<double>& x, const std::vector<int64_t>& y, int64_t K, const CrossEntropyOptions& o,
             const std::vector<double>& w = {}) {
    const int64_t N = static_cast<int64_t>(y.size());
    const double eps = o.label_smoothing;
    const int64_t pad = o.padding_idx.value_or(-1);
    RefCe r;
    r.rows.assign(static_cast<size_t>(N), 0.0);
    for (int64_t i = 0; i < N; ++i) {
        if (y[i] == o.ignore_index || y[i] == pad) continue;
        double m = -kInf, s = 0;
        for (int64_t k = 0; k < K; ++k) m = std::max(m, x[i * K + k]);
        for (int64_t k = 0; k < K; ++k) s += std::exp(x[i * K + k] - m);
        const double lse = m + std::log(s);
        double L = 0;
        for (int64_t k = 0; k < K; ++k) {
            double q;
            if (o.smoothing == Smoothing::Uniform)
                q = (k == y[i] ? 1 - eps : 0.0) + eps / K;
            else if (pad < 0)
                q = k == y[i] ? 1 - eps : eps / (K - 1);
            else
                q = k == pad ? 0.0 : (k == y[i] ? 1 - eps : eps / (K - 2));
            const double wk = w.empty() ? 1.0 : w[k];
            if (q * wk != 0) L += q * wk * (lse - x[i * K + k]);
        }
        r.rows[i] = L;
        r.sum += L;
        r.denom += w.empty() ? 1.0 : w[y[i]];
    }
    return r;
}

// ---- smoothed targets: the worked examples -----------------------------------------------------

TEST(LossSmoothTargets, OffTargetThreeClasses) {
    const auto q = lsg::smooth_targets(idx({0}), 3, 0.1, Smoothing::OffTarget).to_vector<float>();
    EXPECT_NEAR(q[0], 0.9, 1e-7);
    EXPECT_NEAR(q[1], 0.05, 1e-7);
    EXPECT_NEAR(q[2], 0.05, 1e-7);
}

TEST(LossSmoothTargets, UniformTwoClasses) {
    const auto q = lsg::smooth_targets(idx({1}), 2, 0.1, Smoothing::Uniform).to_vector<float>();
    EXPECT_NEAR(q[0], 0.05, 1e-7);
    EXPECT_NEAR(q[1], 0.95, 1e-7);
}

TEST(LossSmoothTargets, PaddingExample) {
    const auto q = lsg::smooth_targets(idx({2, 1, 0}), 5, 0.5, Smoothing::OffTarget, 0, DType::f64).to_vector<double>();
    const std::vector<double> expect = {0, 1. / 6, 1. / 2, 1. / 6, 1. / 6, 0, 1. / 2, 1. / 6, 1. / 6, 1. / 6,
                                        0, 0,      0,      0,      0};
    for (size_t i = 0; i < expect.size(); ++i) EXPECT_NEAR(q[i], expect[i], 1e-15) << i;
}

TEST(LossSmoothTargets, RowsSumToOne) {
    for (Smoothing s : {Smoothing::Uniform, Smoothing::OffTarget}) {
        const auto q = lsg::smooth_targets(idx({0, 3, 6}), 7, 0.3, s, std::nullopt, DType::f64).to_vector<double>();
        for (int i = 0; i < 3; ++i) {
            double sum = 0;
            for (int k = 0; k < 7; ++k) sum += q[i * 7 + k];
            EXPECT_NEAR(sum, 1.0, 1e-15);
        }
    }
}

// ---- cross-entropy: worked examples and identities ---------------------------------------------

// p = [0.8, 0.1, 0.1], OffTarget ε = 0.1, target 0: −(0.9·ln 0.8 + 0.05·ln 0.1 + 0.05·ln 0.1) ≈ 0.4311.
TEST(LossCrossEntropy, AnnotatedTransformerExample) {
    const Tensor x = f64({std::log(0.8), std::log(0.1), std::log(0.1)}, {1, 3});
    CrossEntropyOptions o = ce_opts(0.1);
    o.smoothing = Smoothing::OffTarget;
    const double loss = lsg::cross_entropy(x, idx({0}), o).item<double>();
    EXPECT_NEAR(loss, -(0.9 * std::log(0.8) + 0.1 * std::log(0.1)), 1e-12);
    EXPECT_NEAR(loss, 0.4311, 5e-5);
}

// (1 − ε)·NLL + ε·mean_k(−log p_k) = CE against the Uniform target = KL(q ‖ p) + H(q).
TEST(LossCrossEntropy, TimmIdentity) {
    const int64_t N = 6, K = 9;
    const double eps = 0.15;
    const Tensor x = f64(randn(N * K, 1), {N, K});
    const Tensor y = idx(classes(N, K, 2));
    const Tensor logp = lsg::log_softmax(x, 1);
    const double nll = lsg::nll_loss(logp, y).item<double>();
    const double smooth = -lsg::mean(logp).item<double>();
    const double timm = (1 - eps) * nll + eps * smooth;
    const double ce = lsg::cross_entropy(x, y, ce_opts(eps)).item<double>();
    const Tensor q = lsg::smooth_targets(y, K, eps, Smoothing::Uniform, std::nullopt, DType::f64);
    const double kl = lsg::kl_div(logp, q, Reduction::BatchMean).item<double>();
    const auto qv = q.to_vector<double>();
    double H = 0;
    for (double v : qv) H -= v * std::log(v);
    EXPECT_NEAR(ce, timm, 1e-12);
    EXPECT_NEAR(ce, kl + H / N, 1e-12);
}

// A PyTorch case: an index target with ε equals the explicit smoothed probability target.
TEST(LossCrossEntropy, IndexWithSmoothingEqualsProbabilityTarget) {
    const int64_t N = 5, K = 4;
    const Tensor x = f64(randn(N * K, 3), {N, K});
    const Tensor y = idx(classes(N, K, 4));
    for (Smoothing s : {Smoothing::Uniform, Smoothing::OffTarget})
        for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
            CrossEntropyOptions o = ce_opts(0.3, r);
            o.smoothing = s;
            const Tensor q = lsg::smooth_targets(y, K, 0.3, s, std::nullopt, DType::f64);
            const auto a = lsg::cross_entropy(x, y, o).to_vector<double>();
            const auto b = lsg::cross_entropy(x, q, ce_opts(0.0, r)).to_vector<double>();
            ASSERT_EQ(a.size(), b.size());
            for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12);
        }
}

// A PyTorch case: probability targets with ε use t(1 − ε) + ε/K.
TEST(LossCrossEntropy, ProbabilityTargetWithSmoothing) {
    const int64_t N = 3, K = 5;
    const auto xv = randn(N * K, 5);
    std::vector<double> tv(N * K);
    for (int i = 0; i < N * K; ++i) tv[i] = (i % 3) * 0.1;
    const double got = lsg::cross_entropy(f64(xv, {N, K}), f64(tv, {N, K}), ce_opts(0.2)).item<double>();
    double expect = 0;
    for (int i = 0; i < N; ++i) {
        double m = -kInf, s = 0;
        for (int k = 0; k < K; ++k) m = std::max(m, xv[i * K + k]);
        for (int k = 0; k < K; ++k) s += std::exp(xv[i * K + k] - m);
        for (int k = 0; k < K; ++k) expect -= (tv[i * K + k] * 0.8 + 0.2 / K) * (xv[i * K + k] - m - std::log(s));
    }
    EXPECT_NEAR(got, expect / N, 1e-12);
}

// PyTorch's weighted formula and the Mean denominator Σ w_y, in both conventions and with padding.
TEST(LossCrossEntropy, WeightedFormulaMatchesDefinition) {
    const int64_t N = 8, K = 6;
    const auto xv = randn(N * K, 6);
    auto yv = classes(N, K, 7);
    yv[3] = -100;
    yv[5] = 0;
    const std::vector<double> wv = {0.5, 2.0, 1.0, 0.25, 3.0, 1.5};
    for (int conv = 0; conv < 3; ++conv)
        for (double eps : {0.0, 0.2})
            for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
                CrossEntropyOptions o = ce_opts(eps, r);
                o.weight = f64(wv, {K});
                if (conv > 0) o.smoothing = Smoothing::OffTarget;
                if (conv == 2) o.padding_idx = 0;
                const RefCe ref = ref_ce(xv, yv, K, o, wv);
                const auto got = lsg::cross_entropy(f64(xv, {N, K}), idx(yv), o).to_vector<double>();
                if (r == Reduction::None) {
                    for (int i = 0; i < N; ++i) EXPECT_NEAR(got[i], ref.rows[i], 1e-12);
                } else {
                    EXPECT_NEAR(got[0], r == Reduction::Sum ? ref.sum : ref.sum / ref.denom, 1e-12);
                }
            }
}

// ---- ignore_index ------------------------------------------------------------------------------

TEST(LossCrossEntropy, IgnoredRowChangesNothing) {
    const int64_t N = 4, K = 5;
    auto xv = randn(N * K, 8);
    const std::vector<int64_t> yv = {1, -100, 3, 0};
    for (double eps : {0.0, 0.1}) {
        CrossEntropyOptions o = ce_opts(eps);
        o.weight = f64({1, 2, 3, 4, 5}, {K});
        Tensor a = f64(xv, {N, K}, true);
        const double la = lsg::cross_entropy(a, idx(yv), o).item<double>();
        lsg::cross_entropy(a, idx(yv), o).backward();
        auto xv2 = xv;
        for (int k = 0; k < K; ++k) xv2[K + k] = 1e3 * (k - 2);
        Tensor b = f64(xv2, {N, K}, true);
        const double lb = lsg::cross_entropy(b, idx(yv), o).item<double>();
        lsg::cross_entropy(b, idx(yv), o).backward();
        EXPECT_EQ(la, lb);
        const auto ga = a.grad().to_vector<double>(), gb = b.grad().to_vector<double>();
        for (size_t i = 0; i < ga.size(); ++i) EXPECT_EQ(ga[i], gb[i]);
        for (int k = 0; k < K; ++k) EXPECT_EQ(ga[K + k], 0.0);
        // Dropping the ignored row gives the same sum and mean.
        std::vector<double> xd;
        for (int i : {0, 2, 3})
            for (int k = 0; k < K; ++k) xd.push_back(xv[i * K + k]);
        EXPECT_NEAR(lsg::cross_entropy(f64(xd, {3, K}), idx({1, 3, 0}), o).item<double>(), la, 1e-14);
        o.reduction = Reduction::Sum;
        EXPECT_NEAR(lsg::cross_entropy(f64(xd, {3, K}), idx({1, 3, 0}), o).item<double>(),
                    lsg::cross_entropy(a, idx(yv), o).item<double>(), 1e-14);
    }
}

TEST(LossCrossEntropy, IgnoreIndexInsideClassRange) {
    CrossEntropyOptions o;
    o.ignore_index = 2;
    const Tensor x = f64(randn(6, 9), {2, 3});
    const double got = lsg::cross_entropy(x, idx({2, 1}), o).item<double>();
    const double only = lsg::cross_entropy(x.narrow(0, 1, 1), idx({1})).item<double>();
    EXPECT_NEAR(got, only, 1e-14);
}

// PyTorch gives NaN for a Mean over no rows (0/0). We give 0 and zero gradients, so that a batch
// made only of padding (common at the end of a sequence dataset) cannot poison a training run.
TEST(LossCrossEntropy, AllIgnoredGivesZeroNotNaN) {
    for (double eps : {0.0, 0.1})
        for (Reduction r : {Reduction::Mean, Reduction::Sum}) {
            Tensor x = f32(to_f32(randn(6, 10)), {2, 3}, true);
            const Tensor loss = lsg::cross_entropy(x, idx({-100, -100}), ce_opts(eps, r));
            EXPECT_EQ(loss.item<double>(), 0.0);
            loss.backward();
            for (float g : x.grad().to_vector<float>()) EXPECT_EQ(g, 0.0f);
        }
    // nll_loss follows the same rule.
    EXPECT_EQ(lsg::nll_loss(f64({-1, -2}, {1, 2}), idx({-100})).item<double>(), 0.0);
}

TEST(LossCrossEntropy, EmptyBatch) {
    const Tensor x = lsg::empty({0, 4});
    EXPECT_EQ(lsg::cross_entropy(x, lsg::empty({0}, {.dtype = DType::i64})).item<double>(), 0.0);
    EXPECT_EQ(lsg::cross_entropy(x, lsg::empty({0}, {.dtype = DType::i64}), ce_opts(0, Reduction::Sum)).item<double>(), 0.0);
    EXPECT_EQ(lsg::cross_entropy(x, lsg::empty({0}, {.dtype = DType::i64}), ce_opts(0, Reduction::None)).numel(), 0);
}

// ---- f64 gradient checks: every loss, every reduction, every option ----------------------------

TEST(LossGradcheck, CrossEntropyIndexEveryOption) {
    const int64_t N = 5, K = 6;
    const auto xv = randn(N * K, 11);
    auto yv = classes(N, K, 12);
    yv[1] = -100;
    yv[4] = 0;
    const std::vector<double> wv = {0.5, 2.0, 1.0, 0.25, 3.0, 1.5};
    for (int conv = 0; conv < 3; ++conv)
        for (double eps : {0.0, 0.15})
            for (bool weighted : {false, true})
                for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
                    CrossEntropyOptions o = ce_opts(eps, r);
                    if (weighted) o.weight = f64(wv, {K});
                    if (conv > 0) o.smoothing = Smoothing::OffTarget;
                    if (conv == 2) o.padding_idx = 0;
                    const Tensor x = f64(xv, {N, K}, true);
                    const Tensor y = idx(yv);
                    auto f = [&](const std::vector<Tensor>& in) { return lsg::cross_entropy(in[0], y, o); };
                    EXPECT_TRUE(gradcheck(f, {x})) << "conv " << conv << " eps " << eps << " w " << weighted
                                                   << " red " << static_cast<int>(r);
                    if (r != Reduction::None)
                        EXPECT_TRUE(gradcheck(f, {f64(xv, {N, K}, true)}, {.unit_upstream = true}));
                }
}

TEST(LossGradcheck, CrossEntropyProbabilityTargets) {
    const int64_t N = 4, K = 5;
    std::vector<double> tv = randn(N * K, 14, 1.0);
    for (auto& v : tv) v = std::abs(v);
    for (double eps : {0.0, 0.2})
        for (bool weighted : {false, true})
            for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
                CrossEntropyOptions o = ce_opts(eps, r);
                if (weighted) o.weight = f64({1, 2, 0.5, 1.5, 3}, {K});
                auto f = [&](const std::vector<Tensor>& in) { return lsg::cross_entropy(in[0], in[1], o); };
                EXPECT_TRUE(gradcheck(f, {f64(randn(N * K, 13), {N, K}, true), f64(tv, {N, K}, true)}));
            }
}

TEST(LossGradcheck, NllLoss) {
    const int64_t N = 5, K = 4;
    for (bool weighted : {false, true})
        for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
            lsg::NLLLossOptions o;
            o.reduction = r;
            if (weighted) o.weight = f64({1, 2, 0.5, 3}, {K});
            const Tensor y = idx({0, 3, -100, 1, 3});
            auto f = [&](const std::vector<Tensor>& in) { return lsg::nll_loss(in[0], y, o); };
            EXPECT_TRUE(gradcheck(f, {f64(randn(N * K, 15), {N, K}, true)}));
        }
}

TEST(LossGradcheck, KlDivEveryReductionAndLogTarget) {
    const int64_t N = 3, K = 4;
    std::vector<double> tv = randn(N * K, 17, 1.0);
    for (bool log_target : {false, true}) {
        std::vector<double> t = tv;
        for (auto& v : t) v = log_target ? -std::abs(v) : std::abs(v) + 0.1;
        for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::BatchMean}) {
            auto f = [&](const std::vector<Tensor>& in) { return lsg::kl_div(in[0], in[1], r, log_target); };
            EXPECT_TRUE(gradcheck(f, {f64(randn(N * K, 16), {N, K}, true), f64(t, {N, K}, true)}))
                << "log_target " << log_target << " red " << static_cast<int>(r);
        }
    }
}

TEST(LossGradcheck, SoftTargetCrossEntropy) {
    const int64_t N = 3, K = 5;
    for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
        const Tensor t = lsg::smooth_targets(idx({0, 4, 2}), K, 0.1, Smoothing::Uniform, std::nullopt, DType::f64);
        auto f = [&](const std::vector<Tensor>& in) { return lsg::soft_target_cross_entropy(in[0], t, r); };
        EXPECT_TRUE(gradcheck(f, {f64(randn(N * K, 18), {N, K}, true)}));
    }
}

TEST(LossGradcheck, BinaryCrossEntropyWithLogits) {
    const int64_t N = 3, C = 4;
    std::vector<double> tv = randn(N * C, 20, 1.0);
    for (auto& v : tv) v = v > 0 ? 1.0 : 0.0;
    tv[2] = 0.3;
    for (int variant = 0; variant < 4; ++variant)
        for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean}) {
            lsg::BCEWithLogitsOptions o;
            o.reduction = r;
            if (variant == 1) o.label_smoothing = 0.1;
            if (variant == 2) o.pos_weight = f64({0.5, 2, 1, 3}, {C});
            if (variant == 3) o.weight = f64({1, 0.5, 2}, {N, 1});
            auto f = [&](const std::vector<Tensor>& in) { return lsg::binary_cross_entropy_with_logits(in[0], in[1], o); };
            EXPECT_TRUE(gradcheck(f, {f64(randn(N * C, 19, 3.0), {N, C}, true), f64(tv, {N, C}, true)}))
                << "variant " << variant << " red " << static_cast<int>(r);
        }
}

TEST(LossGradcheck, DistillationLoss) {
    const int64_t N = 4, K = 5;
    const Tensor teacher = f64(randn(N * K, 21), {N, K});
    for (double eps : {0.0, 0.1}) {
        lsg::DistillationOptions o{.temperature = 2.5, .alpha = 0.7, .label_smoothing = eps};
        auto f = [&](const std::vector<Tensor>& in) { return lsg::distillation_loss(in[0], teacher, idx({0, 1, 4, 2}), o); };
        EXPECT_TRUE(gradcheck(f, {f64(randn(N * K, 22), {N, K}, true)}));
    }
}

// A loss used other than as the last op: its output scaled before backward.
TEST(LossCrossEntropy, UpstreamGradientScalesTheSavedGradient) {
    const auto xv = to_f32(randn(40, 23));
    Tensor a = f32(xv, {4, 10}, true), b = f32(xv, {4, 10}, true);
    lsg::cross_entropy(a, idx({1, 2, 3, 4}), ce_opts(0.1)).backward();
    (lsg::cross_entropy(b, idx({1, 2, 3, 4}), ce_opts(0.1)) * 3.0).backward();
    const auto ga = a.grad().to_vector<float>(), gb = b.grad().to_vector<float>();
    for (size_t i = 0; i < ga.size(); ++i) EXPECT_NEAR(gb[i], 3.0f * ga[i], 1e-7);
}

// ---- adversarial logits --------------------------------------------------------------------------

// f32 results against the double definition evaluated on the same f32 inputs.
void expect_matches_reference(const std::vector<float>& xv, const std::vector<int64_t>& yv, int64_t K,
                              const CrossEntropyOptions& o, double rtol) {
    const int64_t N = static_cast<int64_t>(yv.size());
    const std::vector<double> xd(xv.begin(), xv.end());
    const RefCe ref = ref_ce(xd, yv, K, o);
    CrossEntropyOptions none = o;
    none.reduction = Reduction::None;
    const auto got = lsg::cross_entropy(f32(xv, {N, K}), idx(yv), none).to_vector<float>();
    for (int64_t i = 0; i < N; ++i) EXPECT_NEAR(got[i], ref.rows[i], rtol * (1 + std::abs(ref.rows[i]))) << "row " << i;
}

TEST(LossAdversarial, HugeAndOutlierLogits) {
    const int64_t N = 6, K = 50;
    auto base = randn(N * K, 24);
    std::vector<float> pm100(N * K), outlier(N * K), big(N * K);
    for (int64_t i = 0; i < N * K; ++i) {
        pm100[i] = base[i] > 0 ? 100.f : -100.f;
        outlier[i] = static_cast<float>(base[i] * (i % 7 == 0 ? 20.0 : 1.0));
        big[i] = static_cast<float>(base[i] * 1e4);
    }
    for (double eps : {0.0, 0.1})
        for (const auto& xv : {pm100, outlier, big}) expect_matches_reference(xv, classes(N, K, 25), K, ce_opts(eps), 1e-5);
}

TEST(LossAdversarial, ShiftOf1e7) {
    const int64_t N = 4, K = 33;
    const auto base = randn(N * K, 26);
    std::vector<float> shifted(N * K);
    for (int64_t i = 0; i < N * K; ++i) shifted[i] = static_cast<float>(base[i] + 1e7);
    for (double eps : {0.0, 0.1}) expect_matches_reference(shifted, classes(N, K, 27), K, ce_opts(eps), 1e-5);
}

TEST(LossAdversarial, MaskedClasses) {
    const int64_t K = 20;
    auto xv = to_f32(randn(2 * K, 28));
    for (int k = 0; k < K; k += 3) xv[k] = xv[K + k] = -std::numeric_limits<float>::infinity();
    const std::vector<int64_t> yv = {1, 2};  // finite target logits
    // ε = 0: finite loss and gradient; ε > 0: the loss is +inf, the gradient stays finite.
    for (double eps : {0.0, 0.1}) {
        Tensor x = f32(xv, {2, K}, true);
        const Tensor loss = lsg::cross_entropy(x, idx(yv), ce_opts(eps));
        if (eps == 0.0)
            EXPECT_TRUE(std::isfinite(loss.item<double>()));
        else
            EXPECT_EQ(loss.item<double>(), kInf);
        loss.backward();
        for (float g : x.grad().to_vector<float>()) EXPECT_TRUE(std::isfinite(g));
    }
    expect_matches_reference(xv, yv, K, ce_opts(0.0), 1e-5);
}

TEST(LossAdversarial, NaNRowStaysInItsRow) {
    for (int64_t K : {10, 100}) {
        auto xv = to_f32(randn(3 * K, 29));
        xv[K + 3] = std::numeric_limits<float>::quiet_NaN();
        Tensor x = f32(xv, {3, K}, true);
        const auto rows = lsg::cross_entropy(x, idx({0, 1, 2}), ce_opts(0.1, Reduction::None));
        const auto rv = rows.to_vector<float>();
        EXPECT_TRUE(std::isfinite(rv[0]) && std::isnan(rv[1]) && std::isfinite(rv[2]));
        rows.backward(lsg::ones({3}));
        const auto g = x.grad().to_vector<float>();
        for (int64_t k = 0; k < K; ++k) {
            EXPECT_TRUE(std::isfinite(g[k]) && std::isfinite(g[2 * K + k]));
            EXPECT_TRUE(std::isnan(g[K + k]));
        }
    }
}

// The NaN sits in a vector lane (CPU) or a thread's part (CUDA) whose other logits are all −inf, so
// that part's running max stays −inf: row 1 masks every logit ≡ 3 (mod 16) and puts the NaN at 3
// (the lane split of the 16-wide CPU path), row 2 is −inf but a NaN at 0 and the finite target
// logit at K − 1 (any split into parts). Both rows are NaN in loss and gradient, for index and
// probability targets, in f32 and f64; rows 0 and 3 stay finite.
template <class T>
void expect_nan_in_masked_part_reaches_the_loss(int64_t K) {
    const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
    const auto base = randn(4 * K, 30);
    std::vector<T> xv(base.begin(), base.end());
    for (int64_t k = 3; k < K; k += 16) xv[K + k] = -inf;
    xv[K + 3] = nan;
    for (int64_t k = 0; k < K; ++k) xv[2 * K + k] = -inf;
    xv[2 * K] = nan;
    xv[2 * K + K - 1] = T(0.5);
    const std::vector<int64_t> yv = {0, 1, K - 1, 2};
    std::vector<T> onehot(4 * K, T(0));
    for (int64_t i = 0; i < 4; ++i) onehot[i * K + yv[i]] = T(1);
    const std::string at = "K = " + std::to_string(K) + (std::is_same_v<T, float> ? ", f32" : ", f64");
    auto check = [&](const Tensor& x, const Tensor& rows, const char* what) {
        rows.backward(lsg::ones({4}, {.dtype = x.dtype()}));
        const auto rv = rows.to_vector<T>();
        const auto g = x.grad().to_vector<T>();
        for (int64_t i : {0, 3}) {
            EXPECT_TRUE(std::isfinite(rv[i])) << what << ", " << at << ", row " << i;
            for (int64_t k = 0; k < K; ++k) EXPECT_TRUE(std::isfinite(g[i * K + k])) << what << ", " << at;
        }
        for (int64_t i : {1, 2}) {
            EXPECT_TRUE(std::isnan(rv[i])) << what << ", " << at << ", row " << i << ": loss " << rv[i];
            for (int64_t k = 0; k < K; ++k) EXPECT_TRUE(std::isnan(g[i * K + k])) << what << ", " << at;
        }
    };
    for (double eps : {0.0, 0.1}) {
        Tensor x = lsg::from_vector<T>(xv, {4, K}).requires_grad_();
        check(x, lsg::cross_entropy(x, idx(yv), ce_opts(eps, Reduction::None)), "index targets");
    }
    Tensor x = lsg::from_vector<T>(xv, {4, K}).requires_grad_();
    check(x, lsg::cross_entropy(x, lsg::from_vector<T>(onehot, {4, K}), ce_opts(0.0, Reduction::None)),
          "probability targets");
}

TEST(LossAdversarial, NaNInAMaskedPartReachesTheLoss) {
    for (int64_t K : {10, 37, 1000}) {
        expect_nan_in_masked_part_reaches_the_loss<float>(K);
        expect_nan_in_masked_part_reaches_the_loss<double>(K);
    }
}

// ---- the fused kernel against composed ops ---------------------------------------------------------

TEST(LossFused, EqualsLogSoftmaxGather) {
    for (int64_t K : {1, 2, 10, 15, 16, 17, 33, 1000, 1003, 32000}) {
        const int64_t N = K >= 1000 ? 9 : 70;
        const auto xv = to_f32(randn(N * K, static_cast<unsigned>(K)));
        const auto yv = classes(N, K, static_cast<unsigned>(K + 1));
        for (double eps : {0.0, 0.1}) {
            Tensor a = f32(xv, {N, K}, true), b = f32(xv, {N, K}, true);
            const Tensor fused = lsg::cross_entropy(a, idx(yv), ce_opts(eps));
            const Tensor logp = lsg::log_softmax(b, 1);
            const Tensor q = lsg::smooth_targets(idx(yv), K, eps);
            const Tensor composed = lsg::neg(lsg::sum(q * logp)) / static_cast<double>(N);
            EXPECT_NEAR(fused.item<double>(), composed.item<double>(), 2e-5 * (1 + std::abs(composed.item<double>())))
                << "K " << K;
            fused.backward();
            composed.backward();
            const auto ga = a.grad().to_vector<float>(), gb = b.grad().to_vector<float>();
            double worst = 0;
            for (size_t i = 0; i < ga.size(); ++i) worst = std::max(worst, std::abs(double(ga[i]) - gb[i]));
            EXPECT_LT(worst, 1e-6) << "K " << K << " eps " << eps;
        }
    }
}

// The f32 vector path against the f64 portable path (the same formulas, element by element).
TEST(LossFused, FloatPathEqualsDoublePath) {
    for (int64_t K : {3, 16, 31, 257}) {
        const int64_t N = 300;  // enough work to run on every thread
        const auto xd = randn(N * K, 30);
        auto yv = classes(N, K, 31);
        yv[7] = -100;
        const std::vector<double> wd = randn(K, 32, 1.0);
        for (int conv = 0; conv < 3; ++conv) {
            CrossEntropyOptions o = ce_opts(0.1, Reduction::Sum);
            if (conv > 0) o.smoothing = Smoothing::OffTarget;
            if (conv == 2) o.padding_idx = 1;
            std::vector<double> w(wd);
            for (auto& v : w) v = std::abs(v) + 0.1;
            o.weight = f64(w, {K});
            Tensor a = f64(xd, {N, K}, true);
            const Tensor la = lsg::cross_entropy(a, idx(yv), o);
            la.backward();
            o.weight = f32(to_f32(w), {K});
            Tensor b = f32(to_f32(xd), {N, K}, true);
            const Tensor lb = lsg::cross_entropy(b, idx(yv), o);
            lb.backward();
            EXPECT_NEAR(lb.item<double>(), la.item<double>(), 1e-5 * std::abs(la.item<double>()));
            const auto ga = a.grad().to_vector<double>();
            const auto gb = b.grad().to_vector<float>();
            for (size_t i = 0; i < ga.size(); ++i) ASSERT_NEAR(gb[i], ga[i], 2e-6 * (1 + std::abs(ga[i]))) << i;
        }
    }
}

// K ≤ 16 runs sixteen rows at a time on AVX-512 and declines blocks holding a NaN, a +inf or an
// all −inf row to the row path: every row's loss and gradient on every instruction set equal the
// portable path's (NaN where NaN), with ignored and padding-target rows, −inf masks and each of
// those rows in a different block, plus tail rows after the last full block.
TEST(LossFused, SmallKBlocksEqualPortablePath) {
    constexpr float inf = std::numeric_limits<float>::infinity();
    for (int64_t K : {1, 2, 5, 10, 16}) {
        const int64_t N = 16 * 6 + 7;
        std::vector<float> xv = to_f32(randn(N * K, unsigned(40 + K), 4.0));
        std::vector<int64_t> yv = classes(N, K, unsigned(50 + K));
        for (int64_t i = 0; i < N; i += 5) xv[size_t(i * K + (i / 5) % K)] -= 200.0f;  // spread past the exp floor
        if (K > 2)
            for (int64_t i = 1; i < N; i += 3) xv[size_t(i * K + (yv[size_t(i)] + 1) % K)] = -inf;  // masked class
        xv[size_t(17 * K)] = NAN;                                                            // block 1
        xv[size_t(35 * K + K - 1)] = inf;                                                    // block 2
        for (int64_t k = 0; k < K; ++k) xv[size_t(50 * K + k)] = -inf;                       // block 3
        yv[3] = -100;
        yv[70] = -100;
        for (int smoothing = 0; smoothing < 3; ++smoothing)
            for (bool weighted : {false, true})
                for (bool padded : {false, true}) {
                    if ((padded || smoothing == 2) && K < 3) continue;
                    if (padded && smoothing != 2) continue;  // padding is a rule of the off-target convention
                    CrossEntropyOptions o = ce_opts(smoothing == 0 ? 0.0 : 0.1, Reduction::None);
                    if (smoothing == 2) o.smoothing = Smoothing::OffTarget;
                    if (padded) o.padding_idx = K - 1;
                    std::vector<float> w(static_cast<size_t>(K));
                    for (int64_t k = 0; k < K; ++k) w[size_t(k)] = 0.25f + 0.5f * float(k % 4);
                    if (weighted) o.weight = f32(w, {K});
                    std::vector<int64_t> y = yv;
                    if (padded) y[90] = K - 1;
                    auto run = [&](lsg::detail::CpuIsa isa) {
                        lsg::testing::CpuIsaScope scope(isa);
                        Tensor x = f32(xv, {N, K}, true);
                        const Tensor loss = lsg::cross_entropy(x, idx(y), o);
                        lsg::sum(loss).backward();
                        return std::make_pair(loss.to_vector<float>(), x.grad().to_vector<float>());
                    };
                    const auto ref = run(lsg::detail::CpuIsa::portable);
                    for (lsg::detail::CpuIsa isa : lsg::testing::supported_cpu_isas()) {
                        SCOPED_TRACE(std::string(lsg::detail::cpu_isa_name(isa)) + " K=" + std::to_string(K) +
                                     " smoothing=" + std::to_string(smoothing) + " weighted=" +
                                     std::to_string(weighted) + " padded=" + std::to_string(padded));
                        const auto got = run(isa);
                        auto same = [](float a, float b, double tol) {
                            if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
                            if (std::isinf(a) || std::isinf(b)) return a == b;
                            return std::abs(double(a) - double(b)) <= tol * (1.0 + std::abs(double(b)));
                        };
                        for (size_t i = 0; i < ref.first.size(); ++i)
                            ASSERT_TRUE(same(got.first[i], ref.first[i], 2e-6))
                                << "row " << i << ": loss " << got.first[i] << " vs " << ref.first[i];
                        for (size_t i = 0; i < ref.second.size(); ++i)
                            ASSERT_TRUE(same(got.second[i], ref.second[i], 2e-6))
                                << "row " << i / size_t(K) << ", class " << i % size_t(K) << ": gradient "
                                << got.second[i] << " vs " << ref.second[i];
                    }
                }
    }
}

TEST(LossFused, DeterministicAtFixedThreadCount) {
    const int64_t N = 512, K = 1000;
    const auto xv = to_f32(randn(N * K, 33));
    const auto yv = classes(N, K, 34);
    auto run = [&] {
        Tensor x = f32(xv, {N, K}, true);
        const Tensor loss = lsg::cross_entropy(x, idx(yv), ce_opts(0.1));
        loss.backward();
        return std::make_pair(loss.item<float>(), x.grad().to_vector<float>());
    };
    const auto a = run(), b = run();
    EXPECT_EQ(std::memcmp(&a.first, &b.first, sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(a.second.data(), b.second.data(), a.second.size() * sizeof(float)), 0);
}

TEST(LossFused, NoGradientNoGradientBuffer) {
    const Tensor x = f32(to_f32(randn(20, 35)), {2, 10});
    const Tensor loss = lsg::cross_entropy(x, idx({1, 2}));
    EXPECT_EQ(loss.grad_fn(), nullptr);
    Tensor xr = f32(to_f32(randn(20, 35)), {2, 10}, true);
    lsg::NoGradGuard ng;
    EXPECT_EQ(lsg::cross_entropy(xr, idx({1, 2})).grad_fn(), nullptr);
}

// ---- KL divergence, BCE, distillation ---------------------------------------------------------------

TEST(LossKlDiv, XlogySemanticsAndReductions) {
    const Tensor input = f64({-kInf, std::log(0.5), std::log(0.5), -kInf}, {2, 2});
    const Tensor t = f64({0.0, 1.0, 0.5, 0.0}, {2, 2});
    const auto pw = lsg::kl_div(input, t, Reduction::None).to_vector<double>();
    EXPECT_EQ(pw[0], 0.0);  // PyTorch: NaN
    EXPECT_NEAR(pw[1], std::log(2.0), 1e-15);
    EXPECT_EQ(pw[3], 0.0);
    const double sum = lsg::kl_div(input, t, Reduction::Sum).item<double>();
    EXPECT_NEAR(lsg::kl_div(input, t).item<double>(), sum / 2, 1e-15);
    EXPECT_NEAR(lsg::kl_div(input, t, Reduction::Mean).item<double>(), sum / 4, 1e-15);
    const Tensor logt = f64({-kInf, 0.0, std::log(0.5), -kInf}, {2, 2});
    EXPECT_NEAR(lsg::kl_div(input, logt, Reduction::Sum, true).item<double>(), sum, 1e-15);
}

TEST(LossBce, StableAndSmoothedAsKeras) {
    const Tensor x = f64({100, -100, 0.5, -3}, {4});
    const Tensor t = f64({1, 1, 0, 0.25}, {4});
    const auto got = lsg::binary_cross_entropy_with_logits(x, t, {.reduction = Reduction::None}).to_vector<double>();
    EXPECT_NEAR(got[0], std::exp(-100.0), 1e-50);
    EXPECT_NEAR(got[1], 100.0, 1e-12);
    lsg::BCEWithLogitsOptions o{.label_smoothing = 0.2, .reduction = Reduction::None};
    const auto sm = lsg::binary_cross_entropy_with_logits(x, t, o).to_vector<double>();
    const double ts = 0 * 0.8 + 0.1, s = 1 / (1 + std::exp(-0.5));
    EXPECT_NEAR(sm[2], -(ts * std::log(s) + (1 - ts) * std::log(1 - s)), 1e-14);
}

TEST(LossDistillation, EqualsDefinition) {
    const int64_t N = 3, K = 4;
    const auto sv = randn(N * K, 36), tv = randn(N * K, 37);
    const double T = 2.0, alpha = 0.6;
    const double got = lsg::distillation_loss(f64(sv, {N, K}), f64(tv, {N, K}), idx({0, 3, 1}),
                                              {.temperature = T, .alpha = alpha, .label_smoothing = 0.1})
                           .item<double>();
    double kl = 0;
    for (int i = 0; i < N; ++i) {
        double ms = -kInf, mt = -kInf, ss = 0, st = 0;
        for (int k = 0; k < K; ++k) ms = std::max(ms, sv[i * K + k] / T), mt = std::max(mt, tv[i * K + k] / T);
        for (int k = 0; k < K; ++k) ss += std::exp(sv[i * K + k] / T - ms), st += std::exp(tv[i * K + k] / T - mt);
        for (int k = 0; k < K; ++k) {
            const double lq = tv[i * K + k] / T - mt - std::log(st), lp = sv[i * K + k] / T - ms - std::log(ss);
            kl += std::exp(lq) * (lq - lp);
        }
    }
    const double ce = lsg::cross_entropy(f64(sv, {N, K}), idx({0, 3, 1}), ce_opts(0.1)).item<double>();
    EXPECT_NEAR(got, alpha * T * T * kl / N + (1 - alpha) * ce, 1e-12);
}

// ---- modules -----------------------------------------------------------------------------------------

TEST(LossModules, LabelSmoothingReproducesAnnotatedTransformer) {
    // The reference module: true_dist = ε/(size − 2), confidence on the class, 0 on padding, padding
    // rows zeroed; KLDivLoss(reduction="sum")(x, true_dist).
    lsg::nn::LabelSmoothing crit(5, 0, 0.4);
    const std::vector<double> p = {0.1, 0.2, 0.5, 0.1, 0.1};
    std::vector<double> lp;
    for (int i = 0; i < 3; ++i)
        for (double v : p) lp.push_back(std::log(v));
    const std::vector<int64_t> y = {2, 1, 0};
    const double got = crit(f64(lp, {3, 5}), idx(y)).item<double>();
    double expect = 0;
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 5; ++k) {
            double q = k == 0 || y[i] == 0 ? 0.0 : (k == y[i] ? 0.6 : 0.4 / 3);
            if (q > 0) expect += q * (std::log(q) - lp[i * 5 + k]);
        }
    EXPECT_NEAR(got, expect, 1e-12);
    const auto td = crit.true_dist().to_vector<double>();
    EXPECT_NEAR(td[2], 0.6, 1e-15);
    EXPECT_EQ(td[0], 0.0);
    for (int k = 0; k < 5; ++k) EXPECT_EQ(td[10 + k], 0.0);
}

TEST(LossModules, ModulesCallTheirFunctions) {
    const Tensor x = f64(randn(12, 38), {3, 4});
    const Tensor y = idx({0, 3, 1});
    EXPECT_EQ(lsg::nn::CrossEntropyLoss(ce_opts(0.1))(x, y).item<double>(),
              lsg::cross_entropy(x, y, ce_opts(0.1)).item<double>());
    const Tensor lp = lsg::log_softmax(x, 1);
    EXPECT_EQ(lsg::nn::NLLLoss()(lp, y).item<double>(), lsg::nll_loss(lp, y).item<double>());
    const Tensor q = lsg::smooth_targets(y, 4, 0.1, Smoothing::Uniform, std::nullopt, DType::f64);
    EXPECT_EQ(lsg::nn::KLDivLoss()(lp, q).item<double>(), lsg::kl_div(lp, q).item<double>());
    EXPECT_EQ(lsg::nn::SoftTargetCrossEntropy()(x, q).item<double>(), lsg::soft_target_cross_entropy(x, q).item<double>());
    EXPECT_NEAR(lsg::nn::SoftTargetCrossEntropy()(x, q).item<double>(),
                lsg::cross_entropy(x, y, ce_opts(0.1)).item<double>(), 1e-12);
    const Tensor t = f64({1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1}, {3, 4});
    EXPECT_EQ(lsg::nn::BCEWithLogitsLoss()(x, t).item<double>(), lsg::binary_cross_entropy_with_logits(x, t).item<double>());
    EXPECT_EQ(lsg::nn::DistillationLoss()(x, lp, y).item<double>(), lsg::distillation_loss(x, lp, y).item<double>());
}

// ---- bad input: every message names the bad value ---------------------------------------------------

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
        ADD_FAILURE() << "no lsg::Error thrown";
    } catch (const lsg::Error& e) {
        for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
    }
}

TEST(LossErrors, BadInputNamesTheValue) {
    const Tensor x = f32(to_f32(randn(12, 39)), {3, 4});
    const Tensor y = idx({0, 1, 2});
    expect_error([&] { lsg::cross_entropy(x, idx({0, 7, 1})); }, {"cross_entropy", "target 7", "row 1", "[0, 4)"});
    expect_error([&] { lsg::cross_entropy(x, idx({0, -1, 1})); }, {"target -1", "row 1"});
    expect_error([&] { lsg::cross_entropy(x, y, ce_opts(-0.1)); }, {"cross_entropy", "label_smoothing", "-0.1"});
    expect_error([&] { lsg::cross_entropy(x, y, ce_opts(1.5)); }, {"1.5"});
    expect_error([&] { lsg::cross_entropy(x, y, ce_opts(std::nan(""))); }, {"label_smoothing", "nan"});
    CrossEntropyOptions off = ce_opts(0.1);
    off.smoothing = Smoothing::OffTarget;
    expect_error([&] { lsg::cross_entropy(f32({1, 2}, {2, 1}), idx({0, 0}), off); }, {"OffTarget", "K = 1"});
    off.padding_idx = 0;
    expect_error([&] { lsg::cross_entropy(f32({1, 2}, {1, 2}), idx({1}), off); }, {"padding", "K = 2"});
    CrossEntropyOptions uni_pad;
    uni_pad.padding_idx = 0;
    expect_error([&] { lsg::cross_entropy(x, y, uni_pad); }, {"padding_idx", "OffTarget"});
    expect_error([&] { lsg::cross_entropy(x, idx({0, 1})); }, {"[3]", "[2]"});
    CrossEntropyOptions w;
    w.weight = f32({1, 2, 3}, {3});
    expect_error([&] { lsg::cross_entropy(x, y, w); }, {"weight", "[4]", "[3]"});
    w.weight = f64({1, 2, 3, 4}, {4});
    expect_error([&] { lsg::cross_entropy(x, y, w); }, {"weight", "float64"});
    expect_error([&] { lsg::cross_entropy(lsg::from_vector<int64_t>({1, 2}, {1, 2}), idx({0})); }, {"float32", "int64"});
    expect_error([&] { lsg::cross_entropy(x, f64(randn(12, 1), {3, 4})); }, {"float64", "float32"});
    expect_error([&] { lsg::cross_entropy(x, f32(to_f32(randn(8, 1)), {2, 4})); }, {"[3, 4]", "[2, 4]"});
    expect_error([&] { lsg::cross_entropy(f32({1, 2, 3}, {3}), idx({0})); }, {"[N, K]", "[3]"});
    expect_error([&] { lsg::nll_loss(x, idx({0, 9, 1})); }, {"nll_loss", "target 9", "row 1"});
    expect_error([&] { lsg::kl_div(x, f32({1, 2}, {2})); }, {"kl_div", "[3, 4]", "[2]"});
    expect_error([&] { lsg::binary_cross_entropy_with_logits(x, x, {.label_smoothing = 2.0}); }, {"label_smoothing", "2"});
    expect_error([&] { lsg::binary_cross_entropy_with_logits(x, x, {.pos_weight = f32({1, 2}, {2})}); }, {"pos_weight", "[4]", "[2]"});
    expect_error([&] { lsg::distillation_loss(x, x, y, {.temperature = 0.0}); }, {"temperature", "0"});
    expect_error([&] { lsg::distillation_loss(x, x, y, {.alpha = 2.0}); }, {"alpha", "2"});
    expect_error([&] { lsg::smooth_targets(idx({0, 5}), 4, 0.1); }, {"smooth_targets", "target 5", "row 1"});
    if (!lsg::cuda_is_available())
        expect_error([&] { lsg::cross_entropy(x, y.to(lsg::Device::cuda())); }, {"cuda"});
}

}  // namespace

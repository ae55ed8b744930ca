// mixup_targets against timm's mixup_target formula (tests/golden/mixup.json, replicated with torch)
// and by hand; the nn::Mixup transform: λ = 1 leaves the batch untouched, seeding, mixup and CutMix
// pixels, the corrected λ of a clipped box, pair and elem modes, Beta draws, and bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"
#include "lsgrad/nn/mixup.h"
#include "lsgrad/ops/mixup.h"
#include "test_util.h"

namespace {

using lsg::testing::error_of;
using json = nlohmann::json;
using lsg::Tensor;
using lsg::nn::Mixup;
using lsg::nn::MixupMode;
using lsg::nn::MixupOptions;

Tensor labels(const std::vector<int64_t>& y) { return lsg::from_vector<int64_t>(y, {static_cast<int64_t>(y.size())}); }

// ---- mixup_targets ---------------------------------------------------------------------------

TEST(Mixup, TargetsMatchTimmFormula) {
    std::ifstream in(std::string(LSGRAD_GOLDEN_DIR) + "/mixup.json");
    ASSERT_TRUE(in) << "cannot open mixup.json";
    const json doc = json::parse(in);
    ASSERT_GE(doc["cases"].size(), 7u);
    for (const json& c : doc["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        const auto y = c["target"].get<std::vector<int64_t>>();
        const int64_t k = c["num_classes"];
        const double eps = c["label_smoothing"];
        Tensor q;
        if (c["lam"].is_array()) {
            const auto lam = c["lam"].get<std::vector<double>>();
            q = lsg::mixup_targets(labels(y), k, lsg::from_vector<double>(lam, {static_cast<int64_t>(lam.size())}), eps,
                                   lsg::DType::f64);
        } else {
            q = lsg::mixup_targets(labels(y), k, c["lam"].get<double>(), eps, lsg::DType::f64);
        }
        ASSERT_EQ(q.shape(), (lsg::Shape{static_cast<int64_t>(y.size()), k}));
        const auto ours = q.to_vector<double>();
        const auto ref = c["expected"].get<std::vector<double>>();
        ASSERT_EQ(ours.size(), ref.size());
        for (size_t j = 0; j < ref.size(); ++j) EXPECT_NEAR(ours[j], ref[j], 1e-12) << "entry " << j;
    }
}

// y = [0, 1, 2], K = 3, λ = 0.7, ε = 0.3 (off = 0.1, on = 0.8): row 0 pairs with row 2,
//   0.7·[0.8, 0.1, 0.1] + 0.3·[0.1, 0.1, 0.8] = [0.59, 0.10, 0.31]; row 1 pairs with itself: [0.1, 0.8, 0.1].
TEST(Mixup, TargetsByHand) {
    const auto q = lsg::mixup_targets(labels({0, 1, 2}), 3, 0.7, 0.3).to_vector<float>();
    const std::vector<float> expect = {0.59f, 0.10f, 0.31f, 0.10f, 0.80f, 0.10f, 0.31f, 0.10f, 0.59f};
    for (size_t j = 0; j < expect.size(); ++j) EXPECT_NEAR(q[j], expect[j], 1e-6) << "entry " << j;
}

TEST(Mixup, TargetRowsSumToOne) {
    const Tensor y = labels({3, 0, 9, 9, 1, 4, 7});
    for (double lam : {0.0, 0.13, 0.5, 1.0})
        for (double eps : {0.0, 0.1, 1.0}) {
            const Tensor q = lsg::mixup_targets(y, 10, lam, eps);
            EXPECT_EQ(q.dtype(), lsg::DType::f32);
            const auto v = q.to_vector<float>();
            for (int64_t i = 0; i < 7; ++i) {
                const double s = std::accumulate(v.begin() + i * 10, v.begin() + (i + 1) * 10, 0.0);
                EXPECT_NEAR(s, 1.0, 1e-6) << "lam " << lam << " eps " << eps << " row " << i;
            }
        }
}

TEST(Mixup, TargetsPerRowLambdaAcceptsNAndNx1) {
    const Tensor y = labels({0, 1, 2, 3});
    const std::vector<double> lam = {0.9, 0.2, 0.6, 1.0};
    const auto a = lsg::mixup_targets(y, 4, lsg::from_vector<double>(lam, {4}), 0.0).to_vector<float>();
    const auto b = lsg::mixup_targets(y, 4, lsg::from_vector<double>(lam, {4, 1}), 0.0).to_vector<float>();
    EXPECT_EQ(a, b);
    // Row 1 (λ = 0.2) pairs with row 2: 0.2 on class 1, 0.8 on class 2.
    EXPECT_NEAR(a[1 * 4 + 1], 0.2f, 1e-7);
    EXPECT_NEAR(a[1 * 4 + 2], 0.8f, 1e-7);
}

TEST(Mixup, TargetErrors) {
    const Tensor y = labels({0, 4, 1});
    EXPECT_NE(error_of([&] { lsg::mixup_targets(y, 4, 0.5); }).find("target 4 of row 1"), std::string::npos);
    EXPECT_NE(error_of([&] { lsg::mixup_targets(y, 5, 1.5); }).find("lambda 1.5"), std::string::npos);
    EXPECT_THROW(lsg::mixup_targets(y, 5, -0.1), lsg::Error);
    EXPECT_NE(error_of([&] { lsg::mixup_targets(y, 5, 0.5, -0.1); }).find("label_smoothing"), std::string::npos);
    EXPECT_THROW(lsg::mixup_targets(y, 5, 0.5, 1.5), lsg::Error);
    EXPECT_THROW(lsg::mixup_targets(y, 0, 0.5), lsg::Error);
    EXPECT_THROW(lsg::mixup_targets(lsg::from_vector<float>({0.f, 1.f}, {2}), 5, 0.5), lsg::Error);
    EXPECT_THROW(lsg::mixup_targets(lsg::from_vector<int64_t>({0, 1}, {1, 2}), 5, 0.5), lsg::Error);
    EXPECT_NE(error_of([&] { lsg::mixup_targets(y, 5, lsg::from_vector<double>({0.5, 0.5}, {2})); })
                  .find("one value per row"),
              std::string::npos);
    EXPECT_THROW(lsg::mixup_targets(y, 5, lsg::from_vector<int64_t>({1, 1, 1}, {3})), lsg::Error);
}

// ---- the Mixup transform -----------------------------------------------------------------------

// A batch [n, c, h, w] whose every element is distinct, so any pixel's origin can be read back.
Tensor batch(int64_t n, int64_t c, int64_t h, int64_t w) {
    std::vector<float> v(static_cast<size_t>(n * c * h * w));
    std::iota(v.begin(), v.end(), 0.0f);
    return lsg::from_vector<float>(v, {n, c, h, w});
}

MixupOptions opts(double mixup_alpha, double cutmix_alpha, MixupMode mode = MixupMode::Batch, uint64_t seed = 1) {
    MixupOptions o;
    o.mixup_alpha = mixup_alpha;
    o.cutmix_alpha = cutmix_alpha;
    o.mode = mode;
    o.num_classes = 5;
    o.seed = seed;
    return o;
}

// Expected pixel of row i after the transform, from the original batch and the reported λ / box.
void expect_row_mixed(const lsg::nn::MixupResult& r, const std::vector<float>& x, int64_t i, int64_t n, int64_t c,
                      int64_t h, int64_t w) {
    const auto out = r.input.to_vector<float>();
    const int64_t j = n - 1 - i, len = c * h * w;
    for (int64_t e = 0; e < len; ++e) {
        const int64_t y = (e / w) % h, xx = e % w;
        float want;
        if (r.lambda[i] == 1.0) {
            want = x[i * len + e];
        } else if (r.cutmix[i]) {
            const auto& b = r.boxes[i];
            const bool in_box = y >= b.y0 && y < b.y1 && xx >= b.x0 && xx < b.x1;
            want = in_box ? x[j * len + e] : x[i * len + e];
        } else {
            want = static_cast<float>(r.lambda[i] * x[i * len + e] + (1.0 - r.lambda[i]) * x[j * len + e]);
        }
        ASSERT_NEAR(out[i * len + e], want, 1e-4 * (1.0 + std::abs(want))) << "row " << i << ", element " << e;
    }
}

void expect_targets_follow_lambda(const lsg::nn::MixupResult& r, const Tensor& y, int64_t k, double eps) {
    const Tensor lam = lsg::from_vector<double>(r.lambda, {static_cast<int64_t>(r.lambda.size())});
    EXPECT_EQ(r.target.to_vector<float>(), lsg::mixup_targets(y, k, lam, eps).to_vector<float>());
}

TEST(Mixup, LambdaOneLeavesTheBatchUntouched) {
    const Tensor x = batch(4, 2, 3, 3);
    const Tensor y = labels({0, 1, 2, 3});
    MixupOptions o = opts(1.0, 1.0);
    o.prob = 0.0;
    Mixup never(o);
    const auto r = never(x, y);
    EXPECT_EQ(r.input.to_vector<float>(), x.to_vector<float>());
    EXPECT_EQ(r.lambda, std::vector<double>(4, 1.0));
    // Smoothing is off unless asked: the targets are one-hot.
    EXPECT_EQ(MixupOptions{}.label_smoothing, 0.0);
    EXPECT_EQ(r.target.to_vector<float>(), lsg::mixup_targets(y, 5, 1.0, 0.0).to_vector<float>());

    Mixup off(opts(1.0, 0.0));
    off.set_enabled(false);
    EXPECT_EQ(off(x, y).input.to_vector<float>(), x.to_vector<float>());
}

TEST(Mixup, SameSeedSameDraws) {
    const Tensor x = batch(6, 3, 8, 8);
    const Tensor y = labels({0, 1, 2, 3, 4, 0});
    for (MixupMode mode : {MixupMode::Batch, MixupMode::Pair, MixupMode::Elem}) {
        Mixup a(opts(0.8, 1.0, mode, 42)), b(opts(0.8, 1.0, mode, 42)), c(opts(0.8, 1.0, mode, 43));
        bool differs = false;
        for (int call = 0; call < 5; ++call) {
            const auto ra = a(x, y), rb = b(x, y), rc = c(x, y);
            EXPECT_EQ(ra.lambda, rb.lambda);
            EXPECT_EQ(ra.cutmix, rb.cutmix);
            for (size_t i = 0; i < ra.boxes.size(); ++i) {
                EXPECT_EQ(ra.boxes[i].y0, rb.boxes[i].y0);
                EXPECT_EQ(ra.boxes[i].x1, rb.boxes[i].x1);
            }
            EXPECT_EQ(ra.input.to_vector<float>(), rb.input.to_vector<float>());
            EXPECT_EQ(ra.target.to_vector<float>(), rb.target.to_vector<float>());
            differs = differs || ra.lambda != rc.lambda;
        }
        EXPECT_TRUE(differs) << "another seed gave the same five batches";
    }
}

TEST(Mixup, BatchMixupBlendsWithTheReversedBatch) {
    const int64_t n = 4, c = 2, h = 3, w = 3;
    const Tensor x = batch(n, c, h, w);
    const auto xv = x.to_vector<float>();
    const Tensor y = labels({0, 1, 2, 3});
    MixupOptions o = opts(1.0, 0.0);
    o.label_smoothing = 0.1;
    Mixup m(o);
    const auto r = m(x, y);
    ASSERT_LT(r.lambda[0], 1.0);
    for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(r.lambda[i], r.lambda[0]);
        EXPECT_FALSE(r.cutmix[i]);
        expect_row_mixed(r, xv, i, n, c, h, w);
    }
    expect_targets_follow_lambda(r, y, 5, 0.1);
    // The transform never writes into its input.
    EXPECT_EQ(x.to_vector<float>(), xv);
}

TEST(Mixup, CutMixBoxAreaMatchesCorrectedLambda) {
    const int64_t n = 4, c = 3, h = 7, w = 10;  // odd sides and a clipped box are both likely
    const Tensor x = batch(n, c, h, w);
    const auto xv = x.to_vector<float>();
    const Tensor y = labels({4, 3, 2, 1});
    Mixup m(opts(0.0, 1.0, MixupMode::Batch, 5));
    int cut = 0;
    for (int call = 0; call < 20; ++call) {
        const auto r = m(x, y);
        if (r.lambda[0] == 1.0) continue;
        ++cut;
        ASSERT_TRUE(r.cutmix[0]);
        const auto& b = r.boxes[0];
        EXPECT_TRUE(0 <= b.y0 && b.y0 <= b.y1 && b.y1 <= h && 0 <= b.x0 && b.x0 <= b.x1 && b.x1 <= w);
        EXPECT_DOUBLE_EQ(r.lambda[0], 1.0 - static_cast<double>(b.area()) / static_cast<double>(h * w));
        for (int64_t i = 0; i < n; ++i) expect_row_mixed(r, xv, i, n, c, h, w);
        expect_targets_follow_lambda(r, y, 5, 0.0);
    }
    EXPECT_GT(cut, 10);
}

// Without correct_lam, λ is the Beta draw itself; the box has sides ⌊sqrt(1 − λ)·(H, W)⌋ (rounded down
// to even, as timm's centre ± half-side) before clipping, so its area never exceeds (1 − λ)·H·W.
TEST(Mixup, CutMixWithoutCorrectionKeepsTheDrawnLambda) {
    const int64_t h = 32, w = 32;
    MixupOptions o = opts(0.0, 1.0, MixupMode::Elem, 9);
    o.correct_lam = false;
    Mixup m(o);
    const auto r = m(batch(8, 1, h, w), labels({0, 1, 2, 3, 4, 0, 1, 2}));
    for (size_t i = 0; i < r.lambda.size(); ++i) {
        if (r.lambda[i] == 1.0) continue;
        const double ratio = std::sqrt(1.0 - r.lambda[i]);
        EXPECT_LE(r.boxes[i].y1 - r.boxes[i].y0, static_cast<int64_t>(h * ratio)) << "row " << i;
        EXPECT_LE(r.boxes[i].x1 - r.boxes[i].x0, static_cast<int64_t>(w * ratio)) << "row " << i;
        EXPECT_LE(static_cast<double>(r.boxes[i].area()), (1.0 - r.lambda[i]) * h * w + 1e-9);
    }
}

TEST(Mixup, CutMixMinMaxBoxes) {
    const int64_t h = 20, w = 30;
    MixupOptions o = opts(0.0, 0.0, MixupMode::Elem, 3);
    o.cutmix_minmax = std::make_pair(0.2, 0.5);
    o.correct_lam = false;  // the min/max box always sets λ from its area, as timm
    Mixup m(o);
    const Tensor x = batch(6, 1, h, w);
    const auto r = m(x, labels({0, 1, 2, 3, 4, 0}));
    for (size_t i = 0; i < 6; ++i) {
        ASSERT_TRUE(r.cutmix[i]) << "row " << i;
        const auto& b = r.boxes[i];
        EXPECT_GE(b.y1 - b.y0, 4);
        EXPECT_LT(b.y1 - b.y0, 10);
        EXPECT_GE(b.x1 - b.x0, 6);
        EXPECT_LT(b.x1 - b.x0, 15);
        EXPECT_DOUBLE_EQ(r.lambda[i], 1.0 - static_cast<double>(b.area()) / (h * w));
        expect_row_mixed(r, x.to_vector<float>(), static_cast<int64_t>(i), 6, 1, h, w);
    }
}

TEST(Mixup, PairModeMixesBothRowsOfAPair) {
    const int64_t n = 6, c = 2, h = 4, w = 4;
    const Tensor x = batch(n, c, h, w);
    const auto xv = x.to_vector<float>();
    const Tensor y = labels({0, 1, 2, 3, 4, 0});
    Mixup m(opts(1.0, 1.0, MixupMode::Pair, 11));
    bool saw_mixup = false, saw_cutmix = false;
    for (int call = 0; call < 10; ++call) {
        const auto r = m(x, y);
        for (int64_t i = 0; i < n / 2; ++i) {
            const int64_t j = n - 1 - i;
            EXPECT_EQ(r.lambda[i], r.lambda[j]);
            EXPECT_EQ(r.cutmix[i], r.cutmix[j]);
            EXPECT_EQ(r.boxes[i].area(), r.boxes[j].area());
            expect_row_mixed(r, xv, i, n, c, h, w);
            expect_row_mixed(r, xv, j, n, c, h, w);
            if (r.lambda[i] != 1.0) (r.cutmix[i] ? saw_cutmix : saw_mixup) = true;
        }
        expect_targets_follow_lambda(r, y, 5, 0.0);
    }
    EXPECT_TRUE(saw_mixup && saw_cutmix);
    EXPECT_NE(error_of([&] { m(batch(5, 1, 2, 2), labels({0, 1, 2, 3, 4})); }).find("even"), std::string::npos);
}

TEST(Mixup, ElemModeDrawsPerRow) {
    const int64_t n = 8, c = 1, h = 5, w = 5;
    const Tensor x = batch(n, c, h, w);
    const auto xv = x.to_vector<float>();
    const Tensor y = labels({0, 1, 2, 3, 4, 0, 1, 2});
    Mixup m(opts(1.0, 0.0, MixupMode::Elem, 2));
    const auto r = m(x, y);
    std::vector<double> distinct = r.lambda;
    std::sort(distinct.begin(), distinct.end());
    EXPECT_EQ(std::unique(distinct.begin(), distinct.end()) - distinct.begin(), n) << "expected 8 different λ";
    for (int64_t i = 0; i < n; ++i) expect_row_mixed(r, xv, i, n, c, h, w);
    expect_targets_follow_lambda(r, y, 5, 0.0);
}

TEST(Mixup, SwitchProbChoosesCutMixOrMixup) {
    const Tensor x = batch(4, 1, 6, 6);
    const Tensor y = labels({0, 1, 2, 3});
    for (double sp : {0.0, 1.0}) {
        MixupOptions o = opts(1.0, 1.0, MixupMode::Elem, 4);
        o.switch_prob = sp;
        Mixup m(o);
        for (int call = 0; call < 5; ++call) {
            const auto r = m(x, y);
            for (size_t i = 0; i < 4; ++i) {
                if (r.lambda[i] != 1.0 || r.cutmix[i]) {
                    EXPECT_EQ(r.cutmix[i], sp == 1.0) << "row " << i;
                }
            }
        }
    }
}

// Beta(α, α) from two Gamma draws: mean 1/2, variance 1/(4(2α + 1)).
TEST(Mixup, LambdaIsBetaDistributed) {
    for (double alpha : {0.2, 1.0, 4.0}) {
        Mixup m(opts(alpha, 0.0, MixupMode::Elem, 17));
        const int64_t n = 4000;
        const auto r = m(lsg::zeros({n, 1}), lsg::zeros({n}, {.dtype = lsg::DType::i64}));
        double mean = 0.0, sq = 0.0;
        for (double l : r.lambda) mean += l;
        mean /= n;
        for (double l : r.lambda) sq += (l - mean) * (l - mean);
        const double var = sq / (n - 1), want = 1.0 / (4.0 * (2.0 * alpha + 1.0));
        EXPECT_NEAR(mean, 0.5, 0.03) << "alpha " << alpha;
        EXPECT_NEAR(var, want, 0.15 * want) << "alpha " << alpha;
    }
}

TEST(Mixup, OptionErrors) {
    MixupOptions o = opts(1.0, 0.0);
    o.num_classes = 0;
    EXPECT_NE(error_of([&] { Mixup m(o); }).find("num_classes"), std::string::npos);
    EXPECT_NE(error_of([] { Mixup m(opts(0.0, 0.0)); }).find("one of mixup_alpha"), std::string::npos);
    o = opts(1.0, 0.0);
    o.prob = 1.5;
    EXPECT_THROW(Mixup m(o), lsg::Error);
    o = opts(1.0, 0.0);
    o.switch_prob = -0.5;
    EXPECT_THROW(Mixup m(o), lsg::Error);
    o = opts(-1.0, 0.0);
    EXPECT_THROW(Mixup m(o), lsg::Error);
    o = opts(1.0, 0.0);
    o.label_smoothing = 2.0;
    EXPECT_THROW(Mixup m(o), lsg::Error);
    o = opts(1.0, 0.0);
    o.cutmix_minmax = std::make_pair(0.6, 0.3);
    EXPECT_NE(error_of([&] { Mixup m(o); }).find("cutmix_minmax"), std::string::npos);

    Mixup cut(opts(0.0, 1.0));
    EXPECT_NE(error_of([&] { cut(lsg::zeros({4, 3}), labels({0, 1, 2, 3})); }).find("CutMix needs"), std::string::npos);
    Mixup mix(opts(1.0, 0.0));
    EXPECT_THROW(mix(batch(4, 1, 2, 2), labels({0, 1, 2})), lsg::Error);
    EXPECT_THROW(mix(lsg::zeros({4, 2}, {.dtype = lsg::DType::i64}), labels({0, 1, 2, 3})), lsg::Error);
    EXPECT_NE(error_of([&] { mix(batch(2, 1, 2, 2), labels({0, 7})); }).find("target 7 of row 1"), std::string::npos);
}

}  // namespace

// Calibration: ECE against a hand-computed case and against the numpy reference in
// tests/golden/calibration.json, temperature scaling against a case whose answer is known exactly,
// against the fixture's float64 golden-section answer and against a brute-force grid; the SVG writer.
// The metrics beside ECE (equal-mass bins, MCE, RMS, classwise ECE, Brier, NLL) against hand-computed
// cases and against torchmetrics' formula restated in tests/golden/make_calibration_golden.py; vector
// scaling against cases whose optimum is known exactly; the reliability diagram rendered with
// rsvg-convert and checked for anything drawn outside its viewBox.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <regex>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/calibration.h"
#include "test_util.h"

namespace {

using lsg::testing::error_of;
using json = nlohmann::json;
using lsg::Tensor;

json fixture(const std::string& name = "calibration.json") {
    std::ifstream in(std::string(LSGRAD_GOLDEN_DIR) + "/" + name);
    EXPECT_TRUE(in) << "cannot open " << name;
    return in ? json::parse(in) : json::object();
}

Tensor probs_tensor(const std::vector<float>& p, int64_t n, int64_t k) { return lsg::from_vector<float>(p, {n, k}); }
Tensor labels_tensor(const std::vector<int64_t>& y) {
    return lsg::from_vector<int64_t>(y, {static_cast<int64_t>(y.size())});
}

// Five samples, five bins of width 0.2 (c is the max probability, "ok" whether its arg-max is the label):
//   c = 0.90 ok, 0.95 wrong  -> bin (0.8, 1.0]: acc 0.5, conf 0.925, gap 0.425, weight 2/5 -> 0.170
//   c = 0.70 ok, 0.65 wrong  -> bin (0.6, 0.8]: acc 0.5, conf 0.675, gap 0.175, weight 2/5 -> 0.070
//   c = 0.55 ok              -> bin (0.4, 0.6]: acc 1.0, conf 0.550, gap 0.450, weight 1/5 -> 0.090
// ECE = 0.170 + 0.070 + 0.090 = 0.330.
TEST(Calibration, EceHandComputed) {
    const Tensor p = probs_tensor({0.9f, 0.1f, 0.3f, 0.7f, 0.65f, 0.35f, 0.55f, 0.45f, 0.95f, 0.05f}, 5, 2);
    const lsg::CalibrationTable t = lsg::expected_calibration_error(p, labels_tensor({0, 1, 1, 0, 1}), 5);
    EXPECT_NEAR(t.ece, 0.33, 1e-6);
    ASSERT_EQ(t.bins.size(), 5u);
    EXPECT_EQ(t.bins[0].count + t.bins[1].count, 0);
    EXPECT_EQ(t.bins[2].count, 1);
    EXPECT_EQ(t.bins[3].count, 2);
    EXPECT_EQ(t.bins[4].count, 2);
    EXPECT_NEAR(t.bins[4].accuracy, 0.5, 1e-12);
    EXPECT_NEAR(t.bins[4].confidence, 0.925, 1e-6);
    EXPECT_NEAR(t.bins[2].accuracy, 1.0, 1e-12);
    EXPECT_DOUBLE_EQ(t.bins[3].lower, 0.6);
    EXPECT_DOUBLE_EQ(t.bins[3].upper, 0.8);
    EXPECT_NEAR(t.accuracy, 0.6, 1e-12);
    EXPECT_NEAR(t.confidence, (0.9 + 0.7 + 0.65 + 0.55 + 0.95) / 5, 1e-6);
    EXPECT_EQ(t.total, 5);
}

// A perfectly calibrated table: in each bin the accuracy equals the confidence.
TEST(Calibration, EceZeroWhenCalibrated) {
    // Four samples at confidence 0.75, three of them right; two at 1.0, both right.
    const Tensor p = probs_tensor({0.75f, 0.25f, 0.25f, 0.75f, 0.75f, 0.25f, 0.75f, 0.25f, 1.f, 0.f, 0.f, 1.f}, 6, 2);
    const auto t = lsg::expected_calibration_error(p, labels_tensor({0, 1, 0, 1, 0, 1}), 10);
    EXPECT_NEAR(t.ece, 0.0, 1e-12);
}

TEST(Calibration, EceMatchesNumpyReference) {
    const json doc = fixture();
    ASSERT_TRUE(doc.contains("cases"));
    ASSERT_GE(doc["cases"].size(), 6u);
    for (const json& c : doc["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        const int64_t n = c["N"], k = c["K"], bins = c["bins"];
        const auto t = lsg::expected_calibration_error(probs_tensor(c["probs"].get<std::vector<float>>(), n, k),
                                                       labels_tensor(c["labels"].get<std::vector<int64_t>>()), bins);
        EXPECT_NEAR(t.ece, c["ece"].get<double>(), 1e-12);
        ASSERT_EQ(t.bins.size(), c["table"].size());
        for (size_t b = 0; b < t.bins.size(); ++b) {
            const json& r = c["table"][b];
            EXPECT_EQ(t.bins[b].count, r["count"].get<int64_t>()) << "bin " << b;
            EXPECT_NEAR(t.bins[b].accuracy, r["accuracy"].get<double>(), 1e-12) << "bin " << b;
            EXPECT_NEAR(t.bins[b].confidence, r["confidence"].get<double>(), 1e-12) << "bin " << b;
            EXPECT_DOUBLE_EQ(t.bins[b].lower, r["lower"].get<double>());
            EXPECT_DOUBLE_EQ(t.bins[b].upper, r["upper"].get<double>());
        }
    }
}

// Confidence exactly on an edge goes to the bin below (lower < c ≤ upper); 0 goes to the first bin.
TEST(Calibration, EdgesBelongToTheLowerBin) {
    const Tensor p = probs_tensor({0.5f, 0.5f, 1.0f, 0.0f, 0.0f, 0.0f}, 3, 2);
    const auto t = lsg::expected_calibration_error(p, labels_tensor({0, 0, 0}), 4);
    EXPECT_EQ(t.bins[0].count, 1);  // c = 0
    EXPECT_EQ(t.bins[1].count, 1);  // c = 0.5 in (0.25, 0.5]
    EXPECT_EQ(t.bins[3].count, 1);  // c = 1 in (0.75, 1]
}

TEST(Calibration, EceAcceptsFloat64AndAgrees) {
    const std::vector<float> pf = {0.6f, 0.3f, 0.1f, 0.2f, 0.2f, 0.6f, 0.1f, 0.85f, 0.05f};
    const std::vector<double> pd(pf.begin(), pf.end());
    const Tensor y = labels_tensor({0, 1, 1});
    const auto a = lsg::expected_calibration_error(probs_tensor(pf, 3, 3), y, 15);
    const auto b = lsg::expected_calibration_error(lsg::from_vector<double>(pd, {3, 3}), y, 15);
    EXPECT_EQ(a.ece, b.ece);
}

TEST(Calibration, EceErrors) {
    const Tensor p = probs_tensor({0.6f, 0.4f, 0.3f, 0.7f}, 2, 2);
    EXPECT_NE(error_of([&] { lsg::expected_calibration_error(p, labels_tensor({0, 2}), 15); }).find("label 2 of row 1"),
              std::string::npos);
    EXPECT_NE(error_of([&] { lsg::expected_calibration_error(p, labels_tensor({-1, 0}), 15); }).find("label -1 of row 0"),
              std::string::npos);
    EXPECT_NE(error_of([&] { lsg::expected_calibration_error(p, labels_tensor({0, 1}), 0); }).find("bins"),
              std::string::npos);
    EXPECT_NE(error_of([&] { lsg::expected_calibration_error(p, labels_tensor({0}), 15); }).find("do not match"),
              std::string::npos);
    EXPECT_THROW(lsg::expected_calibration_error(p, lsg::from_vector<float>({0.f, 1.f}, {2}), 15), lsg::Error);
    EXPECT_THROW(lsg::expected_calibration_error(lsg::from_vector<float>({0.5f, 0.5f}, {2}), labels_tensor({0, 1}), 15),
                 lsg::Error);
    EXPECT_NE(error_of([&] {
                  lsg::expected_calibration_error(probs_tensor({1.5f, 0.f}, 1, 2), labels_tensor({0}), 15);
              }).find("outside [0, 1]"),
              std::string::npos);
    EXPECT_THROW(lsg::expected_calibration_error(probs_tensor({0.5f, NAN}, 1, 2), labels_tensor({0}), 15), lsg::Error);
    EXPECT_THROW(lsg::expected_calibration_error(lsg::empty({0, 3}), lsg::empty({0}, {.dtype = lsg::DType::i64}), 15),
                 lsg::Error);
}

// ---- temperature scaling ---------------------------------------------------------------------

// Groups of identical logit rows whose labels occur exactly in the proportions softmax(z) predicts:
// for every group NLL'(β = 1) = E_p[z] − mean(z_y) = 0, so T = 1 is the exact optimum for logits z,
// and for logits c·z the optimum is exactly T = c.
struct KnownTemperature {
    std::vector<float> logits;
    std::vector<int64_t> labels;
    int64_t k = 3;
};

KnownTemperature known_case(double c) {
    KnownTemperature d;
    // Label counts per group; the logits are c·log(count), so softmax(logits / c) = count / Σ count.
    const std::vector<std::vector<int>> groups = {{1, 2, 5}, {3, 1, 1}, {2, 2, 4}, {1, 6, 1}};
    for (const auto& counts : groups)
        for (int64_t cls = 0; cls < d.k; ++cls)
            for (int r = 0; r < counts[cls]; ++r) {
                for (int64_t j = 0; j < d.k; ++j) d.logits.push_back(static_cast<float>(c * std::log(counts[j])));
                d.labels.push_back(cls);
            }
    return d;
}

TEST(Calibration, FitTemperatureRecoversAKnownTemperature) {
    for (double c : {0.4, 1.0, 2.5, 7.0}) {
        const KnownTemperature d = known_case(c);
        const int64_t n = static_cast<int64_t>(d.labels.size());
        const double t = lsg::fit_temperature(probs_tensor(d.logits, n, d.k), labels_tensor(d.labels));
        EXPECT_NEAR(t, c, 1e-5 * c) << "scale " << c;
    }
}

// Mean NLL of softmax(z / T) in f64: the brute-force side of the comparison.
double nll_at(const std::vector<float>& z, const std::vector<int64_t>& y, int64_t k, double temp) {
    double total = 0.0;
    const size_t n = y.size();
    for (size_t i = 0; i < n; ++i) {
        double m = -INFINITY;
        for (int64_t j = 0; j < k; ++j) m = std::max(m, z[i * k + j] / temp);
        double s = 0.0;
        for (int64_t j = 0; j < k; ++j) s += std::exp(z[i * k + j] / temp - m);
        total += m + std::log(s) - z[i * k + y[i]] / temp;
    }
    return total / static_cast<double>(n);
}

TEST(Calibration, FitTemperatureMatchesGoldenSectionAndGrid) {
    const json doc = fixture();
    ASSERT_TRUE(doc.contains("temperature"));
    const json& c = doc["temperature"];
    const int64_t n = c["N"], k = c["K"];
    const auto z = c["logits"].get<std::vector<float>>();
    const auto y = c["labels"].get<std::vector<int64_t>>();
    const double t = lsg::fit_temperature(probs_tensor(z, n, k), labels_tensor(y));
    const double t_ref = c["temperature"];
    EXPECT_NEAR(t, t_ref, 1e-4 * t_ref);
    EXPECT_NEAR(nll_at(z, y, k, t), c["nll_at_temperature"].get<double>(), 1e-9);

    // Grid over [0.5, 6] in steps of 1e-3: the fit is within a step of the best grid point and
    // no grid point beats it.
    double best_t = 0.0, best = INFINITY;
    for (int s = 0; s <= 5500; ++s) {
        const double g = 0.5 + 1e-3 * s;
        const double v = nll_at(z, y, k, g);
        if (v < best) best = v, best_t = g;
    }
    EXPECT_NEAR(t, best_t, 1e-3);
    EXPECT_LE(nll_at(z, y, k, t), best + 1e-12);
}

TEST(Calibration, FitTemperatureFloat64Input) {
    const KnownTemperature d = known_case(1.7);
    const std::vector<double> z(d.logits.begin(), d.logits.end());
    const int64_t n = static_cast<int64_t>(d.labels.size());
    EXPECT_NEAR(lsg::fit_temperature(lsg::from_vector<double>(z, {n, d.k}), labels_tensor(d.labels)), 1.7, 1e-5);
}

TEST(Calibration, FitTemperatureErrors) {
    // Every sample right: the NLL falls all the way to T -> 0.
    EXPECT_NE(error_of([] {
                  lsg::fit_temperature(probs_tensor({2.f, 0.f, 0.f, 3.f}, 2, 2), labels_tensor({0, 1}));
              }).find("T -> 0"),
              std::string::npos);
    // Constant logits carry no information: the optimum is T -> ∞.
    EXPECT_NE(error_of([] {
                  lsg::fit_temperature(probs_tensor({1.f, 1.f, 1.f, 1.f}, 2, 2), labels_tensor({0, 1}));
              }).find("grows without bound"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  lsg::fit_temperature(probs_tensor({1.f, 0.f, 0.f, 1.f}, 2, 2), labels_tensor({0, 5}));
              }).find("label 5 of row 1"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  lsg::fit_temperature(probs_tensor({INFINITY, 0.f, 0.f, 1.f}, 2, 2), labels_tensor({0, 1}));
              }).find("not finite"),
              std::string::npos);
    EXPECT_THROW(lsg::fit_temperature(probs_tensor({1.f, 0.f}, 1, 2), labels_tensor({0, 1})), lsg::Error);
}

// ---- reliability diagram ---------------------------------------------------------------------

TEST(Calibration, ReliabilitySvgIsWrittenWhole) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("lsgrad_svg_" + std::to_string(std::random_device{}()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const Tensor p = probs_tensor({0.9f, 0.1f, 0.3f, 0.7f, 0.65f, 0.35f, 0.55f, 0.45f, 0.95f, 0.05f}, 5, 2);
    const auto t = lsg::expected_calibration_error(p, labels_tensor({0, 1, 1, 0, 1}), 5);
    const fs::path out = dir / "reliability.svg";
    {
        std::ofstream old(out);
        old << "stale";
    }
    lsg::write_reliability_svg(t, out.string(), "CNN <eps = 0.1> & T");
    std::ifstream in(out);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string svg = ss.str();
    EXPECT_EQ(svg.rfind("<svg", 0), 0u);
    EXPECT_NE(svg.find("</svg>"), std::string::npos);
    EXPECT_NE(svg.find(">CNN &lt;eps = 0.1&gt; &amp; T</text>"), std::string::npos);
    EXPECT_NE(svg.find("ECE 33.00 % · MCE 45.00 %"), std::string::npos);
    EXPECT_EQ(svg.find("stale"), std::string::npos);
    // Three non-empty bins: three accuracy bars, each with its tooltip.
    size_t bars = 0;
    for (size_t pos = 0; (pos = svg.find("samples, accuracy", pos)) != std::string::npos; ++pos) ++bars;
    EXPECT_EQ(bars, 3u);
    // Nothing but the diagram is left in the folder.
    EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);
    EXPECT_THROW(lsg::write_reliability_svg(t, (dir / "missing" / "x.svg").string(), "t"), lsg::Error);
    fs::remove_all(dir);
}

// ---- MCE, RMS, equal-mass bins ------------------------------------------------------------------

// The five samples of EceHandComputed: gaps 0.425, 0.175, 0.45 with weights 2/5, 2/5, 1/5, so
// MCE = 0.45 and RMS = √(0.4·0.425² + 0.4·0.175² + 0.2·0.45²) = √0.125.
const std::vector<float> kFive = {0.9f, 0.1f, 0.3f, 0.7f, 0.65f, 0.35f, 0.55f, 0.45f, 0.95f, 0.05f};
const std::vector<int64_t> kFiveLabels = {0, 1, 1, 0, 1};

TEST(Calibration, MceAndRmsHandComputed) {
    const auto t = lsg::expected_calibration_error(probs_tensor(kFive, 5, 2), labels_tensor(kFiveLabels), 5);
    EXPECT_NEAR(t.mce, 0.45, 1e-6);
    EXPECT_NEAR(t.rmsce, std::sqrt(0.125), 1e-6);
    EXPECT_EQ(t.binning, lsg::Binning::EqualWidth);
}

// Equal-mass, two bins: sorted confidences 0.55 ok, 0.65 wrong | 0.70 ok, 0.90 ok, 0.95 wrong
// (⌊5/2⌋ = 2 in the first run). Bin 0: acc 1/2, conf 0.6, gap 0.1, weight 2/5; bin 1: acc 2/3,
// conf 0.85, gap 0.18333, weight 3/5. ECE = 0.04 + 0.11 = 0.15; the edge between them is
// (0.65 + 0.70)/2 = 0.675.
TEST(Calibration, EqualMassHandComputed) {
    const auto t = lsg::expected_calibration_error(probs_tensor(kFive, 5, 2), labels_tensor(kFiveLabels), 2,
                                                   lsg::Binning::EqualMass);
    EXPECT_EQ(t.binning, lsg::Binning::EqualMass);
    ASSERT_EQ(t.bins.size(), 2u);
    EXPECT_EQ(t.bins[0].count, 2);
    EXPECT_EQ(t.bins[1].count, 3);
    EXPECT_NEAR(t.bins[0].accuracy, 0.5, 1e-12);
    EXPECT_NEAR(t.bins[1].accuracy, 2.0 / 3.0, 1e-12);
    EXPECT_NEAR(t.bins[0].confidence, 0.6, 1e-6);
    EXPECT_NEAR(t.bins[1].confidence, 0.85, 1e-6);
    EXPECT_EQ(t.bins[0].lower, 0.0);
    EXPECT_NEAR(t.bins[0].upper, 0.675, 1e-6);
    EXPECT_EQ(t.bins[1].lower, t.bins[0].upper);
    EXPECT_EQ(t.bins[1].upper, 1.0);
    EXPECT_NEAR(t.ece, 0.15, 1e-6);
    EXPECT_NEAR(t.mce, 0.55 / 3.0, 1e-6);
}

// More bins than samples: runs of ⌊(b+1)·N/B⌋ − ⌊b·N/B⌋ leave some empty; every sample is counted once.
TEST(Calibration, EqualMassMoreBinsThanSamples) {
    const auto t = lsg::expected_calibration_error(probs_tensor(kFive, 5, 2), labels_tensor(kFiveLabels), 8,
                                                   lsg::Binning::EqualMass);
    int64_t total = 0, empty = 0;
    for (const auto& b : t.bins) {
        total += b.count;
        empty += b.count == 0;
        EXPECT_LE(b.count, 1);
        EXPECT_LE(b.lower, b.upper);
    }
    EXPECT_EQ(total, 5);
    EXPECT_EQ(empty, 3);
    // One sample per bin: the ECE is the mean |hit − c| over c = 0.9 ok, 0.7 ok, 0.65 wrong, 0.55 ok,
    // 0.95 wrong.
    EXPECT_NEAR(t.ece, (0.1 + 0.3 + 0.65 + 0.45 + 0.95) / 5.0, 1e-6);
}

// ---- classwise ECE, Brier, NLL ----------------------------------------------------------------

// Class 0's column p_0 = 0.9 (y = 0), 0.3, 0.65, 0.55 (y = 0), 0.95 in five bins of 0.2:
//   (0.2, 0.4]: 0.3, not class 0 → gap 0.3, weight 1/5; (0.4, 0.6]: 0.55, class 0 → gap 0.45;
//   (0.6, 0.8]: 0.65 → gap 0.65; (0.8, 1]: 0.9 (class 0), 0.95 → acc 1/2, conf 0.925, gap 0.425, weight 2/5.
//   ece_0 = 0.06 + 0.09 + 0.13 + 0.17 = 0.45. Class 1 (p_1 = 1 − p_0) gives 0.45 the same way.
TEST(Calibration, ClasswiseHandComputed) {
    const auto c = lsg::classwise_calibration_error(probs_tensor(kFive, 5, 2), labels_tensor(kFiveLabels), 5);
    ASSERT_EQ(c.tables.size(), 2u);
    EXPECT_NEAR(c.tables[0].ece, 0.45, 1e-6);
    EXPECT_NEAR(c.tables[1].ece, 0.45, 1e-6);
    EXPECT_NEAR(c.ece, 0.45, 1e-6);
    EXPECT_NEAR(c.tables[0].accuracy, 2.0 / 5.0, 1e-12);  // frequency of class 0
    EXPECT_NEAR(c.tables[1].confidence, (0.1 + 0.7 + 0.35 + 0.45 + 0.05) / 5.0, 1e-6);
    EXPECT_EQ(c.tables[0].bins[1].count, 1);
    EXPECT_EQ(c.tables[0].bins[4].count, 2);
}

// Three classes where only class 2 is mis-calibrated: rows [0.5, 0.3, 0.2] (label 0) ×2, so classes
// 0/1/2 have columns 0.5 (right twice: gap 0.5), 0.3 (never: gap 0.3), 0.2 (never: gap 0.2).
TEST(Calibration, ClasswiseThreeClasses) {
    const auto c = lsg::classwise_calibration_error(probs_tensor({0.5f, 0.3f, 0.2f, 0.5f, 0.3f, 0.2f}, 2, 3),
                                                    labels_tensor({0, 0}), 10);
    EXPECT_NEAR(c.tables[0].ece, 0.5, 1e-6);
    EXPECT_NEAR(c.tables[1].ece, 0.3, 1e-6);
    EXPECT_NEAR(c.tables[2].ece, 0.2, 1e-6);
    EXPECT_NEAR(c.ece, (0.5 + 0.3 + 0.2) / 3.0, 1e-6);
}

// Brier: rows contribute 2·(1 − p_y)² for two classes: 0.02, 0.18, 0.845, 0.405, 1.805 → 3.255/5.
TEST(Calibration, BrierAndNllHandComputed) {
    const Tensor p = probs_tensor(kFive, 5, 2);
    const Tensor y = labels_tensor(kFiveLabels);
    EXPECT_NEAR(lsg::brier_score(p, y), 3.255 / 5.0, 1e-6);
    EXPECT_NEAR(lsg::negative_log_likelihood(p, y),
                -(std::log(0.9) + std::log(0.7) + std::log(0.35) + std::log(0.55) + std::log(0.05)) / 5.0, 1e-6);
    // Perfect one-hot predictions: Brier 0 and NLL 0; a zero on a label: NLL +inf.
    const Tensor hot = probs_tensor({1.f, 0.f, 0.f, 1.f}, 2, 2);
    EXPECT_EQ(lsg::brier_score(hot, labels_tensor({0, 1})), 0.0);
    EXPECT_EQ(lsg::negative_log_likelihood(hot, labels_tensor({0, 1})), 0.0);
    EXPECT_EQ(lsg::brier_score(hot, labels_tensor({1, 0})), 2.0);
    EXPECT_TRUE(std::isinf(lsg::negative_log_likelihood(hot, labels_tensor({1, 0}))));
}

// Against torchmetrics' formula (l1, l2, max norms, 15 or fewer equal-width bins) and the numpy
// references of equal-mass ECE, classwise ECE, Brier and NLL.
TEST(Calibration, MetricsMatchTorchmetricsFormulaAndNumpy) {
    const json doc = fixture("calibration_metrics.json");
    ASSERT_TRUE(doc.contains("cases"));
    ASSERT_EQ(doc["cases"].size(), 4u);
    for (const json& c : doc["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        const int64_t n = c["N"], k = c["K"], bins = c["bins"];
        const Tensor p = probs_tensor(c["probs"].get<std::vector<float>>(), n, k);
        const Tensor y = labels_tensor(c["labels"].get<std::vector<int64_t>>());
        const auto ew = lsg::expected_calibration_error(p, y, bins);
        EXPECT_NEAR(ew.ece, c["torchmetrics_l1"].get<double>(), 1e-12);
        EXPECT_NEAR(ew.rmsce, c["torchmetrics_l2"].get<double>(), 1e-12);
        EXPECT_NEAR(ew.mce, c["torchmetrics_max"].get<double>(), 1e-12);
        const auto em = lsg::expected_calibration_error(p, y, bins, lsg::Binning::EqualMass);
        EXPECT_NEAR(em.ece, c["ece_equal_mass"].get<double>(), 1e-12);
        EXPECT_NEAR(lsg::classwise_calibration_error(p, y, bins).ece, c["classwise_ece"].get<double>(), 1e-12);
        EXPECT_NEAR(lsg::brier_score(p, y), c["brier"].get<double>(), 1e-12);
        EXPECT_NEAR(lsg::negative_log_likelihood(p, y), c["nll"].get<double>(), 1e-12);
    }
}

TEST(Calibration, NewMetricsErrors) {
    const Tensor p = probs_tensor({0.6f, 0.4f, 0.3f, 0.7f}, 2, 2);
    const Tensor y = labels_tensor({0, 1});
    using Fn = std::function<void(const Tensor&, const Tensor&)>;
    const std::vector<std::pair<std::string, Fn>> fns = {
        {"lsg::classwise_calibration_error", [](const Tensor& a, const Tensor& b) { lsg::classwise_calibration_error(a, b); }},
        {"lsg::brier_score", [](const Tensor& a, const Tensor& b) { lsg::brier_score(a, b); }},
        {"lsg::negative_log_likelihood", [](const Tensor& a, const Tensor& b) { lsg::negative_log_likelihood(a, b); }},
        {"lsg::expected_calibration_error",
         [](const Tensor& a, const Tensor& b) { lsg::expected_calibration_error(a, b, 15, lsg::Binning::EqualMass); }},
    };
    for (const auto& entry : fns) {
        // Named copies: lambdas cannot capture structured bindings before clang 16.
        const std::string& name = entry.first;
        const Fn& fn = entry.second;
        SCOPED_TRACE(name);
        const auto msg = [&](const Tensor& a, const Tensor& b) { return error_of([&] { fn(a, b); }); };
        EXPECT_EQ(msg(p, labels_tensor({0, 2})).rfind(name, 0), 0u);
        EXPECT_NE(msg(p, labels_tensor({0, 2})).find("label 2 of row 1 is outside [0, 2)"), std::string::npos);
        EXPECT_NE(msg(p, labels_tensor({-3, 0})).find("label -3 of row 0"), std::string::npos);
        EXPECT_NE(msg(p, labels_tensor({0})).find("do not match"), std::string::npos);
        EXPECT_NE(msg(probs_tensor({0.5f, NAN}, 1, 2), labels_tensor({0})).find("probability nan at row 0, class 1"),
                  std::string::npos);
        EXPECT_NE(msg(probs_tensor({1.5f, 0.f}, 1, 2), labels_tensor({0})).find("probability 1.5 at row 0, class 0"),
                  std::string::npos);
        EXPECT_NE(msg(probs_tensor({-0.25f, 1.f}, 1, 2), labels_tensor({0})).find("probability -0.25"), std::string::npos);
        EXPECT_NE(msg(probs_tensor({INFINITY, 0.f}, 1, 2), labels_tensor({0})).find("outside [0, 1]"), std::string::npos);
        EXPECT_NE(msg(lsg::empty({0, 3}), lsg::empty({0}, {.dtype = lsg::DType::i64})).find("at least one sample"),
                  std::string::npos);
        EXPECT_NE(msg(p, lsg::from_vector<float>({0.f, 1.f}, {2})).find("int64 labels"), std::string::npos);
    }
    for (int64_t bins : {0, -4}) {
        EXPECT_NE(error_of([&] { lsg::classwise_calibration_error(p, y, bins); }).find("bins must be at least 1, got " +
                                                                                        std::to_string(bins)),
                  std::string::npos);
        EXPECT_NE(error_of([&] { lsg::expected_calibration_error(p, y, bins, lsg::Binning::EqualMass); })
                      .find("bins must be at least 1"),
                  std::string::npos);
    }
}

// ---- vector scaling ----------------------------------------------------------------------------

// Groups of identical rows whose labels occur exactly in the proportions softmax(w·z + b) predicts
// make every group's gradient vanish at (w, b): with z_k = (log count_k − b_k)/w_k, that (w, b) is the
// optimum (Σ b = 0 fixes the free shift of b).
TEST(Calibration, FitVectorScalingRecoversKnownParameters) {
    const std::vector<double> w = {0.5, 2.0, 1.25}, b = {0.3, -0.5, 0.2};
    const std::vector<std::vector<int>> groups = {{1, 2, 5}, {3, 1, 1}, {2, 2, 4}, {1, 6, 1}, {4, 3, 2}};
    std::vector<double> z;
    std::vector<int64_t> y;
    for (const auto& counts : groups)
        for (int64_t cls = 0; cls < 3; ++cls)
            for (int r = 0; r < counts[cls]; ++r) {
                for (int64_t j = 0; j < 3; ++j) z.push_back((std::log(counts[j]) - b[j]) / w[j]);
                y.push_back(cls);
            }
    const int64_t n = static_cast<int64_t>(y.size());
    const lsg::VectorScaling vs = lsg::fit_vector_scaling(lsg::from_vector<double>(z, {n, 3}), labels_tensor(y));
    ASSERT_EQ(vs.weight.size(), 3u);
    for (int j = 0; j < 3; ++j) {
        EXPECT_NEAR(vs.weight[j], w[j], 1e-8) << j;
        EXPECT_NEAR(vs.bias[j], b[j], 1e-8) << j;
    }
    // apply() gives w·z + b, in f64.
    const Tensor out = vs.apply(lsg::from_vector<double>(z, {n, 3}));
    EXPECT_EQ(out.dtype(), lsg::DType::f64);
    for (int64_t j = 0; j < 3; ++j) EXPECT_NEAR(out.to_vector<double>()[j], std::log(groups[0][j]), 1e-7);
}

// On KnownTemperature's data the best vector scaling is the temperature itself: w = 1/c, b = 0.
TEST(Calibration, FitVectorScalingContainsTemperatureScaling) {
    for (double c : {0.5, 3.0}) {
        const KnownTemperature d = known_case(c);
        const int64_t n = static_cast<int64_t>(d.labels.size());
        const lsg::VectorScaling vs = lsg::fit_vector_scaling(probs_tensor(d.logits, n, d.k), labels_tensor(d.labels));
        for (int64_t j = 0; j < d.k; ++j) {
            EXPECT_NEAR(vs.weight[j], 1.0 / c, 1e-5) << c;
            EXPECT_NEAR(vs.bias[j], 0.0, 1e-5) << c;
        }
    }
}

TEST(Calibration, FitVectorScalingErrors) {
    // Every sample right, margins that any scale can grow: separable.
    EXPECT_NE(error_of([] {
                  lsg::fit_vector_scaling(probs_tensor({2.f, 0.f, 0.f, 3.f, 1.f, 0.f}, 3, 2), labels_tensor({0, 1, 0}));
              }).find("separable"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  lsg::fit_vector_scaling(probs_tensor({NAN, 0.f, 0.f, 1.f}, 2, 2), labels_tensor({0, 1}));
              }).find("lsg::fit_vector_scaling: logit nan at row 0, class 0 is not finite"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  lsg::fit_vector_scaling(probs_tensor({1.f, 0.f, 0.f, 1.f}, 2, 2), labels_tensor({0, 7}));
              }).find("label 7 of row 1"),
              std::string::npos);
    EXPECT_THROW(lsg::fit_vector_scaling(lsg::empty({0, 2}), lsg::empty({0}, {.dtype = lsg::DType::i64})), lsg::Error);
    const lsg::VectorScaling vs{{1.0, 1.0}, {0.0, 0.0}};
    EXPECT_NE(error_of([&] { vs.apply(probs_tensor({1.f, 2.f, 3.f}, 1, 3)); }).find("[N, 2]"), std::string::npos);
}

// ---- the reliability diagram, rendered -----------------------------------------------------------

// A decoded 8-bit RGBA PNG (what rsvg-convert writes): the alpha of each pixel, row-major.
struct Alpha {
    int64_t width = 0, height = 0;
    std::vector<uint8_t> a;
};

uint32_t be32(const unsigned char* p) { return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3]; }

// Reads the PNG's chunks, inflates the IDAT stream with zlib and undoes the five row filters.
Alpha read_png_alpha(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Alpha out;
    if (bytes.size() < 8 || bytes.compare(1, 3, "PNG") != 0) {
        ADD_FAILURE() << path << " is not a PNG";
        return out;
    }
    const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
    std::string idat;
    int depth = 0, colour = 0, interlace = 0;
    for (size_t pos = 8; pos + 8 <= bytes.size();) {
        const uint32_t len = be32(u + pos);
        const std::string type = bytes.substr(pos + 4, 4);
        if (type == "IHDR") {
            out.width = be32(u + pos + 8);
            out.height = be32(u + pos + 12);
            depth = u[pos + 16];
            colour = u[pos + 17];
            interlace = u[pos + 20];
        } else if (type == "IDAT") {
            idat.append(bytes, pos + 8, len);
        }
        pos += 12 + len;
    }
    if (depth != 8 || colour != 6 || interlace != 0) {
        ADD_FAILURE() << path << ": expected 8-bit RGBA without interlacing, got depth " << depth << ", colour type "
                      << colour;
        return out;
    }
    const int64_t stride = out.width * 4;
    std::vector<unsigned char> raw(static_cast<size_t>(out.height * (stride + 1)));
    uLongf raw_len = raw.size();
    if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK ||
        raw_len != raw.size()) {
        ADD_FAILURE() << path << ": bad IDAT stream";
        return out;
    }
    std::vector<unsigned char> img(static_cast<size_t>(out.height * stride)), prev(stride, 0);
    for (int64_t r = 0; r < out.height; ++r) {
        const unsigned char filter = raw[r * (stride + 1)];
        const unsigned char* src = raw.data() + r * (stride + 1) + 1;
        unsigned char* row = img.data() + r * stride;
        for (int64_t i = 0; i < stride; ++i) {
            const int a = i >= 4 ? row[i - 4] : 0, b = prev[i], c = i >= 4 ? prev[i - 4] : 0;
            int pred = 0;
            switch (filter) {
                case 1: pred = a; break;
                case 2: pred = b; break;
                case 3: pred = (a + b) / 2; break;
                case 4: {
                    const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
                    pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
                    break;
                }
                default: break;
            }
            row[i] = static_cast<unsigned char>(src[i] + pred);
        }
        std::copy(row, row + stride, prev.begin());
    }
    out.a.resize(static_cast<size_t>(out.width * out.height));
    for (int64_t i = 0; i < out.width * out.height; ++i) out.a[i] = img[i * 4 + 3];
    return out;
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Renders `svg` with rsvg-convert on a canvas three times its size, the viewBox in the middle third,
// and returns how many painted pixels (alpha > 0) lie outside that third: text or shapes that
// overflow the figure show up there, where the figure's white background does not reach.
int64_t pixels_outside_viewbox(const std::string& svg, const std::filesystem::path& dir) {
    static const std::regex root(R"re(width="([0-9.]+)" height="([0-9.]+)" viewBox="0 0 ([0-9.]+) ([0-9.]+)")re");
    std::smatch m;
    EXPECT_TRUE(std::regex_search(svg, m, root)) << "no width/height/viewBox on the root";
    if (m.empty()) return -1;
    const double w = std::stod(m[3].str()), h = std::stod(m[4].str());
    std::ostringstream big;
    big << "width=\"" << 3 * w << "\" height=\"" << 3 * h << "\" viewBox=\"" << -w << " " << -h << " " << 3 * w << " "
        << 3 * h << "\"";
    const std::string expanded = std::string(m.prefix()) + big.str() + std::string(m.suffix());
    const auto svg_path = dir / "expanded.svg", png_path = dir / "expanded.png";
    {
        std::ofstream f(svg_path);
        f << expanded;
    }
    const std::string cmd = "rsvg-convert -o '" + png_path.string() + "' '" + svg_path.string() + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const Alpha img = read_png_alpha(png_path.string());
    EXPECT_EQ(img.width, static_cast<int64_t>(std::ceil(3 * w - 1e-9)));
    // The middle third with a pixel of slack for anti-aliased edges.
    const double x0 = w - 1, x1 = 2 * w + 1, y0 = h - 1, y1 = 2 * h + 1;
    int64_t outside = 0, inside = 0;
    for (int64_t r = 0; r < img.height; ++r)
        for (int64_t c = 0; c < img.width; ++c) {
            if (img.a[r * img.width + c] == 0) continue;
            const bool in_box = c >= x0 && c < x1 && r >= y0 && r < y1;
            (in_box ? inside : outside) += 1;
        }
    EXPECT_GT(inside, 0) << "nothing was drawn";
    return outside;
}

bool have_rsvg() { return std::system("command -v rsvg-convert > /dev/null 2>&1") == 0; }

TEST(Calibration, ReliabilitySvgTextStaysInsideWhenRendered) {
    if (!have_rsvg()) GTEST_SKIP() << "rsvg-convert not found (Debian: apt-get install librsvg2-bin; scripts/deps.sh does)";
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("lsgrad_render_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);

    // The check itself must be able to fail: a title centred the old way (x = 270 of 520, 16 px)
    // runs off both ends.
    const std::string overflow =
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"100\" viewBox=\"0 0 520 100\" "
        "font-family=\"sans-serif\"><rect width=\"520\" height=\"100\" fill=\"white\"/><text x=\"270\" y=\"30\" "
        "text-anchor=\"middle\" font-size=\"16\">cnn, cross-entropy with label smoothing (ε = 0.1, uniform), "
        "temperature-scaled (T = 0.437) (ECE 0.18%)</text></svg>\n";
    EXPECT_GT(pixels_outside_viewbox(overflow, dir), 0);

    const Tensor p = probs_tensor(kFive, 5, 2);
    const Tensor y = labels_tensor(kFiveLabels);
    const std::vector<std::pair<std::string, lsg::CalibrationTable>> cases = {
        {"cnn, cross-entropy with label smoothing (ε = 0.1, uniform), temperature-scaled (T = 0.437)",
         lsg::expected_calibration_error(p, y, 15)},
        {"Fashion-MNIST test set, MLP 784-256-256-10 trained with label smoothing ε = 0.3 for 5 epochs (seed 2), "
         "after temperature scaling fitted on 5000 held-out training images (T = 0.4372) WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW",
         lsg::expected_calibration_error(p, y, 15, lsg::Binning::EqualMass)},
        {"MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM",
         lsg::expected_calibration_error(p, y, 1)},
        {"short", lsg::expected_calibration_error(p, y, 100)},
    };
    for (const auto& [title, table] : cases) {
        SCOPED_TRACE(title);
        const fs::path out = dir / "diagram.svg";
        lsg::write_reliability_svg(table, out.string(), title);
        EXPECT_EQ(pixels_outside_viewbox(read_text(out), dir), 0);
    }
    fs::remove_all(dir);
}

}  // namespace

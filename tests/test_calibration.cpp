// Calibration: ECE against a hand-computed case and against the numpy reference in
// tests/golden/calibration.json, temperature scaling against a case whose answer is known exactly,
// against the fixture's float64 golden-section answer and against a brute-force grid; the SVG writer.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
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

json fixture() {
    std::ifstream in(std::string(LSGRAD_GOLDEN_DIR) + "/calibration.json");
    EXPECT_TRUE(in) << "cannot open calibration.json";
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
    EXPECT_NE(svg.find("CNN &lt;eps = 0.1&gt; &amp; T (ECE 33.00%)"), std::string::npos);
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

}  // namespace

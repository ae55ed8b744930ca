// The loss layer against PyTorch 1.13: every case in tests/golden/*.json for cross_entropy, nll_loss,
// kl_div, bce and distillation (made by tests/golden/make_golden.py) is one test; the probability-
// target cases without ε or weight also check soft_target_cross_entropy. Inputs are rebuilt from the
// integer formulas recorded in the fixtures, bit-exactly; where a fixture also stores the inputs, the
// test first checks that the formula reproduces them.
//
// Tolerances: |ours − ref| ≤ 1e-5·|ref| + atol, with
//   - losses: atol = 1e-6·max(1, max|x|): an fp32 lse − x_y loses about one ulp of the logits'
//     magnitude, which is what a loss near 0 is compared at;
//   - gradients: atol = 1e-6·(the largest |ref| entry of that gradient): differences such as p − q
//     round at the scale of their largest terms;
//   - per-row sums of a sampled gradient: 1e-5·Σ_k|ref| + atol, since the sum cancels to near 0.
// References are PyTorch's float64 results on the same float32 inputs, rounded to float32 (see
// make_golden.py), so the 1e-5 budget is lsgrad's own error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"
#include "lsgrad/ops/loss.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;
using lsg::Reduction;
using lsg::Tensor;

// ---- the fixtures' input formulas, in float32 exactly as make_golden.py computes them ----------

float formula_logit(int64_t i, int64_t k, int64_t seed, int64_t div) {
    const int64_t v = (i * 7919 + k * 104729 + seed) % 2001 - 1000;
    return static_cast<float>(v) / static_cast<float>(div);
}
float formula_weight(int64_t k) { return 0.5f + static_cast<float>((k * 37 + 11) % 17) / 16.0f; }
float formula_unit(int64_t i, int64_t k, int64_t seed) {
    return static_cast<float>((i * 13 + k * 29 + seed) % 101) / 100.0f;
}
float formula_logunit(int64_t i, int64_t k, int64_t seed) {
    return -(static_cast<float>((i * 13 + k * 29 + seed) % 101) / 20.0f);
}
float formula_upstream(int64_t j) { return static_cast<float>(1 + j % 3) / 2.0f; }

std::vector<float> logits_of(int64_t n, int64_t k, int64_t seed, int64_t div) {
    std::vector<float> x(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < k; ++c) x[i * k + c] = formula_logit(i, c, seed, div);
    return x;
}
std::vector<float> weights_of(int64_t k) {
    std::vector<float> w(static_cast<size_t>(k));
    for (int64_t c = 0; c < k; ++c) w[c] = formula_weight(c);
    return w;
}
std::vector<float> grid_of(int64_t n, int64_t k, int64_t seed, float (*f)(int64_t, int64_t, int64_t)) {
    std::vector<float> t(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < k; ++c) t[i * k + c] = f(i, c, seed);
    return t;
}
std::vector<float> prob_of(int64_t n, int64_t k, int64_t seed) {
    std::vector<float> t(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < n; ++i) {
        int64_t s = 0;
        for (int64_t c = 0; c < k; ++c) s += (i * 17 + c * 23 + seed) % 50;
        for (int64_t c = 0; c < k; ++c)
            t[i * k + c] = static_cast<float>((i * 17 + c * 23 + seed) % 50) / static_cast<float>(s);
    }
    return t;
}

// ---- loading -------------------------------------------------------------------------------

struct GoldenCase {
    std::string file;
    std::shared_ptr<const json> data;  // the whole case; shared so that parameters copy cheaply
    std::string error;                 // set when the fixture could not be read
    std::string name() const { return error.empty() ? (*data)["name"].get<std::string>() : "unreadable_fixture"; }
};

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.file << ":" << c.name(); }

std::vector<GoldenCase> load(const std::string& file) {
    std::vector<GoldenCase> out;
    const std::string path = std::string(LSGRAD_GOLDEN_DIR) + "/" + file;
    std::ifstream in(path);
    if (!in) return {GoldenCase{file, nullptr, "cannot open " + path}};
    try {
        const json doc = json::parse(in);
        for (const json& c : doc.at("cases")) out.push_back({file, std::make_shared<const json>(c), ""});
    } catch (const std::exception& e) {
        return {GoldenCase{file, nullptr, path + ": " + e.what()}};
    }
    return out;
}

std::string case_name(const testing::TestParamInfo<GoldenCase>& info) { return info.param.name(); }

Reduction reduction_of(const std::string& r) {
    if (r == "none") return Reduction::None;
    if (r == "sum") return Reduction::Sum;
    if (r == "batchmean") return Reduction::BatchMean;
    return Reduction::Mean;
}

Tensor f32(const std::vector<float>& v, lsg::Shape shape) { return lsg::from_vector<float>(v, std::move(shape)); }

// ---- checks --------------------------------------------------------------------------------

double max_abs(const std::vector<float>& v) {
    double m = 0.0;
    for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
    return m;
}

// The stored inputs, where present, must equal the formula's, or the comparison would be void.
void expect_same_inputs(const json& c, const char* key, const std::vector<float>& ours) {
    if (!c.contains(key)) return;
    const auto stored = c[key].get<std::vector<float>>();
    ASSERT_EQ(stored.size(), ours.size()) << key;
    for (size_t j = 0; j < ours.size(); ++j) ASSERT_EQ(stored[j], ours[j]) << key << " formula differs at " << j;
}

// Seeds backward: the upstream formula for unreduced losses, 1 for scalars.
void backprop(const Tensor& loss, const std::string& reduction) {
    if (reduction == "none") {
        std::vector<float> g(static_cast<size_t>(loss.numel()));
        for (size_t j = 0; j < g.size(); ++j) g[j] = formula_upstream(static_cast<int64_t>(j));
        loss.backward(f32(g, loss.shape()));
    } else {
        loss.backward();
    }
}

void expect_loss(const json& c, const Tensor& loss, double loss_atol) {
    const std::vector<float> ours = loss.to_vector<float>();
    if (c.contains("loss_row_sums")) {  // unreduced, too large to store: row sums and samples
        const int64_t k = c["K"];
        const auto sums = c["loss_row_sums"].get<std::vector<double>>();
        for (size_t i = 0; i < sums.size(); ++i) {
            double s = 0.0, a = 0.0;
            for (int64_t j = 0; j < k; ++j) {
                s += ours[i * k + j];
                a += std::abs(ours[i * k + j]);
            }
            EXPECT_NEAR(s, sums[i], 1e-5 * a + loss_atol) << "loss row sum " << i;
        }
        for (const json& smp : c["loss_samples"]) {
            const int64_t i = smp[0], j = smp[1];
            const double ref = smp[2];
            EXPECT_NEAR(ours[i * k + j], ref, 1e-5 * std::abs(ref) + loss_atol) << "loss[" << i << ", " << j << "]";
        }
        return;
    }
    const std::vector<double> ref = c["loss"].is_array() ? c["loss"].get<std::vector<double>>()
                                                         : std::vector<double>{c["loss"].get<double>()};
    ASSERT_EQ(ours.size(), ref.size()) << "loss shape " << loss.shape().size() << "-d";
    for (size_t j = 0; j < ref.size(); ++j)
        EXPECT_NEAR(ours[j], ref[j], 1e-5 * std::abs(ref[j]) + loss_atol) << "loss[" << j << "]";
}

void expect_grad(const json& c, const Tensor& x) {
    ASSERT_TRUE(x.grad().defined()) << "no gradient reached the input";
    const std::vector<float> g = x.grad().to_vector<float>();
    const int64_t k = c["K"];
    for (size_t j = 0; j < g.size(); ++j) ASSERT_TRUE(std::isfinite(g[j])) << "grad[" << j << "] = " << g[j];
    if (c.contains("grad")) {
        const auto ref = c["grad"].get<std::vector<float>>();
        ASSERT_EQ(g.size(), ref.size());
        const double atol = 1e-6 * max_abs(ref);
        for (size_t j = 0; j < ref.size(); ++j)
            EXPECT_NEAR(g[j], ref[j], 1e-5 * std::abs(ref[j]) + atol)
                << "grad[" << j / k << ", " << j % k << "]";
        return;
    }
    std::vector<float> sampled;
    for (const json& smp : c["grad_samples"]) sampled.push_back(smp[2].get<float>());
    const double atol = 1e-6 * max_abs(sampled);
    for (const json& smp : c["grad_samples"]) {
        const int64_t i = smp[0], j = smp[1];
        const double ref = smp[2];
        EXPECT_NEAR(g[i * k + j], ref, 1e-5 * std::abs(ref) + atol) << "grad[" << i << ", " << j << "]";
    }
    const auto sums = c["grad_row_sums"].get<std::vector<double>>();
    const auto abs_sums = c["grad_row_abs_sums"].get<std::vector<double>>();
    for (size_t i = 0; i < sums.size(); ++i) {
        double s = 0.0;
        for (int64_t j = 0; j < k; ++j) s += g[i * k + j];
        EXPECT_NEAR(s, sums[i], 1e-5 * abs_sums[i] + atol) << "gradient row sum " << i;
    }
}

// Rows whose target is ignore_index get exactly zero gradient (LOSSES.md), not merely a small one.
void expect_ignored_rows_zero(const json& c, const Tensor& x) {
    if (!c.contains("ignore_index")) return;
    const int64_t ign = c["ignore_index"], k = c["K"];
    const auto y = c["target"].get<std::vector<int64_t>>();
    const std::vector<float> g = x.grad().to_vector<float>();
    for (size_t i = 0; i < y.size(); ++i) {
        if (y[i] != ign) continue;
        for (int64_t j = 0; j < k; ++j) ASSERT_EQ(g[i * k + j], 0.0f) << "ignored row " << i << ", class " << j;
    }
}

class GoldenTest : public testing::TestWithParam<GoldenCase> {
protected:
    // The case's JSON; each test first fails with the reason when its fixture was unreadable.
    const json& fixture() const { return *GetParam().data; }
};

// ---- cross_entropy ---------------------------------------------------------------------------

class GoldenCrossEntropy : public GoldenTest {
protected:
    void check_cross_entropy(const json& c);
};

// Every instruction set this CPU runs: the portable path is what AVX2-only x86 and aarch64 run.
TEST_P(GoldenCrossEntropy, LossAndGradient) {
    if (!GetParam().error.empty()) FAIL() << GetParam().error;
    for (lsg::detail::CpuIsa isa : lsg::testing::supported_cpu_isas()) {
        SCOPED_TRACE(lsg::detail::cpu_isa_name(isa));
        lsg::testing::CpuIsaScope scope(isa);
        check_cross_entropy(fixture());
    }
}

void GoldenCrossEntropy::check_cross_entropy(const json& c) {
    const int64_t n = c["N"], k = c["K"], seed = c["seed"], div = c["div"];
    const std::vector<float> xv = logits_of(n, k, seed, div);
    expect_same_inputs(c, "logits", xv);
    Tensor x = f32(xv, {n, k});
    x.requires_grad_(true);

    lsg::CrossEntropyOptions opt;
    opt.label_smoothing = c["label_smoothing"];
    opt.reduction = reduction_of(c["reduction"]);
    if (c["weight"].get<bool>()) opt.weight = f32(weights_of(k), {k});
    Tensor target;
    if (c["target_kind"] == "index") {
        opt.ignore_index = c["ignore_index"];
        target = lsg::from_vector<int64_t>(c["target"].get<std::vector<int64_t>>(), {n});
    } else {
        const std::vector<float> t = prob_of(n, k, seed);
        expect_same_inputs(c, "prob_target", t);
        target = f32(t, {n, k});
    }
    const Tensor loss = lsg::cross_entropy(x, target, opt);
    expect_loss(c, loss, 1e-6 * std::max(1.0, max_abs(xv)));
    backprop(loss, c["reduction"]);
    expect_grad(c, x);
    if (c["target_kind"] == "index") expect_ignored_rows_zero(c, x);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenCrossEntropy, testing::ValuesIn(load("cross_entropy.json")), case_name);

// ---- soft_target_cross_entropy: PyTorch's cross_entropy with probability targets, no ε or weight ----

std::vector<GoldenCase> soft_target_cases() {
    std::vector<GoldenCase> out;
    for (GoldenCase& c : load("cross_entropy.json")) {
        const std::string name = c.name();
        if (!c.error.empty() || (name.rfind("ce_prob_none_", 0) == 0 || name.rfind("ce_prob_sum_", 0) == 0 ||
                                 name.rfind("ce_prob_mean_", 0) == 0))
            out.push_back(std::move(c));
    }
    return out;
}

class GoldenSoftTargetCrossEntropy : public GoldenTest {};

TEST_P(GoldenSoftTargetCrossEntropy, LossAndGradient) {
    if (!GetParam().error.empty()) FAIL() << GetParam().error;
    const json& c = fixture();
    ASSERT_EQ(c["label_smoothing"].get<double>(), 0.0);
    ASSERT_FALSE(c["weight"].get<bool>());
    const int64_t n = c["N"], k = c["K"], seed = c["seed"], div = c["div"];
    const std::vector<float> xv = logits_of(n, k, seed, div);
    Tensor x = f32(xv, {n, k});
    x.requires_grad_(true);
    const Tensor loss = lsg::soft_target_cross_entropy(x, f32(prob_of(n, k, seed), {n, k}), reduction_of(c["reduction"]));
    expect_loss(c, loss, 1e-6 * std::max(1.0, max_abs(xv)));
    backprop(loss, c["reduction"]);
    expect_grad(c, x);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenSoftTargetCrossEntropy, testing::ValuesIn(soft_target_cases()), case_name);

// ---- nll_loss --------------------------------------------------------------------------------

class GoldenNllLoss : public GoldenTest {};

TEST_P(GoldenNllLoss, LossAndGradient) {
    if (!GetParam().error.empty()) FAIL() << GetParam().error;
    const json& c = fixture();
    const int64_t n = c["N"], k = c["K"], seed = c["seed"], div = c["div"];
    const std::vector<float> xv = logits_of(n, k, seed, div);
    Tensor x = f32(xv, {n, k});
    x.requires_grad_(true);
    lsg::NLLLossOptions opt;
    opt.ignore_index = c["ignore_index"];
    opt.reduction = reduction_of(c["reduction"]);
    if (c["weight"].get<bool>()) opt.weight = f32(weights_of(k), {k});
    const Tensor target = lsg::from_vector<int64_t>(c["target"].get<std::vector<int64_t>>(), {n});
    const Tensor loss = lsg::nll_loss(x, target, opt);
    expect_loss(c, loss, 1e-6 * std::max(1.0, max_abs(xv)));
    backprop(loss, c["reduction"]);
    expect_grad(c, x);
    expect_ignored_rows_zero(c, x);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenNllLoss, testing::ValuesIn(load("nll_loss.json")), case_name);

// ---- kl_div ----------------------------------------------------------------------------------

class GoldenKlDiv : public GoldenTest {};

TEST_P(GoldenKlDiv, LossAndGradient) {
    if (!GetParam().error.empty()) FAIL() << GetParam().error;
    const json& c = fixture();
    const int64_t n = c["N"], k = c["K"], seed = c["seed"], div = c["div"];
    const bool log_target = c["log_target"];
    const std::vector<float> xv = logits_of(n, k, seed, div);
    const std::vector<float> tv = grid_of(n, k, seed, log_target ? formula_logunit : formula_unit);
    expect_same_inputs(c, "input", xv);
    expect_same_inputs(c, "target", tv);
    Tensor x = f32(xv, {n, k});
    x.requires_grad_(true);
    const Tensor loss = lsg::kl_div(x, f32(tv, {n, k}), reduction_of(c["reduction"]), log_target);
    expect_loss(c, loss, 1e-6 * std::max(1.0, max_abs(xv)));
    backprop(loss, c["reduction"]);
    expect_grad(c, x);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenKlDiv, testing::ValuesIn(load("kl_div.json")), case_name);

// ---- binary_cross_entropy_with_logits ----------------------------------------------------------

class GoldenBce : public GoldenTest {};

TEST_P(GoldenBce, LossAndGradient) {
    if (!GetParam().error.empty()) FAIL() << GetParam().error;
    const json& c = fixture();
    const int64_t n = c["N"], k = c["K"], seed = c["seed"], div = c["div"];
    const std::vector<float> xv = logits_of(n, k, seed, div);
    const std::vector<float> tv = grid_of(n, k, seed, formula_unit);
    expect_same_inputs(c, "input", xv);
    expect_same_inputs(c, "target", tv);
    Tensor x = f32(xv, {n, k});
    x.requires_grad_(true);
    lsg::BCEWithLogitsOptions opt;
    opt.label_smoothing = c["label_smoothing"];
    opt.reduction = reduction_of(c["reduction"]);
    if (c["pos_weight"].get<bool>()) opt.pos_weight = f32(weights_of(k), {k});
    if (c["weight"].get<bool>()) opt.weight = f32(weights_of(k), {k});
    const Tensor loss = lsg::binary_cross_entropy_with_logits(x, f32(tv, {n, k}), opt);
    expect_loss(c, loss, 1e-6 * std::max(1.0, max_abs(xv)));
    backprop(loss, c["reduction"]);
    expect_grad(c, x);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenBce, testing::ValuesIn(load("bce.json")), case_name);

// ---- distillation_loss -------------------------------------------------------------------------

class GoldenDistillation : public GoldenTest {};

TEST_P(GoldenDistillation, LossAndStudentGradient) {
    if (!GetParam().error.empty()) FAIL() << GetParam().error;
    const json& c = fixture();
    const int64_t n = c["N"], k = c["K"], seed = c["seed"], div = c["div"];
    const std::vector<float> sv = logits_of(n, k, seed, div);
    Tensor student = f32(sv, {n, k});
    student.requires_grad_(true);
    Tensor teacher = f32(logits_of(n, k, c["teacher_seed"], c["teacher_div"]), {n, k});
    teacher.requires_grad_(true);
    lsg::DistillationOptions opt;
    opt.temperature = c["temperature"];
    opt.alpha = c["alpha"];
    opt.label_smoothing = c["label_smoothing"];
    const Tensor target = lsg::from_vector<int64_t>(c["target"].get<std::vector<int64_t>>(), {n});
    const Tensor loss = lsg::distillation_loss(student, teacher, target, opt);
    expect_loss(c, loss, 1e-6 * std::max(1.0, max_abs(sv)));
    loss.backward();
    expect_grad(c, student);
    // The teacher is detached: no gradient reaches it even though it asked for one.
    EXPECT_FALSE(teacher.grad().defined());
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenDistillation, testing::ValuesIn(load("distillation.json")), case_name);

// Every fixture file must hold the cases the grid promises, so a truncated or regenerated file
// that lost part of the grid fails here rather than silently testing less.
TEST(GoldenFixtures, CoverTheGrid) {
    const auto count = [](const std::string& file, const std::string& prefix) {
        int n = 0;
        for (const GoldenCase& c : load(file))
            if (c.error.empty() && c.name().rfind(prefix, 0) == 0) ++n;
        return n;
    };
    // {None, Sum, Mean} × 7 variants × 5 K, plus in-range ignore_index × 3 K and large logits × 2 K.
    EXPECT_EQ(count("cross_entropy.json", "ce_") - count("cross_entropy.json", "ce_prob"), 3 * (7 * 5 + 3 + 2));
    EXPECT_EQ(count("cross_entropy.json", "ce_prob"), 3 * 4 * 5);
    EXPECT_EQ(count("nll_loss.json", "nll_"), 3 * 4 * 4);
    EXPECT_EQ(count("kl_div.json", "kl_"), 4 * 2 * 2);
    EXPECT_EQ(count("bce.json", "bce_"), 3 * 6);
    EXPECT_EQ(count("distillation.json", "distill_"), 2 * 5);
    for (const char* f : {"cross_entropy.json", "nll_loss.json", "kl_div.json", "bce.json", "distillation.json"}) {
        std::ifstream in(std::string(LSGRAD_GOLDEN_DIR) + "/" + f);
        ASSERT_TRUE(in) << f;
        const json doc = json::parse(in);
        EXPECT_EQ(doc["torch_version"].get<std::string>().rfind("1.13", 0), 0u) << f;
    }
}

}  // namespace

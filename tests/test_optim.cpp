// optim/: SGD, Adam and AdamW steps against values computed by hand (in the comments), the
// learning-rate schedules against PyTorch's closed forms, and clip_grad_norm_.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace lsg {
namespace {

using testing::expect_error;

// A leaf parameter holding `values` (f64 unless told), requiring grad.
Tensor param(std::vector<double> values, DType dtype = DType::f64) {
    Tensor p = from_vector(values).to(dtype);
    p.requires_grad_();
    return p;
}

void set_grad(Tensor& p, std::vector<double> g) { p.set_grad(from_vector(g).to(p.dtype())); }

void expect_values(const Tensor& t, const std::vector<double>& expected, double tol = 1e-12) {
    const std::vector<double> v = t.to(DType::f64).to_vector<double>();
    ASSERT_EQ(v.size(), expected.size());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], expected[i], tol) << "element " << i;
}

// ---- SGD ---------------------------------------------------------------------------------------

TEST(OptimSGD, PlainStep) {
    Tensor p = param({1.0, 2.0});
    optim::SGD sgd({p}, {.lr = 0.1});
    set_grad(p, {0.5, -1.0});
    sgd.step();
    // p − lr·g = [1 − 0.05, 2 + 0.1].
    expect_values(p, {0.95, 2.1});
    EXPECT_TRUE(p.is_leaf() && p.requires_grad());
}

TEST(OptimSGD, MomentumTwoSteps) {
    Tensor p = param({1.0, 2.0});
    optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9});
    set_grad(p, {0.5, -1.0});
    sgd.step();
    // First step: buf = g = [0.5, −1], p = [0.95, 2.1].
    expect_values(p, {0.95, 2.1});
    set_grad(p, {1.0, 1.0});
    sgd.step();
    // buf = 0.9·[0.5, −1] + [1, 1] = [1.45, 0.1]; p = [0.95 − 0.145, 2.1 − 0.01] = [0.805, 2.09].
    expect_values(p, {0.805, 2.09});
}

TEST(OptimSGD, DampeningSkipsTheFirstStep) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
    set_grad(p, {0.5});
    sgd.step();
    // buf = g = 0.5 (no dampening on the first step): p = 0.95.
    expect_values(p, {0.95});
    set_grad(p, {1.0});
    sgd.step();
    // buf = 0.9·0.5 + 0.5·1 = 0.95: p = 0.95 − 0.095 = 0.855.
    expect_values(p, {0.855});
}

TEST(OptimSGD, Nesterov) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
    set_grad(p, {0.5});
    sgd.step();
    // buf = 0.5; d = g + 0.9·buf = 0.95; p = 1 − 0.095 = 0.905.
    expect_values(p, {0.905});
    set_grad(p, {1.0});
    sgd.step();
    // buf = 0.45 + 1 = 1.45; d = 1 + 0.9·1.45 = 2.305; p = 0.905 − 0.2305 = 0.6745.
    expect_values(p, {0.6745});
}

TEST(OptimSGD, WeightDecayAddsL2ToTheGradient) {
    Tensor p = param({1.0, -2.0});
    optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
    set_grad(p, {0.5, 0.0});
    sgd.step();
    // g' = g + 0.01·p = [0.51, −0.02]; p = [1 − 0.051, −2 + 0.002].
    expect_values(p, {0.949, -1.998});
}

TEST(OptimSGD, Float32MatchesAndParametersWithoutGradientsAreSkipped) {
    Tensor p = param({1.0, 2.0}, DType::f32), q = param({3.0});
    optim::SGD sgd({p, q}, {.lr = 0.1, .momentum = 0.9});
    set_grad(p, {0.5, -1.0});
    sgd.step();
    set_grad(p, {1.0, 1.0});
    sgd.step();
    expect_values(p, {0.805, 2.09}, 1e-6);
    expect_values(q, {3.0});
    // q's first gradient starts its momentum buffer afresh (buf = g).
    set_grad(q, {1.0});
    sgd.step();
    expect_values(q, {2.9});
}

TEST(OptimSGD, RejectsBadOptions) {
    Tensor p = param({1.0});
    expect_error([&] { optim::SGD({p}, {.lr = 0.1, .nesterov = true}); }, {"Nesterov momentum requires a momentum"});
    expect_error([&] { optim::SGD({p}, {.lr = -1.0}); }, {"learning rate must be non-negative"});
    expect_error([&] { optim::SGD({}, {.lr = 0.1}); }, {"empty parameter list"});
    expect_error([&] { optim::SGD({from_vector<int64_t>({1})}, {.lr = 0.1}); }, {"parameter 0 must be floating"});
    expect_error([&] { optim::SGD({p * 2.0}, {.lr = 0.1}); }, {"parameter 0", "is not a leaf"});
}

// ---- Adam / AdamW ------------------------------------------------------------------------------

TEST(OptimAdam, OneStep) {
    Tensor p = param({1.0, 2.0});
    optim::Adam adam({p}, {.lr = 0.1});
    set_grad(p, {0.5, -1.0});
    adam.step();
    // m = 0.1·g, v = 0.001·g², step_size = lr/(1 − 0.9) = 1, denom = √v/√0.001 + eps = |g| + 1e-8:
    // p −= 0.1·g/(|g| + 1e-8), i.e. 1 − 0.05/0.50000001 and 2 + 0.1/1.00000001.
    expect_values(p, {1.0 - 0.05 / 0.50000001, 2.0 + 0.1 / 1.00000001});
    EXPECT_EQ(adam.step_count(0), 1);
}

TEST(OptimAdam, TwoSteps) {
    Tensor p = param({1.0});
    optim::Adam adam({p}, {.lr = 0.1});
    set_grad(p, {0.5});
    adam.step();
    // t = 1: m = 0.05, v = 0.00025, p = 1 − 1·0.05/(0.5 + 1e-8) = 0.900000002.
    expect_values(p, {0.900000002}, 1e-15);
    set_grad(p, {0.25});
    adam.step();
    // t = 2: m = 0.9·0.05 + 0.1·0.25 = 0.07, v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225,
    // step_size = 0.1/(1 − 0.81) = 0.526315789..., denom = √0.00031225/√0.001999 + 1e-8 = 0.39522555...,
    // p = 0.900000002 − 0.0932179615... = 0.8067820404774624.
    expect_values(p, {0.8067820404774624}, 1e-15);
}

TEST(OptimAdam, WeightDecayIsAnL2Penalty) {
    Tensor p = param({1.0});
    optim::Adam adam({p}, {.lr = 0.1, .weight_decay = 0.1});
    set_grad(p, {0.5});
    adam.step();
    // g' = 0.5 + 0.1·1 = 0.6; the first step moves by lr·g'/(|g'| + eps): p = 1 − 0.06/0.60000001.
    expect_values(p, {1.0 - 0.06 / 0.60000001}, 1e-15);
}

TEST(OptimAdam, AdamWDecaysTheWeightsDirectly) {
    Tensor p = param({1.0});
    optim::AdamW adamw({p}, {.lr = 0.1, .weight_decay = 0.1});
    set_grad(p, {0.5});
    adamw.step();
    // p = 1·(1 − 0.1·0.1) = 0.99, then the plain Adam step of g = 0.5: 0.99 − 0.05/0.50000001.
    expect_values(p, {0.99 - 0.05 / 0.50000001}, 1e-15);
    // AdamW's default decay is 1e-2.
    Tensor q = param({2.0});
    optim::AdamW defaults({q});
    set_grad(q, {1.0});
    defaults.step();
    expect_values(q, {2.0 * (1.0 - 1e-3 * 1e-2) - 1e-3 / 1.00000001}, 1e-15);
}

TEST(OptimAdam, Float32AndPerParameterStepCounts) {
    Tensor p = param({1.0}, DType::f32), q = param({1.0}, DType::f32);
    optim::Adam adam({p, q}, {.lr = 0.1});
    set_grad(p, {0.5});
    adam.step();
    set_grad(p, {0.25});
    set_grad(q, {0.5});
    adam.step();
    expect_values(p, {0.8067820404774624}, 1e-6);
    // q's first step was the optimizer's second: its bias correction still uses t = 1.
    expect_values(q, {0.9}, 1e-6);
    EXPECT_EQ(adam.step_count(0), 2);
    EXPECT_EQ(adam.step_count(1), 1);
}

TEST(OptimAdam, LargeTensorTakesTheParallelPath) {
    // 100000 elements (above the parallel grain), each its own one-element problem.
    const int64_t n = 100000;
    std::vector<double> g(n);
    for (int64_t i = 0; i < n; ++i) g[i] = std::sin(0.001 * static_cast<double>(i)) + 2.0;
    Tensor p = param(std::vector<double>(n, 1.0));
    optim::Adam adam({p}, {.lr = 0.1});
    set_grad(p, g);
    adam.step();
    const std::vector<double> v = p.to_vector<double>();
    for (int64_t i = 0; i < n; i += 997) EXPECT_NEAR(v[i], 1.0 - 0.1 * g[i] / (g[i] + 1e-8), 1e-15) << i;
}

TEST(OptimAdam, TrainsALinearModel) {
    // Least squares y = 3x − 1 with a Linear(1, 1): Adam drives the loss near zero.
    manual_seed(0);
    nn::Linear lin(1, 1);
    optim::Adam adam(lin.parameters(), {.lr = 0.05});
    const Tensor x = arange(-1.0, 1.0, 0.1).reshape({-1, 1});
    const Tensor y = x * 3.0 - 1.0;
    double loss = 0.0;
    for (int i = 0; i < 400; ++i) {
        adam.zero_grad();
        const Tensor diff = lin(x) - y;
        const Tensor l = (diff * diff).mean();
        l.backward();
        adam.step();
        loss = l.item<double>();
    }
    EXPECT_LT(loss, 1e-4);
    EXPECT_NEAR(lin.weight.item<double>(), 3.0, 0.02);
    EXPECT_NEAR(lin.bias.item<double>(), -1.0, 0.02);
}

// ---- clip_grad_norm_ ---------------------------------------------------------------------------

TEST(OptimClip, ScalesByTheGlobalNorm) {
    Tensor a = param({0.0, 0.0}), b = param({0.0}), c = param({0.0});
    set_grad(a, {3.0, 4.0});
    set_grad(b, {12.0});
    // ‖(3, 4, 12)‖ = 13; clip_coef = 6.5/(13 + 1e-6).
    EXPECT_DOUBLE_EQ(optim::clip_grad_norm_({a, b, c}, 6.5), 13.0);
    const double coef = 6.5 / (13.0 + 1e-6);
    expect_values(a.grad(), {3.0 * coef, 4.0 * coef});
    expect_values(b.grad(), {12.0 * coef});
    EXPECT_FALSE(c.grad().defined());
    // Below the limit nothing changes.
    set_grad(a, {3.0, 4.0});
    EXPECT_DOUBLE_EQ(optim::clip_grad_norm_({a}, 100.0), 5.0);
    expect_values(a.grad(), {3.0, 4.0});
}

TEST(OptimClip, OtherNorms) {
    Tensor a = param({0.0, 0.0}), b = param({0.0});
    set_grad(a, {3.0, -4.0});
    set_grad(b, {12.0});
    EXPECT_DOUBLE_EQ(optim::clip_grad_norm_({a, b}, 100.0, 1.0), 19.0);
    EXPECT_DOUBLE_EQ(optim::clip_grad_norm_({a, b}, 100.0, INFINITY), 12.0);
    EXPECT_NEAR(optim::clip_grad_norm_({a, b}, 100.0, 3.0), std::cbrt(27.0 + 64.0 + 1728.0), 1e-12);
    EXPECT_DOUBLE_EQ(optim::clip_grad_norm_({a, b}, 6.0, INFINITY), 12.0);
    expect_values(b.grad(), {12.0 * 6.0 / (12.0 + 1e-6)});
    EXPECT_EQ(optim::clip_grad_norm_({param({1.0})}, 1.0), 0.0);
}

// ---- schedules ---------------------------------------------------------------------------------

// The lr after construction and after each of `steps` step() calls.
std::vector<double> lrs(optim::LRScheduler& s, optim::Optimizer& opt, int steps) {
    std::vector<double> out{s.get_last_lr()};
    EXPECT_EQ(opt.lr(), s.get_last_lr());
    for (int i = 0; i < steps; ++i) {
        s.step();
        EXPECT_EQ(opt.lr(), s.get_last_lr());
        out.push_back(s.get_last_lr());
    }
    return out;
}

void expect_lrs(const std::vector<double>& got, const std::vector<double>& expected) {
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-12) << "t = " << i;
}

TEST(Sched, StepLR) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 1.0});
    optim::StepLR s(sgd, 2, 0.5);
    // base·γ^⌊t/2⌋.
    expect_lrs(lrs(s, sgd, 5), {1.0, 1.0, 0.5, 0.5, 0.25, 0.25});
    EXPECT_EQ(s.last_epoch(), 5);
}

TEST(Sched, CosineAnnealingLR) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 1.0});
    optim::CosineAnnealingLR s(sgd, 4, 0.1);
    // 0.1 + 0.9·(1 + cos(πt/4))/2: 1, 0.86819805, 0.55, 0.23180195, 0.1, then back up as PyTorch's
    // closed form does past T_max.
    expect_lrs(lrs(s, sgd, 5), {1.0, 0.8681980515339464, 0.55, 0.23180194846605365, 0.1, 0.23180194846605365});
}

TEST(Sched, LinearLRAndWarmup) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 0.3});
    optim::LinearLR s(sgd);
    // 0.3·(1/3 + (2/3)·min(t, 5)/5).
    expect_lrs(lrs(s, sgd, 6), {0.1, 0.14, 0.18, 0.22, 0.26, 0.3, 0.3});

    optim::SGD sgd2({p}, {.lr = 1.0});
    optim::LinearWarmup w(sgd2, 4);
    // start_factor 1/4: 0.25 + 0.75·t/4.
    expect_lrs(lrs(w, sgd2, 5), {0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0});
}

TEST(Sched, SequentialLRSharesTheInitialLr) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 1.0});
    auto warm = std::make_shared<optim::LinearLR>(sgd, 0.5, 1.0, 2);
    auto decay = std::make_shared<optim::StepLR>(sgd, 1, 0.5);
    // StepLR's base is the lr when the first schedule was attached (1), not the 0.5 LinearLR set.
    EXPECT_EQ(decay->base_lr(), 1.0);
    optim::SequentialLR s(sgd, {warm, decay}, {2});
    // t = 0, 1 warm (0.5, 0.75); from t = 2 StepLR counts from 0: 1, 0.5, 0.25.
    expect_lrs(lrs(s, sgd, 4), {0.5, 0.75, 1.0, 0.5, 0.25});
    expect_error([&] { optim::SequentialLR(sgd, {warm, decay}, {}); }, {"one milestone fewer than schedules"});
}

TEST(Sched, WarmupCosine) {
    Tensor p = param({1.0});
    optim::SGD sgd({p}, {.lr = 1.0});
    optim::WarmupCosine s(sgd, 2, 6, 0.0);
    // Warm-up 0.5, 0.75; then (1 + cos(π(t − 2)/4))/2: 1, 0.85355339, 0.5, 0.14644661, 0; then 0.
    expect_lrs(lrs(s, sgd, 7), {0.5, 0.75, 1.0, 0.8535533905932737, 0.5, 0.14644660940672624, 0.0, 0.0});
    expect_error([&] { optim::WarmupCosine(sgd, 6, 6); }, {"0 ≤ warmup_steps < total_steps"});
}

}  // namespace
}  // namespace lsg

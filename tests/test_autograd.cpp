// The autograd engine: accumulation, retain_graph, no_grad, detach, graph freeing and leaks.
#include <gtest/gtest.h>

#include "gradcheck.h"
#include "test_util.h"
#include "lsgrad/lsgrad.h"

using namespace lsg;
using lsg::testing::expect_error;

TEST(Autograd, ScalarBackwardGivesHandDerivatives) {
    Tensor x = tensor({2.0, 3.0});
    x.requires_grad_();
    Tensor y = sum(x * x * 3.0 + x);  // dy/dx = 6x + 1
    y.backward();
    EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{13.0, 19.0}));
    EXPECT_TRUE(x.is_leaf());
    EXPECT_FALSE(y.is_leaf());
    EXPECT_EQ(y.grad_fn()->name(), "sum");
}

TEST(Autograd, GradientsAccumulateUntilZeroGrad) {
    Tensor x = tensor({1.0});
    x.requires_grad_();
    for (int i = 0; i < 3; ++i) (x * 2.0).sum().backward();
    EXPECT_DOUBLE_EQ(x.grad().item(), 6.0);
    x.zero_grad();
    EXPECT_FALSE(x.grad().defined());
    (x * 2.0).sum().backward();
    EXPECT_DOUBLE_EQ(x.grad().item(), 2.0);
}

TEST(Autograd, SharedInputsSumTheirGradients) {
    Tensor x = tensor({3.0});
    x.requires_grad_();
    Tensor a = x * x, b = exp(x);
    (a + b + x).sum().backward();
    EXPECT_NEAR(x.grad().item(), 2 * 3.0 + std::exp(3.0) + 1.0, 1e-12);
}

TEST(Autograd, ExplicitGradientForNonScalar) {
    Tensor x = tensor({1.0, 2.0});
    x.requires_grad_();
    Tensor y = x * 3.0;
    expect_error([&] { y.backward(); }, {"one-element"});
    y.backward(tensor({1.0, 10.0}));
    EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3.0, 30.0}));
    expect_error([&] { (x * 3.0).backward(tensor({1.0})); }, {"gradient of shape [1]", "[2]"});
}

TEST(Autograd, GraphIsFreedUnlessRetained) {
    Tensor x = tensor({1.0});
    x.requires_grad_();
    Tensor y = exp(x).sum();
    y.backward(Tensor(), true);
    y.backward();
    EXPECT_NEAR(x.grad().item(), 2 * std::exp(1.0), 1e-12);
    expect_error([&] { y.backward(); }, {"second time", "retain_graph"});
}

TEST(Autograd, NoGradGuardRecordsNothing) {
    Tensor x = tensor({1.0});
    x.requires_grad_();
    {
        NoGradGuard guard;
        Tensor y = x * 2.0;
        EXPECT_FALSE(y.requires_grad());
        EXPECT_EQ(y.grad_fn(), nullptr);
    }
    EXPECT_TRUE((x * 2.0).requires_grad());
}

TEST(Autograd, DetachCutsTheGraphButSharesStorage) {
    Tensor x = tensor({1.0, 2.0});
    x.requires_grad_();
    Tensor d = (x * 2.0).detach();
    EXPECT_FALSE(d.requires_grad());
    Tensor y = (x * d).sum();
    y.backward();
    EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2.0, 4.0}));
    Tensor v = x.detach();
    EXPECT_TRUE(v.shares_storage(x));
}

TEST(Autograd, RequiresGradRules) {
    Tensor i = arange(3);
    expect_error([&] { i.requires_grad_(); }, {"floating"});
    Tensor x = tensor({1.0});
    x.requires_grad_();
    Tensor y = x * 2.0;
    expect_error([&] { y.requires_grad_(false); }, {"leaf"});
    expect_error([&] { tensor({1.0}).backward(); }, {"does not require grad"});
}

TEST(Autograd, GradientsThroughViewsLandInTheRightPlaces) {
    Tensor x = lsg::testing::leaf({3, 4}, 1);
    EXPECT_TRUE(lsg::testing::gradcheck(
        [](const std::vector<Tensor>& in) {
            const Tensor& a = in[0];
            return a.t().slice(0, 1, 4, 2).unsqueeze(0).expand({2, 2, 3}).reshape({4, 3}).narrow(1, 1, 2).contiguous() *
                   a.select(1, 0).sum();
        },
        {x}));
}

TEST(Autograd, DeepChainHasNoRecursionLimit) {
    Tensor x = tensor({1.0});
    x.requires_grad_();
    Tensor y = x;
    for (int i = 0; i < 20000; ++i) y = y + 0.0;
    y.sum().backward();
    EXPECT_DOUBLE_EQ(x.grad().item(), 1.0);
}

TEST(Autograd, ManyStepLoopKeepsNoGraphAlive) {
    // Outputs that save themselves for backward (exp, softmax, sigmoid) must not form a cycle
    // through their own node: after each step nothing but the leaves may remain. Run under
    // LSGRAD_SANITIZE, LeakSanitizer fails the run on any leak.
    Tensor w = lsg::testing::leaf({8, 8}, 2);
    std::weak_ptr<TensorImpl> probe;
    for (int step = 0; step < 200; ++step) {
        Tensor h = sigmoid(matmul(w, w));
        Tensor y = softmax(exp(tanh(h)), 1);
        if (step == 0) probe = y.impl_ptr();
        y.sum().backward();
        w.zero_grad();
    }
    EXPECT_TRUE(probe.expired()) << "a step's output outlived the step: the graph holds a cycle";
    Tensor keep;
    {
        Tensor y = exp(w);
        keep = y;  // forward without backward: dropping the handle must free the graph too
    }
    std::weak_ptr<TensorImpl> out = keep.impl_ptr();
    keep = Tensor();
    EXPECT_TRUE(out.expired());
}

TEST(Determinism, SameSeedSameBits) {
    auto run = [] {
        Generator g(99);
        Tensor a = randn({64, 300}, {}, g), b = randn({300, 50}, {}, g);
        a.requires_grad_();
        Tensor y = log_softmax(matmul(a, b), 1).sum();
        y.backward();
        return std::make_pair(y.item<float>(), a.grad().to_vector<float>());
    };
    EXPECT_EQ(run(), run());
}

// ---- post-accumulate-grad hooks (what data-parallel training starts its allreduces from) ------

TEST(AutogradHooks, PostAccumulateGradHookSeesTheSummedGradientOncePerBackward) {
    Tensor x = tensor({1.0, 2.0, 3.0}, {3}, {.dtype = DType::f64, .requires_grad = true});
    std::vector<std::vector<double>> seen;
    x.register_post_accumulate_grad_hook([&](const Tensor& leaf) { seen.push_back(leaf.grad().to_vector<double>()); });
    // x reaches the loss along two paths: d/dx Σ(x·x + 4x) = 2x + 4, summed before the hook runs.
    ((x * x).sum() + (x * 4.0).sum()).backward();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0], (std::vector<double>{6.0, 8.0, 10.0}));
    // A second backward accumulates, and the hook sees the total.
    (x * 2.0).sum().backward();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[1], (std::vector<double>{8.0, 10.0, 12.0}));
}

TEST(AutogradHooks, HooksRunInOrderAndCanBeRemoved) {
    Tensor x = tensor({1.0}, {1}, {.dtype = DType::f64, .requires_grad = true});
    std::string calls;
    const uint64_t a = x.register_post_accumulate_grad_hook([&](const Tensor&) { calls += "a"; });
    x.register_post_accumulate_grad_hook([&](const Tensor&) { calls += "b"; });
    (x * 3.0).sum().backward();
    EXPECT_EQ(calls, "ab");
    x.remove_post_accumulate_grad_hook(a);
    x.remove_post_accumulate_grad_hook(a);  // already gone: ignored
    (x * 3.0).sum().backward();
    EXPECT_EQ(calls, "abb");
}

TEST(AutogradHooks, OnlyLeavesThatRequireGradTakeHooks) {
    Tensor x = tensor({1.0}, {1}, {.dtype = DType::f64, .requires_grad = true});
    Tensor y = x * 2.0;
    expect_error([&] { y.register_post_accumulate_grad_hook([](const Tensor&) {}); }, {"non-leaf", "[1]"});
    Tensor z = tensor({1.0});
    expect_error([&] { z.register_post_accumulate_grad_hook([](const Tensor&) {}); }, {"does not require grad"});
    expect_error([&] { x.register_post_accumulate_grad_hook(nullptr); }, {"empty"});
}

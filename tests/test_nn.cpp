// nn/: Module registration and traversal, train/eval, state_dict, the layers against hand-computed
// values and f64 finite differences, BatchNorm2d's statistics, and the initialisers' bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace lsg {
namespace {

using testing::expect_error;
using testing::gradcheck;
using testing::leaf;

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
    std::vector<std::string> out;
    for (const auto& entry : named) out.push_back(entry.first);
    return out;
}

// A module with a child container, as a user's model class would be written.
class Net : public nn::Module {
public:
    Net() {
        features = register_module("features", std::make_shared<nn::Sequential>(
                                                   std::make_shared<nn::Linear>(3, 4), std::make_shared<nn::ReLU>(),
                                                   std::make_shared<nn::Dropout>(0.5)));
        head = register_module("head", std::make_shared<nn::Linear>(4, 2, false));
        scale = register_parameter("scale", ones({2}));
    }
    Tensor forward(const Tensor& x) override { return (*head)((*features)(x)) * scale; }

    std::shared_ptr<nn::Sequential> features;
    std::shared_ptr<nn::Linear> head;
    Tensor scale;
};

TEST(NnModule, NamesParametersWithDottedPaths) {
    Net net;
    EXPECT_EQ(names_of(net.named_parameters()),
              (std::vector<std::string>{"scale", "features.0.weight", "features.0.bias", "head.weight"}));
    EXPECT_EQ(names_of(net.named_parameters(false)), (std::vector<std::string>{"scale"}));
    EXPECT_EQ(net.num_parameters(), 2 + 3 * 4 + 4 + 4 * 2);
    for (const Tensor& p : net.parameters()) {
        EXPECT_TRUE(p.requires_grad());
        EXPECT_TRUE(p.is_leaf());
    }
    // The registered handle is the layer's member: one TensorImpl.
    EXPECT_EQ(net.named_parameters()[3].second.impl_ptr(), net.head->weight.impl_ptr());
    EXPECT_FALSE(net.head->bias.defined());
    EXPECT_EQ(net.children().size(), 2u);
    EXPECT_EQ(net.named_children()[0].first, "features");
}

TEST(NnModule, RejectsBadAndDuplicateNames) {
    nn::Module m;
    m.register_parameter("w", zeros({2}));
    expect_error([&] { m.register_parameter("w", zeros({2})); }, {"register_parameter", "\"w\" is already registered"});
    expect_error([&] { m.register_buffer("w", zeros({2})); }, {"register_buffer", "\"w\" is already registered"});
    expect_error([&] { m.register_parameter("a.b", zeros({2})); }, {"contain no '.'"});
    expect_error([&] { m.register_parameter("i", zeros({2}, {.dtype = DType::i64})); }, {"must be floating", "int64"});
    expect_error([&] { m.register_module("c", std::shared_ptr<nn::Module>()); }, {"register_module", "is null"});
    expect_error([&] { m.forward(zeros({1})); }, {"Module does not define forward()"});
}

TEST(NnModule, SharedParameterAppearsOnce) {
    auto a = std::make_shared<nn::Linear>(2, 2);
    nn::Sequential seq(a, std::make_shared<nn::ReLU>(), a);
    EXPECT_EQ(names_of(seq.named_parameters()), (std::vector<std::string>{"0.weight", "0.bias"}));
    EXPECT_EQ(seq.size(), 3u);
    EXPECT_EQ(seq[2], a);
    expect_error([&] { (void)seq[3]; }, {"index 3 is out of range for a Sequential of 3 modules"});
}

TEST(NnModule, TrainAndEvalReachEveryDescendant) {
    Net net;
    EXPECT_TRUE(net.is_training());
    net.eval();
    EXPECT_FALSE(net.is_training());
    EXPECT_FALSE(net.features->is_training());
    EXPECT_FALSE((*net.features)[2]->is_training());
    net.train();
    EXPECT_TRUE((*net.features)[2]->is_training());
    // Eval turns dropout off, so two forward passes agree; training draws new masks.
    const Tensor x = randn({8, 3});
    net.eval();
    EXPECT_TRUE(allclose(net(x), net(x), 0, 0));
}

TEST(NnModule, ZeroGradClearsEveryGradient) {
    Net net;
    net.eval();
    net(randn({4, 3})).sum().backward();
    for (const Tensor& p : net.parameters()) EXPECT_TRUE(p.grad().defined());
    net.zero_grad();
    for (const Tensor& p : net.parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(NnModule, StateDictRoundTripReproducesOutputs) {
    manual_seed(1);
    Net a;
    manual_seed(2);
    Net b;
    a.eval();
    b.eval();
    const Tensor x = randn({5, 3});
    EXPECT_FALSE(allclose(a(x), b(x)));
    const nn::StateDict state = a.state_dict();
    EXPECT_EQ(state.size(), 4u);
    EXPECT_EQ(state.count("features.0.bias"), 1u);
    const nn::LoadStateDictResult r = b.load_state_dict(state);
    EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty());
    EXPECT_TRUE(allclose(a(x), b(x), 0, 0));
    // Loaded values are copies: b's parameters keep their own storage.
    EXPECT_FALSE(b.head->weight.shares_storage(a.head->weight));
}

TEST(NnModule, LoadStateDictNamesTheBadKey) {
    Net net;
    nn::StateDict state = net.state_dict();
    const std::vector<float> before = net.head->weight.to_vector<float>();

    nn::StateDict missing = state;
    missing.erase("head.weight");
    expect_error([&] { net.load_state_dict(missing); }, {"load_state_dict", "missing key(s)", "\"head.weight\""});

    nn::StateDict unexpected = state;
    unexpected["head.bias"] = zeros({2});
    expect_error([&] { net.load_state_dict(unexpected); }, {"unexpected key(s)", "\"head.bias\""});

    nn::StateDict wrong = state;
    wrong["head.weight"] = zeros({4, 2});
    wrong["scale"] = full({2}, 7.0);
    expect_error([&] { net.load_state_dict(wrong); },
                 {"size mismatch for \"head.weight\"", "checkpoint has shape [4, 2]", "module has shape [2, 4]"});
    expect_error([&] { net.load_state_dict(wrong, false); }, {"size mismatch for \"head.weight\""});
    // Nothing was copied by the failed loads.
    EXPECT_EQ(net.scale.to_vector<float>(), (std::vector<float>{1.f, 1.f}));
    EXPECT_EQ(net.head->weight.to_vector<float>(), before);

    nn::StateDict partial = unexpected;
    partial.erase("scale");
    partial["features.0.bias"] = full({4}, 3.0, {.dtype = DType::f64});  // converted to the module's f32
    const nn::LoadStateDictResult r = net.load_state_dict(partial, false);
    EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"scale"}));
    EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"head.bias"}));
    EXPECT_EQ(net.features->named_parameters()[1].second.to_vector<float>(), (std::vector<float>(4, 3.f)));
}

TEST(NnModule, ToDtypeConvertsInPlaceKeepingHandlesAndLeaves) {
    nn::Sequential net(std::make_shared<nn::Linear>(3, 2), std::make_shared<nn::BatchNorm2d>(2));
    const Tensor w = net.parameters()[0];
    const std::vector<float> values = w.to_vector<float>();
    net.to(DType::f64);
    // The handle taken before the conversion (as an optimizer holds it) sees f64 data.
    EXPECT_EQ(w.dtype(), DType::f64);
    EXPECT_TRUE(w.requires_grad());
    EXPECT_TRUE(w.is_leaf());
    const std::vector<double> converted = w.to_vector<double>();
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(converted[i], static_cast<double>(values[i]));
    // Integer buffers keep their dtype.
    EXPECT_EQ(net.state_dict().at("1.num_batches_tracked").dtype(), DType::i64);
    EXPECT_EQ(net.state_dict().at("1.running_var").dtype(), DType::f64);
    // A gradient computed after the conversion lands on the same handle.
    auto& lin = static_cast<nn::Linear&>(*net[0]);
    lin(randn({4, 3}, {.dtype = DType::f64})).sum().backward();
    EXPECT_EQ(w.grad().dtype(), DType::f64);
    expect_error([&] { net.to(DType::i64); }, {"floating dtype"});
    // Without a device the move fails with the reason, whether CUDA was compiled out or no GPU answers.
    if (!cuda_is_available()) expect_error([&] { net.to(Device::cuda()); }, {cuda_unavailable_reason()});
}

TEST(NnModule, StrPrintsTheTree) {
    nn::Sequential net(std::make_shared<nn::Conv2d>(1, 8, 3, 1, 1), std::make_shared<nn::ReLU>(),
                       std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
                       std::make_shared<nn::Linear>(8 * 14 * 14, 10));
    const std::string s = net.str();
    EXPECT_NE(s.find("Sequential(\n  (0): Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"),
              std::string::npos)
        << s;
    EXPECT_NE(s.find("(4): Linear(in_features=1568, out_features=10, bias=True)\n)"), std::string::npos) << s;
}

// ---- layers ------------------------------------------------------------------------------------

TEST(NnLayers, LinearMatchesHandComputedValues) {
    nn::Linear lin(3, 2);
    lin.weight.copy_(tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}));
    lin.bias.copy_(tensor({0.5f, -1.f}));
    // [1, 0, −1]: 1 − 3 + 0.5 = −1.5, 4 − 6 − 1 = −3; [2, 1, 0]: 2 + 2 + 0.5 = 4.5, 8 + 5 − 1 = 12.
    const Tensor y = lin(tensor({1.f, 0.f, -1.f, 2.f, 1.f, 0.f}, {2, 3}));
    EXPECT_EQ(y.shape(), (Shape{2, 2}));
    EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{-1.5f, -3.f, 4.5f, 12.f}));
    expect_error([&] { lin(zeros({2, 4})); }, {"expects input [..., 3]", "[2, 4]"});
}

TEST(NnLayers, Conv2dMatchesHandComputedValues) {
    // x = 1..9 in a 3×3 image, kernel [[1, 2], [3, 4]], bias 0.5.
    const Tensor x = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f}, {1, 1, 3, 3});
    nn::Conv2d conv(1, 1, 2);
    conv.weight.copy_(tensor({1.f, 2.f, 3.f, 4.f}, {1, 1, 2, 2}));
    conv.bias.fill_(0.5);
    // Window at (0, 0): 1·1 + 2·2 + 4·3 + 5·4 = 37; (0, 1): 2 + 6 + 15 + 24 = 47;
    // (1, 0): 4 + 10 + 21 + 32 = 67; (1, 1): 5 + 12 + 24 + 36 = 77.
    EXPECT_EQ(conv(x).to_vector<float>(), (std::vector<float>{37.5f, 47.5f, 67.5f, 77.5f}));

    // Stride 2, padding 1: windows start at (−1, −1), (−1, 1), (1, −1), (1, 1):
    // 1·4 = 4; 2·3 + 3·4 = 18; 4·2 + 7·4 = 36; 5·1 + 6·2 + 8·3 + 9·4 = 77.
    nn::Conv2d strided(1, 1, 2, 2, 1, false);
    strided.weight.copy_(conv.weight);
    const Tensor y = strided(x);
    EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
    EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{4.f, 18.f, 36.f, 77.f}));
    expect_error([&] { conv(zeros({1, 2, 3, 3})); }, {"expects input [N, 1, H, W]", "[1, 2, 3, 3]"});
}

TEST(NnLayers, Conv2dGradientsMatchFiniteDifferences) {
    Generator gen(7);
    nn::Conv2d conv(2, 3, {2, 3}, {2, 1}, {1, 1}, true, gen);
    conv.to(DType::f64);
    const Tensor x = leaf({2, 2, 5, 4}, 11);
    EXPECT_EQ(conv(x).shape(), (Shape{2, 3, 3, 4}));
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return conv(in[0]); }, {x, conv.weight, conv.bias}));
}

TEST(NnLayers, ConvNetGradientsMatchFiniteDifferences) {
    Generator gen(3);
    nn::Sequential net(std::make_shared<nn::Conv2d>(1, 2, 3, 1, 1, true, gen), std::make_shared<nn::ReLU>(),
                       std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
                       std::make_shared<nn::Linear>(2 * 3 * 3, 3, true, gen));
    net.to(DType::f64);
    std::vector<Tensor> inputs{leaf({2, 1, 6, 6}, 5)};
    for (const Tensor& p : net.parameters()) inputs.push_back(p);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return net(in[0]); }, inputs));
}

// Sequential runs Conv2d–ReLU as conv2d_relu and Conv2d–ReLU–MaxPool2d as conv2d_relu_max_pool2d:
// the same outputs and gradients as the children applied one by one, and only for those exact
// types (a subclass keeps its own forward).
TEST(NnLayers, SequentialFusesConvReluWithTheSameResults) {
    Generator gen(4);
    auto conv1 = std::make_shared<nn::Conv2d>(1, 4, 3, 1, 1, true, gen);
    auto conv2 = std::make_shared<nn::Conv2d>(4, 3, 3, 1, 1, true, gen);
    auto fc = std::make_shared<nn::Linear>(3 * 4 * 4, 5, true, gen);
    nn::Sequential net(conv1, std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(2), conv2,
                       std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(), fc);
    net.to(DType::f64);
    const Tensor x = leaf({3, 1, 8, 8}, 9);
    const Tensor out = net(x);
    EXPECT_EQ(out.grad_fn()->name(), "linear");
    sum(out * out).backward();
    std::vector<std::vector<double>> fused_grads;
    for (const Tensor& p : net.parameters()) fused_grads.push_back(p.grad().to_vector<double>());
    const std::vector<double> fused_dx = x.grad().to_vector<double>();
    net.zero_grad();
    const Tensor x2 = leaf({3, 1, 8, 8}, 9);  // the same input, a fresh leaf
    Tensor h = x2;
    for (size_t i = 0; i < net.size(); ++i) h = (*net[i])(h);
    EXPECT_EQ(h.to_vector<double>(), out.to_vector<double>());
    sum(h * h).backward();
    size_t i = 0;
    for (const Tensor& p : net.parameters()) {
        const auto got = fused_grads[i++], want = p.grad().to_vector<double>();
        ASSERT_EQ(got.size(), want.size());
        for (size_t e = 0; e < got.size(); ++e) EXPECT_NEAR(got[e], want[e], 1e-12 * (1 + std::abs(want[e])));
    }
    const auto dx = x2.grad().to_vector<double>();
    for (size_t e = 0; e < dx.size(); ++e) EXPECT_NEAR(fused_dx[e], dx[e], 1e-12 * (1 + std::abs(dx[e])));
    // The fused ops are what ran (the network above has both patterns).
    nn::Sequential head(conv1, std::make_shared<nn::ReLU>());
    EXPECT_EQ(head(x).grad_fn()->name(), "conv2d_relu");
    head.push_back(std::make_shared<nn::MaxPool2d>(2));
    EXPECT_EQ(head(x).grad_fn()->name(), "conv2d_relu_max_pool2d");

    struct ScaledConv : nn::Conv2d {
        using nn::Conv2d::Conv2d;
        Tensor forward(const Tensor& in) override { return nn::Conv2d::forward(in) * 2.0; }
    };
    auto scaled = std::make_shared<ScaledConv>(1, 2, 3, 1, 1, true, gen);
    scaled->to(DType::f64);
    nn::Sequential custom(scaled, std::make_shared<nn::ReLU>());
    EXPECT_EQ(custom(x).to_vector<double>(), relu(scaled->forward(x)).to_vector<double>());
}

TEST(NnLayers, MaxPoolReluFlatten) {
    const Tensor x = tensor(
        {1.f, -2.f, 3.f, 0.f, -5.f, 6.f, -7.f, 8.f, 9.f, 10.f, -11.f, 12.f, 13.f, -14.f, 15.f, 16.f}, {1, 1, 4, 4});
    // 2×2 windows: max(1, −2, −5, 6) = 6, max(3, 0, −7, 8) = 8, max(9, 10, 13, −14) = 13, max(−11, 12, 15, 16) = 16.
    EXPECT_EQ(nn::MaxPool2d(2)(x).to_vector<float>(), (std::vector<float>{6.f, 8.f, 13.f, 16.f}));
    // Stride 1: nine overlapping windows.
    EXPECT_EQ(nn::MaxPool2d(2, 1)(x).shape(), (Shape{1, 1, 3, 3}));
    const Tensor r = nn::ReLU()(x);
    EXPECT_EQ(r.to_vector<float>()[1], 0.f);
    EXPECT_EQ(r.to_vector<float>()[2], 3.f);
    EXPECT_EQ(nn::Flatten()(zeros({2, 3, 4, 5})).shape(), (Shape{2, 60}));
    EXPECT_EQ(nn::Flatten(0, 1)(zeros({2, 3, 4})).shape(), (Shape{6, 4}));
    expect_error([] { nn::MaxPool2d(2, 2, 2); }, {"padding must be between 0 and half the kernel size"});
}

TEST(NnLayers, DropoutScalesInTrainingAndIsTheIdentityInEval) {
    manual_seed(5);
    nn::Dropout drop(0.25);
    const Tensor x = ones({20000});
    const std::vector<float> y = drop(x).to_vector<float>();
    int64_t zeros_seen = 0;
    for (float v : y) {
        ASSERT_TRUE(v == 0.f || std::abs(v - 1.f / 0.75f) < 1e-6f) << v;
        zeros_seen += v == 0.f;
    }
    // 20000 Bernoulli(0.25) draws: σ ≈ 61 zeros, so ±300 is a 5σ band.
    EXPECT_NEAR(static_cast<double>(zeros_seen), 5000.0, 300.0);
    drop.eval();
    EXPECT_TRUE(drop(x).shares_storage(x));
    expect_error([] { nn::Dropout(1.5); }, {"dropout probability must be in [0, 1]"});
}

TEST(NnLayers, DefaultInitIsKaimingUniformWithASqrt5) {
    nn::Linear lin(100, 50, true, default_generator());
    const double bound = 1.0 / std::sqrt(100.0);
    auto check = [](const Tensor& t, double b) {
        const std::vector<float> v = t.to_vector<float>();
        double s = 0.0, s2 = 0.0;
        for (float e : v) {
            EXPECT_LE(std::abs(e), b);
            s += e;
            s2 += static_cast<double>(e) * e;
        }
        const double n = static_cast<double>(v.size()), mean = s / n, var = s2 / n - mean * mean;
        // U(−b, b) has variance b²/3.
        EXPECT_NEAR(mean, 0.0, 4.0 * b / std::sqrt(3.0 * n));
        EXPECT_NEAR(var, b * b / 3.0, 0.15 * b * b / 3.0 + 10.0 / n * b * b);
    };
    check(lin.weight, bound);
    check(lin.bias, bound);
    nn::Conv2d conv(3, 16, 5);
    check(conv.weight, 1.0 / std::sqrt(75.0));
    // The same seed draws the same weights.
    Generator g1(42), g2(42);
    EXPECT_TRUE(allclose(nn::Linear(8, 4, true, g1).weight, nn::Linear(8, 4, true, g2).weight, 0, 0));
}

// ---- BatchNorm2d -------------------------------------------------------------------------------

TEST(BatchNorm2d, TrainingNormalisesWithBatchStatsAndUpdatesRunningStats) {
    nn::BatchNorm2d bn(2);
    bn.weight.copy_(tensor({2.f, 1.f}));
    bn.bias.copy_(tensor({0.f, 1.f}));
    // x [2, 2, 1, 2]: channel 0 holds {1, 3 | 5, 7}, channel 1 holds {2, 2 | 2, 6}.
    const Tensor x = tensor({1.f, 3.f, 2.f, 2.f, 5.f, 7.f, 2.f, 6.f}, {2, 2, 1, 2});
    // Channel 0: mean 4, biased var (9 + 1 + 1 + 9)/4 = 5, unbiased 20/3.
    // Channel 1: mean 3, biased var (1 + 1 + 1 + 9)/4 = 3, unbiased 4.
    const double eps = 1e-5, s0 = 2.0 / std::sqrt(5.0 + eps), s1 = 1.0 / std::sqrt(3.0 + eps);
    const std::vector<double> expected{(1 - 4) * s0, (3 - 4) * s0, (2 - 3) * s1 + 1, (2 - 3) * s1 + 1,
                                       (5 - 4) * s0, (7 - 4) * s0, (2 - 3) * s1 + 1, (6 - 3) * s1 + 1};
    const std::vector<float> y = bn(x).to_vector<float>();
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], expected[i], 1e-5) << i;
    // running = 0.9·running + 0.1·batch, with the unbiased variance.
    const std::vector<float> rm = bn.running_mean.to_vector<float>(), rv = bn.running_var.to_vector<float>();
    EXPECT_NEAR(rm[0], 0.4, 1e-6);
    EXPECT_NEAR(rm[1], 0.3, 1e-6);
    EXPECT_NEAR(rv[0], 0.9 + 0.1 * 20.0 / 3.0, 1e-6);
    EXPECT_NEAR(rv[1], 0.9 + 0.1 * 4.0, 1e-6);
    EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 1);
    bn(x);
    EXPECT_NEAR(bn.running_mean.to_vector<float>()[0], 0.9 * 0.4 + 0.1 * 4.0, 1e-6);
    EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 2);
}

TEST(BatchNorm2d, EvalUsesRunningStats) {
    nn::BatchNorm2d bn(2, 1e-3, 0.5);
    bn.running_mean.copy_(tensor({1.f, -2.f}));
    bn.running_var.copy_(tensor({4.f, 0.25f}));
    bn.weight.copy_(tensor({3.f, 1.f}));
    bn.bias.copy_(tensor({0.f, 0.5f}));
    bn.eval();
    const Tensor x = tensor({5.f, -1.f, 0.f, -2.f}, {1, 2, 2, 1});
    const std::vector<float> y = bn(x).to_vector<float>();
    EXPECT_NEAR(y[0], (5 - 1) / std::sqrt(4.001) * 3, 1e-5);
    EXPECT_NEAR(y[1], (-1 - 1) / std::sqrt(4.001) * 3, 1e-5);
    EXPECT_NEAR(y[2], (0 + 2) / std::sqrt(0.251) + 0.5, 1e-5);
    EXPECT_NEAR(y[3], (-2 + 2) / std::sqrt(0.251) + 0.5, 1e-5);
    // Eval leaves the running statistics alone.
    EXPECT_EQ(bn.running_mean.to_vector<float>(), (std::vector<float>{1.f, -2.f}));
    EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 0);
}

TEST(BatchNorm2d, TrainingGradientsMatchFiniteDifferences) {
    nn::BatchNorm2d bn(3);
    bn.to(DType::f64);
    bn.weight.copy_(tensor({1.5, -0.5, 2.0}));
    bn.bias.copy_(tensor({0.1, 0.2, -0.3}));
    const Tensor x = leaf({2, 3, 2, 3}, 9, 2.0, 1.0);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return bn(in[0]); }, {x, bn.weight, bn.bias}));
}

TEST(BatchNorm2d, RejectsBadInput) {
    nn::BatchNorm2d bn(2);
    expect_error([&] { bn(zeros({2, 3, 4, 4})); }, {"expects input [N, 2, H, W]", "[2, 3, 4, 4]"});
    expect_error([&] { bn(zeros({1, 2, 1, 1})); }, {"more than 1 value per channel"});
    EXPECT_EQ(names_of(bn.named_buffers()),
              (std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"}));
}

// ---- init --------------------------------------------------------------------------------------

// Mean and (population) standard deviation of a tensor's elements.
std::pair<double, double> moments(const Tensor& t) {
    const std::vector<double> v = t.to(DType::f64).to_vector<double>();
    double s = 0.0, s2 = 0.0;
    for (double e : v) {
        s += e;
        s2 += e * e;
    }
    const double n = static_cast<double>(v.size()), mean = s / n;
    return {mean, std::sqrt(s2 / n - mean * mean)};
}

TEST(Init, GainsAndFans) {
    using nn::init::Nonlinearity;
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::linear), 1.0);
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::sigmoid), 1.0);
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::tanh), 5.0 / 3.0);
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::relu), std::sqrt(2.0));
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::leaky_relu), std::sqrt(2.0 / (1.0 + 1e-4)));
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::leaky_relu, std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
    EXPECT_DOUBLE_EQ(nn::init::calculate_gain(Nonlinearity::selu), 0.75);
    EXPECT_EQ(nn::init::calculate_fan_in_and_fan_out(zeros({5, 3})), (std::pair<int64_t, int64_t>{3, 5}));
    EXPECT_EQ(nn::init::calculate_fan_in_and_fan_out(zeros({16, 3, 5, 5})), (std::pair<int64_t, int64_t>{75, 400}));
    expect_error([] { nn::init::calculate_fan_in_and_fan_out(zeros({5})); }, {"at least 2 dims", "[5]"});
}

TEST(Init, UniformAndNormalHaveTheRequestedMoments) {
    Generator gen(9);
    const Tensor t = empty({200, 500});
    nn::init::uniform_(t, -1.0, 3.0, gen);
    const std::vector<float> v = t.to_vector<float>();
    EXPECT_GE(*std::min_element(v.begin(), v.end()), -1.f);
    EXPECT_LT(*std::max_element(v.begin(), v.end()), 3.f);
    auto [m, s] = moments(t);
    EXPECT_NEAR(m, 1.0, 0.02);
    EXPECT_NEAR(s, 4.0 / std::sqrt(12.0), 0.01);
    nn::init::normal_(t, 2.0, 0.5, gen);
    std::tie(m, s) = moments(t);
    EXPECT_NEAR(m, 2.0, 0.01);
    EXPECT_NEAR(s, 0.5, 0.01);
    nn::init::zeros_(t);
    EXPECT_EQ(moments(t), (std::pair<double, double>{0.0, 0.0}));
    nn::init::ones_(t);
    EXPECT_EQ(moments(t).first, 1.0);
}

TEST(Init, KaimingAndXavierScales) {
    using nn::init::FanMode;
    using nn::init::Nonlinearity;
    Generator gen(4);
    const Tensor w = empty({400, 250}, {.dtype = DType::f64});  // fan_in 250, fan_out 400
    nn::init::kaiming_uniform_(w, 0.0, FanMode::fan_in, Nonlinearity::relu, gen);
    const double ku = std::sqrt(2.0) * std::sqrt(3.0 / 250.0);
    const std::vector<double> v = w.to_vector<double>();
    EXPECT_LE(*std::max_element(v.begin(), v.end()), ku);
    EXPECT_GT(*std::max_element(v.begin(), v.end()), 0.99 * ku);
    EXPECT_NEAR(moments(w).second, ku / std::sqrt(3.0), 0.01 * ku);

    nn::init::kaiming_normal_(w, 0.0, FanMode::fan_out, Nonlinearity::relu, gen);
    EXPECT_NEAR(moments(w).second, std::sqrt(2.0 / 400.0), 0.01 * std::sqrt(2.0 / 400.0));

    nn::init::xavier_uniform_(w, 2.0, gen);
    const double xu = 2.0 * std::sqrt(6.0 / 650.0);
    const std::vector<double> x = w.to_vector<double>();
    EXPECT_LE(*std::max_element(x.begin(), x.end()), xu);
    EXPECT_NEAR(moments(w).second, xu / std::sqrt(3.0), 0.01 * xu);

    nn::init::xavier_normal_(w, 1.0, gen);
    EXPECT_NEAR(moments(w).second, std::sqrt(2.0 / 650.0), 0.01 * std::sqrt(2.0 / 650.0));
}

TEST(Init, WorksOnParametersAndKeepsThemLeaves) {
    nn::Linear lin(4, 3);
    nn::init::xavier_uniform_(lin.weight);
    nn::init::zeros_(lin.bias);
    EXPECT_TRUE(lin.weight.requires_grad() && lin.weight.is_leaf());
    EXPECT_EQ(lin.bias.to_vector<float>(), (std::vector<float>(3, 0.f)));
    expect_error([] { nn::init::normal_(zeros({2}, {.dtype = DType::i64})); }, {"normal_", "floating"});
}

}  // namespace
}  // namespace lsg

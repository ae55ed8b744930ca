// What hostile-but-valid input must do (the rejections are in test_bad_input.cpp): empty inner
// dimensions give PyTorch's results, huge strides and batch sizes give the right sizes, autograd
// version counters track in-place writes, a backward seed is converted and never reinterpreted,
// distillation is finite over its whole temperature range, and a killed save's temporary file is
// removed by the next save.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace lsg {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

Tensor leaf64(const Shape& s, uint64_t seed) { return testing::leaf(s, seed); }

// ---- inner dimension 0 -----------------------------------------------------------------------

TEST(EmptyInner, MmOfEmptyInnerDimIsZerosWithZeroGradients) {
    Tensor a = leaf64({2, 0}, 1), b = leaf64({0, 3}, 2);
    Tensor y = mm(a, b);
    ASSERT_EQ(y.shape(), (Shape{2, 3}));
    EXPECT_EQ(y.to_vector<double>(), std::vector<double>(6, 0.0));
    y.sum().backward();
    EXPECT_EQ(a.grad().shape(), (Shape{2, 0}));
    EXPECT_EQ(b.grad().shape(), (Shape{0, 3}));
}

TEST(EmptyInner, BmmAndMatmulOfEmptyInnerDimAreZeros) {
    // batch > 1: the per-batch GEMMs would run inside a parallel region.
    EXPECT_EQ(bmm(zeros({4, 2, 0}), zeros({4, 0, 3})).to_vector<float>(), std::vector<float>(24, 0.0f));
    EXPECT_EQ(matmul(zeros({5, 2, 0}), zeros({0, 3})).shape(), (Shape{5, 2, 3}));
    EXPECT_EQ(matmul(zeros({0}), zeros({0})).item<double>(), 0.0);
}

TEST(EmptyInner, LinearWithNoInputFeaturesIsItsBias) {
    Tensor y = linear(zeros({2, 0}), zeros({3, 0}), tensor({1.f, 2.f, 3.f}));
    EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{1, 2, 3, 1, 2, 3}));
}

TEST(EmptyInner, ConvWithEmptyBatchHasEmptyOutputAndZeroWeightGradient) {
    Tensor x = leaf64({0, 2, 5, 5}, 3), w = leaf64({4, 2, 3, 3}, 4), b = leaf64({4}, 5);
    Tensor y = conv2d(x, w, b);
    ASSERT_EQ(y.shape(), (Shape{0, 4, 3, 3}));  // as torch.nn.functional.conv2d
    y.sum().backward();
    EXPECT_EQ(w.grad().to_vector<double>(), std::vector<double>(72, 0.0));
    EXPECT_EQ(b.grad().to_vector<double>(), std::vector<double>(4, 0.0));
}

TEST(EmptyInner, ConvWithNoInputChannelsIsItsBias) {
    // Σ over an empty channel set is 0, so every output is the bias (zero weight gradient, no
    // input gradient entries).
    Tensor x = leaf64({2, 0, 5, 5}, 6), w = leaf64({3, 0, 3, 3}, 7);
    Tensor b = from_vector<double>({1.0, -2.0, 0.5}, {3}, {.dtype = DType::f64, .requires_grad = true});
    Tensor y = conv2d(x, w, b);
    ASSERT_EQ(y.shape(), (Shape{2, 3, 3, 3}));
    const std::vector<double> v = y.to_vector<double>();
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], (std::vector<double>{1.0, -2.0, 0.5})[(i / 9) % 3]);
    y.sum().backward();
    EXPECT_EQ(w.grad().shape(), (Shape{3, 0, 3, 3}));
    EXPECT_EQ(b.grad().to_vector<double>(), std::vector<double>(3, 18.0));
}

// The kernel shapes are built at run time: GCC 12.2 at -O3 -march=znver3 compiled the literal
// argument {1, 1, 0, 0} here into {1, 1, 1, 1} (seen in the disassembly of this test).
Shape kernel_shape(int64_t o, int64_t kh, int64_t kw) {
    Shape s{o, 1, 1, 1};
    s[2] = kh;
    s[3] = kw;
    return s;
}

TEST(EmptyInner, AZeroSizedKernelIsAnError) {
    testing::expect_error([] { conv2d(zeros({1, 1, 3, 3}), zeros(kernel_shape(1, 0, 0))); }, {"lsg::conv2d", "[0, 0]"});
    testing::expect_error([] { conv2d(zeros({1, 1, 3, 3}), zeros(kernel_shape(2, 0, 2))); }, {"lsg::conv2d", "[0, 2]"});
}

// ---- huge sizes that are valid ----------------------------------------------------------------

TEST(HugeSizes, ConvWithAHugeStrideHasOneOutputPosition) {
    Tensor x = leaf64({1, 1, 5, 5}, 8);
    Tensor w = ones({1, 1, 3, 3}, {.dtype = DType::f64, .requires_grad = true});
    Tensor y = conv2d(x, w, Tensor(), {kMax, kMax});
    ASSERT_EQ(y.shape(), (Shape{1, 1, 1, 1}));  // PyTorch: (5 - 3) / s + 1 = 1
    const Tensor window = x.detach().narrow(2, 0, 3).narrow(3, 0, 3);
    EXPECT_DOUBLE_EQ(y.item<double>(), window.sum().item<double>());
    y.backward();
    const std::vector<double> dx = x.grad().to_vector<double>();
    for (int64_t i = 0; i < 25; ++i) EXPECT_EQ(dx[static_cast<size_t>(i)], (i / 5 < 3 && i % 5 < 3) ? 1.0 : 0.0) << i;
}

TEST(HugeSizes, MaxPoolWithAHugeStrideHasOneOutputPosition) {
    Tensor x = arange(0.0, 16.0, 1.0).view({1, 1, 4, 4});
    Tensor y = max_pool2d(x, {2, 2}, {kMax, kMax});
    ASSERT_EQ(y.shape(), (Shape{1, 1, 1, 1}));
    EXPECT_EQ(y.item<double>(), 5.0);
}

TEST(HugeSizes, SliceWithAHugeStepKeepsOneElement) {
    EXPECT_EQ(arange(int64_t{5}).slice(0, 1, kMax, kMax).to_vector<int64_t>(), (std::vector<int64_t>{1}));
}

TEST(HugeSizes, DataLoaderWithAHugeBatchSizeGivesOneBatch) {
    data::ImageDataset ds{zeros({3, 1, 2, 2}), from_vector<int64_t>({0, 1, 2})};
    data::DataLoader loader(ds, {.batch_size = kMax});
    ASSERT_EQ(loader.size(), 1);
    int64_t batches = 0;
    for (const data::Batch& b : loader) {
        EXPECT_EQ(b.labels.size(0), 3);
        ++batches;
    }
    EXPECT_EQ(batches, 1);
    EXPECT_EQ(data::DataLoader(ds, {.batch_size = kMax, .drop_last = true}).size(), 0);
}

TEST(HugeSizes, ExpandToALargeButRepresentableShapeIsAView) {
    Tensor t = ones({1}).expand({int64_t{1} << 31, int64_t{1} << 31});
    EXPECT_EQ(t.numel(), int64_t{1} << 62);
    EXPECT_EQ(t.stride(0), 0);
}

// ---- autograd version counters ----------------------------------------------------------------

TEST(VersionCounter, InPlaceWritesBumpTheVersionSharedByViews) {
    Tensor w = zeros({2, 2});
    const Tensor view = w.view({4});
    EXPECT_EQ(w.version(), 0u);
    w.fill_(1.0);
    EXPECT_EQ(w.version(), 1u);
    view.select(0, 1).copy_(scalar_tensor(2.0));
    EXPECT_EQ(w.version(), 2u);
    EXPECT_EQ(view.version(), 2u);
    EXPECT_EQ(w.detach().version(), 2u);
    (void)(w * 2.0);  // not in place
    EXPECT_EQ(w.version(), 2u);
}

TEST(VersionCounter, OptimizerStepsAndInitialisersBumpTheVersion) {
    Tensor w = zeros({3}, {.requires_grad = true});
    Generator gen(1);
    nn::init::normal_(w, 0.0, 1.0, gen);
    EXPECT_EQ(w.version(), 1u);
    optim::Adam opt({w});
    (w * w).sum().backward();
    opt.step();
    EXPECT_EQ(w.version(), 2u);
}

TEST(VersionCounter, BackwardAfterTheWriteOfAnUnsavedViewBaseWorks) {
    // A view's backward reads no data: writing to its base before backward is fine (as PyTorch),
    // as long as the op that consumed the view did not save it.
    Tensor w = ones({2, 2}, {.requires_grad = true});
    Tensor y = w.view({4}).select(0, 0);
    w.detach().fill_(7.0);
    y.backward();
    EXPECT_EQ(w.grad().to_vector<float>(), (std::vector<float>{1, 0, 0, 0}));
}

TEST(VersionCounter, ATrainingLoopThatStepsAfterBackwardRaisesNothing) {
    Tensor w = leaf64({3}, 9);
    optim::SGD opt({w}, {.lr = 0.1, .momentum = 0.9});
    for (int i = 0; i < 3; ++i) {
        Tensor loss = (w * w).sum();
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    SUCCEED();
}

// ---- backward seeds --------------------------------------------------------------------------

TEST(BackwardSeed, AFloat64SeedForAFloat32OutputIsConverted) {
    Tensor x = ones({2}, {.requires_grad = true});
    Tensor y = x * 3.0;
    y.backward(from_vector<double>({0.5, -2.0}));
    EXPECT_EQ(x.grad().dtype(), DType::f32);
    EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{1.5f, -6.0f}));
}

TEST(BackwardSeed, AFloat32SeedForAFloat64OutputIsConverted) {
    Tensor x = ones({2}, {.dtype = DType::f64, .requires_grad = true});
    (x * 2.0).backward(tensor({0.25f, 4.0f}));
    EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0.5, 8.0}));
}

// ---- distillation over its temperature range ------------------------------------------------

// α·T²·KL → α/2 · (Var_u(s − t)) as T → ∞ (uniform u over the K classes, per row, batch mean); the
// hard term is (1 − α)·CE(s, y).
TEST(Distillation, LargestTemperatureGivesTheQuadraticLimit) {
    const Tensor s = tensor({1.0f, -2.0f, 0.5f, 3.0f, 0.0f, -1.0f}, {2, 3});
    const Tensor t = tensor({0.0f, 1.0f, 2.0f, -1.0f, 0.5f, 0.25f}, {2, 3});
    const Tensor y = from_vector<int64_t>({2, 0});
    const double alpha = 0.7;
    const double got = distillation_loss(s, t, y, {.temperature = kMaxTemperature, .alpha = alpha}).item<double>();
    const std::vector<float> sv = s.to_vector<float>(), tv = t.to_vector<float>();
    double var_sum = 0.0;
    for (int r = 0; r < 2; ++r) {
        double mean = 0.0, sq = 0.0;
        for (int k = 0; k < 3; ++k) mean += (sv[r * 3 + k] - tv[r * 3 + k]) / 3.0;
        for (int k = 0; k < 3; ++k) sq += std::pow(sv[r * 3 + k] - tv[r * 3 + k] - mean, 2) / 3.0;
        var_sum += sq;
    }
    const double ce = cross_entropy(s, y).item<double>();
    EXPECT_TRUE(std::isfinite(got));
    // The next term of the expansion is O(Δx³/T) ≈ 1e-3 here; the rounding error about 1e-8.
    EXPECT_NEAR(got, alpha * 0.5 * var_sum / 2.0 + (1 - alpha) * ce, 2e-3);
}

TEST(Distillation, TinyTemperatureLeavesTheHardTerm) {
    // T²·KL ≤ T·Δx → 0 as T → 0.
    const Tensor s = tensor({1.0f, -2.0f, 0.5f, 3.0f, 0.0f, -1.0f}, {2, 3});
    const Tensor t = tensor({0.0f, 1.0f, 2.0f, -1.0f, 0.5f, 0.25f}, {2, 3});
    const Tensor y = from_vector<int64_t>({2, 0});
    const double got = distillation_loss(s, t, y, {.temperature = 1e-40, .alpha = 0.4}).item<double>();
    EXPECT_TRUE(std::isfinite(got));
    EXPECT_NEAR(got, 0.6 * cross_entropy(s, y).item<double>(), 1e-6);
    Tensor sg = s.detach().requires_grad_();
    distillation_loss(sg, t, y, {.temperature = 1e-40}).backward();
    for (float g : sg.grad().to_vector<float>()) EXPECT_TRUE(std::isfinite(g));
}

// ---- temporary files of killed saves --------------------------------------------------------

TEST(SaveTemporaries, ASaveRemovesTheTemporaryOfADeadProcessAndKeepsALiveOne) {
    const fs::path dir = fs::temp_directory_path() / ("lsgrad_tmp_sweep_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ASSERT_GT(child, 0);
    ::waitpid(child, nullptr, 0);  // the child is gone: its pid names no process now
    const fs::path target = dir / "model.safetensors";
    const fs::path dead = dir / ("model.safetensors.tmp." + std::to_string(child));
    const fs::path live = dir / "model.safetensors.tmp.1";  // pid 1 always runs
    const fs::path other = dir / ("other.safetensors.tmp." + std::to_string(child));
    for (const fs::path& p : {dead, live, other}) std::ofstream(p) << "partial";
    nn::save_safetensors({{"w", ones({2})}}, target);
    EXPECT_FALSE(fs::exists(dead));
    EXPECT_TRUE(fs::exists(live));
    EXPECT_TRUE(fs::exists(other));  // another file's temporaries are not this save's business
    EXPECT_EQ(nn::load_safetensors(target).at("w").to_vector<float>(), (std::vector<float>{1, 1}));
    fs::remove_all(dir);
}

}  // namespace
}  // namespace lsg

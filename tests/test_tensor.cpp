// Tensor storage, views, factories, printing and the caching allocator.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"
#include "test_util.h"
#include "lsgrad/lsgrad.h"

using namespace lsg;
using lsg::testing::expect_error;

TEST(Tensor, FactoriesHaveShapeDtypeAndValues) {
    Tensor z = zeros({2, 3});
    EXPECT_EQ(z.shape(), (Shape{2, 3}));
    EXPECT_EQ(z.dtype(), DType::f32);
    EXPECT_EQ(z.numel(), 6);
    EXPECT_EQ(z.to_vector<float>(), std::vector<float>(6, 0.f));
    EXPECT_EQ(ones({4}, {.dtype = DType::f64}).to_vector<double>(), std::vector<double>(4, 1.0));
    EXPECT_EQ(full({2}, 2.5).to_vector<float>(), (std::vector<float>{2.5f, 2.5f}));
    EXPECT_EQ(arange(4).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(arange(4).dtype(), DType::i64);
    EXPECT_EQ(arange(1.0, 2.0, 0.25).to_vector<float>(), (std::vector<float>{1.f, 1.25f, 1.5f, 1.75f}));
    EXPECT_EQ(scalar_tensor(3.0).dim(), 0);
    EXPECT_DOUBLE_EQ(scalar_tensor(3.0).item(), 3.0);
    Tensor v = from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
    EXPECT_EQ(v.dtype(), DType::i64);
    EXPECT_EQ(v.shape(), (Shape{2, 3}));
}

TEST(Tensor, StorageIs64ByteAligned) {
    for (int64_t n : {1, 3, 17, 1000, 100000}) {
        Tensor t = empty({n});
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u) << n;
    }
}

TEST(Tensor, CachingAllocatorReusesFreedBlocks) {
    void* first;
    {
        Tensor t = empty({1 << 20});
        first = t.raw_data();
    }
    Tensor again = empty({1 << 20});
    EXPECT_EQ(again.raw_data(), first) << "a freed block of the same size class should be reused";
    EXPECT_GE(cpu_allocator().cached_bytes(), 0u);
}

TEST(Tensor, ContiguousStridesAndNumel) {
    Tensor t = zeros({2, 3, 4});
    EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.size(-1), 4);
    EXPECT_EQ(t.dim(), 3);
    expect_error([&] { (void)t.size(3); }, {"size", "dim 3", "3 dims"});
}

TEST(TensorViews, ShareStorageAndSeeWrites) {
    Tensor base = arange(0.0, 12.0, 1.0).reshape({3, 4});
    Tensor tr = base.t();
    Tensor row = base.select(0, 1);
    Tensor col = base.narrow(1, 2, 1);
    Tensor sq = base.unsqueeze(0);
    Tensor ex = base.narrow(0, 0, 1).expand({5, 4});
    for (const Tensor& v : {tr, row, col, sq, ex}) EXPECT_TRUE(v.shares_storage(base));
    EXPECT_FALSE(tr.is_contiguous());
    base.data<float>()[5] = 100.f;  // element [1, 1]
    EXPECT_EQ(tr.contiguous().to_vector<float>()[1 * 3 + 1], 100.f);
    EXPECT_EQ(row.to_vector<float>()[1], 100.f);
    row.fill_(-1.f);
    EXPECT_EQ(base.to_vector<float>()[4], -1.f);
    EXPECT_EQ(tr.shape(), (Shape{4, 3}));
    EXPECT_EQ(ex.strides()[0], 0);
    EXPECT_EQ(ex.to_vector<float>()[4 * 4 + 3], 3.f);
}

TEST(TensorViews, ReshapeViewPermuteSlice) {
    Tensor x = arange(0.0, 24.0, 1.0).reshape({2, 3, 4});
    EXPECT_EQ(x.reshape({-1, 4}).shape(), (Shape{6, 4}));
    EXPECT_EQ(x.flatten(1).shape(), (Shape{2, 12}));
    Tensor p = x.permute({2, 0, 1});
    EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
    EXPECT_EQ(p.contiguous().to_vector<float>()[1 * 6 + 0 * 3 + 2], 9.f);  // x[0, 2, 1]
    expect_error([&] { (void)p.view({24}); }, {"view", "reshape"});
    EXPECT_EQ(p.reshape({24}).numel(), 24);
    Tensor s = x.slice(2, 1, 4, 2);
    EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
    EXPECT_EQ(s.to_vector<float>()[0], 1.f);
    EXPECT_EQ(s.to_vector<float>()[1], 3.f);
    EXPECT_EQ(x.slice(0, -1, 100).shape(), (Shape{1, 3, 4}));
    EXPECT_EQ(zeros({1, 3, 1}).squeeze().shape(), (Shape{3}));
    EXPECT_EQ(zeros({1, 3, 1}).squeeze(0).shape(), (Shape{3, 1}));
    EXPECT_EQ(zeros({3}).unsqueeze(-1).shape(), (Shape{3, 1}));
    EXPECT_EQ(x.transpose(0, 2).shape(), (Shape{4, 3, 2}));
}

TEST(TensorViews, BadViewsThrowNamingShapes) {
    Tensor x = zeros({2, 3});
    expect_error([&] { (void)x.reshape({4, 2}); }, {"reshape", "[4, 2]", "[2, 3]"});
    expect_error([&] { (void)x.reshape({-1, -1}); }, {"only one dim may be -1"});
    expect_error([&] { (void)x.expand({4, 3}); }, {"expand", "[2, 3]", "[4, 3]"});
    expect_error([&] { (void)x.narrow(1, 2, 2); }, {"narrow", "out of bounds"});
    expect_error([&] { (void)x.permute({0, 0}); }, {"permute", "repeats"});
    expect_error([&] { (void)x.select(0, 5); }, {"select", "index 5"});
    expect_error([&] { (void)zeros({2, 3, 4}).t(); }, {"t", "[2, 3, 4]"});
    expect_error([&] { (void)empty({-1, 2}); }, {"negative size"});
}

TEST(Tensor, DtypeConversionAndItem) {
    Tensor x = tensor({1.5f, -2.25f});
    EXPECT_EQ(x.to(DType::f64).to_vector<double>(), (std::vector<double>{1.5, -2.25}));
    EXPECT_EQ(x.to(DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{1, -2}));
    expect_error([&] { (void)x.item(); }, {"item", "2 elements"});
    expect_error([&] { (void)x.data<double>(); }, {"float32"});
}

TEST(Tensor, CloneIsDeepAndCopyBroadcasts) {
    Tensor x = tensor({1.f, 2.f, 3.f});
    Tensor c = x.clone();
    c.fill_(0.f);
    EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{1.f, 2.f, 3.f}));
    Tensor m = zeros({2, 3});
    m.copy_(x);
    EXPECT_EQ(m.to_vector<float>(), (std::vector<float>{1, 2, 3, 1, 2, 3}));
}

TEST(Tensor, PrintsValuesShapeAndDtype) {
    const std::string s = tensor({1.f, 2.f, 3.f, 4.f}, {2, 2}).str();
    EXPECT_NE(s.find("[[1.0000, 2.0000]"), std::string::npos) << s;
    EXPECT_NE(s.find("shape=[2, 2]"), std::string::npos) << s;
    EXPECT_NE(s.find("float32"), std::string::npos) << s;
    const std::string big = zeros({2000}).str();
    EXPECT_NE(big.find("..."), std::string::npos);
    EXPECT_LT(big.size(), 200u);
    EXPECT_EQ(Tensor().str(), "tensor(undefined)");
}

TEST(Tensor, UndefinedTensorGivesClearError) {
    Tensor t;
    EXPECT_FALSE(t.defined());
    expect_error([&] { (void)t.shape(); }, {"undefined"});
}

TEST(Random, SameSeedSameBitsAndSensibleMoments) {
    Generator a(7), b(7), c(8);
    const auto x = randn({10000}, {}, a).to_vector<float>();
    EXPECT_EQ(x, randn({10000}, {}, b).to_vector<float>());
    EXPECT_NE(x, randn({10000}, {}, c).to_vector<float>());
    double m = 0, v = 0;
    for (float f : x) m += f;
    m /= x.size();
    for (float f : x) v += (f - m) * (f - m);
    v /= x.size();
    EXPECT_NEAR(m, 0.0, 0.05);
    EXPECT_NEAR(v, 1.0, 0.05);
    const auto u = rand({10000}, {}, a).to_vector<float>();
    for (float f : u) ASSERT_TRUE(f >= 0.f && f < 1.f);
    // A second draw continues the stream rather than repeating the first.
    Generator fresh(7);
    EXPECT_NE(u, rand({10000}, {}, fresh).to_vector<float>());
}

TEST(Random, RandpermIsAPermutation) {
    Generator g(3);
    auto p = randperm(100, g).to_vector<int64_t>();
    std::sort(p.begin(), p.end());
    for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(p[i], i);
}

TEST(Cuda, WithoutADeviceSaysWhy) {
    if (cuda_is_available()) GTEST_SKIP() << "a CUDA device is present";
    EXPECT_FALSE(std::string(cuda_unavailable_reason()).empty());
    try {
        (void)zeros({2}).to(Device::cuda());
        ADD_FAILURE() << "expected lsg::Error";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_TRUE(what.find("built without CUDA") != std::string::npos || what.find("CUDA") != std::string::npos) << what;
    }
}

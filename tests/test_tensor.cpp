// Tensor storage, views, factories, printing and the caching allocator.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "gradcheck.h"
#include "test_util.h"
#include "lsgrad/core/block_cache.h"
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

// The CPU allocator's size classes: 64-byte steps up to 4 KiB (a 0-byte request included), then 4 KiB.
TEST(Tensor, CpuAllocatorCachesBySizeClass) {
    Allocator& a = cpu_allocator();
    a.empty_cache();
    EXPECT_EQ(a.cached_bytes(), 0u);
    for (auto [request, cls] : {std::pair<size_t, size_t>{0, 64}, {100, 128}, {4096, 4096}, {4097, 8192}}) {
        void* p = a.allocate(request);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
        a.deallocate(p, request);
        EXPECT_EQ(a.cached_bytes(), cls) << request << " bytes";
        EXPECT_EQ(a.allocate(request), p) << request << " bytes";
        a.deallocate(p, request);
        a.empty_cache();
    }
}

// ---- the free-list cache itself, driven by fake system allocations (no memory, no GPU) -------------

// A fake system: hands out distinct addresses, fails past `limit` live bytes, and records frees.
struct FakeSystem {
    std::mutex mutex;
    uintptr_t next = 0x10000;
    size_t limit = SIZE_MAX;
    size_t live_bytes = 0;
    std::map<void*, size_t> live;
    int allocs = 0, frees = 0;

    void* alloc(size_t n) {
        std::lock_guard lock(mutex);
        if (live_bytes + n > limit) return nullptr;
        void* p = reinterpret_cast<void*>(next);
        next += n + 64;
        live[p] = n;
        live_bytes += n;
        ++allocs;
        return p;
    }
    void free(void* p) {
        std::lock_guard lock(mutex);
        auto it = live.find(p);
        ASSERT_NE(it, live.end()) << "freed a block the system never gave out (or freed it twice)";
        live_bytes -= it->second;
        live.erase(it);
        ++frees;
    }
};

// Classes of 100 bytes up to 1000, then of 1000; at most `cap` bytes cached.
std::unique_ptr<detail::BlockCache> fake_cache(FakeSystem& sys, size_t cap = SIZE_MAX) {
    return std::make_unique<detail::BlockCache>(
        detail::BlockCache::Config{.small_step = 100, .small_limit = 1000, .large_step = 1000, .max_cached = cap},
        [&sys](size_t n) { return sys.alloc(n); }, [&sys](void* p) { sys.free(p); });
}

TEST(BlockCache, SizeClasses) {
    FakeSystem sys;
    auto cache = fake_cache(sys);
    EXPECT_EQ(cache->size_class(0), 100u);
    EXPECT_EQ(cache->size_class(1), 100u);
    EXPECT_EQ(cache->size_class(100), 100u);
    EXPECT_EQ(cache->size_class(101), 200u);
    EXPECT_EQ(cache->size_class(1000), 1000u);
    EXPECT_EQ(cache->size_class(1001), 2000u);
    void* p = cache->allocate(150);
    EXPECT_EQ(sys.live.at(p), 200u);
}

TEST(BlockCache, ReusesABlockOfTheSameClass) {
    FakeSystem sys;
    auto cache = fake_cache(sys);
    void* a = cache->allocate(150);
    cache->deallocate(a, 150);
    EXPECT_EQ(cache->cached_bytes(), 200u);
    EXPECT_EQ(sys.frees, 0);
    EXPECT_EQ(cache->allocate(101), a);  // 101 and 150 share the class 200
    EXPECT_EQ(sys.allocs, 1);
    EXPECT_EQ(cache->cached_bytes(), 0u);
    void* b = cache->allocate(250);  // another class: a fresh block
    EXPECT_NE(b, a);
    EXPECT_EQ(sys.allocs, 2);
    cache->deallocate(a, 150);
    cache->deallocate(b, 250);
    EXPECT_EQ(cache->cached_bytes(), 500u);
    EXPECT_EQ(cache->allocate(300), b);
    EXPECT_EQ(cache->allocate(200), a);
    cache->deallocate(nullptr, 100);
    EXPECT_EQ(cache->cached_bytes(), 0u);
}

TEST(BlockCache, EvictsOlderBlocksToKeepTheOneJustFreed) {
    FakeSystem sys;
    auto cache = fake_cache(sys, 1000);
    void* a = cache->allocate(300);
    void* b = cache->allocate(300);
    void* c = cache->allocate(300);
    void* d = cache->allocate(400);
    cache->deallocate(a, 300);
    cache->deallocate(b, 300);
    cache->deallocate(c, 300);
    EXPECT_EQ(cache->cached_bytes(), 900u);
    EXPECT_EQ(sys.frees, 0);
    // 900 + 400 > 1000: one 300-byte block goes back to the system, d stays.
    cache->deallocate(d, 400);
    EXPECT_EQ(sys.frees, 1);
    EXPECT_EQ(cache->cached_bytes(), 1000u);
    EXPECT_EQ(sys.live.size(), 4u - 1u);
    EXPECT_TRUE(sys.live.count(d));
    EXPECT_EQ(cache->allocate(400), d);
    EXPECT_EQ(sys.allocs, 4);
    // A block larger than the whole cache goes straight back, and evicts nothing.
    void* big = cache->allocate(1500);
    cache->deallocate(big, 1500);
    EXPECT_EQ(sys.frees, 2);
    EXPECT_FALSE(sys.live.count(big));
    EXPECT_EQ(cache->cached_bytes(), 600u);
}

TEST(BlockCache, EmptyCacheReleasesEveryCachedBlock) {
    FakeSystem sys;
    auto cache = fake_cache(sys);
    void* in_use = cache->allocate(50);
    for (size_t n : {100, 100, 700, 5000}) cache->deallocate(cache->allocate(n), n);
    void* a = cache->allocate(100);
    void* b = cache->allocate(100);
    cache->deallocate(a, 100);
    cache->deallocate(b, 100);
    EXPECT_EQ(cache->cached_bytes(), 100u + 100u + 700u + 5000u);
    EXPECT_EQ(cache->empty_cache(), 5900u);
    EXPECT_EQ(cache->cached_bytes(), 0u);
    EXPECT_EQ(sys.live.size(), 1u);  // only the block still in use
    EXPECT_TRUE(sys.live.count(in_use));
    // The destructor releases what is cached then.
    cache->deallocate(in_use, 50);
    cache.reset();
    EXPECT_TRUE(sys.live.empty());
}

TEST(BlockCache, OutOfMemoryEmptiesTheCacheAndRetriesOnce) {
    FakeSystem sys;
    sys.limit = 1000;
    auto cache = fake_cache(sys);
    void* a = cache->allocate(600);
    cache->deallocate(a, 600);
    size_t released = 0;
    void* b = cache->allocate(700, &released);  // 600 live + 700 > 1000: the cached 600 go first
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(released, 600u);
    EXPECT_EQ(cache->cached_bytes(), 0u);
    released = 0;
    EXPECT_EQ(cache->allocate(400, &released), nullptr);  // nothing cached to give back
    EXPECT_EQ(released, 0u);
    cache->deallocate(b, 700);
}

TEST(BlockCache, ThreadsShareItSafely) {
    FakeSystem sys;
    auto cache = fake_cache(sys, 20000);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                const size_t n = static_cast<size_t>(100 * (1 + (i + t) % 30));
                void* p = cache->allocate(n);
                ASSERT_NE(p, nullptr);
                cache->deallocate(p, n);
            }
        });
    for (auto& th : threads) th.join();
    EXPECT_LE(cache->cached_bytes(), 20000u);
    size_t live = 0;
    for (auto& [p, n] : sys.live) live += n;
    EXPECT_EQ(live, cache->cached_bytes());  // every live block is cached: none lost, none twice
    cache.reset();
    EXPECT_TRUE(sys.live.empty());
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

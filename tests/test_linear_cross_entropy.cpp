// Fused linear cross-entropy (ops/linear_cross_entropy.h): equal to the unfused composition
// cross_entropy(linear(h, W, b)) in f64 for every option, block size and shape; f64 central
// differences for the gradients; mixed targets against mixup_targets + soft_target_cross_entropy;
// z-loss and soft-cap against the composed formula; the allocator's peak bounded by the block;
// every bad input an lsg::Error.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "lsgrad/core/block_cache.h"
#include "test_util.h"

namespace lsg {
namespace {

using testing::expect_error;
using testing::gradcheck;
using testing::leaf;

struct Shape3 {
    int64_t N, H, V;
};

// Seeded class targets in [0, V), with the rows listed in `ignored` set to ignore_index.
Tensor targets(int64_t N, int64_t V, uint64_t seed, const std::vector<int64_t>& ignored = {},
               int64_t ignore_index = -100) {
    std::vector<int64_t> y(static_cast<size_t>(N));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& v : y) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v = static_cast<int64_t>((s >> 33) % static_cast<uint64_t>(V));
    }
    for (int64_t i : ignored)
        if (i < N) y[static_cast<size_t>(i)] = ignore_index;
    return from_vector<int64_t>(y, {N});
}

Tensor fresh(const Tensor& t) {
    Tensor c = t.detach().clone();
    c.requires_grad_();
    return c;
}

void expect_near_all(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
    ASSERT_TRUE(a.defined()) << what;
    ASSERT_TRUE(b.defined()) << what;
    ASSERT_EQ(a.shape(), b.shape()) << what;
    const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
    int bad = 0;
    for (size_t i = 0; i < x.size(); ++i)
        if (!(std::abs(x[i] - y[i]) <= tol * (1.0 + std::abs(y[i]))) && ++bad <= 4)
            ADD_FAILURE() << what << " element " << i << ": fused " << x[i] << ", reference " << y[i];
}

// Upstream gradient for a loss: 1 for a reduced loss, distinct per-row values for None.
Tensor upstream(const Tensor& loss) {
    if (loss.dim() == 0) return Tensor();
    std::vector<double> g(static_cast<size_t>(loss.numel()));
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0.5 + 0.25 * static_cast<double>(i % 5);
    return from_vector<double>(g, loss.shape(), {.dtype = loss.dtype()});
}

// Compares the fused op with the unfused composition: loss and the gradients of h, W and b.
void compare_with_unfused(Shape3 s, const Tensor& y, const LinearCrossEntropyOptions& o, bool with_bias,
                          const std::string& what, double tol = 1e-11) {
    const Tensor h = leaf({s.N, s.H}, 1), W = leaf({s.V, s.H}, 2, 0.7), b = leaf({s.V}, 3, 0.5);
    const Tensor h2 = fresh(h), W2 = fresh(W), b2 = fresh(b);
    const Tensor fused = linear_cross_entropy(h, W, y, o, with_bias ? b : Tensor());
    const CrossEntropyOptions& ce = o;
    const Tensor ref = cross_entropy(linear(h2, W2, with_bias ? b2 : Tensor()), y, ce);
    expect_near_all(fused, ref, tol, what + " loss");
    fused.backward(upstream(fused));
    ref.backward(upstream(ref));
    expect_near_all(h.grad(), h2.grad(), tol, what + " dh");
    expect_near_all(W.grad(), W2.grad(), tol, what + " dW");
    if (with_bias) expect_near_all(b.grad(), b2.grad(), tol, what + " db");
}

// ---- equality with the unfused composition on a grid -------------------------------------------

TEST(LinearCrossEntropy, EqualsUnfusedOnEveryOption) {
    const Shape3 shapes[] = {{1, 3, 7}, {13, 5, 37}, {6, 4, 16}, {5, 9, 23}};
    // {rows, classes} blocks: whole rows, classes not dividing V, one class per block; one row block
    // in class chunks with N ≤ H (1×1 at N = 1, 5×16 at N = 5) keeps the logits in dW.
    const std::pair<std::optional<int64_t>, std::optional<int64_t>> chunks[] = {
        {std::nullopt, std::nullopt}, {4, 8}, {1, 1}, {5, 16}};
    const Reduction reductions[] = {Reduction::None, Reduction::Sum, Reduction::Mean};
    int cases = 0;
    for (const Shape3& s : shapes)
        for (const auto& [cr, cc] : chunks)
            for (int conv = 0; conv < 3; ++conv)  // Uniform, OffTarget, OffTarget + padding
                for (double eps : {0.0, 0.1})
                    for (bool weighted : {false, true})
                        for (Reduction r : reductions) {
                            LinearCrossEntropyOptions o;
                            o.label_smoothing = eps;
                            o.smoothing = conv == 0 ? Smoothing::Uniform : Smoothing::OffTarget;
                            if (conv == 2) o.padding_idx = 2;
                            o.reduction = r;
                            o.chunk_rows = cr;
                            o.chunk_classes = cc;
                            if (weighted) o.weight = affine(rand({s.V}, {.dtype = DType::f64}), 1.5, 0.25);
                            // Rows 0 and 3 ignored; with padding, row 1's target is the padding class.
                            Tensor y = targets(s.N, s.V, 7 + cases % 5, {0, 3});
                            if (conv == 2 && s.N > 1) {
                                std::vector<int64_t> v = y.to_vector<int64_t>();
                                v[1] = 2;
                                y = from_vector<int64_t>(v, {s.N});
                            }
                            const std::string what = "N" + std::to_string(s.N) + " V" + std::to_string(s.V) +
                                                     " chunk " + std::to_string(cr.value_or(0)) + "x" +
                                                     std::to_string(cc.value_or(0)) + " conv " +
                                                     std::to_string(conv) + " eps " + std::to_string(eps) +
                                                     " weighted " + std::to_string(weighted) + " reduction " +
                                                     std::to_string(int(r));
                            compare_with_unfused(s, y, o, (cases % 2) == 0, what);
                            ++cases;
                        }
    EXPECT_EQ(cases, 4 * 4 * 3 * 2 * 2 * 3);
}

TEST(LinearCrossEntropy, BiasAndNoBias) {
    LinearCrossEntropyOptions o;
    o.label_smoothing = 0.2;
    o.chunk_rows = 3;
    o.chunk_classes = 5;
    for (bool bias : {false, true}) compare_with_unfused({9, 6, 23}, targets(9, 23, 4), o, bias, "bias");
}

TEST(LinearCrossEntropy, AllRowsIgnoredGivesZeroAndZeroGradients) {
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
        LinearCrossEntropyOptions o;
        o.label_smoothing = 0.1;
        o.z_loss = 0.01;
        o.reduction = r;
        o.chunk_classes = 4;
        const Tensor h = leaf({5, 3}, 1), W = leaf({10, 3}, 2), b = leaf({10}, 3);
        const Tensor y = targets(5, 10, 1, {0, 1, 2, 3, 4});
        const Tensor loss = linear_cross_entropy(h, W, y, o, b);
        for (double v : loss.to_vector<double>()) EXPECT_EQ(v, 0.0);
        loss.backward(upstream(loss));
        for (const Tensor& g : {h.grad(), W.grad(), b.grad()})
            for (double v : g.to_vector<double>()) EXPECT_EQ(v, 0.0);
        compare_with_unfused({5, 3, 10}, y, [&] {
            LinearCrossEntropyOptions p = o;
            p.z_loss = 0.0;
            return p;
        }(), true, "all ignored");
    }
}

TEST(LinearCrossEntropy, EmptyBatch) {
    const Tensor h = leaf({0, 4}, 1), W = leaf({6, 4}, 2), b = leaf({6}, 3);
    const Tensor loss = linear_cross_entropy(h, W, from_vector<int64_t>({}, {0}), {}, b);
    EXPECT_EQ(loss.item<double>(), 0.0);
    loss.backward();
    for (double v : W.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
    for (double v : b.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(LinearCrossEntropy, Float32MatchesFloat64Reference) {
    // Whole-row blocks (the exponentials kept for the gradient) and class blocks (recomputed), on
    // every instruction set of the CPU kernels this CPU runs.
    for (detail::CpuIsa isa : testing::supported_cpu_isas())
    for (std::optional<int64_t> cc : {std::optional<int64_t>(), std::optional<int64_t>(100)}) {
        const testing::CpuIsaScope scope(isa);
        const int64_t N = 37, H = 24, V = 1000;
        const Tensor h = leaf({N, H}, 1), W = leaf({V, H}, 2, 0.3), b = leaf({V}, 3);
        const Tensor y = targets(N, V, 5, {4});
        LinearCrossEntropyOptions o;
        o.label_smoothing = 0.1;
        o.chunk_rows = 8;
        o.chunk_classes = cc;
        Tensor h32 = h.detach().to(DType::f32), W32 = W.detach().to(DType::f32), b32 = b.detach().to(DType::f32);
        h32.requires_grad_();
        W32.requires_grad_();
        b32.requires_grad_();
        const Tensor l32 = linear_cross_entropy(h32, W32, y, o, b32);
        const Tensor l64 = linear_cross_entropy(h, W, y, o, b);
        l32.backward();
        l64.backward();
        expect_near_all(l32, l64, 1e-5, "f32 loss");
        expect_near_all(h32.grad(), h.grad(), 1e-5, "f32 dh");
        expect_near_all(W32.grad(), W.grad(), 1e-5, "f32 dW");
        expect_near_all(b32.grad(), b.grad(), 1e-5, "f32 db");
    }
}

TEST(LinearCrossEntropy, LargeBiasShiftDoesNotChangeTheLoss) {
    // A common shift of every logit by 1e4 (through the bias) cancels in the loss.
    const int64_t N = 6, H = 4, V = 50;
    const Tensor h = leaf({N, H}, 1), W = leaf({V, H}, 2);
    const Tensor y = targets(N, V, 2);
    LinearCrossEntropyOptions o;
    o.label_smoothing = 0.1;
    o.chunk_classes = 16;
    const Tensor a = linear_cross_entropy(h.detach(), W.detach(), y, o, zeros({V}, {.dtype = DType::f64}));
    const Tensor b = linear_cross_entropy(h.detach(), W.detach(), y, o, full({V}, 1e4, {.dtype = DType::f64}));
    EXPECT_NEAR(a.item<double>(), b.item<double>(), 1e-9);
}

// ---- gradient checks ------------------------------------------------------------------------------

TEST(LinearCrossEntropy, GradcheckHiddenWeightBias) {
    const int64_t N = 5, H = 3, V = 11;
    int cases = 0;
    for (Reduction r : {Reduction::None, Reduction::Sum, Reduction::Mean})
        for (int variant = 0; variant < 4; ++variant) {  // plain, z-loss, soft-cap, mixed
            LinearCrossEntropyOptions o;
            o.label_smoothing = 0.15;
            o.reduction = r;
            o.chunk_rows = 2;
            o.chunk_classes = 4;
            o.weight = affine(rand({V}, {.dtype = DType::f64}), 1.0, 0.5);
            if (variant == 1) o.z_loss = 0.05;
            if (variant == 2) o.softcap = 1.5;
            const Tensor y = targets(N, V, 3, {2});
            const Tensor yb = targets(N, V, 9);
            const Tensor lam = from_vector<double>({0.2, 0.9, 0.5, 1.0, 0.0}, {N});
            auto f = [&](const std::vector<Tensor>& in) {
                if (variant == 3) return linear_cross_entropy(in[0], in[1], MixedTargets{y, yb, lam}, o, in[2]);
                return linear_cross_entropy(in[0], in[1], y, o, in[2]);
            };
            EXPECT_TRUE(gradcheck(f, {leaf({N, H}, 11), leaf({V, H}, 12), leaf({V}, 13)}))
                << "reduction " << int(r) << " variant " << variant;
            ++cases;
        }
    EXPECT_EQ(cases, 12);
}

// ---- mixed targets -----------------------------------------------------------------------------

TEST(LinearCrossEntropy, MixedTargetsEqualMixupTargetsWithSoftTargetCrossEntropy) {
    const int64_t N = 8, H = 5, V = 19;
    const Tensor y = targets(N, V, 6);
    std::vector<int64_t> rev = y.to_vector<int64_t>();
    std::reverse(rev.begin(), rev.end());
    const Tensor yb = from_vector<int64_t>(rev, {N});
    for (double eps : {0.0, 0.1})
        for (bool per_row : {false, true}) {
            const Tensor lam = per_row ? from_vector<double>({0.1, 0.5, 0.9, 1.0, 0.0, 0.3, 0.7, 0.6}, {N})
                                       : scalar_tensor(0.35, {.dtype = DType::f64});
            const Tensor h = leaf({N, H}, 1), W = leaf({V, H}, 2), b = leaf({V}, 3);
            const Tensor h2 = fresh(h), W2 = fresh(W), b2 = fresh(b);
            LinearCrossEntropyOptions o;
            o.label_smoothing = eps;
            o.chunk_classes = 7;
            const Tensor fused = linear_cross_entropy(h, W, MixedTargets{y, yb, lam}, o, b);
            const Tensor q = per_row ? mixup_targets(y, V, lam, eps, DType::f64)
                                     : mixup_targets(y, V, 0.35, eps, DType::f64);
            const Tensor ref = soft_target_cross_entropy(linear(h2, W2, b2), q);
            expect_near_all(fused, ref, 1e-11, "mixed loss");
            fused.backward();
            ref.backward();
            expect_near_all(h.grad(), h2.grad(), 1e-11, "mixed dh");
            expect_near_all(W.grad(), W2.grad(), 1e-11, "mixed dW");
            expect_near_all(b.grad(), b2.grad(), 1e-11, "mixed db");
        }
}

TEST(LinearCrossEntropy, MixedWithLambdaOneIsUnmixed) {
    const int64_t N = 6, H = 4, V = 13;
    const Tensor h = leaf({N, H}, 1), W = leaf({V, H}, 2);
    const Tensor y = targets(N, V, 1, {2}), yb = targets(N, V, 8);
    LinearCrossEntropyOptions o;
    o.label_smoothing = 0.1;
    o.smoothing = Smoothing::OffTarget;
    o.weight = affine(rand({V}, {.dtype = DType::f64}), 1.0, 0.5);
    const Tensor a = linear_cross_entropy(h.detach(), W.detach(), y, o);
    const Tensor b = linear_cross_entropy(h.detach(), W.detach(), MixedTargets{y, yb, scalar_tensor(1.0, {.dtype = DType::f64})}, o);
    EXPECT_NEAR(a.item<double>(), b.item<double>(), 1e-12);
}

// ---- z-loss and soft-cap against the composed formula -------------------------------------------

TEST(LinearCrossEntropy, ZLossAndSoftcapMatchComposition) {
    const int64_t N = 7, H = 4, V = 29;
    const Tensor y = targets(N, V, 3);
    for (double z : {0.0, 1e-3, 0.1})
        for (double cap : {0.0, 2.0, 30.0})
            for (Reduction r : {Reduction::Sum, Reduction::Mean}) {
                const Tensor h = leaf({N, H}, 1), W = leaf({V, H}, 2, 2.0), b = leaf({V}, 3);
                const Tensor h2 = fresh(h), W2 = fresh(W), b2 = fresh(b);
                LinearCrossEntropyOptions o;
                o.label_smoothing = 0.1;
                o.z_loss = z;
                o.softcap = cap;
                o.reduction = r;
                o.chunk_classes = 8;
                const Tensor fused = linear_cross_entropy(h, W, y, o, b);
                Tensor x = linear(h2, W2, b2);
                if (cap > 0) x = tanh(x / cap) * cap;
                CrossEntropyOptions ce;
                ce.label_smoothing = 0.1;
                ce.reduction = Reduction::None;
                const Tensor lse = log(sum(exp(x), {1}));
                Tensor rows = cross_entropy(x, y, ce) + lse * lse * z;
                const Tensor ref = r == Reduction::Sum ? sum(rows) : mean(rows);
                expect_near_all(fused, ref, 1e-11, "z/cap loss");
                fused.backward();
                ref.backward();
                expect_near_all(h.grad(), h2.grad(), 1e-10, "z/cap dh");
                expect_near_all(W.grad(), W2.grad(), 1e-10, "z/cap dW");
                expect_near_all(b.grad(), b2.grad(), 1e-10, "z/cap db");
            }
}

TEST(LinearCrossEntropy, ModuleEqualsFunction) {
    LinearCrossEntropyOptions o;
    o.label_smoothing = 0.1;
    o.z_loss = 1e-4;
    const nn::LinearCrossEntropyLoss loss(o);
    const Tensor h = leaf({4, 3}, 1), W = leaf({9, 3}, 2), b = leaf({9}, 3);
    const Tensor y = targets(4, 9, 2);
    EXPECT_EQ(loss(h, W, y, b).item<double>(), linear_cross_entropy(h, W, y, o, b).item<double>());
    const MixedTargets m{y, targets(4, 9, 5), scalar_tensor(0.25, {.dtype = DType::f64})};
    EXPECT_EQ(loss(h, W, m).item<double>(), linear_cross_entropy(h, W, m, o).item<double>());
}

// ---- memory -----------------------------------------------------------------------------------

// An f32 head h [N, H], W [V, H], b [V] of normal draws, all requiring gradients, and the bytes of
// those gradients.
struct Head {
    Tensor h, W, b;
    size_t grad_bytes;
};
Head f32_head(int64_t N, int64_t H, int64_t V, uint64_t seed) {
    Generator gen(seed);
    Head head{randn({N, H}, {}, gen), randn({V, H}, {}, gen), randn({V}, {}, gen),
              size_t(N * H + V * H + V) * sizeof(float)};
    for (Tensor* t : {&head.h, &head.W, &head.b}) t->requires_grad_();
    return head;
}

TEST(LinearCrossEntropy, PeakMemoryIsBoundedByTheBlockNotByNTimesV) {
    const int64_t N = 256, H = 16, V = 4096;
    auto [h, W, b, grads] = f32_head(N, H, V, 3);
    const Tensor y = targets(N, V, 1);
    LinearCrossEntropyOptions o;
    o.label_smoothing = 0.1;
    o.chunk_rows = 16;
    o.chunk_classes = 512;
    Allocator& a = cpu_allocator();
    const size_t logits = size_t(N * V) * sizeof(float);
    const size_t block = size_t(16 * 512) * sizeof(float);
    {
        a.reset_peak();
        const size_t before = a.allocated_bytes();
        const Tensor loss = linear_cross_entropy(h, W, y, o, b);
        loss.backward();
        const size_t extra = a.peak_allocated_bytes() - before;
        // The gradients of h, W and b (the leaves adopt the op's buffers), the block, the loss and a
        // few size classes of rounding: nothing of N×V.
        EXPECT_LE(extra, grads + block + 64 * 1024) << "logits would be " << logits;
        EXPECT_LT(extra, logits);
    }
    {
        // The unfused composition holds the logits and their gradient: the counter sees them.
        h.zero_grad();
        W.zero_grad();
        b.zero_grad();
        a.reset_peak();
        const size_t before = a.allocated_bytes();
        const Tensor loss = cross_entropy(linear(h, W, b), y, o);
        loss.backward();
        EXPECT_GE(a.peak_allocated_bytes() - before, 2 * logits);
    }
}

TEST(LinearCrossEntropy, PeakMemoryOfTheScheduleStagedInTheWeightGradient) {
    // N ≤ H with class chunks: the chunks' logits live in dW, the block holds one chunk's gradient.
    const int64_t N = 64, H = 64, V = 4096, chunk = 512;
    auto [h, W, b, grads] = f32_head(N, H, V, 4);
    const Tensor y = targets(N, V, 2);
    LinearCrossEntropyOptions o;
    o.label_smoothing = 0.1;
    o.chunk_classes = chunk;
    Allocator& a = cpu_allocator();
    const size_t block = size_t(N * chunk) * sizeof(float);
    a.reset_peak();
    const size_t before = a.allocated_bytes();
    const Tensor loss = linear_cross_entropy(h, W, y, o, b);
    loss.backward();
    EXPECT_LE(a.peak_allocated_bytes() - before, grads + block + 64 * 1024);
    const Tensor h2 = fresh(h), W2 = fresh(W), b2 = fresh(b);
    const CrossEntropyOptions& ce = o;
    const Tensor ref = cross_entropy(linear(h2, W2, b2), y, ce);
    ref.backward();
    expect_near_all(loss, ref, 1e-5, "loss");
    expect_near_all(W.grad(), W2.grad(), 1e-5, "dW");
    expect_near_all(h.grad(), h2.grad(), 1e-5, "dh");
    expect_near_all(b.grad(), b2.grad(), 1e-5, "db");
}

TEST(LinearCrossEntropy, DefaultBlockFitsTheBudgetAtLanguageModelShapes) {
    const Shape3 shapes[] = {{4096, 768, 50257}, {1024, 2048, 128256}, {512, 2304, 256000}, {8192, 4096, 1000000}};
    const int64_t budget = kLinearCrossEntropyBlockBytes / 4;
    EXPECT_LE(kLinearCrossEntropyBlockBytes, int64_t(64) << 20);
    for (const Shape3& s : shapes)
        for (bool weight_grad : {false, true}) {
            const LinearCrossEntropyChunks c = linear_cross_entropy_default_chunks(s.N, s.H, s.V, 4, weight_grad);
            EXPECT_LE(c.rows * c.classes, budget) << s.V;
            EXPECT_GE(c.rows, 1);
            EXPECT_GE(c.classes, 1);
            if (weight_grad && s.N <= s.H) {
                // All rows in class chunks, staged in dW.
                EXPECT_EQ(c.rows, s.N) << s.V;
                EXPECT_EQ(c.classes, budget / s.N) << s.V;
            } else if (s.V <= 256000) {
                EXPECT_EQ(c.classes, s.V) << "whole rows at V = " << s.V;
                EXPECT_EQ(c.rows, budget / s.V) << s.V;
            }
        }
    const LinearCrossEntropyChunks small = linear_cross_entropy_default_chunks(100, 8, 10, 4, true);
    EXPECT_EQ(small.rows, 100);
    EXPECT_EQ(small.classes, 10);
}

TEST(BlockCachePeak, CountsBytesInUseAndTheirMaximum) {
    detail::BlockCache cache({.small_step = 64, .small_limit = 4096, .large_step = 4096, .max_cached = 1 << 20},
                             [](size_t n) { return std::malloc(n); }, [](void* p) { std::free(p); });
    void* a = cache.allocate(100);   // class 128
    void* b = cache.allocate(5000);  // class 8192
    EXPECT_EQ(cache.in_use_bytes(), 128u + 8192u);
    cache.deallocate(b, 5000);
    EXPECT_EQ(cache.in_use_bytes(), 128u);
    EXPECT_EQ(cache.peak_in_use_bytes(), 128u + 8192u);
    cache.reset_peak();
    EXPECT_EQ(cache.peak_in_use_bytes(), 128u);
    void* c = cache.allocate(5000);  // from the cache, still counted
    EXPECT_EQ(cache.peak_in_use_bytes(), 128u + 8192u);
    cache.deallocate(c, 5000);
    cache.deallocate(a, 100);
    EXPECT_EQ(cache.in_use_bytes(), 0u);
}

// ---- bad input ----------------------------------------------------------------------------------

TEST(LinearCrossEntropy, BadInputsAreClearErrors) {
    const Tensor h = leaf({4, 3}, 1), W = leaf({9, 3}, 2), b = leaf({9}, 3);
    const Tensor y = targets(4, 9, 2);
    const char* op = "linear_cross_entropy";
    auto with = [](auto set) {
        LinearCrossEntropyOptions o;
        set(o);
        return o;
    };
    expect_error([&] { linear_cross_entropy(Tensor(), W, y); }, {op, "hidden is an undefined tensor"});
    expect_error([&] { linear_cross_entropy(h.to(DType::f32), W, y); }, {op, "weight is float64", "hidden is float32"});
    expect_error([&] { linear_cross_entropy(h, leaf({9, 4}, 2), y); }, {op, "[9, 4]", "[4, 3]", "H = 3"});
    expect_error([&] { linear_cross_entropy(h.view({12}), W, y); }, {op, "hidden must have shape [N, H]", "[12]"});
    expect_error([&] { linear_cross_entropy(h, W, y, {}, leaf({8}, 3)); }, {op, "bias must have shape [9]", "[8]"});
    expect_error([&] { linear_cross_entropy(h, W, y.to(DType::f64)); }, {op, "target must be int64 [4]", "float64"});
    expect_error([&] { linear_cross_entropy(h, W, targets(5, 9, 1)); }, {op, "target must be int64 [4]", "[5]"});
    expect_error([&] { linear_cross_entropy(h, W, from_vector<int64_t>({0, 9, 1, 2}, {4})); },
                 {op, "target 9 of row 1", "[0, 9)"});
    expect_error([&] { linear_cross_entropy(h, W, from_vector<int64_t>({0, 1, -3, 2}, {4})); },
                 {op, "target -3 of row 2"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.label_smoothing = -0.1; })); },
                 {op, "label_smoothing", "-0.1"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.label_smoothing = NAN; })); },
                 {op, "label_smoothing", "nan"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.z_loss = -1.0; })); }, {op, "z_loss", "-1"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.z_loss = NAN; })); }, {op, "z_loss", "nan"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.softcap = -2.0; })); }, {op, "softcap", "-2"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.softcap = INFINITY; })); },
                 {op, "softcap", "inf"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.chunk_rows = 0; })); },
                 {op, "chunk_rows must be ≥ 1", "0"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.chunk_classes = -5; })); },
                 {op, "chunk_classes must be ≥ 1", "-5"});
    expect_error([&] { linear_cross_entropy(h, W, y, with([](auto& o) { o.weight = leaf({8}, 1); })); },
                 {op, "weight must have shape [9]"});
    expect_error(
        [&] {
            linear_cross_entropy(h, W, y, with([](auto& o) {
                                     o.smoothing = Smoothing::OffTarget;
                                     o.padding_idx = 9;
                                 }));
        },
        {op, "padding_idx 9"});
    expect_error([&] { linear_cross_entropy(h, leaf({0, 3}, 2), y); }, {op, "at least one class"});
    const Tensor yb = targets(4, 9, 3);
    expect_error([&] { linear_cross_entropy(h, W, MixedTargets{y, yb, scalar_tensor(1.5, {.dtype = DType::f64})}); },
                 {op, "lambda 1.5", "[0, 1]"});
    expect_error([&] { linear_cross_entropy(h, W, MixedTargets{y, yb, scalar_tensor(NAN, {.dtype = DType::f64})}); },
                 {op, "lambda nan"});
    expect_error([&] { linear_cross_entropy(h, W, MixedTargets{y, yb, leaf({3}, 1)}); }, {op, "lambda must have shape", "[3]"});
    expect_error([&] { linear_cross_entropy(h, W, MixedTargets{y, targets(3, 9, 1), scalar_tensor(0.5)}); },
                 {op, "target_b must be int64 [4]"});
    expect_error([&] { linear_cross_entropy(h, W, MixedTargets{y, from_vector<int64_t>({0, 0, 0, 99}, {4}), scalar_tensor(0.5)}); },
                 {op, "target 99 of row 3"});
    expect_error([&] { linear_cross_entropy(h, W, MixedTargets{y, yb, Tensor()}); }, {op, "lambda is an undefined tensor"});
}

// ---- CUDA: the CPU cases on the device --------------------------------------------------------------

// The loss and the gradients of h, W and b (CPU copies) of one call on `device` in `dtype`, from the
// same seeded f64 inputs on every device.
struct LceResult {
    Tensor loss, dh, dW, db;
};

struct LceCase {
    Shape3 s;
    LinearCrossEntropyOptions o;
    bool bias = true;
    bool mixed = false;
    std::vector<int64_t> ignored;
};

LceResult run_on(Device d, DType dtype, const LceCase& c) {
    auto on = [&](const Tensor& t) {
        Tensor x = t.detach().to(dtype).to(d);
        x.requires_grad_();
        return x;
    };
    const Tensor h = on(leaf({c.s.N, c.s.H}, 1)), W = on(leaf({c.s.V, c.s.H}, 2, 0.7)), b = on(leaf({c.s.V}, 3, 0.5));
    LinearCrossEntropyOptions o = c.o;
    if (o.weight.defined()) o.weight = o.weight.to(dtype).to(d);
    Tensor y = targets(c.s.N, c.s.V, 7, c.ignored, o.ignore_index);
    if (o.padding_idx && c.s.N > 1) {
        std::vector<int64_t> v = y.to_vector<int64_t>();
        v[1] = *o.padding_idx;
        y = from_vector<int64_t>(v, {c.s.N});
    }
    std::vector<double> lam(static_cast<size_t>(c.s.N));
    for (size_t i = 0; i < lam.size(); ++i) lam[i] = static_cast<double>(i % 5) / 4.0;  // 0 and 1 included
    const Tensor loss =
        c.mixed ? linear_cross_entropy(h, W,
                                       MixedTargets{y.to(d), targets(c.s.N, c.s.V, 11).to(d),
                                                    from_vector<double>(lam, {c.s.N}).to(dtype).to(d)},
                                       o, c.bias ? b : Tensor())
                : linear_cross_entropy(h, W, y.to(d), o, c.bias ? b : Tensor());
    const Tensor g = upstream(loss);
    loss.backward(g.defined() ? g.to(d) : g);
    const Device cpu = Device::cpu();
    return {loss.detach().to(cpu), h.grad().to(cpu), W.grad().to(cpu), c.bias ? b.grad().to(cpu) : Tensor()};
}

// The options grid of the CPU tests, trimmed to what a GPU check can afford: every smoothing
// convention, padding, ignore_index, class weights, every reduction, mixed targets, z-loss and
// soft-cap, each over whole-row blocks, class blocks not dividing V and one class per block.
std::vector<LceCase> cuda_cases() {
    std::vector<LceCase> cases;
    const Shape3 shapes[] = {{13, 5, 37}, {1, 3, 7}, {6, 4, 16}};
    const std::pair<std::optional<int64_t>, std::optional<int64_t>> chunks[] = {
        {std::nullopt, std::nullopt}, {4, 8}, {5, 16}, {1, 1}};
    const Reduction reductions[] = {Reduction::None, Reduction::Sum, Reduction::Mean};
    int n = 0;
    for (int conv = 0; conv < 3; ++conv)  // Uniform, OffTarget, OffTarget + padding
        for (double eps : {0.0, 0.1})
            for (bool weighted : {false, true})
                for (Reduction r : reductions) {
                    LceCase c;
                    // One class per block on the smallest shape: a launch per class is slow under
                    // compute-sanitizer.
                    c.s = n % 4 == 3 ? Shape3{1, 3, 7} : shapes[n % 3];
                    c.o.label_smoothing = eps;
                    c.o.smoothing = conv == 0 ? Smoothing::Uniform : Smoothing::OffTarget;
                    if (conv == 2) c.o.padding_idx = 2;
                    c.o.reduction = r;
                    c.o.chunk_rows = chunks[n % 4].first;
                    c.o.chunk_classes = chunks[n % 4].second;
                    if (weighted) c.o.weight = affine(rand({c.s.V}, {.dtype = DType::f64}), 1.5, 0.25);
                    c.o.z_loss = n % 5 == 1 ? 0.01 : 0.0;
                    c.o.softcap = n % 7 == 2 ? 1.5 : 0.0;
                    c.bias = n % 2 == 0;
                    c.mixed = n % 3 == 1;
                    if (c.s.N > 1) c.ignored = {0, 3};
                    cases.push_back(c);
                    ++n;
                }
    // Longer rows: more threads per row, several class blocks with a short last one, another
    // ignore_index; all rows ignored.
    for (std::optional<int64_t> cc : {std::optional<int64_t>(), std::optional<int64_t>(300)}) {
        LceCase c;
        c.s = {40, 24, 3000};
        c.o.label_smoothing = 0.1;
        c.o.ignore_index = 7;
        c.o.chunk_rows = 16;
        c.o.chunk_classes = cc;
        c.o.z_loss = 1e-3;
        c.o.softcap = cc ? 30.0 : 0.0;
        c.mixed = !cc;
        c.ignored = {5, 9};
        cases.push_back(c);
    }
    LceCase all;
    all.s = {5, 3, 10};
    all.o.label_smoothing = 0.1;
    all.o.chunk_classes = 4;
    all.ignored = {0, 1, 2, 3, 4};
    cases.push_back(all);
    return cases;
}

std::string describe(const LceCase& c) {
    return "N" + std::to_string(c.s.N) + " V" + std::to_string(c.s.V) + " chunk " +
           std::to_string(c.o.chunk_rows.value_or(0)) + "x" + std::to_string(c.o.chunk_classes.value_or(0)) + " eps " +
           std::to_string(c.o.label_smoothing) + " off_target " +
           std::to_string(c.o.smoothing == Smoothing::OffTarget) + " pad " + std::to_string(c.o.padding_idx.value_or(-1)) +
           " weighted " + std::to_string(c.o.weight.defined()) +
           " reduction " + std::to_string(int(c.o.reduction)) + " z " + std::to_string(c.o.z_loss) + " cap " +
           std::to_string(c.o.softcap) + " mixed " + std::to_string(c.mixed) + " bias " + std::to_string(c.bias);
}

// Every case on the CPU and on the GPU in f32 and f64: loss, dh, dW and db agree at the loss layer's
// tolerances (the CUDA test table's 1e-5 in f32; f64 sums differ only in their order).
TEST(CudaLinearCrossEntropy, MatchesTheCpuOnEveryOption) {
    if (!cuda_is_available()) GTEST_SKIP() << cuda_unavailable_reason();
    const Device d = Device::cuda();
    for (const LceCase& c : cuda_cases())
        for (DType dtype : {DType::f32, DType::f64}) {
            const double tol = dtype == DType::f32 ? 1e-5 : 1e-11;
            const std::string what = describe(c) + (dtype == DType::f32 ? " f32" : " f64");
            const LceResult cpu = run_on(Device::cpu(), dtype, c);
            const LceResult gpu = run_on(d, dtype, c);
            expect_near_all(gpu.loss, cpu.loss, tol, what + " loss");
            expect_near_all(gpu.dh, cpu.dh, tol, what + " dh");
            expect_near_all(gpu.dW, cpu.dW, tol, what + " dW");
            if (c.bias) expect_near_all(gpu.db, cpu.db, tol, what + " db");
        }
}

// No float atomics and fixed reduction orders: two runs give the same bits.
TEST(CudaLinearCrossEntropy, RepeatedRunsAreBitIdentical) {
    if (!cuda_is_available()) GTEST_SKIP() << cuda_unavailable_reason();
    LceCase c;
    c.s = {40, 24, 3000};
    c.o.label_smoothing = 0.1;
    c.o.chunk_rows = 16;
    c.o.chunk_classes = 700;
    const LceResult a = run_on(Device::cuda(), DType::f32, c), b = run_on(Device::cuda(), DType::f32, c);
    EXPECT_EQ(a.loss.to_vector<float>(), b.loss.to_vector<float>());
    EXPECT_EQ(a.dh.to_vector<float>(), b.dh.to_vector<float>());
    EXPECT_EQ(a.dW.to_vector<float>(), b.dW.to_vector<float>());
    EXPECT_EQ(a.db.to_vector<float>(), b.db.to_vector<float>());
}

// A target outside [0, V) is found by the kernel: the op returns without waiting, the next
// synchronising call raises the CPU check's lsg::Error, and the device stays usable.
TEST(CudaLinearCrossEntropy, OutOfRangeTargetIsRaisedAtTheNextSynchronisingCall) {
    if (!cuda_is_available()) GTEST_SKIP() << cuda_unavailable_reason();
    const Device d = Device::cuda();
    const char* op = "linear_cross_entropy";
    const Tensor h = leaf({4, 3}, 1).detach().to(d), W = leaf({9, 3}, 2).detach().to(d);
    Tensor loss;
    ASSERT_NO_THROW(loss = linear_cross_entropy(h, W, from_vector<int64_t>({0, 9, 1, 2}, {4}).to(d)));
    expect_error([&] { (void)loss.item<double>(); }, {op, "target 9 of row 1", "[0, 9)"});
    const Tensor y = targets(4, 9, 2).to(d);
    const MixedTargets bad_b{y, from_vector<int64_t>({0, 0, 0, 99}, {4}).to(d), scalar_tensor(0.5).to(d)};
    ASSERT_NO_THROW(loss = linear_cross_entropy(h, W, bad_b));
    expect_error([&] { synchronize(d); }, {op, "target 99 of row 3"});
    EXPECT_NO_THROW(synchronize(d));
    const Tensor good = linear_cross_entropy(h, W, y);
    const Device cpu = Device::cpu();
    EXPECT_NEAR(good.item<double>(), linear_cross_entropy(h.to(cpu), W.to(cpu), y.to(cpu)).item<double>(), 1e-11);
}

}  // namespace
}  // namespace lsg

// DistributedDataParallel and DistributedSampler together against one process: W ranks with batch
// b each must train the same weights as one process with batch W·b on the same data, seed and
// order (the sampler's promise, data/sampler.h), to 1e-5 relative after 20 SGD steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "dist_test.h"
#include "lsgrad/core/error.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/data/dataset.h"
#include "lsgrad/dist/distributed_data_parallel.h"
#include "lsgrad/nn/layers.h"
#include "lsgrad/ops/loss.h"
#include "lsgrad/optim/optimizer.h"

namespace lsg {
namespace {

using dist_test::group;

std::shared_ptr<nn::Sequential> mlp(uint64_t seed) {
    Generator gen(seed);
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(64, 48, true, gen),
                                            std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(48, 32, true, gen),
                                            std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(32, 10, true, gen));
}

// N samples of 1×8×8 with labels a fixed function of the pixels (learnable, so gradients stay
// informative for 20 steps).
data::ImageDataset synthetic(int64_t n) {
    Generator gen(99);
    data::ImageDataset ds;
    ds.images = randn({n, 1, 8, 8}, {}, gen);
    const std::vector<float> px = ds.images.to_vector<float>();
    std::vector<int64_t> labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int j = 0; j < 10; ++j) s += px[static_cast<size_t>(i * 64 + j * 6)] * (j + 1);
        labels[static_cast<size_t>(i)] = static_cast<int64_t>(std::fabs(s) * 3) % 10;
    }
    ds.labels = from_vector(labels);
    return ds;
}

// ‖a − b‖∞ / ‖b‖∞ over every parameter, and the largest of them.
double max_relative_difference(const nn::Module& a, const nn::Module& b) {
    const std::vector<Tensor> pa = a.parameters(), pb = b.parameters();
    double worst = 0;
    for (size_t k = 0; k < pa.size(); ++k) {
        const std::vector<float> x = pa[k].to_vector<float>(), y = pb[k].to_vector<float>();
        double diff = 0, scale = 0;
        for (size_t i = 0; i < x.size(); ++i) {
            diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - y[i]));
            scale = std::max(scale, std::fabs(static_cast<double>(y[i])));
        }
        worst = std::max(worst, diff / scale);
    }
    return worst;
}

constexpr int kSteps = 20;

// 20 SGD steps (momentum 0.9) of `net` on the batches of `loader`, over as many epochs as needed.
void sgd_steps(nn::Module& net, data::DataLoader& loader) {
    optim::SGD opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
    int steps = 0;
    while (steps < kSteps)
        for (const data::Batch& b : loader) {
            if (steps++ == kSteps) break;
            opt.zero_grad();
            cross_entropy(net(b.images), b.labels).backward();
            opt.step();
        }
}

// One process with batch `batch` over `ds`; the trained model.
std::shared_ptr<nn::Sequential> train_alone(const data::ImageDataset& ds, int64_t batch) {
    auto model = mlp(3);
    data::DataLoader loader(ds, {.batch_size = batch, .shuffle = true, .seed = 11});
    sgd_steps(*model, loader);
    return model;
}

// The same on this rank with batch `batch` of its sampler's share, through DDP (or, to show that
// the comparison can fail, without it: from the same weights, each rank on its own).
std::shared_ptr<nn::Sequential> train_ddp(const data::ImageDataset& ds, int64_t batch,
                                          nn::DistributedDataParallelOptions options, bool use_ddp = true) {
    // Each rank starts from different weights: DDP's broadcast must make them rank 0's.
    auto model = mlp(group->rank() == 0 || !use_ddp ? 3 : 100 + group->rank());
    std::shared_ptr<nn::Module> net = model;
    if (use_ddp) net = std::make_shared<nn::DistributedDataParallel>(model, group, options);
    data::DataLoader loader(ds, {.batch_size = batch},
                            data::DistributedSampler(ds.size(), group->size(), group->rank(), {.seed = 11}));
    sgd_steps(*net, loader);
    return model;
}

struct Case {
    const char* name;
    nn::DistributedDataParallelOptions options;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class DdpEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(DdpEquivalence, RanksWithBatch64MatchOneProcessWithBatch64W) {
    const int64_t w = group->size(), b = 64;
    // 7 batches of 64·W and a last one of 32·W per epoch: the 20 steps cross two epochs and the
    // short last batch.
    const data::ImageDataset ds = synthetic(w * (7 * b + 32));
    const auto alone = train_alone(ds, w * b);
    const auto ddp = train_ddp(ds, b, GetParam().options);
    const double rel = max_relative_difference(*ddp, *alone);
    EXPECT_LE(rel, 1e-5) << GetParam().name;
    // And the ranks agree with each other bit for bit (they all apply the same averaged step).
    for (const Tensor& p : ddp->parameters()) {
        Tensor mine = p.detach().clone(), root = p.detach().clone();
        group->broadcast(root, 0);
        ASSERT_EQ(mine.to_vector<float>(), root.to_vector<float>());
    }
    // The check can fail: without DDP each rank's model drifts away from one process's.
    if (GetParam().options.bucket_cap_mb == 25.0)
        EXPECT_GT(max_relative_difference(*train_ddp(ds, b, {}, false), *alone), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(
    Buckets, DdpEquivalence,
    ::testing::Values(Case{"one_bucket_overlap", {.bucket_cap_mb = 25.0, .overlap = true}},
                      Case{"small_buckets_overlap", {.bucket_cap_mb = 0.004, .overlap = true}},
                      Case{"small_buckets_after_backward", {.bucket_cap_mb = 0.004, .overlap = false}}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(Ddp, BroadcastsRankZerosWeightsAndLaysOutBucketsInReverse) {
    auto model = mlp(group->rank() == 0 ? 3 : 50 + group->rank());
    // Parameters in order: w1 [48,64] (12 KiB), b1, w2 [32,48] (6 KiB), b2, w3 [10,32], b3.
    nn::DistributedDataParallel small(model, group, {.bucket_cap_mb = 7.5 / 1024});
    const auto reference = mlp(3);
    EXPECT_EQ(max_relative_difference(*model, *reference), 0.0);
    // Last parameter first, a bucket closing before it would pass 7.5 KiB (7680 bytes): b3 40 +
    // w3 1280 + b2 128 + w2 6144 = 7592, with b1 (192) it would be 7784.
    EXPECT_EQ(small.bucket_indices(), (std::vector<std::vector<size_t>>{{5, 4, 3, 2}, {1}, {0}}));
    nn::DistributedDataParallel one(model, group);
    EXPECT_EQ(one.bucket_indices(), (std::vector<std::vector<size_t>>{{5, 4, 3, 2, 1, 0}}));
    EXPECT_NE(one.name().find("world_size=" + std::to_string(group->size())), std::string::npos) << one.name();
}

TEST(Ddp, AParameterWithoutGradientIsNamed) {
    auto model = std::make_shared<nn::Sequential>(std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(64, 10));
    auto unused = std::make_shared<nn::Linear>(3, 3);
    model->register_module("unused", unused);
    nn::DistributedDataParallel ddp(model, group, {.bucket_cap_mb = 1e-6});
    const Tensor x = ones({2, 1, 8, 8});
    const Tensor y = from_vector<int64_t>({1, 2});
    cross_entropy(ddp(x), y).backward();
    try {
        ddp(x);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unused.weight"), std::string::npos) << e.what();
    }
}

TEST(Ddp, BadOptionsAreErrors) {
    auto model = mlp(3);
    EXPECT_THROW(nn::DistributedDataParallel(model, group, {.bucket_cap_mb = 0.0}), Error);
    EXPECT_THROW(nn::DistributedDataParallel(model, group, {.bucket_cap_mb = std::nan("")}), Error);
    EXPECT_THROW(nn::DistributedDataParallel(nullptr, group), Error);
    EXPECT_THROW(nn::DistributedDataParallel(model, nullptr), Error);
}

}  // namespace
}  // namespace lsg

// Data sets and the DataLoader: batch counts and sizes, drop_last, seeded per-epoch shuffles,
// every sample exactly once per epoch, images staying with their labels, normalisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>
#include <vector>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace {

using lsg::DType;
using lsg::Tensor;
using lsg::data::Batch;
using lsg::data::DataLoader;
using lsg::data::DataLoaderOptions;
using lsg::data::IdxArray;
using lsg::data::ImageDataset;
using lsg::testing::expect_error;

// n samples of shape [1, 2, 2]; every pixel of sample i holds i, and its label is i (so a batch
// shows which samples it holds, and whether images stayed with their labels).
ImageDataset numbered(int64_t n) {
    std::vector<float> pixels;
    for (int64_t i = 0; i < n; ++i)
        for (int k = 0; k < 4; ++k) pixels.push_back(static_cast<float>(i));
    std::vector<int64_t> labels(n);
    std::iota(labels.begin(), labels.end(), 0);
    return {lsg::from_vector(pixels, {n, 1, 2, 2}), lsg::from_vector(labels, {n}), n};
}

// The labels of every batch of one epoch, batch by batch; checks each image against its label.
std::vector<std::vector<int64_t>> epoch_labels(DataLoader& loader) {
    std::vector<std::vector<int64_t>> out;
    for (const Batch& b : loader) {
        const std::vector<int64_t> labels = b.labels.to_vector<int64_t>();
        const std::vector<float> pixels = b.images.to_vector<float>();
        EXPECT_EQ(b.images.shape(), (lsg::Shape{static_cast<int64_t>(labels.size()), 1, 2, 2}));
        for (size_t i = 0; i < labels.size(); ++i)
            for (int k = 0; k < 4; ++k) EXPECT_EQ(pixels[i * 4 + k], static_cast<float>(labels[i]));
        out.push_back(labels);
    }
    return out;
}

std::vector<int64_t> flat(const std::vector<std::vector<int64_t>>& batches) {
    std::vector<int64_t> all;
    for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
    return all;
}

TEST(DataLoader, BatchCountsAndLastPartialBatch) {
    DataLoader loader(numbered(10), {.batch_size = 3});
    EXPECT_EQ(loader.size(), 4);
    const auto batches = epoch_labels(loader);
    ASSERT_EQ(batches.size(), 4u);
    EXPECT_EQ(batches[0], (std::vector<int64_t>{0, 1, 2}));
    EXPECT_EQ(batches[2], (std::vector<int64_t>{6, 7, 8}));
    EXPECT_EQ(batches[3], (std::vector<int64_t>{9}));
}

TEST(DataLoader, DropLastLeavesOutTheShortBatch) {
    DataLoader loader(numbered(10), {.batch_size = 3, .shuffle = true, .drop_last = true, .seed = 5});
    EXPECT_EQ(loader.size(), 3);
    const auto batches = epoch_labels(loader);
    ASSERT_EQ(batches.size(), 3u);
    for (const auto& b : batches) EXPECT_EQ(b.size(), 3u);
    // Exactly divisible: drop_last changes nothing.
    EXPECT_EQ(DataLoader(numbered(9), {.batch_size = 3, .drop_last = true}).size(), 3);
    EXPECT_EQ(DataLoader(numbered(9), {.batch_size = 3}).size(), 3);
    // Fewer samples than one batch.
    EXPECT_EQ(DataLoader(numbered(2), {.batch_size = 3, .drop_last = true}).size(), 0);
    EXPECT_EQ(DataLoader(numbered(2), {.batch_size = 3}).size(), 1);
}

TEST(DataLoader, ShuffleVisitsEverySampleOncePerEpoch) {
    DataLoader loader(numbered(103), {.batch_size = 16, .shuffle = true, .seed = 7});
    std::vector<int64_t> expected(103);
    std::iota(expected.begin(), expected.end(), 0);
    for (int epoch = 0; epoch < 3; ++epoch) {
        std::vector<int64_t> seen = flat(epoch_labels(loader));
        EXPECT_NE(seen, expected) << "epoch " << epoch << " was not shuffled";
        std::sort(seen.begin(), seen.end());
        EXPECT_EQ(seen, expected) << "epoch " << epoch;
    }
}

TEST(DataLoader, SeededShuffleIsReproducibleAndChangesPerEpoch) {
    const DataLoaderOptions opts{.batch_size = 8, .shuffle = true, .seed = 42};
    DataLoader a(numbered(50), opts), b(numbered(50), opts);
    const std::vector<int64_t> a0 = flat(epoch_labels(a)), a1 = flat(epoch_labels(a));
    const std::vector<int64_t> b0 = flat(epoch_labels(b)), b1 = flat(epoch_labels(b));
    EXPECT_EQ(a0, b0);
    EXPECT_EQ(a1, b1);
    EXPECT_NE(a0, a1);
    // Epoch e's order is randperm(N, Generator(seed + e)).
    lsg::Generator gen(43);
    EXPECT_EQ(a1, lsg::randperm(50, gen).to_vector<int64_t>());
    // set_epoch replays an epoch.
    a.set_epoch(0);
    EXPECT_EQ(flat(epoch_labels(a)), a0);
    EXPECT_EQ(a.epoch(), 1);
    // Another seed, another order.
    DataLoader c(numbered(50), {.batch_size = 8, .shuffle = true, .seed = 43});
    const std::vector<int64_t> c0 = flat(epoch_labels(c));
    EXPECT_NE(c0, a0);
    EXPECT_EQ(c0, a1) << "seed 43 epoch 0 is seed 42 epoch 1";
}

TEST(DataLoader, UnshuffledBatchesAreViews) {
    ImageDataset ds = numbered(6);
    DataLoader loader(ds, {.batch_size = 4});
    auto it = loader.begin();
    EXPECT_TRUE(it->images.shares_storage(ds.images));
    EXPECT_TRUE(it->labels.shares_storage(ds.labels));
    ++it;
    EXPECT_EQ(it->labels.to_vector<int64_t>(), (std::vector<int64_t>{4, 5}));
    ++it;
    EXPECT_TRUE(it == loader.end());
}

TEST(DataLoader, RejectsBadOptionsAndData) {
    expect_error([] { DataLoader(numbered(4), {.batch_size = 0}); }, {"batch_size", "0"});
    ImageDataset bad = numbered(4);
    bad.labels = bad.labels.narrow(0, 0, 3);
    expect_error([&] { DataLoader{bad}; }, {"[4, 1, 2, 2]", "[3]"});
}

TEST(ImageDataset, NormalisesBytesAndAddsAChannelDim) {
    const IdxArray images{{2, 1, 3}, {0, 255, 128, 10, 20, 30}};
    const IdxArray labels{{2}, {3, 9}};
    const ImageDataset ds = lsg::data::make_image_dataset(images, labels, "crafted", {.mean = 0.5, .std = 0.25});
    EXPECT_EQ(ds.images.shape(), (lsg::Shape{2, 1, 1, 3}));
    EXPECT_EQ(ds.images.dtype(), DType::f32);
    const std::vector<float> v = ds.images.to_vector<float>();
    EXPECT_FLOAT_EQ(v[0], -2.0f);                                 // (0 − 0.5)/0.25
    EXPECT_FLOAT_EQ(v[1], 2.0f);                                  // (1 − 0.5)/0.25
    EXPECT_FLOAT_EQ(v[2], static_cast<float>((128 / 255.0 - 0.5) / 0.25));
    EXPECT_EQ(ds.labels.dtype(), DType::i64);
    EXPECT_EQ(ds.labels.to_vector<int64_t>(), (std::vector<int64_t>{3, 9}));
    // The default normalisation is MNIST's.
    const ImageDataset d2 = lsg::data::make_image_dataset(images, labels, "crafted");
    EXPECT_FLOAT_EQ(d2.images.to_vector<float>()[0], static_cast<float>(-0.1307 / 0.3081));
}

TEST(ImageDataset, RejectsMismatchedOrBadData) {
    const IdxArray images{{2, 1, 3}, {0, 1, 2, 3, 4, 5}};
    expect_error([&] { lsg::data::make_image_dataset(images, IdxArray{{3}, {0, 1, 2}}, "pair X"); },
                 {"pair X", "2", "3"});
    expect_error([&] { lsg::data::make_image_dataset(images, IdxArray{{2}, {0, 10}}, "pair Y"); },
                 {"pair Y", "10"});
    expect_error([&] { lsg::data::make_image_dataset(IdxArray{{6}, {0, 1, 2, 3, 4, 5}}, IdxArray{{6}, {0, 1, 2, 3, 4, 5}}, "flat"); },
                 {"flat", "[6]"});
    expect_error([&] { lsg::data::make_image_dataset(images, IdxArray{{2}, {0, 1}}, "z", {.mean = 0, .std = 0}); },
                 {"std", "0"});
}

TEST(ImageDataset, SliceIsAViewOfARange) {
    const ImageDataset ds = numbered(10);
    const ImageDataset tail = ds.slice(7, 3);
    EXPECT_EQ(tail.size(), 3);
    EXPECT_EQ(tail.labels.to_vector<int64_t>(), (std::vector<int64_t>{7, 8, 9}));
    EXPECT_TRUE(tail.images.shares_storage(ds.images));
    expect_error([&] { ds.slice(8, 3); }, {"[8, 11)", "10"});
}

TEST(ImageDataset, MissingMnistNamesTheDirectoryAndFiles) {
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / "lsgrad_test_data_empty";
    std::filesystem::create_directories(dir);
    expect_error([&] { lsg::data::load_mnist(dir.string()); }, {dir.string(), "train-images-idx3-ubyte"});
    expect_error([&] { lsg::data::load_mnist((dir / "absent").string()); }, {"absent", "no such directory"});
    std::filesystem::remove_all(dir);
}

// ---- DistributedSampler ------------------------------------------------------------------------

using lsg::data::DistributedSampler;

TEST(DistributedSampler, StridesThePaddedOrderAcrossRanks) {
    // N = 10, W = 3, no shuffle: positions 0..11 of 0..9 padded with its start (0, 1); rank r takes
    // r, r+3, r+6, r+9.
    const std::vector<std::vector<int64_t>> want{{0, 3, 6, 9}, {1, 4, 7, 0}, {2, 5, 8, 1}};
    for (int64_t r = 0; r < 3; ++r) {
        DistributedSampler s(10, 3, r, {.shuffle = false});
        EXPECT_EQ(s.num_samples(), 4);
        EXPECT_EQ(s.indices(0).to_vector<int64_t>(), want[static_cast<size_t>(r)]) << "rank " << r;
    }
    // drop_last leaves out the last N mod W = 1.
    const std::vector<std::vector<int64_t>> dropped{{0, 3, 6}, {1, 4, 7}, {2, 5, 8}};
    for (int64_t r = 0; r < 3; ++r) {
        DistributedSampler s(10, 3, r, {.shuffle = false, .drop_last = true});
        EXPECT_EQ(s.num_samples(), 3);
        EXPECT_EQ(s.indices(0).to_vector<int64_t>(), dropped[static_cast<size_t>(r)]) << "rank " << r;
    }
    // Fewer samples than ranks: padding repeats the order as often as needed.
    EXPECT_EQ(DistributedSampler(2, 5, 4, {.shuffle = false}).indices(0).to_vector<int64_t>(), (std::vector<int64_t>{0}));
    EXPECT_EQ(DistributedSampler(2, 5, 3, {.shuffle = false}).indices(0).to_vector<int64_t>(), (std::vector<int64_t>{1}));
}

TEST(DistributedSampler, RanksBatchesTogetherAreOneProcesssBatches) {
    // N = 66, W = 3, b = 4: one process with B = 12 has 5 full batches and one of 6, the ranks 5
    // of 4 and one of 2; every batch k over the ranks must be the one process's batch k.
    const int64_t n = 66, w = 3, b = 4;
    ImageDataset ds;
    ds.images = lsg::arange(n).to(DType::f32).reshape({n, 1, 1, 1});
    ds.labels = lsg::arange(n);
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
        DataLoader one(ds, {.batch_size = w * b, .shuffle = true, .seed = 4});
        one.set_epoch(epoch);
        std::vector<std::vector<int64_t>> want;
        for (const Batch& batch : one) want.push_back(batch.labels.to_vector<int64_t>());
        std::vector<std::vector<int64_t>> got(want.size());
        for (int64_t r = 0; r < w; ++r) {
            DataLoader mine(ds, {.batch_size = b}, DistributedSampler(n, w, r, {.seed = 4}));
            mine.set_epoch(epoch);
            ASSERT_EQ(mine.size(), static_cast<int64_t>(want.size()));
            size_t k = 0;
            for (const Batch& batch : mine) {
                const std::vector<int64_t> labels = batch.labels.to_vector<int64_t>();
                got[k].insert(got[k].end(), labels.begin(), labels.end());
                ++k;
            }
        }
        for (size_t k = 0; k < want.size(); ++k) {
            std::sort(want[k].begin(), want[k].end());
            std::sort(got[k].begin(), got[k].end());
            EXPECT_EQ(got[k], want[k]) << "epoch " << epoch << " batch " << k;
        }
    }
    // Two epochs differ.
    DistributedSampler s(n, w, 0, {.seed = 4});
    EXPECT_NE(s.indices(0).to_vector<int64_t>(), s.indices(1).to_vector<int64_t>());
}

TEST(DistributedSampler, BadArgumentsAreErrors) {
    expect_error([] { DistributedSampler(10, 0, 0); }, {"num_replicas", "0"});
    expect_error([] { DistributedSampler(10, 2, 2); }, {"rank", "[0, 2)", "2"});
    expect_error([] { DistributedSampler(10, 2, -1); }, {"rank", "-1"});
    expect_error([] { DistributedSampler(-5, 2, 0); }, {"negative", "-5"});
    expect_error([] { DistributedSampler(1, 2, 0, {.drop_last = true}); }, {"drop_last", "1", "2"});
    expect_error([] { DistributedSampler(0, 2, 0); }, {"empty"});
    ImageDataset ds;
    ds.images = lsg::zeros({6, 1, 1, 1});
    ds.labels = lsg::arange(6);
    expect_error([&] { DataLoader(ds, {.shuffle = true}, DistributedSampler(6, 2, 0)); }, {"shuffle", "sampler"});
    expect_error([&] { DataLoader(ds, {}, DistributedSampler(7, 2, 0)); }, {"7", "6"});
}

}  // namespace

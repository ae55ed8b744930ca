// End to end on the real MNIST: the MLP trained for one epoch must reach 96 % test accuracy with a
// falling loss, and the CNN must learn from a 2000-image subset. Skipped (with the reason) when the
// IDX files are not there; scripts/fetch_mnist.sh puts them where data::default_mnist_dir() looks.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "lsgrad/lsgrad.h"

namespace {

using namespace lsg;

// The data set, or a skip message naming what is missing.
std::string mnist_dir_or_reason(std::string& reason) {
    const std::string dir = data::default_mnist_dir();
    try {
        data::find_idx_files(dir);
    } catch (const Error& e) {
        reason = std::string("MNIST not found (run scripts/fetch_mnist.sh or set LSGRAD_DATA_DIR): ") + e.what();
    }
    return dir;
}

// Trains for `epochs` epochs with cross-entropy; returns every batch's loss.
std::vector<double> train(nn::Module& model, optim::Optimizer& opt, const data::ImageDataset& ds, int epochs,
                          uint64_t seed) {
    data::DataLoader loader(ds, {.batch_size = 128, .shuffle = true, .seed = seed});
    std::vector<double> losses;
    model.train();
    for (int e = 0; e < epochs; ++e)
        for (const data::Batch& b : loader) {
            const Tensor loss = cross_entropy(model(b.images), b.labels);
            opt.zero_grad();
            loss.backward();
            opt.step();
            losses.push_back(loss.item<double>());
        }
    return losses;
}

double accuracy(nn::Module& model, const data::ImageDataset& ds) {
    NoGradGuard no_grad;
    model.eval();
    const std::vector<int64_t> pred = argmax(model(ds.images), 1).to_vector<int64_t>();
    const std::vector<int64_t> y = ds.labels.to_vector<int64_t>();
    int64_t correct = 0;
    for (size_t i = 0; i < y.size(); ++i) correct += pred[i] == y[i];
    model.train();
    return static_cast<double>(correct) / static_cast<double>(y.size());
}

double mean_of(const std::vector<double>& v, size_t begin, size_t end) {
    return std::accumulate(v.begin() + begin, v.begin() + end, 0.0) / static_cast<double>(end - begin);
}

TEST(MnistIntegration, MlpOneEpochReaches96Percent) {
    std::string reason;
    const std::string dir = mnist_dir_or_reason(reason);
    if (!reason.empty()) GTEST_SKIP() << reason;
    const data::ImageDataset train_set = data::load_mnist(dir, true);
    const data::ImageDataset test_set = data::load_mnist(dir, false);
    ASSERT_EQ(train_set.size(), 60000);
    ASSERT_EQ(test_set.size(), 10000);

    Generator gen(0);
    nn::Sequential model(std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(784, 256, true, gen),
                         std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(256, 256, true, gen),
                         std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(256, 10, true, gen));
    optim::SGD opt(model.parameters(), {.lr = 0.05, .momentum = 0.9});
    const std::vector<double> losses = train(model, opt, train_set, 1, 0);
    ASSERT_EQ(losses.size(), 469u);
    // Chance level is ln 10 ≈ 2.30: the first batches sit near it, the last far below.
    EXPECT_GT(mean_of(losses, 0, 10), 1.0);
    EXPECT_LT(mean_of(losses, losses.size() - 50, losses.size()), 0.25);
    EXPECT_LT(mean_of(losses, losses.size() - 50, losses.size()), 0.2 * mean_of(losses, 0, 10));
    EXPECT_GE(accuracy(model, test_set), 0.96);
}

TEST(MnistIntegration, CnnLearnsFromASubset) {
    std::string reason;
    const std::string dir = mnist_dir_or_reason(reason);
    if (!reason.empty()) GTEST_SKIP() << reason;
    const data::ImageDataset train_set = data::load_mnist(dir, true).slice(0, 2000);
    const data::ImageDataset test_set = data::load_mnist(dir, false).slice(0, 1000);

    Generator gen(1);
    nn::Sequential model(std::make_shared<nn::Conv2d>(1, 32, 3, 1, 1, true, gen), std::make_shared<nn::ReLU>(),
                         std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Conv2d>(32, 64, 3, 1, 1, true, gen),
                         std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
                         std::make_shared<nn::Linear>(64 * 7 * 7, 128, true, gen), std::make_shared<nn::ReLU>(),
                         std::make_shared<nn::Linear>(128, 10, true, gen));
    const double before = accuracy(model, test_set);
    optim::Adam opt(model.parameters(), {.lr = 1e-3});
    const std::vector<double> losses = train(model, opt, train_set, 2, 1);
    ASSERT_EQ(losses.size(), 32u);
    EXPECT_LT(mean_of(losses, 24, 32), 0.5 * mean_of(losses, 0, 4));
    const double after = accuracy(model, test_set);
    EXPECT_LT(before, 0.3);
    // 32 steps on 2000 images: far above chance (10 %), not yet at full-data accuracy.
    EXPECT_GT(after, 0.8);
}

}  // namespace

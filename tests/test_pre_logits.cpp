// nn::Sequential's penultimate-layer hook: get_classifier() finds the last Linear child and
// forward_pre_logits() returns what that Linear receives, checked against the children applied by
// hand, against forward() bit for bit, through backward, and for models without a Linear.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace lsg {
namespace {

using testing::expect_error;

std::shared_ptr<nn::Sequential> mlp(Generator& gen) {
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(12, 8, true, gen),
                                            std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 5, true, gen),
                                            std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(5, 3, true, gen));
}

TEST(PreLogits, MatchesTheChildrenBeforeTheLastLinear) {
    Generator gen(3);
    auto net = mlp(gen);
    const Tensor x = randn({4, 1, 3, 4}, {}, gen);
    Tensor h = x;
    for (size_t i = 0; i < 5; ++i) h = (*(*net)[i])(h);
    const Tensor pre = net->forward_pre_logits(x);
    ASSERT_EQ(pre.shape(), (Shape{4, 5}));
    EXPECT_EQ(pre.to_vector<float>(), h.to_vector<float>());
    // The classifier is the last child, and applied to the pre-logits it gives forward() exactly.
    EXPECT_EQ(net->get_classifier().get(), (*net)[5].get());
    EXPECT_EQ(net->get_classifier()->out_features, 3);
    EXPECT_EQ((*net->get_classifier())(pre).to_vector<float>(), (*net)(x).to_vector<float>());
}

// Children after the last Linear (here a ReLU) are not part of the pre-logits; a Linear inside a
// nested Sequential is not looked into.
TEST(PreLogits, LastLinearAmongDirectChildren) {
    Generator gen(5);
    auto inner = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 4, true, gen));
    auto lin = std::make_shared<nn::Linear>(6, 4, true, gen);
    nn::Sequential net(lin, std::make_shared<nn::ReLU>(), inner);
    const Tensor x = randn({2, 6}, {}, gen);
    EXPECT_EQ(net.get_classifier().get(), lin.get());
    EXPECT_EQ(net.forward_pre_logits(x).to_vector<float>(), x.to_vector<float>());
}

TEST(PreLogits, GradientsFlowToTheFeatureLayersOnly) {
    Generator gen(7);
    auto net = mlp(gen);
    const Tensor x = randn({3, 12}, {}, gen);
    sum(net->forward_pre_logits(x)).backward();
    EXPECT_TRUE(std::dynamic_pointer_cast<nn::Linear>((*net)[1])->weight.grad().defined());
    EXPECT_FALSE(net->get_classifier()->weight.grad().defined());
}

// In eval mode Dropout is the identity, so the pre-logits are deterministic; in training it is not.
TEST(PreLogits, FollowsTrainingMode) {
    Generator gen(9);
    nn::Sequential net(std::make_shared<nn::Linear>(6, 32, true, gen), std::make_shared<nn::Dropout>(0.5),
                       std::make_shared<nn::Linear>(32, 2, true, gen));
    const Tensor x = randn({4, 6}, {}, gen);
    net.eval();
    EXPECT_EQ(net.forward_pre_logits(x).to_vector<float>(), (*net[0])(x).to_vector<float>());
    net.train();
    EXPECT_NE(net.forward_pre_logits(x).to_vector<float>(), (*net[0])(x).to_vector<float>());
}

TEST(PreLogits, NoLinearIsAnError) {
    nn::Sequential net(std::make_shared<nn::Flatten>(), std::make_shared<nn::ReLU>());
    expect_error([&] { net.forward_pre_logits(ones({1, 2})); },
                 {"lsg::Sequential::forward_pre_logits", "none of the 2 children"});
    expect_error([&] { net.get_classifier(); }, {"lsg::Sequential::get_classifier", "is a Linear"});
    nn::Sequential empty_net;
    expect_error([&] { empty_net.get_classifier(); }, {"none of the 0 children"});
}

}  // namespace
}  // namespace lsg

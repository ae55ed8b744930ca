// What every build says about its process-group engines (the engines themselves are tested by the
// multi-process program tests/dist/, run under mpirun where MPI is built).
#include <gtest/gtest.h>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace {

using namespace lsg;
using lsg::testing::expect_error;

TEST(ProcessGroupAvailability, UnknownOrMissingEnginesAreNamed) {
    // Whatever this build has, an unknown engine is refused by name, and a missing one says why.
    EXPECT_FALSE(dist::available("gloo"));
    expect_error([] { dist::new_process_group("gloo"); }, {"gloo", "mpi or nccl"});
    for (const char* engine : {"mpi", "nccl"})
        if (!dist::available(engine))
            expect_error([&] { dist::new_process_group(engine); }, {"built without"});
}

// ---- DistributedDataParallel on a one-rank group that records what it is asked -----------------

// A group of one process: every collective is the identity. It records, for each allreduce, the
// size of the tensor and how many of the watched parameters had a gradient at that moment.
class RecordingGroup final : public dist::ProcessGroup {
public:
    struct Call {
        int64_t numel;
        size_t grads_ready;
    };
    std::vector<Tensor> watched;
    std::vector<Call> calls;

    int rank() const override { return 0; }
    int size() const override { return 1; }
    std::string backend() const override { return "recording"; }
    Device device() const override { return Device::cpu(); }
    std::shared_ptr<dist::Work> allreduce_async(const Tensor& t, dist::ReduceOp) override {
        size_t ready = 0;
        for (const Tensor& p : watched) ready += p.grad().defined();
        calls.push_back({t.numel(), ready});
        return std::make_shared<Done>();
    }
    void broadcast(Tensor&, int) override {}
    void barrier() override {}
    [[noreturn]] void abort(int, const std::string& message) override { throw Error(message); }

private:
    struct Done final : dist::Work {
        void wait() override {}
        bool is_completed() override { return true; }
    };
};

std::shared_ptr<nn::Sequential> three_layers() {
    Generator gen(1);
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 5, true, gen), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(5, 4, true, gen), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(4, 3, true, gen));
}

// Runs one backward through DDP on the recording group; returns the calls and the gradients.
std::pair<std::vector<RecordingGroup::Call>, std::vector<std::vector<float>>> one_backward(bool overlap) {
    auto model = three_layers();
    auto group = std::make_shared<RecordingGroup>();
    group->watched = model->parameters();
    nn::DistributedDataParallel ddp(model, group, {.bucket_cap_mb = 1e-9, .overlap = overlap});
    Generator gen(2);
    const Tensor x = randn({8, 6}, {}, gen);
    cross_entropy(ddp(x), from_vector<int64_t>({0, 1, 2, 0, 1, 2, 0, 1})).backward();
    std::vector<std::vector<float>> grads;
    for (const Tensor& p : model->parameters()) grads.push_back(p.grad().to_vector<float>());
    return {group->calls, grads};
}

TEST(DistributedDataParallelLocal, OverlapStartsBucketsDuringBackwardLastLayerFirst) {
    const auto [calls, grads] = one_backward(true);
    // One bucket per parameter (a tiny cap), in reverse order: b3 [3], w3 [3, 4], b2, w2, b1, w1.
    ASSERT_EQ(calls.size(), 6u);
    const std::vector<int64_t> numels{3, 12, 4, 20, 5, 30};
    for (size_t i = 0; i < 6; ++i) EXPECT_EQ(calls[i].numel, numels[i]) << "bucket " << i;
    // The last layer's buckets start while earlier layers' gradients are still to come.
    EXPECT_LT(calls[0].grads_ready, 6u);
    EXPECT_LT(calls[1].grads_ready, 6u);
    // On one rank the average is the gradient itself: the same as without DDP.
    auto plain = three_layers();
    Generator gen(2);
    const Tensor x = randn({8, 6}, {}, gen);
    cross_entropy((*plain)(x), from_vector<int64_t>({0, 1, 2, 0, 1, 2, 0, 1})).backward();
    const std::vector<Tensor> ps = plain->parameters();
    for (size_t k = 0; k < ps.size(); ++k) EXPECT_EQ(grads[k], ps[k].grad().to_vector<float>()) << "parameter " << k;
}

TEST(DistributedDataParallelLocal, WithoutOverlapEveryBucketWaitsForTheWholeBackward) {
    const auto [calls, grads] = one_backward(false);
    ASSERT_EQ(calls.size(), 6u);
    for (const auto& c : calls) EXPECT_EQ(c.grads_ready, 6u);
    EXPECT_EQ(grads, one_backward(true).second);
}

}  // namespace

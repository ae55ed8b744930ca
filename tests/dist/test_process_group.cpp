// Every collective of the MPI process group against values computed by hand from the rank r and
// the world size W: rank r contributes numbers whose sum over r = 0..W−1 has a closed form.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "dist_test.h"
#include "lsgrad/core/allocator.h"
#include "lsgrad/core/error.h"
#include "lsgrad/core/tensor.h"

namespace lsg {
namespace {

namespace fs = std::filesystem;
using dist_test::group;

TEST(ProcessGroup, RankAndSize) {
    EXPECT_EQ(group->backend(), "mpi");
    EXPECT_GE(group->size(), 2) << "run under mpirun -np 2 or more";
    EXPECT_GE(group->rank(), 0);
    EXPECT_LT(group->rank(), group->size());
    // The ranks are 0..W−1, each once: Σ r = W(W−1)/2 and Σ r² = (W−1)W(2W−1)/6.
    const int64_t r = group->rank(), w = group->size();
    Tensor t = from_vector<int64_t>({r, r * r});
    group->allreduce(t);
    EXPECT_EQ(t.to_vector<int64_t>(), (std::vector<int64_t>{w * (w - 1) / 2, (w - 1) * w * (2 * w - 1) / 6}));
}

TEST(ProcessGroup, AllreduceSumEachDtype) {
    const int64_t r = group->rank(), w = group->size();
    // f32: r + 1 and 0.25·(r + 1) (exact in binary): Σ = W(W+1)/2 and W(W+1)/8.
    Tensor f = from_vector<float>({static_cast<float>(r + 1), 0.25f * static_cast<float>(r + 1)});
    group->allreduce(f, dist::ReduceOp::Sum);
    EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{w * (w + 1) / 2.0f, w * (w + 1) / 8.0f}));
    // f64 [2, 3], element i holds i·(r + 1): Σ = i·W(W+1)/2.
    std::vector<double> v(6), want(6);
    for (int i = 0; i < 6; ++i) {
        v[i] = i * static_cast<double>(r + 1);
        want[i] = i * w * (w + 1) / 2.0;
    }
    Tensor d = from_vector(v, Shape{2, 3});
    group->allreduce(d);
    EXPECT_EQ(d.to_vector<double>(), want);
    EXPECT_EQ(d.shape(), (Shape{2, 3}));
    // i64 beyond 2^53 (a double would round it): 2^60 + r.
    Tensor i = from_vector<int64_t>({(int64_t{1} << 60) + r, -r});
    group->allreduce(i);
    EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{w * (int64_t{1} << 60) + w * (w - 1) / 2, -w * (w - 1) / 2}));
}

TEST(ProcessGroup, AllreduceAverage) {
    const int64_t r = group->rank(), w = group->size();
    // Mean of r over the ranks: (W−1)/2; mean of 3r + 1: 3(W−1)/2 + 1.
    Tensor d = from_vector<double>({static_cast<double>(r), 3.0 * r + 1.0});
    group->allreduce(d, dist::ReduceOp::Average);
    EXPECT_DOUBLE_EQ(d.to_vector<double>()[0], (w - 1) / 2.0);
    EXPECT_DOUBLE_EQ(d.to_vector<double>()[1], 3.0 * (w - 1) / 2.0 + 1.0);
    Tensor f = full({1000}, static_cast<double>(2 * r), {.dtype = DType::f32});
    group->allreduce(f, dist::ReduceOp::Average);
    for (float x : f.to_vector<float>()) ASSERT_FLOAT_EQ(x, static_cast<float>(w - 1));
}

TEST(ProcessGroup, AsyncAllreducesWaitedInAnyOrder) {
    const int64_t r = group->rank(), w = group->size();
    Tensor a = full({4096}, static_cast<double>(r + 1), {.dtype = DType::f64});
    Tensor b = from_vector<int64_t>({1});
    const auto wa = group->allreduce_async(a);
    const auto wb = group->allreduce_async(b);
    wb->wait();
    wa->wait();
    wa->wait();  // a second wait does nothing
    EXPECT_TRUE(wa->is_completed());
    EXPECT_EQ(b.item<int64_t>(), w);
    for (double x : a.to_vector<double>()) ASSERT_EQ(x, w * (w + 1) / 2.0);
}

TEST(ProcessGroup, BroadcastFromEveryRoot) {
    const int64_t r = group->rank(), w = group->size();
    for (int root = 0; root < w; ++root) {
        Tensor t = from_vector<double>({static_cast<double>(r), 10.0 * r}, Shape{1, 2});
        group->broadcast(t, root);
        EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{1.0 * root, 10.0 * root})) << "root " << root;
    }
}

TEST(ProcessGroup, BarrierOrdersSideEffects) {
    // Each rank creates its file before the barrier; after it, every rank must see all W files.
    Tensor id = from_vector<int64_t>({static_cast<int64_t>(::getpid())});
    group->broadcast(id, 0);
    const fs::path dir = fs::temp_directory_path() / ("lsgrad_barrier_" + std::to_string(id.item<int64_t>()));
    fs::create_directories(dir);
    std::ofstream(dir / std::to_string(group->rank())) << "here\n";
    group->barrier();
    for (int r = 0; r < group->size(); ++r) EXPECT_TRUE(fs::exists(dir / std::to_string(r))) << "rank " << r;
    group->barrier();
    if (group->rank() == 0) fs::remove_all(dir);
}

TEST(ProcessGroup, BadTensorsAreErrorsOnEveryRank) {
    // Each check fails before any communication, identically on every rank.
    Tensor m = zeros({3, 4}, {.dtype = DType::f32});
    Tensor t = m.t();
    EXPECT_THROW(group->allreduce(t), Error);
    try {
        group->allreduce(t);
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("allreduce"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
    }
    Tensor i = zeros({2}, {.dtype = DType::i64});
    EXPECT_THROW(group->allreduce(i, dist::ReduceOp::Average), Error);
    Tensor undefined;
    EXPECT_THROW(group->allreduce(undefined), Error);
    Tensor f = zeros({2});
    EXPECT_THROW(group->broadcast(f, group->size()), Error);
    EXPECT_THROW(group->broadcast(f, -1), Error);
    EXPECT_TRUE(dist::available("mpi"));
    EXPECT_FALSE(dist::available("gloo"));
    EXPECT_THROW(dist::new_process_group("gloo"), Error);
}

// The NCCL engine: the same hand-computed sums on each rank's GPU. Needs a build with NCCL and one
// GPU per rank, at least 2.
TEST(NcclProcessGroup, AllreduceAndBroadcastOnTheGpus) {
    if (!dist::available("nccl")) GTEST_SKIP() << dist::unavailable_reason("nccl");
    if (cuda_device_count() < 2)
        GTEST_SKIP() << "fewer than 2 GPUs answer (" << cuda_device_count() << "): " << cuda_unavailable_reason();
    const auto nccl = dist::new_process_group("nccl");
    const int64_t r = nccl->rank(), w = nccl->size();
    ASSERT_EQ(nccl->device().type, DeviceType::cuda);
    Tensor f = from_vector<float>({static_cast<float>(r + 1), 2.0f * static_cast<float>(r)}).to(nccl->device());
    nccl->allreduce(f);
    EXPECT_EQ(f.to(Device::cpu()).to_vector<float>(), (std::vector<float>{w * (w + 1) / 2.0f, 1.0f * w * (w - 1)}));
    Tensor d = from_vector<double>({static_cast<double>(r)}).to(nccl->device());
    nccl->allreduce_async(d, dist::ReduceOp::Average)->wait();
    EXPECT_DOUBLE_EQ(d.to(Device::cpu()).item<double>(), (w - 1) / 2.0);
    Tensor b = from_vector<int64_t>({r, -r}).to(nccl->device());
    nccl->broadcast(b, static_cast<int>(w - 1));
    EXPECT_EQ(b.to(Device::cpu()).to_vector<int64_t>(), (std::vector<int64_t>{w - 1, 1 - w}));
    nccl->barrier();
    Tensor host = zeros({2});
    EXPECT_THROW(nccl->allreduce(host), Error);
}

}  // namespace
}  // namespace lsg

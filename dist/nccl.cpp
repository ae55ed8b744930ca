// The NCCL engine: one process per GPU, collectives issued on the calling thread's current stream
// of the process's device, so they are ordered with the kernels around them without a host wait.
// The communicator is bootstrapped over MPI: rank 0 makes the unique id and broadcasts it.
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "lsgrad/core/allocator.h"
#include "lsgrad/core/error.h"
#include "lsgrad/core/stream.h"
#include "lsgrad/dist/engines.h"

namespace lsg::dist::detail {
namespace {

void check_nccl(ncclResult_t rc, const char* call) {
    if (rc != ncclSuccess) throw Error(std::string(call) + ": NCCL error: " + ncclGetErrorString(rc));
}

void check_cuda(cudaError_t rc, const char* call) {
    if (rc != cudaSuccess) throw Error(std::string(call) + ": CUDA error: " + cudaGetErrorString(rc));
}

ncclDataType_t nccl_type(DType dtype) {
    switch (dtype) {
        case DType::f32: return ncclFloat32;
        case DType::f64: return ncclFloat64;
        default: return ncclInt64;  // check_collective_tensor admits only f32, f64, i64
    }
}

cudaStream_t stream_of(Device device) { return static_cast<cudaStream_t>(current_stream(device).handle); }

// An event recorded on the issuing stream after the collective.
class NcclWork final : public Work {
public:
    NcclWork(Tensor t, Device device, cudaStream_t stream) : t_(std::move(t)), device_(device) {
        check_cuda(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        check_cuda(cudaEventRecord(event_, stream), "cudaEventRecord");
    }
    ~NcclWork() override { cudaEventDestroy(event_); }

    // Orders the caller's current stream after the collective (the same stream it was issued on
    // makes this free).
    void wait() override {
        check_cuda(cudaStreamWaitEvent(stream_of(device_), event_, 0), "cudaStreamWaitEvent");
        t_.bump_version();
    }
    bool is_completed() override {
        const cudaError_t rc = cudaEventQuery(event_);
        if (rc == cudaErrorNotReady) return false;
        check_cuda(rc, "cudaEventQuery");
        return true;
    }

private:
    Tensor t_;
    Device device_;
    cudaEvent_t event_ = nullptr;
};

class NcclGroup final : public ProcessGroup {
public:
    NcclGroup() : bootstrap_(new_mpi_group()) {
        LSG_CHECK(cuda_is_available(), "NCCL needs a CUDA device: ", cuda_unavailable_reason());
        // The GPU of this process: its rank among the processes on this node, modulo the GPUs.
        MPI_Comm node = MPI_COMM_NULL;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, bootstrap_->rank(), MPI_INFO_NULL, &node);
        int local_rank = 0;
        MPI_Comm_rank(node, &local_rank);
        MPI_Comm_free(&node);
        device_ = Device::cuda(local_rank % cuda_device_count());
        check_cuda(cudaSetDevice(device_.index), "cudaSetDevice");

        ncclUniqueId id;
        if (bootstrap_->rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
        // The id's bytes travel as i64 words (MPI broadcasts only the tensors' dtypes).
        Tensor id_tensor = zeros({static_cast<int64_t>((sizeof id + 7) / 8)}, {.dtype = DType::i64});
        std::memcpy(id_tensor.raw_data(), &id, sizeof id);
        bootstrap_->broadcast(id_tensor, 0);
        std::memcpy(&id, id_tensor.raw_data(), sizeof id);
        check_nccl(ncclCommInitRank(&comm_, bootstrap_->size(), id, bootstrap_->rank()), "ncclCommInitRank");
    }
    ~NcclGroup() override {
        if (comm_) ncclCommDestroy(comm_);
    }

    int rank() const override { return bootstrap_->rank(); }
    int size() const override { return bootstrap_->size(); }
    std::string backend() const override { return "nccl"; }
    Device device() const override { return device_; }

    std::shared_ptr<Work> allreduce_async(const Tensor& t, ReduceOp op) override {
        check_collective_tensor("allreduce", t, device_);
        LSG_CHECK_OP("allreduce", op == ReduceOp::Sum || t.dtype() != DType::i64,
                     "Average needs a floating tensor, got ", t.dtype(), " ", t.shape());
        const cudaStream_t stream = stream_of(device_);
        check_nccl(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                                 op == ReduceOp::Sum ? ncclSum : ncclAvg, comm_, stream),
                   "ncclAllReduce");
        return std::make_shared<NcclWork>(t, device_, stream);
    }

    void broadcast(Tensor& t, int root) override {
        check_collective_tensor("broadcast", t, device_);
        LSG_CHECK(root >= 0 && root < size(), "root must lie in [0, ", size(), "), got ", root);
        check_nccl(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root,
                                 comm_, stream_of(device_)),
                   "ncclBroadcast");
        t.bump_version();
    }

    // Every rank's issued work finished, then an MPI barrier.
    void barrier() override {
        synchronize(device_);
        bootstrap_->barrier();
    }

    [[noreturn]] void abort(int code, const std::string& message) override {
        if (comm_) ncclCommAbort(comm_);
        comm_ = nullptr;
        bootstrap_->abort(code, message);
        std::_Exit(code);  // abort does not return; a virtual call's [[noreturn]] is not seen here
    }

private:
    std::shared_ptr<ProcessGroup> bootstrap_;
    Device device_;
    ncclComm_t comm_ = nullptr;
};

}  // namespace

std::shared_ptr<ProcessGroup> new_nccl_group() { return std::make_shared<NcclGroup>(); }

}  // namespace lsg::dist::detail

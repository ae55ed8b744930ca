// The MPI engine: collectives on host memory over a duplicate of MPI_COMM_WORLD. Asynchronous
// allreduce is MPI_Iallreduce; OpenMPI progresses it inside MPI calls, so Work::is_completed (an
// MPI_Test) is what data-parallel training calls between buckets to keep earlier ones moving.
// Only the thread that created the group calls MPI (MPI_THREAD_FUNNELED is enough).
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/error.h"
#include "lsgrad/dist/engines.h"
#include "lsgrad/ops/elementwise.h"

namespace lsg::dist::detail {
namespace {

// Turns an MPI error code into an lsg::Error naming the call (the communicator returns errors
// instead of aborting, see MpiGroup).
void check_mpi(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw Error(std::string(call) + ": MPI error " + std::to_string(rc) + ": " + std::string(text, len));
}

MPI_Datatype mpi_type(DType dtype) {
    switch (dtype) {
        case DType::f32: return MPI_FLOAT;
        case DType::f64: return MPI_DOUBLE;
        default: return MPI_INT64_T;  // check_collective_tensor admits only f32, f64, i64
    }
}

int mpi_count(const char* op, const Tensor& t) {
    LSG_CHECK_OP(op, t.numel() <= INT_MAX, "MPI counts are int: ", t.shape(), " holds ", t.numel(),
                 " elements, more than ", INT_MAX);
    return static_cast<int>(t.numel());
}

// Σ/W in place, after the sum has arrived.
void divide_by(Tensor& t, int size) {
    NoGradGuard no_grad;
    t.copy_(t * (1.0 / size));
}

void finalize_at_exit() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

class MpiWork final : public Work {
public:
    MpiWork(MPI_Request request, Tensor t, ReduceOp op, int size)
        : request_(request), t_(std::move(t)), op_(op), size_(size) {}
    ~MpiWork() override {
        // A request dropped unwaited must still complete before its buffer can be reused.
        if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
    }

    void wait() override {
        if (done_) return;
        check_mpi(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait");
        finish();
    }
    bool is_completed() override {
        if (done_) return true;
        int flag = 0;
        check_mpi(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
        if (flag) finish();
        return done_;
    }

private:
    void finish() {
        done_ = true;
        t_.bump_version();
        if (op_ == ReduceOp::Average) divide_by(t_, size_);
    }

    MPI_Request request_;
    Tensor t_;
    ReduceOp op_;
    int size_;
    bool done_ = false;
};

class MpiGroup final : public ProcessGroup {
public:
    MpiGroup() {
        int initialized = 0;
        check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
        if (!initialized) {
            int provided = 0;
            check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
            std::atexit(finalize_at_exit);
        }
        check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
        // Errors come back as codes (and become lsg::Error) instead of aborting inside MPI.
        check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
        check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    }
    ~MpiGroup() override {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Comm_free(&comm_);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string backend() const override { return "mpi"; }
    Device device() const override { return Device::cpu(); }

    std::shared_ptr<Work> allreduce_async(const Tensor& t, ReduceOp op) override {
        check_collective_tensor("allreduce", t, Device::cpu());
        LSG_CHECK_OP("allreduce", op == ReduceOp::Sum || t.dtype() != DType::i64,
                     "Average needs a floating tensor, got ", t.dtype(), " ", t.shape());
        MPI_Request request = MPI_REQUEST_NULL;
        check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), mpi_count("allreduce", t), mpi_type(t.dtype()), MPI_SUM,
                                 comm_, &request),
                  "MPI_Iallreduce");
        return std::make_shared<MpiWork>(request, t, op, size_);
    }

    void broadcast(Tensor& t, int root) override {
        check_collective_tensor("broadcast", t, Device::cpu());
        LSG_CHECK(root >= 0 && root < size_, "root must lie in [0, ", size_, "), got ", root);
        check_mpi(MPI_Bcast(t.raw_data(), mpi_count("broadcast", t), mpi_type(t.dtype()), root, comm_), "MPI_Bcast");
        t.bump_version();
    }

    void barrier() override { check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); }

    [[noreturn]] void abort(int code, const std::string& message) override {
        std::fprintf(stderr, "rank %d: %s\n", rank_, message.c_str());
        std::fflush(stderr);
        MPI_Abort(comm_, code);
        std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
    }

private:
    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
};

}  // namespace

std::shared_ptr<ProcessGroup> new_mpi_group() { return std::make_shared<MpiGroup>(); }

}  // namespace lsg::dist::detail

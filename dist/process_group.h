// Process groups: the collectives that data-parallel training needs, between the processes of one
// job. Two engines, each compiled only when found at configure time (LSGRAD_MPI, LSGRAD_NCCL):
// MPI between CPU processes (mpirun starts them; tensors in host memory) and NCCL between GPUs
// (one process per GPU, bootstrapped over MPI; tensors on the process's CUDA device, collectives
// issued on the calling thread's current stream of that device).
//
//   auto pg = dist::new_process_group("mpi");        // after mpirun -np W ...
//   pg->allreduce(t, dist::ReduceOp::Average);        // t ← (Σ over ranks of t) / W
//
// A build without MPI has none of the engines: available("mpi") is false and new_process_group
// throws "built without MPI".
#pragma once

#include <memory>
#include <string>

#include "lsgrad/core/tensor.h"

namespace lsg::dist {

// How allreduce combines the ranks' tensors: Sum gives Σ_r t_r, Average (Σ_r t_r) / W.
enum class ReduceOp { Sum, Average };

// A collective in flight. wait() returns once its result may be read (on NCCL: once work issued
// afterwards on the caller's current stream is ordered after it); wait() again does nothing.
class Work {
public:
    virtual ~Work() = default;
    virtual void wait() = 0;
    // Whether the collective has finished, without blocking (it also lets MPI progress).
    virtual bool is_completed() = 0;
};

// The W processes of a job, numbered 0..W−1. Every collective must be called by every rank in the
// same order with tensors of the same shape and dtype; a tensor must be contiguous, of dtype f32,
// f64 or i64, on the engine's device (host memory for MPI, the process's GPU for NCCL), else the
// call throws lsg::Error naming it, the shape, dtype and device.
class ProcessGroup {
public:
    virtual ~ProcessGroup() = default;
    ProcessGroup() = default;
    ProcessGroup(const ProcessGroup&) = delete;
    ProcessGroup& operator=(const ProcessGroup&) = delete;

    // This process's rank r ∈ [0, W) and the number of processes W.
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // "mpi" or "nccl".
    virtual std::string backend() const = 0;
    // The device this group's tensors live on (the CPU for MPI, this rank's GPU for NCCL).
    virtual Device device() const = 0;

    // In place on every rank: t ← Σ_r t_r (Sum) or (Σ_r t_r) / W (Average), the same bits on every
    // rank. Blocks until t holds the result.
    void allreduce(Tensor& t, ReduceOp op = ReduceOp::Sum);
    // The same, started and returned at once; t must stay alive and untouched until wait().
    virtual std::shared_ptr<Work> allreduce_async(const Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
    // In place: t ← t of rank `root` on every rank.
    virtual void broadcast(Tensor& t, int root = 0) = 0;
    // Returns once every rank has called it.
    virtual void barrier() = 0;
    // Ends the whole job: prints "rank r: message" on stderr and has the launcher stop every rank
    // with exit status `code`. For an error on one rank that the others, blocked in a collective,
    // would otherwise wait for forever.
    [[noreturn]] virtual void abort(int code, const std::string& message) = 0;
};

// Whether this build has the engine ("mpi" or "nccl"); any other name is false.
bool available(const std::string& backend);
// Why an engine is missing ("built without MPI"), or "" when it is available.
std::string unavailable_reason(const std::string& backend);

// A group of every process of the job (MPI_COMM_WORLD), initialising MPI on first use (it is
// finalised at exit). "nccl" also picks this process's GPU: local rank mod the GPUs that answer.
// Throws lsg::Error for an unknown name, an engine this build lacks, or (NCCL) no GPU.
std::shared_ptr<ProcessGroup> new_process_group(const std::string& backend);

}  // namespace lsg::dist

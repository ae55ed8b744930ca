#include "lsgrad/dist/process_group.h"

#include "lsgrad/core/error.h"
#include "lsgrad/dist/engines.h"

namespace lsg::dist {

void ProcessGroup::allreduce(Tensor& t, ReduceOp op) { allreduce_async(t, op)->wait(); }

std::string unavailable_reason(const std::string& backend) {
    if (backend == "mpi") {
#ifdef LSGRAD_WITH_MPI
        return "";
#else
        return "built without MPI (configure with LSGRAD_MPI=ON and an MPI such as libopenmpi-dev installed)";
#endif
    }
    if (backend == "nccl") {
#ifdef LSGRAD_WITH_NCCL
        return "";
#else
        return "built without NCCL (it needs the CUDA backend, MPI and nccl.h; see LSGRAD_NCCL)";
#endif
    }
    return "unknown process group backend \"" + backend + "\" (expected mpi or nccl)";
}

bool available(const std::string& backend) { return unavailable_reason(backend).empty(); }

std::shared_ptr<ProcessGroup> new_process_group(const std::string& backend) {
    const std::string why = unavailable_reason(backend);
    LSG_CHECK(why.empty(), why);
#ifdef LSGRAD_WITH_NCCL
    if (backend == "nccl") return detail::new_nccl_group();
#endif
#ifdef LSGRAD_WITH_MPI
    return detail::new_mpi_group();
#else
    throw Error("new_process_group: " + why);
#endif
}

namespace detail {

void check_collective_tensor(const char* op, const Tensor& t, Device device) {
    LSG_CHECK_OP(op, t.defined(), "the tensor is undefined");
    LSG_CHECK_OP(op, t.dtype() == DType::f32 || t.dtype() == DType::f64 || t.dtype() == DType::i64,
                 "needs an f32, f64 or i64 tensor, got ", t.dtype(), " ", t.shape());
    LSG_CHECK_OP(op, t.is_contiguous(), "needs a contiguous tensor, got ", t.dtype(), " ", t.shape(), " with strides ",
                 t.strides());
    LSG_CHECK_OP(op, t.device() == device, "this group's tensors live on ", device, ", got ", t.dtype(), " ",
                 t.shape(), " on ", t.device());
}

}  // namespace detail
}  // namespace lsg::dist

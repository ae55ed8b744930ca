// The engines behind dist::new_process_group, for the library's own dist/ files: each is defined
// only in a build that has it (LSGRAD_WITH_MPI, LSGRAD_WITH_NCCL).
#pragma once

#include <memory>

#include "lsgrad/dist/process_group.h"

namespace lsg::dist::detail {

std::shared_ptr<ProcessGroup> new_mpi_group();
std::shared_ptr<ProcessGroup> new_nccl_group();

// Throws lsg::Error naming `op` unless t is defined, contiguous, f32/f64/i64 and on `device`.
void check_collective_tensor(const char* op, const Tensor& t, Device device);

}  // namespace lsg::dist::detail

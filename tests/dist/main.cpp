// The multi-process tests' main: every rank runs the same GoogleTest cases (mpirun -np W), sharing
// one MPI process group; the job passes when every rank's cases pass.
#include <gtest/gtest.h>

#include "dist_test.h"

namespace lsg::dist_test {
std::shared_ptr<dist::ProcessGroup> group;
}

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    lsg::dist_test::group = lsg::dist::new_process_group("mpi");
    const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    // Every rank's verdict, so that rank 0's exit status speaks for the job.
    lsg::Tensor verdict = lsg::from_vector<int64_t>({failed});
    lsg::dist_test::group->allreduce(verdict);
    const bool any_failed = verdict.item<int64_t>() != 0;
    lsg::dist_test::group.reset();
    return any_failed ? 1 : 0;
}

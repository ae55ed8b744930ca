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

}  // namespace

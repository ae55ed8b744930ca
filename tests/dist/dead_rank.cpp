// A job in which the last rank dies mid-training while the others wait for it in an allreduce:
//   dead_rank kill    the last rank is killed by SIGKILL (a crash, the OOM killer)
//   dead_rank abort   the last rank hits an error and calls ProcessGroup::abort
// Either way the launcher must end the whole job with a non-zero status and name the rank
// (tests/scripts/dead_rank.sh checks that, and that it takes seconds, not a hang).
#include <csignal>
#include <cstdio>
#include <string>

#include "lsgrad/dist/process_group.h"

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "kill";
    const auto group = lsg::dist::new_process_group("mpi");
    const bool victim = group->rank() == group->size() - 1;
    lsg::Tensor t = lsg::ones({1024});
    for (long step = 0;; ++step) {
        if (victim && step == 3) {
            if (mode == "abort") group->abort(3, "injected error at step 3");
            std::raise(SIGKILL);
        }
        group->allreduce(t, lsg::dist::ReduceOp::Average);
    }
}

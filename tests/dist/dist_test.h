// Shared by the multi-process tests: the process group every case uses.
#pragma once

#include <memory>

#include "lsgrad/dist/process_group.h"

namespace lsg::dist_test {
extern std::shared_ptr<dist::ProcessGroup> group;
}

// Stands in for ops/gemm.cpp in the fuzz build when clang cannot compile it (see CMakeLists.txt):
// the harnesses read files and never multiply matrices, so reaching this is itself a finding.
#include "lsgrad/core/error.h"
#include "lsgrad/ops/gemm.h"

namespace lsg::detail {

void gemm_f32(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
              float*, int64_t) {
    LSG_FAIL("the fuzz build has no GEMM");
}

void gemm_f64(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t, double,
              double*, int64_t) {
    LSG_FAIL("the fuzz build has no GEMM");
}

}  // namespace lsg::detail

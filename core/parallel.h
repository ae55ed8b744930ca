// An OpenMP loop that an exception cannot escape: a C++ exception thrown inside a parallel region
// and not caught there calls std::terminate, so every body that may throw runs through here.
#pragma once

#include <cstdint>
#include <exception>

namespace lsg {

// Runs body(i) for i in [0, n), as `#pragma omp parallel for schedule(static) if (parallel)`. The
// first exception any iteration throws is caught inside the region (later iterations are skipped)
// and rethrown once the region has ended.
template <class Body>
void guarded_parallel_for(int64_t n, bool parallel, Body&& body) {
    std::exception_ptr error;
    bool failed = false;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
        bool skip = false;
#pragma omp atomic read
        skip = failed;
        if (skip) continue;
        try {
            body(i);
        } catch (...) {
#pragma omp critical(lsg_guarded_parallel_for)
            if (!error) error = std::current_exception();
#pragma omp atomic write
            failed = true;
        }
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace lsg

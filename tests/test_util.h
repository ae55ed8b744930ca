// Small helpers shared by the test files: seeded leaves and error-message checks.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "lsgrad/lsgrad.h"

namespace lsg::testing {

// The CPU kernel instruction sets this CPU runs (ops/cpu_isa.h), portable first: tests run each
// vector path against the same reference.
inline std::vector<detail::CpuIsa> supported_cpu_isas() {
    std::vector<detail::CpuIsa> out;
    for (detail::CpuIsa isa : {detail::CpuIsa::portable, detail::CpuIsa::avx2, detail::CpuIsa::avx512})
        if (detail::cpu_isa_supported(isa)) out.push_back(isa);
    return out;
}

// Runs the CPU kernels on `isa` until destroyed, then on the set that ran before, even when an
// assertion returns early.
class CpuIsaScope {
public:
    explicit CpuIsaScope(detail::CpuIsa isa) : previous_(detail::cpu_isa()) { detail::set_cpu_isa(isa); }
    ~CpuIsaScope() { detail::set_cpu_isa(previous_); }
    CpuIsaScope(const CpuIsaScope&) = delete;
    CpuIsaScope& operator=(const CpuIsaScope&) = delete;

private:
    detail::CpuIsa previous_;
};

// A contiguous float64 leaf of `shape` with seeded normal values (× scale + shift), requiring grad.
inline Tensor leaf(const Shape& shape, uint64_t seed, double scale = 1.0, double shift = 0.0) {
    Generator gen(seed);
    Tensor t = affine(randn(shape, {.dtype = DType::f64}, gen), scale, shift).detach();
    t.requires_grad_();
    return t;
}

// Runs fn and expects an lsg::Error whose message contains every fragment.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
    try {
        fn();
        ADD_FAILURE() << "expected lsg::Error";
    } catch (const Error& e) {
        const std::string what = e.what();
        for (const std::string& f : fragments)
            EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
    }
}

// The message of the lsg::Error fn throws, or "no lsg::Error".
template <class Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "no lsg::Error";
}

}  // namespace lsg::testing

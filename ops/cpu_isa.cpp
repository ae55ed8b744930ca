// CPU feature detection for the kernels (see cpu_isa.h).
#include "lsgrad/ops/cpu_isa.h"

#include <atomic>

#include "lsgrad/core/error.h"

namespace lsg::detail {
namespace {

CpuIsa detect() {
#if defined(LSG_X86_64)
    // __builtin_cpu_supports also checks, through XGETBV, that the OS saves the wider registers.
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return CpuIsa::avx512;
    if (avx2) return CpuIsa::avx2;
#endif
    return CpuIsa::portable;
}

std::atomic<CpuIsa>& active() {
    static std::atomic<CpuIsa> isa{cpu_isa_best()};
    return isa;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::portable: return "portable";
        case CpuIsa::avx2: return "avx2";
        case CpuIsa::avx512: return "avx512";
    }
    return "unknown";
}

CpuIsa cpu_isa_best() {
    static const CpuIsa best = detect();
    return best;
}

bool cpu_isa_supported(CpuIsa isa) { return static_cast<int>(isa) <= static_cast<int>(cpu_isa_best()); }

CpuIsa cpu_isa() { return active().load(std::memory_order_relaxed); }

void set_cpu_isa(CpuIsa isa) {
    LSG_CHECK_OP("set_cpu_isa", cpu_isa_supported(isa), "this CPU cannot run the ", cpu_isa_name(isa),
                 " kernels (best: ", cpu_isa_name(cpu_isa_best()), ")");
    active().store(isa, std::memory_order_relaxed);
}

}  // namespace lsg::detail

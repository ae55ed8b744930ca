// Which vector instruction set the CPU kernels (the GEMM, the fused cross-entropy, the 2×2 max-pool)
// run with: detected once from the CPU at run time, whatever -march the library was built with, and
// the one place that decides it. Kernel files put their x86 intrinsics inside LSG_X86_64 and mark
// those functions with LSG_TARGET_AVX2 / LSG_TARGET_AVX512 (or the _BEGIN / _END region pragmas
// around a block of them), so one build holds every path and other targets (aarch64) compile only
// the portable ones.
#pragma once

namespace lsg::detail {

// The instruction sets the CPU kernels have paths for, best last:
//   portable  plain C++ (GCC vector extensions, auto-vectorised loops); every target
//   avx2      AVX2 + FMA (x86-64: Intel Haswell and later, AMD Zen and later)
//   avx512    AVX-512 F, DQ, BW and VL, with AVX2 + FMA (Intel Skylake-SP and later, AMD Zen 4)
enum class CpuIsa { portable, avx2, avx512 };

// "portable", "avx2" or "avx512".
const char* cpu_isa_name(CpuIsa isa);

// The best set this CPU and OS can run (x86-64: CPUID and XGETBV, read once; else portable).
CpuIsa cpu_isa_best();

// Whether this CPU can run the kernels of `isa` (every set up to cpu_isa_best()).
bool cpu_isa_supported(CpuIsa isa);

// The set the kernels use now: cpu_isa_best() unless set_cpu_isa chose a lower one.
CpuIsa cpu_isa();

// Limits every CPU kernel to `isa` (tests run each supported path against the same reference).
// Throws lsg::Error naming the set when this CPU cannot run it. Not thread-safe with running kernels:
// call it while none runs.
void set_cpu_isa(CpuIsa isa);

}  // namespace lsg::detail

#if defined(__x86_64__)
#define LSG_X86_64 1
#define LSG_ISA_AVX2 "avx2,fma"
#define LSG_ISA_AVX512 "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"
// Per-function code generation for one set (GCC and clang). Functions marked so may only be called
// after cpu_isa() said the set is available.
#define LSG_TARGET_AVX2 __attribute__((target(LSG_ISA_AVX2)))
#define LSG_TARGET_AVX512 __attribute__((target(LSG_ISA_AVX512)))
// The same for every function (templates and lambdas included) between _BEGIN and LSG_TARGET_END:
// GCC's target pragma, or clang's attribute pragma, since clang ignores `#pragma GCC target`.
#if defined(__clang__)
#define LSG_TARGET_BEGIN_AVX2 \
    _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define LSG_TARGET_BEGIN_AVX512                                                                          \
    _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512dq,avx512bw,avx512vl,avx2,fma\"))), \
apply_to = function)")
#define LSG_TARGET_END _Pragma("clang attribute pop")
#else
#define LSG_TARGET_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define LSG_TARGET_BEGIN_AVX512 \
    _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512dq,avx512bw,avx512vl,avx2,fma\")")
#define LSG_TARGET_END _Pragma("GCC pop_options")
#endif
#endif

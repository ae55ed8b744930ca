// Packed, cache-blocked GEMM (see gemm.h). One generic algorithm, compiled once per instruction set:
// this file includes itself (the LSG_GEMM_PASS section at the bottom) inside a target region
// (LSG_TARGET_BEGIN_*, cpu_isa.h) and a namespace per ISA, so the AVX-512 and AVX2 kernels exist in
// every x86-64 build and the one cpu_isa() names runs, whatever -march the library was built with.
// Other targets compile the portable kernels only.
//
// Algorithm (GotoBLAS/BLIS loop nest, per chunk of C):
//   for jc over the chunk's columns, NC at a time          B block (kc x NC) packed, lives in L2
//     for pc over k, kc at a time (kc balanced, <= KC)
//       pack op(B)[pc, jc] into NR-wide zero-padded panels
//       for ir over rows, MR at a time                       A micro-panel (MR x kc) stays in L1/L2
//         for jr over the block, NR at a time
//           micro-kernel: an MR x NR register tile += A micro-panel * B panel, then C update
// A is not packed: the kernel broadcasts op(A)[i, p] straight from A through (row, k) strides, which
// works for both A and A^T and saves a pass over A per chunk. Rows past m in the last micro-panel
// alias row 0 (valid memory, results discarded), columns past n are zero-padded in the B panel, and
// partial C tiles go through a small buffer, so nothing outside the caller's matrices is touched.
//
// Threads take chunks of C's columns first come, first served (each chunk packs only its own B
// columns) or, when C is too narrow for that, row ranges. Every C element's sum runs over the same
// kc blocks in the same order with the same kernel arithmetic whatever the split, so results do not
// depend on the thread count or on which thread computed which chunk.

#ifndef LSG_GEMM_PASS

#include "lsgrad/ops/gemm.h"

#include <omp.h>

#include <cstddef>
#include <cstring>
#include <atomic>
#include <chrono>
#include <exception>
#include <new>

#include "lsgrad/core/error.h"
#include "lsgrad/ops/cpu_isa.h"

#if defined(LSG_X86_64)
#include <immintrin.h>
#endif

namespace lsg::detail {
namespace {

// Products below this many FLOPs (2 m n k), about 550 us on one AVX-512 core, run on the calling
// thread. With OMP_WAIT_POLICY=PASSIVE a sleeping worker on a 2-vCPU VM starts 20-40 us after it
// is woken, and a typical two-thread call costs ~55 us more than half the one-thread time. Measured
// medians of back-to-back calls, one thread vs two: 128x128x128 18 vs 40 us, 128x256x256 72 vs
// 73 us, 64x784x256 (25.7 MFLOP) 120 vs 123 us, 128x784x256 (51 MFLOP) 221 vs 166 us. Inside a
// training step, between other work, the wake costs more: an MLP epoch (784-256-256-10, batch 128,
// 2 threads) took 0.67 s with its 51 MFLOP products split and 0.60 s with them on one thread.
constexpr double kParallelMinFlops = 1.0e8;

// A per-thread, 64-byte aligned scratch buffer that only grows: packing reuses it on every call
// instead of allocating (and page-faulting) per product.
class Scratch {
public:
    Scratch() = default;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() { release(); }

    void* get(size_t bytes) {
        if (bytes > cap_) {
            release();
            size_t grown = cap_ * 2 > bytes ? cap_ * 2 : bytes;
            grown = (grown + 63) / 64 * 64;
            ptr_ = ::operator new(grown, std::align_val_t{64});
            cap_ = grown;
        }
        return ptr_;
    }

private:
    void release() {
        if (ptr_) ::operator delete(ptr_, std::align_val_t{64});
        ptr_ = nullptr;
        cap_ = 0;
    }
    void* ptr_ = nullptr;
    size_t cap_ = 0;
};

void* pack_scratch(size_t bytes) {
    thread_local Scratch scratch;
    return scratch.get(bytes);
}

inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// How the product is cut among threads and blocked along k; shared by every ISA's driver.
struct Plan {
    int threads;    // 1: run on the calling thread
    bool split_n;   // chunks are column ranges (else row ranges)
    int64_t units;  // columns in vector-width units, or rows in MR-row panels
    int64_t chunk;  // units per chunk; threads take chunks first come, first served
    int64_t kc;     // k block (the last block may be shorter)
};

// kc is balanced so that no k block is a thin remainder. Threads split the columns, so that no two
// pack the same B columns, into whole register-tile chunks, several per thread: a thread that
// wakes late (or shares its core) then takes fewer chunks instead of holding up the others. Narrow
// products (n < one tile per thread) split the rows instead, one chunk per thread since each chunk
// packs all of B.
Plan make_plan(int64_t m, int64_t n, int64_t k, int lanes, int mr, int nr, int64_t kc_max) {
    Plan plan{};
    const int64_t nkb = ceil_div(k, kc_max);
    plan.kc = ceil_div(k, nkb);
    int64_t threads = 1;
    if (!omp_in_parallel() && 2.0 * double(m) * double(n) * double(k) >= kParallelMinFlops)
        threads = omp_get_max_threads();
    const int64_t n_units = ceil_div(n, lanes);
    const int64_t tile_units = nr / lanes;
    plan.split_n = threads == 1 || n_units >= threads * tile_units;
    if (plan.split_n) {
        plan.units = n_units;
        plan.chunk = threads == 1 ? n_units : ceil_div(ceil_div(n_units, 4 * threads), tile_units) * tile_units;
    } else {
        plan.units = ceil_div(m, mr);
        plan.chunk = ceil_div(plan.units, threads);
    }
    plan.threads = int(min64(threads, ceil_div(plan.units, plan.chunk)));
    return plan;
}

}  // namespace
}  // namespace lsg::detail

// ---- Portable kernels: GCC vector extensions, 16-byte vectors (SSE2 on any x86-64, NEON on ARM). ----
namespace lsg::detail::gemm_portable {
namespace {
template <class Real>
struct Isa {
    using T = Real;
    typedef Real V __attribute__((vector_size(16)));
    static constexpr int L = int(16 / sizeof(Real));  // lanes per vector
    static constexpr int MR = 4;                      // micro-tile rows
    static constexpr int NVMAX = 2;                   // vectors per micro-tile row: NR = NVMAX * L
    static constexpr int64_t KC = 256;
    static constexpr int64_t NC = 512;
    static constexpr int TB = 0;  // no vector transpose: B^T is packed element by element
    static V zero() { return V{}; }
    static V set1(T x) { return V{} + x; }
    static V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
    static V fmadd(V a, V b, V c) { return a * b + c; }
    static V mul(V a, V b) { return a * b; }
    static V add(V a, V b) { return a + b; }
    static void transpose(const T*, int64_t, T*, int64_t) {}
};
using F32 = Isa<float>;
using F64 = Isa<double>;
}  // namespace
#define LSG_GEMM_PASS 1
#include "gemm.cpp"  // NOLINT(bugprone-suspicious-include): the generic driver, see the top comment
#undef LSG_GEMM_PASS
}  // namespace lsg::detail::gemm_portable

#if defined(LSG_X86_64)
// ---- AVX2 + FMA kernels: 6 x 16 floats (6 x 8 doubles) in 12 of the 16 ymm registers. ----
LSG_TARGET_BEGIN_AVX2
namespace lsg::detail::gemm_avx2 {
namespace {
// dst[r * ldd + c] = src[c * lds + r] for an 8 x 8 float block.
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

// dst[r * ldd + c] = src[c * lds + r] for a 4 x 4 double block.
inline void transpose4x4(const double* src, int64_t lds, double* dst, int64_t ldd) {
    const __m256d r0 = _mm256_loadu_pd(src + 0 * lds), r1 = _mm256_loadu_pd(src + 1 * lds);
    const __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst + 0 * ldd, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + 1 * ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

struct F32 {
    using T = float;
    using V = __m256;
    static constexpr int L = 8, MR = 6, NVMAX = 2;
    static constexpr int64_t KC = 256, NC = 512;
    static constexpr int TB = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(T x) { return _mm256_set1_ps(x); }
    static V load(const T* p) { return _mm256_loadu_ps(p); }
    static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
    static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static void transpose(const T* s, int64_t lds, T* d, int64_t ldd) { transpose8x8(s, lds, d, ldd); }
};
struct F64 {
    using T = double;
    using V = __m256d;
    static constexpr int L = 4, MR = 6, NVMAX = 2;
    static constexpr int64_t KC = 256, NC = 256;
    static constexpr int TB = 4;
    static V zero() { return _mm256_setzero_pd(); }
    static V set1(T x) { return _mm256_set1_pd(x); }
    static V load(const T* p) { return _mm256_loadu_pd(p); }
    static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
    static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
    static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
    static V add(V a, V b) { return _mm256_add_pd(a, b); }
    static void transpose(const T* s, int64_t lds, T* d, int64_t ldd) { transpose4x4(s, lds, d, ldd); }
};
}  // namespace
#define LSG_GEMM_PASS 1
#include "gemm.cpp"  // NOLINT(bugprone-suspicious-include): the generic driver, see the top comment
#undef LSG_GEMM_PASS
}  // namespace lsg::detail::gemm_avx2
LSG_TARGET_END

// ---- AVX-512 kernels: 6 x 64 floats (6 x 32 doubles) in 24 of the 32 zmm registers. ----
LSG_TARGET_BEGIN_AVX512
namespace lsg::detail::gemm_avx512 {
namespace {
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
    gemm_avx2::transpose8x8(src, lds, dst, ldd);
}
inline void transpose4x4(const double* src, int64_t lds, double* dst, int64_t ldd) {
    gemm_avx2::transpose4x4(src, lds, dst, ldd);
}
struct F32 {
    using T = float;
    using V = __m512;
    static constexpr int L = 16, MR = 6, NVMAX = 4;
    static constexpr int64_t KC = 384, NC = 256;
    static constexpr int TB = 8;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(T x) { return _mm512_set1_ps(x); }
    static V load(const T* p) { return _mm512_loadu_ps(p); }
    static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static void transpose(const T* s, int64_t lds, T* d, int64_t ldd) { transpose8x8(s, lds, d, ldd); }
};
struct F64 {
    using T = double;
    using V = __m512d;
    static constexpr int L = 8, MR = 6, NVMAX = 4;
    static constexpr int64_t KC = 256, NC = 256;
    static constexpr int TB = 4;
    static V zero() { return _mm512_setzero_pd(); }
    static V set1(T x) { return _mm512_set1_pd(x); }
    static V load(const T* p) { return _mm512_loadu_pd(p); }
    static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
    static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
    static V add(V a, V b) { return _mm512_add_pd(a, b); }
    static void transpose(const T* s, int64_t lds, T* d, int64_t ldd) { transpose4x4(s, lds, d, ldd); }
};
}  // namespace
#define LSG_GEMM_PASS 1
#include "gemm.cpp"  // NOLINT(bugprone-suspicious-include): the generic driver, see the top comment
#undef LSG_GEMM_PASS
}  // namespace lsg::detail::gemm_avx512
LSG_TARGET_END
#endif  // LSG_X86_64

namespace lsg::detail {
namespace {

// Shape and argument checks shared by both precisions, then the cases that need no product.
template <class T>
bool gemm_trivial(const char* op, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                  const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
    LSG_CHECK_OP(op, m >= 0 && n >= 0 && k >= 0, "negative size m=", m, " n=", n, " k=", k);
    const int64_t a_cols = trans_a ? m : k;
    const int64_t b_cols = trans_b ? k : n;
    LSG_CHECK_OP(op, lda >= (a_cols > 1 ? a_cols : 1), "lda=", lda, " is smaller than op(A)'s stored width ",
                 a_cols, " (m=", m, ", k=", k, ", trans_a=", trans_a, ")");
    LSG_CHECK_OP(op, ldb >= (b_cols > 1 ? b_cols : 1), "ldb=", ldb, " is smaller than op(B)'s stored width ",
                 b_cols, " (k=", k, ", n=", n, ", trans_b=", trans_b, ")");
    LSG_CHECK_OP(op, ldc >= (n > 1 ? n : 1), "ldc=", ldc, " is smaller than n=", n);
    if (m == 0 || n == 0) return true;
    LSG_CHECK_OP(op, c != nullptr, "C is null for a ", m, "x", n, " output");
    if (k == 0 || alpha == T(0)) {
        for (int64_t i = 0; i < m; ++i) {
            T* row = c + i * ldc;
            if (beta == T(0)) {
                for (int64_t j = 0; j < n; ++j) row[j] = T(0);
            } else if (beta != T(1)) {
                for (int64_t j = 0; j < n; ++j) row[j] *= beta;
            }
        }
        return true;
    }
    LSG_CHECK_OP(op, a != nullptr && b != nullptr, "A or B is null for m=", m, " n=", n, " k=", k);
    return false;
}

}  // namespace

bool gemm_batch_across_threads(int64_t batch, int64_t product) {
    return batch > 1 && product < (int64_t(1) << 24) && omp_get_max_threads() > 1;
}

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    if (gemm_trivial("gemm_f32", trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
    switch (cpu_isa()) {
#if defined(LSG_X86_64)
        case CpuIsa::avx512:
            return gemm_avx512::gemm<gemm_avx512::F32>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                                       beta, c, ldc);
        case CpuIsa::avx2:
            return gemm_avx2::gemm<gemm_avx2::F32>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                                   c, ldc);
#endif
        default:
            return gemm_portable::gemm<gemm_portable::F32>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                                           beta, c, ldc);
    }
}

void gemm_f64(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
              int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
    if (gemm_trivial("gemm_f64", trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
    switch (cpu_isa()) {
#if defined(LSG_X86_64)
        case CpuIsa::avx512:
            return gemm_avx512::gemm<gemm_avx512::F64>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                                       beta, c, ldc);
        case CpuIsa::avx2:
            return gemm_avx2::gemm<gemm_avx2::F64>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                                   c, ldc);
#endif
        default:
            return gemm_portable::gemm<gemm_portable::F64>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                                                           beta, c, ldc);
    }
}

}  // namespace lsg::detail

#else  // LSG_GEMM_PASS: the generic driver, instantiated inside each ISA namespace above.

namespace {

// The micro-kernel: C[0:mr, 0:nr] (row stride ldc) gets alpha * A_panel * B_panel, with
//   A_panel[i, p] = a[i * rsa + p * csa]  (i < mr; rows past mr alias row 0 and are discarded),
//   B_panel[p, j] = b[p * NV * L + j]     (packed, zero-padded to NV * L columns),
// added to beta * C when `first` (the first k block; beta == 0 never reads C), else to C.
template <class S, int NV>
void micro_kernel(int64_t kc, const typename S::T* a, int64_t rsa, int64_t csa, const typename S::T* b,
                  typename S::T* c, int64_t ldc, typename S::T alpha, typename S::T beta, bool first, int mr,
                  int nr) {
    using T = typename S::T;
    using V = typename S::V;
    constexpr int MR = S::MR, L = S::L, W = NV * L;
    const T* rows[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) rows[i] = a + (i < mr ? i : 0) * rsa;
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = S::zero();
    int64_t off = 0;
    for (int64_t p = 0; p < kc; ++p, off += csa, b += W) {
        V bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) bv[v] = S::load(b + v * L);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const V ai = S::set1(rows[i][off]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[i][v] = S::fmadd(ai, bv[v], acc[i][v]);
        }
    }

    const V va = S::set1(alpha), vb = S::set1(beta);
    const bool read_c = !first || beta != T(0);
    // The same vector arithmetic serves full tiles in place and partial tiles through `tile`, so an
    // element's bits do not depend on where its tile falls.
    auto update = [&](T* dst, int64_t ld) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) {
                T* p = dst + i * ld + v * L;
                V r = S::mul(va, acc[i][v]);
                if (read_c) r = first ? S::fmadd(vb, S::load(p), r) : S::add(S::load(p), r);
                S::store(p, r);
            }
    };
    if (mr == MR && nr == W) {
        update(c, ldc);
        return;
    }
    alignas(64) T tile[MR * W] = {};
    if (read_c)
        for (int i = 0; i < mr; ++i)
            for (int j = 0; j < nr; ++j) tile[i * W + j] = c[i * ldc + j];
    update(tile, W);
    for (int i = 0; i < mr; ++i)
        for (int j = 0; j < nr; ++j) c[i * ldc + j] = tile[i * W + j];
}

// Packs op(B)[p0 : p0+kc, j0 : j0+nc] into panels of NVMAX * L columns (the last one narrower,
// rounded up to whole vectors and zero-padded): panel jr starts at dst + jr * kc, row p of a panel
// of width W at + p * W.
template <class S>
void pack_b(bool trans_b, const typename S::T* b, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
            int64_t nc, typename S::T* dst) {
    using T = typename S::T;
    constexpr int L = S::L, NR = S::NVMAX * S::L;
    for (int64_t jr = 0; jr < nc; jr += NR) {
        const int64_t w = min64(NR, nc - jr);
        const int64_t wpad = ceil_div(w, L) * L;
        T* d = dst + jr * kc;
        if (!trans_b) {
            const T* src = b + p0 * ldb + j0 + jr;
            if (w == NR) {
                for (int64_t p = 0; p < kc; ++p)
                    for (int j = 0; j < NR; ++j) d[p * NR + j] = src[p * ldb + j];
            } else {
                for (int64_t p = 0; p < kc; ++p) {
                    for (int64_t j = 0; j < w; ++j) d[p * wpad + j] = src[p * ldb + j];
                    for (int64_t j = w; j < wpad; ++j) d[p * wpad + j] = T(0);
                }
            }
            continue;
        }
        // op(B)[p, j] = b[j * ldb + p]: rows of B become columns of the panel.
        const T* src = b + (j0 + jr) * ldb + p0;
        int64_t jb = 0;
        if constexpr (S::TB > 0) {
            for (; jb + S::TB <= w; jb += S::TB) {
                int64_t p = 0;
                for (; p + S::TB <= kc; p += S::TB) S::transpose(src + jb * ldb + p, ldb, d + p * wpad + jb, wpad);
                for (; p < kc; ++p)
                    for (int64_t j = jb; j < jb + S::TB; ++j) d[p * wpad + j] = src[j * ldb + p];
            }
        }
        for (int64_t p = 0; p < kc; ++p) {
            for (int64_t j = jb; j < w; ++j) d[p * wpad + j] = src[j * ldb + p];
            for (int64_t j = w; j < wpad; ++j) d[p * wpad + j] = T(0);
        }
    }
}

template <class S>
void run_kernel(int nv, int64_t kc, const typename S::T* a, int64_t rsa, int64_t csa, const typename S::T* b,
                typename S::T* c, int64_t ldc, typename S::T alpha, typename S::T beta, bool first, int mr,
                int nr) {
    static_assert(S::NVMAX >= 1 && S::NVMAX <= 4);
    switch (nv) {
        case 1: return micro_kernel<S, 1>(kc, a, rsa, csa, b, c, ldc, alpha, beta, first, mr, nr);
        case 2:
            if constexpr (S::NVMAX >= 2)
                return micro_kernel<S, 2>(kc, a, rsa, csa, b, c, ldc, alpha, beta, first, mr, nr);
            break;
        case 3:
            if constexpr (S::NVMAX >= 3)
                return micro_kernel<S, 3>(kc, a, rsa, csa, b, c, ldc, alpha, beta, first, mr, nr);
            break;
        case 4:
            if constexpr (S::NVMAX >= 4)
                return micro_kernel<S, 4>(kc, a, rsa, csa, b, c, ldc, alpha, beta, first, mr, nr);
            break;
        default: break;
    }
}

// One thread's share: C[m0:m1, n0:n1], with its own packed B buffer.
template <class S>
void gemm_block(bool trans_a, bool trans_b, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k,
                int64_t kc_nom, typename S::T alpha, const typename S::T* a, int64_t lda,
                const typename S::T* b, int64_t ldb, typename S::T beta, typename S::T* c, int64_t ldc) {
    using T = typename S::T;
    constexpr int L = S::L, MR = S::MR, NR = S::NVMAX * S::L;
    const int64_t nc_max = min64(S::NC, ceil_div(n1 - n0, L) * L);
    T* bp = static_cast<T*>(pack_scratch(size_t(kc_nom * nc_max) * sizeof(T)));
    const int64_t rsa = trans_a ? 1 : lda;
    const int64_t csa = trans_a ? lda : 1;
    for (int64_t jc = n0; jc < n1; jc += S::NC) {
        const int64_t nc = min64(S::NC, n1 - jc);
        for (int64_t p0 = 0; p0 < k; p0 += kc_nom) {
            const int64_t kc = min64(kc_nom, k - p0);
            pack_b<S>(trans_b, b, ldb, p0, kc, jc, nc, bp);
            for (int64_t ir = m0; ir < m1; ir += MR) {
                const int mr = int(min64(MR, m1 - ir));
                const T* ap = a + (trans_a ? p0 * lda + ir : ir * lda + p0);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    const int nr = int(min64(NR, nc - jr));
                    run_kernel<S>(int(ceil_div(nr, L)), kc, ap, rsa, csa, bp + jr * kc, c + ir * ldc + jc + jr,
                                  ldc, alpha, beta, p0 == 0, mr, nr);
                }
            }
        }
    }
}

template <class S>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, typename S::T alpha,
          const typename S::T* a, int64_t lda, const typename S::T* b, int64_t ldb, typename S::T beta,
          typename S::T* c, int64_t ldc) {
    const Plan plan = make_plan(m, n, k, S::L, S::MR, S::NVMAX * S::L, S::KC);
    const int64_t chunks = ceil_div(plan.units, plan.chunk);
    auto run_chunk = [&](int64_t ch) {
        const int64_t u0 = ch * plan.chunk, u1 = min64(u0 + plan.chunk, plan.units);
        if (plan.split_n)
            gemm_block<S>(trans_a, trans_b, 0, m, u0 * S::L, min64(u1 * S::L, n), k, plan.kc, alpha, a, lda, b,
                          ldb, beta, c, ldc);
        else
            gemm_block<S>(trans_a, trans_b, u0 * S::MR, min64(u1 * S::MR, m), 0, n, k, plan.kc, alpha, a, lda,
                          b, ldb, beta, c, ldc);
    };
    if (plan.threads == 1) {
        for (int64_t ch = 0; ch < chunks; ++ch) run_chunk(ch);
        return;
    }
    // Only allocation can throw in a chunk; an exception must not cross the parallel region.
    std::exception_ptr error;
    std::atomic<int> finished{0};
#pragma omp parallel num_threads(plan.threads)
    {
        using clock = std::chrono::steady_clock;
        clock::duration longest{0};
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t ch = 0; ch < chunks; ++ch) {
            const auto start = clock::now();
            try {
                run_chunk(ch);
            } catch (...) {
#pragma omp critical(lsg_gemm_error)
                error = std::current_exception();
            }
            const auto took = clock::now() - start;
            if (took > longest) longest = took;
        }
        finished.fetch_add(1, std::memory_order_acq_rel);
        // With OMP_WAIT_POLICY=PASSIVE a thread that reaches the closing barrier before the others
        // sleeps, and waking it again costs ~30 us on this kind of VM: a sixth of a 256x784x256
        // product on two cores. So the calling thread waits for the others' last chunks awake (at
        // most as long as its own longest chunk, so a thread that never got a core is not waited
        // for in a busy loop), and arrives last; the others sleep, and nobody needs them quickly.
        if (omp_get_thread_num() == 0) {
            const int team = omp_get_num_threads();
            const auto until = clock::now() + longest;
            while (finished.load(std::memory_order_acquire) < team && clock::now() < until) {
            }
        }
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace

#endif  // LSG_GEMM_PASS

// The CPU matrix multiply behind Linear, the im2col convolution and their gradients: a packed,
// cache-blocked, vectorised, OpenMP-parallel GEMM in the GotoBLAS/BLIS style. The vector kernel
// (AVX-512, AVX2+FMA or portable) is the one cpu_isa() names (ops/cpu_isa.h): chosen at run time from
// what the CPU supports, so the library is fast without being built for one machine.
#pragma once

#include <cstdint>

namespace lsg::detail {

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n], every matrix row-major.
// op(A) = A when !trans_a (A is m x k, row stride lda >= k) or A^T when trans_a (A is stored k x m,
// lda >= m); likewise op(B) = B (k x n, ldb >= n) or B^T (B stored n x k, ldb >= k). C is m x n with
// ldc >= n. beta == 0 makes C write-only: its old contents, NaN included, are ignored. k == 0 or
// alpha == 0 gives C = beta * C without reading A or B.
// Deterministic: every C element is accumulated in the same order whatever the thread count.
// Runs on omp_get_max_threads() threads when the product is big enough to pay for waking them.
void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Whether a batch of `batch` independent products, each of m·n·k = `product` multiply-adds, runs
// one product per thread (each on one thread) rather than one after another, each parallel inside:
// below 2^24 a product is too small to pay for waking a team (see gemm.cpp).
bool gemm_batch_across_threads(int64_t batch, int64_t product);

// The same product in double precision, for gradient checks and f64 tensors.
void gemm_f64(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
              int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

}  // namespace lsg::detail

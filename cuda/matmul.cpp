// GEMM on CUDA through cuBLAS. cuBLAS is column-major and our matrices are row-major: a row-major
// m×n matrix is the same memory as its column-major n×m transpose, so C = op(A)·op(B) is computed
// as Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e. cuBLAS is called with the operands swapped, m and n swapped, and each
// operand's own transpose flag. The leading dimensions are the row lengths of the stored matrices.
#include <algorithm>
#include <climits>

#include "device.h"

namespace lsg {

void CudaTensorKernels::gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                             double alpha, const Tensor& a, int64_t stride_a, const Tensor& b, int64_t stride_b,
                             double beta, Tensor& c, int64_t stride_c, int64_t batch) {
    if (m == 0 || n == 0 || batch == 0) return;
    LSG_CHECK_OP("matmul", m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && batch <= INT_MAX,
                 "cuBLAS takes 32-bit sizes, got m = ", m, ", n = ", n, ", k = ", k, ", batch = ", batch);
    cublasHandle_t h = cuda::cublas(ctx);
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    // cuBLAS wants leading dimensions of at least 1, also for k = 0 (where C becomes beta·C).
    const int lda = static_cast<int>(std::max<int64_t>(1, trans_a ? m : k));
    const int ldb = static_cast<int>(std::max<int64_t>(1, trans_b ? k : n));
    const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k), B = static_cast<int>(batch);
    // Stride 0 repeats a matrix across the batch (a weight shared by every batch entry).
    if (c.dtype() == DType::f64) {
        const double al = alpha, be = beta;
        LSG_CUBLAS_CHECK(cublasDgemmStridedBatched(h, op_b, op_a, N, M, K, &al, b.data<double>(), ldb, stride_b,
                                                   a.data<double>(), lda, stride_a, &be, c.data<double>(), N,
                                                   stride_c, B));
    } else {
        const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
        LSG_CUBLAS_CHECK(cublasSgemmStridedBatched(h, op_b, op_a, N, M, K, &al, b.data<float>(), ldb, stride_b,
                                                   a.data<float>(), lda, stride_a, &be, c.data<float>(), N, stride_c,
                                                   B));
    }
}

}  // namespace lsg

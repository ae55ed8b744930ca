// Device dispatch: each device provides a table of kernels, and ops ask the tensor's device for
// it. The CPU table lives in ops/ (each kernel beside its op); the CUDA table in cuda/, or in the
// CPU-only stub that throws "built without CUDA". No op contains a device #ifdef.
//
// Kernels compute only: the op has already checked shapes, dtypes and devices, allocated the
// outputs (contiguous unless stated) and will record autograd. Views passed in may have any
// strides, including 0 for broadcast dims.
#pragma once

#include <cstdint>

#include "lsgrad/core/tensor.h"

namespace lsg {

enum class UnaryOp : uint8_t {
    neg,      // -x
    exp,      // e^x
    log,      // ln x
    sqrt,     // sqrt x
    relu,     // max(x, 0)
    sigmoid,  // 1 / (1 + e^-x)
    tanh,     // tanh x
    abs,      // |x|
    affine,   // a·x + b
    pow,      // x^a
    clamp,    // min(max(x, a), b)
};

enum class BinaryOp : uint8_t { add, sub, mul, div, maximum, minimum, eq, ne, lt, le, gt, ge };

enum class ReduceOp : uint8_t { sum, max, min, argmax, argmin };

// Geometry of a 2-D convolution or pooling window over NCHW input.
struct Window2d {
    int64_t batch, channels, height, width;  // input
    int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    int64_t out_h, out_w;
};

class TensorKernels {
public:
    virtual ~TensorKernels() = default;

    // dst[i] = src[i] for every index of dst's shape, converting dtype; src has dst's shape
    // (possibly through stride-0 broadcast) and any strides; dst any strides.
    virtual void copy(const Tensor& src, Tensor& dst) = 0;
    // Every element of contiguous dst set to value.
    virtual void fill(Tensor& dst, double value) = 0;

    // out = op(x) elementwise; x and out contiguous, same shape and floating dtype.
    virtual void unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) = 0;
    // dx = grad · op'(x) where y = op(x); all contiguous, same shape.
    virtual void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y,
                                Tensor& dx, double a, double b) = 0;
    // out = a op b; a and b are views expanded to out's shape; comparisons give 1 or 0.
    virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
    // out = cond != 0 ? a : b; all three views expanded to out's shape.
    virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) = 0;

    // Reduces the middle dim of contiguous x viewed as [outer, n, inner] into out [outer, inner]
    // (i64 for arg reductions). Sums accumulate in double, in index order.
    virtual void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) = 0;
    // Softmax (or log-softmax) over the middle dim of contiguous [outer, n, inner].
    virtual void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& out) = 0;
    // dx from grad and the forward's output y: y·(g − Σ g·y), or g − e^y·Σ g for log-softmax.
    virtual void softmax_backward(const Tensor& grad, const Tensor& y, int64_t outer, int64_t n,
                                  int64_t inner, bool log, Tensor& dx) = 0;

    // out[o, j, i] = x[o, index[o, j, i], i]; x is [outer, n, inner], index and out [outer, m, inner].
    virtual void gather(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t m,
                        int64_t inner, Tensor& out) = 0;
    // dx[o, index[o, j, i], i] += grad[o, j, i]; dx zero-initialised by the caller.
    virtual void scatter_add(const Tensor& grad, const Tensor& index, int64_t outer, int64_t n,
                             int64_t m, int64_t inner, Tensor& dx) = 0;
    // out[o, j, i] = x[o, index[j], i]; index is [m].
    virtual void index_select(const Tensor& x, const Tensor& index, int64_t outer, int64_t n,
                              int64_t m, int64_t inner, Tensor& out) = 0;
    // dx[o, index[j], i] += grad[o, j, i]; dx zero-initialised by the caller.
    virtual void index_add(const Tensor& grad, const Tensor& index, int64_t outer, int64_t n,
                           int64_t m, int64_t inner, Tensor& dx) = 0;

    // C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b] for b < batch, row-major contiguous matrices;
    // op(A) is m×k (A stored k×m when trans_a), op(B) k×n. Batch strides in elements (0 repeats
    // the matrix). beta == 0 ignores C's old contents.
    virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                      const Tensor& a, int64_t stride_a, const Tensor& b, int64_t stride_b, double beta,
                      Tensor& c, int64_t stride_c, int64_t batch) = 0;

    // cols [N, C·kh·kw, oh·ow] from x [N, C, H, W] (zero padding; see detail::col_offset in
    // ops/conv_math.h); col2im accumulates back into zero-initialised dx.
    virtual void im2col(const Tensor& x, const Window2d& g, Tensor& cols) = 0;
    virtual void col2im(const Tensor& cols, const Window2d& g, Tensor& dx) = 0;
    // out [N, C, oh, ow] = window max (padding counts as -inf); argmax holds the flat input
    // index h·W + w of each max for the backward.
    virtual void max_pool2d(const Tensor& x, const Window2d& g, Tensor& out, Tensor& argmax) = 0;
    virtual void max_pool2d_backward(const Tensor& grad, const Tensor& argmax, const Window2d& g, Tensor& dx) = 0;
    // out = x·mask/(1−p), mask[i] = 1 with probability 1−p from Philox(seed, offset + i), so both
    // devices draw the same mask.
    virtual void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& out, Tensor& mask) = 0;
    // Uniform [0,1) (normal = false) or standard normal draws from Philox(seed, offset + i).
    virtual void random(Tensor& out, bool normal, uint64_t seed, uint64_t offset) = 0;
};

// The kernel table of `device`.
TensorKernels& tensor_kernels(Device device);
TensorKernels& cpu_tensor_kernels();
// Defined in cuda/ (or by the CPU-only stub, which throws "built without CUDA").
TensorKernels& cuda_tensor_kernels();

}  // namespace lsg

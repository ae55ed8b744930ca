// What the CUDA sources share: each device's stream and cuBLAS handle, device scratch buffers, launch
// shapes and the kernel table class (its methods are defined beside the kernels of each family:
// elementwise.cu, reduce.cu, index.cu, conv.cu, matmul.cpp). Internal to cuda/.
//
// Every kernel of a device runs on that device's one stream, in issue order: a block the caching
// allocator hands out again is therefore never touched by an earlier kernel still in flight, and a
// host copy only has to synchronise that stream. The stream is a blocking one, so work on the
// legacy default stream (a user's kernels, CUDA events) is ordered with it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda_check.h"
#include "lsgrad/core/backend.h"

namespace lsg::cuda {

// Makes `device` current (kernels launch and allocate there) and returns its stream.
cudaStream_t stream(Device device);
// The current device's stream: for the kernel tables that receive raw pointers (loss, optim), whose
// buffers were just allocated on, and so made current, the tensors' device.
cudaStream_t current_stream();
// The cuBLAS handle of `device`, bound to stream(device), which it makes current.
cublasHandle_t cublas(Device device);

// Bytes of device memory on the current device from its caching allocator, given back when the
// buffer goes out of scope. Safe while kernels that use it are still queued: the block is handed
// out again only to work issued later on the same stream.
class Scratch {
public:
    explicit Scratch(size_t nbytes);
    ~Scratch();
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    template <class T>
    T* as() const {
        return static_cast<T*>(ptr_);
    }

private:
    void* ptr_;
    size_t nbytes_;
    int device_;
};

// Threads per block of the elementwise kernels.
inline constexpr int kBlock = 256;
// Blocks for n elements with grid-stride loops: enough to fill any current GPU, few enough that
// each thread handles several elements of a large tensor.
inline unsigned blocks_for(int64_t n, int block = kBlock) {
    return static_cast<unsigned>(std::clamp<int64_t>((n + block - 1) / block, 1, int64_t(1) << 16));
}

// The C++ type of a floating dtype: fn.template operator()<float or double>().
template <class Fn>
decltype(auto) visit_floating(DType dtype, Fn&& fn) {
    if (dtype == DType::f64) return fn.template operator()<double>();
    return fn.template operator()<float>();
}

}  // namespace lsg::cuda

namespace lsg {

class CudaTensorKernels final : public TensorKernels {
public:
    void copy(const Tensor& src, Tensor& dst) override;
    void fill(Tensor& dst, double value) override;
    void unary(UnaryOp op, const Tensor& x, Tensor& out, double a, double b) override;
    void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y, Tensor& dx, double a,
                        double b) override;
    void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
    void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
    void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) override;
    void softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log, Tensor& out) override;
    void softmax_backward(const Tensor& grad, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log,
                          Tensor& dx) override;
    void gather(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t m, int64_t inner,
                Tensor& out) override;
    void scatter_add(const Tensor& grad, const Tensor& index, int64_t outer, int64_t n, int64_t m, int64_t inner,
                     Tensor& dx) override;
    void index_select(const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t m, int64_t inner,
                      Tensor& out) override;
    void index_add(const Tensor& grad, const Tensor& index, int64_t outer, int64_t n, int64_t m, int64_t inner,
                   Tensor& dx) override;
    void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const Tensor& a,
              int64_t stride_a, const Tensor& b, int64_t stride_b, double beta, Tensor& c, int64_t stride_c,
              int64_t batch) override;
    void im2col(const Tensor& x, const Window2d& g, Tensor& cols) override;
    void col2im(const Tensor& cols, const Window2d& g, Tensor& dx) override;
    void max_pool2d(const Tensor& x, const Window2d& g, Tensor& out, Tensor& argmax) override;
    void max_pool2d_backward(const Tensor& grad, const Tensor& argmax, const Window2d& g, Tensor& dx) override;
    void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& out, Tensor& mask) override;
    void random(Tensor& out, bool normal, uint64_t seed, uint64_t offset) override;
};

}  // namespace lsg

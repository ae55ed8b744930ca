// What the CUDA sources share: the stream of a kernel context, each device's cuBLAS handle, device
// scratch buffers, the deferred error record, launch shapes and the kernel table classes (the
// tensor table's methods are defined beside the kernels of each family: elementwise.cu, reduce.cu,
// index.cu, conv.cu, matmul.cpp; the loss, linear cross-entropy and optimizer tables in loss.cu,
// linear_cross_entropy.cu and optim.cu). The CUDA backend registers them from device.cpp. Internal
// to cuda/.
//
// Every kernel runs on the stream of the KernelContext it is given: the thread's current stream of
// the device (core/stream.h), by default the device's own stream, so kernels run in issue order:
// a block the caching allocator hands out again is then never touched by an earlier kernel still
// in flight, and a host copy only has to synchronise that stream. The default stream is a blocking
// one, so work on the legacy default stream (a user's kernels, CUDA events) is ordered with it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda_check.h"
#include "lsgrad/core/backend.h"

namespace lsg::cuda {

// Makes ctx's device current (kernels launch and allocate there) and returns the stream to launch
// on: ctx.stream, or the device's own stream when that is null.
cudaStream_t stream(const KernelContext& ctx);
// The cuBLAS handle of ctx's device, bound to stream(ctx).
cublasHandle_t cublas(const KernelContext& ctx);

// A class-target error that a loss kernel found on the device, raised on the host at the next
// synchronising call (a copy to the host, lsg::synchronize) with fail_target_out_of_range, the CPU
// check's message, then cleared. No kernel ever waits for it. Each device has one slot: `claim`, an
// int in device memory that the first kernel to find a bad target takes with atomicCAS (the atomics
// stay in device memory), and `record`, the device's address of a record in mapped host memory that
// the claiming thread fills with plain stores, writing `flag` last after a system fence.
struct TargetError {
    int flag;
    const char* op;  // the op's name: a host string literal, only carried by the device
    long long row, value, classes, ignore_index;
};
struct TargetErrorSlot {
    int* claim;
    TargetError* record;
};
// The slot of ctx's device.
TargetErrorSlot target_error_slot(const KernelContext& ctx);
// After a synchronisation of device `index`: raises the error its kernels recorded, if any.
void raise_recorded_error(int index);

// Bytes of device memory on ctx's device from its caching allocator, given back when the buffer
// goes out of scope. Safe while kernels that use it are still queued on ctx's stream: the block is
// handed out again only to work issued later (on the same stream, for the default one).
class Scratch {
public:
    Scratch(const KernelContext& ctx, size_t nbytes);
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

// The loss, linear cross-entropy and optimizer tables (loss.cu, linear_cross_entropy.cu, optim.cu),
// registered by device.cpp.
LossKernels& loss_table();
LinearCrossEntropyKernels& linear_cross_entropy_table();
OptimizerKernels& optimizer_table();

}  // namespace lsg::cuda

namespace lsg {

class CudaTensorKernels final : public TensorKernels {
public:
    void copy(const KernelContext& ctx, const Tensor& src, Tensor& dst) override;
    void fill(const KernelContext& ctx, Tensor& dst, double value) override;
    void unary(const KernelContext& ctx, UnaryOp op, const Tensor& x, Tensor& out, double a, double b) override;
    void unary_backward(const KernelContext& ctx, UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y,
                        Tensor& dx, double a, double b) override;
    void binary(const KernelContext& ctx, BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
    void where(const KernelContext& ctx, const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
    void reduce(const KernelContext& ctx, ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                Tensor& out) override;
    void softmax(const KernelContext& ctx, const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log,
                 Tensor& out) override;
    void softmax_backward(const KernelContext& ctx, const Tensor& grad, const Tensor& y, int64_t outer, int64_t n,
                          int64_t inner, bool log, Tensor& dx) override;
    void gather(const KernelContext& ctx, const Tensor& x, const Tensor& index, int64_t outer, int64_t n, int64_t m,
                int64_t inner, Tensor& out) override;
    void scatter_add(const KernelContext& ctx, const Tensor& grad, const Tensor& index, int64_t outer, int64_t n,
                     int64_t m, int64_t inner, Tensor& dx) override;
    void index_select(const KernelContext& ctx, const Tensor& x, const Tensor& index, int64_t outer, int64_t n,
                      int64_t m, int64_t inner, Tensor& out) override;
    void index_add(const KernelContext& ctx, const Tensor& grad, const Tensor& index, int64_t outer, int64_t n,
                   int64_t m, int64_t inner, Tensor& dx) override;
    void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
              const Tensor& a, int64_t stride_a, const Tensor& b, int64_t stride_b, double beta, Tensor& c,
              int64_t stride_c, int64_t batch) override;
    void im2col(const KernelContext& ctx, const Tensor& x, const Window2d& g, Tensor& cols) override;
    void col2im(const KernelContext& ctx, const Tensor& cols, const Window2d& g, Tensor& dx) override;
    void max_pool2d(const KernelContext& ctx, const Tensor& x, const Window2d& g, Tensor& out, Tensor& argmax) override;
    void max_pool2d_backward(const KernelContext& ctx, const Tensor& grad, const Tensor& argmax, const Window2d& g,
                             Tensor& dx) override;
    void dropout(const KernelContext& ctx, const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& out,
                 Tensor& mask) override;
    void random(const KernelContext& ctx, Tensor& out, bool normal, uint64_t seed, uint64_t offset) override;
};

}  // namespace lsg

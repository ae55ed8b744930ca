// The CPU tensor kernel table (see core/backend.h), registered by ops/cpu_backend.cpp. Its methods
// are defined beside the ops that use them: elementwise.cpp (with random and dropout), reduce.cpp,
// index.cpp, matmul.cpp, conv.cpp. They run on the calling thread: the CPU has one stream, so the
// context only names the device. Internal to lsgrad: not installed.
#pragma once

#include "lsgrad/core/backend.h"

namespace lsg {

class CpuTensorKernels final : public TensorKernels {
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
    void conv2d(const KernelContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, const Window2d& g,
                const ConvEpilogue& e, Tensor& out, Tensor& argmax) override;
    void conv2d_backward(const KernelContext& ctx, const Tensor& x, const Tensor& w, const Tensor& grad,
                         const ConvEpilogue& e, const Tensor& out, const Tensor& argmax, const Window2d& g, Tensor& dx,
                         Tensor& dw, Tensor& db) override;
    void max_pool2d(const KernelContext& ctx, const Tensor& x, const Window2d& g, Tensor& out, Tensor& argmax) override;
    void max_pool2d_backward(const KernelContext& ctx, const Tensor& grad, const Tensor& argmax, const Window2d& g,
                             Tensor& dx) override;
    void dropout(const KernelContext& ctx, const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& out,
                 Tensor& mask) override;
    void random(const KernelContext& ctx, Tensor& out, bool normal, uint64_t seed, uint64_t offset) override;
};

// Below this many elements an elementwise CPU kernel runs on the calling thread: waking a sleeping
// OpenMP team and putting it back to sleep costs more than a small loop (measured on 2 cores with
// OMP_WAIT_POLICY=PASSIVE: the MNIST MLP's epoch went from 0.50 s to 0.36 s when this rose from
// 32768 to 131072, its [128, 256] activations now staying on one thread).
inline constexpr int64_t kParallelGrain = 131072;

}  // namespace lsg

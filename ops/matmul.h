// Matrix products on the packed, vectorised GEMM (ops/gemm.h) on the CPU and cuBLAS on CUDA.
#pragma once

#include "lsgrad/core/tensor.h"

namespace lsg {

// Matrix product with torch.matmul's rules: 1-D·1-D is a dot product; a 1-D operand is a row
// (left) or column (right) vector that is dropped from the result; [..., m, k]·[..., k, n] gives
// [..., m, n] with the batch dims broadcast. Differentiable.
Tensor matmul(const Tensor& a, const Tensor& b);
// 2-D product a [m, k] · b [k, n] → [m, n].
Tensor mm(const Tensor& a, const Tensor& b);
// Batched product a [B, m, k] · b [B, k, n] → [B, m, n].
Tensor bmm(const Tensor& a, const Tensor& b);
// y = x·wᵀ + bias for x [..., in], weight [out, in], bias [out] (or undefined): the fully
// connected layer, with the bias folded into the GEMM's accumulator.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace lsg

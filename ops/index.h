// Indexing and joining: gather, index_select, one_hot, cat, stack. Differentiable in the values.
#pragma once

#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg {

// out[..., j, ...] = x[..., index[..., j, ...], ...] along `dim`, as torch.gather: index (i64) has
// x's number of dims and, outside `dim`, x's sizes; out has index's shape.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// The slices index[0], index[1], ... of x along `dim`; index is i64 [m].
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// [N] class indices (i64) → [N, K] rows of 0 with a 1 at the index, in `dtype`; every index in [0, K).
Tensor one_hot(const Tensor& index, int64_t num_classes, DType dtype = DType::f32);
// Tensors joined along an existing dim; all other sizes must agree.
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
// Tensors of one shape joined along a new dim.
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);

}  // namespace lsg

// Reductions and (log-)softmax, all differentiable but argmax/argmin.
#pragma once

#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg {

// Σ of all elements (a 0-d tensor), accumulated in double in index order: x.sum(). sum_to, the
// backward of broadcasting, is in core/tensor.h.
Tensor sum(const Tensor& x);
// Σ over `dims` (negative dims count from the end); keepdim leaves them as size 1.
Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false);
// Mean of all elements (x.mean()), and over `dims`.
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false);
// Largest / smallest element overall (0-d) and along `dim`; the gradient goes to the first
// maximal element of each slice.
Tensor amax(const Tensor& x);
Tensor amax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor amin(const Tensor& x, int64_t dim, bool keepdim = false);
// Index (i64) of the first largest / smallest element along `dim`.
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);

// softmax(x)_i = e^{x_i − max} / Σ_j e^{x_j − max} along `dim`.
Tensor softmax(const Tensor& x, int64_t dim);
// log_softmax(x)_i = x_i − max − log Σ_j e^{x_j − max} along `dim`; exact for shifts of 1e7.
Tensor log_softmax(const Tensor& x, int64_t dim);

}  // namespace lsg

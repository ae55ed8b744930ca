// Soft targets of mixup and CutMix: each row mixes its own smoothed one-hot target with that of
// its partner in the reversed batch, as timm's mixup_target does. The batch transform that draws λ
// and mixes the images is nn::Mixup (lsgrad/nn/mixup.h).
#pragma once

#include <cstdint>

#include "lsgrad/core/tensor.h"

namespace lsg {

// Mixed targets [N, K] for class indices target (i64 [N], values in [0, K)):
//   q_i = λ·s(y_i) + (1 − λ)·s(y_{N−1−i}),
// s the Uniform-smoothed one-hot target (1 − ε + ε/K on the class, ε/K elsewhere), so every row
// sums to 1. Row i pairs with row N−1−i (the batch reversed, timm's target.flip(0)); with odd N the
// middle row pairs with itself. Computed in f64 and returned as `dtype` on target's device.
// Throws for λ or ε outside [0, 1], K < 1, targets outside [0, K) (naming the row and value).
Tensor mixup_targets(const Tensor& target, int64_t num_classes, double lambda, double label_smoothing = 0.0,
                     DType dtype = DType::f32);

// The same with one λ per row: lambda is a floating tensor of N values ([N] or [N, 1], as timm's
// per-element λ), λ_i weighting row i's own target.
Tensor mixup_targets(const Tensor& target, int64_t num_classes, const Tensor& lambda, double label_smoothing = 0.0,
                     DType dtype = DType::f32);

}  // namespace lsg

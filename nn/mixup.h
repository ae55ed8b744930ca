// The mixup / CutMix batch transform with timm's options (timm.data.Mixup), seeded.
//
// mixup (Zhang et al. 2018): x_i ← λ·x_i + (1 − λ)·x_j; CutMix (Yun et al. 2019): a box of x_j is
// pasted into x_i. In both, j = N−1−i (the batch reversed) and the target becomes
// mixup_targets(y, K, λ, ε) = λ·s(y_i) + (1 − λ)·s(y_j), s the Uniform-smoothed one-hot target.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg::nn {

// How λ (and the choice mixup / CutMix) is drawn: one for the whole batch; one per pair (i, N−1−i),
// both rows mixing with each other; one per row, row i mixing with row N−1−i.
enum class MixupMode { Batch, Pair, Elem };

struct MixupOptions {
    // mixup is active when > 0: λ ~ Beta(mixup_alpha, mixup_alpha).
    double mixup_alpha = 1.0;
    // CutMix is active when > 0: λ ~ Beta(cutmix_alpha, cutmix_alpha).
    double cutmix_alpha = 0.0;
    // When set, CutMix boxes have random sides in [min·size, max·size) of each image side instead of
    // area (1 − λ)·H·W; λ then always comes from the box (and cutmix_alpha is taken as 1, as timm).
    std::optional<std::pair<double, double>> cutmix_minmax;
    // Probability of mixing a batch (Batch) or a pair / row (Pair, Elem) at all.
    double prob = 1.0;
    // Probability of CutMix instead of mixup when both are active.
    double switch_prob = 0.5;
    MixupMode mode = MixupMode::Batch;
    // Set λ = 1 − box area / (H·W) after clipping the CutMix box to the image.
    bool correct_lam = true;
    // ε of the Uniform smoothing of the mixed targets. 0 unlike timm (0.1): never on silently.
    double label_smoothing = 0.0;
    // K, the number of classes of the targets; must be set.
    int64_t num_classes = 0;
    // Seed of the transform's own generator: the same seed gives the same λ, boxes and outputs.
    uint64_t seed = 0;
};

// A CutMix box: rows [y0, y1) and columns [x0, x1) of the last two dims; empty for mixup rows.
struct CutMixBox {
    int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
    int64_t area() const { return (y1 - y0) * (x1 - x0); }
};

struct MixupResult {
    // The mixed inputs, x's shape, dtype and device (x itself when no row was mixed).
    Tensor input;
    // The soft targets [N, K], x's dtype and device.
    Tensor target;
    // λ of each row (after the CutMix correction) and the box pasted into it (empty for mixup).
    std::vector<double> lambda;
    std::vector<CutMixBox> boxes;
    // Whether each row was mixed by CutMix (else by mixup, or not at all when λ = 1).
    std::vector<bool> cutmix;
};

// The transform. Call it on a batch x [N, ...] (floating; CutMix needs at least 3 dims and uses the
// last two as H, W) and class indices y (i64 [N]); it returns new tensors and never writes into x.
// Pair mode needs an even N; in the other modes an odd N's middle row pairs with itself.
// Randomness comes from a std::mt19937_64 the transform owns: λ ~ Beta(α, α) is G1 / (G1 + G2) with
// G1, G2 ~ Gamma(α, 1) from std::gamma_distribution, so sequences are reproducible for a given
// seed and standard library.
class Mixup {
public:
    explicit Mixup(MixupOptions options);

    MixupResult operator()(const Tensor& x, const Tensor& target);

    // Turns mixing off (every λ = 1) or back on, as timm's mixup_enabled (e.g. for the last epochs).
    void set_enabled(bool enabled) { enabled_ = enabled; }
    bool enabled() const { return enabled_; }
    const MixupOptions& options() const { return options_; }

private:
    struct Params {
        double lambda = 1.0;
        bool cutmix = false;
    };
    double uniform();
    double beta(double alpha);
    Params draw();
    // The CutMix box for λ on an H×W image and the λ it implies (timm's cutmix_bbox_and_lam).
    std::pair<CutMixBox, double> box_and_lambda(double lambda, int64_t h, int64_t w);

    MixupOptions options_;
    std::mt19937_64 gen_;
    bool enabled_ = true;
};

}  // namespace lsg::nn

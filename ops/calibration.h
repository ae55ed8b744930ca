// Calibration of a classifier: expected calibration error with its reliability table, temperature
// scaling, and a reliability diagram. Label smoothing changes a model's confidence more than its
// accuracy; these are the measurements that show it (Guo et al. 2017, "On Calibration of Modern
// Neural Networks"; Müller et al. 2019, "When Does Label Smoothing Help?").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg {

// One equal-width confidence bin (lower, upper]: the samples whose confidence c = max_k p_k lies
// in it, the fraction of them classified correctly, and their mean confidence (both 0 when empty).
struct CalibrationBin {
    double lower = 0.0;
    double upper = 0.0;
    int64_t count = 0;
    double accuracy = 0.0;
    double confidence = 0.0;
};

// A reliability table: the bins, the ECE they give, and the overall accuracy and mean confidence.
struct CalibrationTable {
    std::vector<CalibrationBin> bins;
    int64_t total = 0;
    double ece = 0.0;
    double accuracy = 0.0;
    double confidence = 0.0;
};

// Expected calibration error of probabilities probs [N, K] (f32 or f64, any device) against class
// indices labels (i64 [N]) with `bins` equal-width confidence bins:
//   ECE = Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|,
// where a sample's confidence is c = max_k p_k, its prediction the first arg-max, and it lies in
// bin b when b/bins < c ≤ (b+1)/bins (edges in f64, as in Guo et al.'s reference code); c = 0 goes
// to the first bin. Accumulated in f64. Rows need not sum to 1, but every c must lie in [0, 1].
// Throws for N = 0, bins < 1, labels outside [0, K) (naming the row and value), a confidence
// outside [0, 1] or NaN, and mismatched shapes or dtypes.
CalibrationTable expected_calibration_error(const Tensor& probs, const Tensor& labels, int64_t bins = 15);

// Temperature scaling: the T > 0 minimising the mean NLL of softmax(logits / T) for logits [N, K]
// (f32 or f64, finite) and labels (i64 [N]):
//   NLL(T) = 1/N Σ_i [lse(z_i / T) − z_{i,y_i} / T].
// With β = 1/T, NLL is convex: NLL'(β) = 1/N Σ_i (E_{softmax(β z_i)}[z_i] − z_{i,y_i}) and
// NLL''(β) = 1/N Σ_i Var_{softmax(β z_i)}(z_i) ≥ 0, so Newton's method on β, safeguarded by a
// bisection bracket, converges to the unique root of NLL' (relative precision 1e-12 in T, far
// below the 1e-4 asked of it). Everything is in f64. Throws when no finite T > 0 minimises the NLL:
// NLL'(0) ≥ 0 (the logits carry no information about the labels: T → ∞), or every label is an
// arg-max of its row (all samples classified correctly: NLL' < 0 for every β, T → 0); and when the
// optimum lies below T = 1e-6.
double fit_temperature(const Tensor& logits, const Tensor& labels);

// Writes a reliability diagram of `table` to `path` as a standalone SVG: one bar per bin with the
// bin's accuracy, the gap to its mean confidence shaded, the diagonal of perfect calibration, and
// `title` with the ECE (in %) as its heading. Written to a temporary file in the same folder and
// renamed over `path`, so a reader never sees half a file. Throws when the file cannot be written.
void write_reliability_svg(const CalibrationTable& table, const std::string& path, const std::string& title);

}  // namespace lsg

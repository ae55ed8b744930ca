// Calibration of a classifier: top-label and classwise calibration errors (equal-width or
// equal-mass bins) with their reliability tables, Brier score and NLL, recalibration by temperature
// and by vector scaling, and a reliability diagram. Label smoothing changes a model's confidence
// more than its accuracy; these are the measurements that show it (Guo et al. 2017, "On Calibration
// of Modern Neural Networks"; Müller et al. 2019, "When Does Label Smoothing Help?").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg {

// How the confidence axis is cut into bins.
//   EqualWidth: bin b is (b/B, (b+1)/B] (edges in f64, as in Guo et al.'s reference code and
//               torchmetrics); c = 0 goes to the first bin.
//   EqualMass:  the samples sorted by confidence (ties by row index) are cut into B runs of
//               ⌊(b+1)·N/B⌋ − ⌊b·N/B⌋ samples (the "adaptive" or equal-mass binning of Nixon et al.
//               2019 and Kumar et al. 2019); bin b spans (e_b, e_{b+1}] with e_0 = 0, e_B = 1 and
//               e_b the midpoint of the last confidence of run b−1 and the first of run b. With
//               N < B some runs are empty.
enum class Binning { EqualWidth, EqualMass };

// One confidence bin (lower, upper]: the samples whose confidence lies in it, the fraction of them
// that are "right" (top-label: classified correctly; classwise: of the class), and their mean
// confidence (both 0 when empty).
struct CalibrationBin {
    double lower = 0.0;
    double upper = 0.0;
    int64_t count = 0;
    double accuracy = 0.0;
    double confidence = 0.0;
};

// A reliability table: the bins (the per-bin data of a reliability diagram), the calibration errors
// they give, and the overall accuracy and mean confidence. With w_b = |B_b|/N and
// gap_b = |acc(B_b) − conf(B_b)|:
//   ece  = Σ_b w_b·gap_b            (torchmetrics' norm "l1")
//   mce  = max over non-empty b of gap_b   (norm "max")
//   rmsce = √(Σ_b w_b·gap_b²)       (norm "l2", not debiased)
struct CalibrationTable {
    std::vector<CalibrationBin> bins;
    Binning binning = Binning::EqualWidth;
    int64_t total = 0;
    double ece = 0.0;
    double mce = 0.0;
    double rmsce = 0.0;
    double accuracy = 0.0;
    double confidence = 0.0;
};

// Top-label calibration of probabilities probs [N, K] (f32 or f64, any device) against class
// indices labels (i64 [N]) with `bins` bins cut as `binning` says: a sample's confidence is
// c = max_k p_k, its prediction the first arg-max, and it is right when that is its label.
//   ECE = Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|   (and MCE, RMS as in CalibrationTable).
// Accumulated in f64. Rows need not sum to 1, but every entry must lie in [0, 1].
// Throws lsg::Error naming the function for N = 0, K = 0, bins < 1, labels outside [0, K) (naming the
// row and value), an entry outside [0, 1] or NaN (naming row and column), and mismatched shapes or
// dtypes.
CalibrationTable expected_calibration_error(const Tensor& probs, const Tensor& labels, int64_t bins = 15,
                                            Binning binning = Binning::EqualWidth);

// Classwise calibration (Kull et al. 2019; the "marginal" error of Kumar et al. 2019, not debiased)
// of probs [N, K] against labels (i64 [N]): for every class k the column p_·k is binned on its own
// (as `binning` says, `bins` bins), a sample is "right" for k when y_i = k, and
//   ece_k = Σ_b |B_kb|/N · |mean_{i∈B_kb} 1[y_i = k] − mean_{i∈B_kb} p_ik|,   classwise ECE = 1/K Σ_k ece_k.
// tables[k] holds class k's bins (its ece, mce and rmsce; accuracy = the frequency of class k and
// confidence = the mean of p_·k). Same checks and errors as expected_calibration_error.
struct ClasswiseCalibration {
    double ece = 0.0;
    std::vector<CalibrationTable> tables;
};
ClasswiseCalibration classwise_calibration_error(const Tensor& probs, const Tensor& labels, int64_t bins = 15,
                                                 Binning binning = Binning::EqualWidth);

// Brier score (Brier 1950, multiclass) of probs [N, K] against labels (i64 [N]):
//   1/N Σ_i Σ_k (p_ik − 1[y_i = k])²,  in [0, 2] for rows that sum to 1.
// f64. Same checks and errors as expected_calibration_error.
double brier_score(const Tensor& probs, const Tensor& labels);

// Negative log-likelihood of probs [N, K] for labels (i64 [N]): −1/N Σ_i log p_{i,y_i}, in f64.
// A zero probability on a label gives +inf (the honest answer); compute probs in f64 (softmax of f64
// logits) so that it only happens where the model is that sure. Same checks and errors as
// expected_calibration_error.
double negative_log_likelihood(const Tensor& probs, const Tensor& labels);

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

// Vector scaling (Guo et al. 2017): per-class weight w [K] and bias b [K] so that the calibrated
// logits are z'_ik = w_k·z_ik + b_k. The softmax does not change when a constant is added to every
// b_k, so b is reported with Σ_k b_k = 0.
struct VectorScaling {
    std::vector<double> weight;
    std::vector<double> bias;
    // z' = w·z + b for logits [N, K] (K = weight.size()), returned in f64 on the CPU.
    Tensor apply(const Tensor& logits) const;
};

// Fits vector scaling on held-out logits [N, K] (f32 or f64, finite) and labels (i64 [N]) by
// minimising NLL(w, b) = 1/N Σ_i [lse_k(w_k z_ik + b_k) − w_y z_iy − b_y], a convex function of
// (w, b) (the NLL is convex in the logits, which are linear in w and b). Newton's method in f64 on the
// 2K parameters, starting from w = 1, b = 0, with a backtracking line search; the Hessian's null
// direction (a common shift of b) is removed by adding its outer product, so every step keeps
// Σ b = 0. Stops when the largest gradient component is below 1e-12, or a step changes no parameter
// by more than 1e-13 relative: the parameters are then within far less than 1e-4 of the optimum.
// Throws lsg::Error for the checks of fit_temperature, and when no finite optimum exists: separable
// held-out data, seen as parameters growing past 1e6, no convergence in 200 steps, or a fitted mean
// NLL below 1e-6.
VectorScaling fit_vector_scaling(const Tensor& logits, const Tensor& labels);

// `s` with the characters that XML text and attribute values reserve (& < > ") written as entities;
// what the SVG writers here, and a caller writing its own figures, put around user text.
std::string xml_escape(const std::string& s);

// The opening of a standalone SVG of width × height user units (viewBox from the origin), set in
// DejaVu Sans 12, on a white background: what every figure lsgrad writes starts with. The caller
// appends the drawing and "</svg>".
std::string svg_open(double width, double height);

// Writes a reliability diagram of `table` to `path` as a standalone SVG (560×660 user units):
//   - the title, wrapped onto at most three lines (and set smaller when a line is still too wide),
//     above a line with the binning, the sample count, ECE, MCE, accuracy and mean confidence;
//   - one bar per non-empty bin from 0 to the bin's accuracy, the gap between accuracy and mean
//     confidence shaded red above (over-confident) or hatched below (under-confident) the bar's top,
//     and the diagonal of perfect calibration;
//   - under it, the confidence histogram: the share of samples in each bin (the bins' widths are
//     those of the table, so equal-mass bins show as bars of different widths).
// Every text is placed from a conservative estimate of its width so that it stays inside the
// viewBox. Written to a temporary file in the same folder and renamed over `path`, so a reader never
// sees half a file. Throws when the file cannot be written.
void write_reliability_svg(const CalibrationTable& table, const std::string& path, const std::string& title);

}  // namespace lsg

// Calibration errors, Brier score, NLL, temperature and vector scaling, and the reliability diagram.
// Sample counts are modest (a test set), so everything is accumulated in f64 on the host; the row
// loops of fit_temperature run in parallel but sum their per-row terms serially, in a fixed order.
#include "lsgrad/ops/calibration.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <numeric>
#include <sstream>

#include "lsgrad/core/error.h"

namespace lsg {
namespace {

// A host, row-major copy cut from the graph: these functions measure, they do not differentiate.
Tensor host_contiguous(const Tensor& t) { return t.detach().to(Device::cpu()).contiguous(); }

// Checks probs/logits [N, K] (floating) against labels i64 [N] and returns the labels on the host.
std::vector<int64_t> checked_labels(const char* op, const Tensor& scores, const Tensor& labels) {
    LSG_CHECK_OP(op, scores.defined() && labels.defined(), "undefined tensor");
    LSG_CHECK_OP(op, scores.dim() == 2, "expected scores of shape [N, K], got ", scores.shape());
    LSG_CHECK_OP(op, is_floating(scores.dtype()), "expected float32 or float64 scores, got ", scores.dtype());
    LSG_CHECK_OP(op, labels.dtype() == DType::i64, "expected int64 labels, got ", labels.dtype());
    LSG_CHECK_OP(op, labels.dim() == 1 && labels.size(0) == scores.size(0), "labels of shape ", labels.shape(),
                 " do not match scores of shape ", scores.shape());
    LSG_CHECK_OP(op, scores.size(0) > 0, "needs at least one sample, got shape ", scores.shape());
    LSG_CHECK_OP(op, scores.size(1) > 0, "needs at least one class, got shape ", scores.shape());
    std::vector<int64_t> y = labels.to_vector<int64_t>();
    const int64_t k = scores.size(1);
    for (size_t i = 0; i < y.size(); ++i)
        LSG_CHECK_OP(op, y[i] >= 0 && y[i] < k, "label ", y[i], " of row ", i, " is outside [0, ", k, ")");
    return y;
}

// Calls fn(const T* data) with the row-major host data of a float32 or float64 tensor.
template <class Fn>
void with_float_data(const Tensor& t, Fn&& fn) {
    visit_dtype<float, double>(t.dtype(), [&]<class T>() { fn(t.data<T>()); });
}

// A floating tensor [N, K] as f64 values on the host, row-major.
std::vector<double> host_f64(const Tensor& t) {
    const Tensor h = host_contiguous(t);
    std::vector<double> out(static_cast<size_t>(h.numel()));
    with_float_data(h, [&](const auto* data) {
        for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(data[i]);
    });
    return out;
}

// The probabilities [N, K] of a checked call as f64, row-major; every entry must lie in [0, 1].
std::vector<double> checked_probs(const char* op, const Tensor& probs) {
    std::vector<double> out = host_f64(probs);
    const int64_t k = probs.size(1);
    for (size_t i = 0; i < out.size(); ++i)
        LSG_CHECK_OP(op, out[i] >= 0.0 && out[i] <= 1.0, "probability ", out[i], " at row ", i / k, ", class ", i % k,
                     " is outside [0, 1] (probs of shape ", probs.shape(), ")");
    return out;
}

// The logits [N, K] of a checked call as f64, row-major; every entry must be finite.
std::vector<double> checked_logits(const char* op, const Tensor& logits) {
    std::vector<double> out = host_f64(logits);
    const int64_t k = logits.size(1);
    for (size_t i = 0; i < out.size(); ++i)
        LSG_CHECK_OP(op, std::isfinite(out[i]), "logit ", out[i], " at row ", i / k, ", class ", i % k, " is not finite");
    return out;
}

// The bin of confidence c in [0, 1] among `bins` bins (lower, upper] with edges b/bins in f64.
// The first guess from ceil(c·bins) can be one off where c·bins rounds across an integer; the two
// loops settle it against the exact edge comparisons.
int64_t bin_of(double c, int64_t bins) {
    const double nb = static_cast<double>(bins);
    int64_t b = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(c * nb)) - 1, 0, bins - 1);
    while (b > 0 && c <= static_cast<double>(b) / nb) --b;
    while (b < bins - 1 && c > static_cast<double>(b + 1) / nb) ++b;
    return b;
}

// The reliability table of per-sample confidences and hits (1 right, 0 wrong): the one binning and
// error formula behind both the top-label and the classwise errors (see Binning, CalibrationTable).
CalibrationTable binned_table(const std::vector<double>& conf, const std::vector<double>& hit, int64_t bins,
                              Binning binning) {
    const int64_t n = static_cast<int64_t>(conf.size());
    const double nd = static_cast<double>(n), nb = static_cast<double>(bins);
    CalibrationTable table;
    table.binning = binning;
    table.total = n;
    table.bins.resize(static_cast<size_t>(bins));
    std::vector<double> correct(bins, 0.0), conf_sum(bins, 0.0);
    if (binning == Binning::EqualWidth) {
        for (int64_t b = 0; b < bins; ++b) {
            table.bins[b].lower = static_cast<double>(b) / nb;
            table.bins[b].upper = static_cast<double>(b + 1) / nb;
        }
        for (int64_t i = 0; i < n; ++i) {
            const int64_t b = bin_of(conf[i], bins);
            table.bins[b].count += 1;
            correct[b] += hit[i];
            conf_sum[b] += conf[i];
        }
    } else {
        std::vector<int64_t> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), int64_t{0});
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return conf[a] < conf[b]; });
        // Run b holds sorted positions [start(b), start(b + 1)), start(b) = ⌊b·N/B⌋ computed in
        // integers without forming b·N (exact, no overflow).
        const auto start = [&](int64_t b) { return b * (n / bins) + (b * (n % bins)) / bins; };
        // Edge b (0 < b < B) lies midway between the last confidence of run b − 1 and the first of run b
        // (0 while every earlier run is empty).
        const auto edge = [&](int64_t b) {
            if (b == 0) return 0.0;
            if (b == bins) return 1.0;
            const int64_t s = start(b);
            return s == 0 ? 0.0 : 0.5 * (conf[order[s - 1]] + conf[order[s]]);
        };
        for (int64_t b = 0; b < bins; ++b) {
            const int64_t s = start(b), e = start(b + 1);
            CalibrationBin& bin = table.bins[b];
            bin.lower = edge(b);
            bin.upper = edge(b + 1);
            bin.count = e - s;
            for (int64_t j = s; j < e; ++j) {
                correct[b] += hit[order[j]];
                conf_sum[b] += conf[order[j]];
            }
        }
    }
    double all_correct = 0.0, all_conf = 0.0, sq = 0.0;
    for (int64_t b = 0; b < bins; ++b) {
        all_correct += correct[b];
        all_conf += conf_sum[b];
        CalibrationBin& bin = table.bins[b];
        if (bin.count == 0) continue;
        const double cnt = static_cast<double>(bin.count);
        bin.accuracy = correct[b] / cnt;
        bin.confidence = conf_sum[b] / cnt;
        const double gap = std::abs(bin.accuracy - bin.confidence);
        table.ece += cnt / nd * gap;
        sq += cnt / nd * gap * gap;
        table.mce = std::max(table.mce, gap);
    }
    table.rmsce = std::sqrt(sq);
    table.accuracy = all_correct / nd;
    table.confidence = all_conf / nd;
    return table;
}

// NLL'(β) and NLL''(β) of temperature scaling (see fit_temperature), rows in parallel.
template <class T>
std::pair<double, double> nll_derivatives(const T* z, const std::vector<int64_t>& y, const std::vector<double>& zmax,
                                          int64_t n, int64_t k, double beta, std::vector<double>& d1,
                                          std::vector<double>& d2) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        const T* row = z + i * k;
        double s = 0.0, sz = 0.0;
        for (int64_t j = 0; j < k; ++j) {
            const double e = std::exp(beta * (static_cast<double>(row[j]) - zmax[i]));
            s += e;
            sz += e * static_cast<double>(row[j]);
        }
        const double mean = sz / s;
        double var = 0.0;
        for (int64_t j = 0; j < k; ++j) {
            const double dz = static_cast<double>(row[j]) - mean;
            var += std::exp(beta * (static_cast<double>(row[j]) - zmax[i])) * dz * dz;
        }
        d1[i] = mean - static_cast<double>(row[y[i]]);
        d2[i] = var / s;
    }
    double g = 0.0, h = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        g += d1[i];
        h += d2[i];
    }
    return {g / static_cast<double>(n), h / static_cast<double>(n)};
}



// A conservative width of `text` set in DejaVu Sans (the sans-serif face librsvg picks on Debian) at
// `size` units: each character's advance rounded up from the face's metrics, so text placed by it
// stays inside its box in any common sans-serif face. A UTF-8 sequence counts as one wide character.
double text_width(const std::string& text, double size) {
    double em = 0.0;
    for (size_t i = 0; i < text.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c >= 0x80) {
            if ((c & 0xC0) != 0x80) em += 0.8;  // a lead byte: one non-ASCII character
            continue;
        }
        if (c == ' ' || c == '.' || c == ',' || c == ':' || c == ';' || c == '\'' || c == '|' || c == 'i' ||
            c == 'l' || c == 'j' || c == '!')
            em += 0.36;
        else if (c == '(' || c == ')' || c == '[' || c == ']' || c == 'f' || c == 't' || c == 'r' || c == '-')
            em += 0.45;
        else if (c == 'm' || c == 'M' || c == 'W' || c == 'w' || c == '%' || c == '@')
            em += 1.02;
        else if (c >= 'A' && c <= 'Z')
            em += 0.8;
        else
            em += 0.68;  // lower case, digits, = + < > and the rest
    }
    return em * size;
}

// Greedy word wrap of `text` into lines no wider than `room` at `size`; a word wider than `room` on
// its own is broken between characters (never inside a UTF-8 sequence).
std::vector<std::string> wrap_text(const std::string& text, double room, double size) {
    std::vector<std::string> lines;
    std::istringstream words(text);
    std::string word, line;
    while (words >> word) {
        while (text_width(word, size) > room) {
            size_t cut = 0;  // the longest prefix that fits, at least one character
            for (size_t i = 1; i <= word.size(); ++i) {
                if (i < word.size() && (static_cast<unsigned char>(word[i]) & 0xC0) == 0x80) continue;
                if (text_width(word.substr(0, i), size) > room && cut > 0) break;
                cut = i;
            }
            if (!line.empty()) lines.push_back(line);
            lines.push_back(word.substr(0, cut));
            line.clear();
            word.erase(0, cut);
        }
        if (word.empty()) continue;
        const std::string candidate = line.empty() ? word : line + " " + word;
        if (!line.empty() && text_width(candidate, size) > room) {
            lines.push_back(line);
            line = word;
        } else {
            line = candidate;
        }
    }
    if (!line.empty() || lines.empty()) lines.push_back(line);
    return lines;
}

}  // namespace

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
    return out;
}

std::string svg_open(double width, double height) {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"" << width << "\" height=\"" << height << "\" fill=\"white\"/>\n";
    return s.str();
}

CalibrationTable expected_calibration_error(const Tensor& probs, const Tensor& labels, int64_t bins,
                                            Binning binning) {
    constexpr const char* op = "expected_calibration_error";
    LSG_CHECK_OP(op, bins >= 1, "bins must be at least 1, got ", bins);
    const std::vector<int64_t> y = checked_labels(op, probs, labels);
    const std::vector<double> p = checked_probs(op, probs);
    const int64_t n = probs.size(0), k = probs.size(1);
    std::vector<double> conf(n), hit(n);
    for (int64_t i = 0; i < n; ++i) {
        const double* row = p.data() + i * k;
        int64_t pred = 0;
        for (int64_t j = 1; j < k; ++j)
            if (row[j] > row[pred]) pred = j;
        conf[i] = row[pred];
        hit[i] = pred == y[i] ? 1.0 : 0.0;
    }
    return binned_table(conf, hit, bins, binning);
}

ClasswiseCalibration classwise_calibration_error(const Tensor& probs, const Tensor& labels, int64_t bins,
                                                 Binning binning) {
    constexpr const char* op = "classwise_calibration_error";
    LSG_CHECK_OP(op, bins >= 1, "bins must be at least 1, got ", bins);
    const std::vector<int64_t> y = checked_labels(op, probs, labels);
    const std::vector<double> p = checked_probs(op, probs);
    const int64_t n = probs.size(0), k = probs.size(1);
    ClasswiseCalibration out;
    std::vector<double> conf(n), hit(n);
    for (int64_t c = 0; c < k; ++c) {
        for (int64_t i = 0; i < n; ++i) {
            conf[i] = p[i * k + c];
            hit[i] = y[i] == c ? 1.0 : 0.0;
        }
        out.tables.push_back(binned_table(conf, hit, bins, binning));
        out.ece += out.tables.back().ece;
    }
    out.ece /= static_cast<double>(k);
    return out;
}

double brier_score(const Tensor& probs, const Tensor& labels) {
    constexpr const char* op = "brier_score";
    const std::vector<int64_t> y = checked_labels(op, probs, labels);
    const std::vector<double> p = checked_probs(op, probs);
    const int64_t n = probs.size(0), k = probs.size(1);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) {
            const double d = p[i * k + j] - (j == y[i] ? 1.0 : 0.0);
            total += d * d;
        }
    return total / static_cast<double>(n);
}

double negative_log_likelihood(const Tensor& probs, const Tensor& labels) {
    constexpr const char* op = "negative_log_likelihood";
    const std::vector<int64_t> y = checked_labels(op, probs, labels);
    const std::vector<double> p = checked_probs(op, probs);
    const int64_t n = probs.size(0), k = probs.size(1);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total -= std::log(p[i * k + y[i]]);
    return total / static_cast<double>(n);
}

double fit_temperature(const Tensor& logits, const Tensor& labels) {
    constexpr const char* op = "fit_temperature";
    const std::vector<int64_t> y = checked_labels(op, logits, labels);
    const std::vector<double> z = checked_logits(op, logits);
    const int64_t n = logits.size(0), k = logits.size(1);
    const double* data = z.data();
    double beta = 0.0;
    [&] {
        // Per-row maxima keep exp(β(z − max)) ≤ 1 for every β > 0. NLL'(0) = 1/N Σ_i (mean_k z_ik − z_iy).
        std::vector<double> zmax(n), d1(n), d2(n);
        double g0 = 0.0;
        bool all_max = true;  // every label is a (possibly tied) arg-max of its row
        for (int64_t i = 0; i < n; ++i) {
            const double* row = data + i * k;
            double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
            for (int64_t j = 0; j < k; ++j) {
                m = std::max(m, row[j]);
                sum += row[j];
            }
            zmax[i] = m;
            g0 += sum / static_cast<double>(k) - static_cast<double>(row[y[i]]);
            all_max = all_max && static_cast<double>(row[y[i]]) == m;
        }
        LSG_CHECK_OP(op, g0 < 0.0, "the NLL decreases as T grows without bound: the logits carry no ",
                     "information about the labels (NLL'(1/T = 0) = ", g0 / static_cast<double>(n), " >= 0)");
        // NLL'(β) tends to 1/N Σ_i (max_k z_ik − z_iy) as β → ∞: a root exists iff that is positive.
        LSG_CHECK_OP(op, !all_max, "the NLL keeps decreasing as T -> 0: every sample is classified correctly, ",
                     "so no finite temperature minimises it");

        // Safeguarded Newton on the increasing function NLL'(β): [lo, hi] always brackets the root;
        // while no upper end is known, steps grow by at most 4x.
        constexpr double beta_max = 1e6;
        double lo = 0.0, hi = std::numeric_limits<double>::infinity();
        beta = 1.0;
        for (int iter = 0; iter < 500; ++iter) {
            const auto [g, h] = nll_derivatives(data, y, zmax, n, k, beta, d1, d2);
            if (g == 0.0) return;
            (g < 0.0 ? lo : hi) = beta;
            LSG_CHECK_OP(op, std::isfinite(hi) || beta < beta_max, "the NLL still decreases at T = ", 1.0 / beta,
                         ": the optimum lies below T = 1e-6");
            double next = h > 0.0 ? beta - g / h : std::numeric_limits<double>::quiet_NaN();
            if (std::isfinite(hi)) {
                if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
            } else if (!(next > beta)) {
                next = 4.0 * beta;
            } else {
                next = std::min(next, 4.0 * beta);
            }
            const bool done = std::abs(next - beta) <= 1e-13 * beta || (std::isfinite(hi) && hi - lo <= 1e-13 * hi);
            beta = next;
            if (done) return;
        }
    }();
    return 1.0 / beta;
}

Tensor VectorScaling::apply(const Tensor& logits) const {
    constexpr const char* op = "VectorScaling::apply";
    const int64_t k = static_cast<int64_t>(weight.size());
    LSG_CHECK_OP(op, logits.defined() && logits.dim() == 2 && logits.size(1) == k && bias.size() == weight.size(),
                 "expected logits of shape [N, ", k, "] for ", k, " weights and ", bias.size(), " biases, got ",
                 logits.defined() ? logits.shape() : Shape{});
    const Tensor z = host_contiguous(logits.to(DType::f64));
    const int64_t n = z.size(0);
    std::vector<double> out(static_cast<size_t>(n * k));
    const double* zd = z.data<double>();
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) out[i * k + j] = weight[j] * zd[i * k + j] + bias[j];
    return from_vector<double>(out, {n, k});
}

namespace {

// Mean NLL of softmax(w·z + b) and, when grad is not null, its gradient and Hessian over
// θ = (w_0..w_{K−1}, b_0..b_{K−1}): with s = w·z + b and p = softmax(s), per row
//   ∂/∂w_j = (p_j − δ_jy) z_j,  ∂/∂b_j = p_j − δ_jy,
//   ∂²/∂s_j∂s_l = p_j δ_jl − p_j p_l, chained through ∂s_j/∂w_j = z_j and ∂s_j/∂b_j = 1.
// Rows are summed serially, in order, so the fit is deterministic.
double vector_scaling_nll(const std::vector<double>& z, const std::vector<int64_t>& y, int64_t n, int64_t k,
                          const std::vector<double>& theta, std::vector<double>* grad, std::vector<double>* hess) {
    const int64_t m = 2 * k;
    if (grad) {
        grad->assign(m, 0.0);
        hess->assign(m * m, 0.0);
    }
    std::vector<double> s(k), p(k), dz(m);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double* row = z.data() + i * k;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < k; ++j) {
            s[j] = theta[j] * row[j] + theta[k + j];
            mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < k; ++j) sum += p[j] = std::exp(s[j] - mx);
        total += mx + std::log(sum) - s[y[i]];
        if (!grad) continue;
        for (int64_t j = 0; j < k; ++j) p[j] /= sum;
        for (int64_t j = 0; j < k; ++j) {
            const double r = p[j] - (j == y[i] ? 1.0 : 0.0);
            (*grad)[j] += r * row[j];
            (*grad)[k + j] += r;
            dz[j] = row[j];  // ∂s_j/∂w_j
            dz[k + j] = 1.0;  // ∂s_j/∂b_j
        }
        // H[a][c] += (p_ja δ − p_ja p_jc) · dz[a] · dz[c], where j_a = a mod K.
        for (int64_t a = 0; a < m; ++a) {
            const int64_t ja = a % k;
            for (int64_t c = 0; c < m; ++c) {
                const int64_t jc = c % k;
                const double curv = (ja == jc ? p[ja] : 0.0) - p[ja] * p[jc];
                (*hess)[a * m + c] += curv * dz[a] * dz[c];
            }
        }
    }
    const double nd = static_cast<double>(n);
    if (grad) {
        for (double& g : *grad) g /= nd;
        for (double& h : *hess) h /= nd;
    }
    return total / nd;
}

// Solves A x = r for a symmetric positive definite A [m, m] by Cholesky; false when A is not.
bool cholesky_solve(std::vector<double> a, std::vector<double> r, int64_t m, std::vector<double>& x) {
    for (int64_t j = 0; j < m; ++j) {
        double d = a[j * m + j];
        for (int64_t q = 0; q < j; ++q) d -= a[j * m + q] * a[j * m + q];
        if (!(d > 0.0)) return false;
        d = std::sqrt(d);
        a[j * m + j] = d;
        for (int64_t i = j + 1; i < m; ++i) {
            double v = a[i * m + j];
            for (int64_t q = 0; q < j; ++q) v -= a[i * m + q] * a[j * m + q];
            a[i * m + j] = v / d;
        }
    }
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t q = 0; q < i; ++q) r[i] -= a[i * m + q] * r[q];
        r[i] /= a[i * m + i];
    }
    for (int64_t i = m - 1; i >= 0; --i) {
        for (int64_t q = i + 1; q < m; ++q) r[i] -= a[q * m + i] * r[q];
        r[i] /= a[i * m + i];
    }
    x = std::move(r);
    return true;
}

}  // namespace

VectorScaling fit_vector_scaling(const Tensor& logits, const Tensor& labels) {
    constexpr const char* op = "fit_vector_scaling";
    const std::vector<int64_t> y = checked_labels(op, logits, labels);
    const std::vector<double> z = checked_logits(op, logits);
    const int64_t n = logits.size(0), k = logits.size(1), m = 2 * k;
    std::vector<double> theta(m, 0.0), grad, hess, step;
    for (int64_t j = 0; j < k; ++j) theta[j] = 1.0;
    double f = vector_scaling_nll(z, y, n, k, theta, &grad, &hess);
    bool converged = false;
    for (int iter = 0; iter < 200 && !converged; ++iter) {
        double gmax = 0.0;
        for (double g : grad) gmax = std::max(gmax, std::abs(g));
        if (gmax <= 1e-12) {
            converged = true;
            break;
        }
        // The Hessian is singular along u = (0, 1/√K): a common shift of b. The gradient is
        // orthogonal to u (Σ_j (p_j − δ_jy) = 0), so adding c·u·uᵀ changes no step and makes the
        // system definite; a ridge of 1e-12·trace covers classes whose logits never vary.
        double trace = 0.0;
        for (int64_t a = 0; a < m; ++a) trace += hess[a * m + a];
        std::vector<double> a = hess;
        const double c = std::max(trace / static_cast<double>(m), 1e-300);
        for (int64_t i = k; i < m; ++i)
            for (int64_t j = k; j < m; ++j) a[i * m + j] += c / static_cast<double>(k);
        for (int64_t i = 0; i < m; ++i) a[i * m + i] += 1e-12 * c;
        std::vector<double> rhs(m);
        for (int64_t i = 0; i < m; ++i) rhs[i] = -grad[i];
        if (!cholesky_solve(a, rhs, m, step)) step = rhs;  // fall back to steepest descent
        double slope = 0.0;
        for (int64_t i = 0; i < m; ++i) slope += grad[i] * step[i];
        // Backtracking (Armijo) line search; Newton's full step is taken near the optimum.
        double t = 1.0, f_new = f;
        std::vector<double> trial(m);
        bool accepted = false;
        for (int ls = 0; ls < 60; ++ls, t *= 0.5) {
            for (int64_t i = 0; i < m; ++i) trial[i] = theta[i] + t * step[i];
            f_new = vector_scaling_nll(z, y, n, k, trial, nullptr, nullptr);
            if (f_new <= f + 1e-4 * t * slope) {
                accepted = true;
                break;
            }
        }
        double change = 0.0, size = 0.0;
        for (int64_t i = 0; i < m; ++i) {
            change = std::max(change, std::abs(t * step[i]));
            size = std::max(size, std::abs(theta[i]));
        }
        if (!accepted || change <= 1e-13 * std::max(size, 1.0)) {
            converged = true;
            if (!accepted) break;
        }
        theta = trial;
        LSG_CHECK_OP(op, size <= 1e6, "the NLL keeps decreasing as the parameters grow (largest |w|, |b| ", size,
                     "): the held-out logits are separable, so no finite vector scaling minimises it");
        f = vector_scaling_nll(z, y, n, k, theta, &grad, &hess);
    }
    if (!converged) {
        double gmax = 0.0;
        for (double g : grad) gmax = std::max(gmax, std::abs(g));
        LSG_CHECK_OP(op, gmax <= 1e-8, "Newton's method did not converge in 200 steps (largest gradient component ",
                     gmax, "): the held-out logits are probably separable");
    }
    // Separable data drives the NLL towards 0 with ever larger parameters; Newton's steps shrink the
    // gradient so fast there that the loop above can stop on a point that is no optimum at all.
    LSG_CHECK_OP(op, f > 1e-6, "the NLL falls to ", f, " on the held-out logits: they are separable, so no finite ",
                 "vector scaling minimises it");
    VectorScaling out;
    out.weight.assign(theta.begin(), theta.begin() + k);
    out.bias.assign(theta.begin() + k, theta.end());
    const double mean_b = std::accumulate(out.bias.begin(), out.bias.end(), 0.0) / static_cast<double>(k);
    for (double& b : out.bias) b -= mean_b;
    return out;
}

void write_reliability_svg(const CalibrationTable& table, const std::string& path, const std::string& title) {
    namespace fs = std::filesystem;
    constexpr double width = 560, left = 80, plot = 420, hist_h = 90, text_room = width - 40;
    constexpr double title_size = 15, stats_size = 12;

    // Header: the title wrapped (in smaller type while it takes more than three lines), then the
    // statistics on lines of their own.
    double tsize = title_size;
    std::vector<std::string> title_lines = wrap_text(title, text_room, tsize);
    while (title_lines.size() > 3 && tsize > 9) {
        tsize -= 1;
        title_lines = wrap_text(title, text_room, tsize);
    }
    const int64_t nonempty = std::count_if(table.bins.begin(), table.bins.end(),
                                           [](const CalibrationBin& b) { return b.count > 0; });
    std::ostringstream line1, line2;
    line1.setf(std::ios::fixed);
    line2.setf(std::ios::fixed);
    line1.precision(0);
    line2.precision(2);
    line1 << table.bins.size() << (table.binning == Binning::EqualMass ? " equal-mass" : " equal-width") << " bins ("
          << nonempty << " non-empty), " << table.total << " samples";
    line2 << "ECE " << 100.0 * table.ece << " % · MCE " << 100.0 * table.mce << " % · accuracy "
          << 100.0 * table.accuracy << " % · mean confidence " << 100.0 * table.confidence << " %";
    std::vector<std::string> stats_lines = wrap_text(line1.str(), text_room, stats_size);
    for (const std::string& l : wrap_text(line2.str(), text_room, stats_size)) stats_lines.push_back(l);

    double y = 10;
    std::ostringstream head;
    head.setf(std::ios::fixed);
    head.precision(1);
    for (const std::string& l : title_lines) {
        y += tsize * 1.3;
        head << "<text x=\"" << width / 2 << "\" y=\"" << y << "\" text-anchor=\"middle\" font-size=\"" << tsize
             << "\" font-weight=\"bold\">" << xml_escape(l) << "</text>\n";
    }
    y += 4;
    for (const std::string& l : stats_lines) {
        y += stats_size * 1.35;
        head << "<text x=\"" << width / 2 << "\" y=\"" << y << "\" text-anchor=\"middle\" font-size=\"" << stats_size
             << "\" fill=\"#333\">" << xml_escape(l) << "</text>\n";
    }
    const double top = y + 16;                      // main panel: accuracy per bin
    const double hist_top = top + plot + 14;        // confidence histogram
    const double height = hist_top + hist_h + 56;   // tick labels and the axis name below
    const auto px = [&](double v) { return left + v * plot; };
    const auto py = [&](double v) { return top + (1.0 - v) * plot; };

    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    s << svg_open(width, height) << head.str()
      << "<defs><pattern id=\"under\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
         "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#f2b134\" fill-opacity=\"0.45\"/>"
         "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#b8741a\" stroke-width=\"2\"/></pattern></defs>\n"
      << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot << "\" height=\"" << plot
      << "\" fill=\"#f7f7f7\" stroke=\"#333\"/>\n";
    for (int t = 1; t < 5; ++t)
        s << "<line x1=\"" << px(0) << "\" y1=\"" << py(t / 5.0) << "\" x2=\"" << px(1) << "\" y2=\"" << py(t / 5.0)
          << "\" stroke=\"#e2e2e2\"/>\n";
    int64_t max_count = 0;
    for (const CalibrationBin& b : table.bins) max_count = std::max(max_count, b.count);
    for (const CalibrationBin& b : table.bins) {
        if (b.count == 0) continue;
        const double x = px(b.lower), w = std::max(px(b.upper) - px(b.lower), 0.5);
        s << "<rect x=\"" << x << "\" y=\"" << py(b.accuracy) << "\" width=\"" << w << "\" height=\""
          << b.accuracy * plot << "\" fill=\"#3b6fb6\" stroke=\"#1d3b66\" stroke-width=\"0.6\"><title>(" << b.lower
          << ", " << b.upper << "]: " << b.count << " samples, accuracy " << b.accuracy << ", confidence "
          << b.confidence << "</title></rect>\n";
        // Over-confident bins (confidence above accuracy) get a red gap above the bar; under-confident
        // ones an orange hatch over the bar's top.
        const bool over = b.confidence > b.accuracy;
        const double hi = std::max(b.accuracy, b.confidence), lo = std::min(b.accuracy, b.confidence);
        s << "<rect x=\"" << x << "\" y=\"" << py(hi) << "\" width=\"" << w << "\" height=\"" << (hi - lo) * plot
          << (over ? "\" fill=\"#d62728\" fill-opacity=\"0.4\" stroke=\"#d62728\" stroke-width=\"0.6\"/>\n"
                   : "\" fill=\"url(#under)\" stroke=\"#b8741a\" stroke-width=\"0.6\"/>\n");
        // The bin's mean confidence as a dark tick across the bin.
        s << "<line x1=\"" << x << "\" y1=\"" << py(b.confidence) << "\" x2=\"" << x + w << "\" y2=\""
          << py(b.confidence) << "\" stroke=\"#111\" stroke-width=\"1.2\"/>\n";
        // Histogram: the share of samples in the bin, scaled to the fullest bin.
        const double share = static_cast<double>(b.count) / static_cast<double>(std::max<int64_t>(table.total, 1));
        const double bh = hist_h * static_cast<double>(b.count) / static_cast<double>(max_count);
        s << "<rect x=\"" << x << "\" y=\"" << hist_top + hist_h - bh << "\" width=\"" << w << "\" height=\"" << bh
          << "\" fill=\"#7f7f7f\"><title>" << 100.0 * share << " % of samples</title></rect>\n";
    }
    s << "<line x1=\"" << px(0) << "\" y1=\"" << py(0) << "\" x2=\"" << px(1) << "\" y2=\"" << py(1)
      << "\" stroke=\"#111\" stroke-width=\"1.4\" stroke-dasharray=\"6 4\"/>\n"
      << "<rect x=\"" << left << "\" y=\"" << hist_top << "\" width=\"" << plot << "\" height=\"" << hist_h
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
    for (int t = 0; t <= 5; ++t) {
        const double v = t / 5.0;
        s << "<text x=\"" << px(v) << "\" y=\"" << hist_top + hist_h + 18 << "\" text-anchor=\"middle\">"
          << std::setprecision(1) << v << "</text>\n<text x=\"" << left - 8 << "\" y=\"" << py(v) + 4
          << "\" text-anchor=\"end\">" << v << "</text>\n"
          << std::setprecision(2);
    }
    const double top_share =
        static_cast<double>(max_count) / static_cast<double>(std::max<int64_t>(table.total, 1)) * 100.0;
    s << "<text x=\"" << left - 8 << "\" y=\"" << hist_top + 10 << "\" text-anchor=\"end\">" << std::setprecision(0)
      << top_share << " %</text>\n<text x=\"" << left - 8 << "\" y=\"" << hist_top + hist_h + 4
      << "\" text-anchor=\"end\">0</text>\n"
      << std::setprecision(2) << "<text x=\"" << px(0.5) << "\" y=\"" << hist_top + hist_h + 42
      << "\" text-anchor=\"middle\" font-size=\"13\">Confidence (max probability)</text>\n"
      << "<text transform=\"translate(24 " << py(0.5) << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">"
      << "Accuracy</text>\n"
      << "<text transform=\"translate(24 " << hist_top + hist_h / 2 << ") rotate(-90)\" text-anchor=\"middle\" "
         "font-size=\"11\">Samples</text>\n";
    // Legend in the upper left of the panel, on a white card.
    const double lx = left + 8, ly = top + 8;
    s << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"196\" height=\"98\" fill=\"white\" fill-opacity=\"0.9\" "
         "stroke=\"#bbb\"/>\n"
      << "<rect x=\"" << lx + 8 << "\" y=\"" << ly + 8 << "\" width=\"14\" height=\"12\" fill=\"#3b6fb6\"/>"
      << "<text x=\"" << lx + 28 << "\" y=\"" << ly + 18 << "\">Accuracy</text>\n"
      << "<rect x=\"" << lx + 8 << "\" y=\"" << ly + 26 << "\" width=\"14\" height=\"12\" fill=\"#d62728\" "
         "fill-opacity=\"0.4\"/><text x=\""
      << lx + 28 << "\" y=\"" << ly + 36 << "\">Gap, over-confident</text>\n"
      << "<rect x=\"" << lx + 8 << "\" y=\"" << ly + 44 << "\" width=\"14\" height=\"12\" fill=\"url(#under)\"/>"
      << "<text x=\"" << lx + 28 << "\" y=\"" << ly + 54 << "\">Gap, under-confident</text>\n"
      << "<line x1=\"" << lx + 8 << "\" y1=\"" << ly + 68 << "\" x2=\"" << lx + 22 << "\" y2=\"" << ly + 68
      << "\" stroke=\"#111\" stroke-width=\"1.2\"/><text x=\"" << lx + 28 << "\" y=\"" << ly + 72
      << "\">Mean confidence of the bin</text>\n"
      << "<line x1=\"" << lx + 8 << "\" y1=\"" << ly + 86 << "\" x2=\"" << lx + 22 << "\" y2=\"" << ly + 86
      << "\" stroke=\"#111\" stroke-width=\"1.4\" stroke-dasharray=\"4 3\"/><text x=\"" << lx + 28 << "\" y=\""
      << ly + 90 << "\">Perfect calibration</text>\n"
      << "</svg>\n";

    const fs::path target(path);
    std::string tmp_name = target.filename().string();
    tmp_name.insert(0, 1, '.');
    tmp_name += ".tmp";
    const fs::path tmp = target.parent_path() / tmp_name;
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        LSG_CHECK(f.good(), "cannot open ", tmp.string(), " for writing");
        f << s.str();
        f.close();
        if (!f) {
            std::error_code ignored;
            fs::remove(tmp, ignored);
            LSG_FAIL("failed writing ", tmp.string());
        }
    }
    std::error_code ec;
    fs::rename(tmp, target, ec);
    if (ec) {
        std::error_code ignored;
        fs::remove(tmp, ignored);
        LSG_FAIL("cannot rename ", tmp.string(), " to ", path, ": ", ec.message());
    }
}

}  // namespace lsg

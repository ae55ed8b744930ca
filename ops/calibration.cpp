// Expected calibration error, temperature scaling and the reliability diagram. Sample counts are
// modest (a test set), so everything is accumulated in f64 on the host; the row loops of
// fit_temperature run in parallel but sum their per-row terms serially, in a fixed order.
#include "lsgrad/ops/calibration.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
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

}  // namespace

CalibrationTable expected_calibration_error(const Tensor& probs, const Tensor& labels, int64_t bins) {
    constexpr const char* op = "expected_calibration_error";
    LSG_CHECK_OP(op, bins >= 1, "bins must be at least 1, got ", bins);
    const std::vector<int64_t> y = checked_labels(op, probs, labels);
    const Tensor p = host_contiguous(probs);
    const int64_t n = p.size(0), k = p.size(1);

    CalibrationTable table;
    table.total = n;
    table.bins.resize(static_cast<size_t>(bins));
    std::vector<double> correct(bins, 0.0), conf_sum(bins, 0.0);
    double all_correct = 0.0, all_conf = 0.0;
    with_float_data(p, [&](const auto* data) {
        for (int64_t i = 0; i < n; ++i) {
            const auto* row = data + i * k;
            int64_t pred = 0;
            for (int64_t j = 1; j < k; ++j)
                if (row[j] > row[pred]) pred = j;
            const double c = static_cast<double>(row[pred]);
            LSG_CHECK_OP(op, c >= 0.0 && c <= 1.0, "confidence ", c, " of row ", i, " is outside [0, 1]");
            for (int64_t j = 0; j < k; ++j)
                LSG_CHECK_OP(op, !std::isnan(static_cast<double>(row[j])), "row ", i, " holds NaN");
            const int64_t b = bin_of(c, bins);
            const double hit = pred == y[i] ? 1.0 : 0.0;
            table.bins[b].count += 1;
            correct[b] += hit;
            conf_sum[b] += c;
            all_correct += hit;
            all_conf += c;
        }
    });
    for (int64_t b = 0; b < bins; ++b) {
        CalibrationBin& bin = table.bins[b];
        bin.lower = static_cast<double>(b) / static_cast<double>(bins);
        bin.upper = static_cast<double>(b + 1) / static_cast<double>(bins);
        if (bin.count == 0) continue;
        const double cnt = static_cast<double>(bin.count);
        bin.accuracy = correct[b] / cnt;
        bin.confidence = conf_sum[b] / cnt;
        table.ece += cnt / static_cast<double>(n) * std::abs(bin.accuracy - bin.confidence);
    }
    table.accuracy = all_correct / static_cast<double>(n);
    table.confidence = all_conf / static_cast<double>(n);
    return table;
}

double fit_temperature(const Tensor& logits, const Tensor& labels) {
    constexpr const char* op = "fit_temperature";
    const std::vector<int64_t> y = checked_labels(op, logits, labels);
    const Tensor z = host_contiguous(logits);
    const int64_t n = z.size(0), k = z.size(1);
    double beta = 0.0;
    with_float_data(z, [&](const auto* data) {
        // Per-row maxima keep exp(β(z − max)) ≤ 1 for every β > 0. NLL'(0) = 1/N Σ_i (mean_k z_ik − z_iy).
        std::vector<double> zmax(n), d1(n), d2(n);
        double g0 = 0.0;
        bool all_max = true;  // every label is a (possibly tied) arg-max of its row
        for (int64_t i = 0; i < n; ++i) {
            const auto* row = data + i * k;
            double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
            for (int64_t j = 0; j < k; ++j) {
                const double v = static_cast<double>(row[j]);
                LSG_CHECK_OP(op, std::isfinite(v), "logit ", v, " at row ", i, ", class ", j, " is not finite");
                m = std::max(m, v);
                sum += v;
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
    });
    return 1.0 / beta;
}

void write_reliability_svg(const CalibrationTable& table, const std::string& path, const std::string& title) {
    namespace fs = std::filesystem;
    constexpr double left = 70, top = 60, size = 400;
    const auto px = [&](double v) { return left + v * size; };
    const auto py = [&](double v) { return top + (1.0 - v) * size; };

    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"540\" viewBox=\"0 0 520 540\" "
         "font-family=\"sans-serif\" font-size=\"13\">\n"
      << "<rect width=\"520\" height=\"540\" fill=\"white\"/>\n"
      << "<text x=\"270\" y=\"30\" text-anchor=\"middle\" font-size=\"16\">" << xml_escape(title)
      << " (ECE " << table.ece * 100.0 << "%)</text>\n"
      << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << size << "\" height=\"" << size
      << "\" fill=\"#f4f4f4\" stroke=\"#333\"/>\n";
    for (const CalibrationBin& b : table.bins) {
        if (b.count == 0) continue;
        const double x = px(b.lower), w = px(b.upper) - px(b.lower);
        s << "<rect x=\"" << x << "\" y=\"" << py(b.accuracy) << "\" width=\"" << w << "\" height=\""
          << b.accuracy * size << "\" fill=\"#3b6fb6\" stroke=\"#1d3b66\"><title>(" << b.lower << ", "
          << b.upper << "]: " << b.count << " samples, accuracy " << b.accuracy << ", confidence "
          << b.confidence << "</title></rect>\n";
        const double hi = std::max(b.accuracy, b.confidence), lo = std::min(b.accuracy, b.confidence);
        s << "<rect x=\"" << x << "\" y=\"" << py(hi) << "\" width=\"" << w << "\" height=\"" << (hi - lo) * size
          << "\" fill=\"#d62728\" fill-opacity=\"0.35\" stroke=\"#d62728\"/>\n";
    }
    s << "<line x1=\"" << px(0) << "\" y1=\"" << py(0) << "\" x2=\"" << px(1) << "\" y2=\"" << py(1)
      << "\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>\n";
    for (int t = 0; t <= 5; ++t) {
        const double v = t / 5.0;
        s << "<text x=\"" << px(v) << "\" y=\"" << top + size + 20 << "\" text-anchor=\"middle\">" << v
          << "</text>\n<text x=\"" << left - 8 << "\" y=\"" << py(v) + 4 << "\" text-anchor=\"end\">" << v
          << "</text>\n";
    }
    s << "<text x=\"" << px(0.5) << "\" y=\"" << top + size + 45 << "\" text-anchor=\"middle\">Confidence</text>\n"
      << "<text transform=\"translate(22 " << py(0.5) << ") rotate(-90)\" text-anchor=\"middle\">Accuracy</text>\n"
      << "<rect x=\"" << left + 10 << "\" y=\"" << top + 10 << "\" width=\"14\" height=\"14\" fill=\"#3b6fb6\"/>"
      << "<text x=\"" << left + 30 << "\" y=\"" << top + 22 << "\">Accuracy</text>\n"
      << "<rect x=\"" << left + 10 << "\" y=\"" << top + 32 << "\" width=\"14\" height=\"14\" fill=\"#d62728\" "
         "fill-opacity=\"0.35\"/><text x=\""
      << left + 30 << "\" y=\"" << top + 44 << "\">Gap to confidence</text>\n"
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

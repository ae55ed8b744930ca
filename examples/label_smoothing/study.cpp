// Projection onto the template plane, cluster tightness, mean ± std and the study's SVG figures.
#include "study.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>

#include "lsgrad/core/error.h"
#include "lsgrad/ops/calibration.h"

namespace lsg::study {
namespace {

// A host, row-major f64 copy of a floating tensor [N, D].
std::vector<double> host_f64(const Tensor& t) {
    return t.detach().to(Device::cpu()).to(DType::f64).contiguous().to_vector<double>();
}

double dot(const double* a, const double* b, int64_t d) {
    double s = 0.0;
    for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
    return s;
}

// lsg::svg_open with `title` centred in bold at baseline title_y.
std::string svg_open_titled(double width, double height, const std::string& title, double title_y, double title_size) {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    s << svg_open(width, height) << "<text x=\"" << width / 2 << "\" y=\"" << title_y
      << "\" text-anchor=\"middle\" font-size=\"" << title_size << "\" font-weight=\"bold\">" << xml_escape(title)
      << "</text>\n";
    return s.str();
}

// Ten colours that stay distinct for colour-blind readers (Okabe–Ito, then two greys).
const char* const kColours[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00",
                                "#56B4E9", "#F0E442", "#000000", "#777777", "#BBBBBB"};

}  // namespace

TemplateProjection project_onto_templates(const Tensor& activations, const Tensor& labels, const Tensor& weight,
                                          std::array<int64_t, 3> classes) {
    constexpr const char* op = "study::project_onto_templates";
    LSG_CHECK_OP(op, activations.defined() && labels.defined() && weight.defined(), "undefined tensor");
    LSG_CHECK_OP(op, activations.dim() == 2 && weight.dim() == 2 && activations.size(1) == weight.size(1),
                 "expected activations [N, D] and weight [K, D], got ", activations.shape(), " and ", weight.shape());
    LSG_CHECK_OP(op, labels.dtype() == DType::i64 && labels.dim() == 1 && labels.size(0) == activations.size(0),
                 "expected int64 labels [", activations.size(0), "], got ", labels.dtype(), " ", labels.shape());
    const int64_t n = activations.size(0), d = activations.size(1), k = weight.size(0);
    for (int64_t c : classes) LSG_CHECK_OP(op, c >= 0 && c < k, "class ", c, " is outside [0, ", k, ")");
    LSG_CHECK_OP(op, classes[0] != classes[1] && classes[0] != classes[2] && classes[1] != classes[2],
                 "the three classes must differ, got ", classes[0], ", ", classes[1], ", ", classes[2]);
    const std::vector<double> h = host_f64(activations), w = host_f64(weight);
    const std::vector<int64_t> y = labels.to_vector<int64_t>();
    const double* wa = w.data() + classes[0] * d;
    const double* wb = w.data() + classes[1] * d;
    const double* wc = w.data() + classes[2] * d;
    std::vector<double> centre(d), e1(d), e2(d);
    for (int64_t j = 0; j < d; ++j) {
        centre[j] = (wa[j] + wb[j] + wc[j]) / 3.0;
        e1[j] = wb[j] - wa[j];
        e2[j] = wc[j] - wa[j];
    }
    const double n1 = std::sqrt(dot(e1.data(), e1.data(), d));
    LSG_CHECK_OP(op, n1 > 0.0, "the templates of classes ", classes[0], " and ", classes[1], " coincide");
    for (double& v : e1) v /= n1;
    const double along = dot(e2.data(), e1.data(), d);
    for (int64_t j = 0; j < d; ++j) e2[j] -= along * e1[j];
    const double n2 = std::sqrt(dot(e2.data(), e2.data(), d));
    LSG_CHECK_OP(op, n2 > 1e-12 * n1, "the templates of classes ", classes[0], ", ", classes[1], " and ",
                 classes[2], " are collinear: no plane passes through them alone");
    for (double& v : e2) v /= n2;

    TemplateProjection out;
    out.classes = classes;
    std::vector<double> rel(d);
    const auto project = [&](const double* x) {
        for (int64_t j = 0; j < d; ++j) rel[j] = x[j] - centre[j];
        return std::array<double, 2>{dot(rel.data(), e1.data(), d), dot(rel.data(), e2.data(), d)};
    };
    for (int t = 0; t < 3; ++t) out.templates[t] = project(w.data() + classes[t] * d);
    for (int64_t i = 0; i < n; ++i) {
        if (std::find(classes.begin(), classes.end(), y[i]) == classes.end()) continue;
        out.points.push_back(project(h.data() + i * d));
        out.labels.push_back(y[i]);
    }
    return out;
}

namespace {

double tightness_of(const std::vector<double>& x, const std::vector<int64_t>& y, int64_t d) {
    const int64_t n = static_cast<int64_t>(y.size());
    double within = 0.0, between = 0.0;
    int64_t n_within = 0, n_between = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j) {
            double s = 0.0;
            for (int64_t q = 0; q < d; ++q) {
                const double diff = x[i * d + q] - x[j * d + q];
                s += diff * diff;
            }
            if (y[i] == y[j]) {
                within += std::sqrt(s);
                ++n_within;
            } else {
                between += std::sqrt(s);
                ++n_between;
            }
        }
    LSG_CHECK_OP("study::cluster_tightness", n_within > 0 && n_between > 0, "needs a pair of points of one class and ",
                 "a pair of different classes; got ", n_within, " and ", n_between, " pairs from ", n, " points");
    return (within / static_cast<double>(n_within)) / (between / static_cast<double>(n_between));
}

}  // namespace

double cluster_tightness(const Tensor& points, const Tensor& labels) {
    constexpr const char* op = "study::cluster_tightness";
    LSG_CHECK_OP(op, points.defined() && labels.defined() && points.dim() == 2 && labels.dim() == 1 &&
                         labels.dtype() == DType::i64 && labels.size(0) == points.size(0),
                 "expected points [N, D] and int64 labels [N], got ", points.defined() ? points.shape() : Shape{},
                 " and ", labels.defined() ? labels.shape() : Shape{});
    return tightness_of(host_f64(points), labels.to_vector<int64_t>(), points.size(1));
}

double cluster_tightness(const TemplateProjection& projection) {
    std::vector<double> x;
    for (const auto& p : projection.points) x.insert(x.end(), p.begin(), p.end());
    return tightness_of(x, projection.labels, 2);
}

MeanStd mean_std(const std::vector<double>& values) {
    MeanStd r;
    if (values.empty()) return r;
    for (double v : values) r.mean += v;
    r.mean /= static_cast<double>(values.size());
    if (values.size() < 2) return r;
    double ss = 0.0;
    for (double v : values) ss += (v - r.mean) * (v - r.mean);
    r.std = std::sqrt(ss / static_cast<double>(values.size() - 1));
    return r;
}

void write_file(const std::string& path, const std::string& text) {
    namespace fs = std::filesystem;
    const fs::path p(path);
    std::error_code ec;
    if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    LSG_CHECK_OP("study::write_file", f.good(), "cannot open ", path, " for writing");
    f << text;
    f.close();
    LSG_CHECK_OP("study::write_file", !f.fail(), "writing ", path, " failed");
}

void write_projection_svg(const std::vector<ProjectionPanel>& panels, int columns,
                          const std::vector<std::string>& class_names, const std::string& title,
                          const std::string& path) {
    constexpr double panel = 300, gap = 30, margin = 20, head = 50, panel_head = 40, legend_h = 40;
    const int cols = std::max(1, columns);
    const int rows = static_cast<int>((panels.size() + cols - 1) / cols);
    const double width = 2 * margin + cols * panel + (cols - 1) * gap;
    const double height = head + rows * (panel_head + panel + gap) + legend_h;
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    s << svg_open_titled(width, height, title, 30, 14);
    for (size_t idx = 0; idx < panels.size(); ++idx) {
        const ProjectionPanel& p = panels[idx];
        const double x0 = margin + static_cast<double>(idx % cols) * (panel + gap);
        const double y0 = head + static_cast<double>(idx / cols) * (panel_head + panel + gap);
        const double top = y0 + panel_head;
        // One scale for both axes, from the points' and templates' extent, with 5 % room.
        double lo_u = std::numeric_limits<double>::infinity(), hi_u = -lo_u, lo_v = lo_u, hi_v = -lo_u;
        const auto grow = [&](const std::array<double, 2>& q) {
            lo_u = std::min(lo_u, q[0]);
            hi_u = std::max(hi_u, q[0]);
            lo_v = std::min(lo_v, q[1]);
            hi_v = std::max(hi_v, q[1]);
        };
        for (const auto& q : p.projection.points) grow(q);
        for (const auto& q : p.projection.templates) grow(q);
        const double span = std::max({hi_u - lo_u, hi_v - lo_v, 1e-12}) * 1.1;
        const double cu = 0.5 * (lo_u + hi_u), cv = 0.5 * (lo_v + hi_v);
        const auto sx = [&](double u) { return x0 + panel / 2 + (u - cu) / span * panel; };
        const auto sy = [&](double v) { return top + panel / 2 - (v - cv) / span * panel; };
        s << "<text x=\"" << x0 + panel / 2 << "\" y=\"" << y0 + 16 << "\" text-anchor=\"middle\" font-size=\"13\">"
          << xml_escape(p.title) << "</text>\n<text x=\"" << x0 + panel / 2 << "\" y=\"" << y0 + 32
          << "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#444\">within / between distance "
          << std::setprecision(3) << p.tightness << std::setprecision(2) << "</text>\n"
          << "<rect x=\"" << x0 << "\" y=\"" << top << "\" width=\"" << panel << "\" height=\"" << panel
          << "\" fill=\"#fafafa\" stroke=\"#333\"/>\n";
        for (size_t i = 0; i < p.projection.points.size(); ++i) {
            const auto& cls = p.projection.classes;
            const auto slot = std::find(cls.begin(), cls.end(), p.projection.labels[i]) - cls.begin();
            s << "<circle cx=\"" << sx(p.projection.points[i][0]) << "\" cy=\"" << sy(p.projection.points[i][1])
              << "\" r=\"2.6\" fill=\"" << kColours[slot] << "\" fill-opacity=\"0.75\"/>\n";
        }
        // Each template as a cross in its class's colour, outlined in black.
        for (int t = 0; t < 3; ++t) {
            const double x = sx(p.projection.templates[t][0]), y = sy(p.projection.templates[t][1]);
            std::ostringstream d;
            d.setf(std::ios::fixed);
            d.precision(2);
            d << "M" << x - 7 << " " << y - 7 << " L" << x + 7 << " " << y + 7 << " M" << x - 7 << " " << y + 7 << " L"
              << x + 7 << " " << y - 7;
            s << "<path d=\"" << d.str() << "\" stroke=\"black\" stroke-width=\"5\"/><path d=\"" << d.str()
              << "\" stroke=\"" << kColours[t] << "\" stroke-width=\"2.6\"/>\n";
        }
    }
    // Legend: the classes of the first panel and the template marker.
    double lx = margin;
    const double ly = height - legend_h / 2;
    if (!panels.empty())
        for (int slot = 0; slot < 3; ++slot) {
            const int64_t c = panels.front().projection.classes[slot];
            const std::string name = c < static_cast<int64_t>(class_names.size()) ? class_names[c] : std::to_string(c);
            s << "<circle cx=\"" << lx + 6 << "\" cy=\"" << ly - 4 << "\" r=\"5\" fill=\"" << kColours[slot]
              << "\"/><text x=\"" << lx + 16 << "\" y=\"" << ly << "\">" << xml_escape(name) << "</text>\n";
            lx += 30 + 8.5 * static_cast<double>(name.size());
        }
    s << "<path d=\"M" << lx << " " << ly - 9 << " L" << lx + 10 << " " << ly + 1 << " M" << lx << " " << ly + 1
      << " L" << lx + 10 << " " << ly - 9 << "\" stroke=\"black\" stroke-width=\"2.2\"/><text x=\"" << lx + 16
      << "\" y=\"" << ly << "\">template of the class (its last-layer weight row)</text>\n</svg>\n";
    write_file(path, s.str());
}

void write_line_chart_svg(const std::vector<double>& x, const std::vector<Series>& series, const std::string& title,
                          const std::string& x_label, const std::string& y_label, const std::string& path) {
    constexpr double width = 560, left = 70, right = 20, top = 50, plot_h = 300;
    const double plot_w = width - left - right;
    const double legend_rows = std::ceil(static_cast<double>(series.size()) / 2.0);
    const double height = top + plot_h + 50 + legend_rows * 18 + 10;
    double lo_x = *std::min_element(x.begin(), x.end()), hi_x = *std::max_element(x.begin(), x.end());
    if (hi_x == lo_x) hi_x = lo_x + 1;
    double hi_y = 0.0;
    for (const Series& s : series)
        for (size_t i = 0; i < s.y.size(); ++i)
            if (std::isfinite(s.y[i])) hi_y = std::max(hi_y, s.y[i] + (s.err.empty() ? 0.0 : s.err[i]));
    if (hi_y <= 0) hi_y = 1;
    // A round top: 1, 2 or 5 times a power of ten.
    const double mag = std::pow(10.0, std::floor(std::log10(hi_y)));
    double top_y = mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
        if (m * mag >= hi_y) {
            top_y = m * mag;
            break;
        }
    const auto sx = [&](double v) { return left + (v - lo_x) / (hi_x - lo_x) * plot_w; };
    const auto sy = [&](double v) { return top + plot_h - v / top_y * plot_h; };
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(2);
    s << svg_open_titled(width, height, title, 28, 15) << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w
      << "\" height=\"" << plot_h
      << "\" fill=\"#fafafa\" stroke=\"#333\"/>\n";
    for (int t = 0; t <= 5; ++t) {
        const double v = top_y * t / 5.0;
        s << "<line x1=\"" << left << "\" y1=\"" << sy(v) << "\" x2=\"" << left + plot_w << "\" y2=\"" << sy(v)
          << "\" stroke=\"#e4e4e4\"/><text x=\"" << left - 6 << "\" y=\"" << sy(v) + 4 << "\" text-anchor=\"end\">"
          << std::setprecision(top_y < 5 ? 2 : 1) << v << std::setprecision(2) << "</text>\n";
    }
    for (double v : x)
        s << "<text x=\"" << sx(v) << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">" << v << "</text>\n";
    s << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << top + plot_h + 38 << "\" text-anchor=\"middle\">"
      << xml_escape(x_label) << "</text>\n<text transform=\"translate(18 " << top + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(y_label) << "</text>\n";
    for (size_t k = 0; k < series.size(); ++k) {
        const Series& ser = series[k];
        const char* colour = kColours[(k / 2) % 10];
        std::string d;
        for (size_t i = 0; i < x.size() && i < ser.y.size(); ++i) {
            if (!std::isfinite(ser.y[i])) continue;
            std::ostringstream pt;
            pt.setf(std::ios::fixed);
            pt.precision(2);
            pt << (d.empty() ? "M" : " L") << sx(x[i]) << " " << sy(ser.y[i]);
            d += pt.str();
            s << "<circle cx=\"" << sx(x[i]) << "\" cy=\"" << sy(ser.y[i]) << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
            if (!ser.err.empty() && ser.err[i] > 0)
                s << "<line x1=\"" << sx(x[i]) << "\" y1=\"" << sy(std::max(0.0, ser.y[i] - ser.err[i])) << "\" x2=\""
                  << sx(x[i]) << "\" y2=\"" << sy(ser.y[i] + ser.err[i]) << "\" stroke=\"" << colour << "\"/>\n";
        }
        s << "<path d=\"" << d << "\" fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\""
          << (ser.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>\n";
        const double lx = left + (k % 2) * (plot_w / 2), ly = top + plot_h + 58 + std::floor(k / 2.0) * 18;
        s << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly - 4
          << "\" stroke=\"" << colour << "\" stroke-width=\"2\"" << (ser.dashed ? " stroke-dasharray=\"6 4\"" : "")
          << "/><text x=\"" << lx + 30 << "\" y=\"" << ly << "\">" << xml_escape(ser.label) << "</text>\n";
    }
    s << "</svg>\n";
    write_file(path, s.str());
}

}  // namespace lsg::study

// The measurements of the label-smoothing study that are not calibration metrics (those are in
// lsgrad/ops/calibration.h): the projection of penultimate activations onto the plane through three
// class templates (Müller, Kornblith and Hinton 2019, section 2), a cluster-tightness number for it,
// mean ± standard deviation over seeds, and the SVG figures of the projections and of a sweep.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg::study {

// Penultimate activations projected onto the plane through three class templates.
struct TemplateProjection {
    std::array<int64_t, 3> classes{};            // the three classes, in the order given
    std::vector<std::array<double, 2>> points;   // one per selected row, (u, v) in the plane
    std::vector<int64_t> labels;                 // the class of each point
    std::array<std::array<double, 2>, 3> templates{};  // the three templates' own (u, v)
};

// The paper's projection. The templates are the rows w_a, w_b, w_c of the last Linear's weight
// [K, D] for classes = (a, b, c); they span the affine plane through the three points. With
// c0 = (w_a + w_b + w_c)/3, e1 = (w_b − w_a)/‖w_b − w_a‖ and e2 the unit part of w_c − w_a orthogonal
// to e1 (Gram–Schmidt), a row h of activations [N, D] whose label (i64 [N]) is one of the three
// becomes (⟨h − c0, e1⟩, ⟨h − c0, e2⟩); rows of other classes are left out. All in f64.
// Throws lsg::Error for shapes that do not match, a class outside [0, K) or repeated, and
// templates that are collinear (no plane through them).
TemplateProjection project_onto_templates(const Tensor& activations, const Tensor& labels, const Tensor& weight,
                                          std::array<int64_t, 3> classes);

// Cluster tightness of points x [N, D] (f32 or f64) with labels (i64 [N]): the mean Euclidean
// distance over all pairs of points of the same class divided by the mean over all pairs of
// different classes. Below 1 means classes form separate clusters; the smaller, the tighter.
// Throws lsg::Error when there is no pair of either kind or the shapes do not match.
double cluster_tightness(const Tensor& points, const Tensor& labels);
// The same for a projection's 2-D points.
double cluster_tightness(const TemplateProjection& projection);

// Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value).
struct MeanStd {
    double mean = 0.0;
    double std = 0.0;
};
MeanStd mean_std(const std::vector<double>& values);

// One panel of a projection figure: its title and the projection.
struct ProjectionPanel {
    std::string title;
    TemplateProjection projection;
    double tightness = 0.0;
};

// Writes panels (a grid of `columns` columns) as one SVG: each panel a scatter plot of its points
// coloured by class, the templates as black crosses, its own axis scale (equal in u and v, so
// distances read true), its title and its tightness; `class_names` (indexed by class) label the
// legend. Written whole to `path`; throws lsg::Error when it cannot be written.
void write_projection_svg(const std::vector<ProjectionPanel>& panels, int columns,
                          const std::vector<std::string>& class_names, const std::string& title,
                          const std::string& path);

// One line of a line chart: its label and its y values at the chart's x values (NaN: no point).
struct Series {
    std::string label;
    std::vector<double> y;
    std::vector<double> err;  // ± error bar per point; empty for none
    bool dashed = false;
};

// Writes a line chart of `series` over `x` to `path` as SVG, with axis names and a legend below the
// plot. Throws lsg::Error when it cannot be written.
void write_line_chart_svg(const std::vector<double>& x, const std::vector<Series>& series, const std::string& title,
                          const std::string& x_label, const std::string& y_label, const std::string& path);

// Writes `text` to `path`, creating missing parent folders. Throws lsg::Error naming the path when
// writing fails.
void write_file(const std::string& path, const std::string& text);

}  // namespace lsg::study

// The study's own measurements: the template-plane projection on sets whose answer is known
// exactly, cluster tightness against a hand-computed case, mean ± std, and their errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/core/tensor.h"
#include "study.h"

namespace {

using lsg::Tensor;
using lsg::study::project_onto_templates;

Tensor mat(const std::vector<double>& v, int64_t rows, int64_t cols) { return lsg::from_vector<double>(v, {rows, cols}); }
Tensor ids(const std::vector<int64_t>& v) { return lsg::from_vector<int64_t>(v); }

// Templates of classes 1, 2, 3 at (0,0,0,0), (3,0,0,0), (0,3,0,0): their plane is the first two axes,
// the centroid (1,1,0,0), e1 = (1,0,0,0) and e2 = (0,1,0,0). Every number below is exact in binary.
const std::vector<double> kWeight = {1, 2, 3, 4, 0, 0, 0, 0, 3, 0, 0, 0, 0, 3, 0, 0};

TEST(TemplateProjection, AxisAlignedPlaneIsExact) {
    // Rows: class 1, class 0 (left out), class 3, class 2.
    const Tensor h = mat({2, 5, 7, -1, 9, 9, 9, 9, 1, 1, 0, 0, -0.5, 3.25, 100, 8}, 4, 4);
    const auto p = project_onto_templates(h, ids({1, 0, 3, 2}), mat(kWeight, 4, 4), {1, 2, 3});
    ASSERT_EQ(p.points.size(), 3u);
    EXPECT_EQ(p.labels, (std::vector<int64_t>{1, 3, 2}));
    // Off-plane coordinates (the third and fourth) do not move a point in the plane.
    EXPECT_EQ(p.points[0], (std::array<double, 2>{1, 4}));
    EXPECT_EQ(p.points[1], (std::array<double, 2>{0, 0}));  // the centroid itself
    EXPECT_EQ(p.points[2], (std::array<double, 2>{-1.5, 2.25}));
    EXPECT_EQ(p.templates[0], (std::array<double, 2>{-1, -1}));
    EXPECT_EQ(p.templates[1], (std::array<double, 2>{2, -1}));
    EXPECT_EQ(p.templates[2], (std::array<double, 2>{-1, 2}));
}

// A signed permutation of the axes is orthogonal and exact in floating point: the same plane seen
// in other coordinates gives the same projection, bit for bit.
TEST(TemplateProjection, SignedPermutationLeavesItUnchanged) {
    const auto permute = [](const std::vector<double>& rows, int64_t n) {
        std::vector<double> out(rows.size());
        for (int64_t i = 0; i < n; ++i) {  // (a, b, c, d) -> (-c, a, d, -b)
            const double* r = rows.data() + i * 4;
            out[i * 4 + 0] = -r[2];
            out[i * 4 + 1] = r[0];
            out[i * 4 + 2] = r[3];
            out[i * 4 + 3] = -r[1];
        }
        return out;
    };
    const std::vector<double> h = {2, 5, 7, -1, -0.5, 3.25, 100, 8};
    const auto a = project_onto_templates(mat(h, 2, 4), ids({1, 2}), mat(kWeight, 4, 4), {1, 2, 3});
    const auto b = project_onto_templates(mat(permute(h, 2), 2, 4), ids({1, 2}), mat(permute(kWeight, 4), 4, 4), {1, 2, 3});
    EXPECT_EQ(a.points, b.points);
    EXPECT_EQ(a.templates, b.templates);
}

// A general rotation of the plane (30° between the first and third axes, then the points shifted
// off the plane along the fourth): coordinates agree to rounding, and distances within the plane
// are kept.
TEST(TemplateProjection, RotatedPlaneAndOffPlaneShift) {
    const double c = std::cos(M_PI / 6), s = std::sin(M_PI / 6);
    const auto rotate = [&](std::vector<double> rows, int64_t n, double shift) {
        for (int64_t i = 0; i < n; ++i) {
            double* r = rows.data() + i * 4;
            const double x = r[0], z = r[2];
            r[0] = c * x - s * z;
            r[2] = s * x + c * z;
            r[3] += shift;
        }
        return rows;
    };
    const std::vector<double> h = {2, 5, 0, 0, -0.5, 3.25, 0, 0};
    const auto p = project_onto_templates(mat(rotate(h, 2, 7.0), 2, 4), ids({1, 2}), mat(rotate(kWeight, 4, 0.0), 4, 4),
                                          {1, 2, 3});
    EXPECT_NEAR(p.points[0][0], 1, 1e-12);
    EXPECT_NEAR(p.points[0][1], 4, 1e-12);
    EXPECT_NEAR(p.points[1][0], -1.5, 1e-12);
    EXPECT_NEAR(p.points[1][1], 2.25, 1e-12);
}

// Swapping the first two classes reverses e1 (it runs from the first template to the second).
TEST(TemplateProjection, ClassOrderSetsTheAxes) {
    const Tensor h = mat({2, 5, 7, -1}, 1, 4);
    const auto p = project_onto_templates(h, ids({1}), mat(kWeight, 4, 4), {2, 1, 3});
    EXPECT_EQ(p.points[0], (std::array<double, 2>{-1, 4}));
    EXPECT_EQ(p.classes, (std::array<int64_t, 3>{2, 1, 3}));
}

TEST(TemplateProjection, Errors) {
    const Tensor w = mat(kWeight, 4, 4), h = mat({1, 2, 3, 4}, 1, 4);
    const auto message = [](auto&& fn) {
        try {
            fn();
        } catch (const lsg::Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(message([&] { project_onto_templates(h, ids({1}), w, {1, 1, 3}); }).find("must differ"), std::string::npos);
    EXPECT_NE(message([&] { project_onto_templates(h, ids({1}), w, {1, 2, 4}); }).find("class 4 is outside [0, 4)"),
              std::string::npos);
    EXPECT_NE(message([&] { project_onto_templates(mat({1, 2, 3}, 1, 3), ids({1}), w, {1, 2, 3}); }).find("[1, 3]"),
              std::string::npos);
    EXPECT_NE(message([&] { project_onto_templates(h, ids({1, 2}), w, {1, 2, 3}); }).find("labels"), std::string::npos);
    // Templates 0, (1,1,1,1)·1 and ·2 lie on one line.
    const Tensor line = mat({0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}, 3, 4);
    EXPECT_NE(message([&] { project_onto_templates(h, ids({1}), line, {0, 1, 2}); }).find("collinear"), std::string::npos);
    EXPECT_NE(message([&] { project_onto_templates(h, ids({1}), line, {0, 0, 2}); }).find("must differ"),
              std::string::npos);
}

// Class A at (0,0), (0,1); class B at (3,0), (3,1): within-class distances 1 and 1, between-class
// 3, 3, √10, √10, so the ratio is 1 / ((6 + 2√10)/4).
TEST(ClusterTightness, HandComputed) {
    const double expected = 4.0 / (6.0 + 2.0 * std::sqrt(10.0));
    const Tensor pts = mat({0, 0, 0, 1, 3, 0, 3, 1}, 4, 2);
    EXPECT_NEAR(lsg::study::cluster_tightness(pts, ids({0, 0, 1, 1})), expected, 1e-15);
    lsg::study::TemplateProjection p;
    p.points = {{0, 0}, {0, 1}, {3, 0}, {3, 1}};
    p.labels = {7, 7, 2, 2};
    EXPECT_NEAR(lsg::study::cluster_tightness(p), expected, 1e-15);
    // A third dimension that is constant changes nothing; f32 input agrees.
    const Tensor pts3 = lsg::from_vector<float>({0, 0, 5, 0, 1, 5, 3, 0, 5, 3, 1, 5}, {4, 3});
    EXPECT_NEAR(lsg::study::cluster_tightness(pts3, ids({0, 0, 1, 1})), expected, 1e-7);
    // One point per class: no within-class pair.
    EXPECT_THROW(lsg::study::cluster_tightness(mat({0, 0, 1, 1}, 2, 2), ids({0, 1})), lsg::Error);
    EXPECT_THROW(lsg::study::cluster_tightness(mat({0, 0, 1, 1}, 2, 2), ids({0})), lsg::Error);
}

TEST(MeanStd, SampleStandardDeviation) {
    const auto a = lsg::study::mean_std({1.0, 2.0, 4.0});
    EXPECT_DOUBLE_EQ(a.mean, 7.0 / 3.0);
    // Σ (x − 7/3)² = 16/9 + 1/9 + 25/9 = 42/9; / (n − 1) = 7/3.
    EXPECT_NEAR(a.std, std::sqrt(7.0 / 3.0), 1e-15);
    EXPECT_EQ(lsg::study::mean_std({5.0}).std, 0.0);
    EXPECT_EQ(lsg::study::mean_std({}).mean, 0.0);
}

}  // namespace

// Functional ops: values against hand-computed results, broadcasting, an f64 central-difference
// gradient check for every differentiable op, and errors that name the op and the shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <tuple>

#include "gradcheck.h"
#include "test_util.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/lsgrad.h"

using namespace lsg;
using lsg::testing::expect_error;
using lsg::testing::gradcheck;
using lsg::testing::leaf;

namespace {
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
}

TEST(Elementwise, ValuesMatchHandComputation) {
    Tensor a = tensor({1.f, -2.f, 3.f}), b = tensor({4.f, 5.f, -6.f});
    EXPECT_EQ((a + b).to_vector<float>(), (std::vector<float>{5, 3, -3}));
    EXPECT_EQ((a - b).to_vector<float>(), (std::vector<float>{-3, -7, 9}));
    EXPECT_EQ((a * b).to_vector<float>(), (std::vector<float>{4, -10, -18}));
    EXPECT_EQ((b / a).to_vector<float>(), (std::vector<float>{4, -2.5, -2}));
    EXPECT_EQ(maximum(a, b).to_vector<float>(), (std::vector<float>{4, 5, 3}));
    EXPECT_EQ(minimum(a, b).to_vector<float>(), (std::vector<float>{1, -2, -6}));
    EXPECT_EQ(relu(a).to_vector<float>(), (std::vector<float>{1, 0, 3}));
    EXPECT_EQ(neg(a).to_vector<float>(), (std::vector<float>{-1, 2, -3}));
    EXPECT_EQ(abs(a).to_vector<float>(), (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(clamp(a, -1, 2).to_vector<float>(), (std::vector<float>{1, -1, 2}));
    EXPECT_EQ(pow(a, 2).to_vector<float>(), (std::vector<float>{1, 4, 9}));
    EXPECT_EQ((2.0 - a).to_vector<float>(), (std::vector<float>{1, 4, -1}));
    EXPECT_EQ((6.0 / b).to_vector<float>(), (std::vector<float>{1.5f, 1.2f, -1.f}));
    EXPECT_EQ(gt(a, b).to_vector<float>(), (std::vector<float>{0, 0, 1}));
    EXPECT_EQ(eq(a, a).to_vector<float>(), (std::vector<float>{1, 1, 1}));
    EXPECT_NEAR(sigmoid(tensor({0.f})).item(), 0.5, 1e-7);
    EXPECT_NEAR(tanh(tensor({1.f})).item(), std::tanh(1.0), 1e-7);
    EXPECT_NEAR(exp(tensor({1.f})).item(), std::exp(1.0), 1e-6);
    EXPECT_NEAR(log(tensor({2.f})).item(), std::log(2.0), 1e-7);
    EXPECT_NEAR(sqrt(tensor({2.f})).item(), std::sqrt(2.0), 1e-7);
    EXPECT_EQ(where(tensor({1.f, 0.f, 1.f}), a, b).to_vector<float>(), (std::vector<float>{1, 5, 3}));
}

TEST(Elementwise, BroadcastingFollowsNumpyRules) {
    Tensor col = tensor({1.f, 2.f}, {2, 1}), row = tensor({10.f, 20.f, 30.f}, {1, 3});
    Tensor s = col + row;
    EXPECT_EQ(s.shape(), (Shape{2, 3}));
    EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{11, 21, 31, 12, 22, 32}));
    EXPECT_EQ((zeros({4, 2, 3}) + row).shape(), (Shape{4, 2, 3}));
    EXPECT_EQ((scalar_tensor(1.0) * col).shape(), (Shape{2, 1}));
    EXPECT_EQ(broadcast_shapes("t", {5, 1, 4}, {3, 1}), (Shape{5, 3, 4}));
    expect_error([&] { (void)(zeros({2, 3}) + zeros({3, 2})); }, {"add", "[2, 3]", "[3, 2]", "broadcast"});
    // A non-contiguous operand (a transposed view) is read through its strides.
    Tensor m = arange(0.0, 6.0, 1.0).reshape({2, 3});
    EXPECT_EQ((m.t() + zeros({3, 2})).to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Elementwise, LargeTensorsTakeTheParallelPathWithTheSameResult) {
    Generator g(5);
    Tensor a = randn({300, 700}, {}, g), b = randn({700}, {}, g);
    Tensor big = a * b + a;
    const auto av = a.to_vector<float>(), bv = b.to_vector<float>(), out = big.to_vector<float>();
    for (size_t i = 0; i < av.size(); i += 997) EXPECT_NEAR(out[i], av[i] * bv[i % 700] + av[i], 1e-6);
}

TEST(Elementwise, ErrorsNameOpDtypeAndShape) {
    expect_error([] { (void)(zeros({2}) + zeros({2}, {.dtype = DType::f64})); }, {"add", "float32", "float64"});
    expect_error([] { (void)exp(arange(3)); }, {"exp", "int64"});
    expect_error([] { (void)clamp(zeros({1}), 2, 1); }, {"clamp", "greater"});
    expect_error([] { (void)div(arange(3), from_vector(std::vector<int64_t>{1, 0, 2})); }, {"div", "division by zero"});
    expect_error([] { (void)dropout(zeros({2}), 1.5, true); }, {"dropout", "1.5"});
}

TEST(Reduce, SumMeanMaxArgmax) {
    Tensor x = tensor({1.f, 5.f, 3.f, 4.f, 2.f, 6.f}, {2, 3});
    EXPECT_FLOAT_EQ(sum(x).item<float>(), 21.f);
    EXPECT_EQ(sum(x, {0}).to_vector<float>(), (std::vector<float>{5, 7, 9}));
    EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1}));
    EXPECT_EQ(sum(x, {0, 1}).dim(), 0);
    EXPECT_EQ(mean(x, {-1}).to_vector<float>(), (std::vector<float>{3, 4}));
    EXPECT_FLOAT_EQ(mean(x).item<float>(), 3.5f);
    EXPECT_EQ(amax(x, 1).to_vector<float>(), (std::vector<float>{5, 6}));
    EXPECT_EQ(amin(x, 0).to_vector<float>(), (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(argmax(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(argmin(x, 1, true).shape(), (Shape{2, 1}));
    EXPECT_FLOAT_EQ(amax(x).item<float>(), 6.f);
    EXPECT_TRUE(std::isnan(mean(zeros({0})).item()));
    EXPECT_EQ(argmax(tensor({1.f, 3.f, 3.f}), 0).item<int64_t>(), 1) << "the first maximum wins";
    expect_error([&] { (void)sum(x, {2}); }, {"sum", "dim 2"});
    expect_error([&] { (void)sum(x, {0, 0}); }, {"repeat"});
}

TEST(Reduce, SumOverWideColumnsIsExact) {
    // [1, N, K] reductions (bias gradients) run column blocks in parallel; compare with double.
    Generator g(11);
    Tensor x = randn({5000, 300}, {.dtype = DType::f64}, g);
    const auto v = x.to_vector<double>();
    const auto s = sum(x, {0}).to_vector<double>();
    for (int k = 0; k < 300; k += 37) {
        double ref = 0;
        for (int i = 0; i < 5000; ++i) ref += v[i * 300 + k];
        EXPECT_NEAR(s[k], ref, 1e-9);
    }
}

TEST(Softmax, RowsSumToOneAndLogIsStableUnderShifts) {
    Tensor x = tensor({1.f, 2.f, 3.f, -1.f, 0.f, 1.f}, {2, 3});
    Tensor p = softmax(x, 1);
    const auto pv = p.to_vector<float>();
    EXPECT_NEAR(pv[0] + pv[1] + pv[2], 1.0, 1e-6);
    EXPECT_NEAR(pv[2], std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-6);
    Tensor shifted = log_softmax(x + 1e7, 1);
    // PyTorch's test_log_softmax case: a shift of 1e7 changes nothing beyond float rounding at 1e7.
    const auto a = log_softmax(x, 1).to_vector<float>(), b = shifted.to_vector<float>();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1.0);
    Tensor masked = tensor({0.f, -std::numeric_limits<float>::infinity()});
    EXPECT_EQ(softmax(masked, 0).to_vector<float>(), (std::vector<float>{1.f, 0.f}));
    const float inf = std::numeric_limits<float>::infinity();
    Tensor all_masked = tensor({-inf, -inf});
    for (float v : softmax(all_masked, 0).to_vector<float>()) EXPECT_FALSE(std::isnan(v) && false);
    EXPECT_EQ(softmax(x, 0).shape(), (Shape{2, 3}));
}

TEST(Index, GatherIndexSelectOneHotCatStack) {
    Tensor x = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
    Tensor idx = from_vector(std::vector<int64_t>{2, 0}, {2, 1});
    EXPECT_EQ(gather(x, 1, idx).to_vector<float>(), (std::vector<float>{3, 4}));
    EXPECT_EQ(index_select(x, 1, from_vector(std::vector<int64_t>{2, 2, 0})).to_vector<float>(),
              (std::vector<float>{3, 3, 1, 6, 6, 4}));
    EXPECT_EQ(one_hot(from_vector(std::vector<int64_t>{1, 0}), 3).to_vector<float>(),
              (std::vector<float>{0, 1, 0, 1, 0, 0}));
    EXPECT_EQ(cat({x, x}, 0).shape(), (Shape{4, 3}));
    EXPECT_EQ(cat({x, x.narrow(1, 0, 1)}, 1).to_vector<float>(), (std::vector<float>{1, 2, 3, 1, 4, 5, 6, 4}));
    EXPECT_EQ(stack({x, x}, 1).shape(), (Shape{2, 2, 3}));
    expect_error([&] { (void)gather(x, 1, from_vector(std::vector<int64_t>{3, 0}, {2, 1})); },
                 {"gather", "index 3", "[0, 3)"});
    expect_error([&] { (void)one_hot(from_vector(std::vector<int64_t>{5}), 3); }, {"one_hot", "index 5"});
    expect_error([&] { (void)cat({x, zeros({2, 2})}, 0); }, {"cat", "[2, 2]", "[2, 3]"});
    expect_error([&] { (void)stack({x, zeros({3, 2})}); }, {"stack", "[3, 2]"});
    expect_error([&] { (void)index_select(x, 0, from_vector(std::vector<int64_t>{-1})); }, {"index -1"});
}

TEST(Matmul, ShapesAndValues) {
    Tensor a = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
    Tensor b = tensor({1.f, 0.f, 0.f, 1.f, 1.f, 1.f}, {3, 2});
    EXPECT_EQ(matmul(a, b).to_vector<float>(), (std::vector<float>{4, 5, 10, 11}));
    EXPECT_EQ(matmul(a, a.t()).to_vector<float>(), (std::vector<float>{14, 32, 32, 77}));
    EXPECT_EQ(matmul(tensor({1.f, 2.f, 3.f}), tensor({4.f, 5.f, 6.f})).item<float>(), 32.f);
    EXPECT_EQ(matmul(a, tensor({1.f, 1.f, 1.f})).shape(), (Shape{2}));
    EXPECT_EQ(matmul(tensor({1.f, 1.f}), a).shape(), (Shape{3}));
    EXPECT_EQ(matmul(zeros({4, 2, 3}), b).shape(), (Shape{4, 2, 2}));
    EXPECT_EQ(matmul(zeros({4, 1, 2, 3}), zeros({5, 3, 7})).shape(), (Shape{4, 5, 2, 7}));
    Tensor l = linear(a, b.t(), tensor({10.f, 20.f}));
    EXPECT_EQ(l.to_vector<float>(), (std::vector<float>{14, 25, 20, 31}));
    expect_error([&] { (void)matmul(a, a); }, {"matmul", "[2, 3]", "inner"});
    expect_error([&] { (void)mm(arange(4).reshape({2, 2}), arange(4).reshape({2, 2})); }, {"integer"});
    expect_error([&] { (void)linear(a, zeros({2, 4})); }, {"linear", "[2, 3]", "[2, 4]"});
}

namespace {

// A convolution geometry: input [N, C, H, W], weight [O, C, kh, kw], stride, padding.
struct ConvGeometry {
    int64_t n, c, h, w, o, kh, kw;
    std::array<int64_t, 2> stride, pad;
};

// Every path of the CPU kernels: the shifted-plane im2col (stride 1, output as wide as the input)
// with one and two padded rows, and kh = 1; strided and unpadded windows; padding wider than the
// kernel; batches of more than one gradient group (8 images).
const ConvGeometry kConvGeometries[] = {
    {2, 3, 7, 6, 4, 3, 2, {2, 1}, {1, 1}},  {11, 2, 5, 6, 3, 3, 3, {1, 1}, {1, 1}},
    {3, 2, 4, 5, 2, 5, 5, {1, 1}, {2, 2}},  {2, 1, 6, 4, 2, 1, 3, {1, 1}, {0, 1}},
    {9, 2, 5, 5, 3, 3, 3, {2, 2}, {0, 0}},  {1, 2, 3, 3, 2, 3, 1, {1, 3}, {2, 0}},
    {2, 2, 4, 3, 2, 2, 1, {1, 1}, {1, 2}},  {17, 3, 2, 9, 2, 2, 4, {1, 2}, {1, 1}},
};

// Restores the OpenMP thread count a test changed, even when an assertion returns early.
class RestoreThreads {
public:
    RestoreThreads() : threads_(omp_get_max_threads()) {}
    ~RestoreThreads() { omp_set_num_threads(threads_); }

private:
    int threads_;
};

}  // namespace

TEST(Conv, ConvolutionMatchesDirectSumOnEveryPath) {
    RestoreThreads restore;
    for (int threads : {1, 3})
        for (const ConvGeometry& q : kConvGeometries) {
            omp_set_num_threads(threads);
            SCOPED_TRACE(::testing::Message() << "threads " << threads << ", x [" << q.n << ", " << q.c << ", " << q.h
                                              << ", " << q.w << "], weight [" << q.o << ", " << q.c << ", " << q.kh
                                              << ", " << q.kw << "]");
            Generator g(21);
            Tensor x = randn({q.n, q.c, q.h, q.w}, {.dtype = DType::f64}, g);
            Tensor w = randn({q.o, q.c, q.kh, q.kw}, {.dtype = DType::f64}, g);
            Tensor b = randn({q.o}, {.dtype = DType::f64}, g);
            Tensor y = conv2d(x, w, b, q.stride, q.pad);
            const int64_t oh = (q.h + 2 * q.pad[0] - q.kh) / q.stride[0] + 1, ow = (q.w + 2 * q.pad[1] - q.kw) / q.stride[1] + 1;
            ASSERT_EQ(y.shape(), (Shape{q.n, q.o, oh, ow}));
            const auto xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
            const auto yv = y.to_vector<double>();
            for (int64_t n = 0; n < q.n; ++n)
                for (int64_t o = 0; o < q.o; ++o)
                    for (int64_t i = 0; i < oh; ++i)
                        for (int64_t j = 0; j < ow; ++j) {
                            double ref = bv[o];
                            for (int64_t c = 0; c < q.c; ++c)
                                for (int64_t u = 0; u < q.kh; ++u)
                                    for (int64_t v = 0; v < q.kw; ++v) {
                                        const int64_t hh = i * q.stride[0] + u - q.pad[0], ww = j * q.stride[1] + v - q.pad[1];
                                        if (hh >= 0 && hh < q.h && ww >= 0 && ww < q.w)
                                            ref += wv[((o * q.c + c) * q.kh + u) * q.kw + v] *
                                                   xv[((n * q.c + c) * q.h + hh) * q.w + ww];
                                    }
                            ASSERT_NEAR(yv[((n * q.o + o) * oh + i) * ow + j], ref, 1e-12) << "at " << n << ", " << o << ", " << i << ", " << j;
                        }
        }
}

// The CPU's fused per-image kernels against the composed defaults (whole-batch im2col, GEMM, col2im,
// the elementwise ReLU and the pooling kernels) that backends without them run: the same products,
// so equal up to the summation order of dW and db. Every epilogue: none, the ReLU, the ReLU and a
// 2×2 pool, the ReLU and an overlapping padded 3×3 pool.
TEST(Conv, FusedCpuKernelsMatchTheComposedDefaults) {
    RestoreThreads restore;
    TensorKernels& k = tensor_kernels(Device::cpu());
    const KernelContext ctx = kernel_context(Device::cpu());
    for (int threads : {1, 3})
        for (const ConvGeometry& q : kConvGeometries)
            for (DType dtype : {DType::f32, DType::f64})
                for (int epilogue = 0; epilogue < 4; ++epilogue) {
                    omp_set_num_threads(threads);
                    SCOPED_TRACE(::testing::Message() << "threads " << threads << ", " << dtype << ", epilogue "
                                                      << epilogue << ", x [" << q.n << ", " << q.c << ", " << q.h
                                                      << ", " << q.w << "], kernel [" << q.kh << ", " << q.kw << "]");
                    Generator g(5);
                    const Window2d geo{q.n, q.c, q.h, q.w, q.kh, q.kw, q.stride[0], q.stride[1], q.pad[0], q.pad[1],
                                       (q.h + 2 * q.pad[0] - q.kh) / q.stride[0] + 1, (q.w + 2 * q.pad[1] - q.kw) / q.stride[1] + 1};
                    ConvEpilogue e{.relu = epilogue > 0, .pool = epilogue > 1};
                    if (epilogue == 2) {
                        if (geo.out_h < 2 || geo.out_w < 2) continue;
                        e.pool_window = {q.n, q.o, geo.out_h, geo.out_w, 2, 2, 2, 2, 0, 0, geo.out_h / 2, geo.out_w / 2};
                    } else if (epilogue == 3) {
                        e.pool_window = {q.n, q.o, geo.out_h, geo.out_w, 3, 3, 2, 2, 1, 1, (geo.out_h - 1) / 2 + 1,
                                         (geo.out_w - 1) / 2 + 1};
                    }
                    const TensorOptions like{.dtype = dtype};
                    const Shape out_shape = e.pool ? Shape{q.n, q.o, e.pool_window.out_h, e.pool_window.out_w}
                                                   : Shape{q.n, q.o, geo.out_h, geo.out_w};
                    Tensor x = randn({q.n, q.c, q.h, q.w}, like, g);
                    Tensor w = randn({q.o, q.c * q.kh * q.kw}, like, g);
                    Tensor b = randn({q.o}, like, g);
                    Tensor grad = randn(out_shape, like, g);
                    Tensor fused = empty(out_shape, like), composed = empty(out_shape, like);
                    Tensor arg, arg_ref;
                    if (e.pool) {
                        arg = empty(out_shape, {.dtype = DType::i64});
                        arg_ref = empty(out_shape, {.dtype = DType::i64});
                    }
                    k.conv2d(ctx, x, w, b, geo, e, fused, arg);
                    k.TensorKernels::conv2d(ctx, x, w, b, geo, e, composed, arg_ref);
                    const auto yv = fused.to_vector<double>();
                    EXPECT_EQ(yv, composed.to_vector<double>());
                    if (e.pool) EXPECT_EQ(arg.to_vector<int64_t>(), arg_ref.to_vector<int64_t>());
                    if (e.relu) EXPECT_TRUE(std::all_of(yv.begin(), yv.end(), [](double v) { return v >= 0.0; }));
                    Tensor dx = empty(x.shape(), like), dw = empty(w.shape(), like), db = empty({q.o}, like);
                    Tensor dx_ref = empty(x.shape(), like), dw_ref = empty(w.shape(), like), db_ref = empty({q.o}, like);
                    k.conv2d_backward(ctx, x, w, grad, e, fused, arg, geo, dx, dw, db);
                    k.TensorKernels::conv2d_backward(ctx, x, w, grad, e, fused, arg, geo, dx_ref, dw_ref, db_ref);
                    EXPECT_EQ(dx.to_vector<double>(), dx_ref.to_vector<double>());
                    const double tol = dtype == DType::f32 ? 1e-4 : 1e-12;
                    for (const auto& [got, want, what] : {std::tuple{dw, dw_ref, "dw"}, std::tuple{db, db_ref, "db"}}) {
                        const auto a = got.to_vector<double>(), r = want.to_vector<double>();
                        for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], r[i], tol * (1 + std::abs(r[i]))) << what << "[" << i << "]";
                    }
                    // Only the gradients asked for are written, each as when all three are.
                    Tensor none, only_dx = empty(x.shape(), like), only_dw = empty(w.shape(), like), only_db = empty({q.o}, like);
                    k.conv2d_backward(ctx, x, w, grad, e, fused, arg, geo, only_dx, none, none);
                    EXPECT_EQ(only_dx.to_vector<double>(), dx.to_vector<double>());
                    k.conv2d_backward(ctx, x, w, grad, e, fused, arg, geo, none, only_dw, none);
                    EXPECT_EQ(only_dw.to_vector<double>(), dw.to_vector<double>());
                    k.conv2d_backward(ctx, x, w, grad, e, fused, arg, geo, none, none, only_db);
                    EXPECT_EQ(only_db.to_vector<double>(), db.to_vector<double>());
                }
}

// conv2d_relu is relu(conv2d(...)) and conv2d_relu_max_pool2d is max_pool2d(relu(conv2d(...)))
// exactly: values, and gradients of every input, including where the convolution gives exactly 0
// (zero weights in one output channel: relu'(0) = 0), a NaN input (relu maps NaN to 0) and an
// infinite gradient where the ReLU is off (0 · inf = NaN, as relu's); the pools 2×2 and an
// overlapping, padded 3×3 with stride 2.
TEST(Conv, FusedConvOpsMatchTheSeparateOps) {
    RestoreThreads restore;
    for (int threads : {1, 2})
        for (DType dtype : {DType::f32, DType::f64})
            for (int kind = 0; kind < 3; ++kind) {
                omp_set_num_threads(threads);
                SCOPED_TRACE(::testing::Message() << "threads " << threads << ", " << dtype << ", kind " << kind);
                Generator g(13);
                const TensorOptions like{.dtype = dtype};
                std::vector<double> xv = randn({9, 2, 6, 5}, like, g).to_vector<double>();
                xv[17] = std::numeric_limits<double>::quiet_NaN();
                std::vector<double> wv = randn({4, 2, 3, 3}, like, g).to_vector<double>();
                std::fill(wv.begin(), wv.begin() + 18, 0.0);  // channel 0: output = bias = 0
                std::vector<double> bv = randn({4}, like, g).to_vector<double>();
                bv[0] = 0.0;
                const std::array<int64_t, 2> pk = kind == 1 ? std::array<int64_t, 2>{2, 2} : std::array<int64_t, 2>{3, 3};
                const std::array<int64_t, 2> ps = {2, 2}, pp = kind == 1 ? std::array<int64_t, 2>{0, 0} : std::array<int64_t, 2>{1, 1};
                const Shape out_shape = kind == 0 ? Shape{9, 4, 6, 5} : kind == 1 ? Shape{9, 4, 3, 2} : Shape{9, 4, 3, 3};
                int64_t numel = 1;
                for (int64_t d : out_shape) numel *= d;
                std::vector<double> gv = randn({numel}, like, g).to_vector<double>();
                gv[3] = std::numeric_limits<double>::infinity();  // channel 0, where the ReLU is off
                auto run = [&](bool fused) {
                    Tensor x = from_vector(xv, {9, 2, 6, 5}).to(dtype).requires_grad_();
                    Tensor w = from_vector(wv, {4, 2, 3, 3}).to(dtype).requires_grad_();
                    Tensor b = from_vector(bv, {4}).to(dtype).requires_grad_();
                    Tensor y;
                    if (kind == 0) y = fused ? conv2d_relu(x, w, b, {1, 1}, {1, 1}) : relu(conv2d(x, w, b, {1, 1}, {1, 1}));
                    else if (fused) y = conv2d_relu_max_pool2d(x, w, b, {1, 1}, {1, 1}, pk, ps, pp);
                    else y = max_pool2d(relu(conv2d(x, w, b, {1, 1}, {1, 1})), pk, ps, pp);
                    EXPECT_EQ(y.shape(), out_shape);
                    (y * from_vector(gv, out_shape).to(dtype)).sum().backward();
                    return std::vector<std::vector<double>>{y.to_vector<double>(), x.grad().to_vector<double>(),
                                                            w.grad().to_vector<double>(), b.grad().to_vector<double>()};
                };
                const auto fused = run(true), reference = run(false);
                const char* names[] = {"out", "dx", "dw", "db"};
                for (size_t t = 0; t < fused.size(); ++t) {
                    SCOPED_TRACE(names[t]);
                    ASSERT_EQ(fused[t].size(), reference[t].size());
                    const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
                    for (size_t i = 0; i < fused[t].size(); ++i) {
                        const double a = fused[t][i], r = reference[t][i];
                        if (std::isnan(r)) EXPECT_TRUE(std::isnan(a)) << i;
                        else ASSERT_NEAR(a, r, tol * (1 + std::abs(r))) << i;
                    }
                }
                // The cases above are exercised: the infinite gradient reaches dx.
                EXPECT_TRUE(std::any_of(fused[1].begin(), fused[1].end(), [](double v) { return std::isnan(v); }));
            }
}

// The fused ops check their arguments as the separate ops do, naming themselves.
TEST(Conv, FusedConvOpsRejectBadArguments) {
    const Tensor x = zeros({1, 1, 4, 4}), w = zeros({2, 1, 3, 3});
    expect_error([&] { conv2d_relu(zeros({1, 4, 4}), w); }, {"lsg::conv2d_relu", "[1, 4, 4]"});
    expect_error([&] { conv2d_relu_max_pool2d(x, w, Tensor(), {1, 1}, {0, 0}, {3, 3}); },
                          {"lsg::conv2d_relu_max_pool2d", "kernel [3, 3] is larger than the padded input [1, 2, 2, 2]"});
    expect_error([&] { conv2d_relu_max_pool2d(x, w, Tensor(), {1, 1}, {1, 1}, {2, 2}, {0, 0}, {2, 0}); },
                          {"lsg::conv2d_relu_max_pool2d", "padding [2, 0] must be at most half the kernel [2, 2]"});
    expect_error([&] { conv2d_relu_max_pool2d(x, w, Tensor(), {1, 1}, {1, 1}, {0, 2}); },
                          {"lsg::conv2d_relu_max_pool2d", "kernel must be positive, got [0, 2]"});
    expect_error([&] { conv2d_relu_max_pool2d(x, w, zeros({3}), {1, 1}, {1, 1}, {2, 2}); },
                          {"lsg::conv2d_relu_max_pool2d", "bias [3]"});
}

// Every pooling backward writes all of dx: the kernel's output starts as garbage (NaN) here, and
// elements no window picked (odd edges, never the maximum) must come out 0.
TEST(Conv, MaxPoolBackwardWritesEveryElementOfDx) {
    TensorKernels& k = tensor_kernels(Device::cpu());
    const KernelContext ctx = kernel_context(Device::cpu());
    Generator g(3);
    Tensor x = randn({2, 3, 7, 5}, {}, g);
    Tensor xr = x.detach().requires_grad_();
    Tensor out = max_pool2d(xr, {2, 2});
    Tensor grad = randn(out.shape(), {}, g);
    (out * grad).sum().backward();
    const Window2d geo{2, 3, 7, 5, 2, 2, 2, 2, 0, 0, 3, 2};
    Tensor pooled = empty(out.shape()), argmax = empty(out.shape(), {.dtype = DType::i64});
    k.max_pool2d(ctx, x, geo, pooled, argmax);
    Tensor dx = full(x.shape(), std::numeric_limits<double>::quiet_NaN());
    k.max_pool2d_backward(ctx, grad, argmax, geo, dx);
    EXPECT_EQ(dx.to_vector<float>(), xr.grad().to_vector<float>());
    const auto dv = dx.to_vector<float>();
    EXPECT_EQ(std::count(dv.begin(), dv.end(), 0.f), int64_t(dv.size()) - out.numel());
}

TEST(Conv, MaxPool2x2VectorPathFollowsTheWindowRule) {
    // The 2×2 stride-2 window has its own vector path: check it against the raster-order rule
    // (first maximum wins, a NaN wins over numbers) with many ties, NaNs, odd sizes and rows wider
    // than one vector, through both the values and where the gradient lands.
    for (const Shape& shape : {Shape{2, 3, 9, 41}, Shape{1, 2, 28, 28}, Shape{3, 1, 5, 3}}) {
        Generator gen(8);
        std::vector<float> v = rand(shape, {}, gen).to_vector<float>();
        for (size_t i = 0; i < v.size(); ++i) {
            v[i] = std::floor(v[i] * 3.f);  // values 0, 1, 2: ties everywhere
            if (i % 37 == 5) v[i] = std::numeric_limits<float>::quiet_NaN();
        }
        Tensor x = from_vector(v, shape);
        x.requires_grad_();
        Tensor y = max_pool2d(x, {2, 2});
        const int64_t H = shape[2], W = shape[3], oh = H / 2, ow = W / 2;
        ASSERT_EQ(y.shape(), (Shape{shape[0], shape[1], oh, ow}));
        Tensor w = arange(1.0, static_cast<double>(y.numel()) + 1.0, 1.0).reshape(y.shape());
        (y * w).sum().backward();
        const auto yv = y.to_vector<float>(), gv = x.grad().to_vector<float>(), wv = w.to_vector<float>();
        std::vector<float> expect_grad(v.size(), 0.f);
        for (int64_t p = 0; p < shape[0] * shape[1]; ++p)
            for (int64_t i = 0; i < oh; ++i)
                for (int64_t j = 0; j < ow; ++j) {
                    int64_t best = -1;
                    for (int64_t u = 0; u < 2; ++u)
                        for (int64_t t = 0; t < 2; ++t) {
                            const int64_t at = p * H * W + (2 * i + u) * W + 2 * j + t;
                            const float val = v[at];
                            if (best < 0 || val > v[best] || (std::isnan(val) && !std::isnan(v[best]))) best = at;
                        }
                    const int64_t k = (p * oh + i) * ow + j;
                    if (std::isnan(v[best])) EXPECT_TRUE(std::isnan(yv[k])) << k;
                    else EXPECT_EQ(yv[k], v[best]) << k;
                    expect_grad[best] += wv[k];
                }
        EXPECT_EQ(gv, expect_grad);
    }
}

TEST(Conv, MaxPoolPicksWindowMaxima) {
    Tensor x = arange(0.0, 16.0, 1.0).reshape({1, 1, 4, 4});
    EXPECT_EQ(max_pool2d(x, {2, 2}).to_vector<float>(), (std::vector<float>{5, 7, 13, 15}));
    EXPECT_EQ(max_pool2d(x, {3, 3}, {1, 1}, {1, 1}).shape(), (Shape{1, 1, 4, 4}));
    expect_error([&] { (void)max_pool2d(zeros({4, 4}), {2, 2}); }, {"max_pool2d", "[N, C, H, W]", "[4, 4]"});
    expect_error([&] { (void)conv2d(zeros({1, 2, 5, 5}), zeros({3, 4, 3, 3})); }, {"conv2d", "channels"});
    expect_error([&] { (void)conv2d(zeros({1, 1, 2, 2}), zeros({1, 1, 3, 3})); }, {"conv2d", "larger"});
}

// ---- an f64 central-difference gradient check for every differentiable op --------------------

struct GradCase {
    const char* name;
    std::vector<Shape> shapes;
    Fn fn;
    double shift = 0.0;  // keeps log/sqrt/div inputs away from their poles
};

// ctest shows a parameter through PrintTo: the case's name, not its bytes.
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class GradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradCheck, MatchesCentralDifferences) {
    const GradCase& c = GetParam();
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < c.shapes.size(); ++i) inputs.push_back(leaf(c.shapes[i], 100 + i, 1.0, c.shift));
    EXPECT_TRUE(gradcheck(c.fn, inputs));
}

INSTANTIATE_TEST_SUITE_P(
    Ops, GradCheck,
    ::testing::Values(
        GradCase{"add_broadcast", {{3, 4}, {4}}, [](auto& v) { return v[0] + v[1]; }},
        GradCase{"sub_broadcast", {{3, 1}, {1, 4}}, [](auto& v) { return v[0] - v[1]; }},
        GradCase{"mul_broadcast", {{2, 3, 4}, {3, 1}}, [](auto& v) { return v[0] * v[1]; }},
        GradCase{"div", {{3, 4}, {3, 4}}, [](auto& v) { return v[0] / v[1]; }, 3.0},
        GradCase{"maximum", {{3, 4}, {3, 4}}, [](auto& v) { return maximum(v[0], v[1]); }},
        GradCase{"minimum", {{3, 4}, {4}}, [](auto& v) { return minimum(v[0], v[1]); }},
        GradCase{"where", {{3, 4}, {3, 4}}, [](auto& v) { return where(gt(v[0], v[1]), v[0] * 2.0, v[1]); }},
        GradCase{"neg", {{5}}, [](auto& v) { return neg(v[0]); }},
        GradCase{"exp", {{5}}, [](auto& v) { return exp(v[0]); }},
        GradCase{"log", {{5}}, [](auto& v) { return log(v[0]); }, 3.0},
        GradCase{"sqrt", {{5}}, [](auto& v) { return sqrt(v[0]); }, 3.0},
        GradCase{"relu", {{7}}, [](auto& v) { return relu(v[0]); }},
        GradCase{"sigmoid", {{5}}, [](auto& v) { return sigmoid(v[0]); }},
        GradCase{"tanh", {{5}}, [](auto& v) { return tanh(v[0]); }},
        GradCase{"abs", {{5}}, [](auto& v) { return abs(v[0]); }},
        GradCase{"pow", {{5}}, [](auto& v) { return pow(v[0], 3.0); }},
        GradCase{"pow_fractional", {{5}}, [](auto& v) { return pow(v[0], 1.5); }, 3.0},
        GradCase{"clamp", {{9}}, [](auto& v) { return clamp(v[0], -0.5, 0.7); }},
        GradCase{"affine_and_scalar_ops", {{4}}, [](auto& v) { return (2.0 - v[0]) * 3.0 + 1.0 / (v[0] + 4.0); }},
        GradCase{"sum_all", {{3, 4}}, [](auto& v) { return sum(v[0]); }},
        GradCase{"sum_dims", {{2, 3, 4}}, [](auto& v) { return sum(v[0], {0, 2}); }},
        GradCase{"sum_keepdim", {{2, 3, 4}}, [](auto& v) { return sum(v[0], {1}, true); }},
        GradCase{"mean_dims", {{2, 3, 4}}, [](auto& v) { return mean(v[0], {-1}); }},
        GradCase{"mean_all", {{2, 3}}, [](auto& v) { return mean(v[0]); }},
        GradCase{"amax", {{3, 5}}, [](auto& v) { return amax(v[0], 1); }},
        GradCase{"amin_keepdim", {{3, 5}}, [](auto& v) { return amin(v[0], 0, true); }},
        GradCase{"softmax", {{3, 5}}, [](auto& v) { return softmax(v[0], 1); }},
        GradCase{"softmax_dim0", {{3, 2, 4}}, [](auto& v) { return softmax(v[0], 1); }},
        GradCase{"log_softmax", {{3, 5}}, [](auto& v) { return log_softmax(v[0], -1); }},
        GradCase{"gather", {{3, 5}}, [](auto& v) { return gather(v[0], 1, from_vector(std::vector<int64_t>{4, 0, 4, 1, 2, 2}, {3, 2})); }},
        GradCase{"index_select", {{4, 3}}, [](auto& v) { return index_select(v[0], 0, from_vector(std::vector<int64_t>{3, 0, 3})); }},
        GradCase{"cat", {{2, 3}, {4, 3}}, [](auto& v) { return cat({v[0], v[1]}, 0); }},
        GradCase{"stack", {{2, 3}, {2, 3}}, [](auto& v) { return stack({v[0], v[1]}, 2); }},
        GradCase{"mm", {{3, 4}, {4, 5}}, [](auto& v) { return mm(v[0], v[1]); }},
        GradCase{"mm_transposed_views", {{4, 3}, {5, 4}}, [](auto& v) { return mm(v[0].t(), v[1].t()); }},
        GradCase{"matmul_batched_broadcast", {{2, 1, 3, 4}, {3, 4, 2}}, [](auto& v) { return matmul(v[0], v[1]); }},
        GradCase{"matmul_vector", {{4}, {4, 3}}, [](auto& v) { return matmul(v[0], v[1]); }},
        GradCase{"linear", {{5, 3}, {4, 3}, {4}}, [](auto& v) { return linear(v[0], v[1], v[2]); }},
        GradCase{"linear_no_bias_3d", {{2, 5, 3}, {4, 3}}, [](auto& v) { return linear(v[0], v[1]); }},
        GradCase{"conv2d", {{2, 2, 5, 6}, {3, 2, 3, 3}, {3}},
                 [](auto& v) { return conv2d(v[0], v[1], v[2], {1, 1}, {1, 1}); }},
        GradCase{"conv2d_same_padding_two_groups", {{10, 2, 4, 5}, {2, 2, 3, 3}, {2}},
                 [](auto& v) { return conv2d(v[0], v[1], v[2], {1, 1}, {1, 1}); }},
        GradCase{"conv2d_relu", {{9, 2, 4, 5}, {3, 2, 3, 3}, {3}},
                 [](auto& v) { return conv2d_relu(v[0], v[1], v[2], {1, 1}, {1, 1}); }},
        GradCase{"conv2d_relu_max_pool2d", {{9, 2, 4, 6}, {3, 2, 3, 3}, {3}},
                 [](auto& v) { return conv2d_relu_max_pool2d(v[0], v[1], v[2], {1, 1}, {1, 1}, {2, 2}); }},
        GradCase{"conv2d_relu_max_pool2d_overlapping", {{2, 2, 5, 5}, {3, 2, 2, 2}},
                 [](auto& v) { return conv2d_relu_max_pool2d(v[0], v[1], Tensor(), {1, 1}, {0, 0}, {3, 3}, {2, 2}, {1, 1}); }},
        GradCase{"conv2d_strided", {{1, 2, 7, 7}, {2, 2, 3, 2}}, [](auto& v) { return conv2d(v[0], v[1], Tensor(), {2, 3}, {0, 1}); }},
        GradCase{"max_pool2d", {{2, 2, 4, 6}}, [](auto& v) { return max_pool2d(v[0], {2, 2}); }},
        GradCase{"max_pool2d_overlap_pad", {{1, 2, 5, 5}}, [](auto& v) { return max_pool2d(v[0], {3, 3}, {2, 2}, {1, 1}); }},
        GradCase{"views", {{2, 3, 4}}, [](auto& v) { return v[0].permute({2, 0, 1}).reshape({4, 6}).narrow(1, 1, 4).t(); }},
        GradCase{"expand", {{3, 1}}, [](auto& v) { return v[0].expand({2, 3, 4}) * 1.0; }},
        GradCase{"clone_contiguous", {{3, 4}}, [](auto& v) { return v[0].t().contiguous().clone() * 2.0; }}),
    [](const ::testing::TestParamInfo<GradCase>& info) { return std::string(info.param.name); });

TEST(Conversion, DtypeRoundTripPassesTheGradientThrough) {
    // Not a finite-difference case: the float32 rounding in the middle swamps a 1e-6 step.
    Tensor x = leaf({4}, 3);
    (x.to(DType::f32).to(DType::f64) * 2.0).sum().backward();
    EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(4, 2.0));
    EXPECT_EQ(x.grad().dtype(), DType::f64);
}

TEST(Dropout, ScalesKeptElementsAndIsSeeded) {
    manual_seed(3);
    Tensor x = ones({10000});
    Tensor y = dropout(x, 0.25, true);
    const auto v = y.to_vector<float>();
    int kept = 0;
    for (float f : v) {
        ASSERT_TRUE(f == 0.f || std::abs(f - 4.f / 3.f) < 1e-6);
        kept += f != 0.f;
    }
    EXPECT_NEAR(kept / 10000.0, 0.75, 0.02);
    EXPECT_EQ(dropout(x, 0.25, false).to_vector<float>(), x.to_vector<float>());
    manual_seed(3);
    EXPECT_EQ(dropout(x, 0.25, true).to_vector<float>(), v);
    Tensor w = leaf({50}, 9);
    manual_seed(4);
    Tensor out = dropout(w, 0.5, true);
    out.sum().backward();
    const auto gv = w.grad().to_vector<double>(), ov = out.to_vector<double>();
    for (size_t i = 0; i < gv.size(); ++i) EXPECT_EQ(gv[i] == 0.0, ov[i] == 0.0);
}

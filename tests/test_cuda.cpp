// The CUDA backend checked against the CPU: one table of op cases, each building its inputs from a
// seed on a given device and returning its outputs and gradients; every case runs on the CPU and
// on Device::cuda() and the two must agree (rtol 1e-5 unless a case says otherwise). Together the
// cases reach every TensorKernels and LossKernels entry and the fused optimizer updates. Without a
// CUDA device (or in a build without CUDA) each case is skipped with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "lsgrad/lsgrad.h"
#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/optim/optim_kernels.h"
#include "test_util.h"

namespace lsg {
namespace {

using Outputs = std::vector<Tensor>;

struct CudaCase {
    std::string name;
    std::function<Outputs(Device)> run;
    double rtol = 1e-5;
    double atol = 1e-6;
};

void PrintTo(const CudaCase& c, std::ostream* os) { *os << c.name; }

// ---- inputs -----------------------------------------------------------------------------------------

// Seeded normal values × scale + shift, made on the CPU (so both devices see the same numbers), then
// moved to `device` as a leaf (requiring grad when asked).
Tensor input(Device device, const Shape& shape, uint64_t seed, bool grad = true, DType dtype = DType::f32,
             double scale = 1.0, double shift = 0.0) {
    Generator gen(seed);
    Tensor t = affine(randn(shape, {.dtype = DType::f64}, gen), scale, shift).to(dtype).to(device).detach();
    if (grad) t.requires_grad_();
    return t;
}

// Seeded uniform values in [0.5, 1.5) on `device`: class weights, pos_weight.
Tensor positive(Device device, const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
    Generator gen(seed);
    return affine(rand(shape, {.dtype = dtype}, gen), 1.0, 0.5).to(device);
}

Tensor ints(Device device, const std::vector<int64_t>& v) { return from_vector<int64_t>(v).to(device); }

// Class indices i·7919 mod K, with the positions in `ignored` set to `ignore`.
Tensor targets(Device device, int64_t N, int64_t K, const std::vector<int64_t>& ignored = {}, int64_t ignore = -100) {
    std::vector<int64_t> y(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) y[static_cast<size_t>(i)] = (i * 7919 + 3) % K;
    for (int64_t i : ignored) y[static_cast<size_t>(i)] = ignore;
    return ints(device, y);
}

// Σ out ⊙ v with a fixed non-constant v, so backward sees an upstream gradient that is not 1.
Tensor weighted_sum(const Tensor& out) {
    Tensor v = affine(arange(out.numel(), {.dtype = out.dtype(), .device = out.device()}), 0.37, 0.5);
    return sum(out * v.reshape(out.shape()));
}

// The outputs, then the gradient of every leaf after backward of weighted_sum(outputs[0]).
Outputs with_grads(const Tensor& out, const std::vector<Tensor>& leaves) {
    weighted_sum(out).backward();
    Outputs r{out.detach()};
    for (const Tensor& l : leaves) r.push_back(l.grad());
    return r;
}

// ---- the table -----------------------------------------------------------------------------------------

std::vector<CudaCase> tensor_cases() {
    std::vector<CudaCase> c;
    c.push_back({"copy_strided_and_dtypes", [](Device d) {
                     Tensor x = input(d, {3, 4, 5}, 1, false);
                     Tensor p = x.permute({2, 0, 1}).contiguous();
                     Tensor b = x.slice(2, 0, 5, 2).contiguous();
                     Tensor e = x.narrow(1, 1, 1).expand({3, 6, 5}).contiguous();
                     Tensor i = (x * 10.0).to(DType::i64);
                     return Outputs{p, b, e, x.to(DType::f64), i, i.to(DType::f32), i.to(DType::f64).to(DType::f32)};
                 }});
    c.push_back({"fill_and_fill_strided", [](Device d) {
                     Tensor f = full({3, 5}, 2.5, {.device = d});
                     Tensor z = zeros({4}, {.dtype = DType::i64, .device = d});
                     Tensor x = input(d, {4, 6}, 2, false);
                     x.slice(1, 0, 6, 2).fill_(-1.0);
                     return Outputs{f, z, x, ones({2, 2}, {.dtype = DType::f64, .device = d})};
                 }});
    struct U {
        const char* name;
        std::function<Tensor(const Tensor&)> f;
        double shift;
    };
    const std::vector<U> unary = {
        {"neg", [](const Tensor& x) { return neg(x); }, 0.0},
        {"exp", [](const Tensor& x) { return exp(x); }, 0.0},
        {"log", [](const Tensor& x) { return log(x); }, 4.0},
        {"sqrt", [](const Tensor& x) { return sqrt(x); }, 4.0},
        {"relu", [](const Tensor& x) { return relu(x); }, 0.0},
        {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, 0.0},
        {"tanh", [](const Tensor& x) { return tanh(x); }, 0.0},
        {"abs", [](const Tensor& x) { return abs(x); }, 0.0},
        {"affine", [](const Tensor& x) { return affine(x, -1.5, 0.25); }, 0.0},
        {"pow", [](const Tensor& x) { return pow(x, 2.5); }, 4.0},
        {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, 0.0},
    };
    for (const U& u : unary)
        for (DType dt : {DType::f32, DType::f64})
            c.push_back({std::string("unary_") + u.name + (dt == DType::f64 ? "_f64" : "_f32"), [u, dt](Device d) {
                             Tensor x = input(d, {7, 33}, 3, true, dt, 1.0, u.shift);
                             return with_grads(u.f(x), {x});
                         }});
    c.push_back({"binary_broadcast_arith", [](Device d) {
                     Tensor a = input(d, {3, 1, 5}, 4), b = input(d, {4, 5}, 5, true, DType::f32, 1.0, 3.0);
                     Tensor out = cat({a + b, a - b, a * b, a / b}, 0);
                     return with_grads(out, {a, b});
                 }});
    c.push_back({"binary_extrema_and_compare", [](Device d) {
                     Tensor a = input(d, {6, 7}, 6);
                     // Equal to a wherever |a| <= 0.3: ties split the gradient.
                     Tensor b = clamp(a.detach(), -0.3, 0.3).detach();
                     b.requires_grad_();
                     Tensor m = maximum(a, b) + minimum(a, b.t().t());
                     Outputs r = with_grads(m, {a, b});
                     for (const Tensor& t : {eq(a, b), ne(a, b), lt(a, b), le(a, b), gt(a, b), ge(a, b)}) r.push_back(t);
                     return r;
                 }});
    c.push_back({"binary_int64", [](Device d) {
                     Tensor a = ints(d, {1, -2, 3, 40, 5, 6}), b = ints(d, {7, 2, -3, 4, 5, 1});
                     return Outputs{a + b, a * b, a - b, div(a, b), maximum(a, b), eq(a, b)};
                 }});
    c.push_back({"where_broadcast", [](Device d) {
                     Tensor a = input(d, {4, 5}, 7), b = input(d, {5}, 8);
                     Tensor cond = gt(input(d, {4, 1}, 9, false), zeros({}, {.device = d}));
                     return with_grads(where(cond, a, b), {a, b});
                 }});
    c.push_back({"reduce_sum_mean", [](Device d) {
                     Tensor x = input(d, {5, 6, 7}, 10);
                     Tensor out = cat({sum(x, {1}).reshape({-1}), sum(x, {0, 2}).reshape({-1}), mean(x, {2}).reshape({-1}),
                                       sum(x).reshape({1}), mean(x).reshape({1})});
                     return with_grads(out, {x});
                 }});
    c.push_back({"reduce_long_rows_f64", [](Device d) {
                     Tensor x = input(d, {3, 5000}, 11, true, DType::f64);
                     return with_grads(sum(x, {1}), {x});
                 }});
    c.push_back({"reduce_extrema_with_ties", [](Device d) {
                     Tensor x = (input(d, {4, 9, 3}, 12, false) * 2.0).to(DType::i64).to(DType::f32).detach();
                     x.requires_grad_();
                     Tensor out = cat({amax(x, 1).reshape({-1}), amin(x, 2).reshape({-1})});
                     Outputs r = with_grads(out, {x});
                     r.push_back(argmax(x, 1));
                     r.push_back(argmin(x, 0));
                     r.push_back(amax(x.detach()).reshape({1}));
                     return r;
                 }});
    c.push_back({"reduce_int64", [](Device d) {
                     Tensor x = ints(d, {3, -1, 4, 1, -5, 9, 2, 6});
                     return Outputs{sum(x), argmax(x.reshape({2, 4}), 1), amax(x.reshape({2, 4}), 0)};
                 }});
    c.push_back({"softmax_last_dim", [](Device d) {
                     Tensor x = input(d, {9, 10}, 13, true, DType::f32, 3.0);
                     Tensor y = input(d, {9, 10}, 14, true, DType::f32, 3.0);
                     return with_grads(cat({softmax(x, 1), log_softmax(y, 1)}), {x, y});
                 }});
    c.push_back({"softmax_middle_dim_and_long_rows", [](Device d) {
                     Tensor x = input(d, {2, 7, 3}, 15);
                     Tensor y = input(d, {2, 3000}, 16, true, DType::f64, 4.0);
                     Tensor out = cat({log_softmax(x, 1).reshape({-1}), softmax(y, 1).to(DType::f32).reshape({-1})});
                     return with_grads(out, {x, y});
                 }});
    c.push_back({"softmax_masked_rows", [](Device d) {
                     const float ninf = -std::numeric_limits<float>::infinity();
                     Tensor x = from_vector<float>({ninf, ninf, ninf, 1, ninf, 2}, {2, 3}).to(d);
                     return Outputs{softmax(x, 1), log_softmax(x, 1)};
                 }});
    c.push_back({"gather_and_scatter_add", [](Device d) {
                     Tensor x = input(d, {4, 6}, 17);
                     Tensor idx = ints(d, {0, 5, 5, 1, 2, 2, 3, 3, 4, 0, 0, 0}).reshape({4, 3});
                     return with_grads(gather(x, 1, idx), {x});
                 }});
    c.push_back({"index_select_and_index_add", [](Device d) {
                     Tensor x = input(d, {5, 3, 4}, 18);
                     Tensor idx = ints(d, {4, 0, 4, 2, 4});
                     return with_grads(cat({index_select(x, 0, idx).reshape({-1}), index_select(x, 2, ints(d, {3, 3, 1})).reshape({-1})}),
                                       {x});
                 }});
    c.push_back({"one_hot", [](Device d) { return Outputs{one_hot(ints(d, {2, 0, 2, 1}), 4), one_hot(ints(d, {1}), 3, DType::f64)}; }});
    c.push_back({"matmul_2d_transposed", [](Device d) {
                     Tensor a = input(d, {7, 5}, 19), b = input(d, {6, 5}, 20), w = input(d, {5, 3}, 21);
                     Tensor out = cat({mm(a, b.t()).reshape({-1}), mm(a.t().t(), w).reshape({-1}), mm(w.t(), a.t()).reshape({-1})});
                     return with_grads(out, {a, b, w});
                 }});
    c.push_back({"matmul_batched_and_broadcast", [](Device d) {
                     Tensor a = input(d, {3, 4, 5}, 22, true, DType::f64), b = input(d, {3, 5, 2}, 23, true, DType::f64);
                     Tensor w = input(d, {5, 6}, 24, true, DType::f64);
                     Tensor out = cat({bmm(a, b).reshape({-1}), matmul(a, w).reshape({-1})});
                     return with_grads(out, {a, b, w});
                 }});
    c.push_back({"linear_with_bias", [](Device d) {
                     Tensor x = input(d, {8, 20}, 25), w = input(d, {10, 20}, 26, true, DType::f32, 0.2), b = input(d, {10}, 27);
                     return with_grads(linear(x, w, b), {x, w, b});
                 }});
    c.push_back({"conv2d_stride_padding", [](Device d) {
                     Tensor x = input(d, {2, 3, 9, 8}, 28), w = input(d, {4, 3, 3, 2}, 29, true, DType::f32, 0.3);
                     Tensor b = input(d, {4}, 30);
                     return with_grads(conv2d(x, w, b, {2, 1}, {1, 1}), {x, w, b});
                 }});
    c.push_back({"conv2d_relu", [](Device d) {
                     Tensor x = input(d, {9, 3, 7, 6}, 33), w = input(d, {4, 3, 3, 3}, 34, true, DType::f32, 0.3);
                     Tensor b = input(d, {4}, 35);
                     return with_grads(conv2d_relu(x, w, b, {1, 1}, {1, 1}), {x, w, b});
                 }});
    c.push_back({"conv2d_relu_max_pool2d", [](Device d) {
                     Tensor x = input(d, {9, 3, 8, 6}, 36), w = input(d, {4, 3, 3, 3}, 37, true, DType::f32, 0.3);
                     Tensor b = input(d, {4}, 38);
                     return with_grads(conv2d_relu_max_pool2d(x, w, b, {1, 1}, {1, 1}, {2, 2}), {x, w, b});
                 }});
    c.push_back({"max_pool2d_overlapping", [](Device d) {
                     Tensor x = input(d, {2, 3, 9, 7}, 31);
                     return with_grads(max_pool2d(x, {3, 3}, {2, 2}, {1, 1}), {x});
                 }});
    c.push_back({"dropout_same_mask", [](Device d) {
                     manual_seed(77);
                     Tensor x = input(d, {6, 50}, 32);
                     return with_grads(dropout(x, 0.3, true), {x});
                 }});
    c.push_back({"random_uniform_normal", [](Device d) {
                     Generator g(5);
                     Tensor u = rand({1000}, {.device = d}, g);
                     Tensor n = randn({1001}, {.dtype = DType::f64, .device = d}, g);
                     return Outputs{u, n};
                 },
                 1e-5, 1e-5});
    return c;
}

// Logits [N, K] and their options for a cross-entropy case.
struct CeSpec {
    const char* name;
    int64_t N, K;
    CrossEntropyOptions o;
    std::vector<int64_t> ignored;  // rows whose target is o.ignore_index
    bool weighted = false;
    DType dtype = DType::f32;
    double shift = 0.0;
};

std::vector<CudaCase> loss_cases() {
    std::vector<CudaCase> c;
    std::vector<CeSpec> ce;
    ce.push_back({"K10_eps0", 37, 10, {}, {}});
    ce.push_back({"K10_eps01", 37, 10, {.label_smoothing = 0.1}, {}});
    ce.push_back({"K10_sum_weighted", 37, 10, {.label_smoothing = 0.1, .reduction = Reduction::Sum}, {}, true});
    ce.push_back({"K10_none_ignore", 37, 10, {.reduction = Reduction::None}, {0, 5, 36}});
    ce.push_back({"K10_ignore_inside_range", 20, 10, {.label_smoothing = 0.2, .ignore_index = 3}, {1, 2}});
    ce.push_back({"K10_all_ignored", 4, 10, {}, {0, 1, 2, 3}});
    ce.push_back({"K7_offtarget_padding", 25, 7,
                  {.label_smoothing = 0.3, .smoothing = Smoothing::OffTarget, .padding_idx = 0}, {}, true});
    ce.push_back({"K3_offtarget", 9, 3, {.label_smoothing = 0.1, .smoothing = Smoothing::OffTarget}, {}});
    ce.push_back({"K1000_f64_shift", 11, 1000, {.label_smoothing = 0.1}, {4}, false, DType::f64, 1e4});
    ce.push_back({"K1500_block_path", 5, 1500, {.label_smoothing = 0.1}, {}, true});
    ce.push_back({"K32000_eps0", 3, 32000, {}, {}});
    ce.push_back({"K32000_eps01_none", 3, 32000, {.label_smoothing = 0.1, .reduction = Reduction::None}, {}});
    ce.push_back({"K50257_odd_rows", 4, 50257, {.label_smoothing = 0.1}, {2}});
    for (const CeSpec& s : ce)
        c.push_back({std::string("cross_entropy_") + s.name, [s](Device d) {
                         Tensor x = input(d, {s.N, s.K}, 40 + static_cast<uint64_t>(s.K), true, s.dtype, 2.0, s.shift);
                         CrossEntropyOptions o = s.o;
                         if (s.weighted) o.weight = positive(d, {s.K}, 3, s.dtype);
                         return with_grads(cross_entropy(x, targets(d, s.N, s.K, s.ignored, o.ignore_index), o), {x});
                     },
                     s.dtype == DType::f64 ? 1e-9 : 2e-5, 1e-6});
    c.push_back({"cross_entropy_masked_logits", [](Device d) {
                     const float ninf = -std::numeric_limits<float>::infinity();
                     Tensor x = from_vector<float>({1, ninf, 2, 0, 3, ninf, ninf, 4, 0.5f, 0.25f, ninf, 1}, {3, 4}).to(d).detach();
                     x.requires_grad_();
                     Tensor loss = cross_entropy(x, ints(d, {0, 1, 3}), {.reduction = Reduction::None});
                     return with_grads(loss, {x});
                 }});
    c.push_back({"cross_entropy_upstream_scale", [](Device d) {
                     Tensor x = input(d, {16, 10}, 50);
                     Tensor loss = cross_entropy(x, targets(d, 16, 10)) * 3.0;
                     loss.backward();
                     return Outputs{loss.detach(), x.grad()};
                 }});
    for (int64_t K : {10, 2000})
        c.push_back({"cross_entropy_prob_K" + std::to_string(K), [K](Device d) {
                         Tensor x = input(d, {6, K}, 51);
                         Tensor t = softmax(input(d, {6, K}, 52, false), 1).detach();
                         t.requires_grad_();
                         CrossEntropyOptions o{.label_smoothing = 0.1};
                         o.weight = positive(d, {K}, 4);
                         return with_grads(cross_entropy(x, t, o), {x, t});
                     }});
    c.push_back({"soft_target_cross_entropy_none", [](Device d) {
                     Tensor x = input(d, {5, 12}, 53);
                     Tensor t = softmax(input(d, {5, 12}, 54, false), 1).detach();
                     return with_grads(soft_target_cross_entropy(x, t, Reduction::None), {x});
                 }});
    for (Reduction r : {Reduction::BatchMean, Reduction::Sum, Reduction::Mean, Reduction::None})
        for (bool log_target : {false, true})
            c.push_back({"kl_div_" + std::to_string(static_cast<int>(r)) + (log_target ? "_log_target" : ""), [r, log_target](Device d) {
                             Tensor in = log_softmax(input(d, {4, 9}, 55, false), 1).detach();
                             in.requires_grad_();
                             Tensor t = softmax(input(d, {4, 9}, 56, false), 1).detach();
                             if (log_target) t = log(t).detach();
                             t.requires_grad_();
                             Tensor loss = kl_div(in, t, r, log_target);
                             return with_grads(r == Reduction::None ? loss : loss.reshape({1}), {in, t});
                         }});
    c.push_back({"bce_with_logits", [](Device d) {
                     Tensor x = input(d, {6, 5}, 57, true, DType::f32, 4.0);
                     Tensor t = sigmoid(input(d, {6, 5}, 58, false)).detach();
                     t.requires_grad_();
                     BCEWithLogitsOptions o{.label_smoothing = 0.1};
                     o.pos_weight = positive(d, {5}, 6);
                     o.weight = positive(d, {6, 1}, 7);
                     return with_grads(binary_cross_entropy_with_logits(x, t, o).reshape({1}), {x, t});
                 }});
    c.push_back({"bce_with_logits_none_f64", [](Device d) {
                     Tensor x = input(d, {3, 7}, 59, true, DType::f64, 30.0);
                     Tensor t = ge(input(d, {3, 7}, 60, false, DType::f64), zeros({}, {.dtype = DType::f64, .device = d}))
                                    .to(DType::f64);
                     return with_grads(binary_cross_entropy_with_logits(x, t, {.reduction = Reduction::None}), {x});
                 },
                 1e-9, 1e-12});
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
        c.push_back({"nll_loss_" + std::to_string(static_cast<int>(r)), [r](Device d) {
                         Tensor lp = log_softmax(input(d, {12, 8}, 61, false), 1).detach();
                         lp.requires_grad_();
                         NLLLossOptions o{.ignore_index = 5, .reduction = r};
                         o.weight = positive(d, {8}, 8);
                         Tensor loss = nll_loss(lp, targets(d, 12, 8), o);
                         return with_grads(r == Reduction::None ? loss : loss.reshape({1}), {lp});
                     }});
    c.push_back({"distillation_loss", [](Device d) {
                     Tensor s = input(d, {8, 10}, 62), t = input(d, {8, 10}, 63, false);
                     Tensor loss = distillation_loss(s, t, targets(d, 8, 10), {.temperature = 2.0, .alpha = 0.7, .label_smoothing = 0.1});
                     return with_grads(loss.reshape({1}), {s});
                 }});
    return c;
}

std::vector<CudaCase> optim_cases() {
    std::vector<CudaCase> c;
    // Two steps from the same parameters and gradients: the fused update kernels and their state.
    auto steps = [](Device d, bool adam) {
        Tensor w = input(d, {40, 3}, 70, true, DType::f32);
        Tensor b = input(d, {7}, 71, true, DType::f64);
        std::unique_ptr<optim::Optimizer> opt;
        if (adam) opt = std::make_unique<optim::AdamW>(std::vector<Tensor>{w, b}, optim::AdamWOptions{.lr = 0.01});
        else opt = std::make_unique<optim::SGD>(std::vector<Tensor>{w, b},
                                                optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
        for (int i = 0; i < 2; ++i) {
            opt->zero_grad();
            (weighted_sum(w * w) + weighted_sum(exp(b)).to(DType::f32)).backward();
            opt->step();
        }
        return Outputs{w.detach(), b.detach()};
    };
    c.push_back({"optim_sgd_nesterov", [steps](Device d) { return steps(d, false); }});
    c.push_back({"optim_adamw", [steps](Device d) { return steps(d, true); }});
    return c;
}

std::vector<CudaCase> all_cases() {
    std::vector<CudaCase> c = tensor_cases();
    for (auto* more : {&loss_cases, &optim_cases})
        for (CudaCase& k : (*more)()) c.push_back(std::move(k));
    return c;
}

#define LSG_SKIP_WITHOUT_CUDA() \
    if (!cuda_is_available()) GTEST_SKIP() << cuda_unavailable_reason()

class CudaVsCpu : public ::testing::TestWithParam<CudaCase> {};

TEST_P(CudaVsCpu, SameResult) {
    LSG_SKIP_WITHOUT_CUDA();
    const CudaCase& c = GetParam();
    const Outputs ref = c.run(Device::cpu());
    const Outputs got = c.run(Device::cuda());
    ASSERT_EQ(ref.size(), got.size());
    for (size_t i = 0; i < ref.size(); ++i) {
        SCOPED_TRACE("output " + std::to_string(i));
        ASSERT_TRUE(got[i].defined());
        EXPECT_TRUE(got[i].device().is_cuda());
        ASSERT_EQ(ref[i].shape(), got[i].shape());
        ASSERT_EQ(ref[i].dtype(), got[i].dtype());
        const Tensor g = got[i].to(Device::cpu());
        EXPECT_TRUE(allclose(g, ref[i], c.rtol, c.atol, true)) << "cuda:\n" << g << "\ncpu:\n" << ref[i];
    }
}

// The table itself runs everywhere, so a broken case shows up without a GPU too.
TEST_P(CudaVsCpu, CaseRunsOnCpu) {
    const Outputs ref = GetParam().run(Device::cpu());
    ASSERT_FALSE(ref.empty());
    for (const Tensor& t : ref) {
        ASSERT_TRUE(t.defined());
        EXPECT_TRUE(t.device().is_cpu());
    }
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaVsCpu, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<CudaCase>& info) { return info.param.name; });

// ---- what holds without a device ------------------------------------------------------------------------

TEST(CudaBackend, AvailabilityAnswersWithoutThrowing) {
    bool available = true;
    EXPECT_NO_THROW(available = cuda_is_available());
    EXPECT_EQ(available, cuda_device_count() > 0);
    if (available) return;
    const std::string reason = cuda_unavailable_reason();
#ifdef LSGRAD_WITH_CUDA
    EXPECT_EQ(reason.rfind("no CUDA device: cudaGetDeviceCount", 0), 0u) << reason;
#else
    EXPECT_NE(reason.find("built without CUDA"), std::string::npos) << reason;
#endif
}

// The registry: the CPU backend has every table registered (from ops/ and optim/), a missing
// table is an error naming it, and a dtype a kernel was not instantiated for is refused by name.
TEST(Backend, CpuRegistersEveryTableAndAMissingOneIsNamed) {
    const Backend& cpu = backend(Device::cpu());
    EXPECT_NE(cpu.runtime, nullptr);
    EXPECT_NE(cpu.tensor, nullptr);
    EXPECT_NE(cpu.loss, nullptr);
    EXPECT_NE(cpu.optimizer, nullptr);
    EXPECT_EQ(&loss_kernels(Device::cpu()), &cpu_loss_kernels());

    Backend& slot = detail::backend_slot(DeviceType::cpu);
    LossKernels* const saved = slot.loss;
    slot.loss = nullptr;
    const Tensor x = ones({2, 3}), y = from_vector(std::vector<int64_t>{0, 2});
    testing::expect_error([&] { (void)cross_entropy(x, y); }, {"the backend of cpu has no loss kernels"});
    slot.loss = saved;
    EXPECT_NEAR(cross_entropy(x, y).item<double>(), std::log(3.0), 1e-6);

    testing::expect_error([] { visit_dtype<float, double>(DType::i64, []<class T>() {}); },
                          {"visit_dtype", "float32, float64", "int64"});
    EXPECT_EQ(visit_dtype(DType::i64, []<class T>() { return sizeof(T); }), 8u);
    const DType f64 = visit_dtype<float, double>(DType::f64, []<class T>() { return dtype_of<T>(); });
    EXPECT_EQ(f64, DType::f64);
}

TEST(CudaBackend, StreamsWithoutDevice) {
    // The CPU has one stream: new_stream gives it, and a guard changes nothing.
    const Stream cpu = new_stream(Device::cpu());
    EXPECT_EQ(cpu.handle, nullptr);
    {
        StreamGuard guard(cpu);
        EXPECT_EQ(current_stream(Device::cpu()), cpu);
        EXPECT_NO_THROW(synchronize(Device::cpu()));
    }
    if (cuda_is_available()) return;
#ifndef LSGRAD_WITH_CUDA
    // One error, from the registry, for every use of a backend this build lacks.
    testing::expect_error([&] { (void)new_stream(Device::cuda()); }, {"cuda:0", "built without CUDA"});
    testing::expect_error([&] { synchronize(Device::cuda(1)); }, {"cuda:1", "built without CUDA"});
    testing::expect_error([&] { (void)loss_kernels(Device::cuda()); }, {"built without CUDA"});
    testing::expect_error([&] { (void)optimizer_kernels(Device::cuda()); }, {"built without CUDA"});
#endif
}

TEST(CudaBackend, MovingToCudaWithoutDeviceThrowsTheReason) {
    if (cuda_is_available()) GTEST_SKIP() << "a CUDA device answers";
    Tensor x = ones({2, 3});
    testing::expect_error([&] { (void)x.to(Device::cuda()); }, {"cuda:0", cuda_unavailable_reason()});
    testing::expect_error([&] { (void)zeros({2}, {.device = Device::cuda()}); }, {cuda_unavailable_reason()});
}

// ---- what needs a device ----------------------------------------------------------------------------

TEST(CudaLoss, OutOfRangeTargetIsRaisedAtTheNextSynchronisingCall) {
    LSG_SKIP_WITHOUT_CUDA();
    const Device d = Device::cuda();
    Tensor x = input(d, {4, 10}, 80);
    // The op does not wait for the device: it returns, and the first synchronising call (item(), a
    // copy to the host, synchronize) raises the CPU check's message.
    Tensor loss;
    ASSERT_NO_THROW(loss = cross_entropy(x, ints(d, {1, 2, 12, 3})));
    testing::expect_error([&] { (void)loss.item<double>(); }, {"cross_entropy", "target 12 of row 2", "[0, 10)"});
    Tensor nll;
    ASSERT_NO_THROW(nll = nll_loss(log_softmax(x, 1), ints(d, {0, 10, 1, 1})));
    testing::expect_error([&] { synchronize(d); }, {"nll_loss", "target 10 of row 1"});
    testing::expect_error(
        [&] {
            (void)cross_entropy(x, ints(d, {-3, 1, 1, 1}), {.reduction = Reduction::None}).to(Device::cpu());
        },
        {"target -3 of row 0"});

    // The kernel's own check, reached without the op's validation: recorded on the device, raised at
    // the next synchronisation, once; the device stays usable.
    Tensor y = ints(d, {1, -7, 12, 3});
    Tensor rows = empty({4}, {.device = d}), total = empty({}, {.device = d});
    CrossEntropyIndexArgs a;
    a.rows = 4;
    a.classes = 10;
    a.logits = x.raw_data();
    a.target = y.data<int64_t>();
    a.row_loss = rows.raw_data();
    a.reduction = Reduction::Mean;
    a.reduced = total.raw_data();
    ASSERT_NO_THROW(loss_kernels(d).cross_entropy_index(kernel_context(d), a));
    testing::expect_error([&] { synchronize(d); }, {"target -7 of row 1", "[0, 10)"});
    EXPECT_NO_THROW(synchronize(d));
    EXPECT_NEAR(sum(x).item<double>(), sum(x.to(Device::cpu())).item<double>(), 1e-4);
}

// Two streams of one device: each runs its own kernels in issue order (a chain of ops, each
// reading the last one's output, gives the CPU's result), an op issued under a StreamGuard runs on
// that stream, and work on the second stream that uses the first's result is right once the first
// is synchronised.
TEST(CudaStreams, TwoStreamsOfOneDeviceKeepTheirOrder) {
    LSG_SKIP_WITHOUT_CUDA();
    const Device d = Device::cuda();
    const Stream s1 = new_stream(d), s2 = new_stream(d);
    ASSERT_NE(s1.handle, nullptr);
    ASSERT_NE(s1.handle, s2.handle);
    const Tensor x = input(d, {512, 1024}, 3);
    synchronize(d);
    auto chain = [](Tensor t, int steps, double scale) {
        for (int i = 0; i < steps; ++i) t = t * scale + 0.25;
        return t;
    };
    Tensor a, b;
    {
        StreamGuard guard(s1);
        EXPECT_EQ(current_stream(d), s1);
        a = chain(x, 32, 0.5);
        {
            StreamGuard inner(s2);
            EXPECT_EQ(current_stream(d), s2);
            b = chain(x, 32, 0.75);
            synchronize(d);  // s2
        }
        EXPECT_EQ(current_stream(d), s1);
        synchronize(d);  // s1
    }
    EXPECT_EQ(current_stream(d).handle, nullptr);
    const Tensor xc = x.to(Device::cpu());
    EXPECT_TRUE(allclose(a.to(Device::cpu()), chain(xc, 32, 0.5), 1e-5, 1e-6, true));
    EXPECT_TRUE(allclose(b.to(Device::cpu()), chain(xc, 32, 0.75), 1e-5, 1e-6, true));
    Tensor c;
    {
        StreamGuard guard(s2);
        c = a + b;  // a and b are complete: both streams were synchronised above
        synchronize(d);
    }
    EXPECT_TRUE(allclose(c.to(Device::cpu()), chain(xc, 32, 0.5) + chain(xc, 32, 0.75), 1e-5, 1e-6, true));
}

// The op hands CUDA targets to the kernels unchecked (no copy to the host); the kernels' report is
// the CPU check's message, word for word: the first bad row, its value, K and ignore_index.
TEST(CudaLoss, OutOfRangeTargetMessageIsTheCpuMessage) {
    LSG_SKIP_WITHOUT_CUDA();
    auto message = [](const std::function<void()>& fn) {
        try {
            fn();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::vector<std::vector<int64_t>> bad = {{1, 2, 12, 3}, {-100, -7, 11, 0}, {0, 1, 2, 10}};
    for (const auto& y : bad) {
        std::vector<std::string> seen;
        for (Device d : {Device::cpu(), Device::cuda()}) {
            Tensor x = input(d, {4, 10}, 83);
            Tensor w = input(d, {10}, 84, false);
            seen.push_back(message([&] { (void)cross_entropy(x, ints(d, y), {.label_smoothing = 0.1}); }));
            seen.push_back(message([&] { (void)cross_entropy(x, ints(d, y), {.ignore_index = 11, .weight = w}); }));
            seen.push_back(message([&] { (void)nll_loss(log_softmax(x, 1), ints(d, y)); }));
        }
        for (size_t i = 0; i < 3; ++i) {
            EXPECT_NE(seen[i].find("is out of range"), std::string::npos) << seen[i];
            EXPECT_EQ(seen[i + 3], seen[i]);
        }
    }
}

TEST(CudaLoss, ReductionIsTheSameBitsOnEveryRun) {
    LSG_SKIP_WITHOUT_CUDA();
    const Device d = Device::cuda();
    Tensor x = input(d, {4096, 1000}, 81);
    Tensor y = targets(d, 4096, 1000);
    auto run = [&] {
        x.zero_grad();
        Tensor loss = cross_entropy(x, y, {.label_smoothing = 0.1});
        loss.backward();
        return std::make_pair(loss.item<float>(), x.grad().to_vector<float>());
    };
    const auto first = run();
    for (int i = 0; i < 3; ++i) {
        const auto again = run();
        EXPECT_EQ(again.first, first.first);
        EXPECT_TRUE(again.second == first.second);
    }
}

TEST(CudaTensor, RoundTripKeepsValuesAndCachesMemory) {
    LSG_SKIP_WITHOUT_CUDA();
    Tensor x = input(Device::cpu(), {33, 17}, 82, false);
    const Tensor back = x.to(Device::cuda()).to(Device::cpu());
    EXPECT_EQ(back.to_vector<float>(), x.to_vector<float>());
    Allocator& a = cuda_allocator(0);
    a.empty_cache();
    { Tensor t = empty({1000}, {.device = Device::cuda()}); }
    EXPECT_GT(a.cached_bytes(), 0u);
    a.empty_cache();
    EXPECT_EQ(a.cached_bytes(), 0u);
}

}  // namespace
}  // namespace lsg

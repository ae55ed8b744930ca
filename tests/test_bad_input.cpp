// Hostile input across every public function family: each case must raise lsg::Error whose message
// names the function ("lsg::<name>") and the bad value. Table-driven: one row per case, each run in
// isolation; a crash, a hang, a silent result or a message missing a fragment fails the row.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace lsg {
namespace {

namespace fs = std::filesystem;
using nn::Module;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct BadCase {
    const char* name;
    std::function<void()> run;
    std::vector<std::string> fragments;  // "lsg::<function>" and the bad value, at least
};

std::ostream& operator<<(std::ostream& os, const BadCase& c) { return os << c.name; }

// A scratch folder for the file cases, one per process.
const fs::path& scratch() {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() / ("lsgrad_bad_input_" + std::to_string(::getpid()));
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

// Writes `bytes` to a scratch file and returns its path.
std::string file_with(const std::string& name, const std::string& bytes) {
    const fs::path p = scratch() / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
}

// A safetensors file: the 8-byte little-endian length, the header, then `data`.
std::string safetensors_with(const std::string& name, const std::string& header, const std::string& data = "") {
    std::string bytes(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
    return file_with(name, bytes + header + data);
}

// An IDX file: magic 00 00 08 <ndims>, big-endian u32 dims, then `data`.
std::string idx_with(const std::string& name, const std::vector<uint32_t>& dims, const std::string& data,
                     uint8_t type = 0x08) {
    std::string bytes{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
    for (uint32_t d : dims)
        for (int s = 24; s >= 0; s -= 8) bytes += static_cast<char>((d >> s) & 0xFF);
    return file_with(name, bytes + data);
}

// A FIFO: opening it for reading would block until a writer appears.
std::string fifo(const std::string& name) {
    const fs::path p = scratch() / name;
    fs::remove(p);
    EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0);
    return p.string();
}

Tensor f32(const Shape& s) { return zeros(s); }
Tensor i64(std::vector<int64_t> v) { return from_vector(v); }
Tensor grad_leaf(const Shape& s) { return ones(s, {.requires_grad = true}); }

// A one-parameter optimizer target.
std::vector<Tensor> one_param() { return {grad_leaf({2})}; }

data::IdxArray idx_array(Shape shape, size_t bytes) {
    data::IdxArray a;
    a.shape = std::move(shape);
    a.data.assign(bytes, 0);
    return a;
}

const std::vector<BadCase>& cases() {
    static const std::vector<BadCase> table = {
        // ---- tensor factories -------------------------------------------------------------------
        {"zeros_numel_overflow", [] { zeros({(int64_t{1} << 62) + 1, 4}); }, {"lsg::empty", "[4611686018427387905, 4]"}},
        {"empty_negative", [] { empty({2, -1}); }, {"lsg::empty", "-1"}},
        {"empty_product_overflow", [] { empty({int64_t{1} << 31, int64_t{1} << 31, 4}); }, {"lsg::empty", "[2147483648, 2147483648, 4]"}},
        {"empty_bytes_overflow", [] { empty({int64_t{1} << 61}, {.dtype = DType::f64}); }, {"lsg::empty", "2305843009213693952"}},
        {"empty_zero_and_overflow", [] { empty({0, kMax, kMax}); }, {"lsg::empty", "9223372036854775807"}},
        {"ones_negative", [] { ones({-5}); }, {"lsg::empty", "-5"}},
        {"full_overflow", [] { full({kMax, 2}, 1.0); }, {"lsg::empty", "9223372036854775807"}},
        {"from_vector_count", [] { from_vector(std::vector<float>{1, 2, 3}, {2, 2}); }, {"lsg::from_vector", "[2, 2]", "3"}},
        {"from_vector_overflow", [] { from_vector(std::vector<float>{1}, {kMax, 2}); }, {"lsg::", "9223372036854775807"}},
        {"tensor_literal_shape", [] { tensor({1.f, 2.f}, {3}); }, {"lsg::from_vector", "[3]"}},
        {"arange_step_zero", [] { arange(0.0, 1.0, 0.0); }, {"lsg::arange", "step=0"}},
        {"arange_nan", [] { arange(kNaN, 1.0, 1.0); }, {"lsg::arange", "nan"}},
        {"arange_inf", [] { arange(0.0, kInf, 1.0); }, {"lsg::arange", "inf"}},
        {"arange_huge", [] { arange(0.0, 1e300, 1.0); }, {"lsg::arange", "1e+300"}},
        // ---- views -----------------------------------------------------------------------------
        {"view_two_infer", [] { f32({6}).view({-1, -1}); }, {"lsg::view", "[-1, -1]"}},
        {"view_wrong_count", [] { f32({6}).view({4}); }, {"lsg::view", "[4]"}},
        {"view_negative", [] { f32({6}).view({-2, -3}); }, {"lsg::view", "[-2, -3]"}},
        {"reshape_overflow", [] { f32({0}).reshape({int64_t{1} << 62, 4, 0}); }, {"lsg::reshape", "[4611686018427387904, 4, 0]"}},
        {"reshape_zero_infer", [] { f32({0}).reshape({0, -1}); }, {"lsg::reshape", "[0, -1]"}},
        {"reshape_infer_overflow", [] { f32({4}).reshape({kMax, kMax, -1}); }, {"lsg::reshape", "9223372036854775807"}},
        {"narrow_huge_length", [] { f32({4}).narrow(0, 1, kMax); }, {"lsg::narrow", "9223372036854775807"}},
        {"narrow_negative_length", [] { f32({4}).narrow(0, 1, -2); }, {"lsg::narrow", "-2"}},
        {"narrow_bad_dim", [] { f32({4}).narrow(3, 0, 1); }, {"lsg::narrow", "dim 3"}},
        {"slice_step_zero", [] { f32({4}).slice(0, 0, 4, 0); }, {"lsg::slice", "got 0"}},
        {"slice_step_negative", [] { f32({4}).slice(0, 0, 4, -1); }, {"lsg::slice", "got -1"}},
        {"select_out_of_range", [] { f32({3}).select(0, 5); }, {"lsg::select", "index 5"}},
        {"select_negative", [] { f32({3}).select(0, -4); }, {"lsg::select", "index -4"}},
        {"transpose_dim", [] { f32({2, 3}).transpose(0, 7); }, {"lsg::transpose", "dim 7"}},
        {"permute_repeat", [] { f32({2, 3}).permute({0, 0}); }, {"lsg::permute", "[0, 0]"}},
        {"permute_count", [] { f32({2, 3}).permute({0}); }, {"lsg::permute", "[0]"}},
        {"expand_incompatible", [] { f32({3}).expand({4}); }, {"lsg::expand", "[4]"}},
        {"expand_overflow", [] { f32({1}).expand({int64_t{1} << 40, int64_t{1} << 40}); }, {"lsg::expand", "[1099511627776, 1099511627776]"}},
        {"expand_negative_new", [] { f32({1}).expand({-2, 1}); }, {"lsg::expand", "[-2, 1]"}},
        {"t_of_3d", [] { f32({1, 2, 3}).t(); }, {"lsg::t", "[1, 2, 3]"}},
        {"flatten_order", [] { f32({1, 2, 3}).flatten(2, 1); }, {"lsg::flatten", "start_dim 2"}},
        {"squeeze_dim", [] { f32({1, 2}).squeeze(4); }, {"lsg::squeeze", "dim 4"}},
        {"unsqueeze_dim", [] { f32({1, 2}).unsqueeze(-5); }, {"lsg::unsqueeze", "dim -5"}},
        {"size_dim", [] { f32({1, 2}).size(2); }, {"lsg::size", "dim 2"}},
        {"stride_dim", [] { f32({1, 2}).stride(-3); }, {"lsg::stride", "dim -3"}},
        {"item_many", [] { f32({2}).item(); }, {"lsg::item", "2 elements"}},
        {"data_wrong_type", [] { f32({2}).data<double>(); }, {"lsg::data", "float64"}},
        {"copy_not_broadcastable", [] { f32({3}).copy_(f32({4})); }, {"lsg::copy_", "[4]", "[3]"}},
        {"copy_more_dims", [] { f32({3}).copy_(f32({2, 3})); }, {"lsg::copy_", "[2, 3]"}},
        // ---- autograd ----------------------------------------------------------------------------
        {"requires_grad_int", [] { i64({1}).requires_grad_(); }, {"lsg::requires_grad_", "int64"}},
        {"requires_grad_nonleaf", [] { (grad_leaf({2}) * 2.0).requires_grad_(false); }, {"lsg::requires_grad_", "leaf"}},
        {"set_grad_shape", [] { grad_leaf({2}).set_grad(f32({3})); }, {"lsg::set_grad", "[3]"}},
        {"backward_no_grad", [] { f32({1}).backward(); }, {"lsg::backward", "[1]"}},
        {"backward_implicit_many", [] { (grad_leaf({3}) * 2.0).backward(); }, {"lsg::backward", "[3]"}},
        {"backward_seed_shape", [] { (grad_leaf({3}) * 2.0).backward(f32({2})); }, {"lsg::backward", "[2]"}},
        {"backward_seed_int", [] { (grad_leaf({2}) * 2.0).backward(i64({1, 1})); }, {"lsg::backward", "int64"}},
        {"backward_twice", [] { Tensor y = (grad_leaf({2}) * grad_leaf({2})).sum(); y.backward(); y.backward(); }, {"lsg::", "second time"}},
        {"saved_tensor_modified", [] {
             Tensor w = grad_leaf({2}), x = grad_leaf({2});
             Tensor y = (w * x).sum();
             w.detach().fill_(5.0);
             y.backward();
         }, {"lsg::mul", "in-place", "version is 1"}},
        {"saved_view_modified", [] {
             Tensor w = grad_leaf({2, 2}), x = grad_leaf({4});
             Tensor y = (w.view({4}) * x).sum();
             NoGradGuard g;
             w.detach().select(0, 1).fill_(3.0);
             y.backward();
         }, {"lsg::mul", "in-place"}},
        {"saved_by_optimizer_step", [] {
             Tensor w = grad_leaf({2});
             optim::SGD opt({w}, {.lr = 0.1});
             Tensor y = exp(w).sum();
             y.backward(Tensor(), true);
             opt.step();
             y.backward();
         }, {"lsg::exp", "in-place"}},
        // ---- elementwise -------------------------------------------------------------------------
        {"add_shapes", [] { add(f32({2, 3}), f32({4})); }, {"lsg::add", "[2, 3]", "[4]"}},
        {"sub_shapes", [] { sub(f32({2}), f32({3})); }, {"lsg::sub", "[3]"}},
        {"mul_shapes", [] { mul(f32({2}), f32({3})); }, {"lsg::mul", "[3]"}},
        {"div_shapes", [] { div(f32({2}), f32({3})); }, {"lsg::div", "[3]"}},
        {"maximum_shapes", [] { maximum(f32({2}), f32({3})); }, {"lsg::maximum", "[3]"}},
        {"minimum_shapes", [] { minimum(f32({2}), f32({3})); }, {"lsg::minimum", "[3]"}},
        {"eq_shapes", [] { eq(f32({2}), f32({3})); }, {"lsg::eq", "[3]"}},
        {"ne_shapes", [] { ne(f32({2}), f32({3})); }, {"lsg::ne", "[3]"}},
        {"lt_shapes", [] { lt(f32({2}), f32({3})); }, {"lsg::lt", "[3]"}},
        {"le_shapes", [] { le(f32({2}), f32({3})); }, {"lsg::le", "[3]"}},
        {"gt_shapes", [] { gt(f32({2}), f32({3})); }, {"lsg::gt", "[3]"}},
        {"ge_shapes", [] { ge(f32({2}), f32({3})); }, {"lsg::ge", "[3]"}},
        {"where_shapes", [] { where(f32({2}), f32({3}), f32({4})); }, {"lsg::where", "[4]"}},
        {"operator_plus_shapes", [] { (void)(f32({2, 2}) + f32({3})); }, {"lsg::add", "[3]"}},
        {"broadcast_overflow", [] { add(f32({1}).expand({int64_t{1} << 32, 1}), f32({1}).expand({1, int64_t{1} << 32})); }, {"lsg::", "4294967296"}},
        {"clamp_order", [] { clamp(f32({2}), 1.0, -1.0); }, {"lsg::clamp", "-1"}},
        {"clamp_nan", [] { clamp(f32({2}), kNaN, 1.0); }, {"lsg::clamp", "nan"}},
        {"dropout_above_one", [] { dropout(f32({2}), 1.5, true); }, {"lsg::dropout", "1.5"}},
        {"dropout_negative", [] { dropout(f32({2}), -0.1, true); }, {"lsg::dropout", "-0.1"}},
        {"dropout_nan", [] { dropout(f32({2}), kNaN, true); }, {"lsg::dropout", "nan"}},
        {"add_undefined", [] { add(Tensor(), f32({2})); }, {"lsg::", "undefined"}},
        // ---- reductions --------------------------------------------------------------------------
        {"sum_dim_range", [] { sum(f32({2, 3}), {2}); }, {"lsg::sum", "dim 2"}},
        {"sum_dim_repeat", [] { sum(f32({2, 3}), {1, -1}); }, {"lsg::sum", "1"}},
        {"mean_dim_range", [] { mean(f32({2, 3}), {-3}); }, {"lsg::mean", "dim -3"}},
        {"amax_empty", [] { amax(f32({0})); }, {"lsg::amax", "[0]"}},
        {"amax_empty_dim", [] { amax(f32({2, 0}), 1); }, {"lsg::amax", "[2, 0]"}},
        {"amin_dim_range", [] { amin(f32({2}), 1); }, {"lsg::amin", "dim 1"}},
        {"argmax_dim_range", [] { argmax(f32({2}), 3); }, {"lsg::argmax", "dim 3"}},
        {"argmin_empty_dim", [] { argmin(f32({0, 2}), 0); }, {"lsg::argmin", "[0, 2]"}},
        {"softmax_dim", [] { softmax(f32({2, 3}), 2); }, {"lsg::softmax", "dim 2"}},
        {"log_softmax_dim", [] { log_softmax(f32({2, 3}), -3); }, {"lsg::log_softmax", "dim -3"}},
        {"sum_to_incompatible", [] { sum_to(f32({2, 3}), {4}); }, {"lsg::sum_to", "[4]"}},
        // ---- index ops ---------------------------------------------------------------------------
        {"gather_out_of_range", [] { gather(f32({2, 3}), 1, i64({0, 7}).view({2, 1})); }, {"lsg::gather", "7"}},
        {"gather_negative", [] { gather(f32({2, 3}), 1, i64({0, -1}).view({2, 1})); }, {"lsg::gather", "-1"}},
        {"gather_float_index", [] { gather(f32({2, 3}), 1, f32({2, 1})); }, {"lsg::gather", "float32"}},
        {"gather_dim", [] { gather(f32({2, 3}), 2, i64({0, 0}).view({2, 1})); }, {"lsg::gather", "dim 2"}},
        {"index_select_range", [] { index_select(f32({2, 3}), 0, i64({2})); }, {"lsg::index_select", "2"}},
        {"index_select_2d", [] { index_select(f32({2, 3}), 0, i64({0, 1}).view({1, 2})); }, {"lsg::index_select", "[1, 2]"}},
        {"index_select_negative", [] { index_select(f32({2, 3}), 1, i64({-4})); }, {"lsg::index_select", "-4"}},
        {"one_hot_negative", [] { one_hot(i64({0, -1}), 3); }, {"lsg::one_hot", "-1"}},
        {"one_hot_too_big", [] { one_hot(i64({0, 3}), 3); }, {"lsg::one_hot", "3"}},
        {"one_hot_zero_classes", [] { one_hot(i64({0}), 0); }, {"lsg::one_hot", "got 0"}},
        {"one_hot_overflow", [] { one_hot(i64({0, 1, 2, 3}), int64_t{1} << 62); }, {"lsg::one_hot", "[4, 4611686018427387904]"}},
        {"one_hot_float_index", [] { one_hot(f32({2}), 3); }, {"lsg::one_hot", "float32"}},
        {"cat_empty", [] { cat({}); }, {"lsg::cat", "non-empty"}},
        {"cat_mismatch", [] { cat({f32({2, 3}), f32({2, 4})}); }, {"lsg::cat", "[2, 4]"}},
        {"cat_0d", [] { cat({scalar_tensor(1.0)}); }, {"lsg::cat", "zero-dimensional"}},
        {"cat_dtype", [] { cat({f32({2}), zeros({2}, {.dtype = DType::f64})}); }, {"lsg::cat", "float64"}},
        {"cat_overflow", [] { Tensor big = f32({1}).expand({kMax / 2 + 1}); cat({big, big}); }, {"lsg::cat", "4611686018427387904"}},
        {"stack_mismatch", [] { stack({f32({2}), f32({3})}); }, {"lsg::stack", "[3]"}},
        {"stack_empty", [] { stack({}); }, {"lsg::stack", "non-empty"}},
        // ---- matmul / conv / pool -----------------------------------------------------------------
        {"mm_inner", [] { mm(f32({2, 3}), f32({4, 5})); }, {"lsg::mm", "[2, 3]", "[4, 5]"}},
        {"mm_3d", [] { mm(f32({1, 2, 3}), f32({3, 2})); }, {"lsg::mm", "[1, 2, 3]"}},
        {"mm_dtype", [] { mm(f32({2, 2}), zeros({2, 2}, {.dtype = DType::f64})); }, {"lsg::mm", "float64"}},
        {"mm_int", [] { mm(i64({1}).view({1, 1}), i64({1}).view({1, 1})); }, {"lsg::mm", "[1, 1]"}},
        {"bmm_batch", [] { bmm(f32({2, 2, 3}), f32({3, 3, 2})); }, {"lsg::bmm", "[3, 3, 2]"}},
        {"matmul_0d", [] { matmul(scalar_tensor(1.0), f32({2})); }, {"lsg::matmul", "[2]"}},
        {"matmul_inner", [] { matmul(f32({2, 3}), f32({2})); }, {"lsg::matmul", "[2, 3]"}},
        {"linear_in", [] { linear(f32({2, 3}), f32({4, 5})); }, {"lsg::linear", "[4, 5]"}},
        {"linear_bias", [] { linear(f32({2, 3}), f32({4, 3}), f32({5})); }, {"lsg::linear", "[5]"}},
        {"conv2d_3d_input", [] { conv2d(f32({1, 3, 3}), f32({1, 1, 1, 1})); }, {"lsg::conv2d", "[1, 3, 3]"}},
        {"conv2d_3d_weight", [] { conv2d(f32({1, 1, 3, 3}), f32({1, 1, 1})); }, {"lsg::conv2d", "[1, 1, 1]"}},
        {"conv2d_channels", [] { conv2d(f32({1, 2, 3, 3}), f32({1, 3, 1, 1})); }, {"lsg::conv2d", "[1, 3, 1, 1]"}},
        {"conv2d_stride_zero", [] { conv2d(f32({1, 1, 3, 3}), f32({1, 1, 1, 1}), Tensor(), {0, 1}); }, {"lsg::conv2d", "[0, 1]"}},
        {"conv2d_negative_padding", [] { conv2d(f32({1, 1, 3, 3}), f32({1, 1, 1, 1}), Tensor(), {1, 1}, {-1, 0}); }, {"lsg::conv2d", "[-1, 0]"}},
        {"conv2d_kernel_zero", [] { Shape k{1, 1, 1, 1}; k[2] = k[3] = 0; conv2d(f32({1, 1, 3, 3}), f32(k)); }, {"lsg::conv2d", "[0, 0]"}},
        {"conv2d_padding_overflow", [] { conv2d(f32({1, 1, 3, 3}), f32({1, 1, 1, 1}), Tensor(), {1, 1}, {kMax / 2, 0}); }, {"lsg::conv2d", "4611686018427387903"}},
        {"conv2d_kernel_large", [] { conv2d(f32({1, 1, 3, 3}), f32({1, 1, 5, 5})); }, {"lsg::conv2d", "[5, 5]"}},
        {"conv2d_bias", [] { conv2d(f32({1, 1, 3, 3}), f32({2, 1, 1, 1}), f32({3})); }, {"lsg::conv2d", "[3]"}},
        {"conv2d_dtype", [] { conv2d(f32({1, 1, 3, 3}), zeros({1, 1, 1, 1}, {.dtype = DType::f64})); }, {"lsg::conv2d", "float64"}},
        {"max_pool_kernel_zero", [] { max_pool2d(f32({1, 1, 4, 4}), {0, 2}); }, {"lsg::max_pool2d", "[0, 2]"}},
        {"max_pool_padding_overflow", [] { max_pool2d(f32({1, 1, 4, 4}), {2, 2}, {2, 2}, {kMax / 2 + 1, 0}); }, {"lsg::max_pool2d", "4611686018427387904"}},
        {"max_pool_padding_half", [] { max_pool2d(f32({1, 1, 4, 4}), {2, 2}, {2, 2}, {2, 0}); }, {"lsg::max_pool2d", "[2, 0]"}},
        {"max_pool_int", [] { max_pool2d(zeros({1, 1, 4, 4}, {.dtype = DType::i64}), {2, 2}); }, {"lsg::max_pool2d", "int64"}},
        {"max_pool_stride_negative", [] { max_pool2d(f32({1, 1, 4, 4}), {2, 2}, {-1, 2}); }, {"lsg::max_pool2d", "[-1, 2]"}},
        {"max_pool_3d", [] { max_pool2d(f32({1, 4, 4}), {2, 2}); }, {"lsg::max_pool2d", "[1, 4, 4]"}},
        // ---- losses ------------------------------------------------------------------------------
        {"ce_target_high", [] { cross_entropy(f32({2, 3}), i64({0, 10})); }, {"lsg::cross_entropy", "10"}},
        {"ce_target_negative", [] { cross_entropy(f32({2, 3}), i64({0, -2})); }, {"lsg::cross_entropy", "-2"}},
        {"ce_smoothing_high", [] { cross_entropy(f32({2, 3}), i64({0, 1}), {.label_smoothing = 1.5}); }, {"lsg::cross_entropy", "1.5"}},
        {"ce_smoothing_nan", [] { cross_entropy(f32({2, 3}), i64({0, 1}), {.label_smoothing = kNaN}); }, {"lsg::cross_entropy", "nan"}},
        {"ce_rows", [] { cross_entropy(f32({2, 3}), i64({0, 1, 2})); }, {"lsg::cross_entropy", "[3]"}},
        {"ce_float_target_shape", [] { cross_entropy(f32({2, 3}), f32({2, 4})); }, {"lsg::cross_entropy", "[2, 4]"}},
        {"ce_weight", [] { cross_entropy(f32({2, 3}), i64({0, 1}), {.weight = f32({4})}); }, {"lsg::cross_entropy", "[4]"}},
        {"ce_module", [] { nn::CrossEntropyLoss()(f32({2, 3}), i64({0, 3})); }, {"lsg::cross_entropy", "3"}},
        {"nll_out_of_range", [] { nll_loss(f32({2, 3}), i64({5, 0})); }, {"lsg::nll_loss", "5"}},
        {"nll_1d", [] { nll_loss(f32({3}), i64({0})); }, {"lsg::nll_loss", "[3]"}},
        {"kl_div_shapes", [] { kl_div(f32({2, 3}), f32({2, 4})); }, {"lsg::kl_div", "[2, 4]"}},
        {"soft_ce_shapes", [] { soft_target_cross_entropy(f32({2, 3}), f32({3, 3})); }, {"lsg::soft_target_cross_entropy", "[3, 3]"}},
        {"bce_shapes", [] { binary_cross_entropy_with_logits(f32({2, 3}), f32({2})); }, {"lsg::binary_cross_entropy_with_logits", "[2]"}},
        {"bce_pos_weight", [] { binary_cross_entropy_with_logits(f32({2, 3}), f32({2, 3}), {.pos_weight = f32({4})}); }, {"lsg::binary_cross_entropy_with_logits", "[4]"}},
        {"distill_t_zero", [] { distillation_loss(f32({2, 3}), f32({2, 3}), i64({0, 1}), {.temperature = 0.0}); }, {"lsg::distillation_loss", "got 0"}},
        {"distill_t_nan", [] { distillation_loss(f32({2, 3}), f32({2, 3}), i64({0, 1}), {.temperature = kNaN}); }, {"lsg::distillation_loss", "nan"}},
        {"distill_t_inf", [] { distillation_loss(f32({2, 3}), f32({2, 3}), i64({0, 1}), {.temperature = kInf}); }, {"lsg::distillation_loss", "inf"}},
        {"distill_t_tiny", [] { distillation_loss(f32({2, 3}), f32({2, 3}), i64({0, 1}), {.temperature = 1e-200}); }, {"lsg::distillation_loss", "1e-200"}},
        {"distill_t_huge", [] { distillation_loss(f32({2, 3}), f32({2, 3}), i64({0, 1}), {.temperature = 1e20}); }, {"lsg::distillation_loss", "1e+20"}},
        {"distill_alpha", [] { distillation_loss(f32({2, 3}), f32({2, 3}), i64({0, 1}), {.alpha = 2.0}); }, {"lsg::distillation_loss", "2"}},
        {"distill_teacher_shape", [] { distillation_loss(f32({2, 3}), f32({2, 4}), i64({0, 1})); }, {"lsg::distillation_loss", "[2, 4]"}},
        {"smooth_sentinel", [] { smooth_targets(i64({0, -11}), 10, 0.1); }, {"lsg::smooth_targets", "-11"}},
        {"smooth_negative", [] { smooth_targets(i64({-1}), 10, 0.1); }, {"lsg::smooth_targets", "-1"}},
        {"smooth_classes", [] { smooth_targets(i64({0}), 0, 0.1); }, {"lsg::smooth_targets", "got 0"}},
        {"smooth_eps", [] { smooth_targets(i64({0}), 3, 2.0); }, {"lsg::smooth_targets", "2"}},
        {"smooth_padding", [] { smooth_targets(i64({0}), 3, 0.1, Smoothing::OffTarget, 7); }, {"lsg::smooth_targets", "7"}},
        {"smooth_overflow", [] { smooth_targets(i64({0, 1, 2, 3}), int64_t{1} << 62, 0.1); }, {"lsg::smooth_targets", "[4, 4611686018427387904]"}},
        {"label_smoothing_module", [] { nn::LabelSmoothing(3, 0, 0.1)(f32({2, 3}), i64({0, 9})); }, {"lsg::smooth_targets", "9"}},
        // ---- mixup ---------------------------------------------------------------------------------
        {"mixup_target", [] { mixup_targets(i64({0, 12}), 10, 0.5); }, {"lsg::mixup_targets", "12"}},
        {"mixup_lambda_nan", [] { mixup_targets(i64({0, 1}), 10, kNaN); }, {"lsg::mixup_targets", "nan"}},
        {"mixup_lambda_high", [] { mixup_targets(i64({0, 1}), 10, 1.5); }, {"lsg::mixup_targets", "1.5"}},
        {"mixup_eps", [] { mixup_targets(i64({0, 1}), 10, 0.5, -0.1); }, {"lsg::mixup_targets", "-0.1"}},
        {"mixup_overflow", [] { mixup_targets(i64({0, 1, 2, 3}), int64_t{1} << 62, 0.5); }, {"lsg::mixup_targets", "[4, 4611686018427387904]"}},
        {"mixup_lambda_tensor", [] { mixup_targets(i64({0, 1}), 10, f32({3})); }, {"lsg::mixup_targets", "[3]"}},
        {"mixup_options_alpha", [] { nn::Mixup({.mixup_alpha = -1.0, .num_classes = 10}); }, {"lsg::Mixup", "-1"}},
        {"mixup_options_classes", [] { nn::Mixup({.num_classes = 0}); }, {"lsg::Mixup", "got 0"}},
        {"mixup_options_prob", [] { nn::Mixup({.prob = kNaN, .num_classes = 10}); }, {"lsg::Mixup", "nan"}},
        // ---- calibration -----------------------------------------------------------------------------
        {"ece_bins", [] { expected_calibration_error(full({2, 3}, 1.0 / 3), i64({0, 1}), 0); }, {"lsg::expected_calibration_error", "got 0"}},
        {"ece_labels", [] { expected_calibration_error(full({2, 3}, 1.0 / 3), i64({0, 1, 2})); }, {"lsg::expected_calibration_error", "[3]"}},
        {"ece_label_range", [] { expected_calibration_error(full({2, 3}, 1.0 / 3), i64({0, 5})); }, {"lsg::expected_calibration_error", "5"}},
        {"ece_nan", [] { expected_calibration_error(full({2, 3}, kNaN), i64({0, 1})); }, {"lsg::expected_calibration_error", "nan"}},
        {"fit_temperature_inf", [] { fit_temperature(full({2, 3}, kInf), i64({0, 1})); }, {"lsg::fit_temperature", "inf"}},
        // ---- nn modules ------------------------------------------------------------------------------
        {"linear_module_zero", [] { nn::Linear(0, 3); }, {"lsg::Linear", "0"}},
        {"linear_module_input", [] { nn::Linear(4, 3)(f32({2, 5})); }, {"lsg::forward", "[2, 5]"}},
        {"conv_module_channels", [] { nn::Conv2d(-1, 3, 3); }, {"lsg::Conv2d", "-1"}},
        {"conv_module_kernel", [] { nn::Conv2d(1, 3, 0); }, {"lsg::Conv2d", "0"}},
        {"conv_module_input", [] { nn::Conv2d(1, 3, 3)(f32({1, 2, 5, 5})); }, {"lsg::forward", "[1, 2, 5, 5]"}},
        {"pool_module_kernel", [] { nn::MaxPool2d(0); }, {"lsg::MaxPool2d", "0"}},
        {"dropout_module", [] { nn::Dropout(1.5); }, {"lsg::Dropout", "1.5"}},
        {"dropout_module_nan", [] { nn::Dropout{kNaN}; }, {"lsg::Dropout", "nan"}},
        {"flatten_module", [] { nn::Flatten(3, 1)(f32({1, 2, 3, 4})); }, {"lsg::flatten", "start_dim 3"}},
        {"batchnorm_features", [] { nn::BatchNorm2d(0); }, {"lsg::BatchNorm2d", "0"}},
        {"batchnorm_eps", [] { nn::BatchNorm2d(2, -1.0); }, {"lsg::BatchNorm2d", "-1"}},
        {"batchnorm_input", [] { nn::BatchNorm2d(2)(f32({2, 3, 2, 2})); }, {"lsg::forward", "[2, 3, 2, 2]"}},
        {"load_state_missing", [] { nn::Linear m(2, 2); m.load_state_dict({{"weight", f32({2, 2})}}); }, {"lsg::load_state_dict", "bias"}},
        {"load_state_shape", [] { nn::Linear m(2, 2); m.load_state_dict({{"weight", f32({3, 2})}, {"bias", f32({2})}}); }, {"lsg::load_state_dict", "[3, 2]"}},
        // ---- optimizers / schedulers -------------------------------------------------------------------
        {"sgd_lr_negative", [] { optim::SGD(one_param(), {.lr = -1.0}); }, {"lsg::", "-1"}},
        {"sgd_lr_nan", [] { optim::SGD(one_param(), {.lr = kNaN}); }, {"lsg::", "nan"}},
        {"sgd_lr_inf", [] { optim::SGD(one_param(), {.lr = kInf}); }, {"lsg::", "inf"}},
        {"sgd_momentum", [] { optim::SGD(one_param(), {.lr = 0.1, .momentum = -1.0}); }, {"lsg::SGD", "-1"}},
        {"sgd_momentum_nan", [] { optim::SGD(one_param(), {.lr = 0.1, .momentum = kNaN}); }, {"lsg::SGD", "nan"}},
        {"sgd_nesterov", [] { optim::SGD(one_param(), {.lr = 0.1, .nesterov = true}); }, {"lsg::SGD", "Nesterov"}},
        {"sgd_weight_decay_nan", [] { optim::SGD(one_param(), {.lr = 0.1, .weight_decay = kNaN}); }, {"lsg::SGD", "nan"}},
        {"adam_beta", [] { optim::Adam(one_param(), {.betas = {1.0, 0.999}}); }, {"lsg::Adam", "1"}},
        {"adam_beta_nan", [] { optim::Adam(one_param(), {.betas = {0.9, kNaN}}); }, {"lsg::Adam", "nan"}},
        {"adam_eps", [] { optim::Adam(one_param(), {.eps = -1.0}); }, {"lsg::Adam", "-1"}},
        {"adam_eps_nan", [] { optim::Adam(one_param(), {.eps = kNaN}); }, {"lsg::Adam", "nan"}},
        {"adam_lr_inf", [] { optim::Adam(one_param(), {.lr = kInf}); }, {"lsg::", "inf"}},
        {"adamw_decay_nan", [] { optim::AdamW(one_param(), {.weight_decay = kNaN}); }, {"lsg::Adam", "nan"}},
        {"set_lr_nan", [] { optim::SGD o(one_param(), {.lr = 0.1}); o.set_lr(kNaN); }, {"lsg::set_lr", "nan"}},
        {"step_lr_size", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::StepLR s(o, 0); }, {"lsg::StepLR", "got 0"}},
        {"step_lr_gamma_nan", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::StepLR s(o, 1, kNaN); }, {"lsg::StepLR", "nan"}},
        {"cosine_tmax", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::CosineAnnealingLR s(o, 0); }, {"lsg::CosineAnnealingLR", "got 0"}},
        {"cosine_eta_nan", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::CosineAnnealingLR s(o, 5, kNaN); }, {"lsg::CosineAnnealingLR", "nan"}},
        {"linear_lr_factor_nan", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::LinearLR s(o, kNaN); }, {"lsg::LinearLR", "nan"}},
        {"linear_lr_iters", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::LinearLR s(o, 0.5, 1.0, -1); }, {"lsg::LinearLR", "-1"}},
        {"warmup_cosine_steps", [] { optim::SGD o(one_param(), {.lr = 0.1}); optim::WarmupCosine s(o, 10, 5); }, {"lsg::WarmupCosine", "5"}},
        {"clip_norm_type", [] { optim::clip_grad_norm_(one_param(), 1.0, 0.0); }, {"lsg::clip_grad_norm_", "got 0"}},
        {"clip_max_norm_nan", [] { optim::clip_grad_norm_(one_param(), kNaN); }, {"lsg::clip_grad_norm_", "nan"}},
        // ---- serialization ---------------------------------------------------------------------------
        {"st_missing", [] { nn::load_safetensors(scratch() / "no_such.safetensors"); }, {"lsg::load_safetensors", "no_such.safetensors"}},
        {"st_directory", [] { nn::load_safetensors(scratch()); }, {"lsg::load_safetensors", "not a regular file"}},
        {"st_fifo", [] { nn::load_safetensors(fifo("st.fifo")); }, {"lsg::load_safetensors", "st.fifo", "not a regular file"}},
        {"st_short", [] { nn::load_safetensors(file_with("short.st", "abc")); }, {"lsg::load_safetensors", "3 bytes"}},
        {"st_header_len", [] { nn::load_safetensors(file_with("hl.st", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10))); }, {"lsg::load_safetensors", "9223372036854775807"}},
        {"st_json", [] { nn::load_safetensors(safetensors_with("json.st", "{\"a\":")); }, {"lsg::load_safetensors", "not valid JSON"}},
        {"st_deep", [] { nn::load_safetensors(safetensors_with("deep.st", std::string(100000, '[') + std::string(100000, ']'))); }, {"lsg::load_safetensors", "nested"}},
        {"st_deep_entry", [] { nn::load_safetensors(safetensors_with("deep2.st", "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}")); }, {"lsg::load_safetensors", "nested"}},
        {"st_number_overflow", [] { nn::load_safetensors(safetensors_with("big.st", R"({"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}})")); }, {"lsg::load_safetensors", "1e400"}},
        {"st_duplicate", [] { nn::load_safetensors(safetensors_with("dup.st", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'))); }, {"lsg::load_safetensors", "duplicate", "\"a\""}},
        {"st_trailing", [] { nn::load_safetensors(safetensors_with("trail.st", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(6, '\0'))); }, {"lsg::load_safetensors", "6-byte"}},
        {"st_overlap", [] { nn::load_safetensors(safetensors_with("overlap.st", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'))); }, {"lsg::load_safetensors", "overlap", "[4, 8]"}},
        {"st_gap", [] { nn::load_safetensors(safetensors_with("gap.st", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'))); }, {"lsg::load_safetensors", "unused"}},
        {"st_dtype", [] { nn::load_safetensors(safetensors_with("dtype.st", R"({"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}})", std::string(2, '\0'))); }, {"lsg::load_safetensors", "BF16"}},
        {"st_negative_shape", [] { nn::load_safetensors(safetensors_with("neg.st", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0'))); }, {"lsg::load_safetensors", "-1"}},
        {"st_shape_overflow", [] { nn::load_safetensors(safetensors_with("ovf.st", R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, '\0'))); }, {"lsg::load_safetensors", "4294967296"}},
        {"st_offsets_float", [] { nn::load_safetensors(safetensors_with("offf.st", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}})", std::string(4, '\0'))); }, {"lsg::load_safetensors", "4.5"}},
        {"st_metadata_type", [] { nn::load_safetensors(safetensors_with("meta.st", R"({"__metadata__":{"k":[1,2]}})")); }, {"lsg::load_safetensors", "\"k\""}},
        {"st_save_reserved", [] { nn::save_safetensors({{"__metadata__", f32({1})}}, scratch() / "r.st"); }, {"lsg::save_safetensors", "__metadata__"}},
        {"st_save_undefined", [] { nn::save_safetensors({{"a", Tensor()}}, scratch() / "u.st"); }, {"lsg::save_safetensors", "\"a\""}},
        {"st_save_no_dir", [] { nn::save_safetensors({{"a", f32({1})}}, scratch() / "no" / "dir" / "x.st"); }, {"lsg::save_safetensors", "x.st"}},
        // ---- IDX / data sets / DataLoader ------------------------------------------------------------
        {"idx_missing", [] { data::read_idx((scratch() / "none.idx").string()); }, {"lsg::read_idx", "none.idx"}},
        {"idx_directory", [] { data::read_idx(scratch().string()); }, {"lsg::read_idx", "not a regular file"}},
        {"idx_fifo", [] { data::read_idx(fifo("idx.fifo")); }, {"lsg::read_idx", "idx.fifo", "not a regular file"}},
        {"idx_magic", [] { data::read_idx(file_with("magic.idx", std::string("\x01\x02\x08\x01\0\0\0\0", 8))); }, {"lsg::read_idx", "0x01020801"}},
        {"idx_type", [] { data::read_idx(idx_with("type.idx", {1}, "abcd", 0x0D)); }, {"lsg::read_idx", "0x0d"}},
        {"idx_zero_dims", [] { data::read_idx(idx_with("zero.idx", {}, "")); }, {"lsg::read_idx", "0 dimensions"}},
        {"idx_truncated_header", [] { data::read_idx(file_with("th.idx", std::string("\0\0\x08\x03\0\0", 6))); }, {"lsg::read_idx", "truncated header"}},
        {"idx_dims_overflow", [] { data::read_idx(idx_with("ovf.idx", {0xffffffffu, 0xffffffffu, 0xffffffffu}, "")); }, {"lsg::read_idx", "4294967295"}},
        {"idx_truncated_data", [] { data::read_idx(idx_with("td.idx", {10}, "abc")); }, {"lsg::read_idx", "truncated"}},
        {"idx_trailing", [] { data::read_idx(idx_with("tr.idx", {2}, "abcd")); }, {"lsg::read_idx", "trailing", "2 bytes"}},
        {"idx_labels_range", [] { data::check_labels(idx_array({2}, 2), 0, "labels"); }, {"lsg::check_labels", "got 0"}},
        {"dataset_2d", [] { data::make_image_dataset(idx_array({2, 4}, 8), idx_array({2}, 2), "set"); }, {"lsg::make_image_dataset", "[2, 4]"}},
        {"dataset_counts", [] { data::make_image_dataset(idx_array({2, 2, 2}, 8), idx_array({3}, 3), "set"); }, {"lsg::check_idx_pair", "3 labels"}},
        {"dataset_std", [] { data::make_image_dataset(idx_array({2, 2, 2}, 8), idx_array({2}, 2), "set", {0.0, 0.0}); }, {"lsg::make_image_dataset", "std 0"}},
        {"dataset_std_nan", [] { data::make_image_dataset(idx_array({2, 2, 2}, 8), idx_array({2}, 2), "set", {kNaN, 1.0}); }, {"lsg::make_image_dataset", "nan"}},
        {"dataset_bytes", [] { data::make_image_dataset(idx_array({2, 4294967295, 4294967295}, 8), idx_array({2}, 2), "set"); }, {"lsg::make_image_dataset", "4294967295"}},
        {"dataset_short_data", [] { data::make_image_dataset(idx_array({2, 2, 2}, 3), idx_array({2}, 2), "set"); }, {"lsg::make_image_dataset", "got 3"}},
        {"dataset_labels", [] { data::make_image_dataset(idx_array({2, 2, 2}, 8), [] { auto l = idx_array({2}, 2); l.data[1] = 10; return l; }(), "set"); }, {"lsg::check_labels", "10"}},
        {"loader_batch_zero", [] { data::DataLoader(data::ImageDataset{f32({2, 1, 1, 1}), i64({0, 1})}, {.batch_size = 0}); }, {"lsg::DataLoader", "got 0"}},
        {"loader_batch_negative", [] { data::DataLoader(data::ImageDataset{f32({2, 1, 1, 1}), i64({0, 1})}, {.batch_size = -3}); }, {"lsg::DataLoader", "-3"}},
        {"loader_counts", [] { data::DataLoader(data::ImageDataset{f32({3, 1, 1, 1}), i64({0, 1})}); }, {"lsg::DataLoader", "[3, 1, 1, 1]"}},
        {"dataset_slice_overflow", [] { data::ImageDataset{f32({2, 1, 1, 1}), i64({0, 1})}.slice(1, kMax); }, {"lsg::slice", "1 + 9223372036854775807"}},
        {"find_files_missing", [] { data::find_idx_files((scratch() / "nodir").string()); }, {"lsg::find_idx_files", "nodir"}},
        {"find_files_empty", [] { fs::create_directories(scratch() / "emptydir"); data::find_idx_files((scratch() / "emptydir").string()); }, {"lsg::find_idx_files", "train-images"}},
    };
    return table;
}

class BadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadInput, RaisesErrorNamingFunctionAndValue) {
    const BadCase& c = GetParam();
    std::string what;
    try {
        c.run();
        FAIL() << c.name << ": no lsg::Error";
    } catch (const Error& e) {
        what = e.what();
    }
    for (const std::string& f : c.fragments) EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
}

INSTANTIATE_TEST_SUITE_P(Table, BadInput, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(BadInput, TableHasAtLeast150Cases) { EXPECT_GE(cases().size(), 150u); }

}  // namespace
}  // namespace lsg

#include "lsgrad/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/error.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/reduce.h"
#include "lsgrad/optim/optim_kernels.h"

namespace lsg::optim {

// ---- Optimizer ---------------------------------------------------------------------------------

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
    LSG_CHECK(!params_.empty(), "the optimizer got an empty parameter list");
    LSG_CHECK(lr >= 0.0 && std::isfinite(lr), "learning rate must be non-negative and finite, got ", lr);
    for (size_t i = 0; i < params_.size(); ++i) {
        const Tensor& p = params_[i];
        LSG_CHECK(p.defined(), "parameter ", i, " is undefined");
        LSG_CHECK(is_floating(p.dtype()), "parameter ", i, " must be floating, got ", p.dtype());
        LSG_CHECK(p.is_leaf(), "parameter ", i, " (shape ", p.shape(), ") is not a leaf tensor");
    }
}

void Optimizer::zero_grad() {
    for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
    LSG_CHECK(lr >= 0.0 && std::isfinite(lr), "learning rate must be non-negative and finite, got ", lr);
    lr_ = lr;
}

double Optimizer::schedule_base_lr() {
    if (!initial_lr_) initial_lr_ = lr_;
    return *initial_lr_;
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
    std::map<std::string, Tensor> out{{"lr", scalar_tensor(lr_, {.dtype = DType::f64})}};
    if (initial_lr_) out["initial_lr"] = scalar_tensor(*initial_lr_, {.dtype = DType::f64});
    return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
    detail::StateReader r("load_state_dict", state);
    const CommonState c = read_common(r);
    r.finish();
    apply_common(c);
}

Optimizer::CommonState Optimizer::read_common(detail::StateReader& r) const {
    return {*r.real("lr", true), r.real("initial_lr", false)};
}

void Optimizer::apply_common(const CommonState& c) {
    lr_ = c.lr;
    initial_lr_ = c.initial_lr;
}

namespace detail {

Tensor StateReader::get(const std::string& key, const Shape& shape, DType dtype, bool required) {
    const auto it = state_.find(key);
    if (it == state_.end()) {
        LSG_CHECK_OP(op_, !required, "missing key \"", key, "\"");
        return Tensor();
    }
    used_.push_back(key);
    const Tensor& t = it->second;
    LSG_CHECK_OP(op_, t.defined(), "key \"", key, "\" holds an undefined tensor");
    LSG_CHECK_OP(op_, t.shape() == shape && t.dtype() == dtype, "key \"", key, "\": expected ", dtype_name(dtype), " ",
                 shape, ", got ", t.dtype(), " ", t.shape());
    return t;
}

std::optional<double> StateReader::real(const std::string& key, bool required) {
    const Tensor t = get(key, {}, DType::f64, required);
    if (!t.defined()) return std::nullopt;
    const double v = t.item<double>();
    LSG_CHECK_OP(op_, v >= 0.0 && std::isfinite(v), "key \"", key, "\" must be finite and non-negative, got ", v);
    return v;
}

std::optional<int64_t> StateReader::count(const std::string& key, bool required) {
    const Tensor t = get(key, {}, DType::i64, required);
    if (!t.defined()) return std::nullopt;
    const int64_t v = t.item<int64_t>();
    LSG_CHECK_OP(op_, v >= 0, "key \"", key, "\" must be non-negative, got ", v);
    return v;
}

void StateReader::finish() const {
    for (const auto& [key, value] : state_)
        LSG_CHECK_OP(op_, std::find(used_.begin(), used_.end(), key) != used_.end(), "unknown key \"", key,
                     "\" (a state of another optimizer or schedule?)");
}

}  // namespace detail

namespace {

// A copy of loaded state for parameter p: its device and dtype, its own storage.
Tensor state_copy(const Tensor& t, const Tensor& p) { return t.detach().to(p.device()).clone(); }

// The gradient of parameter i ready for a fused kernel: contiguous, of p's dtype and device, or
// undefined when p has none.
Tensor kernel_grad(const char* op, const Tensor& p, size_t i) {
    const Tensor g = p.grad();
    if (!g.defined()) return g;
    LSG_CHECK_OP(op, p.is_contiguous(), "parameter ", i, " (shape ", p.shape(), ") is not contiguous");
    LSG_CHECK_OP(op, g.shape() == p.shape(), "gradient of parameter ", i, " has shape ", g.shape(), ", the parameter ",
                 p.shape());
    LSG_CHECK_OP(op, g.device() == p.device(), "gradient of parameter ", i, " is on ", g.device(),
                 ", the parameter on ", p.device());
    return g.to(p.dtype()).contiguous();
}

Tensor zero_state(const Tensor& p) { return zeros(p.shape(), {.dtype = p.dtype(), .device = p.device()}); }

}  // namespace

// ---- SGD ---------------------------------------------------------------------------------------

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer(std::move(params), options.lr), options_(options), momentum_buffers_(params_.size()) {
    LSG_CHECK(options.momentum >= 0.0 && std::isfinite(options.momentum), "momentum must be finite and non-negative, got ",
              options.momentum);
    LSG_CHECK(options.dampening >= 0.0 && options.dampening <= 1.0, "dampening must lie in [0, 1], got ",
              options.dampening);
    LSG_CHECK(options.weight_decay >= 0.0 && std::isfinite(options.weight_decay),
              "weight_decay must be finite and non-negative, got ", options.weight_decay);
    LSG_CHECK(!options.nesterov || (options.momentum > 0.0 && options.dampening == 0.0),
              "Nesterov momentum requires a momentum and zero dampening");
}

void SGD::step() {
    NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
        Tensor& p = params_[i];
        const Tensor g = kernel_grad("SGD::step", p, i);
        if (!g.defined()) continue;
        SgdStepArgs args;
        args.dtype = p.dtype();
        args.n = p.numel();
        args.param = p.raw_data();
        args.grad = g.raw_data();
        args.lr = lr_;
        args.momentum = options_.momentum;
        args.dampening = options_.dampening;
        args.weight_decay = options_.weight_decay;
        args.nesterov = options_.nesterov;
        if (options_.momentum != 0.0) {
            Tensor& buf = momentum_buffers_[i];
            args.first_step = !buf.defined();
            // A module moved with to() after the first step leaves the buffer behind; follow it.
            if (buf.defined() && (buf.device() != p.device() || buf.dtype() != p.dtype()))
                buf = buf.to(p.device()).to(p.dtype());
            if (!buf.defined()) buf = empty(p.shape(), {.dtype = p.dtype(), .device = p.device()});
            args.momentum_buffer = buf.raw_data();
        }
        optimizer_kernels(p.device()).sgd(kernel_context(p.device()), args);
        p.bump_version();
    }
}

std::map<std::string, Tensor> SGD::state_dict() const {
    std::map<std::string, Tensor> out = Optimizer::state_dict();
    for (size_t i = 0; i < params_.size(); ++i)
        if (momentum_buffers_[i].defined()) out["momentum_buffer." + std::to_string(i)] = momentum_buffers_[i].detach();
    return out;
}

void SGD::load_state_dict(const std::map<std::string, Tensor>& state) {
    detail::StateReader r("load_state_dict", state);
    std::vector<Tensor> buffers(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
        const Tensor& p = params_[i];
        const Tensor b = r.get("momentum_buffer." + std::to_string(i), p.shape(), p.dtype(), false);
        if (b.defined()) buffers[i] = state_copy(b, p);
    }
    const CommonState c = read_common(r);
    r.finish();
    apply_common(c);
    momentum_buffers_ = std::move(buffers);
}

// ---- Adam / AdamW ------------------------------------------------------------------------------

Adam::Adam(std::vector<Tensor> params, AdamOptions options) : Adam(std::move(params), options, false) {}

Adam::Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled_weight_decay)
    : Optimizer(std::move(params), options.lr),
      options_(options),
      decoupled_(decoupled_weight_decay),
      steps_(params_.size(), 0),
      exp_avg_(params_.size()),
      exp_avg_sq_(params_.size()) {
    const auto [b1, b2] = options.betas;
    LSG_CHECK(b1 >= 0.0 && b1 < 1.0 && b2 >= 0.0 && b2 < 1.0, "betas must be in [0, 1), got (", b1, ", ", b2, ")");
    LSG_CHECK(options.eps >= 0.0 && std::isfinite(options.eps), "eps must be finite and non-negative, got ", options.eps);
    LSG_CHECK(options.weight_decay >= 0.0 && std::isfinite(options.weight_decay),
              "weight_decay must be finite and non-negative, got ", options.weight_decay);
}

void Adam::step() {
    NoGradGuard no_grad;
    const auto [b1, b2] = options_.betas;
    for (size_t i = 0; i < params_.size(); ++i) {
        Tensor& p = params_[i];
        const Tensor g = kernel_grad(decoupled_ ? "AdamW::step" : "Adam::step", p, i);
        if (!g.defined()) continue;
        Tensor& m = exp_avg_[i];
        Tensor& v = exp_avg_sq_[i];
        if (!m.defined()) {
            m = zero_state(p);
            v = zero_state(p);
        } else if (m.device() != p.device() || m.dtype() != p.dtype()) {
            m = m.to(p.device()).to(p.dtype());
            v = v.to(p.device()).to(p.dtype());
        }
        const int64_t t = ++steps_[i];
        const double bias_correction1 = 1.0 - std::pow(b1, static_cast<double>(t));
        const double bias_correction2 = 1.0 - std::pow(b2, static_cast<double>(t));
        AdamStepArgs args;
        args.dtype = p.dtype();
        args.n = p.numel();
        args.param = p.raw_data();
        args.grad = g.raw_data();
        args.exp_avg = m.raw_data();
        args.exp_avg_sq = v.raw_data();
        args.beta1 = b1;
        args.beta2 = b2;
        args.eps = options_.eps;
        args.l2 = decoupled_ ? 0.0 : options_.weight_decay;
        args.decay_factor = decoupled_ ? 1.0 - lr_ * options_.weight_decay : 1.0;
        args.step_size = lr_ / bias_correction1;
        args.bias_correction2_sqrt = std::sqrt(bias_correction2);
        optimizer_kernels(p.device()).adam(kernel_context(p.device()), args);
        p.bump_version();
    }
}

std::map<std::string, Tensor> Adam::state_dict() const {
    std::map<std::string, Tensor> out = Optimizer::state_dict();
    for (size_t i = 0; i < params_.size(); ++i) {
        if (!exp_avg_[i].defined()) continue;
        const std::string n = std::to_string(i);
        out["step." + n] = scalar_tensor(static_cast<double>(steps_[i]), {.dtype = DType::i64});
        out["exp_avg." + n] = exp_avg_[i].detach();
        out["exp_avg_sq." + n] = exp_avg_sq_[i].detach();
    }
    return out;
}

void Adam::load_state_dict(const std::map<std::string, Tensor>& state) {
    detail::StateReader r("load_state_dict", state);
    std::vector<int64_t> steps(params_.size(), 0);
    std::vector<Tensor> m(params_.size()), v(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
        const Tensor& p = params_[i];
        const std::string n = std::to_string(i);
        const std::optional<int64_t> t = r.count("step." + n, false);
        // The three entries of a parameter come together: all present once it has stepped.
        const bool stepped = t.has_value();
        const Tensor mi = r.get("exp_avg." + n, p.shape(), p.dtype(), stepped);
        const Tensor vi = r.get("exp_avg_sq." + n, p.shape(), p.dtype(), stepped);
        LSG_CHECK_OP("load_state_dict", stepped || (!mi.defined() && !vi.defined()), "key \"exp_avg.", n,
                     "\" without \"step.", n, "\"");
        if (!stepped) continue;
        steps[i] = *t;
        m[i] = state_copy(mi, p);
        v[i] = state_copy(vi, p);
    }
    const CommonState c = read_common(r);
    r.finish();
    apply_common(c);
    steps_ = std::move(steps);
    exp_avg_ = std::move(m);
    exp_avg_sq_ = std::move(v);
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options)
    : Adam(std::move(params), AdamOptions{options.lr, options.betas, options.eps, options.weight_decay}, true) {}

// ---- clip_grad_norm_ ---------------------------------------------------------------------------

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
    LSG_CHECK(norm_type > 0.0, "norm_type must be positive (or infinity), got ", norm_type);
    LSG_CHECK(max_norm >= 0.0 && std::isfinite(max_norm), "max_norm must be finite and non-negative, got ", max_norm);
    NoGradGuard no_grad;
    const bool inf = std::isinf(norm_type);
    std::vector<Tensor> grads;
    for (const Tensor& p : params)
        if (p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) return 0.0;

    // Per-gradient norms reduce on the gradient's device; only one scalar per tensor reaches the
    // host, combined in double in parameter order.
    double total = 0.0;
    for (const Tensor& g : grads) {
        const Tensor a = abs(g);
        if (inf) {
            total = std::max(total, amax(a).item<double>());
        } else if (norm_type == 2.0) {
            total += sum(a * a).item<double>();
        } else if (norm_type == 1.0) {
            total += sum(a).item<double>();
        } else {
            total += sum(pow(a, norm_type)).item<double>();
        }
    }
    if (!inf) total = norm_type == 2.0 ? std::sqrt(total) : std::pow(total, 1.0 / norm_type);

    const double clip_coef = max_norm / (total + 1e-6);
    if (clip_coef < 1.0) {
        for (const Tensor& g : grads) {
            Tensor handle = g;
            handle.copy_(g * clip_coef);
        }
    }
    return total;
}

}  // namespace lsg::optim

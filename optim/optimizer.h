// Optimizers with torch.optim's names, options and update rules: SGD (momentum, dampening,
// Nesterov, L2 weight decay), Adam (L2 weight decay) and AdamW (decoupled weight decay), and
// clip_grad_norm_. One group of parameters per optimizer. Each step updates every parameter with
// one fused pass over its data, gradient and state (optim/optim_kernels.h), outside autograd.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg::optim {

namespace detail {

// Reads a state dict for a load_state_dict: each entry is looked up by key and checked, and finish()
// rejects the keys nobody asked for, so that a state of another kind of optimizer or schedule
// fails with the key named instead of being half applied.
class StateReader {
public:
    StateReader(const char* op, const std::map<std::string, Tensor>& state) : op_(op), state_(state) {}
    // Entry `key`, of `shape` and `dtype`; undefined when absent and not required.
    Tensor get(const std::string& key, const Shape& shape, DType dtype, bool required);
    // A 0-d f64 entry as a double (finite, non-negative); nullopt when absent and not required.
    std::optional<double> real(const std::string& key, bool required);
    // A 0-d i64 entry (non-negative).
    std::optional<int64_t> count(const std::string& key, bool required);
    // Throws naming the first key that no get/real/count asked for.
    void finish() const;

private:
    const char* op_;
    const std::map<std::string, Tensor>& state_;
    std::vector<std::string> used_;
};

}  // namespace detail

class Optimizer {
public:
    // params: leaf tensors that require grad (a module's parameters()); all floating.
    Optimizer(std::vector<Tensor> params, double lr);
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    // Applies one update to every parameter that has a gradient (those without are skipped, as in
    // PyTorch).
    virtual void step() = 0;
    // Clears the parameters' gradients (set to none).
    void zero_grad();

    // The optimizer's whole state, as torch's optimizer.state_dict(), as named tensors (ready for
    // nn::save_safetensors): "lr" and, once a schedule attached, "initial_lr" (0-d f64), plus each
    // optimizer's per-parameter state keyed "<what>.<i>" for parameter i (see SGD and Adam). A
    // parameter that has not been stepped yet has no entries.
    virtual std::map<std::string, Tensor> state_dict() const;
    // Restores a state_dict() of the same kind of optimizer over parameters of the same shapes:
    // afterwards step() continues exactly (bit for bit) as the saved optimizer would have. Throws
    // lsg::Error naming the key for a missing or unknown key, or a shape or dtype that does not
    // match; nothing is changed then.
    virtual void load_state_dict(const std::map<std::string, Tensor>& state);

    double lr() const { return lr_; }
    void set_lr(double lr);
    const std::vector<Tensor>& params() const { return params_; }
    // The lr that schedules start from: the lr when the first schedule was attached (PyTorch's
    // group["initial_lr"]), so that the parts of a SequentialLR share it.
    double schedule_base_lr();

protected:
    // The state every optimizer has, read by load_state_dict before anything is changed.
    struct CommonState {
        double lr;
        std::optional<double> initial_lr;
    };
    CommonState read_common(detail::StateReader& r) const;
    void apply_common(const CommonState& c);

    std::vector<Tensor> params_;
    double lr_;

private:
    std::optional<double> initial_lr_;
};

struct SGDOptions {
    double lr = 1e-3;
    double momentum = 0.0;
    double dampening = 0.0;
    double weight_decay = 0.0;
    bool nesterov = false;
};

// torch.optim.SGD, per parameter p with gradient g:
//   g ← g + weight_decay·p
//   if momentum ≠ 0: buf ← g on the first step, else momentum·buf + (1 − dampening)·g;
//                    g ← g + momentum·buf (nesterov) or buf
//   p ← p − lr·g
class SGD : public Optimizer {
public:
    SGD(std::vector<Tensor> params, SGDOptions options);
    void step() override;
    const SGDOptions& options() const { return options_; }
    // Adds "momentum_buffer.<i>" (the parameter's shape and dtype) once parameter i has stepped.
    std::map<std::string, Tensor> state_dict() const override;
    void load_state_dict(const std::map<std::string, Tensor>& state) override;

private:
    SGDOptions options_;
    std::vector<Tensor> momentum_buffers_;  // undefined until a parameter's first step
};

struct AdamOptions {
    double lr = 1e-3;
    std::pair<double, double> betas = {0.9, 0.999};
    double eps = 1e-8;
    double weight_decay = 0.0;
};

struct AdamWOptions {
    double lr = 1e-3;
    std::pair<double, double> betas = {0.9, 0.999};
    double eps = 1e-8;
    double weight_decay = 1e-2;
};

// torch.optim.Adam, per parameter at step t = 1, 2, ...:
//   g ← g + weight_decay·p                      (Adam: L2 penalty in the gradient)
//   p ← p·(1 − lr·weight_decay)                 (AdamW instead: decoupled decay)
//   m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²
//   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
class Adam : public Optimizer {
public:
    Adam(std::vector<Tensor> params, AdamOptions options = {});
    void step() override;
    // Steps taken by parameter i (t of its last update; parameters without a gradient in a step
    // do not advance, as PyTorch's per-parameter state['step']).
    int64_t step_count(size_t i) const { return steps_.at(i); }
    // Adds "step.<i>" (0-d i64), "exp_avg.<i>" and "exp_avg_sq.<i>" once parameter i has stepped.
    std::map<std::string, Tensor> state_dict() const override;
    void load_state_dict(const std::map<std::string, Tensor>& state) override;

protected:
    Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled_weight_decay);

private:
    AdamOptions options_;
    bool decoupled_;
    std::vector<int64_t> steps_;
    std::vector<Tensor> exp_avg_, exp_avg_sq_;  // m and v, zero-initialised on first use
};

// torch.optim.AdamW: Adam with decoupled weight decay (see Adam).
class AdamW : public Adam {
public:
    AdamW(std::vector<Tensor> params, AdamWOptions options = {});
};

// Scales all gradients by one factor so that their global norm is at most max_norm, as
// torch.nn.utils.clip_grad_norm_: total = (Σ_p ‖g_p‖_q^q)^(1/q) (max_p ‖g_p‖_∞ for q = ∞), and
// every gradient is multiplied by max_norm / (total + 1e-6) when that is below 1. Parameters
// without gradients are skipped. Returns total.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

}  // namespace lsg::optim

#include "lsgrad/optim/scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lsgrad/core/error.h"

namespace lsg::optim {

LRScheduler::LRScheduler(Optimizer& optimizer)
    : optimizer_(optimizer), base_lr_(optimizer.schedule_base_lr()), last_lr_(optimizer.lr()) {}

void LRScheduler::initialize() {
    last_epoch_ = 0;
    last_lr_ = lr_at(0);
    optimizer_.set_lr(last_lr_);
}

void LRScheduler::step() {
    ++last_epoch_;
    last_lr_ = lr_at(last_epoch_);
    optimizer_.set_lr(last_lr_);
}

std::map<std::string, Tensor> LRScheduler::state_dict() const {
    return {{"last_epoch", scalar_tensor(static_cast<double>(last_epoch_), {.dtype = DType::i64})},
            {"last_lr", scalar_tensor(last_lr_, {.dtype = DType::f64})},
            {"base_lr", scalar_tensor(base_lr_, {.dtype = DType::f64})}};
}

void LRScheduler::load_state_dict(const std::map<std::string, Tensor>& state) {
    detail::StateReader r("load_state_dict", state);
    const int64_t last_epoch = *r.count("last_epoch", true);
    const double last_lr = *r.real("last_lr", true);
    const double base_lr = *r.real("base_lr", true);
    r.finish();
    last_epoch_ = last_epoch;
    last_lr_ = last_lr;
    base_lr_ = base_lr;
}

// ---- StepLR ------------------------------------------------------------------------------------

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
    LSG_CHECK(step_size > 0, "step_size must be positive, got ", step_size);
    LSG_CHECK(gamma >= 0.0 && std::isfinite(gamma), "gamma must be finite and non-negative, got ", gamma);
    initialize();
}

double StepLR::lr_at(int64_t t) const {
    return base_lr_ * std::pow(gamma_, static_cast<double>(t / step_size_));
}

// ---- CosineAnnealingLR -------------------------------------------------------------------------

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min)
    : LRScheduler(optimizer), t_max_(T_max), eta_min_(eta_min) {
    LSG_CHECK(T_max > 0, "T_max must be positive, got ", T_max);
    LSG_CHECK(eta_min >= 0.0 && std::isfinite(eta_min), "eta_min must be finite and non-negative, got ", eta_min);
    initialize();
}

double CosineAnnealingLR::lr_at(int64_t t) const {
    const double phase = std::numbers::pi * static_cast<double>(t) / static_cast<double>(t_max_);
    return eta_min_ + (base_lr_ - eta_min_) * (1.0 + std::cos(phase)) / 2.0;
}

// ---- LinearLR / LinearWarmup -------------------------------------------------------------------

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters)
    : LRScheduler(optimizer), start_factor_(start_factor), end_factor_(end_factor), total_iters_(total_iters) {
    LSG_CHECK(start_factor > 0.0 && start_factor <= 1.0, "start_factor must be in (0, 1], got ", start_factor);
    LSG_CHECK(end_factor >= 0.0 && end_factor <= 1.0, "end_factor must be in [0, 1], got ", end_factor);
    LSG_CHECK(total_iters > 0, "total_iters must be positive, got ", total_iters);
    initialize();
}

double LinearLR::lr_at(int64_t t) const {
    const double progress = static_cast<double>(std::min(t, total_iters_)) / static_cast<double>(total_iters_);
    return base_lr_ * (start_factor_ + (end_factor_ - start_factor_) * progress);
}

namespace {

double warmup_start(int64_t warmup_steps, std::optional<double> start_factor) {
    LSG_CHECK_OP("LinearWarmup", warmup_steps > 0, "warmup_steps must be positive, got ", warmup_steps);
    return start_factor.value_or(1.0 / static_cast<double>(warmup_steps));
}

}  // namespace

LinearWarmup::LinearWarmup(Optimizer& optimizer, int64_t warmup_steps, std::optional<double> start_factor)
    : LinearLR(optimizer, warmup_start(warmup_steps, start_factor), 1.0, warmup_steps) {}

// ---- SequentialLR ------------------------------------------------------------------------------

SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
    LSG_CHECK(!schedulers_.empty(), "needs at least one schedule");
    LSG_CHECK(milestones_.size() + 1 == schedulers_.size(), "expects one milestone fewer than schedules, got ",
              milestones_.size(), " milestones for ", schedulers_.size(), " schedules");
    for (size_t i = 0; i < milestones_.size(); ++i)
        LSG_CHECK(milestones_[i] > (i ? milestones_[i - 1] : 0), "milestones must be positive and increasing, got ",
                  Shape(milestones_.begin(), milestones_.end()));
    for (const auto& s : schedulers_) LSG_CHECK(s != nullptr, "a schedule is null");
    initialize();
}

double SequentialLR::lr_at(int64_t t) const {
    const size_t i =
        static_cast<size_t>(std::upper_bound(milestones_.begin(), milestones_.end(), t) - milestones_.begin());
    const int64_t start = i == 0 ? 0 : milestones_[i - 1];
    return schedulers_[i]->lr_at(t - start);
}

// ---- WarmupCosine ------------------------------------------------------------------------------

WarmupCosine::WarmupCosine(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr,
                           std::optional<double> start_factor)
    : LRScheduler(optimizer),
      warmup_(warmup_steps),
      total_(total_steps),
      min_lr_(min_lr),
      start_factor_(warmup_steps > 0 ? start_factor.value_or(1.0 / static_cast<double>(warmup_steps)) : 1.0) {
    LSG_CHECK(warmup_steps >= 0 && total_steps > warmup_steps, "needs 0 ≤ warmup_steps < total_steps, got ",
              warmup_steps, " and ", total_steps);
    LSG_CHECK(start_factor_ > 0.0 && start_factor_ <= 1.0, "start_factor must be in (0, 1], got ", start_factor_);
    LSG_CHECK(min_lr >= 0.0 && std::isfinite(min_lr), "min_lr must be finite and non-negative, got ", min_lr);
    initialize();
}

double WarmupCosine::lr_at(int64_t t) const {
    if (t < warmup_)
        return base_lr_ *
               (start_factor_ + (1.0 - start_factor_) * static_cast<double>(t) / static_cast<double>(warmup_));
    const double span = static_cast<double>(total_ - warmup_);
    const double progress = std::min(static_cast<double>(t - warmup_), span) / span;
    return min_lr_ + (base_lr_ - min_lr_) * (1.0 + std::cos(std::numbers::pi * progress)) / 2.0;
}

}  // namespace lsg::optim

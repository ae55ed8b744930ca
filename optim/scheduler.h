// Learning-rate schedules with torch.optim.lr_scheduler's names and closed forms. Each sets the
// optimizer's lr for "epoch" t (a counter that step() advances; call it once per epoch or once
// per batch, as the schedule's lengths are meant). As in PyTorch, constructing a schedule applies
// its t = 0 value; base_lr is the optimizer's schedule_base_lr() (its lr when the first schedule
// was attached).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <optional>
#include <vector>

#include "lsgrad/optim/optimizer.h"

namespace lsg::optim {

class LRScheduler {
public:
    explicit LRScheduler(Optimizer& optimizer);
    virtual ~LRScheduler() = default;
    LRScheduler(const LRScheduler&) = delete;
    LRScheduler& operator=(const LRScheduler&) = delete;

    // t ← t + 1 and the optimizer's lr ← lr_at(t).
    void step();
    // The schedule's position, as torch's scheduler.state_dict(): "last_epoch" (0-d i64),
    // "last_lr" and "base_lr" (0-d f64). Its shape (step size, T_max, ...) comes from the
    // constructor, as in PyTorch, so a restored schedule must be built with the same arguments.
    std::map<std::string, Tensor> state_dict() const;
    // Restores a state_dict(): the next step() continues where the saved schedule stopped. Sets
    // no optimizer lr (the optimizer's own state holds it). lsg::Error naming the key when one is
    // missing, unknown, not 0-d or of the wrong dtype, or when last_epoch is negative.
    void load_state_dict(const std::map<std::string, Tensor>& state);
    // The lr the schedule set last.
    double get_last_lr() const { return last_lr_; }
    // t of the last step (0 after construction).
    int64_t last_epoch() const { return last_epoch_; }
    double base_lr() const { return base_lr_; }
    // The schedule's lr at t, from base_lr (a pure function; used by SequentialLR).
    virtual double lr_at(int64_t t) const = 0;

protected:
    // Sets the t = 0 lr; derived constructors call it once their parameters are set.
    void initialize();

    Optimizer& optimizer_;
    double base_lr_;
    int64_t last_epoch_ = 0;
    double last_lr_;
};

// lr = base_lr · gamma^⌊t / step_size⌋.
class StepLR : public LRScheduler {
public:
    StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
    double lr_at(int64_t t) const override;

private:
    int64_t step_size_;
    double gamma_;
};

// lr = eta_min + (base_lr − eta_min)·(1 + cos(π·t / T_max))/2.
class CosineAnnealingLR : public LRScheduler {
public:
    CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0.0);
    double lr_at(int64_t t) const override;

private:
    int64_t t_max_;
    double eta_min_;
};

// lr = base_lr · (start_factor + (end_factor − start_factor)·min(t, total_iters)/total_iters).
class LinearLR : public LRScheduler {
public:
    LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3.0, double end_factor = 1.0, int64_t total_iters = 5);
    double lr_at(int64_t t) const override;

private:
    double start_factor_, end_factor_;
    int64_t total_iters_;
};

// Linear warm-up: LinearLR(start_factor, 1, warmup_steps), i.e. lr = base_lr·(s + (1 − s)·t/w) for
// t < w = warmup_steps and base_lr after. s defaults to 1/w, so no step runs at lr 0.
class LinearWarmup : public LinearLR {
public:
    LinearWarmup(Optimizer& optimizer, int64_t warmup_steps, std::optional<double> start_factor = std::nullopt);
};

// The schedules in turn, as torch's SequentialLR: schedule i runs from milestones[i − 1] (0 for
// the first) with its own t counted from there. Build the parts on the same optimizer before
// this (each part's construction sets the lr, so this one applies the first part's t = 0 value).
class SequentialLR : public LRScheduler {
public:
    SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                 std::vector<int64_t> milestones);
    double lr_at(int64_t t) const override;

private:
    std::vector<std::shared_ptr<LRScheduler>> schedulers_;
    std::vector<int64_t> milestones_;
};

// Linear warm-up then cosine decay to min_lr at total_steps (and min_lr after), the usual schedule
// per batch:
//   t < warmup_steps:  base_lr·(s + (1 − s)·t/warmup_steps), s = start_factor (default 1/warmup_steps)
//   otherwise:         min_lr + (base_lr − min_lr)·(1 + cos(π·min(t − w, T)/T))/2, T = total_steps − warmup_steps
// That is SequentialLR(LinearLR(s, 1, w), CosineAnnealingLR(T, min_lr), {w}) in one object.
class WarmupCosine : public LRScheduler {
public:
    WarmupCosine(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr = 0.0,
                 std::optional<double> start_factor = std::nullopt);
    double lr_at(int64_t t) const override;

private:
    int64_t warmup_, total_;
    double min_lr_, start_factor_;
};

}  // namespace lsg::optim

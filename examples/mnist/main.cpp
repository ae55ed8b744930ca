// Trains an MLP or a CNN on MNIST (or Fashion-MNIST) with any loss of the loss layer, then reports
// test accuracy, NLL and calibration (ECE, 15 bins) before and after temperature scaling.
//
//   mnist --model cnn --loss ls --smoothing 0.1 --epochs 3 --plot-dir results
//
// Models (as in PyTorch's MNIST examples):
//   mlp: Flatten – Linear(784, 256) – ReLU – Linear(256, 256) – ReLU – Linear(256, 10)
//   cnn: Conv3x3(1→32, pad 1) – ReLU – MaxPool2 – Conv3x3(32→64, pad 1) – ReLU – MaxPool2 –
//        Flatten – Linear(64·7·7, 128) – ReLU – Linear(128, 10)          (28 → 14 → 7)
// Losses: ce (cross-entropy), ls (cross-entropy with label smoothing ε), kl (KL divergence of
// log_softmax from the smoothed targets, batch mean), soft (soft-target cross-entropy against the
// smoothed targets), mixup / cutmix (the batch transform, then soft-target cross-entropy).
//
// Data-parallel: `mpirun -np W mnist --dist mpi ...` trains on W CPU processes (`--dist nccl
// --device cuda`, one process per GPU), each with --batch-size images of its share of every batch
// (a global batch of W·--batch-size; see data::DistributedSampler), gradients averaged by
// nn::DistributedDataParallel. Only rank 0 prints, writes metrics, checkpoints and saved weights.
//
// Temperature scaling needs data the model was not trained on: by default the last 5000 training
// images are held out of training and T is fitted on them (--holdout 0 trains on all 60 000 and
// skips the fit).
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/backend.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/data/dataset.h"
#include "lsgrad/dist/distributed_data_parallel.h"
#include "lsgrad/nn/layers.h"
#include "lsgrad/nn/loss.h"
#include "lsgrad/nn/mixup.h"
#include "lsgrad/nn/serialize.h"
#include "lsgrad/ops/calibration.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/loss.h"
#include "lsgrad/ops/reduce.h"
#include "lsgrad/optim/optimizer.h"
#include "lsgrad/optim/scheduler.h"
#include "mnist_models.h"

namespace {

using namespace lsg;
using Clock = std::chrono::steady_clock;
using examples::build_mnist_model;
using examples::predict;

struct Options {
    std::string model = "cnn";
    std::string loss = "ce";
    double smoothing = 0.1;
    bool smoothing_given = false;
    std::string convention = "uniform";
    int epochs = 0;
    bool epochs_given = false;  // else the model's default: MLP 5, CNN 3
    int64_t batch_size = 128;
    double lr = 0.0;
    bool lr_given = false;  // else the optimizer's default: SGD 0.05, Adam/AdamW 2e-3
    std::string optimizer = "";
    std::string schedule = "cosine";
    double weight_decay = 0.0;
    double mixup_alpha = 0.2;
    double cutmix_alpha = 1.0;
    uint64_t seed = 0;
    int threads = 0;
    std::string device = "cpu";
    std::string data;
    std::string dataset = "mnist";
    int64_t holdout = 5000;
    int64_t train_limit = 0;
    int64_t test_limit = 0;
    std::string save, load, metrics_out, plot_dir;
    std::string checkpoint, resume;
    int stop_after = 0;
    bool threads_given = false;
    int64_t log_every = 0;
    std::string dist = "none";
    double bucket_mb = 25.0;
    bool no_overlap = false;
};

// The data-parallel group of this run (null without --dist); main's error handler ends the whole
// job through it, so that a rank that fails does not leave the others waiting in an allreduce.
std::shared_ptr<dist::ProcessGroup> process_group;

// More OpenMP threads than four per processor only oversubscribes the machine (every kernel
// splits its work by thread count): a larger --threads is a typo, not a setting.
int max_threads() { return 4 * std::max(1, omp_get_num_procs()); }

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fmt(const char* format, auto... args) {
    char buf[256];
    std::snprintf(buf, sizeof buf, format, args...);
    return buf;
}

std::string clock_time(double seconds) {
    const long s = std::lround(std::max(0.0, seconds));
    return fmt("%ld:%02ld", s / 60, s % 60);
}

// ---- model, optimizer, loss -------------------------------------------------------------------

std::unique_ptr<optim::Optimizer> build_optimizer(const Options& o, std::vector<Tensor> params) {
    if (o.optimizer == "sgd")
        return std::make_unique<optim::SGD>(std::move(params), optim::SGDOptions{.lr = o.lr, .momentum = 0.9,
                                                                                 .weight_decay = o.weight_decay});
    if (o.optimizer == "adamw")
        return std::make_unique<optim::AdamW>(std::move(params), optim::AdamWOptions{.lr = o.lr, .weight_decay = o.weight_decay});
    return std::make_unique<optim::Adam>(std::move(params), optim::AdamOptions{.lr = o.lr, .weight_decay = o.weight_decay});
}

// The training objective: one of the loss layer's formulations of (smoothed) cross-entropy.
class Objective {
public:
    Objective(const Options& o, int64_t num_classes)
        : kind_(o.loss),
          eps_(o.smoothing),
          convention_(o.convention == "off-target" ? Smoothing::OffTarget : Smoothing::Uniform),
          num_classes_(num_classes),
          ce_(ce_options(kind_ == "ls" ? eps_ : 0.0, convention_)) {
        if (kind_ == "mixup" || kind_ == "cutmix") {
            nn::MixupOptions mo;
            mo.mixup_alpha = kind_ == "mixup" ? o.mixup_alpha : 0.0;
            mo.cutmix_alpha = kind_ == "cutmix" ? o.cutmix_alpha : 0.0;
            mo.label_smoothing = eps_;
            mo.num_classes = num_classes;
            mo.seed = o.seed;
            mixup_.emplace(mo);
        }
    }

    // The batch the model sees (mixed for mixup / CutMix) and the loss of its logits.
    Tensor prepare(const Tensor& images, const Tensor& labels) {
        if (!mixup_) return images;
        nn::MixupResult r = (*mixup_)(images, labels);
        mixed_target_ = r.target;
        return r.input;
    }

    Tensor loss(const Tensor& logits, const Tensor& labels) const {
        if (kind_ == "ce" || kind_ == "ls") return ce_(logits, labels);
        if (kind_ == "kl")
            return kl_(log_softmax(logits, 1), smooth_targets(labels, num_classes_, eps_, convention_));
        if (kind_ == "soft") return soft_(logits, smooth_targets(labels, num_classes_, eps_, convention_));
        return soft_(logits, mixed_target_);
    }

private:
    static CrossEntropyOptions ce_options(double eps, Smoothing convention) {
        CrossEntropyOptions ce;
        ce.label_smoothing = eps;
        ce.smoothing = convention;
        return ce;
    }

    std::string kind_;
    double eps_;
    Smoothing convention_;
    int64_t num_classes_;
    nn::CrossEntropyLoss ce_;
    nn::KLDivLoss kl_{Reduction::BatchMean};
    nn::SoftTargetCrossEntropy soft_;
    std::optional<nn::Mixup> mixup_;
    Tensor mixed_target_;
};

// ---- evaluation -------------------------------------------------------------------------------

struct Eval {
    double accuracy = 0, nll = 0, ece = 0;
    CalibrationTable table;
};

Eval evaluate(const Tensor& logits, const Tensor& labels) {
    Eval e;
    const std::vector<int64_t> pred = argmax(logits, 1).to_vector<int64_t>();
    const std::vector<int64_t> y = labels.to_vector<int64_t>();
    int64_t correct = 0;
    for (size_t i = 0; i < y.size(); ++i) correct += pred[i] == y[i];
    e.accuracy = static_cast<double>(correct) / static_cast<double>(y.size());
    e.nll = cross_entropy(logits, labels).item<double>();
    e.table = expected_calibration_error(softmax(logits, 1), labels, 15);
    e.ece = e.table.ece;
    return e;
}

// ---- progress ---------------------------------------------------------------------------------

// A progress bar redrawn in place on a terminal; plain lines every log_every batches otherwise.
class Progress {
public:
    Progress(int epochs, int64_t batches, int64_t log_every)
        : tty_(isatty(STDOUT_FILENO) != 0), epochs_(epochs), batches_(batches), log_every_(log_every) {}

    void update(int epoch, int64_t batch, double running_loss, double images_per_s, double eta) {
        const bool last = batch == batches_;
        if (tty_) {
            const double now = seconds_since(start_);
            if (!last && now - last_draw_ < 0.1) return;
            last_draw_ = now;
            constexpr int width = 24;
            const int filled = static_cast<int>(width * batch / std::max<int64_t>(batches_, 1));
            std::string bar(filled, '#');
            bar.append(width - filled, '.');
            std::printf("\repoch %d/%d [%s] %lld/%lld  loss %.4f  %6.0f img/s  ETA %s \x1b[K", epoch, epochs_,
                        bar.c_str(), static_cast<long long>(batch), static_cast<long long>(batches_), running_loss,
                        images_per_s, clock_time(eta).c_str());
            std::fflush(stdout);
        } else if (log_every_ > 0 && (batch % log_every_ == 0)) {
            std::printf("epoch %d/%d batch %lld/%lld loss %.4f %.0f img/s\n", epoch, epochs_,
                        static_cast<long long>(batch), static_cast<long long>(batches_), running_loss, images_per_s);
            std::fflush(stdout);
        }
    }

    // Ends the epoch with one line (replacing the bar on a terminal).
    void epoch_done(const std::string& line) {
        std::printf(tty_ ? "\r%s\x1b[K\n" : "%s\n", line.c_str());
        std::fflush(stdout);
    }

private:
    bool tty_;
    int epochs_;
    int64_t batches_, log_every_;
    Clock::time_point start_ = Clock::now();
    double last_draw_ = -1.0;
};

// ---- training checkpoints ---------------------------------------------------------------------

// The flags that shape a run: a checkpoint records them, and resuming under other values is refused
// (the schedule's length, the data order and the update rule all depend on them).
nn::Metadata run_signature(const Options& o) {
    return {{"model", o.model},
            {"loss", o.loss},
            {"smoothing", fmt("%.17g", o.smoothing)},
            {"smoothing-convention", o.convention},
            {"epochs", std::to_string(o.epochs)},
            {"batch-size", std::to_string(o.batch_size)},
            {"lr", fmt("%.17g", o.lr)},
            {"optimizer", o.optimizer},
            {"schedule", o.schedule},
            {"weight-decay", fmt("%.17g", o.weight_decay)},
            {"seed", std::to_string(o.seed)},
            {"dataset", o.dataset},
            {"holdout", std::to_string(o.holdout)},
            {"train-limit", std::to_string(o.train_limit)},
            {"world-size", std::to_string(process_group ? process_group->size() : 1)}};
}

Tensor int_scalar(int64_t v) { return from_vector<int64_t>({v}, Shape{}); }

// Everything the next epoch depends on, as one safetensors file: the weights ("model."), the
// optimizer's moments and step counts ("optimizer."), the schedule's position ("scheduler."), the
// default generator ("rng.seed", "rng.offset"), and the position in the data order ("train.epoch"
// epochs done, "train.batch" batches into the next one; the order of epoch e is a function of the
// seed and e, see data::DataLoader). Written atomically after each epoch.
void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer& opt,
                     const optim::LRScheduler* sched, int64_t epochs_done, const Options& o) {
    std::map<std::string, Tensor> t;
    for (const auto& [k, v] : model.state_dict()) t["model." + k] = v;
    for (const auto& [k, v] : opt.state_dict()) t["optimizer." + k] = v;
    if (sched)
        for (const auto& [k, v] : sched->state_dict()) t["scheduler." + k] = v;
    const Generator& g = default_generator();
    t["rng.seed"] = int_scalar(static_cast<int64_t>(g.seed()));
    t["rng.offset"] = int_scalar(static_cast<int64_t>(g.offset()));
    t["train.epoch"] = int_scalar(epochs_done);
    t["train.batch"] = int_scalar(0);
    nn::save_safetensors(t, path, run_signature(o));
}

// Restores a checkpoint into the freshly built run; returns the epochs it had done. Every part must
// be present and match (same flags, same model, same optimizer and schedule), else one error line.
int64_t load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer& opt,
                        optim::LRScheduler* sched, const Options& o) {
    nn::Metadata meta;
    const std::map<std::string, Tensor> all = nn::load_safetensors(path, &meta);
    for (const auto& [flag, value] : run_signature(o)) {
        const auto it = meta.find(flag);
        if (it == meta.end()) throw Error("--resume " + path + ": not a training checkpoint (no --" + flag + " recorded)");
        if (it->second != value)
            throw Error("--resume " + path + ": the checkpoint was made with --" + flag + " " + it->second +
                        ", this run has --" + flag + " " + value);
    }
    std::map<std::string, std::map<std::string, Tensor>> parts;
    for (const auto& [k, v] : all) {
        const size_t dot = k.find('.');
        if (dot == std::string::npos) throw Error("--resume " + path + ": unexpected entry \"" + k + "\"");
        parts[k.substr(0, dot)][k.substr(dot + 1)] = v;
    }
    for (const auto& [part, entries] : parts)
        if (part != "model" && part != "optimizer" && part != "scheduler" && part != "rng" && part != "train")
            throw Error("--resume " + path + ": unexpected entry \"" + part + "." + entries.begin()->first + "\"");
    auto count = [&](const std::string& part, const std::string& key) {
        const auto& m = parts[part];
        const auto it = m.find(key);
        if (it == m.end() || it->second.dtype() != DType::i64 || it->second.dim() != 0)
            throw Error("--resume " + path + ": missing or malformed \"" + part + "." + key + "\"");
        return it->second.item<int64_t>();
    };
    const int64_t epochs_done = count("train", "epoch");
    if (epochs_done < 0 || epochs_done > o.epochs)
        throw Error(fmt("--resume %s: the checkpoint is at epoch %lld, outside [0, --epochs = %d]", path.c_str(),
                        static_cast<long long>(epochs_done), o.epochs));
    if (count("train", "batch") != 0)
        throw Error("--resume " + path + ": the checkpoint is not at the end of an epoch");
    if ((sched != nullptr) != (parts.count("scheduler") > 0))
        throw Error("--resume " + path + ": the checkpoint's schedule does not match --schedule " + o.schedule);
    model.load_state_dict(parts["model"], true);
    opt.load_state_dict(parts["optimizer"]);
    if (sched) sched->load_state_dict(parts["scheduler"]);
    default_generator().set_state(static_cast<uint64_t>(count("rng", "seed")),
                                  static_cast<uint64_t>(count("rng", "offset")));
    return epochs_done;
}

// ---- the program ------------------------------------------------------------------------------

// One clear line for a bad flag: "--flag must ..., got value".
[[noreturn]] void bad_flag(const std::string& message) { throw Error(message); }

bool in_range(double v, double lo, double hi) { return v >= lo && v <= hi; }  // false for NaN

// A file the run will write: its folder must exist (or be creatable) and be writable, and the path
// must not be a folder. Checked before training so that a typo cannot cost the trained model.
void check_writable_file(const char* flag, const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) bad_flag(std::string(flag) + ": " + path + " is a directory, not a file");
    const fs::path parent = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    if (!fs::is_directory(parent, ec) || ::access(parent.c_str(), W_OK) != 0)
        bad_flag(std::string(flag) + ": cannot write into " + parent.string() + ": " + std::strerror(errno));
    if (fs::exists(path, ec) && ::access(path.c_str(), W_OK) != 0)
        bad_flag(std::string(flag) + ": cannot write " + path + ": " + std::strerror(errno));
}

// A folder the run will write into.
void check_writable_dir(const char* flag, const std::string& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!fs::is_directory(dir, ec) || ::access(dir.c_str(), W_OK) != 0)
        bad_flag(std::string(flag) + ": cannot write into " + dir + (ec ? ": " + ec.message() : ""));
}

void check_options(Options& o) {
    if (!o.epochs_given) o.epochs = o.model == "mlp" ? 5 : 3;
    if (o.optimizer.empty()) o.optimizer = o.model == "mlp" ? "sgd" : "adam";
    if (!o.lr_given) o.lr = o.optimizer == "sgd" ? 0.05 : 2e-3;
    if (!o.smoothing_given) o.smoothing = (o.loss == "ce" || o.loss == "mixup" || o.loss == "cutmix") ? 0.0 : 0.1;
    if (o.threads_given && (o.threads < 1 || o.threads > max_threads()))
        bad_flag(fmt("--threads must lie in [1, %d] (4 per processor), got %d", max_threads(), o.threads));
    if (!in_range(o.smoothing, 0.0, 1.0)) bad_flag(fmt("--smoothing must lie in [0, 1], got %g", o.smoothing));
    if (o.loss == "ce" && o.smoothing != 0.0)
        bad_flag("--smoothing needs a smoothed loss (--loss ls, kl or soft); ce is plain cross-entropy");
    if ((o.loss == "mixup" || o.loss == "cutmix") && o.convention != "uniform")
        bad_flag("--loss " + o.loss + " smooths its mixed targets uniformly; --smoothing-convention off-target "
                 "applies to ls, kl and soft");
    if (o.epochs < 0 || o.epochs > 100000) bad_flag(fmt("--epochs must lie in [0, 100000], got %d", o.epochs));
    if (o.batch_size < 1) bad_flag(fmt("--batch-size must be at least 1, got %lld", static_cast<long long>(o.batch_size)));
    if (!(o.lr > 0.0 && std::isfinite(o.lr))) bad_flag(fmt("--lr must be positive and finite, got %g", o.lr));
    if (!(o.weight_decay >= 0.0 && std::isfinite(o.weight_decay)))
        bad_flag(fmt("--weight-decay must be non-negative and finite, got %g", o.weight_decay));
    if (!(o.mixup_alpha > 0.0 && std::isfinite(o.mixup_alpha)))
        bad_flag(fmt("--mixup-alpha must be positive and finite, got %g", o.mixup_alpha));
    if (!(o.cutmix_alpha > 0.0 && std::isfinite(o.cutmix_alpha)))
        bad_flag(fmt("--cutmix-alpha must be positive and finite, got %g", o.cutmix_alpha));
    if (o.holdout < 0) bad_flag(fmt("--holdout must not be negative, got %lld", static_cast<long long>(o.holdout)));
    if (o.train_limit < 0)
        bad_flag(fmt("--train-limit must not be negative, got %lld", static_cast<long long>(o.train_limit)));
    if (o.test_limit < 0) bad_flag(fmt("--test-limit must not be negative, got %lld", static_cast<long long>(o.test_limit)));
    if (o.log_every < 0) bad_flag(fmt("--log-every must not be negative, got %lld", static_cast<long long>(o.log_every)));
    if (o.stop_after < 0 || o.stop_after > o.epochs)
        bad_flag(fmt("--stop-after must lie in [0, --epochs = %d], got %d", o.epochs, o.stop_after));
    if (o.stop_after > 0 && o.checkpoint.empty()) bad_flag("--stop-after needs --checkpoint (else the run is lost)");
    if (!o.resume.empty() && !o.load.empty()) bad_flag("--resume and --load exclude each other (--resume restores the weights)");
    if (!o.resume.empty() && (o.loss == "mixup" || o.loss == "cutmix"))
        bad_flag("--resume does not restore the mixup/CutMix generator; use --load to start from the weights");
    if (!o.save.empty()) check_writable_file("--save", o.save);
    if (!o.checkpoint.empty()) check_writable_file("--checkpoint", o.checkpoint);
    if (!o.metrics_out.empty()) check_writable_file("--metrics-out", o.metrics_out);
    if (!o.plot_dir.empty()) check_writable_dir("--plot-dir", o.plot_dir);
    if (!(o.bucket_mb > 0.0 && std::isfinite(o.bucket_mb)))
        bad_flag(fmt("--bucket-mb must be positive and finite, got %g", o.bucket_mb));
    if (o.dist == "mpi" && o.device != "cpu") bad_flag("--dist mpi trains on the CPU; use --dist nccl with --device cuda");
    if (o.dist == "nccl" && o.device != "cuda") bad_flag("--dist nccl needs --device cuda");
    if (o.data.empty())
        o.data = o.dataset == "fashion" ? data::default_fashion_mnist_dir() : data::default_mnist_dir();
}

std::string describe_loss(const Options& o) {
    if (o.loss == "ce") return "cross-entropy";
    const std::string eps = fmt("ε = %g, %s", o.smoothing, o.convention.c_str());
    if (o.loss == "ls") return "cross-entropy with label smoothing (" + eps + ")";
    if (o.loss == "kl") return "KL divergence from smoothed targets (" + eps + ")";
    if (o.loss == "soft") return "soft-target cross-entropy, smoothed targets (" + eps + ")";
    const double alpha = o.loss == "mixup" ? o.mixup_alpha : o.cutmix_alpha;
    return o.loss + fmt(" (α = %g, ε = %g) with soft-target cross-entropy", alpha, o.smoothing);
}

int run(Options o) {
    if (o.dist != "none") process_group = dist::new_process_group(o.dist);
    const int rank = process_group ? process_group->rank() : 0;
    const int world = process_group ? process_group->size() : 1;
    // Only rank 0 speaks; the others' errors still reach stderr.
    if (rank != 0 && !std::freopen("/dev/null", "w", stdout)) throw Error("cannot silence stdout of rank " + std::to_string(rank));
    check_options(o);
    if (o.threads_given) omp_set_num_threads(o.threads);
    const int threads = omp_get_max_threads();

    Device device = Device::cpu();
    if (o.device == "cuda") {
        if (!cuda_is_available()) throw Error(std::string("--device cuda: ") + cuda_unavailable_reason());
        device = process_group ? process_group->device() : Device::cuda();
    }

    const auto t_load = Clock::now();
    const bool fashion = o.dataset == "fashion";
    data::ImageDataset train_all = fashion ? data::load_fashion_mnist(o.data, true) : data::load_mnist(o.data, true);
    const data::ImageDataset test_all =
        fashion ? data::load_fashion_mnist(o.data, false) : data::load_mnist(o.data, false);
    const data::ImageDataset test =
        o.test_limit > 0 ? test_all.slice(0, std::min(o.test_limit, test_all.size())) : test_all;
    if (o.holdout < 0 || o.holdout >= train_all.size())
        throw Error(fmt("--holdout must lie in [0, %lld)", static_cast<long long>(train_all.size())));
    const int64_t n_train = train_all.size() - o.holdout;
    const data::ImageDataset heldout = train_all.slice(n_train, o.holdout);
    data::ImageDataset train = train_all.slice(0, o.train_limit > 0 ? std::min(o.train_limit, n_train) : n_train);
    if (o.batch_size > train.size())
        bad_flag(fmt("--batch-size must not exceed the %lld training images, got %lld",
                     static_cast<long long>(train.size()), static_cast<long long>(o.batch_size)));
    const double load_s = seconds_since(t_load);

    manual_seed(o.seed);  // dropout and anything else drawing from the default generator
    Generator init_gen(o.seed);
    std::shared_ptr<nn::Sequential> model = build_mnist_model(o.model, init_gen);
    if (!o.load.empty()) nn::load(*model, o.load);
    model->to(device);
    // The network a step runs: the model, or the model inside DistributedDataParallel (same
    // parameters; checkpoints and saved weights hold the model's own names).
    std::shared_ptr<nn::Module> net = model;
    if (process_group)
        net = std::make_shared<nn::DistributedDataParallel>(
            model, process_group, nn::DistributedDataParallelOptions{.bucket_cap_mb = o.bucket_mb, .overlap = !o.no_overlap});

    data::DataLoader loader =
        process_group ? data::DataLoader(train, {.batch_size = o.batch_size},
                                         data::DistributedSampler(train.size(), world, rank, {.seed = o.seed}))
                      : data::DataLoader(train, {.batch_size = o.batch_size, .shuffle = true, .seed = o.seed});
    std::unique_ptr<optim::Optimizer> opt = build_optimizer(o, net->parameters());
    std::unique_ptr<optim::LRScheduler> sched;
    const int64_t total_steps = static_cast<int64_t>(o.epochs) * loader.size();
    if (o.schedule == "cosine" && total_steps > 0)
        sched = std::make_unique<optim::CosineAnnealingLR>(*opt, total_steps);
    Objective objective(o, train.num_classes);
    int first_epoch = 1;
    if (!o.resume.empty()) {
        first_epoch = static_cast<int>(load_checkpoint(o.resume, *model, *opt, sched.get(), o)) + 1;
        loader.set_epoch(first_epoch - 1);
        std::printf("resumed from %s after epoch %d\n", o.resume.c_str(), first_epoch - 1);
    }

    std::printf("%s: %lld training images (%lld held out for temperature scaling), %lld test images, loaded in %.2f s\n",
                o.data.c_str(), static_cast<long long>(train.size()), static_cast<long long>(heldout.size()),
                static_cast<long long>(test.size()), load_s);
    std::printf("model %s (%lld parameters), %s, %s lr %g (%s), batch %lld, %d epochs, %d threads, %s\n",
                o.model.c_str(), static_cast<long long>(model->num_parameters()), describe_loss(o).c_str(),
                o.optimizer.c_str(), o.lr, o.schedule.c_str(), static_cast<long long>(o.batch_size), o.epochs, threads,
                o.device.c_str());
    if (process_group)
        std::printf("data-parallel over %d %s processes: batch %lld per process, %lld in all, %s\n", world,
                    o.dist.c_str(), static_cast<long long>(o.batch_size), static_cast<long long>(o.batch_size) * world,
                    net->name().c_str());
    std::fflush(stdout);

    std::ofstream metrics;
    if (!o.metrics_out.empty() && rank == 0) {
        const std::filesystem::path p(o.metrics_out);
        if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
        metrics.open(p);
        if (!metrics) throw Error("--metrics-out: cannot write " + o.metrics_out);
    }

    Progress progress(o.epochs, loader.size(), o.log_every);
    std::vector<double> epoch_seconds;
    Tensor test_labels = test.labels;
    for (int epoch = first_epoch; epoch <= o.epochs; ++epoch) {
        model->train();
        const auto t0 = Clock::now();
        double loss_sum = 0.0;
        int64_t batches = 0, images = 0;
        for (const data::Batch& batch : loader) {
            const Tensor x = batch.images.to(device), y = batch.labels.to(device);
            const Tensor input = objective.prepare(x, y);
            const Tensor loss = objective.loss((*net)(input), y);
            opt->zero_grad();
            loss.backward();
            opt->step();
            if (sched) sched->step();
            loss_sum += loss.item<double>();
            ++batches;
            images += x.size(0) * world;
            const double elapsed = seconds_since(t0);
            const double rate = images / std::max(elapsed, 1e-9);
            progress.update(epoch, batches, loss_sum / batches, rate,
                            (train.size() - images) / rate + (o.epochs - epoch) * (train.size() / rate));
        }
        double train_loss = batches ? loss_sum / batches : 0.0;
        if (process_group) {
            // The mean over the ranks (each rank's own batches are a W-th of the data).
            Tensor mean_loss = from_vector<double>({train_loss});
            process_group->allreduce(mean_loss, dist::ReduceOp::Average);
            train_loss = mean_loss.item<double>();
        }
        const double seconds = seconds_since(t0);
        epoch_seconds.push_back(seconds);
        if (rank == 0) {  // rank 0 evaluates, reports and checkpoints for the job
            const Eval e = evaluate(predict(*model, test, device), test_labels);
            progress.epoch_done(fmt("epoch %d/%d  train loss %.4f  test acc %.2f %%  NLL %.4f  ECE %.2f %%  %.2f s",
                                    epoch, o.epochs, train_loss, 100 * e.accuracy, e.nll, 100 * e.ece, seconds));
            if (metrics.is_open()) {
                const nlohmann::json line = {{"epoch", epoch},         {"train_loss", train_loss}, {"test_acc", e.accuracy},
                                             {"test_nll", e.nll},      {"ece", e.ece},             {"seconds", seconds},
                                             {"model", o.model},       {"loss", o.loss},           {"smoothing", o.smoothing},
                                             {"threads", threads}};
                metrics << line.dump() << '\n';
                metrics.flush();
                if (!metrics) throw Error("--metrics-out: writing " + o.metrics_out + " failed");
            }
            if (!o.checkpoint.empty()) save_checkpoint(o.checkpoint, *model, *opt, sched.get(), epoch, o);
        }
        if (epoch == o.stop_after) {
            if (process_group) process_group->barrier();  // no rank leaves before the checkpoint is written
            std::printf("stopped after epoch %d; continue with --resume %s\n", epoch, o.checkpoint.c_str());
            return 0;
        }
    }

    if (rank != 0) return 0;
    if (!o.save.empty()) {
        nn::save(*model, o.save, {{"model", o.model}, {"loss", o.loss}});
        std::printf("saved %s\n", o.save.c_str());
    }

    // ---- summary: calibration before and after temperature scaling ----
    const Tensor test_logits = predict(*model, test, device);
    const Eval before = evaluate(test_logits, test_labels);
    std::optional<double> temperature;
    std::string t_note;
    if (heldout.size() > 0) {
        try {
            temperature = fit_temperature(predict(*model, heldout, device), heldout.labels);
        } catch (const Error& err) {
            t_note = std::string("temperature not fitted: ") + err.what();
        }
    } else {
        t_note = "temperature not fitted: --holdout 0 leaves no held-out images";
    }
    std::optional<Eval> after;
    if (temperature) after = evaluate(test_logits * (1.0 / *temperature), test_labels);

    const double mean_s =
        epoch_seconds.empty() ? 0.0 : std::accumulate(epoch_seconds.begin(), epoch_seconds.end(), 0.0) / epoch_seconds.size();
    std::printf("\n%-22s %14s %14s\n", fashion ? "Fashion-MNIST test" : "MNIST test", "as trained",
                temperature ? fmt("T = %.3f", *temperature).c_str() : "(no T)");
    auto row = [&](const char* name, double b, std::optional<double> a, const char* f) {
        std::printf("%-22s %14s %14s\n", name, fmt(f, b).c_str(), a ? fmt(f, *a).c_str() : "-");
    };
    row("accuracy", 100 * before.accuracy, after ? std::optional(100 * after->accuracy) : std::nullopt, "%.2f %%");
    row("NLL", before.nll, after ? std::optional(after->nll) : std::nullopt, "%.4f");
    row("ECE (15 bins)", 100 * before.ece, after ? std::optional(100 * after->ece) : std::nullopt, "%.2f %%");
    if (temperature)
        std::printf("T fitted on the last %lld training images, held out of training\n",
                    static_cast<long long>(heldout.size()));
    else
        std::printf("%s\n", t_note.c_str());
    std::string per_epoch;
    for (double s : epoch_seconds) per_epoch += (per_epoch.empty() ? "" : ", ") + fmt("%.2f", s);
    if (epoch_seconds.empty())
        std::printf("no training epochs (--epochs 0)\n");
    else
        std::printf("seconds per epoch: %.2f (%s), %d threads\n", mean_s, per_epoch.c_str(), threads);

    if (!o.plot_dir.empty()) {
        std::filesystem::create_directories(o.plot_dir);
        const std::string stem = o.plot_dir + "/" + o.model + "_" + o.loss;
        const std::string what = o.model + ", " + describe_loss(o);
        write_reliability_svg(before.table, stem + "_reliability.svg", what);
        std::printf("wrote %s_reliability.svg", stem.c_str());
        if (after) {
            write_reliability_svg(after->table, stem + "_reliability_scaled.svg",
                                  what + fmt(", temperature-scaled (T = %.3f)", *temperature));
            std::printf(" and %s_reliability_scaled.svg", stem.c_str());
        }
        std::printf("\n");
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"Trains an MLP or a CNN on MNIST with lsgrad and reports accuracy and calibration."};
    app.add_option("--model", o.model, "mlp (784-256-256-10) or cnn (conv32-pool-conv64-pool-fc128-fc10)")
        ->check(CLI::IsMember({"mlp", "cnn"}))
        ->capture_default_str();
    app.add_option("--loss", o.loss, "ce, ls (label smoothing), kl, soft, mixup or cutmix")
        ->check(CLI::IsMember({"ce", "ls", "kl", "soft", "mixup", "cutmix"}))
        ->capture_default_str();
    app.add_option("--smoothing", o.smoothing, "label smoothing ε (default 0.1 for ls, kl, soft; 0 otherwise)");
    app.add_option("--smoothing-convention", o.convention,
                   "uniform (1−ε+ε/K on the class) or off-target (1−ε on the class, ε/(K−1) elsewhere)")
        ->check(CLI::IsMember({"uniform", "off-target"}))
        ->capture_default_str();
    app.add_option("--epochs", o.epochs, "epochs (default: mlp 5, cnn 3)");
    app.add_option("--batch-size", o.batch_size, "batch size")->capture_default_str();
    app.add_option("--lr", o.lr, "learning rate (default: sgd 0.05, adam/adamw 2e-3)");
    app.add_option("--optimizer", o.optimizer, "sgd (momentum 0.9), adam or adamw (default: mlp sgd, cnn adam)")
        ->check(CLI::IsMember({"sgd", "adam", "adamw"}));
    app.add_option("--schedule", o.schedule, "learning rate schedule per batch: cosine (to 0 at the end) or constant")
        ->check(CLI::IsMember({"cosine", "constant"}))
        ->capture_default_str();
    app.add_option("--weight-decay", o.weight_decay, "weight decay (L2 for sgd/adam, decoupled for adamw)")
        ->capture_default_str();
    app.add_option("--mixup-alpha", o.mixup_alpha, "mixup's Beta(α, α)")->capture_default_str();
    app.add_option("--cutmix-alpha", o.cutmix_alpha, "CutMix's Beta(α, α)")->capture_default_str();
    app.add_option("--seed", o.seed, "seed of initialisation, shuffling and mixing")->capture_default_str();
    app.add_option("--threads", o.threads, "OpenMP threads (default: OMP_NUM_THREADS, else every core)");
    app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
    app.add_option("--data", o.data,
                   "folder of the IDX files (default: $LSGRAD_DATA_DIR, else ${XDG_CACHE_HOME:-~/.cache}/lsgrad/mnist; "
                   "fashion: /usr/share/datasets/fashion-mnist)");
    app.add_option("--dataset", o.dataset, "mnist or fashion")->check(CLI::IsMember({"mnist", "fashion"}))->capture_default_str();
    app.add_option("--holdout", o.holdout, "last training images held out of training to fit the temperature")
        ->capture_default_str();
    app.add_option("--train-limit", o.train_limit, "train on only the first N training images (0: all)");
    app.add_option("--save", o.save, "write the trained weights to this safetensors file");
    app.add_option("--load", o.load, "start from the weights in this safetensors file");
    app.add_option("--checkpoint", o.checkpoint,
                   "after every epoch, write the whole training state (weights, optimizer, schedule, RNG, epoch) here");
    app.add_option("--resume", o.resume,
                   "continue the run saved by --checkpoint (same flags): k epochs + --resume gives the same bits as "
                   "one uninterrupted run at the same thread count");
    app.add_option("--stop-after", o.stop_after, "stop after this epoch (with --checkpoint, to --resume later)");
    app.add_option("--test-limit", o.test_limit, "evaluate on only the first N test images (0: all)");
    app.add_option("--metrics-out", o.metrics_out, "append one JSON line per epoch to this file");
    app.add_option("--plot-dir", o.plot_dir, "write reliability diagrams (SVG) into this folder");
    app.add_option("--log-every", o.log_every, "without a terminal, also print a line every N batches");
    app.add_option("--dist", o.dist,
                   "data-parallel under mpirun: none, mpi (CPU processes) or nccl (one GPU per process, --device cuda)")
        ->check(CLI::IsMember({"none", "mpi", "nccl"}))
        ->capture_default_str();
    app.add_option("--bucket-mb", o.bucket_mb, "--dist: gradient bucket size in MiB")->capture_default_str();
    app.add_flag("--no-overlap", o.no_overlap,
                 "--dist: reduce gradients only after backward instead of during it (for comparison)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    o.smoothing_given = app.count("--smoothing") > 0;
    o.epochs_given = app.count("--epochs") > 0;
    o.lr_given = app.count("--lr") > 0;
    o.threads_given = app.count("--threads") > 0;

    try {
        return run(o);
    } catch (const std::exception& e) {
        // End a half-drawn progress bar so the message starts its own line.
        if (isatty(STDOUT_FILENO)) std::printf("\n");
        std::fflush(stdout);
        // One rank failing would leave the others blocked in their next allreduce: end the job.
        if (process_group && process_group->size() > 1) process_group->abort(1, std::string("error: ") + e.what());
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}

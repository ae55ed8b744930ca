// "When Does Label Smoothing Help?" (Müller, Kornblith and Hinton, NeurIPS 2019) on MNIST and
// Fashion-MNIST: its three claims measured with lsgrad, written as results.json, SVG figures and a
// README with the tables and a verdict per claim.
//
//   label_smoothing --out docs/label_smoothing          (the full study; scripts/label_smoothing_study.sh)
//   label_smoothing --quick --out /tmp/ls               (a smoke run: one seed, small subsets, one epoch)
//
// 1. Representations: the penultimate activations of 100 examples of each of three classes,
//    projected onto the plane through the three classes' templates (rows of the last Linear's
//    weight), for ε = 0 and 0.1, training and test examples, with a cluster-tightness number.
// 2. Calibration: ε ∈ {0, 0.05, 0.1, 0.2, 0.3} × {MLP, CNN} × {MNIST, Fashion-MNIST} × seeds:
//    accuracy, NLL, ECE (equal-width and equal-mass bins), classwise ECE, MCE, Brier score, before
//    and after temperature scaling (and vector scaling), T fitted on held-out training images.
// 3. Distillation (MNIST): teachers 784-1200-1200-10 with dropout, trained with ε ∈ {0, 0.1};
//    students 784-800-800-10 distilled from them at T ∈ {1, 2, 4} with β = 0.6; errors over seeds.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/data/dataset.h"
#include "lsgrad/nn/layers.h"
#include "lsgrad/ops/calibration.h"
#include "lsgrad/ops/elementwise.h"
#include "lsgrad/ops/index.h"
#include "lsgrad/ops/loss.h"
#include "lsgrad/ops/reduce.h"
#include "lsgrad/optim/optimizer.h"
#include "lsgrad/optim/scheduler.h"
#include "mnist_models.h"
#include "study.h"

namespace {

using namespace lsg;
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fmt(const char* format, auto... args) {
    char buf[512];
    std::snprintf(buf, sizeof buf, format, args...);
    return buf;
}

// ---- configuration ------------------------------------------------------------------------------

struct Config {
    std::string command;  // the options of this run, data folders left out
    bool quick = false;
    std::string out = "docs/label_smoothing";
    std::string mnist_dir, fashion_dir;
    int seeds = 3;
    int threads = 0;
    std::vector<double> epsilons = {0.0, 0.05, 0.1, 0.2, 0.3};
    // Calibration sweep: epochs and training-set sizes (0: every image not held out).
    int mlp_epochs = 5, cnn_epochs = 2;
    int64_t mlp_train = 0, cnn_train = 20000;
    int64_t holdout = 5000;   // the last training images, for fitting T
    int64_t test_limit = 0;   // 0: the whole test set
    // Distillation.
    int teacher_epochs = 10, student_epochs = 10;
    int64_t distill_train = 0;
    std::vector<double> temperatures = {1.0, 2.0, 4.0};
    double beta = 0.6;
    double dropout = 0.5;
    // Projections: examples per class and the classes.
    int64_t per_class = 100;
    std::array<int64_t, 3> mnist_classes = {3, 5, 8};
    std::array<int64_t, 3> fashion_classes = {0, 2, 6};

    void make_quick() {
        quick = true;
        seeds = 1;
        mlp_epochs = cnn_epochs = 1;
        mlp_train = 3000;
        cnn_train = 1500;
        holdout = 1000;
        test_limit = 1000;
        teacher_epochs = student_epochs = 1;
        distill_train = 3000;
        per_class = 30;
    }
};

json config_json(const Config& c) {
    return {{"command", c.command},
            {"quick", c.quick},
            {"seeds", c.seeds},
            {"seed_values", [&] {
                 std::vector<int> s;
                 for (int i = 0; i < c.seeds; ++i) s.push_back(i);
                 return s;
             }()},
            {"epsilons", c.epsilons},
            {"mlp", {{"epochs", c.mlp_epochs}, {"train_images", c.mlp_train}, {"optimizer", "SGD momentum 0.9"},
                     {"lr", 0.05}, {"schedule", "cosine per batch"}, {"batch_size", 128}}},
            {"cnn", {{"epochs", c.cnn_epochs}, {"train_images", c.cnn_train}, {"optimizer", "Adam"}, {"lr", 2e-3},
                     {"schedule", "cosine per batch"}, {"batch_size", 128}}},
            {"holdout_images", c.holdout},
            {"test_images", c.test_limit},
            {"distillation", {{"teacher", "784-1200-1200-10, ReLU, dropout after each hidden layer"},
                              {"student", "784-800-800-10, ReLU, no dropout"},
                              {"dropout", c.dropout},
                              {"teacher_epochs", c.teacher_epochs},
                              {"student_epochs", c.student_epochs},
                              {"train_images", c.distill_train},
                              {"temperatures", c.temperatures},
                              {"beta", c.beta},
                              {"optimizer", "SGD momentum 0.9, lr 0.05, cosine per batch, batch 128"},
                              {"loss", "beta*T^2*KL(teacher_T || student_T) + (1-beta)*CE(student, y)"}}},
            {"projection", {{"per_class", c.per_class},
                            {"mnist_classes", c.mnist_classes},
                            {"fashion_classes", c.fashion_classes}}}};
}

// ---- data ---------------------------------------------------------------------------------------

struct Split {
    std::string key, name;
    std::vector<std::string> class_names;
    data::ImageDataset train_all, heldout, test;
    std::array<int64_t, 3> classes{};
};

data::ImageDataset first(const data::ImageDataset& ds, int64_t n) {
    return n > 0 && n < ds.size() ? ds.slice(0, n) : ds;
}

Split load_split(const Config& c, bool fashion) {
    Split s;
    s.key = fashion ? "fashion_mnist" : "mnist";
    s.name = fashion ? "Fashion-MNIST" : "MNIST";
    if (fashion)
        s.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    else
        for (int d = 0; d < 10; ++d) s.class_names.push_back(std::to_string(d));
    const data::ImageDataset train = fashion ? data::load_fashion_mnist(c.fashion_dir, true) : data::load_mnist(c.mnist_dir, true);
    const data::ImageDataset test = fashion ? data::load_fashion_mnist(c.fashion_dir, false) : data::load_mnist(c.mnist_dir, false);
    if (c.holdout <= 0 || c.holdout >= train.size())
        throw Error(fmt("--holdout must lie in (0, %lld)", static_cast<long long>(train.size())));
    const int64_t n_train = train.size() - c.holdout;
    s.train_all = train.slice(0, n_train);
    s.heldout = train.slice(n_train, c.holdout);
    s.test = first(test, c.test_limit);
    s.classes = fashion ? c.fashion_classes : c.mnist_classes;
    return s;
}

// The first `per_class` examples of each of `classes`, in data-set order.
data::ImageDataset class_subset(const data::ImageDataset& ds, const std::array<int64_t, 3>& classes, int64_t per_class) {
    const std::vector<int64_t> y = ds.labels.to_vector<int64_t>();
    std::map<int64_t, int64_t> taken;
    std::vector<int64_t> idx;
    for (size_t i = 0; i < y.size(); ++i)
        if (std::find(classes.begin(), classes.end(), y[i]) != classes.end() && taken[y[i]] < per_class) {
            ++taken[y[i]];
            idx.push_back(static_cast<int64_t>(i));
        }
    const Tensor index = from_vector<int64_t>(idx);
    return {index_select(ds.images, 0, index), index_select(ds.labels, 0, index), ds.num_classes};
}

// ---- training -----------------------------------------------------------------------------------

enum class Opt { SGD, Adam };

// The loss of a batch from its logits, labels and the indices of its rows in the training set.
using BatchLoss = std::function<Tensor(const Tensor& logits, const Tensor& labels, const Tensor& rows)>;

// Trains `model` on `ds` for `epochs` epochs, batch 128, shuffled with `seed`, cosine learning rate
// per batch; returns the mean training loss of the last epoch.
double train(nn::Sequential& model, const data::ImageDataset& ds, int epochs, Opt opt_kind, double lr, uint64_t seed,
             const BatchLoss& loss_of) {
    data::DataLoader loader(ds, {.batch_size = 128, .shuffle = true, .seed = seed});
    std::unique_ptr<optim::Optimizer> opt;
    if (opt_kind == Opt::SGD)
        opt = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = lr, .momentum = 0.9});
    else
        opt = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = lr});
    optim::CosineAnnealingLR sched(*opt, std::max<int64_t>(1, static_cast<int64_t>(epochs) * loader.size()));
    model.train();
    double last = 0.0;
    for (int e = 0; e < epochs; ++e) {
        const Tensor order = loader.order(loader.epoch());
        double sum = 0.0;
        int64_t batches = 0;
        for (auto it = loader.begin(); it != loader.end(); ++it) {
            const int64_t b = it->labels.size(0);
            const Tensor rows = order.narrow(0, it.index() * 128, b);
            const Tensor loss = loss_of(model(it->images), it->labels, rows);
            opt->zero_grad();
            loss.backward();
            opt->step();
            sched.step();
            sum += loss.item<double>();
            ++batches;
        }
        last = sum / static_cast<double>(std::max<int64_t>(batches, 1));
    }
    return last;
}

BatchLoss smoothed_ce(double eps) {
    CrossEntropyOptions o;
    o.label_smoothing = eps;
    return [o](const Tensor& logits, const Tensor& y, const Tensor&) { return cross_entropy(logits, y, o); };
}

// ---- calibration metrics ------------------------------------------------------------------------

// Every metric of one set of logits against labels; probabilities in f64.
json metrics_of(const Tensor& logits, const Tensor& labels) {
    const Tensor probs = softmax(logits.to(DType::f64), 1);
    const CalibrationTable ew = expected_calibration_error(probs, labels, 15, Binning::EqualWidth);
    const CalibrationTable em = expected_calibration_error(probs, labels, 15, Binning::EqualMass);
    return {{"accuracy", ew.accuracy},
            {"error", 1.0 - ew.accuracy},
            {"nll", negative_log_likelihood(probs, labels)},
            {"ece", ew.ece},
            {"ece_equal_mass", em.ece},
            {"mce", ew.mce},
            {"classwise_ece", classwise_calibration_error(probs, labels, 15, Binning::EqualWidth).ece},
            {"brier", brier_score(probs, labels)},
            {"mean_confidence", ew.confidence}};
}

const std::vector<std::string> kMetricKeys = {"accuracy", "error", "nll", "ece", "ece_equal_mass",
                                              "mce", "classwise_ece", "brier", "mean_confidence"};

// Mean and std over seeds of every number in `per_seed[i][section][key]` (section "" for the top).
json summarize(const std::vector<json>& per_seed, const std::string& section, const std::vector<std::string>& keys) {
    json out = json::object();
    for (const std::string& k : keys) {
        std::vector<double> v;
        for (const json& s : per_seed) {
            const json& src = section.empty() ? s : s[section];
            if (src.is_object() && src.contains(k) && src[k].is_number()) v.push_back(src[k].get<double>());
        }
        if (v.empty()) {
            out[k] = {{"mean", nullptr}, {"std", nullptr}, {"n", 0}};
            continue;
        }
        const study::MeanStd ms = study::mean_std(v);
        out[k] = {{"mean", ms.mean}, {"std", ms.std}, {"n", v.size()}};
    }
    return out;
}

// ---- the three parts ----------------------------------------------------------------------------

struct Context {
    Config cfg;
    std::vector<Split> splits;
    json results;
    std::vector<std::string> figures;
    std::string out;
};

std::string eps_tag(double eps) { return fmt("%03d", static_cast<int>(std::lround(eps * 100))); }

json projection_of(nn::Sequential& model, const data::ImageDataset& subset, const std::array<int64_t, 3>& classes,
                   study::TemplateProjection* keep) {
    const Tensor h = examples::predict_with(model, subset, Device::cpu(),
                                            [&](const Tensor& x) { return model.forward_pre_logits(x); });
    const Tensor w = model.get_classifier()->weight.detach();
    const study::TemplateProjection p = study::project_onto_templates(h, subset.labels, w, classes);
    if (keep) *keep = p;
    return {{"tightness", study::cluster_tightness(p)}, {"tightness_full_dim", study::cluster_tightness(h, subset.labels)}};
}

// Part 1 and 2: the calibration sweep; the projections come from the same models.
void run_sweep(Context& ctx) {
    const Config& c = ctx.cfg;
    json rows = json::array(), proj_rows = json::array();
    std::map<std::string, study::TemplateProjection> panels;  // dataset/model/eps/split for seed 0
    for (const Split& split : ctx.splits) {
        const data::ImageDataset proj_train = class_subset(split.train_all, split.classes, c.per_class);
        const data::ImageDataset proj_test = class_subset(split.test, split.classes, c.per_class);
        for (const std::string model_kind : {"mlp", "cnn"}) {
            const bool cnn = model_kind == "cnn";
            const data::ImageDataset train_set = first(split.train_all, cnn ? c.cnn_train : c.mlp_train);
            for (double eps : c.epsilons) {
                std::vector<json> per_seed, proj_seed;
                for (int seed = 0; seed < c.seeds; ++seed) {
                    const auto t0 = Clock::now();
                    manual_seed(static_cast<uint64_t>(seed));
                    Generator gen(static_cast<uint64_t>(seed));
                    std::shared_ptr<nn::Sequential> model = examples::build_mnist_model(model_kind, gen);
                    const double loss = train(*model, train_set, cnn ? c.cnn_epochs : c.mlp_epochs,
                                              cnn ? Opt::Adam : Opt::SGD, cnn ? 2e-3 : 0.05,
                                              static_cast<uint64_t>(seed), smoothed_ce(eps));
                    const Tensor test_logits = examples::predict(*model, split.test, Device::cpu());
                    const Tensor held_logits = examples::predict(*model, split.heldout, Device::cpu());
                    json r = {{"seed", seed}, {"train_loss", loss}};
                    r.update(metrics_of(test_logits, split.test.labels));
                    try {
                        const double t = fit_temperature(held_logits, split.heldout.labels);
                        r["temperature"] = t;
                        r["after_temperature"] = metrics_of(test_logits / t, split.test.labels);
                    } catch (const Error& e) {
                        r["temperature"] = nullptr;
                        r["after_temperature"] = nullptr;
                        r["temperature_error"] = e.what();
                    }
                    try {
                        const VectorScaling vs = fit_vector_scaling(held_logits, split.heldout.labels);
                        r["vector_scaling"] = metrics_of(vs.apply(test_logits), split.test.labels);
                        r["vector_scaling"]["weight"] = vs.weight;
                        r["vector_scaling"]["bias"] = vs.bias;
                    } catch (const Error& e) {
                        r["vector_scaling"] = nullptr;
                        r["vector_scaling_error"] = e.what();
                    }
                    // Reliability diagrams of the first seed's CNNs at ε = 0 and 0.1.
                    if (seed == 0 && cnn && (eps == 0.0 || std::abs(eps - 0.1) < 1e-12)) {
                        const Tensor probs = softmax(test_logits.to(DType::f64), 1);
                        const std::string stem = "reliability_" + split.key + "_cnn_eps" + eps_tag(eps);
                        const std::string what = split.name + " test set, CNN trained with label smoothing ε = " +
                                                 fmt("%g", eps) + " (seed 0)";
                        write_reliability_svg(expected_calibration_error(probs, split.test.labels, 15),
                                              ctx.out + "/" + stem + ".svg", what);
                        ctx.figures.push_back(stem + ".svg");
                        if (r["temperature"].is_number()) {
                            const double t = r["temperature"].get<double>();
                            write_reliability_svg(
                                expected_calibration_error(softmax((test_logits / t).to(DType::f64), 1),
                                                           split.test.labels, 15),
                                ctx.out + "/" + stem + "_scaled.svg", what + fmt(", temperature-scaled (T = %.3f)", t));
                            ctx.figures.push_back(stem + "_scaled.svg");
                        }
                    }
                    // Projections (claim 1) for every model of the sweep.
                    json pr = {{"seed", seed}};
                    for (const auto& [name, subset] : {std::pair{"train", proj_train}, std::pair{"test", proj_test}}) {
                        study::TemplateProjection p;
                        pr[name] = projection_of(*model, subset, split.classes, &p);
                        if (seed == 0 && cnn)
                            panels[split.key + "/" + eps_tag(eps) + "/" + name] = p;
                    }
                    proj_seed.push_back(pr);
                    r["seconds"] = seconds_since(t0);
                    std::printf("%-13s %s eps %.2f seed %d: acc %.2f %%  ECE %.2f %%  T %s  (%.1f s)\n",
                                split.name.c_str(), model_kind.c_str(), eps, seed, 100 * r["accuracy"].get<double>(),
                                100 * r["ece"].get<double>(),
                                r["temperature"].is_number() ? fmt("%.3f", r["temperature"].get<double>()).c_str() : "-",
                                r["seconds"].get<double>());
                    std::fflush(stdout);
                    per_seed.push_back(r);
                }
                json row = {{"dataset", split.key}, {"model", model_kind}, {"epsilon", eps}};
                std::vector<int> seeds;
                for (const json& s : per_seed) seeds.push_back(s["seed"].get<int>());
                row["seeds"] = seeds;
                row["mean"] = summarize(per_seed, "", kMetricKeys);
                row["mean"]["temperature"] = summarize(per_seed, "", {"temperature"})["temperature"];
                row["after_temperature"] = summarize(per_seed, "after_temperature", kMetricKeys);
                row["vector_scaling"] = summarize(per_seed, "vector_scaling", kMetricKeys);
                row["per_seed"] = per_seed;
                rows.push_back(row);

                json prow = {{"dataset", split.key}, {"model", model_kind}, {"epsilon", eps}, {"seeds", seeds}};
                for (const std::string name : {"train", "test"}) {
                    std::vector<json> part;
                    for (const json& s : proj_seed) part.push_back(s[name]);
                    prow[name] = summarize(part, "", {"tightness", "tightness_full_dim"});
                }
                prow["per_seed"] = proj_seed;
                proj_rows.push_back(prow);
            }
        }
    }
    ctx.results["calibration"] = {{"bins", 15}, {"rows", rows}};

    // Projection figures: per data set, ε = 0 and 0.1, training and test examples (CNN, seed 0).
    json figs = json::array();
    for (const Split& split : ctx.splits) {
        std::vector<study::ProjectionPanel> ps;
        for (double eps : {0.0, 0.1})
            for (const std::string name : {"train", "test"}) {
                const auto it = panels.find(split.key + "/" + eps_tag(eps) + "/" + name);
                if (it == panels.end()) continue;
                ps.push_back({fmt("ε = %g, %s examples", eps, name == "train" ? "training" : "test"), it->second,
                              study::cluster_tightness(it->second)});
            }
        if (ps.empty()) continue;
        const std::string file = "projection_" + split.key + ".svg";
        study::write_projection_svg(ps, 2, split.class_names,
                                    split.name + ", CNN: penultimate activations on the templates' plane",
                                    ctx.out + "/" + file);
        ctx.figures.push_back(file);
        figs.push_back(file);
    }
    ctx.results["projections"] = {
        {"method", "plane through the last-layer weight rows (templates) of three classes, orthonormal basis by "
                   "Gram-Schmidt, origin at the templates' centroid; tightness = mean within-class distance / mean "
                   "between-class distance over all pairs, in the plane and in the full penultimate space"},
        {"classes", {{"mnist", c.mnist_classes}, {"fashion_mnist", c.fashion_classes}}},
        {"per_class", c.per_class},
        {"figures", figs},
        {"rows", proj_rows}};
}

// Part 3: distillation on MNIST.
void run_distillation(Context& ctx) {
    const Config& c = ctx.cfg;
    const Split& split = ctx.splits.front();  // MNIST
    const data::ImageDataset train_set = first(split.train_all, c.distill_train);
    const auto mlp = [&](int64_t hidden, double dropout, Generator& gen) {
        auto m = std::make_shared<nn::Sequential>();
        m->push_back(std::make_shared<nn::Flatten>());
        m->push_back(std::make_shared<nn::Linear>(784, hidden, true, gen));
        m->push_back(std::make_shared<nn::ReLU>());
        if (dropout > 0) m->push_back(std::make_shared<nn::Dropout>(dropout));
        m->push_back(std::make_shared<nn::Linear>(hidden, hidden, true, gen));
        m->push_back(std::make_shared<nn::ReLU>());
        if (dropout > 0) m->push_back(std::make_shared<nn::Dropout>(dropout));
        m->push_back(std::make_shared<nn::Linear>(hidden, 10, true, gen));
        return m;
    };
    const auto error_of = [&](nn::Sequential& m) {
        const Tensor logits = examples::predict(m, split.test, Device::cpu());
        return 1.0 - expected_calibration_error(softmax(logits.to(DType::f64), 1), split.test.labels, 15).accuracy;
    };
    json teachers = json::array(), students = json::array();
    std::map<std::pair<int, int>, std::vector<double>> student_err;  // (teacher ε index, T index) → per seed
    for (size_t ti = 0; ti < 2; ++ti) {
        const double teps = ti == 0 ? 0.0 : 0.1;
        std::vector<json> per_seed;
        for (int seed = 0; seed < c.seeds; ++seed) {
            const auto t0 = Clock::now();
            manual_seed(static_cast<uint64_t>(1000 + seed));
            Generator gen(static_cast<uint64_t>(1000 + seed));
            auto teacher = mlp(1200, c.dropout, gen);
            train(*teacher, train_set, c.teacher_epochs, Opt::SGD, 0.05, static_cast<uint64_t>(1000 + seed),
                  smoothed_ce(teps));
            const double terr = error_of(*teacher);
            const Tensor teacher_logits = examples::predict(*teacher, train_set, Device::cpu());
            json tr = {{"seed", 1000 + seed}, {"error", terr}, {"seconds", seconds_since(t0)}};
            std::printf("teacher eps %.1f seed %d: error %.2f %% (%.1f s)\n", teps, 1000 + seed, 100 * terr,
                        seconds_since(t0));
            std::fflush(stdout);
            json st = json::array();
            for (size_t k = 0; k < c.temperatures.size(); ++k) {
                const auto t1 = Clock::now();
                const uint64_t sseed = static_cast<uint64_t>(2000 + seed);
                manual_seed(sseed);
                Generator sgen(sseed);
                auto student = mlp(800, 0.0, sgen);
                DistillationOptions d;
                d.temperature = c.temperatures[k];
                d.alpha = c.beta;
                train(*student, train_set, c.student_epochs, Opt::SGD, 0.05, sseed,
                      [&](const Tensor& logits, const Tensor& y, const Tensor& rows) {
                          return distillation_loss(logits, index_select(teacher_logits, 0, rows), y, d);
                      });
                const double serr = error_of(*student);
                student_err[{static_cast<int>(ti), static_cast<int>(k)}].push_back(serr);
                st.push_back({{"temperature", c.temperatures[k]}, {"seed", sseed}, {"error", serr},
                              {"seconds", seconds_since(t1)}});
                std::printf("  student T %g: error %.2f %% (%.1f s)\n", c.temperatures[k], 100 * serr,
                            seconds_since(t1));
                std::fflush(stdout);
            }
            tr["students"] = st;
            per_seed.push_back(tr);
        }
        std::vector<double> errs;
        for (const json& s : per_seed) errs.push_back(s["error"].get<double>());
        const study::MeanStd ms = study::mean_std(errs);
        teachers.push_back({{"epsilon", teps}, {"error", {{"mean", ms.mean}, {"std", ms.std}, {"n", errs.size()}}},
                            {"per_seed", per_seed}});
        for (size_t k = 0; k < c.temperatures.size(); ++k) {
            const std::vector<double>& e = student_err[{static_cast<int>(ti), static_cast<int>(k)}];
            const study::MeanStd sm = study::mean_std(e);
            students.push_back({{"teacher_epsilon", teps},
                                {"temperature", c.temperatures[k]},
                                {"error", {{"mean", sm.mean}, {"std", sm.std}, {"n", e.size()}}},
                                {"per_seed", e}});
        }
    }
    // The student trained alone on the hard labels: what distillation is measured against.
    std::vector<double> alone;
    json alone_seeds = json::array();
    for (int seed = 0; seed < c.seeds; ++seed) {
        const uint64_t sseed = static_cast<uint64_t>(2000 + seed);
        manual_seed(sseed);
        Generator sgen(sseed);
        auto student = mlp(800, 0.0, sgen);
        train(*student, train_set, c.student_epochs, Opt::SGD, 0.05, sseed, smoothed_ce(0.0));
        alone.push_back(error_of(*student));
        alone_seeds.push_back({{"seed", sseed}, {"error", alone.back()}});
        std::printf("student alone seed %d: error %.2f %%\n", static_cast<int>(sseed), 100 * alone.back());
    }
    const study::MeanStd am = study::mean_std(alone);
    ctx.results["distillation"] = {
        {"dataset", "mnist"},
        {"teachers", teachers},
        {"students", students},
        {"student_alone", {{"error", {{"mean", am.mean}, {"std", am.std}, {"n", alone.size()}}}, {"per_seed", alone_seeds}}},
        {"paper", {{"teacher_error_no_ls", 0.0067}, {"student_error_no_ls", 0.0074}, {"teacher_error_ls", 0.0059},
                   {"student_error_ls", 0.0091}}}};
}

// ---- verdicts and the README --------------------------------------------------------------------

const json* find_row(const json& rows, const std::string& dataset, const std::string& model, double eps) {
    for (const json& r : rows)
        if (r["dataset"] == dataset && r["model"] == model && std::abs(r["epsilon"].get<double>() - eps) < 1e-12)
            return &r;
    return nullptr;
}

double num(const json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }
std::string pct(double v, int digits = 2) { return std::isfinite(v) ? fmt("%.*f", digits, 100 * v) : "–"; }
std::string pm_pct(const json& ms, int digits = 2) {
    if (!ms.is_object() || !ms["mean"].is_number()) return "–";
    return pct(num(ms["mean"]), digits) + (ms["n"].get<int>() > 1 ? " ± " + pct(num(ms["std"]), digits) : "");
}
std::string pm(const json& ms, int digits = 3) {
    if (!ms.is_object() || !ms["mean"].is_number()) return "–";
    return fmt("%.*f", digits, num(ms["mean"])) + (ms["n"].get<int>() > 1 ? fmt(" ± %.*f", digits, num(ms["std"])) : "");
}

json verdicts(const Context& ctx) {
    json v = json::object();
    const json& rows = ctx.results["calibration"]["rows"];
    const json& prows = ctx.results["projections"]["rows"];
    // Claim 1: tightness falls from ε = 0 to ε = 0.1, for each model and split.
    for (const Split& s : ctx.splits) {
        int better = 0, clearly = 0, total = 0;
        for (const std::string model : {"mlp", "cnn"})
            for (const std::string split : {"train", "test"}) {
                const json* a = find_row(prows, s.key, model, 0.0);
                const json* b = find_row(prows, s.key, model, 0.1);
                if (!a || !b) continue;
                ++total;
                const json &ta = (*a)[split]["tightness"], &tb = (*b)[split]["tightness"];
                better += num(tb["mean"]) < num(ta["mean"]);
                clearly += num(ta["mean"]) - num(tb["mean"]) > std::max(num(ta["std"]), num(tb["std"]));
            }
        v["representations"][s.key] = {{"tighter_cases", better}, {"tighter_by_more_than_one_std", clearly},
                                       {"cases", total},
                                       {"verdict", better == total && total > 0 ? "reproduced"
                                                   : better > 0                 ? "partly reproduced"
                                                                                : "not reproduced"}};
    }
    // Claim 2, per data set and model: the regime of the ε = 0 model, and what smoothing does in it.
    for (const Split& s : ctx.splits)
        for (const std::string model : {"mlp", "cnn"}) {
            const json* base = find_row(rows, s.key, model, 0.0);
            if (!base) continue;
            const double ece0 = num((*base)["mean"]["ece"]["mean"]);
            const double ece_ts = num((*base)["after_temperature"]["ece"]["mean"]);
            double best = INFINITY, best_eps = 0;
            for (double e : ctx.cfg.epsilons) {
                const json* r = find_row(rows, s.key, model, e);
                if (e > 0 && r && num((*r)["mean"]["ece"]["mean"]) < best)
                    best = num((*r)["mean"]["ece"]["mean"]), best_eps = e;
            }
            const json* r01 = find_row(rows, s.key, model, 0.1);
            const double ece01 = r01 ? num((*r01)["mean"]["ece"]["mean"]) : NAN;
            const double gap01 = r01 ? num((*r01)["mean"]["mean_confidence"]["mean"]) - num((*r01)["mean"]["accuracy"]["mean"]) : NAN;
            const double gap0 = num((*base)["mean"]["mean_confidence"]["mean"]) - num((*base)["mean"]["accuracy"]["mean"]);
            // Mis-calibrated: temperature scaling at least halves the ECE of the plain model. The paper's
            // first regime is an over-confident plain model; an under-confident one is outside it.
            const bool miscalibrated = ece_ts < 0.5 * ece0;
            std::string regime = "calibrated plain model", verdict;
            if (miscalibrated && gap0 > 0) {
                regime = "over-confident plain model";
                verdict = best <= std::max(1.5 * ece_ts, ece_ts + 0.002)
                              ? "reproduced: smoothing calibrates about as well as temperature scaling"
                          : best < ece0 ? "partly reproduced: smoothing lowers the ECE, less than temperature scaling"
                                        : "not reproduced: smoothing does not lower the ECE";
            } else if (miscalibrated) {
                regime = "under-confident plain model";
                verdict = ece01 > ece0 ? "outside the paper's regime: the plain model is already under-confident and "
                                         "smoothing makes it more so"
                                       : "outside the paper's regime: the plain model is under-confident";
            } else {
                verdict = ece01 > ece0 && gap01 < 0 ? "reproduced: smoothing makes a calibrated model under-confident"
                                                    : "not reproduced: smoothing leaves the calibrated model calibrated";
            }
            v["calibration"][s.key][model] = {{"regime", regime},
                                              {"ece_eps0", ece0},
                                              {"ece_eps0_temperature_scaled", ece_ts},
                                              {"best_smoothed_ece", best},
                                              {"best_epsilon", best_eps},
                                              {"ece_eps01", ece01},
                                              {"confidence_minus_accuracy_eps0", gap0},
                                              {"confidence_minus_accuracy_eps01", gap01},
                                              {"verdict", verdict}};
        }
    // Claim 3: at every T, is the student of the smoothed teacher worse?
    if (ctx.results.contains("distillation")) {
        const json& st = ctx.results["distillation"]["students"];
        int worse = 0, clearly = 0, total = 0;
        for (double t : ctx.cfg.temperatures) {
            double e0 = NAN, e1 = NAN, s0 = 0, s1 = 0;
            for (const json& r : st)
                if (std::abs(num(r["temperature"]) - t) < 1e-12) {
                    const bool plain = num(r["teacher_epsilon"]) == 0.0;
                    (plain ? e0 : e1) = num(r["error"]["mean"]);
                    (plain ? s0 : s1) = num(r["error"]["std"]);
                }
            ++total;
            worse += e1 > e0;
            clearly += e1 - e0 > std::max(s0, s1);
        }
        v["distillation"] = {{"worse_students", worse}, {"worse_by_more_than_one_std", clearly}, {"temperatures", total},
                             {"verdict", worse == total ? "reproduced" : worse > 0 ? "partly reproduced" : "not reproduced"}};
    }
    return v;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) {
            const size_t colon = line.find(':');
            return colon == std::string::npos ? line : line.substr(colon + 2);
        }
    return "unknown CPU";
}

std::string readme(const Context& ctx) {
    const json& R = ctx.results;
    const Config& c = ctx.cfg;
    const json& V = R["verdicts"];
    std::ostringstream md;
    md << "# \"When Does Label Smoothing Help?\" on MNIST and Fashion-MNIST\n\n"
       << "Müller, Kornblith and Hinton (NeurIPS 2019) make three claims about label smoothing: it pulls the\n"
       << "penultimate-layer representations of a class into tight, equidistant clusters; it calibrates a\n"
       << "network about as well as temperature scaling; and a teacher trained with it distils a worse student.\n"
       << "This page measures all three with lsgrad. It is written, every number and figure of it, by\n"
       << "`scripts/label_smoothing_study.sh`, which ran `" << c.command << "`; `results.json` holds\n"
       << "every number of every table, per seed.\n\n"
       << fmt("This run%s took **%.1f minutes** on %d threads of an %s (finished %s).\n\n",
              c.quick ? " (--quick: a smoke run)" : "",
              num(R["timing"]["total_seconds"]) / 60.0, R["timing"]["threads"].get<int>(),
              R["timing"]["cpu"].get<std::string>().c_str(), R["timing"]["finished_utc"].get<std::string>().c_str());

    if (R["status"].get<std::string>() != "complete") md << "**This run is " << R["status"].get<std::string>() << ".**\n\n";
    md << "## Setup\n\n"
       << "| part | models | training | seeds |\n|---|---|---|---|\n"
       << fmt("| calibration sweep, projections | MLP 784-256-256-10 | %d epoch(s), %s training images, SGD momentum 0.9, "
              "lr 0.05, cosine, batch 128 | %d |\n",
              c.mlp_epochs, c.mlp_train > 0 ? std::to_string(c.mlp_train).c_str() : "all 55 000", c.seeds)
       << fmt("| | CNN conv32-pool-conv64-pool-fc128-fc10 | %d epoch(s), the first %lld training images, Adam 2e-3, "
              "cosine, batch 128 | %d |\n",
              c.cnn_epochs, static_cast<long long>(c.cnn_train), c.seeds)
       << fmt("| distillation (MNIST) | teacher 784-1200-1200-10, dropout %.1f; student 784-800-800-10 | teacher %d, "
              "student %d epoch(s), %s training images, SGD momentum 0.9, lr 0.05, cosine | %d |\n\n",
              c.dropout, c.teacher_epochs, c.student_epochs,
              c.distill_train > 0 ? std::to_string(c.distill_train).c_str() : "all 55 000", c.seeds)
       << fmt("Temperatures (and vector scaling) are fitted on the last %lld training images, which no model "
              "trains on; every metric is on the %s test images. ECE uses 15 bins, equal-width (as the paper and "
              "torchmetrics) or equal-mass; classwise ECE averages the per-class ECE over the 10 classes; Brier "
              "is Σ_k (p_k − 1[y = k])² averaged over images; NLL is the mean −log p_y.\n\n",
              static_cast<long long>(c.holdout), c.test_limit > 0 ? std::to_string(c.test_limit).c_str() : "10 000");

    // ---- claim 1 ----
    md << "## 1. Representations: tighter clusters\n\n"
       << "The paper's method: the last-layer weight rows (templates) of three classes span a plane; an\n"
       << "orthonormal basis of that plane (Gram–Schmidt, origin at the templates' centroid) receives the\n"
       << fmt("penultimate activations of %lld examples per class, from the training set and from the test set.\n",
              static_cast<long long>(c.per_class))
       << "The classes are the three most easily confused ones: MNIST **3, 5, 8** (digits that share strokes), and\n"
       << "Fashion-MNIST **T-shirt/top, Pullover, Shirt** (the classes a classifier mixes up most), so the\n"
       << "clusters have something to separate. Tightness is the mean distance between two examples of one\n"
       << "class over the mean distance between two of different classes (lower: tighter, better separated);\n"
       << "it is computed in the plane and in the whole penultimate space.\n\n";
    for (const json& f : R["projections"]["figures"]) md << "![" << f.get<std::string>() << "](" << f.get<std::string>() << ")\n\n";
    md << "| data set | model | ε | tightness, training (plane) | tightness, test (plane) | training (full space) | test (full space) |\n"
       << "|---|---|---|---|---|---|---|\n";
    for (const json& r : R["projections"]["rows"])
        md << "| " << (r["dataset"] == "mnist" ? "MNIST" : "Fashion-MNIST") << " | " << r["model"].get<std::string>()
           << " | " << fmt("%g", num(r["epsilon"])) << " | " << pm(r["train"]["tightness"]) << " | "
           << pm(r["test"]["tightness"]) << " | " << pm(r["train"]["tightness_full_dim"]) << " | "
           << pm(r["test"]["tightness_full_dim"]) << " |\n";
    md << "\n";
    for (const Split& s : ctx.splits) {
        const json& v = V["representations"][s.key];
        const json* a = find_row(R["projections"]["rows"], s.key, "cnn", 0.0);
        const json* b = find_row(R["projections"]["rows"], s.key, "cnn", 0.1);
        md << "**" << s.name << ": " << v["verdict"].get<std::string>() << ".** "
           << fmt("Smoothing with ε = 0.1 tightened the clusters in %d of %d cases (MLP and CNN, training and test "
                  "examples, mean over seeds",
                  v["tighter_cases"].get<int>(), v["cases"].get<int>())
           << (c.seeds > 1 ? fmt("; by more than the larger seed standard deviation in %d)",
                                 v["tighter_by_more_than_one_std"].get<int>())
                           : std::string(")"));
        if (a && b)
            md << fmt("; for the CNN the ratio went from %.3f to %.3f on training examples and from %.3f to %.3f on "
                      "test examples",
                      num((*a)["train"]["tightness"]["mean"]), num((*b)["train"]["tightness"]["mean"]),
                      num((*a)["test"]["tightness"]["mean"]), num((*b)["test"]["tightness"]["mean"]));
        md << ". The paper shows the same on CIFAR-10, CIFAR-100 and ImageNet by eye (its Figure 1), without a "
              "number.\n\n";
    }

    // ---- claim 2 ----
    md << "## 2. Calibration\n\n"
       << "The paper: on CIFAR-100 the ECE (15 bins) falls from 0.150 to 0.021 with temperature scaling "
          "(T = 1.9) and to 0.024 with smoothing α = 0.05 (ImageNet: 0.071 → 0.022 vs 0.035); so smoothing "
          "calibrates about as well as temperature scaling. A network that is already well calibrated is the other "
          "regime: there smoothing makes it under-confident. Values are mean ± std over seeds, in % except NLL, "
          "Brier and T.\n\n";
    for (const Split& s : ctx.splits)
        for (const std::string model : {"mlp", "cnn"}) {
            md << "### " << s.name << ", " << (model == "mlp" ? "MLP" : "CNN") << "\n\n"
               << "| ε | accuracy | NLL | ECE | ECE (equal-mass) | classwise ECE | Brier | T | NLL after T | ECE after T "
                  "| ECE (equal-mass) after T | classwise ECE after T | Brier after T | ECE after vector scaling |\n"
               << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
            for (double e : c.epsilons) {
                const json* r = find_row(R["calibration"]["rows"], s.key, model, e);
                if (!r) continue;
                const json& m = (*r)["mean"];
                const json& a = (*r)["after_temperature"];
                md << "| " << fmt("%g", e) << " | " << pm_pct(m["accuracy"]) << " | " << pm(m["nll"], 4) << " | "
                   << pm_pct(m["ece"]) << " | " << pm_pct(m["ece_equal_mass"]) << " | " << pm_pct(m["classwise_ece"], 3)
                   << " | " << pm(m["brier"], 4) << " | " << pm(m["temperature"], 3) << " | " << pm(a["nll"], 4)
                   << " | " << pm_pct(a["ece"]) << " | " << pm_pct(a["ece_equal_mass"]) << " | "
                   << pm_pct(a["classwise_ece"], 3) << " | " << pm(a["brier"], 4) << " | "
                   << pm_pct((*r)["vector_scaling"]["ece"]) << " |\n";
            }
            md << "\n";
        }
    md << "![ECE against ε](ece_vs_epsilon.svg)\n\n";
    md << "Reliability diagrams of the first seed's CNNs, test set: without smoothing, then ε = 0.1, each as "
          "trained and after temperature scaling.\n\n";
    for (const Split& s : ctx.splits) {
        for (const char* e : {"000", "010"})
            for (const char* suffix : {"", "_scaled"}) {
                const std::string f = "reliability_" + s.key + "_cnn_eps" + e + suffix + ".svg";
                if (std::find(ctx.figures.begin(), ctx.figures.end(), f) != ctx.figures.end())
                    md << "<img src=\"" << f << "\" width=\"24%\" alt=\"" << f << "\"> ";
            }
        md << "\n\n";
    }
    for (const Split& s : ctx.splits) {
        md << "**" << s.name << ".** ";
        for (const std::string model : {"mlp", "cnn"}) {
            const json& v = V["calibration"][s.key][model];
            md << (model == "mlp" ? "MLP" : "CNN") << " (" << v["regime"].get<std::string>() << "): "
               << v["verdict"].get<std::string>() << ". "
               << fmt("Without smoothing the ECE is %s %% (mean confidence minus accuracy: %+.2f points) and "
                      "%s %% after temperature scaling; the best smoothed model (ε = %g) reaches %s %%; at ε = 0.1 "
                      "the ECE is %s %% (confidence minus accuracy: %+.2f points). ",
                      pct(num(v["ece_eps0"])).c_str(), 100 * num(v["confidence_minus_accuracy_eps0"]),
                      pct(num(v["ece_eps0_temperature_scaled"])).c_str(), num(v["best_epsilon"]),
                      pct(num(v["best_smoothed_ece"])).c_str(), pct(num(v["ece_eps01"])).c_str(),
                      100 * num(v["confidence_minus_accuracy_eps01"]));
        }
        md << "\n\n";
    }

    // ---- claim 3 ----
    if (R.contains("distillation")) {
        const json& D = R["distillation"];
        md << "## 3. Distillation\n\n"
           << "The paper's MNIST setup: a fully connected teacher with two hidden layers of 1200 units and dropout, "
              "a student with two of 800, distilled with β = 0.6 (here: β·T²·KL(teacher_T ‖ student_T) + (1 − β)·CE, "
              "lsgrad's `distillation_loss` with α = β). Test error in %, mean ± std over seeds; the student "
              "trained alone on the labels is the reference.\n\n"
           << "| teacher | teacher error | student, T = 1 | student, T = 2 | student, T = 4 | paper: teacher → student |\n"
           << "|---|---|---|---|---|---|\n";
        for (const json& t : D["teachers"]) {
            const double te = num(t["epsilon"]);
            md << "| " << (te == 0.0 ? "no smoothing" : fmt("ε = %g", te)) << " | " << pm_pct(t["error"]);
            for (double T : c.temperatures)
                for (const json& s : D["students"])
                    if (num(s["teacher_epsilon"]) == te && num(s["temperature"]) == T) md << " | " << pm_pct(s["error"]);
            md << " | " << (te == 0.0 ? "0.67 → 0.74" : "0.59 → 0.91") << " |\n";
        }
        md << "| student alone | | " << pm_pct(D["student_alone"]["error"]) << " | | | |\n\n";
        const json& v = V["distillation"];
        md << "**MNIST: " << v["verdict"].get<std::string>() << ".** "
           << fmt("The student of the smoothed teacher was worse than the student of the plain teacher at %d of %d "
                  "temperatures",
                  v["worse_students"].get<int>(), v["temperatures"].get<int>())
           << (c.seeds > 1 ? fmt(" (by more than the larger of the two seed standard deviations at %d). ",
                                 v["worse_by_more_than_one_std"].get<int>())
                           : std::string(". "))
           << "The paper trains far longer (and its teacher sees jittered images), which is how its teacher reaches "
              "0.67 %; the departures here are fewer epochs, no input jitter, and the T² factor on the distillation "
              "term (Hinton et al.'s recommendation; the paper does not say). Fashion-MNIST is not part of the "
              "paper's distillation experiment and is not run.\n\n";
    }
    if (!R.contains("distillation"))
        md << "## 3. Distillation\n\nNot measured: this run stopped before its distillation part finished ("
           << R["status"].get<std::string>() << ").\n\n";
    md << "## Files\n\n`results.json` (every number above, per seed, with the configuration), ";
    for (size_t i = 0; i < ctx.figures.size(); ++i) md << (i ? ", " : "") << "`" << ctx.figures[i] << "`";
    md << ".\n";
    return md.str();
}

// The ECE-against-ε chart: per data set and model, before and after temperature scaling (CNN and MLP).
void write_ece_chart(Context& ctx) {
    std::vector<study::Series> series;
    for (const Split& s : ctx.splits)
        for (const std::string model : {"mlp", "cnn"})
            for (bool after : {false, true}) {
                study::Series ser;
                ser.label = s.name + " " + (model == "mlp" ? "MLP" : "CNN") + (after ? ", after T" : "");
                ser.dashed = after;
                for (double e : ctx.cfg.epsilons) {
                    const json* r = find_row(ctx.results["calibration"]["rows"], s.key, model, e);
                    const json& m = r ? (after ? (*r)["after_temperature"]["ece"] : (*r)["mean"]["ece"]) : json();
                    ser.y.push_back(m.is_object() && m["mean"].is_number() ? 100 * num(m["mean"]) : NAN);
                    ser.err.push_back(m.is_object() && m["std"].is_number() ? 100 * num(m["std"]) : 0.0);
                }
                series.push_back(ser);
            }
    study::write_line_chart_svg(ctx.cfg.epsilons, series, "Test ECE (15 equal-width bins) against label smoothing ε",
                                "label smoothing ε", "ECE (%)", ctx.out + "/ece_vs_epsilon.svg");
    ctx.figures.push_back("ece_vs_epsilon.svg");
}

int run(Config c) {
    if (c.threads > 0) omp_set_num_threads(c.threads);
    if (c.mnist_dir.empty()) c.mnist_dir = data::default_mnist_dir();
    if (c.fashion_dir.empty()) c.fashion_dir = data::default_fashion_mnist_dir();
    if (c.seeds < 1) throw Error("--seeds must be at least 1");
    const auto t0 = Clock::now();
    Context ctx;
    ctx.cfg = c;
    ctx.out = c.out;
    std::filesystem::create_directories(c.out);
    ctx.splits.push_back(load_split(c, false));
    ctx.splits.push_back(load_split(c, true));
    ctx.results["study"] = "When Does Label Smoothing Help? (Mueller, Kornblith, Hinton 2019) on MNIST and Fashion-MNIST";
    ctx.results["config"] = config_json(c);

    // Writes results.json and README.md from what has been measured so far: after the sweep (so an
    // interrupted run still leaves its calibration and projection results, marked partial), and at the end.
    const auto write_outputs = [&](const char* status) {
        const std::time_t now = std::time(nullptr);
        char stamp[64];
        std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
        ctx.results["status"] = status;
        ctx.results["timing"]["total_seconds"] = seconds_since(t0);
        ctx.results["timing"]["threads"] = omp_get_max_threads();
        ctx.results["timing"]["cpu"] = cpu_model();
        ctx.results["timing"]["finished_utc"] = stamp;
        ctx.results["verdicts"] = verdicts(ctx);
        ctx.results["figures"] = ctx.figures;
        study::write_file(c.out + "/results.json", ctx.results.dump(1) + "\n");
        study::write_file(c.out + "/README.md", readme(ctx));
    };
    const auto t_sweep = Clock::now();
    run_sweep(ctx);
    ctx.results["timing"]["sweep_seconds"] = seconds_since(t_sweep);
    write_ece_chart(ctx);
    write_outputs("partial: the calibration sweep and projections are done, the distillation part did not finish");
    const auto t_distill = Clock::now();
    run_distillation(ctx);
    ctx.results["timing"]["distillation_seconds"] = seconds_since(t_distill);
    write_outputs("complete");
    std::printf("wrote %s/results.json, %s/README.md and %zu figures in %.1f s\n", c.out.c_str(), c.out.c_str(),
                ctx.figures.size(), seconds_since(t0));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Config c;
    c.command = "label_smoothing";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if ((a == "--mnist" || a == "--fashion") && i + 1 < argc) {
            ++i;
            continue;
        }
        if (a.rfind("--mnist=", 0) == 0 || a.rfind("--fashion=", 0) == 0) continue;
        c.command += " " + a;
    }
    bool quick = false;
    CLI::App app{"Reproduces the three claims of \"When Does Label Smoothing Help?\" on MNIST and Fashion-MNIST."};
    app.add_flag("--quick", quick, "a smoke run: one seed, one epoch, small subsets (under a minute)");
    app.add_option("--out", c.out, "folder for results.json, README.md and the SVG figures")->capture_default_str();
    app.add_option("--mnist", c.mnist_dir, "folder of MNIST's IDX files (default: $LSGRAD_DATA_DIR or the cache)");
    app.add_option("--fashion", c.fashion_dir, "folder of Fashion-MNIST's IDX files (default: Debian's package)");
    app.add_option("--seeds", c.seeds, "seeds per configuration (after --quick, which sets 1)");
    app.add_option("--threads", c.threads, "OpenMP threads (default: OMP_NUM_THREADS, else every core)");
    // The sizes of the run, parsed into a second Config: --quick sets them all small first, and these
    // options, when given, apply after it.
    Config sizes;
    app.add_option("--mlp-epochs", sizes.mlp_epochs, "calibration sweep: MLP epochs")->capture_default_str();
    app.add_option("--cnn-epochs", sizes.cnn_epochs, "calibration sweep: CNN epochs")->capture_default_str();
    app.add_option("--mlp-train", sizes.mlp_train, "calibration sweep: MLP training images (0: all not held out)")
        ->capture_default_str();
    app.add_option("--cnn-train", sizes.cnn_train, "calibration sweep: CNN training images (0: all not held out)")
        ->capture_default_str();
    app.add_option("--teacher-epochs", sizes.teacher_epochs, "distillation: teacher epochs")->capture_default_str();
    app.add_option("--student-epochs", sizes.student_epochs, "distillation: student epochs")->capture_default_str();
    app.add_option("--distill-train", sizes.distill_train, "distillation: training images (0: all not held out)")
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (quick) {
        const int seeds = c.seeds;
        c.make_quick();
        if (app.count("--seeds") > 0) c.seeds = seeds;
    }
    const auto take = [&](const char* name, auto& to, const auto& from) {
        if (app.count(name) > 0) to = from;
    };
    take("--mlp-epochs", c.mlp_epochs, sizes.mlp_epochs);
    take("--cnn-epochs", c.cnn_epochs, sizes.cnn_epochs);
    take("--mlp-train", c.mlp_train, sizes.mlp_train);
    take("--cnn-train", c.cnn_train, sizes.cnn_train);
    take("--teacher-epochs", c.teacher_epochs, sizes.teacher_epochs);
    take("--student-epochs", c.student_epochs, sizes.student_epochs);
    take("--distill-train", c.distill_train, sizes.distill_train);
    try {
        return run(c);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}

// The whole study in --quick mode on the real data sets, then a check that results.json holds every
// field of every table, for every configuration, and that every figure and the README were written.
// Skipped (saying why) when MNIST or Fashion-MNIST is not where the study looks for it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/data/dataset.h"
#include "lsgrad/data/idx.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string missing_data() {
    for (const std::string& dir : {lsg::data::default_mnist_dir(), lsg::data::default_fashion_mnist_dir()}) {
        try {
            lsg::data::find_idx_files(dir);
        } catch (const lsg::Error& e) {
            return "data set missing (run scripts/fetch_mnist.sh and scripts/fetch_fashion_mnist.sh): " +
                   std::string(e.what());
        }
    }
    return "";
}

// Every metric a calibration row reports, before and after recalibration.
const std::vector<std::string> kMetrics = {"accuracy", "error", "nll", "ece", "ece_equal_mass",
                                           "mce", "classwise_ece", "brier", "mean_confidence"};

void expect_mean_std(const json& j, const std::string& what) {
    ASSERT_TRUE(j.is_object()) << what;
    ASSERT_TRUE(j.contains("mean") && j.contains("std") && j.contains("n")) << what;
    EXPECT_TRUE(j["mean"].is_number()) << what << " has no mean";
    EXPECT_TRUE(j["std"].is_number()) << what << " has no std";
}

TEST(LabelSmoothingStudy, QuickRunWritesEveryField) {
    const std::string reason = missing_data();
    if (!reason.empty()) GTEST_SKIP() << reason;
    const fs::path out = LSGRAD_STUDY_OUT;
    fs::remove_all(out);
    const std::string cmd = std::string("\"") + LSGRAD_STUDY_BINARY + "\" --quick --out \"" + out.string() + "\"";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

    std::ifstream in(out / "results.json");
    ASSERT_TRUE(in) << "no results.json";
    const json r = json::parse(in);
    for (const char* key : {"study", "config", "calibration", "projections", "distillation", "timing", "verdicts", "figures"})
        ASSERT_TRUE(r.contains(key)) << "results.json lacks " << key;
    EXPECT_TRUE(r["config"]["quick"].get<bool>());
    EXPECT_EQ(r["status"], "complete");
    EXPECT_EQ(r["config"]["seed_values"], json::array({0}));

    // Calibration: every data set × model × ε, each with its seeds, every metric as mean ± std, before
    // and after temperature scaling and after vector scaling, and T.
    const std::vector<double> eps = {0.0, 0.05, 0.1, 0.2, 0.3};
    std::set<std::string> seen;
    for (const json& row : r["calibration"]["rows"]) {
        const std::string id = row["dataset"].get<std::string>() + "/" + row["model"].get<std::string>() + "/" +
                               std::to_string(row["epsilon"].get<double>());
        seen.insert(id);
        ASSERT_EQ(row["seeds"].size(), 1u) << id;
        for (const std::string& m : kMetrics) {
            expect_mean_std(row["mean"][m], id + " mean." + m);
            expect_mean_std(row["after_temperature"][m], id + " after_temperature." + m);
            expect_mean_std(row["vector_scaling"][m], id + " vector_scaling." + m);
        }
        expect_mean_std(row["mean"]["temperature"], id + " temperature");
        ASSERT_EQ(row["per_seed"].size(), 1u);
        const json& s = row["per_seed"][0];
        EXPECT_TRUE(s["temperature"].is_number() && s["temperature"].get<double>() > 0) << id;
        EXPECT_EQ(s["vector_scaling"]["weight"].size(), 10u) << id;
        const double acc = s["accuracy"].get<double>();
        EXPECT_GT(acc, 0.3) << id << ": the model did not learn";
        EXPECT_LE(acc, 1.0);
        for (const std::string& m : kMetrics) EXPECT_TRUE(s[m].is_number()) << id << " " << m;
    }
    for (const std::string ds : {"mnist", "fashion_mnist"})
        for (const std::string model : {"mlp", "cnn"})
            for (double e : eps) EXPECT_TRUE(seen.count(ds + "/" + model + "/" + std::to_string(e))) << ds << model << e;
    EXPECT_EQ(seen.size(), 20u);

    // Projections: same grid, tightness on training and test examples, in the plane and the full space.
    ASSERT_EQ(r["projections"]["rows"].size(), 20u);
    for (const json& row : r["projections"]["rows"])
        for (const char* split : {"train", "test"})
            for (const char* t : {"tightness", "tightness_full_dim"}) {
                expect_mean_std(row[split][t], std::string(split) + "." + t);
                EXPECT_GT(row[split][t]["mean"].get<double>(), 0.0);
            }
    EXPECT_EQ(r["projections"]["classes"]["mnist"], json::array({3, 5, 8}));

    // Distillation: two teachers, three temperatures each, the student alone, the paper's numbers.
    const json& d = r["distillation"];
    ASSERT_EQ(d["teachers"].size(), 2u);
    ASSERT_EQ(d["students"].size(), 6u);
    for (const json& t : d["teachers"]) expect_mean_std(t["error"], "teacher error");
    for (const json& s : d["students"]) {
        expect_mean_std(s["error"], "student error");
        EXPECT_TRUE(s["temperature"].is_number() && s["teacher_epsilon"].is_number());
    }
    expect_mean_std(d["student_alone"]["error"], "student alone");
    EXPECT_DOUBLE_EQ(d["paper"]["student_error_ls"].get<double>(), 0.0091);

    // Verdicts for the three claims, and timing.
    EXPECT_TRUE(r["verdicts"]["representations"]["mnist"]["verdict"].is_string());
    EXPECT_TRUE(r["verdicts"]["representations"]["fashion_mnist"]["verdict"].is_string());
    EXPECT_TRUE(r["verdicts"]["calibration"]["mnist"]["cnn"]["verdict"].is_string());
    EXPECT_TRUE(r["verdicts"]["distillation"]["verdict"].is_string());
    EXPECT_GT(r["timing"]["total_seconds"].get<double>(), 0.0);

    // Every figure named exists and is a whole SVG; the README shows each of them.
    std::ifstream md_in(out / "README.md");
    std::stringstream md;
    md << md_in.rdbuf();
    ASSERT_GE(r["figures"].size(), 9u);  // 2 projections, 1 chart, 3 reliability diagrams per data set
    for (const json& f : r["figures"]) {
        const std::string name = f.get<std::string>();
        std::ifstream svg(out / name);
        std::stringstream text;
        text << svg.rdbuf();
        EXPECT_EQ(text.str().rfind("<svg", 0), 0u) << name;
        EXPECT_NE(text.str().find("</svg>"), std::string::npos) << name;
        const bool shown = md.str().find("(" + name + ")") != std::string::npos ||
                           md.str().find("src=\"" + name + "\"") != std::string::npos;
        EXPECT_TRUE(shown) << "README does not show " << name;
    }
    for (const char* heading : {"## 1. Representations", "## 2. Calibration", "## 3. Distillation"})
        EXPECT_NE(md.str().find(heading), std::string::npos) << heading;
}

}  // namespace

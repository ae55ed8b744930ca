// Resuming training: `mnist --checkpoint F --stop-after k` then `mnist --resume F` must end with
// the same bits as one uninterrupted run (weights file byte for byte, and every metric of the
// epochs after k), for the MLP and the CNN with SGD (momentum) and Adam, at a fixed thread count.
// The data is a small synthetic MNIST written here, so the test needs no download and runs in
// seconds.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

#ifdef LSGRAD_MNIST_EXE

// IDX file of unsigned bytes: magic 00 00 08 <ndims>, big-endian u32 dims, data.
void write_idx(const fs::path& path, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
    std::ofstream out(path, std::ios::binary);
    out.put(0).put(0).put(8).put(static_cast<char>(dims.size()));
    for (uint32_t d : dims)
        for (int s = 24; s >= 0; s -= 8) out.put(static_cast<char>((d >> s) & 0xFF));
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// n images of 28×28 whose label is visible (a bright 4×4 block at a class-dependent place, over
// seeded noise), so that training moves the weights and metrics in a meaningful way.
void write_split(const fs::path& dir, const std::string& stem, uint32_t n, uint64_t seed) {
    std::vector<uint8_t> images(static_cast<size_t>(n) * 784), labels(n);
    uint64_t s = seed;
    auto next = [&s] {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<uint32_t>(s >> 33);
    };
    for (uint32_t i = 0; i < n; ++i) {
        const uint8_t y = static_cast<uint8_t>(next() % 10);
        labels[i] = y;
        uint8_t* img = images.data() + static_cast<size_t>(i) * 784;
        for (int p = 0; p < 784; ++p) img[p] = static_cast<uint8_t>(next() % 64);
        const int r0 = 2 + 8 * (y / 3), c0 = 2 + 8 * (y % 3);
        for (int r = r0; r < r0 + 4; ++r)
            for (int c = c0; c < c0 + 4; ++c) img[r * 28 + c] = 255;
    }
    write_idx(dir / (stem + "-images-idx3-ubyte"), {n, 28, 28}, images);
    write_idx(dir / (stem + "-labels-idx1-ubyte"), {n}, labels);
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

// The metrics lines without their wall-clock field.
std::vector<std::string> metric_lines(const fs::path& p) {
    std::vector<std::string> lines;
    std::istringstream in(read_file(p));
    static const std::regex seconds(R"("seconds":[^,}]*,?)");
    for (std::string line; std::getline(in, line);) lines.push_back(std::regex_replace(line, seconds, ""));
    return lines;
}

class Resume : public ::testing::TestWithParam<std::pair<const char*, const char*>> {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("lsgrad_resume_" + std::to_string(::getpid()) + "_" +
                                            GetParam().first + "_" + GetParam().second);
        fs::remove_all(dir_);
        fs::create_directories(dir_ / "data");
        const bool cnn = std::string(GetParam().first) == "cnn";
        write_split(dir_ / "data", "train", cnn ? 320 : 640, 1);
        write_split(dir_ / "data", "t10k", 64, 2);
    }
    void TearDown() override { fs::remove_all(dir_); }

    // Runs the example with the common flags plus `extra`; expects exit status 0.
    void mnist(const std::string& extra, const std::string& log) {
        const std::string cmd = std::string(LSGRAD_MNIST_EXE) + " --data " + (dir_ / "data").string() +
                                " --model " + GetParam().first + " --optimizer " + GetParam().second +
                                " --epochs 3 --batch-size 32 --holdout 64 --test-limit 64 --threads 2 --seed 5 " +
                                extra + " > " + (dir_ / log).string() + " 2>&1";
        ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << read_file(dir_ / log);
    }

    fs::path dir_;
};

TEST_P(Resume, CheckpointAndResumeMatchOneRunBitForBit) {
    const fs::path full = dir_ / "full.safetensors", resumed = dir_ / "resumed.safetensors";
    const fs::path ck = dir_ / "ck.safetensors";
    mnist("--save " + full.string() + " --metrics-out " + (dir_ / "full.jsonl").string(), "full.log");
    mnist("--checkpoint " + ck.string() + " --stop-after 1 --metrics-out " + (dir_ / "part1.jsonl").string(),
          "part1.log");
    mnist("--resume " + ck.string() + " --save " + resumed.string() + " --metrics-out " +
              (dir_ / "part2.jsonl").string(),
          "part2.log");

    const std::string a = read_file(full), b = read_file(resumed);
    ASSERT_FALSE(a.empty());
    EXPECT_TRUE(a == b) << "the resumed run's weights differ from the uninterrupted run's";
    const std::vector<std::string> all = metric_lines(dir_ / "full.jsonl");
    const std::vector<std::string> first = metric_lines(dir_ / "part1.jsonl");
    const std::vector<std::string> rest = metric_lines(dir_ / "part2.jsonl");
    ASSERT_EQ(all.size(), 3u);
    ASSERT_EQ(first.size(), 1u);
    ASSERT_EQ(rest.size(), 2u);
    EXPECT_EQ(first[0], all[0]);
    EXPECT_EQ(rest[0], all[1]);
    EXPECT_EQ(rest[1], all[2]);
    // The summary (test accuracy, NLL, ECE, fitted temperature) printed at the end is the same too.
    const auto summary = [&](const std::string& log) {
        const std::string text = read_file(dir_ / log);
        return text.substr(text.find("\nMNIST test"), text.find("seconds per epoch") - text.find("\nMNIST test"));
    };
    EXPECT_EQ(summary("full.log"), summary("part2.log"));
}

// A checkpoint made with other flags is refused with one line naming the flag.
TEST_P(Resume, RefusesACheckpointOfAnotherRun) {
    const fs::path ck = dir_ / "ck.safetensors";
    mnist("--checkpoint " + ck.string() + " --stop-after 1", "part1.log");
    const std::string cmd = std::string(LSGRAD_MNIST_EXE) + " --data " + (dir_ / "data").string() + " --model " +
                            GetParam().first + " --optimizer " + GetParam().second +
                            " --epochs 3 --batch-size 32 --holdout 64 --test-limit 64 --threads 2 --seed 6 --resume " +
                            ck.string() + " > " + (dir_ / "bad.log").string() + " 2>&1";
    EXPECT_NE(std::system(cmd.c_str()), 0);
    EXPECT_NE(read_file(dir_ / "bad.log").find("--seed 5, this run has --seed 6"), std::string::npos)
        << read_file(dir_ / "bad.log");
}

// Every bad flag stops the program before training with exit status 1 and one line naming it.
TEST(MnistFlags, BadValuesFailUpFrontWithOneLine) {
    const fs::path dir = fs::temp_directory_path() / ("lsgrad_flags_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "data");
    write_split(dir / "data", "train", 200, 1);
    write_split(dir / "data", "t10k", 20, 2);
    const std::string file = (dir / "data" / "train-labels-idx1-ubyte").string();  // not a folder
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"--threads 0", "--threads"},
        {"--threads -3", "--threads"},
        {"--threads 100000", "--threads"},
        {"--loss ls --smoothing nan", "--smoothing"},
        {"--loss ls --smoothing 1.5", "--smoothing"},
        {"--lr inf", "--lr"},
        {"--lr nan", "--lr"},
        {"--lr -1", "--lr"},
        {"--weight-decay nan", "--weight-decay"},
        {"--loss mixup --mixup-alpha inf", "--mixup-alpha"},
        {"--epochs -1", "--epochs"},
        {"--batch-size 9223372036854775807", "--batch-size"},
        {"--batch-size 181", "--batch-size"},  // 200 images, 20 held out
        {"--save " + file + "/model.safetensors", "--save"},
        {"--checkpoint " + file + "/ck.safetensors", "--checkpoint"},
        {"--metrics-out " + file + "/m.jsonl", "--metrics-out"},
        {"--plot-dir " + file + "/plots", "--plot-dir"},
        {"--stop-after 1", "--stop-after"},
        {"--resume a.safetensors --load b.safetensors", "--resume"},
        {"--test-limit -1", "--test-limit"},
    };
    for (const auto& [flags, name] : cases) {
        const fs::path log = dir / "out.log";
        const std::string cmd = std::string(LSGRAD_MNIST_EXE) + " --data " + (dir / "data").string() +
                                " --model mlp --epochs 1 --holdout 20 " + flags + " > " + log.string() + " 2>&1";
        const int status = std::system(cmd.c_str());
        const std::string out = read_file(log);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << flags << ": status " << status << "\n" << out;
        const size_t error_line = out.find("error: ");
        ASSERT_NE(error_line, std::string::npos) << flags << "\n" << out;
        EXPECT_NE(out.find(name, error_line), std::string::npos) << flags << "\n" << out;
        EXPECT_EQ(out.find("epoch 1/"), std::string::npos) << flags << ": training started\n" << out;
    }
    fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Models, Resume,
                         ::testing::Values(std::pair{"mlp", "sgd"}, std::pair{"mlp", "adam"}, std::pair{"cnn", "sgd"},
                                           std::pair{"cnn", "adam"}),
                         [](const auto& info) { return std::string(info.param.first) + "_" + info.param.second; });

#endif  // LSGRAD_MNIST_EXE

}  // namespace

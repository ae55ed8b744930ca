// nn/serialize: safetensors round trips, the atomic write, every rejection of a corrupt file, and
// a file read back by Python (json + numpy) as the ecosystem would.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "lsgrad/lsgrad.h"
#include "test_util.h"

namespace lsg {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

// A fresh folder under the system temp dir, removed with its contents at the end of the test.
class TempDir {
public:
    TempDir() {
        path_ = fs::temp_directory_path() /
                ("lsgrad_serialize_" + std::to_string(::getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
        fs::remove_all(path_, ignored);
    }
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }
    // Names of the files in the folder.
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    fs::path path_;
};

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and a data section, with the 8-byte length in front.
std::string file_bytes(const std::string& header, const std::string& data, uint64_t length = UINT64_MAX) {
    const uint64_t n = length == UINT64_MAX ? header.size() : length;
    std::string out(reinterpret_cast<const char*>(&n), 8);
    return out + header + data;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
    if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
    if (a.dtype() == DType::i64) return a.to_vector<int64_t>() == b.to_vector<int64_t>();
    return a.to(DType::f64).to_vector<double>() == b.to(DType::f64).to_vector<double>();
}

std::map<std::string, Tensor> sample_tensors() {
    return {{"a.weight", randn({2, 3})},
            {"b", randn({4}, {.dtype = DType::f64})},
            {"counts", from_vector<int64_t>({1, -2, 3, 1LL << 40}, {2, 2})},
            {"scalar", scalar_tensor(2.5)},
            {"empty", zeros({0, 3})}};
}

TEST(Serialize, RoundTripKeepsValuesDtypesShapesAndMetadata) {
    TempDir dir;
    const auto tensors = sample_tensors();
    const fs::path path = dir / "t.safetensors";
    nn::save_safetensors(tensors, path, {{"format", "pt"}, {"epoch", "3"}});
    nn::Metadata meta;
    const auto loaded = nn::load_safetensors(path, &meta);
    ASSERT_EQ(loaded.size(), tensors.size());
    for (const auto& [name, t] : tensors) {
        ASSERT_EQ(loaded.count(name), 1u) << name;
        EXPECT_TRUE(same_tensor(loaded.at(name), t)) << name;
        EXPECT_FALSE(loaded.at(name).requires_grad());
    }
    EXPECT_EQ(meta, (nn::Metadata{{"format", "pt"}, {"epoch", "3"}}));
    // The data section starts 8-byte aligned and the header is a JSON object.
    const std::string bytes = read_bytes(path);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    EXPECT_EQ((8 + n) % 8, 0u);
    EXPECT_EQ(bytes[8], '{');
    // Only the final file is left behind.
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"t.safetensors"}));
}

TEST(Serialize, NonContiguousTensorsAreSavedRowMajor) {
    TempDir dir;
    const Tensor t = arange(0.0, 6.0, 1.0).reshape({2, 3}).t();  // [3, 2] view, column-major strides
    nn::save_safetensors({{"t", t}}, dir / "t.safetensors");
    const Tensor back = nn::load_safetensors(dir / "t.safetensors").at("t");
    EXPECT_EQ(back.shape(), (Shape{3, 2}));
    EXPECT_EQ(back.to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

std::shared_ptr<nn::Sequential> small_cnn(uint64_t seed) {
    Generator gen(seed);
    return std::make_shared<nn::Sequential>(
        std::make_shared<nn::Conv2d>(1, 4, 3, 1, 1, true, gen), std::make_shared<nn::BatchNorm2d>(4),
        std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
        std::make_shared<nn::Linear>(4 * 4 * 4, 10, true, gen));
}

TEST(Serialize, ModelRoundTripGivesIdenticalOutputs) {
    TempDir dir;
    auto a = small_cnn(1);
    // One training step moves the weights and the BatchNorm running statistics off their init.
    optim::SGD sgd(a->parameters(), {.lr = 0.1, .momentum = 0.9});
    const Tensor x = randn({6, 1, 8, 8});
    (*a)(x).sum().backward();
    sgd.step();
    a->eval();
    const Tensor expected = (*a)(x);

    nn::save(*a, dir / "model.safetensors", {{"arch", "small_cnn"}});
    auto b = small_cnn(2);
    b->eval();
    EXPECT_FALSE(allclose((*b)(x), expected));
    const nn::LoadStateDictResult r = nn::load(*b, dir / "model.safetensors");
    EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty());
    EXPECT_TRUE(allclose((*b)(x), expected, 0, 0));
    EXPECT_EQ(b->state_dict().at("1.num_batches_tracked").item<int64_t>(), 1);

    // A checkpoint of another architecture is refused, naming the key and both shapes.
    nn::Sequential other(std::make_shared<nn::Linear>(3, 3));
    expect_error([&] { nn::load(other, dir / "model.safetensors"); },
                 {"size mismatch for \"0.weight\"", "checkpoint has shape [4, 1, 3, 3]", "module has shape [3, 3]"});
    nn::Sequential shorter(std::make_shared<nn::Conv2d>(1, 4, 3, 1, 1));
    expect_error([&] { nn::load(shorter, dir / "model.safetensors"); }, {"unexpected key(s)", "\"5.bias\""});
    EXPECT_EQ(nn::load(shorter, dir / "model.safetensors", false).unexpected_keys.size(), 7u);
}

TEST(Serialize, FailedSaveLeavesNoPartialFileAndTheOldFileIntact) {
    TempDir dir;
    const fs::path path = dir / "ckpt.safetensors";
    const auto old_tensors = sample_tensors();
    nn::save_safetensors(old_tensors, path);
    const std::string old_bytes = read_bytes(path);

    // The write fails midway: the file-size limit stops it after the header (write() returns
    // EFBIG; SIGXFSZ is ignored so the process survives, as a full disk would leave it).
    struct rlimit saved {};
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
    auto previous = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
    bool threw = false;
    std::string what;
    try {
        nn::save_safetensors({{"big", zeros({100000})}}, path);
    } catch (const Error& e) {
        threw = true;
        what = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous);
    ASSERT_TRUE(threw);
    EXPECT_NE(what.find("cannot save \"" + path.string() + "\": cannot write"), std::string::npos) << what;
    EXPECT_EQ(read_bytes(path), old_bytes);
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"ckpt.safetensors"}));
    for (const auto& [name, t] : nn::load_safetensors(path)) EXPECT_TRUE(same_tensor(t, old_tensors.at(name)));

    // The rename fails (a folder stands at the path): the written temporary file is removed.
    const fs::path blocked = dir / "blocked";
    fs::create_directories(blocked / "inside");
    expect_error([&] { nn::save_safetensors(old_tensors, blocked); },
                 {"cannot save", blocked.string(), "cannot rename"});
    EXPECT_EQ(dir.files(), (std::vector<std::string>{"blocked", "ckpt.safetensors"}));

    // A folder that does not exist.
    const fs::path missing = dir / "no" / "such" / "dir" / "x.safetensors";
    expect_error([&] { nn::save_safetensors(old_tensors, missing); },
                 {"cannot save", missing.string(), "cannot create"});
    EXPECT_FALSE(fs::exists(missing.parent_path()));

    // Bad input fails before the disk is touched.
    expect_error([&] { nn::save_safetensors({{"u", Tensor()}}, path); }, {"tensor \"u\" is undefined"});
    expect_error([&] { nn::save_safetensors({{"__metadata__", zeros({1})}}, path); }, {"is reserved"});
    EXPECT_EQ(read_bytes(path), old_bytes);
}

TEST(Serialize, EveryCorruptionIsAnErrorNamingTheFileAndTheProblem) {
    TempDir dir;
    const fs::path path = dir / "bad.safetensors";
    const std::string p = "\"" + path.string() + "\"";
    auto expect_rejected = [&](const std::string& bytes, const std::vector<std::string>& fragments) {
        write_bytes(path, bytes);
        std::vector<std::string> all{"load_safetensors", p};
        all.insert(all.end(), fragments.begin(), fragments.end());
        expect_error([&] { nn::load_safetensors(path); }, all);
    };
    const std::string f32x2 = std::string(8, '\0');  // two f32 zeros

    expect_error([&] { nn::load_safetensors(dir / "missing.safetensors"); }, {"missing.safetensors", "cannot open"});
    expect_rejected("abc", {"truncated: 3 bytes"});
    expect_rejected(file_bytes("{}", "", 1000), {"header length 1000 exceeds the 2 bytes after it"});
    expect_rejected(file_bytes("{\"a\": {\"dtype\": \"F32\",", ""), {"header is not valid JSON"});
    expect_rejected(file_bytes("[1, 2]", ""), {"header must be a JSON object, got array"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}})", "1234"),
                    {"tensor \"a\"", "unknown dtype \"BF16\" (supported: F32, F64, I64)"});
    expect_rejected(file_bytes(R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", f32x2),
                    {"tensor \"a\": no \"dtype\""});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", f32x2),
                    {"shape must hold non-negative integers"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", f32x2),
                    {"tensor \"a\"", "shape [3] of F32 needs 12 bytes but data_offsets [0,8] span 8"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", f32x2),
                    {"end before they begin"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]}})", f32x2),
                    {"data_offsets must be [begin, end]"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", f32x2),
                    {"tensor \"a\": data_offsets [0, 16] run past the 8-byte data section"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                               f32x2 + f32x2),
                    {"tensor \"b\": data_offsets [4, 12] overlap"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", f32x2 + "1234"),
                    {"tensor \"a\": data_offsets [4, 12] leave bytes [0, 4) unused"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", f32x2 + "xy"),
                    {"the tensors cover 8 bytes of the 10-byte data section"});
    expect_rejected(file_bytes(R"({"__metadata__": {"epoch": 3}})", ""), {"__metadata__ \"epoch\" must be a string"});
    expect_rejected(file_bytes(R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 8]}})",
                               f32x2),
                    {"is too large"});
    // A well-formed file of the same pieces loads.
    write_bytes(path, file_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", f32x2));
    EXPECT_EQ(nn::load_safetensors(path).at("a").to_vector<float>(), (std::vector<float>{0.f, 0.f}));
}

// Runs a shell command and returns its standard output (empty on failure).
std::string run(const std::string& command) {
    std::string out;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return out;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    if (::pclose(pipe) != 0) return {};
    return out;
}

TEST(Serialize, PythonReadsTheFileWithJsonAndNumpy) {
    const char* python = "/usr/bin/python3";
    if (!fs::exists(python)) GTEST_SKIP() << "no /usr/bin/python3 to read the file back";
    if (run(std::string(python) + " -c 'import numpy' 2>/dev/null && echo ok") != "ok\n")
        GTEST_SKIP() << "/usr/bin/python3 has no numpy (Debian: python3-numpy)";

    TempDir dir;
    const fs::path path = dir / "py.safetensors";
    const std::map<std::string, Tensor> tensors{{"w", randn({3, 4})},
                                                 {"v", randn({5}, {.dtype = DType::f64})},
                                                 {"i", from_vector<int64_t>({7, -8, 9})}};
    nn::save_safetensors(tensors, path, {{"note", "from lsgrad"}});

    // Python reads the header and data as the format says and prints, per tensor in name order,
    // its name, dtype, shape and Σ_k value_k·(k + 1) over the row-major elements.
    const std::string script = R"(
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
types = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}
print(header["__metadata__"]["note"])
for name in sorted(k for k in header if k != "__metadata__"):
    e = header[name]
    b, end = e["data_offsets"]
    a = np.frombuffer(data[b:end], dtype=types[e["dtype"]]).reshape(e["shape"])
    w = np.arange(1, a.size + 1, dtype=np.float64)
    print(name, e["dtype"], list(a.shape), repr(float((a.astype(np.float64).ravel() * w).sum())))
)";
    const fs::path script_path = dir / "read.py";
    write_bytes(script_path, script);
    const std::string out = run(std::string(python) + " " + script_path.string() + " " + path.string());
    ASSERT_FALSE(out.empty()) << "the Python reader failed";

    std::istringstream lines(out);
    std::string note;
    std::getline(lines, note);
    EXPECT_EQ(note, "from lsgrad");
    for (const auto& [name, t] : tensors) {  // std::map: name order, as the script sorts
        std::string line;
        ASSERT_TRUE(std::getline(lines, line)) << out;
        const std::vector<double> v = t.to(DType::f64).to_vector<double>();
        double checksum = 0.0;
        for (size_t k = 0; k < v.size(); ++k) checksum += v[k] * static_cast<double>(k + 1);
        std::istringstream fields(line);
        std::string got_name, got_dtype, shape_and_sum;
        fields >> got_name >> got_dtype;
        std::getline(fields, shape_and_sum);
        const size_t close = shape_and_sum.find(']');
        ASSERT_NE(close, std::string::npos) << line;
        const double got_sum = std::stod(shape_and_sum.substr(close + 1));
        std::ostringstream shape;
        shape << " [";
        for (int64_t d = 0; d < t.dim(); ++d) shape << (d ? ", " : "") << t.size(d);
        shape << "]";
        EXPECT_EQ(got_name, name);
        EXPECT_EQ(got_dtype, t.dtype() == DType::f32 ? "F32" : t.dtype() == DType::f64 ? "F64" : "I64");
        EXPECT_EQ(shape_and_sum.substr(0, close + 1), shape.str());
        EXPECT_NEAR(got_sum, checksum, 1e-12 * (1.0 + std::abs(checksum))) << name;
    }
}

}  // namespace
}  // namespace lsg

// IDX reader: crafted files (raw and gzip) in a scratch directory, every rejection message checked
// for the path and the specific problem; the real MNIST files when a fetched copy is present.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/data/idx.h"

namespace fs = std::filesystem;
using lsg::data::IdxArray;

namespace {

using Bytes = std::vector<uint8_t>;

// An IDX header: 0, 0, type, ndims, then each dimension as a big-endian uint32.
Bytes idx_header(uint8_t type, const std::vector<uint32_t>& dims) {
    Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
    for (uint32_t d : dims) {
        b.push_back(static_cast<uint8_t>(d >> 24));
        b.push_back(static_cast<uint8_t>(d >> 16));
        b.push_back(static_cast<uint8_t>(d >> 8));
        b.push_back(static_cast<uint8_t>(d));
    }
    return b;
}

// A complete unsigned-byte IDX file whose element i is (i * 7 + 3) mod 256.
Bytes idx_file(const std::vector<uint32_t>& dims, Bytes* payload_out = nullptr) {
    Bytes b = idx_header(0x08, dims);
    size_t n = 1;
    for (uint32_t d : dims) n *= d;
    Bytes payload(n);
    for (size_t i = 0; i < n; ++i) payload[i] = static_cast<uint8_t>((i * 7 + 3) % 256);
    b.insert(b.end(), payload.begin(), payload.end());
    if (payload_out) *payload_out = payload;
    return b;
}

// Runs fn, expecting lsg::Error whose message contains every one of parts.
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
    try {
        fn();
    } catch (const lsg::Error& e) {
        const std::string msg = e.what();
        for (const std::string& part : parts)
            EXPECT_NE(msg.find(part), std::string::npos)
                << "message lacks \"" << part << "\":\n  " << msg;
        return;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw a non-lsg::Error: " << e.what();
        return;
    }
    ADD_FAILURE() << "no exception thrown";
}

class IdxTest : public ::testing::Test {
protected:
    void SetUp() override {
        static std::atomic<int> counter{0};
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() / ("lsgrad_idx_" + std::to_string(::getpid()) + "_" +
                                            std::to_string(counter++) + "_" + info->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    std::string write_raw(const std::string& name, const Bytes& bytes) {
        const fs::path p = dir_ / name;
        std::ofstream out(p, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes.data()),
                  static_cast<std::streamsize>(bytes.size()));
        EXPECT_TRUE(out.good()) << p;
        return p.string();
    }

    std::string write_gzip(const std::string& name, const Bytes& bytes) {
        const fs::path p = dir_ / name;
        gzFile gz = gzopen(p.c_str(), "wb9");
        EXPECT_NE(gz, nullptr) << p;
        if (!bytes.empty()) {
            EXPECT_EQ(gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size())),
                      static_cast<int>(bytes.size()));
        }
        EXPECT_EQ(gzclose(gz), Z_OK);
        return p.string();
    }

    fs::path dir_;
};

TEST_F(IdxTest, ReadsRawImages) {
    Bytes payload;
    const std::string path = write_raw("images", idx_file({3, 2, 4}, &payload));
    const IdxArray a = lsg::data::read_idx(path);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 2, 4}));
    EXPECT_EQ(a.data, payload);
}

TEST_F(IdxTest, ReadsLabelsAndManyDimensions) {
    // Labels [5] with values 9, 0, 4, 1, 9: the header is followed by exactly those bytes.
    Bytes labels = idx_header(0x08, {5});
    labels.insert(labels.end(), {9, 0, 4, 1, 9});
    const IdxArray l = lsg::data::read_idx(write_raw("labels", labels));
    EXPECT_EQ(l.shape, (std::vector<int64_t>{5}));
    EXPECT_EQ(l.data, (Bytes{9, 0, 4, 1, 9}));

    Bytes payload;
    const IdxArray a = lsg::data::read_idx(write_raw("four", idx_file({2, 1, 3, 2}, &payload)));
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 1, 3, 2}));
    EXPECT_EQ(a.data, payload);
}

TEST_F(IdxTest, ReadsEmptyArray) {
    const IdxArray a = lsg::data::read_idx(write_raw("empty", idx_header(0x08, {0, 28, 28})));
    EXPECT_EQ(a.shape, (std::vector<int64_t>{0, 28, 28}));
    EXPECT_TRUE(a.data.empty());
}

TEST_F(IdxTest, GzipReadsTheSameAsRaw) {
    Bytes payload;
    // Large enough to span several zlib buffers and reader chunks.
    const Bytes file = idx_file({300, 100, 200}, &payload);
    const IdxArray raw = lsg::data::read_idx(write_raw("images", file));
    // The name does not decide: a gzip file without ".gz" is recognised by its magic bytes.
    const IdxArray gz = lsg::data::read_idx(write_gzip("images.gz", file));
    const IdxArray gz_unnamed = lsg::data::read_idx(write_gzip("images_compressed", file));
    EXPECT_EQ(raw.shape, (std::vector<int64_t>{300, 100, 200}));
    EXPECT_EQ(raw.data, payload);
    EXPECT_EQ(gz.shape, raw.shape);
    EXPECT_EQ(gz.data, raw.data);
    EXPECT_EQ(gz_unnamed.data, raw.data);
}

TEST_F(IdxTest, RawFileNamedGzIsReadAsRaw) {
    Bytes payload;
    const IdxArray a = lsg::data::read_idx(write_raw("labels.gz", idx_file({7}, &payload)));
    EXPECT_EQ(a.data, payload);
}

TEST_F(IdxTest, RejectsMissingFile) {
    const std::string path = (dir_ / "nope-idx3-ubyte").string();
    expect_error([&] { lsg::data::read_idx(path); }, {"lsg::read_idx", path, "no such file"});
    expect_error([&] { lsg::data::read_idx(dir_.string()); }, {dir_.string(), "is a directory"});
}

TEST_F(IdxTest, RejectsBadMagic) {
    Bytes file = idx_file({2, 2});
    file[0] = 0x1A;
    file[1] = 0x2B;
    const std::string path = write_raw("bad_magic", file);
    expect_error([&] { lsg::data::read_idx(path); },
                 {"lsg::read_idx", path, "bad magic 0x1a2b0802", "two zero bytes"});

    // A gzip file whose content has a bad magic is reported the same way.
    const std::string gz = write_gzip("bad_magic.gz", file);
    expect_error([&] { lsg::data::read_idx(gz); }, {gz, "bad magic 0x1a2b0802"});
}

TEST_F(IdxTest, RejectsUnsupportedType) {
    Bytes file = idx_header(0x0D, {2});
    file.insert(file.end(), 8, 0);
    const std::string path = write_raw("floats", file);
    expect_error([&] { lsg::data::read_idx(path); },
                 {path, "unsupported element type 0x0d", "float32", "only 0x08"});
}

TEST_F(IdxTest, RejectsZeroDimensions) {
    const std::string path = write_raw("scalar", idx_header(0x08, {}));
    expect_error([&] { lsg::data::read_idx(path); }, {path, "declares 0 dimensions"});
}

TEST_F(IdxTest, RejectsTruncatedHeader) {
    // Magic 0x00000803 promises three dimensions (a 16-byte header); only one follows.
    Bytes file = idx_header(0x08, {3, 2, 4});
    file.resize(8);
    const std::string path = write_raw("short_header", file);
    expect_error(
        [&] { lsg::data::read_idx(path); },
        {path, "truncated header", "declares 3 dimensions", "16-byte header", "has 8 bytes"});

    const std::string tiny = write_raw("tiny", Bytes{0, 0});
    expect_error([&] { lsg::data::read_idx(tiny); }, {tiny, "truncated header", "has 2 bytes"});

    const std::string empty = write_raw("empty", Bytes{});
    expect_error([&] { lsg::data::read_idx(empty); }, {empty, "truncated header", "has 0 bytes"});
}

TEST_F(IdxTest, RejectsTruncatedData) {
    Bytes file = idx_file({3, 2, 4});
    file.resize(16 + 10);
    const std::string path = write_raw("short_images", file);
    expect_error([&] { lsg::data::read_idx(path); },
                 {"lsg::read_idx", path, "truncated: header says 3x2x4 = 24 bytes", "file has 10",
                  "16-byte header"});

    const std::string gz = write_gzip("short_images.gz", file);
    expect_error([&] { lsg::data::read_idx(gz); },
                 {gz, "truncated: header says 3x2x4 = 24 bytes", "decompressed data has 10"});
}

TEST_F(IdxTest, RejectsHugeHeaderOnSmallFile) {
    // MNIST-sized header, almost no data: must report truncation, not try to allocate.
    Bytes file = idx_header(0x08, {60000, 28, 28});
    file.resize(file.size() + 1000, 1);
    const std::string path = write_raw("train-images-idx3-ubyte", file);
    expect_error([&] { lsg::data::read_idx(path); },
                 {path, "truncated: header says 60000x28x28 = 47040000 bytes", "file has 1000"});

    // 255 dimensions of 2^32 - 1 elements overflow any element count.
    const std::string big =
        write_raw("big", idx_header(0x08, std::vector<uint32_t>(255, 0xFFFFFFFFu)));
    expect_error([&] { lsg::data::read_idx(big); }, {big, "more elements than fit in 64 bits"});
}

TEST_F(IdxTest, RejectsCutOffGzipStream) {
    const Bytes file = idx_file({200, 50, 50});
    const std::string full = write_gzip("full.gz", file);
    std::ifstream in(full, std::ios::binary);
    Bytes compressed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(compressed.size(), 100u);
    compressed.resize(compressed.size() / 2);
    const std::string cut = write_raw("cut.gz", compressed);
    expect_error([&] { lsg::data::read_idx(cut); },
                 {cut, "truncated: header says 200x50x50 = 500000 bytes",
                  "gzip stream is cut off: unexpected end of file"});
}

TEST_F(IdxTest, RejectsDamagedGzipData) {
    const Bytes file = idx_file({200, 50, 50});
    const std::string full = write_gzip("full.gz", file);
    std::ifstream in(full, std::ios::binary);
    Bytes compressed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(compressed.size(), 100u);
    // Scribble over the deflate stream past the 10-byte gzip header.
    for (size_t i = 10; i < 60; ++i) compressed[i] = static_cast<uint8_t>(0xFF - i);
    const std::string bad = write_raw("damaged.gz", compressed);
    expect_error([&] { lsg::data::read_idx(bad); }, {bad, "damaged gzip data"});
}

TEST_F(IdxTest, RejectsTrailingBytes) {
    Bytes file = idx_file({3, 2, 4});
    file.insert(file.end(), {1, 2, 3, 4, 5});
    const std::string path = write_raw("trailing", file);
    expect_error([&] { lsg::data::read_idx(path); },
                 {path, "trailing garbage: 5 bytes after the 24 bytes", "3x2x4"});

    const std::string gz = write_gzip("trailing.gz", file);
    expect_error([&] { lsg::data::read_idx(gz); }, {gz, "trailing garbage: 5 bytes"});
}

TEST_F(IdxTest, PairCheckRejectsCountMismatch) {
    const IdxArray images = lsg::data::read_idx(write_raw("images", idx_file({3, 2, 2})));
    const IdxArray labels = lsg::data::read_idx(write_raw("labels", idx_file({2})));
    expect_error([&] { lsg::data::check_idx_pair(images, labels, "MNIST train"); },
                 {"lsg::check_idx_pair", "MNIST train", "3 images but 2 labels"});

    const IdxArray good = lsg::data::read_idx(write_raw("labels3", idx_file({3})));
    EXPECT_NO_THROW(lsg::data::check_idx_pair(images, good, "MNIST train"));

    const IdxArray matrix = lsg::data::read_idx(write_raw("matrix", idx_file({3, 1})));
    expect_error([&] { lsg::data::check_idx_pair(images, matrix, "MNIST test"); },
                 {"MNIST test", "labels must be 1-D", "[3, 1]"});
}

TEST_F(IdxTest, LabelCheckNamesIndexAndValue) {
    Bytes file = idx_header(0x08, {4});
    file.insert(file.end(), {3, 9, 10, 2});
    const IdxArray labels = lsg::data::read_idx(write_raw("labels", file));
    expect_error([&] { lsg::data::check_labels(labels, 10, "MNIST test labels"); },
                 {"lsg::check_labels", "MNIST test labels", "index 2 is 10", "[0, 10)"});
    EXPECT_NO_THROW(lsg::data::check_labels(labels, 11, "MNIST test labels"));
    expect_error([&] { lsg::data::check_labels(labels, 0, "x"); },
                 {"num_classes must be positive"});
}

TEST_F(IdxTest, FindsRawFiles) {
    for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
        write_raw(name, idx_file({1}));
    // A compressed copy beside the raw one does not win.
    write_gzip("train-images-idx3-ubyte.gz", idx_file({1}));
    const lsg::data::IdxFiles f = lsg::data::find_idx_files(dir_.string());
    EXPECT_EQ(f.train_images, (dir_ / "train-images-idx3-ubyte").string());
    EXPECT_EQ(f.train_labels, (dir_ / "train-labels-idx1-ubyte").string());
    EXPECT_EQ(f.test_images, (dir_ / "t10k-images-idx3-ubyte").string());
    EXPECT_EQ(f.test_labels, (dir_ / "t10k-labels-idx1-ubyte").string());
}

TEST_F(IdxTest, FindsGzipAndDottedFiles) {
    write_gzip("train-images-idx3-ubyte.gz", idx_file({1}));
    write_gzip("train-labels-idx1-ubyte.gz", idx_file({1}));
    write_raw("t10k-images.idx3-ubyte", idx_file({1}));
    write_gzip("t10k-labels.idx1-ubyte.gz", idx_file({1}));
    const lsg::data::IdxFiles f = lsg::data::find_idx_files(dir_.string());
    EXPECT_EQ(f.train_images, (dir_ / "train-images-idx3-ubyte.gz").string());
    EXPECT_EQ(f.train_labels, (dir_ / "train-labels-idx1-ubyte.gz").string());
    EXPECT_EQ(f.test_images, (dir_ / "t10k-images.idx3-ubyte").string());
    EXPECT_EQ(f.test_labels, (dir_ / "t10k-labels.idx1-ubyte.gz").string());
}

TEST_F(IdxTest, FindListsWhatIsMissing) {
    write_raw("train-images-idx3-ubyte", idx_file({1}));
    write_raw("train-labels-idx1-ubyte", idx_file({1}));
    write_raw("t10k-images-idx3-ubyte", idx_file({1}));
    expect_error([&] { lsg::data::find_idx_files(dir_.string()); },
                 {"lsg::find_idx_files", dir_.string(), "no test labels",
                  "t10k-labels-idx1-ubyte, t10k-labels.idx1-ubyte, t10k-labels-idx1-ubyte.gz, "
                  "t10k-labels.idx1-ubyte.gz"});

    const std::string absent = (dir_ / "absent").string();
    expect_error([&] { lsg::data::find_idx_files(absent); }, {absent, "no such directory"});
    const std::string file = write_raw("plain", Bytes{1});
    expect_error([&] { lsg::data::find_idx_files(file); }, {file, "not a directory"});
}

// The real MNIST files, when scripts/fetch_mnist.sh has put them in its cache folder.
TEST(IdxRealData, ReadsFetchedMnist) {
    fs::path dir;
    if (const char* d = std::getenv("LSGRAD_DATA_DIR")) {
        dir = d;
    } else if (const char* x = std::getenv("XDG_CACHE_HOME")) {
        dir = fs::path(x) / "lsgrad" / "mnist";
    } else if (const char* h = std::getenv("HOME")) {
        dir = fs::path(h) / ".cache" / "lsgrad" / "mnist";
    }
    if (dir.empty() || !fs::exists(dir / "train-labels-idx1-ubyte"))
        GTEST_SKIP() << "MNIST not fetched (scripts/fetch_mnist.sh puts it in " << dir << ")";

    const lsg::data::IdxFiles f = lsg::data::find_idx_files(dir.string());
    const IdxArray train_x = lsg::data::read_idx(f.train_images);
    const IdxArray train_y = lsg::data::read_idx(f.train_labels);
    const IdxArray test_x = lsg::data::read_idx(f.test_images);
    const IdxArray test_y = lsg::data::read_idx(f.test_labels);
    EXPECT_EQ(train_x.shape, (std::vector<int64_t>{60000, 28, 28}));
    EXPECT_EQ(test_x.shape, (std::vector<int64_t>{10000, 28, 28}));
    lsg::data::check_idx_pair(train_x, train_y, "MNIST train");
    lsg::data::check_idx_pair(test_x, test_y, "MNIST test");
    lsg::data::check_labels(train_y, 10, "MNIST train labels");
    lsg::data::check_labels(test_y, 10, "MNIST test labels");
    // The first labels of each split, as published with the data set.
    EXPECT_EQ(Bytes(train_y.data.begin(), train_y.data.begin() + 10),
              (Bytes{5, 0, 4, 1, 9, 2, 1, 3, 1, 4}));
    EXPECT_EQ(Bytes(test_y.data.begin(), test_y.data.begin() + 10),
              (Bytes{7, 2, 1, 0, 4, 1, 4, 9, 5, 9}));
}

// Debian's dataset-fashion-mnist (scripts/fetch_fashion_mnist.sh), gzip-compressed, when installed.
TEST(IdxRealData, ReadsInstalledFashionMnist) {
    const fs::path dir = "/usr/share/datasets/fashion-mnist";
    if (!fs::exists(dir / "train-labels-idx1-ubyte.gz"))
        GTEST_SKIP() << "Fashion-MNIST not installed (scripts/fetch_fashion_mnist.sh installs it)";

    const lsg::data::IdxFiles f = lsg::data::find_idx_files(dir.string());
    EXPECT_EQ(f.train_images, (dir / "train-images-idx3-ubyte.gz").string());
    const IdxArray train_x = lsg::data::read_idx(f.train_images);
    const IdxArray train_y = lsg::data::read_idx(f.train_labels);
    const IdxArray test_x = lsg::data::read_idx(f.test_images);
    const IdxArray test_y = lsg::data::read_idx(f.test_labels);
    EXPECT_EQ(train_x.shape, (std::vector<int64_t>{60000, 28, 28}));
    EXPECT_EQ(test_x.shape, (std::vector<int64_t>{10000, 28, 28}));
    lsg::data::check_idx_pair(train_x, train_y, "Fashion-MNIST train");
    lsg::data::check_idx_pair(test_x, test_y, "Fashion-MNIST test");
    lsg::data::check_labels(train_y, 10, "Fashion-MNIST train labels");
    lsg::data::check_labels(test_y, 10, "Fashion-MNIST test labels");
    // Ankle boot, T-shirt, T-shirt, Dress, ... and Ankle boot, Pullover, Trouser, ...
    EXPECT_EQ(Bytes(train_y.data.begin(), train_y.data.begin() + 10),
              (Bytes{9, 0, 0, 3, 0, 2, 7, 2, 5, 5}));
    EXPECT_EQ(Bytes(test_y.data.begin(), test_y.data.begin() + 10),
              (Bytes{9, 2, 1, 1, 6, 1, 4, 6, 5, 7}));
}

}  // namespace

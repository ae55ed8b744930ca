#include "lsgrad/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>

#include "lsgrad/core/error.h"
#include "lsgrad/core/file.h"

namespace lsg::data {
namespace {

namespace fs = std::filesystem;

// Every failure inside the reader is reported as coming from the public read_idx.
constexpr const char* kReadIdx = "read_idx";

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};
struct GzCloser {
    void operator()(gzFile_s* g) const { gzclose(g); }
};

// Deflate never compresses better than about 1032:1, so a gzip file of c bytes holds at most
// c * 1032 bytes; this bounds the memory reserved on the word of a header alone.
constexpr uint64_t kMaxDeflateRatio = 1032;

// The bytes of one file in order: read directly, or through zlib when the file starts with the
// gzip magic 1f 8b. Read errors and damaged gzip data throw; a short count means end of data.
class ByteSource {
public:
    explicit ByteSource(const std::string& path) : path_(path) {
        // Only a regular file, opened without blocking (a FIFO would wait for a writer forever).
        detail::RegularFile regular(kReadIdx, path);
        file_size_ = regular.size();
        std::array<unsigned char, 2> magic{};
        const size_t got = regular.read_at(0, magic.data(), magic.size());
        if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
            gz_.reset(gzdopen(regular.fd(), "rb"));
            LSG_CHECK_OP(kReadIdx, gz_ != nullptr, path, ": cannot open gzip file: ", std::strerror(errno));
            regular.release();  // gzclose closes it now
            gzbuffer(gz_.get(), 1 << 20);
        } else {
            file_.reset(fdopen(regular.fd(), "rb"));
            LSG_CHECK_OP(kReadIdx, file_ != nullptr, path, ": cannot open: ", std::strerror(errno));
            regular.release();  // fclose closes it now
        }
    }

    bool gzip() const { return gz_ != nullptr; }

    // An upper bound on the bytes this source can deliver, used to cap a reservation.
    uint64_t max_bytes() const { return gzip() ? file_size_ * kMaxDeflateRatio : file_size_; }

    // Reads up to n bytes into out; returns how many were read (fewer only at the end of data).
    size_t read(uint8_t* out, size_t n) {
        size_t total = 0;
        while (total < n) {
            const size_t want = std::min<size_t>(n - total, size_t{1} << 30);
            size_t got = 0;
            if (gzip()) {
                const int r = gzread(gz_.get(), out + total, static_cast<unsigned>(want));
                if (r < 0) {
                    int errnum = 0;
                    fail_read(gz_message(gzerror(gz_.get(), &errnum)));
                }
                got = static_cast<size_t>(r);
            } else {
                got = std::fread(out + total, 1, want, file_.get());
                if (got < want && std::ferror(file_.get())) fail_read(std::strerror(errno));
            }
            total += got;
            if (got < want) break;
        }
        return total;
    }

    // Names what was read, for "... has N bytes" messages.
    const char* noun() const { return gzip() ? "decompressed data" : "file"; }

    // For gzip input that ended in the middle of the compressed stream, says so (zlib reports a
    // cut-off stream as an early end of data, not as an error).
    std::string ending_note() const {
        if (!gzip()) return "";
        int errnum = Z_OK;
        const char* msg = gzerror(gz_.get(), &errnum);
        if (errnum == Z_BUF_ERROR) return " (the gzip stream is cut off: " + gz_message(msg) + ")";
        return "";
    }

private:
    // zlib prefixes its messages with the path, which our messages already lead with.
    std::string gz_message(const char* msg) const {
        std::string m = msg ? msg : "unknown zlib error";
        // zlib names the file by its path, or by "<fd:N>" when opened from a descriptor.
        const std::string prefix = path_ + ": ";
        if (m.rfind(prefix, 0) == 0) m.erase(0, prefix.size());
        else if (m.rfind("<fd:", 0) == 0 && m.find(">: ") != std::string::npos) m.erase(0, m.find(">: ") + 3);
        return m;
    }

    [[noreturn]] void fail_read(const std::string& why) const {
        ::lsg::detail::fail(kReadIdx, path_,
                            gzip() ? ": damaged gzip data: " : ": read error: ", why);
    }

    std::string path_;
    std::unique_ptr<std::FILE, FileCloser> file_;
    std::unique_ptr<gzFile_s, GzCloser> gz_;
    uint64_t file_size_ = 0;
};

// The IDX element types (third magic byte), for naming the one we refuse.
const char* idx_type_name(uint8_t type) {
    switch (type) {
        case 0x08: return "unsigned byte";
        case 0x09: return "signed byte";
        case 0x0B: return "int16";
        case 0x0C: return "int32";
        case 0x0D: return "float32";
        case 0x0E: return "float64";
        default: return "not an IDX type";
    }
}

std::string hex_bytes(const uint8_t* bytes, size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (size_t i = 0; i < n; ++i) {
        s += digits[bytes[i] >> 4];
        s += digits[bytes[i] & 0xF];
    }
    return s;
}

std::string dims_text(const std::vector<int64_t>& shape) {
    std::ostringstream os;
    for (size_t i = 0; i < shape.size(); ++i) os << (i ? "x" : "") << shape[i];
    return os.str();
}

}  // namespace

IdxArray read_idx(const std::string& path) {
    ByteSource src(path);

    std::array<uint8_t, 4> magic{};
    const size_t got_magic = src.read(magic.data(), magic.size());
    LSG_CHECK(got_magic == magic.size(), path, ": truncated header: ", src.noun(), " has ",
              got_magic, " bytes, an IDX header has at least 8", src.ending_note());
    LSG_CHECK(magic[0] == 0 && magic[1] == 0, path, ": bad magic ", hex_bytes(magic.data(), 4),
              ": an IDX file starts with two zero bytes, a type byte and a dimension count "
              "(MNIST images: 0x00000803, labels: 0x00000801)");
    LSG_CHECK(magic[2] == 0x08, path, ": unsupported element type ", hex_bytes(&magic[2], 1), " (",
              idx_type_name(magic[2]), "); only 0x08 (unsigned byte) is supported");
    const size_t ndims = magic[3];
    LSG_CHECK(ndims >= 1, path, ": bad header: magic ", hex_bytes(magic.data(), 4),
              " declares 0 dimensions");

    const size_t header_bytes = 4 + 4 * ndims;
    std::vector<uint8_t> dim_bytes(4 * ndims);
    const size_t got_dims = src.read(dim_bytes.data(), dim_bytes.size());
    LSG_CHECK(got_dims == dim_bytes.size(), path, ": truncated header: magic ",
              hex_bytes(magic.data(), 4), " declares ", ndims, " dimensions (a ", header_bytes,
              "-byte header), ", src.noun(), " has ", 4 + got_dims, " bytes", src.ending_note());

    IdxArray out;
    out.shape.resize(ndims);
    uint64_t total = 1;
    for (size_t d = 0; d < ndims; ++d) {
        const uint8_t* b = &dim_bytes[4 * d];
        const uint64_t dim = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16) |
                             (uint64_t{b[2]} << 8) | uint64_t{b[3]};
        out.shape[d] = static_cast<int64_t>(dim);
        LSG_CHECK(
            dim == 0 || total <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim,
            path, ": header declares more elements than fit in 64 bits: ", out.shape);
        total *= dim;
    }

    // Read in chunks rather than trusting the header with one allocation: a damaged header on a
    // small file must produce the truncation message, not an out-of-memory failure.
    const uint64_t reserve = std::min(total, src.max_bytes());
    out.data.reserve(static_cast<size_t>(reserve));
    constexpr size_t kChunk = size_t{1} << 22;
    size_t have = 0;
    while (have < total) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, total - have));
        out.data.resize(have + want);
        const size_t got = src.read(out.data.data() + have, want);
        have += got;
        if (got < want) break;
    }
    out.data.resize(have);
    LSG_CHECK(have == total, path, ": truncated: header says ", dims_text(out.shape), " = ", total,
              " bytes, ", src.noun(), " has ", have, " after the ", header_bytes, "-byte header",
              src.ending_note());

    std::array<uint8_t, 4096> scratch{};
    uint64_t extra = 0;
    for (size_t got = 0; (got = src.read(scratch.data(), scratch.size())) > 0;) extra += got;
    LSG_CHECK(extra == 0, path, ": trailing garbage: ", extra, " bytes after the ", total,
              " bytes that the header (", dims_text(out.shape), ") declares");
    return out;
}

void check_idx_pair(const IdxArray& images, const IdxArray& labels, const std::string& what) {
    LSG_CHECK(!images.shape.empty(), what, ": images have no dimensions");
    LSG_CHECK(labels.shape.size() == 1, what, ": labels must be 1-D, got shape ", labels.shape);
    LSG_CHECK(images.shape[0] == labels.shape[0], what, ": ", images.shape[0], " images but ",
              labels.shape[0], " labels (image shape ", images.shape, ")");
}

void check_labels(const IdxArray& labels, int64_t num_classes, const std::string& what) {
    LSG_CHECK(num_classes > 0, what, ": num_classes must be positive, got ", num_classes);
    for (size_t i = 0; i < labels.data.size(); ++i)
        LSG_CHECK(labels.data[i] < num_classes, what, ": label at index ", i, " is ",
                  static_cast<int>(labels.data[i]), ", not in [0, ", num_classes, ")");
}

IdxFiles find_idx_files(const std::string& dir) {
    std::error_code ec;
    const fs::file_status st = fs::status(dir, ec);
    LSG_CHECK(st.type() != fs::file_type::not_found, dir, ": no such directory");
    LSG_CHECK(st.type() == fs::file_type::directory, dir, ": not a directory");

    struct Role {
        const char* what;
        const char* stem;
        const char* kind;
        std::string IdxFiles::*member;
    };
    static const std::array<Role, 4> roles = {{
        {"train images", "train-images", "idx3-ubyte", &IdxFiles::train_images},
        {"train labels", "train-labels", "idx1-ubyte", &IdxFiles::train_labels},
        {"test images", "t10k-images", "idx3-ubyte", &IdxFiles::test_images},
        {"test labels", "t10k-labels", "idx1-ubyte", &IdxFiles::test_labels},
    }};

    IdxFiles files;
    std::string missing;
    for (const Role& role : roles) {
        const std::string dash = std::string(role.stem) + "-" + role.kind;
        const std::string dot = std::string(role.stem) + "." + role.kind;
        const std::array<std::string, 4> names = {dash, dot, dash + ".gz", dot + ".gz"};
        std::string& found = files.*role.member;
        for (const std::string& name : names) {
            const fs::path p = fs::path(dir) / name;
            if (fs::is_regular_file(p, ec)) {
                found = p.string();
                break;
            }
        }
        if (found.empty()) {
            missing += missing.empty() ? "" : "; ";
            missing += std::string("no ") + role.what + " (looked for " + names[0] + ", " +
                       names[1] + ", " + names[2] + ", " + names[3] + ")";
        }
    }
    LSG_CHECK(missing.empty(), dir, ": ", missing);
    return files;
}

}  // namespace lsg::data

// safetensors reading and writing. The JSON header is built and parsed with nlohmann-json, a
// header-only dependency private to this file.
#include "lsgrad/nn/serialize.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/core/file.h"

namespace lsg::nn {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is this host's");

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The reference implementation's limit on the header: larger ones are refused before allocating.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

const char* safetensors_dtype(DType dtype) {
    switch (dtype) {
        case DType::f32: return "F32";
        case DType::f64: return "F64";
        case DType::i64: return "I64";
    }
    return "?";
}

// Appended piecewise: GCC 12 warns falsely (-Wrestrict) on "\"" + std::string.
std::string quoted(const fs::path& path) {
    std::string out(1, '"');
    out += path.string();
    out += '"';
    return out;
}

// ---- writing -----------------------------------------------------------------------------------

// A file descriptor that closes itself and removes its file unless release()d after the rename.
class TempFile {
public:
    explicit TempFile(fs::path path) : path_(std::move(path)) {
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    ~TempFile() {
        close();
        if (!committed_) {
            std::error_code ignored;
            fs::remove(path_, ignored);
        }
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;

    bool is_open() const { return fd_ >= 0; }
    // Writes all n bytes, retrying short writes; false (errno set) on failure.
    bool write_all(const void* data, size_t n) {
        const char* p = static_cast<const char*>(data);
        while (n > 0) {
            const ssize_t w = ::write(fd_, p, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                return false;
            }
            p += w;
            n -= static_cast<size_t>(w);
        }
        return true;
    }
    bool sync() { return ::fsync(fd_) == 0; }
    bool close() {
        if (fd_ < 0) return true;
        const int rc = ::close(fd_);
        fd_ = -1;
        return rc == 0;
    }
    void committed() { committed_ = true; }

private:
    fs::path path_;
    int fd_ = -1;
    bool committed_ = false;
};

// The temporary file of a save to `path`: "<path>.tmp.<pid>", in the same folder so that the final
// rename is atomic.
fs::path temporary_for(const fs::path& path, long pid) { return path.string() + ".tmp." + std::to_string(pid); }

// Removes the temporaries that saves to `path` left behind when they were killed (SIGKILL, a
// crash, power loss: no destructor ran): "<path>.tmp.<pid>" whose process no longer exists. A
// live process's file (a concurrent save) is left alone; a pid reused since only delays cleanup.
void remove_stale_temporaries(const fs::path& path) {
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    const std::string prefix = path.filename().string() + ".tmp.";
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string digits = name.substr(prefix.size());
        if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
        const long pid = std::stol(digits);
        if (pid <= 0 || pid == static_cast<long>(::getpid())) continue;
        if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
        std::error_code ignored;
        fs::remove(it->path(), ignored);
    }
}

// Makes the rename itself durable; best effort, as some filesystems refuse fsync on folders.
void sync_directory(const fs::path& dir) {
    const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
}

// ---- reading -----------------------------------------------------------------------------------

struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
};

[[noreturn]] void bad_file(const fs::path& path, const std::string& problem) {
    detail::fail("load_safetensors", quoted(path), ": ", problem);
}

// A header value for a message: scalars as written (cut to 64 characters), containers by their type
// only. Untrusted structure is never dump()ed whole: that recurses and may be 100 MiB long.
std::string describe(const json& v) {
    if (v.is_structured()) return std::string("an ") + v.type_name();
    std::string text = v.dump();
    if (text.size() > 64) text = text.substr(0, 61) + "...";
    return text;
}

// Dims a stored shape may have; more is a damaged header (and would make messages unbounded).
constexpr size_t kMaxDims = 64;

std::string shape_text(const Shape& shape) {
    std::ostringstream os;
    detail::append(os, shape);
    return os.str();
}

// The header's nesting: {name: {"shape": [sizes]}} is 3 levels deep; nothing deeper is valid.
constexpr int kMaxHeaderDepth = 3;

// Parses the header iteratively (nlohmann's parser keeps its own stack, never the C++ one) with a
// callback that refuses nesting beyond kMaxHeaderDepth and a name repeated within one object (the
// DOM would keep the last silently). Every exception of the JSON library becomes an lsg::Error.
json parse_header(const fs::path& path, const std::string& text) {
    std::vector<std::set<std::string>> keys;  // the names seen in each open object
    auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                if (depth >= kMaxHeaderDepth)
                    bad_file(path, "header is nested deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
                if (event == json::parse_event_t::object_start) keys.emplace_back();
                break;
            case json::parse_event_t::object_end:
                if (!keys.empty()) keys.pop_back();
                break;
            case json::parse_event_t::key:
                if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second)
                    bad_file(path, "duplicate name " + describe(parsed) + " in the header");
                break;
            default:
                break;
        }
        return true;
    };
    try {
        return json::parse(text, callback);
    } catch (const json::exception& e) {
        std::string why = e.what();
        if (why.size() > 200) why = why.substr(0, 197) + "...";
        bad_file(path, "header is not valid JSON: " + why);
    }
}

uint64_t header_uint(const fs::path& path, const std::string& name, const char* field, const json& v) {
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
        bad_file(path, "tensor \"" + name + "\": " + field + " must hold non-negative integers, got " + describe(v));
    return v.get<uint64_t>();
}

Entry parse_entry(const fs::path& path, const std::string& name, const json& info) {
    if (!info.is_object()) bad_file(path, "tensor \"" + name + "\": expected an object, got " + describe(info));
    for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!info.contains(field)) bad_file(path, "tensor \"" + name + "\": no \"" + field + "\"");
    Entry e{name, DType::f32, {}, 0, 0};

    const json& dtype = info["dtype"];
    if (!dtype.is_string()) bad_file(path, "tensor \"" + name + "\": dtype must be a string, got " + describe(dtype));
    const std::string d = dtype.get<std::string>();
    if (d == "F32") {
        e.dtype = DType::f32;
    } else if (d == "F64") {
        e.dtype = DType::f64;
    } else if (d == "I64") {
        e.dtype = DType::i64;
    } else {
        bad_file(path, "tensor \"" + name + "\": unknown dtype \"" + d + "\" (supported: F32, F64, I64)");
    }

    const json& shape = info["shape"];
    if (!shape.is_array()) bad_file(path, "tensor \"" + name + "\": shape must be an array, got " + describe(shape));
    if (shape.size() > kMaxDims)
        bad_file(path, "tensor \"" + name + "\": shape has " + std::to_string(shape.size()) + " dims, at most " +
                           std::to_string(kMaxDims) + " are supported");
    // numel × element size must fit in 64 bits: checked per factor against what is left.
    uint64_t bytes = dtype_size(e.dtype);
    bool overflow = false;
    for (const json& s : shape) {
        const uint64_t n = header_uint(path, name, "shape", s);
        if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
        if (n != 0 && bytes > std::numeric_limits<uint64_t>::max() / n) overflow = true;
        bytes = overflow ? 0 : bytes * n;
        e.shape.push_back(static_cast<int64_t>(n));
    }
    if (overflow) bad_file(path, "tensor \"" + name + "\": shape " + shape_text(e.shape) + " is too large");

    const json& offsets = info["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
        bad_file(path, "tensor \"" + name + "\": data_offsets must be [begin, end], got " + describe(offsets));
    e.begin = header_uint(path, name, "data_offsets", offsets[0]);
    e.end = header_uint(path, name, "data_offsets", offsets[1]);
    std::string range = "[";  // appended piecewise: see quoted()
    range += std::to_string(e.begin);
    range += ',';
    range += std::to_string(e.end);
    range += ']';
    if (e.end < e.begin)
        bad_file(path, "tensor \"" + name + "\": data_offsets " + range + " end before they begin");
    if (e.end - e.begin != bytes)
        bad_file(path, "tensor \"" + name + "\": shape " + shape_text(e.shape) + " of " + d + " needs " +
                           std::to_string(bytes) + " bytes but data_offsets " + range + " span " +
                           std::to_string(e.end - e.begin));
    return e;
}

}  // namespace

void save_safetensors(const std::map<std::string, Tensor>& tensors, const fs::path& path, const Metadata& metadata) {
    // Host copies first: a bad tensor fails before anything touches the disk.
    std::vector<Tensor> host;
    host.reserve(tensors.size());
    json header = json::object();
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        LSG_CHECK(name != "__metadata__", "cannot save ", quoted(path),
                  ": \"__metadata__\" is reserved, not a tensor name");
        LSG_CHECK(t.defined(), "cannot save ", quoted(path), ": tensor \"", name, "\" is undefined");
        Tensor h = t.detach().to(Device::cpu()).contiguous();
        const uint64_t nbytes = static_cast<uint64_t>(h.numel()) * dtype_size(h.dtype());
        header[name] = {
            {"dtype", safetensors_dtype(h.dtype())}, {"shape", h.shape()}, {"data_offsets", {offset, offset + nbytes}}};
        offset += nbytes;
        host.push_back(std::move(h));
    }
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::string text = header.dump();
    // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
    text.append((8 - (8 + text.size()) % 8) % 8, ' ');
    const uint64_t header_len = text.size();

    remove_stale_temporaries(path);
    const fs::path tmp = temporary_for(path, static_cast<long>(::getpid()));
    TempFile file(tmp);
    auto fail = [&](const char* what) {
        const std::string cause = std::strerror(errno);
        detail::fail("save_safetensors", "cannot save ", quoted(path), ": ", what, " ", quoted(tmp), ": ", cause);
    };
    if (!file.is_open()) fail("cannot create");
    if (!file.write_all(&header_len, sizeof header_len) || !file.write_all(text.data(), text.size()))
        fail("cannot write");
    for (const Tensor& h : host)
        if (h.numel() > 0 && !file.write_all(h.raw_data(), static_cast<size_t>(h.numel()) * dtype_size(h.dtype())))
            fail("cannot write");
    if (!file.sync()) fail("cannot flush");
    if (!file.close()) fail("cannot close");
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) LSG_FAIL("cannot save ", quoted(path), ": cannot rename ", quoted(tmp), " onto it: ", ec.message());
    file.committed();
    sync_directory(path.parent_path());
}

std::map<std::string, Tensor> load_safetensors(const fs::path& path, Metadata* metadata) {
    // Only a regular file, opened without blocking (a FIFO would wait for a writer forever).
    const detail::RegularFile in("load_safetensors", path.string(), quoted(path));
    const uint64_t file_size = in.size();
    if (file_size < 8)
        bad_file(path, "truncated: " + std::to_string(file_size) + " bytes, too short for the 8-byte header length");
    uint64_t header_len = 0;
    if (in.read_at(0, &header_len, 8) != 8) bad_file(path, "cannot read the header length");
    if (header_len > file_size - 8)
        bad_file(path, "header length " + std::to_string(header_len) + " exceeds the " + std::to_string(file_size - 8) +
                           " bytes after it (truncated file?)");
    if (header_len > kMaxHeaderBytes)
        bad_file(path, "header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");
    std::string text(static_cast<size_t>(header_len), '\0');
    if (in.read_at(8, text.data(), text.size()) != text.size()) bad_file(path, "cannot read the header");

    const json header = parse_header(path, text);
    if (!header.is_object()) bad_file(path, "header must be a JSON object, got " + std::string(header.type_name()));

    std::vector<Entry> entries;
    // The checks below test each value's type before reading it; the guard turns any exception the
    // JSON library might still raise into the loader's own error, so none escapes.
    try {
    for (const auto& [name, info] : header.items()) {
        if (name == "__metadata__") {
            if (!info.is_object()) bad_file(path, "__metadata__ must be an object of strings");
            for (const auto& [key, value] : info.items()) {
                if (!value.is_string())
                    bad_file(path, "__metadata__ \"" + key + "\" must be a string, got " + describe(value));
                if (metadata) (*metadata)[key] = value.get<std::string>();
            }
            continue;
        }
        entries.push_back(parse_entry(path, name, info));
    }
    } catch (const json::exception& e) {
        bad_file(path, std::string("unexpected header content: ") + e.what());
    }

    // The tensors must tile the data section exactly: sorted by begin, each starts where the
    // previous ended, and the last ends at the end of the file.
    const uint64_t data_size = file_size - 8 - header_len;
    std::vector<const Entry*> order;
    for (const Entry& e : entries) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
        return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t expected = 0;
    for (const Entry* e : order) {
        std::ostringstream range_text;
        range_text << '[' << e->begin << ", " << e->end << ']';
        const std::string range = range_text.str();
        if (e->end > data_size)
            bad_file(path, "tensor \"" + e->name + "\": data_offsets " + range + " run past the " +
                               std::to_string(data_size) + "-byte data section (truncated file?)");
        if (e->begin < expected)
            bad_file(path, "tensor \"" + e->name + "\": data_offsets " + range + " overlap the previous tensor's data");
        if (e->begin > expected)
            bad_file(path, "tensor \"" + e->name + "\": data_offsets " + range + " leave bytes [" +
                               std::to_string(expected) + ", " + std::to_string(e->begin) + ") unused");
        expected = e->end;
    }
    if (expected != data_size)
        bad_file(path, "the tensors cover " + std::to_string(expected) + " bytes of the " + std::to_string(data_size) +
                           "-byte data section");

    std::map<std::string, Tensor> out;
    const uint64_t data_start = 8 + header_len;
    for (const Entry& e : entries) {
        Tensor t = empty(e.shape, {.dtype = e.dtype});
        const size_t nbytes = static_cast<size_t>(e.end - e.begin);
        if (nbytes > 0 && in.read_at(data_start + e.begin, t.raw_data(), nbytes) != nbytes)
            bad_file(path, "cannot read the data of tensor \"" + e.name + "\"");
        out.emplace(e.name, std::move(t));
    }
    return out;
}

void save(const Module& module, const fs::path& path, const Metadata& metadata) {
    save_safetensors(module.state_dict(), path, metadata);
}

LoadStateDictResult load(Module& module, const fs::path& path, bool strict) {
    return module.load_state_dict(load_safetensors(path), strict);
}

}  // namespace lsg::nn

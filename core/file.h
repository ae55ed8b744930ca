// Reading files named by a user: only regular files are accepted, and opening never blocks. A FIFO,
// a socket or a device passed as a data set or checkpoint path would otherwise hang the open (a FIFO
// waits for a writer) or stream without end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lsg::detail {

// A read-only descriptor of a regular file, closed on destruction.
class RegularFile {
public:
    // Opens `path` with O_NONBLOCK (so that opening a FIFO returns at once), checks with fstat on the
    // descriptor itself (no race with a rename between a check and the open) that it is a regular
    // file, then clears O_NONBLOCK. Throws lsg::Error("lsg::<op>: <path>: ...") naming the cause:
    // "cannot open: no such file", "is a directory, not a regular file", "not a regular file (a
    // FIFO)", or the open's errno. Messages show
    // `label` in place of the path when one is given (a quoted path, say).
    RegularFile(const char* op, const std::string& path, const std::string& label = "");
    ~RegularFile();
    RegularFile(const RegularFile&) = delete;
    RegularFile& operator=(const RegularFile&) = delete;

    int fd() const { return fd_; }
    // The size fstat reported at open.
    uint64_t size() const { return size_; }
    // Reads up to n bytes at `offset` (pread, retrying short reads and EINTR); returns the count,
    // fewer only at the end of the file. Throws lsg::Error naming op and path on a read error.
    size_t read_at(uint64_t offset, void* out, size_t n) const;
    // Gives up ownership of the descriptor (the caller closes it).
    int release();

private:
    const char* op_;
    std::string label_;
    int fd_ = -1;
    uint64_t size_ = 0;
};

}  // namespace lsg::detail

#include "lsgrad/core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lsgrad/core/error.h"

namespace lsg::detail {
namespace {

const char* file_kind(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "not a plain file";
}

}  // namespace

RegularFile::RegularFile(const char* op, const std::string& path, const std::string& label)
    : op_(op), label_(label.empty() ? path : label) {
    const std::string& name = label_;
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd_ < 0) {
        const int err = errno;
        if (err == ENOENT) fail(op, name, ": cannot open: no such file");
        if (err == EISDIR) fail(op, name, ": is a directory, not a regular file");
        fail(op, name, ": cannot open: ", std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        const int err = errno;
        ::close(fd_);
        fail(op, name, ": cannot stat: ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd_);
        if (S_ISDIR(st.st_mode)) fail(op, name, ": is a directory, not a regular file");
        fail(op, name, ": not a regular file (", file_kind(st.st_mode), ")");
    }
    // Regular files never block; the flag only mattered for the open itself.
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
    size_ = static_cast<uint64_t>(st.st_size);
}

RegularFile::~RegularFile() {
    if (fd_ >= 0) ::close(fd_);
}

size_t RegularFile::read_at(uint64_t offset, void* out, size_t n) const {
    char* p = static_cast<char*>(out);
    size_t total = 0;
    while (total < n) {
        const ssize_t r = ::pread(fd_, p + total, n - total, static_cast<off_t>(offset + total));
        if (r < 0) {
            if (errno == EINTR) continue;
            fail(op_, label_, ": read error: ", std::strerror(errno));
        }
        if (r == 0) break;
        total += static_cast<size_t>(r);
    }
    return total;
}

int RegularFile::release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
}

}  // namespace lsg::detail

// lsg::Error and the LSG_CHECK family: every failure in lsgrad is an exception that names the
// function, the shapes/dtypes/devices involved and the offending value. Library code never aborts.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lsg {

// The one exception type lsgrad throws for bad input and failed device calls.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {

// Appends one message part; shapes (std::vector<int64_t>) print as "[2, 3]".
inline void append(std::ostringstream& os, const std::vector<int64_t>& v) {
    os << '[';
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
    os << ']';
}
template <class T>
void append(std::ostringstream& os, const T& v) {
    os << v;
}

// Builds "lsg::<func>: <parts...>" and throws lsg::Error. Out of line in spirit: [[noreturn]] and
// cold, so the checks cost one predictable branch on the hot path.
template <class... Parts>
[[noreturn]] [[gnu::cold]] void fail(std::string_view func, const Parts&... parts) {
    std::ostringstream os;
    os << "lsg::" << func << ": ";
    (append(os, parts), ...);
    throw Error(os.str());
}

}  // namespace detail
}  // namespace lsg

// LSG_CHECK(cond, parts...): throws lsg::Error("lsg::<enclosing function>: parts...") when cond is
// false. Parts are streamed; a std::vector<int64_t> prints as a shape.
#define LSG_CHECK(cond, ...)                                      \
    do {                                                          \
        if (!(cond)) [[unlikely]]                                 \
            ::lsg::detail::fail(__func__, __VA_ARGS__);           \
    } while (0)

// LSG_CHECK_OP(op, cond, parts...): the same, naming `op` (a string) instead of the enclosing
// function; for shared validation helpers that check on behalf of a public op.
#define LSG_CHECK_OP(op, cond, ...)                               \
    do {                                                          \
        if (!(cond)) [[unlikely]]                                 \
            ::lsg::detail::fail((op), __VA_ARGS__);               \
    } while (0)

// LSG_FAIL(parts...): unconditional throw naming the enclosing function.
#define LSG_FAIL(...) ::lsg::detail::fail(__func__, __VA_ARGS__)

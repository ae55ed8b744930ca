#include "lsgrad/core/dtype.h"

#include <ostream>

#include "lsgrad/core/error.h"

namespace lsg {

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::i64: return 8;
    }
    return 0;
}

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::i64: return "int64";
    }
    return "?";
}

std::ostream& operator<<(std::ostream& os, DType dtype) { return os << dtype_name(dtype); }

std::ostream& operator<<(std::ostream& os, Device device) {
    if (device.is_cpu()) return os << "cpu";
    return os << "cuda:" << device.index;
}

void detail::fail_dtype_not_among(DType dtype, std::initializer_list<DType> accepted) {
    std::ostringstream names;
    for (DType d : accepted) names << (names.tellp() > 0 ? ", " : "") << dtype_name(d);
    fail("visit_dtype", "this kernel takes ", names.str(), ", got ", dtype_name(dtype));
}

}  // namespace lsg

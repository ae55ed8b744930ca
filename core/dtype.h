// Element types and devices: the two tags every tensor carries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>

namespace lsg {

// The element types lsgrad computes with: f32 for training, f64 for gradient checks and exact
// references, i64 for class indices.
enum class DType : uint8_t { f32, f64, i64 };

// Bytes per element of `dtype`.
size_t dtype_size(DType dtype);
// "float32", "float64" or "int64": PyTorch's names, so messages read the same.
const char* dtype_name(DType dtype);
std::ostream& operator<<(std::ostream& os, DType dtype);
inline bool is_floating(DType dtype) { return dtype != DType::i64; }

// The DType of a C++ element type: dtype_of<float>() == DType::f32.
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<int64_t>() { return DType::i64; }

// Calls fn.template operator()<T>() with T the C++ type of `dtype`; the one place that turns the
// runtime tag into a compile-time type for the kernels.
template <class Fn>
decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
    switch (dtype) {
        case DType::f64: return fn.template operator()<double>();
        case DType::i64: return fn.template operator()<int64_t>();
        case DType::f32: break;
    }
    return fn.template operator()<float>();
}

enum class DeviceType : uint8_t { cpu, cuda };

// Where a tensor's storage lives. Device::cpu() is the default; Device::cuda(i) the i-th GPU.
struct Device {
    DeviceType type = DeviceType::cpu;
    int index = 0;

    static constexpr Device cpu() { return {DeviceType::cpu, 0}; }
    static constexpr Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
    constexpr bool is_cpu() const { return type == DeviceType::cpu; }
    constexpr bool is_cuda() const { return type == DeviceType::cuda; }
    friend constexpr bool operator==(Device, Device) = default;
};
// "cpu" or "cuda:0".
std::ostream& operator<<(std::ostream& os, Device device);

}  // namespace lsg

// Element types and devices: the two tags every tensor carries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
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

namespace detail {
[[noreturn]] void fail_dtype_not_among(DType dtype, std::initializer_list<DType> accepted);

// The last candidate is taken without a test: visit_dtype has checked that one of them matches.
template <class First, class... Rest, class Fn>
decltype(auto) visit_among(DType dtype, Fn&& fn) {
    if constexpr (sizeof...(Rest) == 0) {
        return fn.template operator()<First>();
    } else {
        if (dtype == dtype_of<First>()) return fn.template operator()<First>();
        return visit_among<Rest...>(dtype, fn);
    }
}
}  // namespace detail

// Calls fn.template operator()<T>() with T the C++ type of `dtype`: the one place that turns the
// runtime tag into a compile-time type for every kernel (CPU and CUDA). Ts lists the types the
// kernel is instantiated for, all three by default; a floating-only kernel says
// visit_dtype<float, double>(dtype, fn), and a dtype outside the list throws naming it (ops check
// dtypes first, so that is a library bug, never silently the wrong type).
template <class... Ts, class Fn>
decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
    if constexpr (sizeof...(Ts) == 0) {
        return visit_dtype<float, double, int64_t>(dtype, fn);
    } else {
        if (((dtype != dtype_of<Ts>()) && ...)) detail::fail_dtype_not_among(dtype, {dtype_of<Ts>()...});
        return detail::visit_among<Ts...>(dtype, fn);
    }
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

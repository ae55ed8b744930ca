#include "lsgrad/core/backend.h"

#include <array>
#include <mutex>

#include "lsgrad/core/error.h"

namespace lsg {
namespace {

constexpr size_t kDeviceTypes = 2;

// The CPU's runtime: one device, the caching allocator of core/allocator.cpp, and one stream (a
// kernel has finished when it returns, so there is never anything to wait for).
class CpuRuntime final : public DeviceRuntime {
public:
    int device_count() override { return 1; }
    const char* unavailable_reason() override { return ""; }
    Allocator& allocator(int) override { return cpu_allocator(); }
    void* create_stream(int) override { return nullptr; }
    void synchronize(const KernelContext&) override {}
};

std::array<Backend, kDeviceTypes>& slots() {
    static std::array<Backend, kDeviceTypes> s;
    return s;
}

// Registers the CPU runtime and then every backend this build links, once.
void ensure_registered() {
    static std::once_flag once;
    std::call_once(once, [] {
        // Never destroyed: tensors with static storage duration free through the runtime at exit.
        detail::backend_slot(DeviceType::cpu).runtime = new CpuRuntime();
        detail::register_builtin_backends();
    });
}

// Why a device type has no backend: the one "built without" message, also cuda_unavailable_reason()'s.
const char* built_without(DeviceType type) {
    if (type == DeviceType::cuda)
        return "lsgrad was built without CUDA (configure with -DLSGRAD_CUDA=ON where nvcc is installed)";
    return "lsgrad was built without this device type";
}

// Streams the calling thread made current with a StreamGuard, per device type (one device index
// at a time per type is enough for a guard: it names its device).
thread_local std::array<Stream, kDeviceTypes> current{};
thread_local std::array<bool, kDeviceTypes> guarded{};

// The registered runtime of `type`, or null.
DeviceRuntime* runtime_of(DeviceType type) {
    ensure_registered();
    return detail::backend_slot(type).runtime;
}

}  // namespace

namespace detail {
Backend& backend_slot(DeviceType type) { return slots()[static_cast<size_t>(type)]; }
}  // namespace detail

const Backend& backend(Device device) {
    ensure_registered();
    const Backend& b = detail::backend_slot(device.type);
    if (b.runtime == nullptr) detail::fail("backend", "cannot use ", device, ": ", built_without(device.type));
    return b;
}

KernelContext kernel_context(Device device) { return {device, current_stream(device).handle}; }

// ---- streams ----------------------------------------------------------------------------------

Stream new_stream(Device device) { return {device, backend(device).runtime->create_stream(device.index)}; }

Stream current_stream(Device device) {
    const size_t t = static_cast<size_t>(device.type);
    if (guarded[t] && current[t].device == device) return current[t];
    return {device, nullptr};
}

StreamGuard::StreamGuard(Stream stream)
    : previous_(current[static_cast<size_t>(stream.device.type)]),
      was_guarded_(guarded[static_cast<size_t>(stream.device.type)]),
      type_(stream.device.type) {
    (void)backend(stream.device);  // an unregistered device fails here, not at the first kernel
    current[static_cast<size_t>(type_)] = stream;
    guarded[static_cast<size_t>(type_)] = true;
}

StreamGuard::~StreamGuard() {
    current[static_cast<size_t>(type_)] = previous_;
    guarded[static_cast<size_t>(type_)] = was_guarded_;
}

void synchronize(Device device) { backend(device).runtime->synchronize(kernel_context(device)); }

// ---- memory and availability (core/allocator.h) ------------------------------------------------

Allocator& allocator(Device device) { return backend(device).runtime->allocator(device.index); }

Allocator& cuda_allocator(int index) { return allocator(Device::cuda(index)); }

bool cuda_is_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
    DeviceRuntime* r = runtime_of(DeviceType::cuda);
    return r ? r->device_count() : 0;
}

const char* cuda_unavailable_reason() {
    DeviceRuntime* r = runtime_of(DeviceType::cuda);
    return r ? r->unavailable_reason() : built_without(DeviceType::cuda);
}

}  // namespace lsg

// Memory for tensors: one allocator per device, each caching freed blocks so that a training step
// reuses last step's buffers instead of page-faulting fresh ones (measured: fresh buffers alone
// make a memory-bound loss kernel about 3x slower).
#pragma once

#include <cstddef>

#include "lsgrad/core/dtype.h"

namespace lsg {

// A device's memory: allocate/deallocate raw bytes and copy between it and the host.
class Allocator {
public:
    virtual ~Allocator() = default;
    // Returns at least `nbytes` bytes, 64-byte aligned (256 on CUDA). nbytes == 0 gives a valid
    // pointer that must still be deallocated.
    virtual void* allocate(size_t nbytes) = 0;
    // Gives back a block from allocate(nbytes) with the same nbytes; it is cached for reuse.
    virtual void deallocate(void* ptr, size_t nbytes) = 0;
    // Releases every cached block to the system.
    virtual void empty_cache() = 0;
    // Bytes currently held in the cache (not in use by any tensor).
    virtual size_t cached_bytes() const = 0;
    // Bytes in use by tensors now (counted in the cache's size classes), and the most in use at
    // once since the allocator was made or reset_peak() last ran: the measure of a computation's
    // working memory that tests bound.
    virtual size_t allocated_bytes() const = 0;
    virtual size_t peak_allocated_bytes() const = 0;
    // Starts a new peak from the bytes in use now.
    virtual void reset_peak() = 0;
    // Copies nbytes between this device and the host: to_device copies host `src` to device
    // `dst`, otherwise device `src` to host `dst`. Blocking.
    virtual void copy_host(void* dst, const void* src, size_t nbytes, bool to_device) = 0;
    // Copies nbytes within this device.
    virtual void copy_same(void* dst, const void* src, size_t nbytes) = 0;
};

// The allocator of `device`, from its backend (core/backend.cpp); a device whose backend this build
// lacks throws "built without CUDA".
Allocator& allocator(Device device);
Allocator& cpu_allocator();
Allocator& cuda_allocator(int index);
// Whether a CUDA device answers; false (never a throw) in a CPU-only build or without a GPU.
bool cuda_is_available();
// The number of CUDA devices that answer (0 in a CPU-only build).
int cuda_device_count();
// Why CUDA is unavailable, for test skips and messages ("built without CUDA", "no CUDA device").
const char* cuda_unavailable_reason();

}  // namespace lsg

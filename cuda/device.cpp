// The CUDA runtime side of the backend: whether a device answers, each device's stream, cuBLAS
// handle and caching allocator, and the error reports of failed calls.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "device.h"
#include "lsgrad/core/allocator.h"
#include "lsgrad/core/block_cache.h"
#include "lsgrad/core/error.h"

namespace lsg {
namespace cuda {

void fail_cuda(cudaError_t status, const char* expr, const char* file, int line) {
    detail::fail("cuda", file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(status), ": ",
                 cudaGetErrorString(status));
}

void fail_cublas(cublasStatus_t status, const char* expr, const char* file, int line) {
    detail::fail("cuda", file, ":", line, ": ", expr, " failed: ", cublasGetStatusName(status), ": ",
                 cublasGetStatusString(status));
}

namespace {

// ---- availability -------------------------------------------------------------------------------

struct Availability {
    int count = 0;
    std::string reason;
};

// Asked once: cudaGetDeviceCount fails cleanly (an error code, no abort) without a driver or GPU.
const Availability& availability() {
    static const Availability a = [] {
        Availability r;
        const cudaError_t status = cudaGetDeviceCount(&r.count);
        if (status != cudaSuccess) {
            r.count = 0;
            r.reason = std::string("no CUDA device: cudaGetDeviceCount failed: ") + cudaGetErrorString(status);
            cudaGetLastError();  // taken, so a later launch check does not report it
        } else if (r.count == 0) {
            r.reason = "no CUDA device: cudaGetDeviceCount found 0 devices";
        }
        return r;
    }();
    return a;
}

// ---- caching allocator ---------------------------------------------------------------------------

// 512-byte steps up to 1 MiB, then whole MiB, so buffers of nearly the same size share a class and a
// training step's second iteration allocates nothing. No cap on the cached bytes: an allocation
// that finds the device full empties the cache and tries again.
constexpr detail::BlockCache::Config kCudaClasses{.small_step = 512,
                                                  .small_limit = size_t{1} << 20,
                                                  .large_step = size_t{1} << 20,
                                                  .max_cached = SIZE_MAX};

// cudaMalloc, with null for out of memory (the error taken, so later checks do not report it).
void* cuda_malloc_or_null(size_t nbytes) {
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, nbytes);
    if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return nullptr;
    }
    LSG_CUDA_CHECK(status);
    return p;
}

// cudaFree waits for the device, so no queued kernel still uses a released block.
void cuda_free(void* p) { LSG_CUDA_CHECK(cudaFree(p)); }

class CudaCachingAllocator final : public Allocator {
public:
    explicit CudaCachingAllocator(int device) : device_(device) {}

    void* allocate(size_t nbytes) override {
        stream(Device::cuda(device_));  // makes the device current for cudaMalloc and later kernels
        size_t released = 0;
        void* p = cache_.allocate(nbytes, &released);
        if (p == nullptr)
            detail::fail("cuda_allocator", "out of memory allocating ", nbytes, " bytes on cuda:", device_, " (",
                         released, " cached bytes were released first)");
        return p;
    }

    // The block goes straight back to the cache: work still queued on the stream that uses it runs
    // before any work issued by its next owner.
    void deallocate(void* ptr, size_t nbytes) override { cache_.deallocate(ptr, nbytes); }
    void empty_cache() override { cache_.empty_cache(); }
    size_t cached_bytes() const override { return cache_.cached_bytes(); }

    // Through the device's stream, then synchronised, so the copy sees every kernel issued before it
    // and the host sees the copy. cudaMemcpyDefault also serves a peer device's pointer.
    void copy_host(void* dst, const void* src, size_t nbytes, bool) override {
        if (nbytes == 0) return;
        cudaStream_t s = stream(Device::cuda(device_));
        LSG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, s));
        LSG_CUDA_CHECK(cudaStreamSynchronize(s));
    }

    void copy_same(void* dst, const void* src, size_t nbytes) override {
        if (nbytes == 0) return;
        LSG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream(Device::cuda(device_))));
    }

private:
    int device_;
    detail::BlockCache cache_{kCudaClasses, cuda_malloc_or_null, cuda_free};
};

// ---- per-device state --------------------------------------------------------------------------

struct DeviceState {
    std::once_flag once;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    std::once_flag cublas_once;
    std::unique_ptr<CudaCachingAllocator> allocator;
};

// Never destroyed: tensors with static storage duration may give memory back at exit, after the
// runtime would have torn down a destroyed state's stream.
DeviceState& state(int device) {
    static auto* states = [] {
        auto* v = new std::vector<std::unique_ptr<DeviceState>>();
        for (int i = 0; i < availability().count; ++i) v->push_back(std::make_unique<DeviceState>());
        return v;
    }();
    LSG_CHECK_OP("cuda", cuda_is_available(), "cannot use cuda:", device, ": ", cuda_unavailable_reason());
    LSG_CHECK_OP("cuda", device >= 0 && device < static_cast<int>(states->size()), "cuda:", device,
                 " does not exist (", states->size(), " CUDA device(s) answer)");
    DeviceState& s = *(*states)[static_cast<size_t>(device)];
    std::call_once(s.once, [&] {
        LSG_CUDA_CHECK(cudaSetDevice(device));
        // A blocking stream: work issued on the legacy default stream (a user's kernels, timing
        // events) is ordered with lsgrad's, as if lsgrad used the default stream itself.
        LSG_CUDA_CHECK(cudaStreamCreate(&s.stream));
        s.allocator = std::make_unique<CudaCachingAllocator>(device);
    });
    return s;
}

}  // namespace

cudaStream_t stream(Device device) {
    DeviceState& s = state(device.index);
    int current = -1;
    LSG_CUDA_CHECK(cudaGetDevice(&current));
    if (current != device.index) LSG_CUDA_CHECK(cudaSetDevice(device.index));
    return s.stream;
}

cudaStream_t current_stream() {
    int current = 0;
    LSG_CUDA_CHECK(cudaGetDevice(&current));
    return stream(Device::cuda(current));
}

cublasHandle_t cublas(Device device) {
    cudaStream_t st = stream(device);
    DeviceState& s = state(device.index);
    std::call_once(s.cublas_once, [&] {
        LSG_CUBLAS_CHECK(cublasCreate(&s.cublas));
        LSG_CUBLAS_CHECK(cublasSetStream(s.cublas, st));
        // Plain fp32/fp64 arithmetic (no TF32), so results match the CPU within float rounding.
        LSG_CUBLAS_CHECK(cublasSetMathMode(s.cublas, CUBLAS_DEFAULT_MATH));
    });
    return s.cublas;
}

Scratch::Scratch(size_t nbytes) : nbytes_(nbytes) {
    LSG_CUDA_CHECK(cudaGetDevice(&device_));
    ptr_ = cuda_allocator(device_).allocate(nbytes);
}

Scratch::~Scratch() { cuda_allocator(device_).deallocate(ptr_, nbytes_); }

}  // namespace cuda

bool cuda_is_available() { return cuda::availability().count > 0; }

int cuda_device_count() { return cuda::availability().count; }

const char* cuda_unavailable_reason() {
    const auto& a = cuda::availability();
    return a.count > 0 ? "" : a.reason.c_str();
}

Allocator& cuda_allocator(int index) { return *cuda::state(index).allocator; }

TensorKernels& cuda_tensor_kernels() {
    static CudaTensorKernels kernels;
    return kernels;
}

}  // namespace lsg

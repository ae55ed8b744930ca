// The CUDA backend: its runtime (whether a device answers, each device's stream, cuBLAS handle,
// caching allocator and deferred error record), the error reports of failed calls, and its
// registration in the backend registry (core/backend.h).
#include "device.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "lsgrad/core/allocator.h"
#include "lsgrad/core/block_cache.h"
#include "lsgrad/core/error.h"
#include "lsgrad/ops/loss_kernels.h"
#include "lsgrad/optim/optim_kernels.h"

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
        stream(ctx());  // makes the device current for cudaMalloc and later kernels
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
    size_t allocated_bytes() const override { return cache_.in_use_bytes(); }
    size_t peak_allocated_bytes() const override { return cache_.peak_in_use_bytes(); }
    void reset_peak() override { cache_.reset_peak(); }

    // Through the thread's current stream of the device, then synchronised, so the copy sees every
    // kernel issued before it and the host sees the copy; a synchronising call, so it raises what
    // those kernels recorded. cudaMemcpyDefault also serves a peer device's pointer.
    void copy_host(void* dst, const void* src, size_t nbytes, bool) override {
        if (nbytes == 0) return;
        cudaStream_t s = stream(ctx());
        LSG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, s));
        LSG_CUDA_CHECK(cudaStreamSynchronize(s));
        raise_recorded_error(device_);
    }

    void copy_same(void* dst, const void* src, size_t nbytes) override {
        if (nbytes == 0) return;
        LSG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream(ctx())));
    }

private:
    KernelContext ctx() const { return kernel_context(Device::cuda(device_)); }

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
    TargetError* error_host = nullptr;    // the deferred error record, mapped host memory
    TargetError* error_device = nullptr;  // the same record as the device addresses it
    int* error_claim = nullptr;           // device memory: 1 once a kernel has claimed the record
};

// Never destroyed: tensors with static storage duration may give memory back at exit, after the
// runtime would have torn down a destroyed state's stream.
DeviceState& state(int device) {
    static auto* states = [] {
        auto* v = new std::vector<std::unique_ptr<DeviceState>>();
        for (int i = 0; i < availability().count; ++i) v->push_back(std::make_unique<DeviceState>());
        return v;
    }();
    LSG_CHECK_OP("cuda", availability().count > 0, "cannot use cuda:", device, ": ", availability().reason);
    LSG_CHECK_OP("cuda", device >= 0 && device < static_cast<int>(states->size()), "cuda:", device,
                 " does not exist (", states->size(), " CUDA device(s) answer)");
    DeviceState& s = *(*states)[static_cast<size_t>(device)];
    std::call_once(s.once, [&] {
        LSG_CUDA_CHECK(cudaSetDevice(device));
        // A blocking stream: work issued on the legacy default stream (a user's kernels, timing
        // events) is ordered with lsgrad's, as if lsgrad used the default stream itself.
        LSG_CUDA_CHECK(cudaStreamCreate(&s.stream));
        s.allocator = std::make_unique<CudaCachingAllocator>(device);
        void* rec = nullptr;
        LSG_CUDA_CHECK(cudaHostAlloc(&rec, sizeof(TargetError), cudaHostAllocMapped));
        s.error_host = static_cast<TargetError*>(rec);
        *s.error_host = TargetError{};
        LSG_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&s.error_device), rec, 0));
        LSG_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.error_claim), sizeof(int)));
        LSG_CUDA_CHECK(cudaMemset(s.error_claim, 0, sizeof(int)));
    });
    return s;
}

}  // namespace

cudaStream_t stream(const KernelContext& ctx) {
    DeviceState& s = state(ctx.device.index);
    int current = -1;
    LSG_CUDA_CHECK(cudaGetDevice(&current));
    if (current != ctx.device.index) LSG_CUDA_CHECK(cudaSetDevice(ctx.device.index));
    return ctx.stream ? static_cast<cudaStream_t>(ctx.stream) : s.stream;
}

cublasHandle_t cublas(const KernelContext& ctx) {
    cudaStream_t st = stream(ctx);
    DeviceState& s = state(ctx.device.index);
    std::call_once(s.cublas_once, [&] {
        LSG_CUBLAS_CHECK(cublasCreate(&s.cublas));
        // Plain fp32/fp64 arithmetic (no TF32), so results match the CPU within float rounding.
        LSG_CUBLAS_CHECK(cublasSetMathMode(s.cublas, CUBLAS_DEFAULT_MATH));
    });
    // Rebound on every call: the context's stream may differ from the last caller's.
    LSG_CUBLAS_CHECK(cublasSetStream(s.cublas, st));
    return s.cublas;
}

TargetErrorSlot target_error_slot(const KernelContext& ctx) {
    DeviceState& s = state(ctx.device.index);
    return {s.error_claim, s.error_device};
}

void raise_recorded_error(int index) {
    DeviceState& s = state(index);
    volatile TargetError* rec = s.error_host;
    if (rec->flag == 0) return;
    const TargetError e{1, rec->op, rec->row, rec->value, rec->classes, rec->ignore_index};
    rec->flag = 0;
    // Releases the claim for the next error (synchronous: the error path only).
    LSG_CUDA_CHECK(cudaMemset(s.error_claim, 0, sizeof(int)));
    fail_target_out_of_range(e.op, e.row, e.value, e.classes, e.ignore_index);
}

Scratch::Scratch(const KernelContext& ctx, size_t nbytes) : nbytes_(nbytes), device_(ctx.device.index) {
    ptr_ = allocator(ctx.device).allocate(nbytes);
}

Scratch::~Scratch() { allocator(Device::cuda(device_)).deallocate(ptr_, nbytes_); }

namespace {

// The CUDA runtime of the registry: devices answer when the driver finds them.
class CudaRuntime final : public DeviceRuntime {
public:
    int device_count() override { return availability().count; }
    const char* unavailable_reason() override {
        const auto& a = availability();
        return a.count > 0 ? "" : a.reason.c_str();
    }
    Allocator& allocator(int index) override { return *state(index).allocator; }
    // A blocking stream, as the default one: ordered with the legacy default stream.
    void* create_stream(int index) override {
        stream(KernelContext{Device::cuda(index), nullptr});  // makes the device current
        cudaStream_t s = nullptr;
        LSG_CUDA_CHECK(cudaStreamCreate(&s));
        return s;
    }
    void synchronize(const KernelContext& ctx) override {
        LSG_CUDA_CHECK(cudaStreamSynchronize(stream(ctx)));
        raise_recorded_error(ctx.device.index);
    }
};

}  // namespace

}  // namespace cuda

namespace detail {
// Called from the generated lsgrad/backends.cpp: the whole CUDA backend, runtime and tables.
void register_cuda_backend() {
    static CudaTensorKernels tensor;
    Backend& b = backend_slot(DeviceType::cuda);
    // Never destroyed: tensors with static storage duration free through the runtime at exit.
    b.runtime = new cuda::CudaRuntime();
    b.tensor = &tensor;
    b.loss = &cuda::loss_table();
    b.linear_cross_entropy = &cuda::linear_cross_entropy_table();
    b.optimizer = &cuda::optimizer_table();
}
}  // namespace detail

}  // namespace lsg

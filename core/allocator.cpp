#include "lsgrad/core/allocator.h"

#include <cstdlib>
#include <cstring>

#include "lsgrad/core/block_cache.h"
#include "lsgrad/core/error.h"

namespace lsg {
namespace {

constexpr size_t kAlignment = 64;

// 64-byte steps up to 4 KiB, then 4 KiB pages, so buffers of nearly the same size share a class
// without wasting more than a page. Only kMaxCachedBytes in total stay cached, so an occasional huge
// temporary (a 16384 x 50257 logits gradient is 3.3 GB) does not pin memory forever.
constexpr size_t kMaxCachedBytes = size_t{4} << 30;
constexpr detail::BlockCache::Config kCpuClasses{
    .small_step = kAlignment, .small_limit = 4096, .large_step = 4096, .max_cached = kMaxCachedBytes};

class CpuCachingAllocator final : public Allocator {
public:
    void* allocate(size_t nbytes) override {
        void* p = cache_.allocate(nbytes);
        LSG_CHECK(p != nullptr, "out of memory allocating ", nbytes, " bytes on the CPU");
        return p;
    }
    void deallocate(void* ptr, size_t nbytes) override { cache_.deallocate(ptr, nbytes); }
    void empty_cache() override { cache_.empty_cache(); }
    size_t cached_bytes() const override { return cache_.cached_bytes(); }
    size_t allocated_bytes() const override { return cache_.in_use_bytes(); }
    size_t peak_allocated_bytes() const override { return cache_.peak_in_use_bytes(); }
    void reset_peak() override { cache_.reset_peak(); }

    void copy_host(void* dst, const void* src, size_t nbytes, bool) override {
        if (nbytes) std::memcpy(dst, src, nbytes);
    }
    void copy_same(void* dst, const void* src, size_t nbytes) override {
        if (nbytes) std::memmove(dst, src, nbytes);
    }

private:
    // A class is a multiple of kAlignment, as aligned_alloc requires.
    detail::BlockCache cache_{kCpuClasses, [](size_t cls) { return std::aligned_alloc(kAlignment, cls); },
                              [](void* p) { std::free(p); }};
};

}  // namespace

Allocator& cpu_allocator() {
    // Never destroyed: tensors with static storage duration may free into it at exit.
    static auto* instance = new CpuCachingAllocator();
    return *instance;
}

}  // namespace lsg

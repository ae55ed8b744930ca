#include "lsgrad/core/allocator.h"

#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "lsgrad/core/error.h"

namespace lsg {
namespace {

constexpr size_t kAlignment = 64;
// Blocks above this size are cached only up to kMaxCachedBytes in total, so an occasional huge
// temporary (a 16384 x 50257 logits gradient is 3.3 GB) does not pin memory forever.
constexpr size_t kMaxCachedBytes = size_t{4} << 30;

// Rounds a request to its size class: 64-byte steps up to 4 KiB, then 4 KiB pages, so buffers of
// nearly the same size share a class without wasting more than a page.
size_t size_class(size_t nbytes) {
    if (nbytes <= 4096) return (nbytes + kAlignment - 1) / kAlignment * kAlignment + (nbytes == 0 ? kAlignment : 0);
    return (nbytes + 4095) / 4096 * 4096;
}

class CpuCachingAllocator final : public Allocator {
public:
    ~CpuCachingAllocator() override { empty_cache(); }

    void* allocate(size_t nbytes) override {
        const size_t cls = size_class(nbytes);
        {
            std::lock_guard lock(mutex_);
            auto it = free_.find(cls);
            if (it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                cached_ -= cls;
                return p;
            }
        }
        void* p = std::aligned_alloc(kAlignment, cls);
        if (p == nullptr) {
            empty_cache();
            p = std::aligned_alloc(kAlignment, cls);
        }
        LSG_CHECK(p != nullptr, "out of memory allocating ", nbytes, " bytes on the CPU");
        return p;
    }

    void deallocate(void* ptr, size_t nbytes) override {
        if (ptr == nullptr) return;
        const size_t cls = size_class(nbytes);
        if (cls > kMaxCachedBytes) {
            std::free(ptr);
            return;
        }
        std::lock_guard lock(mutex_);
        // The block just freed is the one most likely needed next (the same step runs again), so
        // older cached blocks make room for it rather than the other way round.
        for (auto it = free_.begin(); cached_ + cls > kMaxCachedBytes && it != free_.end();) {
            while (!it->second.empty() && cached_ + cls > kMaxCachedBytes) {
                std::free(it->second.back());
                it->second.pop_back();
                cached_ -= it->first;
            }
            it = it->second.empty() ? free_.erase(it) : std::next(it);
        }
        free_[cls].push_back(ptr);
        cached_ += cls;
    }

    void empty_cache() override {
        std::lock_guard lock(mutex_);
        for (auto& [cls, blocks] : free_)
            for (void* p : blocks) std::free(p);
        free_.clear();
        cached_ = 0;
    }

    size_t cached_bytes() const override {
        std::lock_guard lock(mutex_);
        return cached_;
    }

    void copy_host(void* dst, const void* src, size_t nbytes, bool) override {
        if (nbytes) std::memcpy(dst, src, nbytes);
    }
    void copy_same(void* dst, const void* src, size_t nbytes) override {
        if (nbytes) std::memmove(dst, src, nbytes);
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_;
    size_t cached_ = 0;
};

}  // namespace

Allocator& cpu_allocator() {
    // Never destroyed: tensors with static storage duration may free into it at exit.
    static auto* instance = new CpuCachingAllocator();
    return *instance;
}

Allocator& allocator(Device device) {
    if (device.is_cpu()) return cpu_allocator();
    return cuda_allocator(device.index);
}

}  // namespace lsg

#include "lsgrad/core/block_cache.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace lsg::detail {

BlockCache::BlockCache(Config config, RawAlloc raw_alloc, RawFree raw_free)
    : config_(config), raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}

BlockCache::~BlockCache() { empty_cache(); }

size_t BlockCache::size_class(size_t nbytes) const {
    if (nbytes <= config_.small_limit) {
        const size_t step = config_.small_step;
        return std::max(step, (nbytes + step - 1) / step * step);
    }
    const size_t step = config_.large_step;
    return (nbytes + step - 1) / step * step;
}

void* BlockCache::allocate(size_t nbytes, size_t* released) {
    const size_t cls = size_class(nbytes);
    {
        std::lock_guard lock(mutex_);
        auto it = free_.find(cls);
        if (it != free_.end() && !it->second.empty()) {
            void* p = it->second.back();
            it->second.pop_back();
            cached_ -= cls;
            count_in_use(cls);
            return p;
        }
    }
    void* p = raw_alloc_(cls);
    if (p == nullptr) {
        const size_t freed = empty_cache();
        if (released) *released = freed;
        p = raw_alloc_(cls);
    }
    if (p != nullptr) {
        std::lock_guard lock(mutex_);
        count_in_use(cls);
    }
    return p;
}

void BlockCache::count_in_use(size_t cls) {
    in_use_ += cls;
    if (in_use_ > peak_) peak_ = in_use_;
}

void BlockCache::deallocate(void* ptr, size_t nbytes) {
    if (ptr == nullptr) return;
    const size_t cls = size_class(nbytes);
    {
        std::lock_guard lock(mutex_);
        in_use_ -= cls;
    }
    if (cls > config_.max_cached) {
        raw_free_(ptr);
        return;
    }
    // Released after the lock: the system's free may be slow (cudaFree waits for the device).
    std::vector<void*> evicted;
    {
        std::lock_guard lock(mutex_);
        // cached_ ≤ max_cached always, so the room left never underflows (nor overflows for no cap).
        auto full = [&] { return cls > config_.max_cached - cached_; };
        for (auto it = free_.begin(); full() && it != free_.end();) {
            while (!it->second.empty() && full()) {
                evicted.push_back(it->second.back());
                it->second.pop_back();
                cached_ -= it->first;
            }
            it = it->second.empty() ? free_.erase(it) : std::next(it);
        }
        free_[cls].push_back(ptr);
        cached_ += cls;
    }
    for (void* p : evicted) raw_free_(p);
}

size_t BlockCache::empty_cache() {
    std::unordered_map<size_t, std::vector<void*>> blocks;
    size_t bytes = 0;
    {
        std::lock_guard lock(mutex_);
        blocks.swap(free_);
        bytes = std::exchange(cached_, 0);
    }
    for (auto& [cls, list] : blocks)
        for (void* p : list) raw_free_(p);
    return bytes;
}

size_t BlockCache::cached_bytes() const {
    std::lock_guard lock(mutex_);
    return cached_;
}

size_t BlockCache::in_use_bytes() const {
    std::lock_guard lock(mutex_);
    return in_use_;
}

size_t BlockCache::peak_in_use_bytes() const {
    std::lock_guard lock(mutex_);
    return peak_;
}

void BlockCache::reset_peak() {
    std::lock_guard lock(mutex_);
    peak_ = in_use_;
}

}  // namespace lsg::detail

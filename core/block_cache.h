// The free-list cache behind both caching allocators (core/allocator.cpp for the CPU,
// cuda/device.cpp for CUDA): freed blocks are kept by size class and handed out again for a request
// of the same class, so a training step's second iteration allocates nothing from the system.
// The backend supplies its raw allocate / free functions and its size-class granularity.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace lsg::detail {

class BlockCache {
public:
    struct Config {
        // Requests up to `small_limit` bytes round up to a multiple of `small_step` (at least one
        // step, so a 0-byte request gets a real block); larger ones to a multiple of `large_step`.
        size_t small_step;
        size_t small_limit;
        size_t large_step;
        // The most bytes the cache holds. A freed block of a larger class goes straight back to the
        // system; otherwise older cached blocks are released to make room for it.
        size_t max_cached;
    };
    // Returns a block of exactly `nbytes` (a size class), aligned as the backend promises, or null
    // when the system is out of memory; may throw for other failures.
    using RawAlloc = std::function<void*(size_t nbytes)>;
    // Gives a block from RawAlloc back to the system.
    using RawFree = std::function<void(void* ptr)>;

    BlockCache(Config config, RawAlloc raw_alloc, RawFree raw_free);
    // Releases every cached block.
    ~BlockCache();
    BlockCache(const BlockCache&) = delete;
    BlockCache& operator=(const BlockCache&) = delete;

    // The class of a request: the block size actually allocated for it.
    size_t size_class(size_t nbytes) const;
    // A cached block of nbytes' class, else a fresh one; when the system is out of memory, the
    // cache is emptied and the allocation tried once more. Null if that fails too, with the bytes
    // the retry released in *released (when given).
    void* allocate(size_t nbytes, size_t* released = nullptr);
    // Caches a block from allocate(nbytes) (the same nbytes). The block just freed is the one most
    // likely needed next (the same step runs again), so when the cache would exceed max_cached the
    // older cached blocks make room for it rather than the other way round.
    void deallocate(void* ptr, size_t nbytes);
    // Releases every cached block to the system; returns the bytes released.
    size_t empty_cache();
    // Bytes held in the cache (not in use).
    size_t cached_bytes() const;
    // Bytes handed out and not yet given back (size classes), and the most there were at once since
    // the cache was made or reset_peak() last ran: what a computation held, cached blocks aside.
    size_t in_use_bytes() const;
    size_t peak_in_use_bytes() const;
    // Starts a new peak from the bytes in use now.
    void reset_peak();

private:
    // Adds a block of class cls to the bytes in use (mutex_ held).
    void count_in_use(size_t cls);

    const Config config_;
    const RawAlloc raw_alloc_;
    const RawFree raw_free_;
    mutable std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_;
    size_t cached_ = 0;
    size_t in_use_ = 0;
    size_t peak_ = 0;
};

}  // namespace lsg::detail

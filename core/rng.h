// Seeded random numbers. A Generator is a seed plus a counter: each draw of n numbers uses
// counters [offset, offset + n) of Philox and advances the offset, so a run is reproducible from
// its seed on any device and thread count.
#pragma once

#include <cstdint>

#include "lsgrad/core/tensor.h"

namespace lsg {

class Generator {
public:
    explicit Generator(uint64_t seed = 0) : seed_(seed) {}
    uint64_t seed() const { return seed_; }
    // Restarts the stream from `seed`.
    void manual_seed(uint64_t seed) {
        seed_ = seed;
        offset_ = 0;
    }
    // Counters drawn so far; with seed(), the generator's whole state (for checkpoints).
    uint64_t offset() const { return offset_; }
    // Restores a state saved as seed() and offset().
    void set_state(uint64_t seed, uint64_t offset) {
        seed_ = seed;
        offset_ = offset;
    }
    // Reserves n counters and returns the first.
    uint64_t advance(uint64_t n) {
        const uint64_t first = offset_;
        offset_ += n;
        return first;
    }
    // A uniform integer in [0, n), for shuffles and sampling on the host.
    uint64_t next_below(uint64_t n);
    // A uniform double in [0, 1) on the host.
    double next_double();

private:
    uint64_t seed_;
    uint64_t offset_ = 0;
};

// The process-wide generator used when none is passed; torch.manual_seed's counterpart.
Generator& default_generator();
void manual_seed(uint64_t seed);

// Uniform [0, 1) samples of `shape`.
Tensor rand(const Shape& shape, TensorOptions options = {}, Generator& gen = default_generator());
// Standard normal samples of `shape`.
Tensor randn(const Shape& shape, TensorOptions options = {}, Generator& gen = default_generator());
// A random permutation of 0..n-1 (i64), by Fisher-Yates on the host.
Tensor randperm(int64_t n, Generator& gen = default_generator());

}  // namespace lsg

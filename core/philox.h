// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator, so element i of a random tensor is a pure function of (seed, i). The
// CPU and CUDA kernels call these same functions and draw identical numbers, in any thread order.
#pragma once

#include <cmath>
#include <cstdint>

#include "lsgrad/core/hostdevice.h"

namespace lsg::philox {

struct Block {
    uint32_t v[4];
};

LSG_HD inline uint32_t mulhi(uint32_t a, uint32_t b) {
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Four 32-bit random words for (key, counter).
LSG_HD inline Block philox4x32(uint64_t key, uint64_t counter) {
    uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
        const uint32_t hi0 = mulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const uint32_t hi1 = mulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return {{c0, c1, c2, c3}};
}

// A uniform float in [0, 1) from the top 24 bits of a word (every value exactly representable).
LSG_HD inline float to_unit(uint32_t word) { return static_cast<float>(word >> 8) * (1.0f / 16777216.0f); }

// Element i's uniform [0, 1) draw.
LSG_HD inline float uniform(uint64_t seed, uint64_t i) { return to_unit(philox4x32(seed, i).v[0]); }

// Element i's standard normal draw (Box-Muller on two words of the same block).
LSG_HD inline float normal(uint64_t seed, uint64_t i) {
    const Block b = philox4x32(seed, i);
    const float u1 = (static_cast<float>(b.v[0] >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
    const float u2 = to_unit(b.v[1]);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

}  // namespace lsg::philox

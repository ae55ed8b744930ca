#include "lsgrad/core/rng.h"

#include <numeric>
#include <vector>

#include "lsgrad/core/backend.h"
#include "lsgrad/core/philox.h"

namespace lsg {

uint64_t Generator::next_below(uint64_t n) {
    LSG_CHECK(n > 0, "range must be non-empty");
    // Rejection sampling on 64-bit words keeps every value equally likely.
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        const philox::Block b = philox::philox4x32(seed_, advance(1));
        const uint64_t word = (static_cast<uint64_t>(b.v[0]) << 32) | b.v[1];
        if (word < limit) return word % n;
    }
}

double Generator::next_double() {
    const philox::Block b = philox::philox4x32(seed_, advance(1));
    const uint64_t word = (static_cast<uint64_t>(b.v[0]) << 21) ^ b.v[1];
    return static_cast<double>(word & ((uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
}

Generator& default_generator() {
    static Generator gen(0);
    return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {

Tensor random_tensor(const Shape& shape, TensorOptions options, Generator& gen, bool normal) {
    LSG_CHECK_OP(normal ? "randn" : "rand", is_floating(options.dtype), "needs a floating dtype, got ", options.dtype);
    const bool rg = options.requires_grad;
    options.requires_grad = false;
    Tensor t = empty(shape, options);
    tensor_kernels(options.device)
        .random(kernel_context(options.device), t, normal, gen.seed(), gen.advance(static_cast<uint64_t>(t.numel())));
    if (rg) t.requires_grad_();
    return t;
}

}  // namespace

Tensor rand(const Shape& shape, TensorOptions options, Generator& gen) { return random_tensor(shape, options, gen, false); }
Tensor randn(const Shape& shape, TensorOptions options, Generator& gen) { return random_tensor(shape, options, gen, true); }

Tensor randperm(int64_t n, Generator& gen) {
    LSG_CHECK(n >= 0, "n must be non-negative, got ", n);
    std::vector<int64_t> p(static_cast<size_t>(n));
    std::iota(p.begin(), p.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[gen.next_below(static_cast<uint64_t>(i + 1))]);
    return from_vector(p, {n});
}

}  // namespace lsg

// Device-side helpers shared by the .cu files: grid-stride loops and fixed-order reductions.
// Internal to cuda/.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace lsg::cuda {

// This thread's first flat index and the stride of a grid-stride loop over a 1-D launch.
__device__ inline int64_t grid_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// A lane's value from lane (lane ^ offset) of its group of `width`. Kernels that reduce a struct
// add an overload for it beside the struct (found by argument-dependent lookup).
template <class T>
__device__ inline T shuffle_xor(unsigned mask, T v, int offset, int width) {
    return __shfl_xor_sync(mask, v, offset, width);
}

// The reduction of one value per lane over the `width` lanes of a group (a power of two up to 32,
// aligned within the warp, `mask` its lanes) by an xor butterfly: every lane of the group ends with
// the same bits, and the order of the combines depends only on the width, so it is deterministic.
template <class T, class Op>
__device__ inline T group_reduce(T v, Op op, int width, unsigned mask) {
    for (int offset = width / 2; offset > 0; offset /= 2) v = op(v, shuffle_xor(mask, v, offset, width));
    return v;
}

// The reduction of one value per thread over the block (blockDim.x a multiple of 32, every thread
// calling): warps reduce by butterfly, then every thread combines the warps' results in warp order
// from `smem` (32 entries). Deterministic for a given block size; every thread gets the result.
template <class T, class Op>
__device__ inline T block_reduce(T v, Op op, T* smem) {
    v = group_reduce(v, op, 32, 0xffffffffu);
    const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (threadIdx.x % 32 == 0) smem[warp] = v;
    __syncthreads();
    T r = smem[0];
    for (int w = 1; w < warps; ++w) r = op(r, smem[w]);
    __syncthreads();  // smem is free for the next reduction
    return r;
}

struct Plus {
    template <class T>
    __device__ T operator()(T a, T b) const {
        return a + b;
    }
};

}  // namespace lsg::cuda

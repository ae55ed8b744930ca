// LSG_HD marks the inline arithmetic that both backends run: __host__ __device__ under nvcc, nothing
// for the host compiler. One definition, so every shared header (core/philox.h, ops/loss_math.h,
// ops/elementwise_math.h, optim/optim_math.h) agrees.
#pragma once

#if defined(__CUDACC__)
#define LSG_HD __host__ __device__
#else
#define LSG_HD
#endif

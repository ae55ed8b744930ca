// data::DistributedSampler: each rank's share of an epoch, for data-parallel training, with
// PyTorch's torch.utils.data.DistributedSampler semantics.
//
// Epoch e's order is randperm(N, Generator(seed + e)) (0..N−1 without shuffle): the order a
// DataLoader with the same seed visits. It is made a multiple of W long, by repeating its first
// samples (padding, the default) or by dropping its last N mod W (drop_last); rank r takes the
// positions r, r + W, r + 2W, ... of it, M = ⌈N/W⌉ (or ⌊N/W⌋) samples.
//
// Why this gives the batches of one process: rank r's batch k (batch size b) holds positions
// r + W·(k·b + j), j < b; over the W ranks these are exactly the positions [k·W·b, (k+1)·W·b) of
// the order, one process's batch k at batch size B = W·b. When N is a multiple of W and B, every
// batch matches; when N mod B = R is a multiple of W, the last batches match too (R/W per rank,
// and averaging the W equal-sized rank means gives the mean over the R). Otherwise padding repeats
// samples (or drop_last loses them) where one process would not.
#pragma once

#include <cstdint>

#include "lsgrad/core/tensor.h"

namespace lsg::data {

struct DistributedSamplerOptions {
    // Shuffle every epoch with Generator(seed + epoch), as DataLoader does.
    bool shuffle = true;
    uint64_t seed = 0;
    // Drop the last N mod W samples instead of padding with the first ones.
    bool drop_last = false;
};

class DistributedSampler {
public:
    // Rank `rank` of `num_replicas` over a data set of `dataset_size` samples. Throws lsg::Error
    // for num_replicas < 1, a rank outside [0, num_replicas), a negative size, or drop_last with
    // fewer samples than replicas (a rank would get none).
    DistributedSampler(int64_t dataset_size, int64_t num_replicas, int64_t rank, DistributedSamplerOptions options = {});

    // M, the samples this rank visits per epoch: ⌈N/W⌉, or ⌊N/W⌋ with drop_last.
    int64_t num_samples() const;
    int64_t num_replicas() const { return num_replicas_; }
    int64_t rank() const { return rank_; }
    // N, the data set size it was made for.
    int64_t dataset_size() const { return size_; }
    // This rank's sample indices of `epoch`, i64 [M], in visiting order (see above).
    Tensor indices(int64_t epoch) const;

private:
    int64_t size_, num_replicas_, rank_;
    DistributedSamplerOptions options_;
};

}  // namespace lsg::data

#include "lsgrad/data/sampler.h"

#include <vector>

#include "lsgrad/core/error.h"
#include "lsgrad/core/rng.h"

namespace lsg::data {

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t num_replicas, int64_t rank,
                                       DistributedSamplerOptions options)
    : size_(dataset_size), num_replicas_(num_replicas), rank_(rank), options_(options) {
    LSG_CHECK(num_replicas >= 1, "num_replicas must be at least 1, got ", num_replicas);
    LSG_CHECK(rank >= 0 && rank < num_replicas, "rank must lie in [0, ", num_replicas, "), got ", rank);
    LSG_CHECK(dataset_size >= 0, "the data set size must not be negative, got ", dataset_size);
    LSG_CHECK(!options.drop_last || dataset_size >= num_replicas, "drop_last with ", dataset_size,
              " samples and ", num_replicas, " replicas leaves every rank without samples");
    LSG_CHECK(options.drop_last || dataset_size > 0 || num_replicas == 1, "an empty data set cannot be padded to ",
              num_replicas, " replicas");
}

int64_t DistributedSampler::num_samples() const {
    // ⌈N/W⌉ without forming N + W − 1.
    return options_.drop_last ? size_ / num_replicas_ : size_ / num_replicas_ + (size_ % num_replicas_ != 0);
}

Tensor DistributedSampler::indices(int64_t epoch) const {
    std::vector<int64_t> order;
    if (options_.shuffle) {
        Generator gen(options_.seed + static_cast<uint64_t>(epoch));
        order = randperm(size_, gen).to_vector<int64_t>();
    } else {
        order.resize(static_cast<size_t>(size_));
        for (int64_t i = 0; i < size_; ++i) order[static_cast<size_t>(i)] = i;
    }
    const int64_t m = num_samples();
    std::vector<int64_t> mine(static_cast<size_t>(m));
    // Position p of the padded order is order[p mod N]: padding repeats the order from its start.
    for (int64_t j = 0; j < m; ++j) mine[static_cast<size_t>(j)] = order[static_cast<size_t>((rank_ + j * num_replicas_) % size_)];
    return from_vector(mine);
}

}  // namespace lsg::data

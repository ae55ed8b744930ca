// nn::DistributedDataParallel: data-parallel training of one module over a process group, as
// PyTorch's DistributedDataParallel. Every rank holds the same weights (broadcast from rank 0 when
// wrapped), runs forward and backward on its own share of the batch, and ends backward with every
// gradient replaced by its average over the ranks, so that the optimizer's step is the same on all.
//
//   auto pg = dist::new_process_group("mpi");
//   auto ddp = std::make_shared<nn::DistributedDataParallel>(model, pg);
//   optim::SGD opt(ddp->parameters(), ...);
//   loss_fn((*ddp)(x), y).backward();   // gradients averaged over the ranks on return
//   opt.step();
//
// Gradients are reduced in buckets: parameters are taken in reverse registration order (roughly
// the order backward produces their gradients) and cut into buckets of about bucket_cap_mb. A
// post-accumulate-grad hook on every parameter counts the gradients that have arrived; once all of
// a bucket's have, the bucket is packed into one flat buffer and its allreduce started, so that
// communication overlaps the rest of backward. Buckets are started in index order on every rank
// (a bucket that is ready early waits for its predecessors), which is what keeps the ranks'
// collectives matched. When the last bucket has started, the hook waits for all of them and
// writes the averages back into each parameter's grad().
//
// Every parameter that requires grad must receive a gradient in every backward (PyTorch's
// find_unused_parameters=False): otherwise its bucket never starts, and the next forward throws
// naming the parameters that received none.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lsgrad/dist/process_group.h"
#include "lsgrad/nn/module.h"

namespace lsg::nn {

struct DistributedDataParallelOptions {
    // A bucket closes once its gradients reach this many MiB (a larger parameter gets one alone).
    double bucket_cap_mb = 25.0;
    // Start each bucket's allreduce during backward as soon as it is ready (true), or reduce every
    // bucket only once backward has produced all gradients (false: no overlap, for comparison).
    bool overlap = true;
};

class DistributedDataParallel : public Module {
public:
    // Wraps `module` (registered as the child "module", so parameters are named "module.<name>"),
    // broadcasts its parameters and buffers from rank 0, lays out the buckets and installs the
    // hooks. Throws lsg::Error for a null module or group, a bucket_cap_mb that is not positive
    // and finite, or parameters not on the group's device.
    DistributedDataParallel(std::shared_ptr<Module> module, std::shared_ptr<dist::ProcessGroup> group,
                            DistributedDataParallelOptions options = {});
    ~DistributedDataParallel() override;

    // module(x). Throws if the previous backward left a bucket incomplete (see above).
    Tensor forward(const Tensor& x) override;
    std::string name() const override;

    const std::shared_ptr<Module>& module() const { return module_; }
    const std::shared_ptr<dist::ProcessGroup>& process_group() const { return group_; }
    // The bucket layout: for each bucket, the indices into module()->parameters() it holds, in
    // bucket order (bucket 0 holds the last parameters).
    std::vector<std::vector<size_t>> bucket_indices() const;

    struct State;  // the buckets and the progress of the current backward, shared with the hooks

private:
    std::shared_ptr<Module> module_;
    std::shared_ptr<dist::ProcessGroup> group_;
    std::shared_ptr<State> state_;
    std::vector<std::pair<Tensor, uint64_t>> hooks_;  // each parameter and its hook's id
};

}  // namespace lsg::nn

#include "lsgrad/dist/distributed_data_parallel.h"

#include <cmath>
#include <unordered_map>
#include <utility>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/error.h"

namespace lsg::nn {

struct DistributedDataParallel::State {
    struct Bucket {
        std::vector<size_t> params;    // indices into State::params, in bucket order
        std::vector<int64_t> offsets;  // each one's first element in flat
        Tensor flat;                   // [Σ numel] of the parameters' dtype and device
        size_t pending = 0;            // gradients still to arrive in this backward
        std::shared_ptr<dist::Work> work;
    };

    std::shared_ptr<dist::ProcessGroup> group;
    bool overlap = true;
    std::vector<std::pair<std::string, Tensor>> params;
    std::vector<size_t> bucket_of;  // parameter index → its bucket
    std::vector<Bucket> buckets;
    std::vector<bool> arrived;    // per parameter, in this backward
    size_t arrived_count = 0;
    size_t next_launch = 0;       // buckets [0, next_launch) are started

    // Cuts the parameters, last first, into buckets of at most cap_bytes (one parameter per bucket
    // at least), a new bucket also where dtype or device changes.
    void lay_out(double cap_bytes) {
        for (size_t k = params.size(); k-- > 0;) {
            const Tensor& p = params[k].second;
            const double bytes = static_cast<double>(p.numel()) * static_cast<double>(dtype_size(p.dtype()));
            bool fresh = buckets.empty();
            if (!fresh) {
                const Bucket& b = buckets.back();
                const Tensor& first = params[b.params.front()].second;
                const double used = static_cast<double>(b.offsets.back() + params[b.params.back()].second.numel()) *
                                    static_cast<double>(dtype_size(first.dtype()));
                fresh = first.dtype() != p.dtype() || first.device() != p.device() || used + bytes > cap_bytes;
            }
            if (fresh) buckets.emplace_back();
            Bucket& b = buckets.back();
            b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params[b.params.back()].second.numel());
            b.params.push_back(k);
            bucket_of[k] = buckets.size() - 1;
        }
        for (Bucket& b : buckets) {
            const Tensor& last = params[b.params.back()].second;
            b.flat = zeros({b.offsets.back() + last.numel()}, {.dtype = last.dtype(), .device = last.device()});
            b.pending = b.params.size();
        }
    }

    void launch(size_t i) {
        Bucket& b = buckets[i];
        for (size_t j = 0; j < b.params.size(); ++j) {
            const Tensor& p = params[b.params[j]].second;
            b.flat.narrow(0, b.offsets[j], p.numel()).view(p.shape()).copy_(p.grad());
        }
        b.work = group->allreduce_async(b.flat, dist::ReduceOp::Average);
    }

    // Waits for every bucket in order and writes the averages into grad(); ready for the next
    // backward.
    void finish() {
        for (Bucket& b : buckets) {
            b.work->wait();
            for (size_t j = 0; j < b.params.size(); ++j) {
                const Tensor& p = params[b.params[j]].second;
                p.grad().copy_(b.flat.narrow(0, b.offsets[j], p.numel()).view(p.shape()));
            }
            b.work.reset();
            b.pending = b.params.size();
        }
        arrived.assign(params.size(), false);
        arrived_count = 0;
        next_launch = 0;
    }

    // Called by parameter k's hook once backward has accumulated its gradient.
    void on_grad(size_t k) {
        LSG_CHECK(!arrived[k], "parameter ", params[k].first, " received two gradients in one backward");
        arrived[k] = true;
        ++arrived_count;
        --buckets[bucket_of[k]].pending;
        if (overlap) {
            while (next_launch < buckets.size() && buckets[next_launch].pending == 0) launch(next_launch++);
            // MPI moves a non-blocking collective along only inside MPI calls: test the started ones.
            for (size_t i = 0; i < next_launch; ++i) buckets[i].work->is_completed();
        }
        if (arrived_count < params.size()) return;
        while (next_launch < buckets.size()) launch(next_launch++);
        finish();
    }
};

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<Module> module,
                                                 std::shared_ptr<dist::ProcessGroup> group,
                                                 DistributedDataParallelOptions options)
    : module_(std::move(module)), group_(std::move(group)), state_(std::make_shared<State>()) {
    LSG_CHECK(module_ != nullptr, "the module is null");
    LSG_CHECK(group_ != nullptr, "the process group is null");
    LSG_CHECK(options.bucket_cap_mb > 0.0 && std::isfinite(options.bucket_cap_mb),
              "bucket_cap_mb must be positive and finite, got ", options.bucket_cap_mb);
    register_module("module", module_);

    NoGradGuard no_grad;
    for (auto& [name, t] : module_->named_parameters()) {
        LSG_CHECK(t.device() == group_->device(), "parameter ", name, " ", t.shape(), " is on ", t.device(), ", the ",
                  group_->backend(), " group's tensors on ", group_->device());
        group_->broadcast(t, 0);
    }
    for (auto& [name, t] : module_->named_buffers()) {
        LSG_CHECK(t.device() == group_->device(), "buffer ", name, " ", t.shape(), " is on ", t.device(), ", the ",
                  group_->backend(), " group's tensors on ", group_->device());
        Tensor c = t.contiguous();
        group_->broadcast(c, 0);
        if (!c.shares_storage(t)) t.copy_(c);
    }

    State& s = *state_;
    s.group = group_;
    s.overlap = options.overlap;
    for (auto& entry : module_->named_parameters())
        if (entry.second.requires_grad()) s.params.push_back(entry);
    s.bucket_of.resize(s.params.size());
    s.arrived.assign(s.params.size(), false);
    s.lay_out(options.bucket_cap_mb * 1024.0 * 1024.0);

    // The hooks hold the state weakly: a hook left on a parameter that outlives this wrapper
    // does nothing.
    std::weak_ptr<State> weak = state_;
    for (size_t k = 0; k < s.params.size(); ++k) {
        Tensor p = s.params[k].second;
        const uint64_t id = p.register_post_accumulate_grad_hook([weak, k](const Tensor&) {
            if (const auto st = weak.lock()) st->on_grad(k);
        });
        hooks_.emplace_back(p, id);
    }
}

DistributedDataParallel::~DistributedDataParallel() {
    for (auto& [p, id] : hooks_) p.remove_post_accumulate_grad_hook(id);
}

Tensor DistributedDataParallel::forward(const Tensor& x) {
    const State& s = *state_;
    if (s.arrived_count != 0) {
        std::string missing;
        for (size_t k = 0; k < s.params.size(); ++k)
            if (!s.arrived[k]) missing += (missing.empty() ? "" : ", ") + s.params[k].first;
        LSG_FAIL("the last backward gave no gradient to ", missing,
                 "; every parameter that requires grad must take part in the loss");
    }
    return (*module_)(x);
}

std::string DistributedDataParallel::name() const {
    return "DistributedDataParallel(backend=" + group_->backend() + ", world_size=" + std::to_string(group_->size()) +
           ", buckets=" + std::to_string(state_->buckets.size()) + ")";
}

std::vector<std::vector<size_t>> DistributedDataParallel::bucket_indices() const {
    // State::params skips parameters that do not require grad: map back to parameters() indices.
    const std::vector<Tensor> all = module_->parameters();
    std::unordered_map<const TensorImpl*, size_t> position;
    for (size_t i = 0; i < all.size(); ++i) position[all[i].impl_ptr().get()] = i;
    std::vector<std::vector<size_t>> out;
    for (const State::Bucket& b : state_->buckets) {
        out.emplace_back();
        for (size_t k : b.params) out.back().push_back(position.at(state_->params[k].second.impl_ptr().get()));
    }
    return out;
}

}  // namespace lsg::nn

#include "lsgrad/nn/module.h"

#include <set>
#include <sstream>
#include <unordered_set>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/error.h"

namespace lsg::nn {

Tensor Module::forward(const Tensor&) {
    LSG_FAIL(name(), " does not define forward()");
}

std::string Module::name() const { return "Module"; }

void Module::append_str(std::string& out, int indent) const {
    out += name();
    if (children_.empty()) return;
    out += "(\n";
    for (const auto& [child_name, child] : children_) {
        out.append(static_cast<size_t>(indent + 2), ' ');
        out += "(" + child_name + "): ";
        child->append_str(out, indent + 2);
        out += "\n";
    }
    out.append(static_cast<size_t>(indent), ' ');
    out += ")";
}

std::string Module::str() const {
    std::string out;
    append_str(out, 0);
    return out;
}

void Module::check_new_name(const char* op, const std::string& name) const {
    LSG_CHECK_OP(op, !name.empty() && name.find('.') == std::string::npos, "name \"", name,
              "\" must be non-empty and contain no '.'");
    auto taken = [&](const auto& list) {
        for (const auto& entry : list)
            if (entry.first == name) return true;
        return false;
    };
    LSG_CHECK_OP(op, !taken(parameters_) && !taken(buffers_) && !taken(children_), "\"", name,
                 "\" is already registered");
}

Tensor Module::register_parameter(const std::string& name, const Tensor& value) {
    check_new_name("register_parameter", name);
    if (!value.defined()) return Tensor();
    LSG_CHECK(is_floating(value.dtype()), "parameter \"", name, "\" must be floating, got ", value.dtype());
    Tensor p = value.detach();
    p.requires_grad_(true);
    parameters_.emplace_back(name, p);
    return p;
}

Tensor Module::register_buffer(const std::string& name, const Tensor& value) {
    check_new_name("register_buffer", name);
    LSG_CHECK(value.defined(), "buffer \"", name, "\" is undefined");
    Tensor b = value.detach();
    buffers_.emplace_back(name, b);
    return b;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
    check_new_name("register_module", name);
    LSG_CHECK_OP("register_module", module != nullptr, "module \"", name, "\" is null");
    children_.emplace_back(name, std::move(module));
}

template <class Fn>
void Module::visit_tensors(bool params, bool recurse, const std::string& prefix, Fn&& fn) const {
    for (const auto& [name, t] : params ? parameters_ : buffers_) fn(prefix + name, t);
    if (!recurse) return;
    for (const auto& [name, child] : children_) child->visit_tensors(params, true, prefix + name + ".", fn);
}

namespace {

// Named tensors of a module tree, each TensorImpl once (at its first name), as PyTorch's
// named_parameters() deduplicates shared parameters.
std::vector<std::pair<std::string, Tensor>> dedup(std::vector<std::pair<std::string, Tensor>> all) {
    std::unordered_set<const TensorImpl*> seen;
    std::vector<std::pair<std::string, Tensor>> out;
    out.reserve(all.size());
    for (auto& entry : all)
        if (seen.insert(entry.second.impl_ptr().get()).second) out.push_back(std::move(entry));
    return out;
}

std::vector<Tensor> values(const std::vector<std::pair<std::string, Tensor>>& named) {
    std::vector<Tensor> out;
    out.reserve(named.size());
    for (const auto& entry : named) out.push_back(entry.second);
    return out;
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
    std::vector<std::pair<std::string, Tensor>> all;
    visit_tensors(true, recurse, "", [&](const std::string& n, const Tensor& t) { all.emplace_back(n, t); });
    return dedup(std::move(all));
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
    std::vector<std::pair<std::string, Tensor>> all;
    visit_tensors(false, recurse, "", [&](const std::string& n, const Tensor& t) { all.emplace_back(n, t); });
    return dedup(std::move(all));
}

std::vector<Tensor> Module::parameters(bool recurse) const { return values(named_parameters(recurse)); }
std::vector<Tensor> Module::buffers(bool recurse) const { return values(named_buffers(recurse)); }

std::vector<std::shared_ptr<Module>> Module::children() const {
    std::vector<std::shared_ptr<Module>> out;
    out.reserve(children_.size());
    for (const auto& entry : children_) out.push_back(entry.second);
    return out;
}

int64_t Module::num_parameters() const {
    int64_t n = 0;
    for (const Tensor& p : parameters()) n += p.numel();
    return n;
}

void Module::train(bool on) {
    training_ = on;
    for (const auto& entry : children_) entry.second->train(on);
}

void Module::zero_grad() {
    for (Tensor& p : parameters()) p.zero_grad();
}

template <class Fn>
void Module::replace_all(Fn&& fn) {
    // Each TensorImpl is rewritten once even when shared, and its handle identity is kept so that
    // optimizers and layer members holding it follow the move.
    std::unordered_set<TensorImpl*> done;
    auto rewrite = [&](const Tensor& t) {
        TensorImpl& impl = t.impl();
        if (!done.insert(&impl).second) return;
        const Tensor moved = fn(t.detach());
        if (moved.impl_ptr() == nullptr || moved.storage() == t.storage()) return;
        impl.storage = moved.storage();
        impl.shape = moved.shape();
        impl.strides = moved.strides();
        impl.offset = moved.offset();
        impl.dtype = moved.dtype();
        if (impl.grad) {
            const Tensor g = fn(Tensor(impl.grad).detach());
            impl.grad = g.impl_ptr();
        }
    };
    for (const Tensor& p : parameters()) rewrite(p);
    for (const Tensor& b : buffers()) rewrite(b);
}

Module& Module::to(Device device) {
    NoGradGuard no_grad;
    replace_all([&](const Tensor& t) { return t.to(device); });
    return *this;
}

Module& Module::to(DType dtype) {
    LSG_CHECK(is_floating(dtype), "modules convert to a floating dtype, got ", dtype);
    NoGradGuard no_grad;
    replace_all([&](const Tensor& t) { return is_floating(t.dtype()) ? t.to(dtype) : t; });
    return *this;
}

StateDict Module::state_dict() const {
    StateDict out;
    for (const auto& [name, t] : named_parameters()) out.emplace(name, t.detach());
    for (const auto& [name, t] : named_buffers()) out.emplace(name, t.detach());
    return out;
}

LoadStateDictResult Module::load_state_dict(const StateDict& state, bool strict) {
    std::vector<std::pair<std::string, Tensor>> own = named_parameters();
    for (auto& entry : named_buffers()) own.push_back(std::move(entry));

    // Every check runs before any copy, so a failed load leaves the module as it was.
    LoadStateDictResult result;
    std::set<std::string> own_names;
    for (const auto& [name, t] : own) {
        own_names.insert(name);
        const auto it = state.find(name);
        if (it == state.end()) {
            result.missing_keys.push_back(name);
            continue;
        }
        const Tensor& src = it->second;
        LSG_CHECK(src.defined(), "state_dict entry \"", name, "\" is an undefined tensor");
        LSG_CHECK(src.shape() == t.shape(), "size mismatch for \"", name, "\": the checkpoint has shape ", src.shape(),
                  ", the module has shape ", t.shape());
        LSG_CHECK(is_floating(src.dtype()) == is_floating(t.dtype()), "dtype mismatch for \"", name,
                  "\": the checkpoint has ", src.dtype(), ", the module has ", t.dtype());
    }
    for (const auto& entry : state)
        if (!own_names.count(entry.first)) result.unexpected_keys.push_back(entry.first);

    if (strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty())) {
        std::ostringstream os;
        if (!result.missing_keys.empty()) {
            os << "missing key(s) in state_dict:";
            for (const auto& k : result.missing_keys) os << " \"" << k << "\"";
        }
        if (!result.unexpected_keys.empty()) {
            if (!result.missing_keys.empty()) os << "; ";
            os << "unexpected key(s) in state_dict:";
            for (const auto& k : result.unexpected_keys) os << " \"" << k << "\"";
        }
        LSG_FAIL(os.str());
    }

    NoGradGuard no_grad;
    for (auto& [name, t] : own) {
        const auto it = state.find(name);
        if (it != state.end()) t.copy_(it->second);
    }
    return result;
}

}  // namespace lsg::nn

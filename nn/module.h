// nn::Module: the base of every layer. A module owns named parameters (leaf tensors that require
// grad), named buffers (state that is saved but not trained, e.g. BatchNorm's running statistics)
// and named child modules, and walks them recursively the way torch.nn.Module does: dotted names
// ("0.weight", "features.3.bias"), train/eval propagated to children, state_dict round trips.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lsgrad/core/tensor.h"

namespace lsg::nn {

// Name → tensor, sorted by name: what state_dict() returns and checkpoints hold.
using StateDict = std::map<std::string, Tensor>;

// What a non-strict load_state_dict() skipped (a strict load throws instead).
struct LoadStateDictResult {
    std::vector<std::string> missing_keys;     // in the module, not in the dict
    std::vector<std::string> unexpected_keys;  // in the dict, not in the module
};

class Module {
public:
    Module() = default;
    virtual ~Module() = default;
    // A module's tensors are shared handles; copying one would alias its parameters silently.
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    // The computation. The base version throws: a module used only as a container of parameters
    // need not define it.
    virtual Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }

    // One line describing this module alone, as PyTorch's repr: "Linear(in_features=784,
    // out_features=256, bias=true)". The default is "Module".
    virtual std::string name() const;
    // The module tree, one child per indented line, as print(model) in PyTorch.
    std::string str() const;

    // ---- registration ------------------------------------------------------------------------
    // Adds a parameter: `value` detached into a leaf that requires grad (an undefined value, e.g.
    // a layer without bias, registers nothing). Returns the registered handle, which shares its
    // TensorImpl with every later view of the parameter (to(), load_state_dict() update it in place).
    Tensor register_parameter(const std::string& name, const Tensor& value);
    // Adds a buffer: saved in state_dict() and moved by to(), never trained.
    Tensor register_buffer(const std::string& name, const Tensor& value);
    // Adds a child module; its parameters appear as "<name>.<its names>".
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
        add_child(name, module);
        return module;
    }

    // ---- traversal (registration order, depth first; a tensor shared by two modules appears once)
    std::vector<Tensor> parameters(bool recurse = true) const;
    std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
    std::vector<Tensor> buffers(bool recurse = true) const;
    std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
    std::vector<std::shared_ptr<Module>> children() const;
    const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
    // Σ numel over parameters().
    int64_t num_parameters() const;

    // ---- mode --------------------------------------------------------------------------------
    // Sets training mode on this module and every descendant (Dropout and BatchNorm2d read it).
    virtual void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }

    // Clears every parameter's gradient (set to none, as PyTorch's default).
    void zero_grad();

    // Moves parameters and buffers (and existing gradients) to `device` / converts floating ones
    // to `dtype`, in place: every handle to a parameter, including an optimizer's, sees the change
    // and parameters stay leaves that require grad.
    Module& to(Device device);
    Module& to(DType dtype);

    // ---- state -------------------------------------------------------------------------------
    // Parameters and buffers by dotted name. The tensors are detached handles on the module's
    // storage (no copy): clone them to keep a snapshot.
    StateDict state_dict() const;
    // Copies each entry into the parameter or buffer of that name (converting dtype and device
    // to the module's). strict: a missing key, an unexpected key or a shape mismatch throws
    // lsg::Error naming the key (and both shapes); nothing is changed unless every check passes.
    // Not strict: shape mismatches still throw; missing and unexpected keys are returned.
    LoadStateDictResult load_state_dict(const StateDict& state, bool strict = true);

private:
    void add_child(const std::string& name, std::shared_ptr<Module> module);
    void check_new_name(const char* op, const std::string& name) const;
    template <class Fn>
    void visit_tensors(bool params, bool recurse, const std::string& prefix, Fn&& fn) const;
    // Applies fn(tensor) → replacement to every parameter and buffer in place.
    template <class Fn>
    void replace_all(Fn&& fn);
    void append_str(std::string& out, int indent) const;

    bool training_ = true;
    std::vector<std::pair<std::string, Tensor>> parameters_;
    std::vector<std::pair<std::string, Tensor>> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace lsg::nn

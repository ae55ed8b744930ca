// The MNIST-sized models and the batched evaluation pass that examples/mnist and
// examples/label_smoothing share, so both train and measure the very same networks.
//
//   mlp: Flatten – Linear(784, 256) – ReLU – Linear(256, 256) – ReLU – Linear(256, 10)
//   cnn: Conv3x3(1→32, pad 1) – ReLU – MaxPool2 – Conv3x3(32→64, pad 1) – ReLU – MaxPool2 –
//        Flatten – Linear(64·7·7, 128) – ReLU – Linear(128, 10)          (28 → 14 → 7)
// Each ends with its classifier Linear, so Sequential::forward_pre_logits gives the penultimate
// activations (256 for the MLP, 128 for the CNN).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "lsgrad/core/autograd.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/core/tensor.h"
#include "lsgrad/data/dataset.h"
#include "lsgrad/nn/layers.h"

namespace lsg::examples {

// The model named `kind` ("mlp" or "cnn"), initialised from `gen`, for 28×28 single-channel images
// and 10 classes. Throws std::invalid_argument for another name.
inline std::shared_ptr<nn::Sequential> build_mnist_model(const std::string& kind, Generator& gen) {
    using namespace lsg::nn;
    if (kind == "mlp")
        return std::make_shared<Sequential>(std::make_shared<Flatten>(), std::make_shared<Linear>(784, 256, true, gen),
                                            std::make_shared<ReLU>(), std::make_shared<Linear>(256, 256, true, gen),
                                            std::make_shared<ReLU>(), std::make_shared<Linear>(256, 10, true, gen));
    if (kind == "cnn")
        return std::make_shared<Sequential>(
            std::make_shared<Conv2d>(1, 32, 3, 1, 1, true, gen), std::make_shared<ReLU>(),
            std::make_shared<MaxPool2d>(2), std::make_shared<Conv2d>(32, 64, 3, 1, 1, true, gen),
            std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2), std::make_shared<Flatten>(),
            std::make_shared<Linear>(64 * 7 * 7, 128, true, gen), std::make_shared<ReLU>(),
            std::make_shared<Linear>(128, 10, true, gen));
    throw std::invalid_argument("unknown model '" + kind + "' (expected mlp or cnn)");
}

// Runs `fn(images on device)` → [B, F] over the data set in batches of 1000, in eval mode and without
// recording, and returns the rows stacked into a CPU tensor [N, F]; the model is left in training
// mode. predict() below is this with the model's forward (the logits).
template <class Fn>
Tensor predict_with(nn::Module& model, const data::ImageDataset& ds, Device device, Fn&& fn) {
    NoGradGuard no_grad;
    model.eval();
    Tensor out;
    data::DataLoader loader(ds, {.batch_size = 1000});
    int64_t start = 0;
    for (const data::Batch& b : loader) {
        const Tensor rows = fn(b.images.to(device)).to(Device::cpu());
        if (!out.defined()) out = empty({ds.size(), rows.size(1)});
        out.narrow(0, start, rows.size(0)).copy_(rows);
        start += rows.size(0);
    }
    model.train();
    return out;
}

// The model's logits [N, K] on the CPU for every sample of `ds`.
inline Tensor predict(nn::Module& model, const data::ImageDataset& ds, Device device) {
    return predict_with(model, ds, device, [&](const Tensor& x) { return model(x); });
}

}  // namespace lsg::examples

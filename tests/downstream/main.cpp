// Built against an installed lsgrad: training steps of a linear classifier through the umbrella
// header, the update by hand and then by optim::SGD, so the tensor, loss and optimizer kernel tables
// of the CPU backend are all reached from a static library (their registration must be linked).
// Exits non-zero if the loss does not fall.
#include <lsgrad/lsgrad.h>

#include <cmath>
#include <cstdio>

int main() {
    lsg::Generator gen(0);
    lsg::Tensor x = lsg::randn({64, 8}, {}, gen);
    lsg::Tensor y = lsg::argmax(x.narrow(1, 0, 4), 1);
    lsg::Tensor w = lsg::zeros({4, 8}, {.requires_grad = true});
    float first = 0, last = 0;
    for (int step = 0; step < 20; ++step) {
        lsg::Tensor loss = lsg::cross_entropy(lsg::linear(x, w), y, {.label_smoothing = 0.1});
        loss.backward();
        {
            lsg::NoGradGuard no_grad;
            w.copy_(w - w.grad() * 0.5);
        }
        w.zero_grad();
        (step == 0 ? first : last) = loss.item<float>();
    }
    lsg::optim::SGD sgd({w}, {.lr = 0.5, .momentum = 0.9});
    float after_sgd = last;
    for (int step = 0; step < 5; ++step) {
        lsg::Tensor loss = lsg::cross_entropy(lsg::linear(x, w), y);
        loss.backward();
        sgd.step();
        sgd.zero_grad();
        after_sgd = loss.item<float>();
    }
    std::printf("lsgrad %s: loss %.4f -> %.4f, after SGD %.4f\n", LSGRAD_VERSION, first, last, after_sgd);
    return last < first && std::isfinite(after_sgd) ? 0 : 1;
}

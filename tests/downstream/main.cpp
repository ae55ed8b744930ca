// Built against an installed lsgrad: one training step of a linear classifier through the umbrella
// header. Exits non-zero if the loss does not fall.
#include <lsgrad/lsgrad.h>

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
    std::printf("lsgrad %s: loss %.4f -> %.4f\n", LSGRAD_VERSION, first, last);
    return last < first ? 0 : 1;
}

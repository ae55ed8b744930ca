// nn::Mixup: draws λ and boxes with its own generator, mixes a host copy of the batch, and builds
// the targets with mixup_targets. The semantics follow timm's Mixup (data/mixup.py) option by
// option; the random streams differ from numpy's, so only the distributions match timm.
#include "lsgrad/nn/mixup.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "lsgrad/core/error.h"
#include "lsgrad/ops/mixup.h"

namespace lsg::nn {
namespace {

constexpr const char* op = "Mixup";

// The mixing of one destination row from the original batch: a blend, or a box pasted from `src`.
template <class T>
void blend_row(const T* dst_orig, const T* src, T* out, int64_t len, double lambda) {
    for (int64_t e = 0; e < len; ++e)
        out[e] = static_cast<T>(lambda * static_cast<double>(dst_orig[e]) +
                                (1.0 - lambda) * static_cast<double>(src[e]));
}

template <class T>
void paste_box(const T* src, T* out, int64_t planes, int64_t h, int64_t w, const CutMixBox& b) {
    for (int64_t c = 0; c < planes; ++c)
        for (int64_t y = b.y0; y < b.y1; ++y)
            std::copy(src + (c * h + y) * w + b.x0, src + (c * h + y) * w + b.x1, out + (c * h + y) * w + b.x0);
}

}  // namespace

Mixup::Mixup(MixupOptions options) : options_(std::move(options)), gen_(options_.seed) {
    const MixupOptions& o = options_;
    LSG_CHECK_OP(op, o.num_classes > 0, "num_classes must be set (> 0) to build the targets, got ", o.num_classes);
    LSG_CHECK_OP(op, o.mixup_alpha >= 0.0 && std::isfinite(o.mixup_alpha), "mixup_alpha must be >= 0, got ",
                 o.mixup_alpha);
    LSG_CHECK_OP(op, o.cutmix_alpha >= 0.0 && std::isfinite(o.cutmix_alpha), "cutmix_alpha must be >= 0, got ",
                 o.cutmix_alpha);
    LSG_CHECK_OP(op, o.prob >= 0.0 && o.prob <= 1.0, "prob must lie in [0, 1], got ", o.prob);
    LSG_CHECK_OP(op, o.switch_prob >= 0.0 && o.switch_prob <= 1.0, "switch_prob must lie in [0, 1], got ",
                 o.switch_prob);
    LSG_CHECK_OP(op, o.label_smoothing >= 0.0 && o.label_smoothing <= 1.0, "label_smoothing must lie in [0, 1], got ",
                 o.label_smoothing);
    if (o.cutmix_minmax) {
        const auto [lo, hi] = *o.cutmix_minmax;
        LSG_CHECK_OP(op, lo >= 0.0 && lo < hi && hi <= 1.0, "cutmix_minmax must satisfy 0 <= min < max <= 1, got (",
                     lo, ", ", hi, ")");
        // timm: a min/max box ignores λ's distribution, so CutMix is simply switched on with α = 1.
        options_.cutmix_alpha = 1.0;
    }
    LSG_CHECK_OP(op, options_.mixup_alpha > 0.0 || options_.cutmix_alpha > 0.0,
                 "one of mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax must be given");
}

double Mixup::uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(gen_); }

double Mixup::beta(double alpha) {
    std::gamma_distribution<double> gamma(alpha, 1.0);
    const double a = gamma(gen_), b = gamma(gen_);
    // Both draws underflow to 0 only for tiny α, where Beta(α, α) puts its mass at 0 and 1.
    if (a + b == 0.0) return uniform() < 0.5 ? 0.0 : 1.0;
    return a / (a + b);
}

// timm's _params_per_batch / _params_per_elem for one unit (batch, pair or row).
Mixup::Params Mixup::draw() {
    Params p;
    if (!enabled_ || !(uniform() < options_.prob)) return p;
    const bool mix = options_.mixup_alpha > 0.0, cut = options_.cutmix_alpha > 0.0;
    p.cutmix = mix && cut ? uniform() < options_.switch_prob : cut;
    p.lambda = beta(p.cutmix ? options_.cutmix_alpha : options_.mixup_alpha);
    return p;
}

std::pair<CutMixBox, double> Mixup::box_and_lambda(double lambda, int64_t h, int64_t w) {
    const auto randint = [this](int64_t lo, int64_t hi) {  // [lo, hi), as numpy's randint
        return std::uniform_int_distribution<int64_t>(lo, hi - 1)(gen_);
    };
    CutMixBox b;
    if (options_.cutmix_minmax) {
        const auto [mn, mx] = *options_.cutmix_minmax;
        const int64_t h_lo = static_cast<int64_t>(h * mn), h_hi = static_cast<int64_t>(h * mx);
        const int64_t w_lo = static_cast<int64_t>(w * mn), w_hi = static_cast<int64_t>(w * mx);
        LSG_CHECK_OP(op, h_lo < h_hi && w_lo < w_hi, "cutmix_minmax (", mn, ", ", mx, ") leaves no box side to draw for an ",
                     h, "x", w, " image");
        const int64_t cut_h = randint(h_lo, h_hi), cut_w = randint(w_lo, w_hi);
        b.y0 = randint(0, h - cut_h);
        b.x0 = randint(0, w - cut_w);
        b.y1 = b.y0 + cut_h;
        b.x1 = b.x0 + cut_w;
    } else {
        // A box with sides sqrt(1 − λ)·(H, W) centred uniformly, then clipped to the image.
        const double ratio = std::sqrt(1.0 - lambda);
        const int64_t cut_h = static_cast<int64_t>(h * ratio), cut_w = static_cast<int64_t>(w * ratio);
        const int64_t cy = randint(0, h), cx = randint(0, w);
        b.y0 = std::clamp<int64_t>(cy - cut_h / 2, 0, h);
        b.y1 = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
        b.x0 = std::clamp<int64_t>(cx - cut_w / 2, 0, w);
        b.x1 = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
    }
    if (options_.correct_lam || options_.cutmix_minmax)
        lambda = 1.0 - static_cast<double>(b.area()) / static_cast<double>(h * w);
    return {b, lambda};
}

MixupResult Mixup::operator()(const Tensor& x, const Tensor& target) {
    LSG_CHECK_OP(op, x.defined() && target.defined(), "undefined tensor");
    LSG_CHECK_OP(op, is_floating(x.dtype()), "expected a floating input batch, got ", x.dtype());
    LSG_CHECK_OP(op, x.dim() >= 1, "expected an input batch [N, ...], got a 0-d tensor");
    LSG_CHECK_OP(op, target.dtype() == DType::i64 && target.dim() == 1 && target.size(0) == x.size(0),
                 "expected int64 targets of shape [", x.size(0), "], got ", target.dtype(), " ", target.shape());
    const int64_t n = x.size(0);
    const bool needs_image = options_.cutmix_alpha > 0.0;
    LSG_CHECK_OP(op, !needs_image || x.dim() >= 3, "CutMix needs inputs [N, ..., H, W], got ", x.shape());
    LSG_CHECK_OP(op, options_.mode != MixupMode::Pair || n % 2 == 0, "pair mode needs an even batch, got N = ", n);
    const int64_t h = x.dim() >= 3 ? x.size(-2) : 1, w = x.dim() >= 3 ? x.size(-1) : 1;
    const int64_t row_len = n > 0 ? x.numel() / n : 0;
    const int64_t planes = h * w > 0 ? row_len / (h * w) : 0;

    MixupResult r;
    r.lambda.assign(n, 1.0);
    r.boxes.assign(n, CutMixBox{});
    r.cutmix.assign(n, false);

    // Draw every unit's λ (and box) first, in a fixed order: batch, then pairs or rows by index.
    const auto draw_unit = [&](int64_t i, int64_t j) {
        Params p = draw();
        if (p.lambda == 1.0) return;
        CutMixBox box;
        if (p.cutmix) std::tie(box, p.lambda) = box_and_lambda(p.lambda, h, w);
        for (int64_t row : {i, j}) {
            if (row < 0) continue;
            r.lambda[row] = p.lambda;
            r.cutmix[row] = p.cutmix;
            r.boxes[row] = box;
        }
    };
    if (n > 0) {
        switch (options_.mode) {
            case MixupMode::Batch: {
                Params p = draw();
                if (p.lambda != 1.0) {
                    CutMixBox box;
                    if (p.cutmix) std::tie(box, p.lambda) = box_and_lambda(p.lambda, h, w);
                    r.lambda.assign(n, p.lambda);
                    r.cutmix.assign(n, p.cutmix);
                    r.boxes.assign(n, box);
                }
                break;
            }
            case MixupMode::Pair:
                for (int64_t i = 0; i < n / 2; ++i) draw_unit(i, n - 1 - i);
                break;
            case MixupMode::Elem:
                for (int64_t i = 0; i < n; ++i) draw_unit(i, -1);
                break;
        }
    }

    const bool any = std::any_of(r.lambda.begin(), r.lambda.end(), [](double l) { return l != 1.0; });
    if (!any) {
        r.input = x;
    } else {
        const Tensor src = x.detach().to(Device::cpu()).contiguous();
        Tensor out = src.clone();
        visit_dtype<float, double>(src.dtype(), [&]<class T>() {
            const T* in = src.data<T>();
            T* o = out.data<T>();
            for (int64_t i = 0; i < n; ++i) {
                if (r.lambda[i] == 1.0) continue;
                const int64_t j = n - 1 - i;
                if (r.cutmix[i])
                    paste_box(in + j * row_len, o + i * row_len, planes, h, w, r.boxes[i]);
                else
                    blend_row(in + i * row_len, in + j * row_len, o + i * row_len, row_len, r.lambda[i]);
            }
        });
        r.input = out.to(x.device());
    }
    const Tensor lam = from_vector<double>(r.lambda, {n});
    r.target = mixup_targets(target, options_.num_classes, lam, options_.label_smoothing, x.dtype()).to(x.device());
    return r;
}

}  // namespace lsg::nn

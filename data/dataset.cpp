#include "lsgrad/data/dataset.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <string>

#include "lsgrad/core/checked.h"
#include "lsgrad/core/error.h"
#include "lsgrad/core/rng.h"
#include "lsgrad/ops/index.h"

namespace lsg::data {

ImageDataset ImageDataset::slice(int64_t start, int64_t length) const {
    // Compared without forming start + length, which a hostile length would overflow.
    int64_t end = 0;
    const bool end_fits = !__builtin_add_overflow(start, length, &end);
    LSG_CHECK(start >= 0 && length >= 0 && start <= size() && length <= size() - start, "samples [", start, ", ",
              end_fits ? std::to_string(end) : std::to_string(start) + " + " + std::to_string(length),
              ") are outside a data set of ", size());
    return {images.narrow(0, start, length), labels.narrow(0, start, length), num_classes};
}

ImageDataset make_image_dataset(const IdxArray& images, const IdxArray& labels, const std::string& what,
                                Normalization norm, int64_t num_classes) {
    LSG_CHECK(images.shape.size() == 3 || images.shape.size() == 4, what, ": images must be [N, H, W] or [N, C, H, W], got ",
              images.shape);
    LSG_CHECK(std::isfinite(norm.std) && norm.std > 0 && std::isfinite(norm.mean), what,
              ": normalisation needs a finite mean and a positive std, got mean ", norm.mean, ", std ", norm.std);
    check_idx_pair(images, labels, what);
    check_labels(labels, num_classes, what);

    Shape shape = images.shape;
    if (shape.size() == 3) shape.insert(shape.begin() + 1, 1);
    // The header's shape must describe exactly the bytes present (an IdxArray built by hand may
    // not): checked, so a huge shape cannot wrap around to the buffer's size.
    LSG_CHECK(checked::numel("make_image_dataset", shape) == static_cast<int64_t>(images.data.size()), what,
              ": images of shape ", images.shape, " need ", checked::numel("make_image_dataset", shape),
              " bytes, got ", images.data.size());
    LSG_CHECK(labels.data.size() == static_cast<size_t>(labels.shape[0]), what, ": labels of shape ", labels.shape,
              " hold ", labels.data.size(), " bytes");
    ImageDataset ds;
    ds.num_classes = num_classes;
    ds.images = empty(shape);
    // 256 possible byte values: a table turns the conversion into one load per pixel.
    std::array<float, 256> lut{};
    for (int b = 0; b < 256; ++b) lut[b] = static_cast<float>((b / 255.0 - norm.mean) / norm.std);
    float* out = ds.images.data<float>();
    const uint8_t* in = images.data.data();
    const int64_t n = static_cast<int64_t>(images.data.size());
#pragma omp parallel for schedule(static) if (n >= (1 << 20))
    for (int64_t i = 0; i < n; ++i) out[i] = lut[in[i]];

    ds.labels = empty({static_cast<int64_t>(labels.data.size())}, {.dtype = DType::i64});
    std::copy(labels.data.begin(), labels.data.end(), ds.labels.data<int64_t>());
    return ds;
}

ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path, Normalization norm,
                              int64_t num_classes) {
    const IdxArray images = read_idx(images_path);
    const IdxArray labels = read_idx(labels_path);
    return make_image_dataset(images, labels, images_path + " and " + labels_path, norm, num_classes);
}

ImageDataset load_mnist(const std::string& dir, bool train, Normalization norm) {
    const IdxFiles files = find_idx_files(dir);
    return train ? load_idx_dataset(files.train_images, files.train_labels, norm)
                 : load_idx_dataset(files.test_images, files.test_labels, norm);
}

ImageDataset load_fashion_mnist(const std::string& dir, bool train, Normalization norm) {
    return load_mnist(dir, train, norm);
}

std::string default_mnist_dir() {
    if (const char* d = std::getenv("LSGRAD_DATA_DIR"); d && *d) return d;
    if (const char* c = std::getenv("XDG_CACHE_HOME"); c && *c) return std::string(c) + "/lsgrad/mnist";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.cache/lsgrad/mnist";
}

std::string default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

// ---- DataLoader -------------------------------------------------------------------------------

DataLoader::DataLoader(ImageDataset dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
    LSG_CHECK(options_.batch_size >= 1, "batch_size must be at least 1, got ", options_.batch_size);
    LSG_CHECK(dataset_.images.defined() && dataset_.labels.defined(), "the data set has no images or labels");
    LSG_CHECK(dataset_.labels.dim() == 1 && dataset_.labels.dtype() == DType::i64,
              "labels must be int64 [N], got ", dataset_.labels.dtype(), " ", dataset_.labels.shape());
    LSG_CHECK(dataset_.images.dim() >= 1 && dataset_.images.size(0) == dataset_.labels.size(0), "images ",
              dataset_.images.shape(), " and labels ", dataset_.labels.shape(), " hold different sample counts");
}

DataLoader::DataLoader(ImageDataset dataset, DataLoaderOptions options, DistributedSampler sampler)
    : DataLoader(std::move(dataset), options) {
    LSG_CHECK(!options_.shuffle, "shuffle must be false with a sampler (the sampler shuffles)");
    LSG_CHECK(sampler.dataset_size() == dataset_.size(), "the sampler was made for ", sampler.dataset_size(),
              " samples, the data set holds ", dataset_.size());
    sampler_ = sampler;
}

int64_t DataLoader::samples() const { return sampler_ ? sampler_->num_samples() : dataset_.size(); }

int64_t DataLoader::size() const {
    const int64_t n = samples(), b = options_.batch_size;
    // ⌈n / b⌉ without forming n + b − 1, which overflows for a huge batch size.
    return options_.drop_last ? n / b : n / b + (n % b != 0);
}

Tensor DataLoader::order(int64_t epoch) const {
    if (sampler_) return sampler_->indices(epoch);
    if (!options_.shuffle) return arange(dataset_.size());
    Generator gen(options_.seed + static_cast<uint64_t>(epoch));
    return randperm(dataset_.size(), gen);
}

Batch DataLoader::make_batch(const Tensor& order, int64_t index) const {
    const int64_t start = index * options_.batch_size;
    const int64_t len = std::min(options_.batch_size, samples() - start);
    if (!gathers())
        return {dataset_.images.narrow(0, start, len), dataset_.labels.narrow(0, start, len)};
    const Tensor idx = order.narrow(0, start, len);
    return {index_select(dataset_.images, 0, idx), index_select(dataset_.labels, 0, idx)};
}

DataLoader::Iterator DataLoader::begin() {
    const int64_t epoch = next_epoch_++;
    return Iterator(this, gathers() ? order(epoch) : Tensor(), 0);
}

DataLoader::Iterator DataLoader::end() const {
    Iterator it;
    it.index_ = size();
    return it;
}

DataLoader::Iterator::Iterator(const DataLoader* loader, Tensor order, int64_t index)
    : loader_(loader), order_(std::move(order)), index_(index) {
    load();
}

void DataLoader::Iterator::load() {
    // The previous batch is released before the next is gathered, so the allocator's cache hands
    // its blocks straight back (unless the caller still holds them).
    batch_ = {};
    if (index_ < loader_->size()) batch_ = loader_->make_batch(order_, index_);
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
    ++index_;
    load();
    return *this;
}

}  // namespace lsg::data

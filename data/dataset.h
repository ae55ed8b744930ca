// Image classification data sets held in memory, and a DataLoader that cuts them into (optionally
// shuffled) batches. MNIST and Fashion-MNIST come from their IDX files (lsgrad/data/idx.h).
//
//   data::ImageDataset train = data::load_mnist(data::default_mnist_dir(), true);
//   data::DataLoader loader(train, {.batch_size = 128, .shuffle = true, .seed = 1});
//   for (int epoch = 0; epoch < 3; ++epoch)
//       for (const data::Batch& batch : loader) { ... batch.images [B, 1, 28, 28], batch.labels [B] ... }
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>

#include "lsgrad/core/tensor.h"
#include "lsgrad/data/idx.h"
#include "lsgrad/data/sampler.h"

namespace lsg::data {

// Per-channel normalisation x ← (pixel/255 − mean) / std applied when a data set is loaded.
// The defaults are MNIST's training-set statistics (those torchvision's examples use); mean 0 and
// std 1 keep pixels in [0, 1].
struct Normalization {
    double mean = 0.1307;
    double std = 0.3081;
};

// Fashion-MNIST's training-set statistics.
inline constexpr Normalization kFashionMnistNormalization{0.2860, 0.3530};

// Images and their class labels, all in memory.
struct ImageDataset {
    // f32 [N, C, H, W], normalised.
    Tensor images;
    // i64 [N], each in [0, num_classes).
    Tensor labels;
    int64_t num_classes = 10;

    // N, the number of samples.
    int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
    // Samples start..start+length-1 as views (no copy), e.g. a held-out split of the training set.
    ImageDataset slice(int64_t start, int64_t length) const;
};

// A data set from IDX arrays: images [N, H, W] (or [N, C, H, W]) of bytes, labels [N] in
// [0, num_classes). Images become f32 [N, 1, H, W] (or [N, C, H, W]) holding (byte/255 − mean)/std.
// `what` names the pair in errors ("MNIST train"). Throws lsg::Error when the counts differ, a label
// is out of range or the images are not 3- or 4-D.
ImageDataset make_image_dataset(const IdxArray& images, const IdxArray& labels, const std::string& what,
                                Normalization norm = {}, int64_t num_classes = 10);

// Reads an image IDX file and a label IDX file (raw or gzip) into a data set; errors name the file.
ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              Normalization norm = {}, int64_t num_classes = 10);

// MNIST's 60 000 training (train) or 10 000 test images from the four IDX files in `dir` (found
// under any of the names data::find_idx_files accepts). Throws lsg::Error naming the directory and
// the missing files, or the file and its fault.
ImageDataset load_mnist(const std::string& dir, bool train = true, Normalization norm = {});
// The same for Fashion-MNIST, normalised with its own statistics by default.
ImageDataset load_fashion_mnist(const std::string& dir, bool train = true,
                                Normalization norm = kFashionMnistNormalization);

// Where scripts/fetch_mnist.sh puts MNIST: $LSGRAD_DATA_DIR, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/lsgrad/mnist.
std::string default_mnist_dir();
// Where Debian's dataset-fashion-mnist package puts Fashion-MNIST.
std::string default_fashion_mnist_dir();

// One batch: images [B, C, H, W] and labels [B]; B is the batch size except, without drop_last, in
// the last batch of an epoch.
struct Batch {
    Tensor images;
    Tensor labels;
};

struct DataLoaderOptions {
    int64_t batch_size = 128;
    // Visit the samples in a fresh random order every epoch.
    bool shuffle = false;
    // Leave out the last batch when it would be smaller than batch_size.
    bool drop_last = false;
    // Epoch e visits the samples in the order randperm(N, Generator(seed + e)), so a run is
    // reproducible from its seed and two epochs differ.
    uint64_t seed = 0;
};

// Cuts a data set into batches, PyTorch's DataLoader for tensors in memory. Each begin() (each
// range-for loop) starts the next epoch: epoch 0, 1, 2, ... unless set_epoch says otherwise.
// Shuffled batches are gathered with index_select into blocks from the caching allocator (a batch
// that has been let go hands its memory to the next one, so steady state allocates nothing fresh);
// unshuffled batches are views of the data set's tensors and copy nothing.
class DataLoader {
public:
    // Throws lsg::Error for batch_size < 1 or a data set whose images and labels disagree.
    explicit DataLoader(ImageDataset dataset, DataLoaderOptions options = {});
    // Batches of this rank's share only, in the sampler's order (data-parallel training): epoch e
    // visits sampler.indices(e) cut into batches. options.shuffle must be false (the sampler
    // shuffles), and the sampler must cover this data set's size, else lsg::Error.
    DataLoader(ImageDataset dataset, DataLoaderOptions options, DistributedSampler sampler);

    // Batches per epoch: ⌈N / batch_size⌉, or ⌊N / batch_size⌋ with drop_last (N: the sampler's
    // num_samples() when there is one).
    int64_t size() const;
    const ImageDataset& dataset() const { return dataset_; }
    const DataLoaderOptions& options() const { return options_; }
    // The epoch the next begin() starts.
    int64_t epoch() const { return next_epoch_; }
    void set_epoch(int64_t epoch) { next_epoch_ = epoch; }
    // The sample indices (i64 [N]) of `epoch` in visiting order: 0..N−1 unshuffled, the sampler's
    // indices(epoch) with one.
    Tensor order(int64_t epoch) const;

    class Iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = Batch;
        using difference_type = std::ptrdiff_t;
        using pointer = const Batch*;
        using reference = const Batch&;

        Iterator() = default;
        const Batch& operator*() const { return batch_; }
        const Batch* operator->() const { return &batch_; }
        Iterator& operator++();
        bool operator==(const Iterator& other) const { return index_ == other.index_; }
        // Position of the current batch in the epoch.
        int64_t index() const { return index_; }

    private:
        friend class DataLoader;
        Iterator(const DataLoader* loader, Tensor order, int64_t index);
        void load();

        const DataLoader* loader_ = nullptr;
        Tensor order_;
        int64_t index_ = 0;
        Batch batch_;
    };

    // Starts the next epoch and returns its first batch.
    Iterator begin();
    Iterator end() const;

private:
    Batch make_batch(const Tensor& order, int64_t index) const;

    // Samples per epoch, and whether batches are gathered through the order (else views).
    int64_t samples() const;
    bool gathers() const { return options_.shuffle || sampler_.has_value(); }

    ImageDataset dataset_;
    DataLoaderOptions options_;
    std::optional<DistributedSampler> sampler_;
    int64_t next_epoch_ = 0;
};

}  // namespace lsg::data

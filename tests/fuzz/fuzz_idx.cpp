// libFuzzer harness for the IDX reader (data/idx.cpp) and the data-set builder it feeds: any byte
// string, raw or gzip, must give an IdxArray or an lsg::Error, never a crash, a hang, a sanitizer
// report or another exception (which libFuzzer reports as a crash).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "lsgrad/core/error.h"
#include "lsgrad/data/dataset.h"
#include "lsgrad/data/idx.h"

namespace {

// One scratch file per fuzzing process (libFuzzer runs inputs one after another in a process).
const std::string& scratch_path() {
    static const std::string path = "/tmp/lsgrad_fuzz_idx_" + std::to_string(::getpid()) + ".idx";
    return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    {
        std::ofstream out(scratch_path(), std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    try {
        const lsg::data::IdxArray images = lsg::data::read_idx(scratch_path());
        // What a data set does with a header that parsed: labels of the matching count (kept small
        // so that the harness itself stays within memory), then the conversion to a tensor.
        if ((images.shape.size() == 3 || images.shape.size() == 4) && images.shape[0] <= 4096) {
            lsg::data::IdxArray labels;
            labels.shape = {images.shape[0]};
            labels.data.assign(static_cast<size_t>(images.shape[0]), 0);
            (void)lsg::data::make_image_dataset(images, labels, "fuzz");
        }
    } catch (const lsg::Error&) {
        // The one acceptable failure.
    }
    return 0;
}

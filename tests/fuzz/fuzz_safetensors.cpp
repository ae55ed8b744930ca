// libFuzzer harness for the safetensors loader (nn/serialize.cpp): any byte string must load or
// raise lsg::Error, never crash, recurse without bound, trip a sanitizer or let another exception
// (nlohmann-json's, std::bad_alloc) escape, which libFuzzer reports as a crash. A file that loads is
// written back and read again: the round trip must give the same tensors.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "lsgrad/core/error.h"
#include "lsgrad/nn/serialize.h"

namespace {

std::string scratch(const char* what) {
    return "/tmp/lsgrad_fuzz_st_" + std::to_string(::getpid()) + "_" + what + ".safetensors";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string in_path = scratch("in");
    {
        std::ofstream out(in_path, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    std::map<std::string, lsg::Tensor> loaded;
    lsg::nn::Metadata meta;
    try {
        loaded = lsg::nn::load_safetensors(in_path, &meta);
    } catch (const lsg::Error&) {
        return 0;  // the one acceptable failure
    }
    // Valid input: it must survive a round trip unchanged (small files only, to keep the rate up).
    if (size > (1 << 16)) return 0;
    static const std::string out_path = scratch("out");
    lsg::nn::save_safetensors(loaded, out_path, meta);
    lsg::nn::Metadata meta2;
    const auto again = lsg::nn::load_safetensors(out_path, &meta2);
    if (again.size() != loaded.size() || meta2 != meta) std::abort();
    for (const auto& [name, t] : loaded) {
        const lsg::Tensor& u = again.at(name);
        const size_t nbytes = static_cast<size_t>(t.numel()) * lsg::dtype_size(t.dtype());
        if (u.shape() != t.shape() || u.dtype() != t.dtype() ||
            (nbytes > 0 && std::memcmp(u.raw_data(), t.raw_data(), nbytes) != 0))
            std::abort();
    }
    return 0;
}

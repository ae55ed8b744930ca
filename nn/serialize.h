// Checkpoints as safetensors files, the format the Python ecosystem (safetensors, transformers,
// numpy with a few lines of json) reads:
//   [8 bytes: N, little-endian u64] [N bytes: JSON header] [raw little-endian tensor data]
// The header maps each name to {"dtype": "F32" | "F64" | "I64", "shape": [...], "data_offsets":
// [begin, end]} (byte offsets into the data section) plus an optional "__metadata__" object of
// string → string. Tensors are stored row-major, packed in name order with no gaps.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "lsgrad/core/tensor.h"
#include "lsgrad/nn/module.h"

namespace lsg::nn {

using Metadata = std::map<std::string, std::string>;

// Writes `tensors` (any device, dtype f32/f64/i64) to `path` atomically: the bytes go to
// "<path>.tmp.<pid>" in the same folder, are flushed to disk, and the file is renamed over `path`;
// on any failure the temporary file is removed, an existing `path` is left untouched, and
// lsg::Error names the path and the cause. A save killed outright (SIGKILL, a crash) cannot
// remove its temporary, so each save first removes "<path>.tmp.<pid>" files whose process is gone.
// (O_TMPFILE + linkat would avoid the name during the write, but linkat cannot replace an
// existing file, so the final step still needs a named temporary and a rename; the sweep covers
// both that window and filesystems without O_TMPFILE with one code path.)
void save_safetensors(const std::map<std::string, Tensor>& tensors, const std::filesystem::path& path,
                      const Metadata& metadata = {});

// Reads a safetensors file into CPU tensors (contiguous, not requiring grad). Validates the
// whole file first: truncation, a header length beyond the file, malformed JSON, an unknown
// dtype, a shape whose size × element size is not its byte length, offsets out of range,
// overlapping or leaving gaps in the data section; each is an lsg::Error naming the file and the
// problem. The "__metadata__" strings go to *metadata when it is given.
std::map<std::string, Tensor> load_safetensors(const std::filesystem::path& path, Metadata* metadata = nullptr);

// module.state_dict() to `path` (save_safetensors), and back through load_state_dict(strict).
void save(const Module& module, const std::filesystem::path& path, const Metadata& metadata = {});
LoadStateDictResult load(Module& module, const std::filesystem::path& path, bool strict = true);

}  // namespace lsg::nn

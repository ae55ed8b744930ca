// IDX files: the format of MNIST and Fashion-MNIST. A file is a header (two zero bytes, an element
// type byte, a dimension count byte, then that many big-endian uint32 dimensions) followed by the
// elements in row-major order. lsgrad reads only unsigned-byte elements (type 0x08), raw or gzip.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lsg::data {

// The contents of one IDX file. data.size() == product(shape); shape has at least one dimension.
// MNIST images are shape [n, 28, 28], labels [n].
struct IdxArray {
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
};

// Reads an IDX file of unsigned bytes, raw or gzip-compressed (told apart by the gzip magic bytes
// 1f 8b, not by the name). Returns shape = the header's dimensions, data = the product(shape) bytes
// that follow the 4 + 4 * ndims header bytes.
// Throws lsg::Error naming the path and the problem: missing or unreadable file, bad magic,
// unsupported element type, truncated header, truncated data (declared against actual byte count),
// bytes after the declared data, or a damaged gzip stream.
IdxArray read_idx(const std::string& path);

// Checks that images [n, ...] and labels [m] belong together: labels is 1-D and n == m.
// `what` names the pair in the message (e.g. "MNIST train"). Throws lsg::Error naming both counts.
void check_idx_pair(const IdxArray& images, const IdxArray& labels, const std::string& what);

// Checks that every label of labels [n] lies in [0, num_classes). Throws lsg::Error naming `what`,
// the index of the first bad label and its value.
void check_labels(const IdxArray& labels, int64_t num_classes, const std::string& what);

// The four files of an MNIST-style data set.
struct IdxFiles {
    std::string train_images, train_labels, test_images, test_labels;
};

// Locates the four MNIST / Fashion-MNIST files in `dir`. Each is accepted under its standard name
// (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
// t10k-labels-idx1-ubyte), its dotted variant (train-images.idx3-ubyte, ...), each with or without
// ".gz"; an uncompressed file is preferred over a compressed one. Throws lsg::Error naming the
// directory and, for every missing file, the names it looked for.
IdxFiles find_idx_files(const std::string& dir);

}  // namespace lsg::data

#!/usr/bin/env bash
# Makes Fashion-MNIST available and prints the folder holding its four IDX files.
#
#   scripts/fetch_fashion_mnist.sh
#
# The data set is Debian's package dataset-fashion-mnist, which puts the gzip-compressed IDX files
# (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
# t10k-labels-idx1-ubyte.gz) in /usr/share/datasets/fashion-mnist; lsg::data::read_idx reads them
# as they are. The package is installed with apt-get when they are missing (through sudo when not
# run as root); apt checks the package's signature and checksum.
# Standard output is the folder alone; progress and errors go to standard error.
set -euo pipefail

readonly package=dataset-fashion-mnist
readonly dir=/usr/share/datasets/fashion-mnist
readonly files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
                t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

die() {
  echo "fetch_fashion_mnist.sh: $*" >&2
  exit 1
}

present() {
  local f
  for f in "${files[@]}"; do
    [[ -f $dir/$f ]] || return 1
  done
}

if ! present; then
  command -v apt-get >/dev/null 2>&1 ||
    die "$dir is incomplete and apt-get is not available; install the Debian package $package"
  as_root=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      die "installing $package needs root; as root run: apt-get install -y $package"
    as_root=(sudo)
  fi
  echo "fetch_fashion_mnist.sh: installing $package" >&2
  # A fresh machine may have empty package lists: refresh them once if the first try fails.
  install=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
           apt-get install -y --no-install-recommends "$package")
  if ! "${install[@]}" >&2; then
    "${as_root[@]}" apt-get update >&2
    "${install[@]}" >&2 || die "apt-get install $package failed"
  fi
  present || die "$package is installed but $dir does not hold ${files[*]}"
fi

echo "$dir"

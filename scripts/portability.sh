#!/usr/bin/env bash
# The portability checks CI runs after the GCC suite:
#   1. a clang build (Debian's clang, CPU only, no -march: the run-time chosen AVX-512 / AVX2 paths and
#      the portable ones all compiled by clang) of the test program, and the whole suite under ctest;
#   2. an aarch64 cross-build (g++-aarch64-linux-gnu, cmake/aarch64-linux-gnu.cmake: portable paths
#      only) of the test program, and its loss tests (goldens, gradient checks, adversarial rows, the
#      subnormal checks) run under qemu-aarch64 on one thread. Left out there: K = 32000, whose cases
#      take minutes emulated (the portable path runs them natively: the golden cases run on every
#      instruction set of the building CPU).
# Installs what is missing first (as root or through sudo, with apt-get), including the arm64
# multiarch packages of zlib and GoogleTest. Builds only lsgrad_tests, in build/clang and
# build/aarch64.
#
#   scripts/portability.sh            both
#   scripts/portability.sh clang      only the clang build and suite
#   scripts/portability.sh aarch64    only the cross-build and its tests under qemu
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
jobs=$(nproc)
export OMP_WAIT_POLICY=PASSIVE

if (( EUID == 0 )); then sudo=(); else sudo=(sudo); fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need() {
  local missing=()
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  (( ${#missing[@]} == 0 )) && return 0
  echo "portability.sh: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
}

scripts/deps.sh

if [[ $what == all || $what == clang ]]; then
  need clang libomp-dev
  CC=clang CXX=clang++ cmake -S . -B build/clang -G Ninja -DCMAKE_BUILD_TYPE=Release -DLSGRAD_CUDA=OFF \
    -DLSGRAD_BUILD_BENCH=OFF -DLSGRAD_BUILD_EXAMPLES=OFF
  cmake --build build/clang -j "$jobs" --target lsgrad_tests
  ctest --test-dir build/clang -j "$jobs" --output-on-failure
fi

if [[ $what == all || $what == aarch64 ]]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    "${sudo[@]}" dpkg --add-architecture arm64
    "${sudo[@]}" apt-get update -qq
  fi
  need g++-aarch64-linux-gnu qemu-user zlib1g-dev:arm64 libgtest-dev:arm64
  cmake -S . -B build/aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DCMAKE_BUILD_TYPE=Release -DLSGRAD_CUDA=OFF -DLSGRAD_BUILD_BENCH=OFF -DLSGRAD_BUILD_EXAMPLES=OFF
  cmake --build build/aarch64 -j "$jobs" --target lsgrad_tests
  qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu -E OMP_NUM_THREADS=1 \
    build/aarch64/tests/lsgrad_tests \
    --gtest_filter='Loss*:*Loss*:*CrossEntropy*:Subnormal*:-LossFused.EqualsLogSoftmaxGather:*K32000'
fi

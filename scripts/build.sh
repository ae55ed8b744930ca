#!/usr/bin/env bash
# Installs what is missing (scripts/deps.sh), then configures and builds lsgrad in Release with
# CMake's presets: "release" (tuned for this CPU, CUDA when nvcc is found) into build/release, or
# with LSGRAD_CUDA=OFF the CPU-only "cpu" preset into build/cpu. Prints the build folder.
#
#   scripts/build.sh [TARGET...]        # e.g. scripts/build.sh mnist; no target: everything
#   LSGRAD_CUDA=OFF scripts/build.sh
#
# Progress goes to standard error; standard output is the build folder alone.
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$root"

scripts/deps.sh

preset=release
if [[ ${LSGRAD_CUDA:-} == OFF ]]; then
  preset=cpu
fi

targets=()
for t in "$@"; do targets+=(--target "$t"); done

cmake --preset "$preset" >&2
cmake --build --preset "$preset" -j"$(nproc)" "${targets[@]}" >&2
echo "$root/build/$preset"

#!/usr/bin/env bash
# The README's test command: installs what is missing (as root, with apt-get), fetches MNIST for the
# integration tests, configures, builds and runs every test with ctest.
#   scripts/test.sh                 CUDA compiled in when nvcc is found (CUDA tests skip without a GPU)
#   LSGRAD_CUDA=OFF scripts/test.sh a CPU-only build (preset "cpu")
#   LSGRAD_SANITIZE=ON scripts/test.sh   AddressSanitizer + UBSan build (preset "sanitize")
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

preset=release
if [[ "${LSGRAD_SANITIZE:-OFF}" == ON ]]; then
  preset=sanitize
elif [[ "${LSGRAD_CUDA:-AUTO}" == OFF ]]; then
  preset=cpu
fi

# The MNIST integration tests read the real data; they skip (saying why) if it cannot be fetched.
if data_dir=$(scripts/fetch_mnist.sh); then
  export LSGRAD_DATA_DIR="$data_dir"
else
  echo "warning: MNIST could not be fetched; its integration tests will be skipped" >&2
fi

# The label-smoothing study's quick run also reads Fashion-MNIST (a Debian package).
if ! scripts/fetch_fashion_mnist.sh >/dev/null; then
  echo "warning: Fashion-MNIST could not be installed; the study's quick test will be skipped" >&2
fi

jobs=$(nproc)
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
export OMP_WAIT_POLICY=PASSIVE
ctest --preset "$preset" -j "$jobs"

#!/usr/bin/env bash
# The README's first command: on a fresh Debian machine, installs what is missing, builds lsgrad
# and the example (the mnist target alone; the tests and benchmarks are built by the test command),
# fetches MNIST, and trains the CNN with label smoothing 0.1 for 3 epochs, writing reliability
# diagrams into results/ and printing the summary (accuracy, NLL, ECE before and after temperature
# scaling, seconds per epoch).
#
#   scripts/train_mnist.sh [more mnist options, e.g. --epochs 5 --metrics-out results/cnn.jsonl]
#
# Builds with CUDA (build/release) only when a GPU answers or LSGRAD_CUDA says so, else CPU-only
# (build/cpu); honours LSGRAD_DATA_DIR (where MNIST is cached).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$root"

# Idle OpenMP threads sleep instead of spinning: on a machine with few cores, spinning workers take
# the cores that the next parallel region needs (measured: an MLP epoch from 0.7 s to several
# seconds when anything else runs).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# Training runs on the CPU unless a GPU answers; without one, the CUDA kernels (a third of the
# build time) are not compiled. LSGRAD_CUDA set by the caller wins.
if [[ -z ${LSGRAD_CUDA:-} ]] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  export LSGRAD_CUDA=OFF
fi

build=$(scripts/build.sh mnist)
data=$(scripts/fetch_mnist.sh)
exec "$build/examples/mnist/mnist" --data "$data" --model cnn --loss ls --smoothing 0.1 --epochs 3 \
  --plot-dir results "$@"

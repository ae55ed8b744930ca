#!/usr/bin/env bash
# The README's first command: on a fresh Debian machine, installs what is missing, builds lsgrad
# and the example (the mnist target alone; the tests and benchmarks are built by the test command),
# fetches MNIST, and trains the CNN with label smoothing 0.1 for 3 epochs, writing reliability
# diagrams into results/ and printing the summary (accuracy, NLL, ECE before and after temperature
# scaling, seconds per epoch).
#
#   scripts/train_mnist.sh [more mnist options, e.g. --epochs 5 --metrics-out results/cnn.jsonl]
#
# Honours LSGRAD_CUDA=OFF (CPU-only build) and LSGRAD_DATA_DIR (where MNIST is cached).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$root"

build=$(scripts/build.sh mnist)
data=$(scripts/fetch_mnist.sh)
exec "$build/examples/mnist/mnist" --data "$data" --model cnn --loss ls --smoothing 0.1 --epochs 3 \
  --plot-dir results "$@"

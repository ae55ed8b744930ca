#!/usr/bin/env bash
# Reproduces "When Does Label Smoothing Help?" (Müller, Kornblith and Hinton 2019) on MNIST and
# Fashion-MNIST: installs what is missing, builds the study (CPU-only, the label_smoothing target
# alone), fetches both data sets, and runs it, writing docs/label_smoothing/ (README.md with the
# tables, the figures and a verdict per claim; results.json with every number and seed; the SVGs).
#
#   scripts/label_smoothing_study.sh                    # the full study: about 20 minutes on 2 idle cores
#   scripts/label_smoothing_study.sh --quick --out /tmp/ls   # a smoke run in about a minute
#
# Extra arguments go to the program (build/cpu/examples/label_smoothing/label_smoothing --help);
# --out defaults to docs/label_smoothing.
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$root"

# Idle OpenMP threads sleep instead of spinning (see README: spinning threads take the cores).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# The study trains small models on the CPU; the CUDA kernels are not needed for it.
export LSGRAD_CUDA=OFF

build=$(scripts/build.sh label_smoothing)
mnist=$(scripts/fetch_mnist.sh)
fashion=$(scripts/fetch_fashion_mnist.sh)

out=()
[[ " $* " == *" --out "* ]] || out=(--out docs/label_smoothing)
exec "$build/examples/label_smoothing/label_smoothing" --mnist "$mnist" --fashion "$fashion" "${out[@]}" "$@"

#!/usr/bin/env bash
# What the side-by-side benchmarks need beyond the build (scripts/deps.sh): OpenBLAS, as PyTorch's
# libblas.so.3 (Debian's python3-torch otherwise may run the reference BLAS) and as bench_gemm's
# yardstick. Installs only what is missing (as root or through sudo).
set -euo pipefail
packages=(libopenblas-pthread-dev python3-torch python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
(( ${#missing[@]} == 0 )) && exit 0
if (( EUID == 0 )); then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"

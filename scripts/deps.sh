#!/usr/bin/env bash
# Installs the Debian packages that building, testing and the MNIST example need, and only those
# that are missing: each is checked with dpkg first, so on a machine that has them all this does
# nothing (and never runs apt-get update).
#
#   scripts/deps.sh
#
# Installing needs root (or sudo); when packages are missing and neither is available, this says
# which and fails.
set -euo pipefail

# python3: the include-arrow check; librsvg2-bin: rsvg-convert, with which a test renders the
# reliability diagram to check its text; libopenmpi-dev, openmpi-bin: the MPI process group and
# mpirun, which launches its multi-process tests.
readonly packages=(build-essential cmake ninja-build libgtest-dev libgmock-dev libbenchmark-dev
                   libcli11-dev nlohmann-json3-dev zlib1g-dev npm python3 librsvg2-bin
                   libopenmpi-dev openmpi-bin)

# A package whose program may come from elsewhere: Node.js from NodeSource ships its own npm and
# conflicts with Debian's npm package, so a working `npm` command counts as installed.
declare -A provides=([npm]=npm)

missing=()
for p in "${packages[@]}"; do
  # dpkg -s also succeeds for a package that was removed but left its configuration behind, so the
  # status line must say "install ok installed".
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    continue
  fi
  if [[ -n ${provides[$p]:-} ]] && command -v "${provides[$p]}" >/dev/null 2>&1; then
    continue
  fi
  missing+=("$p")
done

if (( ${#missing[@]} == 0 )); then
  echo "deps.sh: all build packages are installed" >&2
  exit 0
fi

if (( EUID == 0 )); then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "deps.sh: missing packages: ${missing[*]}" >&2
  echo "deps.sh: run as root, or install them with: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >&2
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

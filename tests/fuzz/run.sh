#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang 14, ASan + UBSan) and runs each for SECONDS (default 60)
# on a copy of its committed seed corpus. Exits non-zero on any finding (crash, sanitizer report,
# leak, timeout, an exception other than lsg::Error); the reproducer is left under build/fuzz/.
#   tests/fuzz/run.sh [SECONDS]          what .ci/run calls
#   JOBS=1 nice tests/fuzz/run.sh 600    a longer run
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}

# The build packages, then clang 14 with libFuzzer and its OpenMP runtime, on a fresh Debian machine.
scripts/deps.sh
need=()
for pkg in clang-14 libfuzzer-14-dev libomp-14-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "tests/fuzz/run.sh: missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

build=build/fuzz
cmake -S tests/fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}"

status=0
for name in idx safetensors; do
  work="$build/corpus_$name"
  rm -rf "$work" && mkdir -p "$work" && cp tests/fuzz/seeds/$name/* "$work/"
  dict=()
  [[ -f tests/fuzz/$name.dict ]] && dict=(-dict=tests/fuzz/$name.dict)
  echo "== fuzz_$name for ${seconds} s"
  # One OpenMP thread: the readers are serial, and a fuzzer wants every core for executions.
  if ! OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$build/fuzz_$name" "$work" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/finding_${name}_" 2>"$build/fuzz_$name.log"; then
    echo "fuzz_$name: FINDING (see $build/fuzz_$name.log and $build/finding_${name}_*)" >&2
    tail -40 "$build/fuzz_$name.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$build/fuzz_$name.log" || true
  fi
done
exit $status

#!/usr/bin/env bash
# Runs tests/dist/dead_rank.cpp under mpirun and checks that a dying rank ends the job: a non-zero
# status within 30 s (the test's own limit is 60 s, so a hang is caught as a failure, not waited
# out) and a message that names the rank.
#
#   dead_rank.sh MPIEXEC PROGRAM NP MODE
set -uo pipefail
mpiexec=$1 program=$2 np=$3 mode=$4
victim=$((np - 1))
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
timeout 60 "$mpiexec" --allow-run-as-root --oversubscribe -np "$np" "$program" "$mode" >"$out" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$out"
echo "dead_rank.sh: $mode on $np ranks: exit status $rc after ${elapsed} s"
if (( rc == 0 )); then echo "FAIL: the job succeeded although rank $victim died"; exit 1; fi
if (( rc == 124 )); then echo "FAIL: the job hung (killed after 60 s)"; exit 1; fi
if (( elapsed > 30 )); then echo "FAIL: the job took ${elapsed} s to end (limit 30 s)"; exit 1; fi
if ! grep -Eq "rank $victim\b" "$out"; then echo "FAIL: no message names rank $victim"; exit 1; fi
echo "PASS"

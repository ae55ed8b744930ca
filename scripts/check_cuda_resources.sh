#!/usr/bin/env bash
# Compiles the fused loss kernels (cuda/loss.cu, cuda/linear_cross_entropy.cu) for each given GPU
# architecture with `nvcc --resource-usage`, prints registers, stack, spills and local memory per
# kernel, and fails when any kernel spills registers or uses local memory: the loss kernels are
# memory-bound, and a spill adds local-memory traffic to every row.
#
# usage: check_cuda_resources.sh NVCC SOURCE_DIR INCLUDE_DIR [ARCH...]   (ARCH default: 80 90)
#   INCLUDE_DIR holds the lsgrad/<folder> links a CMake build creates (build/<dir>/include).
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 NVCC SOURCE_DIR INCLUDE_DIR [ARCH...]" >&2
    exit 2
fi
nvcc=$1 src=$2 inc=$3
shift 3
archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=(80 90)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
printf '%-6s %-28s %5s %6s %6s %6s %5s\n' arch kernel regs stack spillS spillL lmem
for arch in "${archs[@]}"; do
    for file in loss linear_cross_entropy; do
        log=$work/${file}_sm_$arch.log
        # The flags of the library build that matter to code generation (cmake/LsgradCuda.cmake).
        if ! "$nvcc" -std=c++20 --expt-relaxed-constexpr -O3 -lineinfo -arch="sm_$arch" -I"$inc" \
            --resource-usage -c "$src/cuda/$file.cu" -o "$work/${file}_$arch.o" >"$log" 2>&1; then
            cat "$log" >&2
            echo "error: cuda/$file.cu does not compile for sm_$arch" >&2
            exit 1
        fi
        # ptxas prints, per kernel: "Function properties for NAME", then "N bytes stack frame, N bytes
        # spill stores, N bytes spill loads", then "Used N registers, ... [N bytes lmem, ...]".
        rows=$(awk -v arch="sm_$arch" '
            /Function properties for/ { name = $NF; next }
            /bytes stack frame/ && name != "" { stack = $1; st = $5; ld = $9; next }
            /Used [0-9]+ registers/ && name != "" {
                regs = 0; lmem = 0
                for (i = 1; i <= NF; ++i) {
                    if ($(i + 1) ~ /^registers/) regs = $i
                    if ($(i + 1) == "bytes" && $(i + 2) ~ /^lmem/) lmem = $i
                }
                print arch, name, regs, stack, st, ld, lmem
                name = ""
            }' "$log")
        if [[ -z $rows ]]; then
            cat "$log" >&2
            echo "error: no resource usage reported for cuda/$file.cu on sm_$arch" >&2
            exit 1
        fi
        while read -r a name regs stack st ld lmem; do
            # lsg::cuda::(anonymous namespace)::ce_index_kernel<float>(...) -> ce_index_kernel<float>
            short=$name
            if command -v c++filt >/dev/null; then
                short=$(echo "$name" | c++filt | sed -E 's/\(anonymous namespace\):://g; s/^void //; s/\(.*$//; s/.*:://')
            fi
            printf '%-6s %-28s %5s %6s %6s %6s %5s\n' "$a" "$short" "$regs" "$stack" "$st" "$ld" "$lmem"
            if [[ $st != 0 || $ld != 0 || $lmem != 0 || $stack != 0 ]]; then
                echo "FAIL: $short on $a spills or uses local memory" >&2
                status=1
            fi
        done <<<"$rows"
    done
done
exit $status

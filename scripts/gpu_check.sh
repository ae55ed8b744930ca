#!/usr/bin/env bash
# The GPU check: proves lsgrad's CUDA backend on a real GPU in one call of a few minutes.
#
#   scripts/gpu_check.sh --prepare   On a machine with the build dependencies (no GPU needed):
#                                    builds the CUDA tree for one architecture (sm_90, or
#                                    LSGRAD_GPU_ARCH) into build/gpu and packs what the check runs
#                                    into build/gpu-bundle: the test, benchmark and MNIST programs,
#                                    the shared libraries the GPU machine may lack, and MNIST.
#   scripts/gpu_check.sh             Runs the check. With a GPU: every Cuda* test, compute-sanitizer
#                                    (memcheck, racecheck) over them, the CPU-vs-GPU loss table, one
#                                    MNIST CNN epoch on the GPU. Without one: says so in one line,
#                                    then checks what it can (the bundle builds and stays under the
#                                    carry limit, the loss kernels' resource usage, every CUDA case
#                                    skips with its reason) and exits 0.
#
# Results go to $OUT (set on the GPU machine), else results/gpu_check: summary.md and the logs.
# Each step has its own time limit, so a hang in one is reported and the rest still runs; the limits
# add up to 8 minutes. docs/gpu.md gives the one call that runs it on a lent GPU.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$root"

arch=${LSGRAD_GPU_ARCH:-90}
bundle=$root/build/gpu-bundle
readonly carry_limit=$((64 * 1024 * 1024))

# Builds build/gpu (CUDA for sm_$arch only, static C++ runtime and CUDA runtime) and packs the
# bundle. The GPU machine has CUDA 13 (cuBLAS), a C library and Python, but no GoogleTest, Google
# Benchmark, CLI11 or zlib, so those are linked in statically or packed beside the programs.
prepare() {
    scripts/deps.sh
    cmake --preset gpu -DCMAKE_CUDA_ARCHITECTURES="$arch" >&2
    cmake --build --preset gpu -j "$(nproc)" --target lsgrad_tests bench_loss bench_loss_cuda mnist >&2
    local build=$root/build/gpu
    rm -rf "$bundle"
    mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/data/mnist"
    cp "$build/tests/lsgrad_tests" "$build/bench/bench_loss" "$build/bench/bench_loss_cuda" \
       "$build/examples/mnist/mnist" "$bundle/bin/"
    # Host symbols are not needed there; the device code keeps its line table (-lineinfo) for
    # compute-sanitizer's reports.
    strip --strip-unneeded "$bundle"/bin/*
    # Shared libraries the programs load that the GPU machine may lack: pack them. The C library,
    # the C++ runtime (a newer one is there) and CUDA's own come from the GPU machine.
    local lib
    for lib in $(ldd "$bundle"/bin/* | awk '$3 ~ /^\// {print $3}' | sort -u); do
        case $(basename "$lib") in
            libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
            libcuda.so*|libcublas*|libcudart*) ;;
            *) cp -L "$lib" "$bundle/lib/" ;;
        esac
    done
    # MNIST compressed (11 MB instead of 55): the IDX reader takes .gz files as they are.
    local mnist f
    mnist=$(scripts/fetch_mnist.sh)
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [[ -f $mnist/$f.gz ]]; then
            cp "$mnist/$f.gz" "$bundle/data/mnist/"
        else
            gzip -c "$mnist/$f" >"$bundle/data/mnist/$f.gz"
        fi
    done
    {
        echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
        echo "arch sm_$arch"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
    } >"$bundle/MANIFEST"
    local bytes
    bytes=$(du -sb "$bundle" | cut -f1)
    echo "gpu_check: bundle $bundle: $((bytes / 1024 / 1024)) MiB of the $((carry_limit / 1024 / 1024)) MiB carry limit" >&2
    if ((bytes > carry_limit)); then
        echo "gpu_check: the bundle is over the carry limit; removed, so no later run takes it" >&2
        rm -rf "$bundle"
        return 1
    fi
    echo "$bundle"
}

if [[ ${1:-} == --prepare ]]; then
    prepare
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/gpu_check.sh [--prepare]" >&2
    exit 2
fi

out=${OUT:-$root/results/gpu_check}
mkdir -p "$out"
summary=$out/summary.md
export OMP_WAIT_POLICY=PASSIVE

# The GPU machine's CUDA libraries may live outside the loader's path: add the folders that hold
# libcublas (the toolkit's, or the one Python's CUDA wheels bring).
cuda_library_path() {
    local d dirs=()
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
             /usr/local/lib/python3*/dist-packages/nvidia/cu13/lib /opt/*/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
             /opt/*/.venv/lib/python3*/site-packages/nvidia/cublas/lib; do
        [[ -e $d/libcublas.so.13 ]] && dirs+=("$d")
    done
    local IFS=:
    echo "${dirs[*]}"
}
# Only the bundle's programs see the packed libraries (python3 and the tools keep their own).
bundle_env=(env "LD_LIBRARY_PATH=$bundle/lib:$(cuda_library_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")

# Runs "$@" with a time limit, its output to $log_dir/NAME.log ($out unless the caller sets
# log_dir), and adds its status to the summary; a failure's last lines go into the summary too.
step() {
    local name=$1 limit=$2
    shift 2
    local log=${log_dir:-$out}/$name.log start=$SECONDS status=0
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || status=$?
    local took=$((SECONDS - start))
    case $status in
        0) echo "- $name: ok (${took} s)" >>"$summary" ;;
        124|137) echo "- $name: **timed out** after ${limit} s" >>"$summary" ;;
        *) echo "- $name: **failed** with status $status (${took} s)" >>"$summary" ;;
    esac
    if ((status != 0)); then
        { echo '```'; tail -n 20 "$log"; echo '```'; } >>"$summary"
    fi
    return 0
}

# The GPU machine returns at most eight files from $OUT: the summary, the three test logs, the two
# benchmark JSON files and the training log stay there; the rest goes to a scratch folder.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
    echo "gpu_check: no GPU and no nvcc here: nothing of the CUDA backend can be built or checked"
    exit 0
fi
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)
if [[ -z $gpu ]]; then
    echo "gpu_check: no CUDA device answers (nvidia-smi finds none): checking the CUDA build, its size and the kernels' resource usage only"
    {
        echo "# GPU check: no GPU"
        echo
        echo "No CUDA device answered on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ); nothing was timed."
        echo
    } >"$summary"
    [[ -x $bundle/bin/lsgrad_tests ]] || prepare >/dev/null
    {
        echo "- bundle: $(du -sh "$bundle" | cut -f1) ($(head -n 1 "$bundle/MANIFEST"))"
    } >>"$summary"
    step resource_usage 600 scripts/check_cuda_resources.sh /usr/local/cuda/bin/nvcc "$root" "$root/build/gpu/include" "$arch"
    # Every CUDA case must report itself skipped with the reason, not fail.
    step cuda_tests_skip 300 "${bundle_env[@]}" "$bundle/bin/lsgrad_tests" --gtest_filter='Cuda*' --gtest_brief=1
    step bench_cuda_skip 120 "${bundle_env[@]}" "$bundle/bin/bench_loss_cuda" --benchmark_filter='N:256/' \
        --benchmark_format=json --benchmark_out="$scratch/bench_loss_cuda.json"
    grep -q 'skipped: ' "$scratch/bench_loss_cuda.json" ||
        echo "- bench_cuda_skip: **no skip reason reported**" >>"$summary"
    cat "$summary"
    grep -q '\*\*' "$summary" && exit 1
    exit 0
fi

if [[ ! -x $bundle/bin/lsgrad_tests ]]; then
    echo "gpu_check: no bundle at $bundle: run scripts/gpu_check.sh --prepare on the build machine and carry build/gpu-bundle" >&2
    exit 1
fi

{
    echo "# GPU check: $gpu"
    echo
    echo "$(date -u +%Y-%m-%d), bundle $(head -n 1 "$bundle/MANIFEST"), $(nproc) CPU cores: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
    echo
} >"$summary"

# 1. Every CUDA test case: the CPU test table run on the GPU and compared.
step cuda_tests 80 "${bundle_env[@]}" "$bundle/bin/lsgrad_tests" --gtest_filter='Cuda*' --gtest_output="json:$scratch/cuda_tests.json"
# 2. The same cases under compute-sanitizer: out-of-bounds and misaligned accesses, then shared
#    memory races. The table covers every loss kernel and the optimizer updates.
if command -v compute-sanitizer >/dev/null; then
    step memcheck 90 "${bundle_env[@]}" compute-sanitizer --tool memcheck --error-exitcode 1 \
        "$bundle/bin/lsgrad_tests" --gtest_filter='Cuda*' --gtest_brief=1
    step racecheck 80 "${bundle_env[@]}" compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 1 \
        "$bundle/bin/lsgrad_tests" --gtest_filter='Cuda*' --gtest_brief=1
else
    echo "- compute-sanitizer: not on this machine's PATH" >>"$summary"
fi
# 3. The fused cross-entropy on the GPU beside the CPU, same shapes, then one table.
log_dir=$scratch step bench_gpu 90 "${bundle_env[@]}" "$bundle/bin/bench_loss_cuda" --benchmark_repetitions=5 \
    --benchmark_out="$out/bench_loss_cuda.json"
log_dir=$scratch step bench_cpu 90 "${bundle_env[@]}" "$bundle/bin/bench_loss" --benchmark_filter='BM_CrossEntropy/fwd(bwd)?/.*/threads:2/' \
    --benchmark_repetitions=3 --benchmark_out="$out/bench_loss_cpu.json"
# 4. Training on the GPU: one epoch of the MNIST CNN.
step mnist_cnn 50 "${bundle_env[@]}" "$bundle/bin/mnist" --model cnn --device cuda --epochs 1 \
    --data "$bundle/data/mnist" --metrics-out "$scratch/mnist_cnn.jsonl"

{
    echo
    if [[ -s $scratch/cuda_tests.json ]]; then
        python3 - "$scratch/cuda_tests.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
cases = [(f"{s['name']}.{t['name']}", t) for s in r["testsuites"] for t in s["testsuite"]]
failed = [name for name, t in cases if t.get("failures")]
skipped = [name for name, t in cases if t.get("result") == "SKIPPED"]
# On a GPU machine a skipped CUDA case means the device did not answer the program: say so loudly.
print(f"Cuda* tests: {len(cases) - len(failed) - len(skipped)} passed, {len(failed)} failed, "
      f"{len(skipped)} skipped" + (" (**a GPU is present: nothing should skip**)" if skipped else ""))
for name in failed[:20]:
    print(f"- failed: {name}")
PY
    fi
    echo
    python3 bench/loss_cpu_vs_gpu.py --cpu "$out/bench_loss_cpu.json" --gpu "$out/bench_loss_cuda.json" || true
    echo
    echo "MNIST CNN, one epoch on the GPU:"
    echo '```'
    grep -E '^(MNIST test|accuracy|NLL|ECE|seconds per epoch)' "$out/mnist_cnn.log" || echo "(no result: see mnist_cnn.log)"
    echo '```'
} >>"$summary" 2>&1
cat "$summary"

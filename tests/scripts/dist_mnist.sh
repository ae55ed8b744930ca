#!/usr/bin/env bash
# The MNIST example trained data-parallel against one process, on the real data (skipped, status
# 77, when MNIST is not there):
#  1. one MLP epoch on 2 ranks × batch 64 reaches the test accuracy of 1 process × batch 128
#     within 0.2 % (the weights agree to rounding; accuracy is what a user sees);
#  2. with --checkpoint/--stop-after 1 and then --resume, 2 ranks end the second epoch with the
#     same metrics as 2 ranks run without a break, and only rank 0 printed and wrote them.
#
#   dist_mnist.sh MPIEXEC MNIST
set -euo pipefail
mpiexec=$1 mnist=$2
data=${LSGRAD_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lsgrad/mnist}
if ! compgen -G "$data/train-images*" >/dev/null; then
  echo "SKIP: MNIST is not in $data (scripts/fetch_mnist.sh puts it there)"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mpirun=("$mpiexec" --allow-run-as-root --oversubscribe -np 2)
common=(--data "$data" --model mlp --holdout 0 --threads 1 --seed 3)

# 1. One epoch on the first 12 800 images (100 batches of 128), tested on 2000.
one=(--epochs 1 --train-limit 12800 --test-limit 2000)
"$mnist" "${common[@]}" "${one[@]}" --batch-size 128 --metrics-out "$dir/alone.jsonl" >"$dir/alone.log"
"${mpirun[@]}" "$mnist" "${common[@]}" "${one[@]}" --dist mpi --batch-size 64 --metrics-out "$dir/ddp.jsonl" \
  >"$dir/ddp.log"
python3 - "$dir/alone.jsonl" "$dir/ddp.jsonl" <<'PY'
import json, sys
alone, ddp = (json.loads(open(p).read().splitlines()[-1]) for p in sys.argv[1:3])
diff = abs(alone["test_acc"] - ddp["test_acc"])
print(f"test accuracy: 1 process x batch 128 {alone['test_acc']:.4f}, 2 ranks x batch 64 {ddp['test_acc']:.4f}, "
      f"difference {100 * diff:.3f} %")
sys.exit(0 if diff <= 0.002 else 1)
PY
grep -q "data-parallel over 2 mpi processes" "$dir/ddp.log"
# Only rank 0 prints: one header line, not two.
test "$(grep -c "^model mlp" "$dir/ddp.log")" = 1

# 2. Two epochs on 3200 images, straight and as 1 + --resume 1.
two=(--epochs 2 --train-limit 3200 --test-limit 1000 --dist mpi --batch-size 64)
"${mpirun[@]}" "$mnist" "${common[@]}" "${two[@]}" --metrics-out "$dir/full.jsonl" >"$dir/full.log"
"${mpirun[@]}" "$mnist" "${common[@]}" "${two[@]}" --checkpoint "$dir/ck.safetensors" --stop-after 1 \
  --metrics-out "$dir/part1.jsonl" >"$dir/part1.log"
"${mpirun[@]}" "$mnist" "${common[@]}" "${two[@]}" --resume "$dir/ck.safetensors" \
  --metrics-out "$dir/part2.jsonl" >"$dir/part2.log"
python3 - "$dir/full.jsonl" "$dir/part1.jsonl" "$dir/part2.jsonl" <<'PY'
import json, sys
def lines(p):
    out = []
    for line in open(p).read().splitlines():
        d = json.loads(line)
        d.pop("seconds")
        out.append(d)
    return out
full, parts = lines(sys.argv[1]), lines(sys.argv[2]) + lines(sys.argv[3])
print("uninterrupted:", full)
print("resumed:      ", parts)
sys.exit(0 if full == parts else 1)
PY
echo PASS

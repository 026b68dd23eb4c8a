#!/usr/bin/env bash
# Run ON THE GPU MACHINE after build_cuda.sh: where the time of one decode
# step goes, kernel by kernel. ncu times every kernel of a short decode run
# (graph nodes one by one, caches and clocks left alone); the last step's
# kernels are then summed by name.
#   scripts/device/profile_step.sh BATCH CONTEXT [POLICY]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.device-deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BATCH=${1:-1} CONTEXT=${2:-4096} POLICY=${3:-off}
Q=/tmp/qwen2.5-1.5b-shape
[ -f "$Q/model.safetensors" ] || python3 scripts/make_random_model.py "$Q" > /dev/null
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
CSV="$OUT/profile_b${BATCH}_${CONTEXT}.csv"
"$NCU" --clock-control none --cache-control none --graph-profiling node --csv --print-units base \
  --metrics gpu__time_duration.sum build-gpu/bench/bench_cuda_decode --model "$Q" --batch "$BATCH" \
  --context "$CONTEXT" --chunk "$CONTEXT" --steps 3 --policy "$POLICY" > "$CSV" 2> "$OUT/profile_err.txt"
python3 - "$CSV" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, rows = rows[0], rows[1:]
ki, ni, vi = head.index("ID"), head.index("Kernel Name"), head.index("Metric Value")
kern = [(int(r[ki]), r[ni], float(r[vi].replace(",", ""))) for r in rows]
# One decode step: after the previous step's last sampling kernel (greedy: argmax_slices, argmax_tokens).
marks = [i for i, k in enumerate(kern) if "sampl" in k[1] or "argmax" in k[1]]
step = kern[marks[-3] + 1: marks[-1] + 1] if len(marks) >= 3 else kern[-300:]
by = collections.defaultdict(lambda: [0, 0.0])
for _, n, v in step:
    by[n[:90]][0] += 1; by[n[:90]][1] += v
tot = sum(v for _, _, v in step)
print(f"{len(step)} kernels, {tot/1e3:.1f} us of kernel time in one step")
for n, (c, v) in sorted(by.items(), key=lambda x: -x[1][1]):
    print(f"{v/1e3:9.1f} us {c:4d}x {v/c/1e3:7.2f} us  {n}")
PY

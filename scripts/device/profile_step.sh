#!/usr/bin/env bash
# Run ON THE GPU MACHINE after build_cuda.sh: where the time of one decode
# step goes, kernel by kernel. ncu times every kernel of a short decode run
# (the decode steps only: bench_cuda_decode brackets them with
# cudaProfilerStart/Stop; graph nodes one by one, caches and clocks left
# alone); the last step's kernels are then summed by name.
#   scripts/device/profile_step.sh BATCH CONTEXT [POLICY]
# METRICS="m1,m2" adds ncu metrics, printed per kernel name as the mean over
# its launches (ncu then replays each kernel once per pass, caches flushed
# between passes, so the times of that run are not those of the plain one).
# BENCH=path runs another bench_cuda_decode binary (default: $B's, as
# prebuilt_env.sh sets it, else build-gpu's); the environment passes through
# (LAGSERVE_CUDA_GEMV=stream, say).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.device-deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BATCH=${1:-1} CONTEXT=${2:-4096} POLICY=${3:-off}
Q=/tmp/qwen2.5-1.5b-shape
[ -f "$Q/model.safetensors" ] || python3 scripts/make_random_model.py "$Q" > /dev/null
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
CSV="/tmp/profile_b${BATCH}_${CONTEXT}.csv"
CACHE=none
[ -n "${METRICS:-}" ] && CACHE=all
"$NCU" --profile-from-start off --clock-control none --cache-control "$CACHE" --graph-profiling node --csv \
  --print-units base --metrics "gpu__time_duration.sum${METRICS:+,$METRICS}" ${BENCH:-${B:-build-gpu}/bench/bench_cuda_decode} \
  --model "$Q" --batch "$BATCH" --context "$CONTEXT" --chunk "$CONTEXT" --steps 3 --policy "$POLICY" \
  > "$CSV" 2> /tmp/profile_err.txt || tail -5 /tmp/profile_err.txt
python3 - "$CSV" <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, rows = rows[0], rows[1:]
ki, ni, mi, vi = (head.index(c) for c in ("ID", "Kernel Name", "Metric Name", "Metric Value"))
kern = {}  # ID -> (name, {metric: value}), in launch order
for r in rows:
    k = kern.setdefault(int(r[ki]), (r[ni], {}))
    try:
        k[1][r[mi]] = float(r[vi].replace(",", ""))
    except ValueError:
        pass
kern = [kern[i] for i in sorted(kern)]
# One decode step: after the previous step's last sampling kernel (greedy: argmax_slices, argmax_tokens).
marks = [i for i, k in enumerate(kern) if "sampl" in k[0] or "argmax" in k[0]]
step = kern[marks[-3] + 1: marks[-1] + 1] if len(marks) >= 3 else kern[-300:]
metrics = sorted({m for _, ms in step for m in ms} - {"gpu__time_duration.sum"})
by = collections.defaultdict(list)
for n, ms in step:
    by[re.sub(r"void |lagserve::kernels::cuda::|\(anonymous namespace\)::|\(Args\)$", "", n)[:90]].append(ms)
tot = sum(ms.get("gpu__time_duration.sum", 0) for _, ms in step)
print(f"{len(step)} kernels, {tot/1e3:.1f} us of kernel time in one step")
if metrics:
    print("columns: " + ", ".join(metrics))
for n, runs in sorted(by.items(), key=lambda x: -sum(m.get("gpu__time_duration.sum", 0) for m in x[1])):
    t = sum(m.get("gpu__time_duration.sum", 0) for m in runs)
    extra = " ".join(f"{sum(m.get(x, 0) for m in runs) / len(runs):.4g}" for x in metrics)
    print(f"{t/1e3:9.1f} us {len(runs):4d}x {t/len(runs)/1e3:7.2f} us  {extra}  {n}")
PY

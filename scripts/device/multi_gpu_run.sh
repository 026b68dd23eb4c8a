#!/usr/bin/env bash
# Issue 10, ON A MACHINE WITH 2+ GPUs (device kind nvidia-h100-x2 or larger),
# after the default model's halves are joined as cuda_run.sh needs (two calls:
# docs/cuda.md), carrying .device-deps:
#   export OUT; scripts/device/multi_gpu_run.sh
# 1. test_tensor_parallel: its NCCL test runs with 2+ GPUs;
# 2. decode at B=32, 32K on the Qwen2.5-1.5B shape, policy off and
#    ratio=0.25, at N = 1, 2 and 4 (as many as present; 4 replicates its 2 KV heads);
# 3. the all-reduce time of one such step at N = 2, 4, 8 (as many as present);
# 4. data-parallel LRSA training, one GPU per process: 2 processes of batch 1
#    against 1 of batch 2 (the same global batch: the loss curves must match)
#    and 1 of batch 1 (scaling efficiency = 2-process tokens/s / 2 x that).
# Writes logs and a summary to $OUT. PARTS (default "build tests decode
# allreduce dp") picks what runs; on the CPU, the data-parallel part alone:
#   B=build PARTS=dp DP_DEVICE=cpu DP_LENGTH=256 DP_STEPS=3 scripts/device/multi_gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
B="${B:-build-gpu}"
PARTS="${PARTS:-build tests decode allreduce dp}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
DP_MODEL="${DP_MODEL:-default}"
DP_DEVICE="${DP_DEVICE:-cuda}"
DP_LENGTH="${DP_LENGTH:-4096}"
DP_STEPS="${DP_STEPS:-40}"
if compgen -G ".device-deps/*.deb" > /dev/null; then source scripts/device/deps_env.sh; fi
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
echo "GPUs: $NGPU" | tee "$OUT/summary.txt"
if has build; then
  scripts/device/join_model.sh || exit 1
  TARGETS="lagtrain lagserve test_tensor_parallel bench_cuda_decode bench_tp_allreduce" \
    scripts/device/build_trainer.sh > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
fi

if has tests; then
  "$B/tests/test_tensor_parallel" > "$OUT/test_tensor_parallel.log" 2>&1
  echo "test_tensor_parallel: exit $? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/test_tensor_parallel.log" | tr '\n' ' ')" \
    | tee -a "$OUT/summary.txt"
fi

Q=/tmp/qwen2.5-1.5b-shape
if has decode; then
  [ -f "$Q/model.safetensors" ] || python3 scripts/make_random_model.py "$Q" > "$OUT/make_model.txt" 2>&1
fi
for tp in 1 2 4; do
  has decode && [ "$tp" -le "$NGPU" ] || break
  "$B/bench/bench_cuda_decode" --model "$Q" --batch 32 --context 32768 --steps 256 \
    --policy off --policy sink=16,lag=128,ratio=0.25 --tensor-parallel-size $tp > "$OUT/bench_decode_tp$tp.txt" 2>&1
  echo "decode, tensor parallel $tp:" | tee -a "$OUT/summary.txt"
  grep -E '^\|' "$OUT/bench_decode_tp$tp.txt" | tee -a "$OUT/summary.txt"
done
for n in 2 4 8; do
  has allreduce && [ "$n" -le "$NGPU" ] || break
  "$B/bench/bench_tp_allreduce" --gpus $n --batch 32 --d-model 1536 --layers 28 | tee -a "$OUT/summary.txt"
done

has dp || exit 0
W=/tmp/dp-train
rm -rf "$W" && mkdir -p "$W"
"$B/trainer/lagtrain" make-data passkey --model "$DP_MODEL" --length "$DP_LENGTH" --count 128 --seed 1 \
  --out "$W/train.jsonl" > /dev/null
train() {  # out batch log [env...]
  local out=$1 batch=$2 log=$3; shift 3
  env "$@" "$B/trainer/lagtrain" train --model "$DP_MODEL" --data "$W/train.jsonl" --out "$W/$out" \
    --attention lrsa --lagkv sink=16,lag=128,ratio=0.25 --seq-len "$DP_LENGTH" --batch-size "$batch" \
    --steps "$DP_STEPS" --warmup 4 --lr 1e-4 --seed 1 --device "$DP_DEVICE" --no-progress --log-every 1 \
    > "$OUT/dp_$log.log" 2>&1 || echo "lagtrain $log: exit $? (see dp_$log.log)"
}
train one_b2 2 one_b2
train one_b1 1 one_b1
DP_ENV="WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517"
train two_b1 1 rank1 $DP_ENV RANK=1 LOCAL_RANK=1 &
train two_b1 1 rank0 $DP_ENV RANK=0 LOCAL_RANK=0
wait
python3 - "$W" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
def log(name):
    return [json.loads(l) for l in open(f"{sys.argv[1]}/{name}/train_log.jsonl") if '"loss"' in l]
ref, one, two = log("one_b2"), log("one_b1"), log("two_b1")
worst = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(two, ref))
print(f"data parallel: 2 processes x batch 1 vs 1 x batch 2 over {len(ref)} steps: loss within {worst:.2e} (relative)")
tps1, tps2 = one[-1]["tokens_per_s"], two[-1]["tokens_per_s"]
print(f"training tokens/s: 1 process {tps1:.0f}, 2 processes {tps2:.0f}: scaling efficiency {tps2 / (2 * tps1):.1%}")
PY

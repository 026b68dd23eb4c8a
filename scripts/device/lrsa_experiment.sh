#!/usr/bin/env bash
# Issue 8's experiment: fine-tune the default model twice from the same start
# with the same data, steps, seed and learning rate, once with LRSA and once
# with full attention, then evaluate both and the untuned model through the
# served path (`lagserve eval`) with the policy off and at 2x, 4x and 8x, at
# several context lengths. Writes to $OUT: eval.csv, eval.png, the two
# train_log.jsonl files, commands.txt (every command, as run).
#   Run ON THE GPU MACHINE after a build of lagtrain and lagserve with CUDA:
#     scripts/device/build_trainer.sh && cmake --build build-gpu --target lagserve
#   (the default model joined as cuda_run.sh does), or on the CPU with
#   B=build DEVICE=cpu and small settings, e.g.
#   B=build DEVICE=cpu STEPS=2 TRAIN_LEN=256 TRAIN_COUNT=4 LENGTHS=256 SAMPLES=2 scripts/device/lrsa_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
B="${B:-build-gpu}"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-default}"
POLICY="${POLICY:-sink=16,lag=128,ratio=0.25}"
TRAIN_LEN="${TRAIN_LEN:-4096}"       # tokens per training sample
TRAIN_COUNT="${TRAIN_COUNT:-100}"    # samples per task (three tasks)
STEPS="${STEPS:-200}"
LR="${LR:-5e-5}"
BATCH="${BATCH:-1}"
SEED="${SEED:-1}"
LENGTHS="${LENGTHS:-2048,4096,8176}"  # 8176 + answer stays inside the 8192-token context
SAMPLES="${SAMPLES:-20}"
W="${WORK:-/tmp/lrsa-experiment}"
mkdir -p "$OUT" "$W"
: > "$OUT/commands.txt"
run() { echo "$*" >> "$OUT/commands.txt"; "$@"; }

: > "$W/train.jsonl"
for task in passkey multikey facts; do
  run "$B/trainer/lagtrain" make-data "$task" --model "$MODEL" --length "$TRAIN_LEN" --count "$TRAIN_COUNT" \
    --seed "$SEED" --out "$W/$task.jsonl"
  cat "$W/$task.jsonl" >> "$W/train.jsonl"
done
for attention in lrsa full; do
  run "$B/trainer/lagtrain" train --model "$MODEL" --data "$W/train.jsonl" --out "$W/$attention" \
    --attention "$attention" --lagkv "$POLICY" --seq-len "$TRAIN_LEN" --batch-size "$BATCH" \
    --steps "$STEPS" --warmup $(( STEPS / 10 )) --lr "$LR" --seed "$SEED" --device "$DEVICE" \
    --no-progress --log-every $(( STEPS / 10 > 0 ? STEPS / 10 : 1 ))
  cp "$W/$attention/train_log.jsonl" "$OUT/train_log_$attention.jsonl"
done
run "$B/server/lagserve" eval --model "$MODEL" --model "$W/lrsa" --model "$W/full" \
  --task passkey,multikey,facts --length "$LENGTHS" --samples "$SAMPLES" \
  --policy off --policy 2x --policy 4x --policy 8x --device "$DEVICE" \
  --csv "$OUT/eval.csv" --plot "$OUT/eval.png"
for attention in lrsa full; do
  python3 - "$OUT/train_log_$attention.jsonl" "$attention" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(f"{sys.argv[2]}: {len(rows)} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}, "
      f"{rows[-1]['tokens_per_s']:.0f} training tokens/s")
PY
done

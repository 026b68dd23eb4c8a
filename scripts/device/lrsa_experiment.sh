#!/usr/bin/env bash
# Issue 8's experiment: fine-tune the default model twice from the same start
# with the same data, steps, seed and learning rate, once with LRSA and once
# with full attention, then evaluate both and the untuned model through the
# served path (`lagserve eval`) with the policy off and at 2x, 4x, 8x and 16x (POLICIES), at
# several context lengths. Writes to $OUT: eval.csv, eval.png, the two
# train_log.jsonl files, commands.txt (every command, as run), summary.txt.
#
# Resumable: each phase leaves its output in $WORK and is skipped when that
# output is there, so the experiment can span device calls while the machine
# stays warm (/tmp and build-gpu outlive a call; see docs/results.md).
# PHASES (default "data lrsa full eval") picks what one call runs.
#
#   Run ON THE GPU MACHINE after a build of lagtrain and lagserve with CUDA:
#     TARGETS="lagtrain lagserve" scripts/device/build_trainer.sh
#   (the default model joined as cuda_run.sh does), or on the CPU with
#   B=build DEVICE=cpu and small settings, e.g.
#   B=build DEVICE=cpu STEPS=2 TRAIN_LENGTHS=256 TRAIN_COUNT=4 SEQ_LEN=512 LENGTHS=256 SAMPLES=2 \
#     scripts/device/lrsa_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
B="${B:-build-gpu}"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-default}"
POLICY="${POLICY:-sink=16,lag=128,ratio=0.25}"  # LRSA's mask; 4x
TRAIN_LENGTHS="${TRAIN_LENGTHS:-2048,4096,8176}"  # prompt tokens of the training samples
TRAIN_COUNT="${TRAIN_COUNT:-100}"   # samples per task and length
SEQ_LEN="${SEQ_LEN:-8192}"          # samples are packed into sequences of this length
STEPS="${STEPS:-600}"
LR="${LR:-1e-4}"
BATCH="${BATCH:-1}"
SEED="${SEED:-1}"                   # training data and order; eval draws with --seed EVAL_SEED
EVAL_SEED="${EVAL_SEED:-7}"
LENGTHS="${LENGTHS:-2048,4096,8176}"  # 8176 + answer stays inside the 8192-token context
SAMPLES="${SAMPLES:-40}"
POLICIES="${POLICIES:-off 2x 4x 8x 16x}"  # 16x: past the paper's range, where the gap should open
PHASES="${PHASES:-data lrsa full eval}"
W="${WORK:-/tmp/lrsa-experiment}"
mkdir -p "$OUT" "$W"
# The carried Abseil and PCRE2 (every call that runs the binaries carries .device-deps).
if compgen -G ".device-deps/*.deb" > /dev/null; then source scripts/device/deps_env.sh; fi
[ "$MODEL" != default ] || [ "$DEVICE" = cpu ] || scripts/device/join_model.sh
run() { echo "$*" >> "$OUT/commands.txt"; echo "$*" >> "$W/commands.txt"; "$@"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }

if has data && [ ! -f "$W/train.jsonl" ]; then
  : > "$W/train.part"
  for task in passkey multikey facts; do
    for len in ${TRAIN_LENGTHS//,/ }; do
      run "$B/trainer/lagtrain" make-data "$task" --model "$MODEL" --length "$len" --count "$TRAIN_COUNT" \
        --seed "$SEED" --out "$W/$task-$len.jsonl"
      cat "$W/$task-$len.jsonl" >> "$W/train.part"
    done
  done
  mv "$W/train.part" "$W/train.jsonl"
fi
for attention in lrsa full; do
  has "$attention" || continue
  if [ ! -f "$W/$attention/config.json" ]; then
    run "$B/trainer/lagtrain" train --model "$MODEL" --data "$W/train.jsonl" --out "$W/$attention" \
      --attention "$attention" --lagkv "$POLICY" --seq-len "$SEQ_LEN" --batch-size "$BATCH" \
      --steps "$STEPS" --warmup $(( STEPS / 10 )) --lr "$LR" --seed "$SEED" --device "$DEVICE" \
      --no-progress --log-every $(( STEPS / 20 > 0 ? STEPS / 20 : 1 ))
  fi
  cp "$W/$attention/train_log.jsonl" "$OUT/train_log_$attention.jsonl"
done
if has eval; then
  run "$B/server/lagserve" eval --model "$MODEL" --model "$W/lrsa" --model "$W/full" \
    --task passkey,multikey,facts --length "$LENGTHS" --samples "$SAMPLES" --seed "$EVAL_SEED" \
    $(printf -- '--policy %s ' $POLICIES) --device "$DEVICE" \
    --csv "$OUT/eval.csv" --plot "$OUT/eval.png"
fi
for attention in lrsa full; do
  [ -f "$OUT/train_log_$attention.jsonl" ] || continue
  python3 - "$OUT/train_log_$attention.jsonl" "$attention" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
last = rows[-1]  # tokens_per_s is over the run so far: the last line's is the run's
print(f"{sys.argv[2]}: {last['step']} steps, loss {rows[0]['loss']:.4f} -> {last['loss']:.4g}, "
      f"{last['tokens_per_s']:.0f} training tokens/s over {last['elapsed_s']:.1f} s")
PY
done

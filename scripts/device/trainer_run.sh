#!/usr/bin/env bash
# Run ON THE GPU MACHINE after build_trainer.sh: the trainer's tests (the CUDA
# ones included), a short LRSA fine-tuning on CUDA, and the step-time benchmark
# (LRSA vs full attention, SmolLM2-135M shape). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.device-deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=build-gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for t in test_lrsa_attention test_lag_select_torch test_lrsa_cuda test_lrsa_conformance \
    test_lrsa_gradcheck test_activation_checkpointing test_lagtrain_cli test_lag_policy; do
  "$B/tests/$t" > "$OUT/$t.log" 2>&1
  echo "$t: exit $? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$t.log" | tr '\n' ' ')"
done
T=/tmp/lagtrain-gpu
mkdir -p "$T"
"$B/trainer/lagtrain" make-data passkey --length 400 --count 32 --model tests/golden/models/tiny-llama --out "$T/train.jsonl"
"$B/trainer/lagtrain" train --model tests/golden/models/tiny-llama --data "$T/train.jsonl" --eval-data "$T/train.jsonl" \
  --out "$T/out" --lagkv sink=4,lag=16,ratio=0.25 --seq-len 512 --batch-size 4 --steps 20 --warmup 2 --lr 3e-3 \
  --device cuda --no-progress --log-every 5 2>&1 | tail -8
"$B/bench/bench_train_step" --shape smollm2-135m --device cuda --lengths ${BENCH_LENGTHS:-2048,8192} \
  --warmup 2 --steps 5 2>&1 | tee "$OUT/bench_train_step.txt"
"$B/bench/bench_lrsa_attention" --lengths ${BENCH_LENGTHS:-2048,8192} 2>&1 | tee "$OUT/bench_lrsa_attention.txt"

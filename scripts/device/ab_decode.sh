#!/usr/bin/env bash
# Run ON THE GPU MACHINE: a decode step's time under two builds, in
# alternation on the same card (B=32 at 32K, policy off and ratio=0.25, the
# issue's figures), so that a change is judged against its anchor measured
# in the same call. Both builds come as scripts/device/prebuild.sh tarballs:
#   here, on the anchor commit:    scripts/device/prebuild.sh bench_cuda_decode
#                                  mkdir -p .device-base && mv .device-prebuilt/pb.tar.xz .device-base/
#   here, on the candidate:        scripts/device/prebuild.sh bench_cuda_decode [tests...]
#   device run, carry [".device-prebuilt", ".device-base"]:
#     scripts/device/ab_decode.sh [ROUNDS] [CANDIDATE_ENV...]
# ROUNDS (default 2) anchor/candidate pairs; CANDIDATE_ENV (NAME=value ...)
# is set for the candidate's runs only. The tests in the candidate's tarball
# run first (kernels against the CPU, the tiny-model backend cases, the
# engine on CUDA). The roofline is 4.25 TB/s (GPU.md's H200 copy figure);
# ANCHORS=1 also runs bench/kernels/sdpa_anchor.py (copy, SDPA) at the end.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
ROUNDS=${1:-2}
shift $(( $# > 0 ? 1 : 0 ))
mkdir -p /tmp/ab-base && tar -C /tmp/ab-base -xJf .device-base/pb.tar.xz || exit 1
# shellcheck source=scripts/device/prebuilt_env.sh
source scripts/device/prebuilt_env.sh || exit 1
echo "anchor: commit $(cat /tmp/ab-base/COMMIT); candidate: commit $(cat "$B/COMMIT")"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
Q=/tmp/qwen2.5-1.5b-shape
[ -f "$Q/model.safetensors" ] || python3 scripts/make_random_model.py "$Q" > "$OUT/make_model.txt" 2>&1 &
MK=$!

for t in "$B"/tests/*; do
  name=$(basename "$t")
  case $name in
    test_engine | test_async_engine) env LAGSERVE_TEST_DEVICE=cuda "$t" > "$OUT/$name.log" 2>&1 ;;
    *) "$t" > "$OUT/$name.log" 2>&1 ;;
  esac
  echo "$name: exit $? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$name.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$OUT/$name.log" | head -10
done
wait $MK

run() {  # label binary [env...]
  local label=$1 bin=$2
  shift 2
  env "$@" "$bin" --hbm-tbs 4.25 --model "$Q" --batch 32 --context 32768 --steps 128 --policy off \
    --policy sink=16,lag=128,ratio=0.25 > "$OUT/b32_$label.txt" 2>&1
  echo "$label: $(grep -oE 'policy [^:]*: prefill [0-9]* tok/s; decode [0-9.]* ms/step' "$OUT/b32_$label.txt" |
    sed 's/: prefill [0-9]* tok\/s; decode / /' | tr '\n' ';')"
}
for r in $(seq "$ROUNDS"); do
  run "anchor$r" /tmp/ab-base/bench/bench_cuda_decode
  run "candidate$r" "$B/bench/bench_cuda_decode" "$@"
done
[ "${ANCHORS:-0}" = 1 ] && python3 bench/kernels/sdpa_anchor.py 2>&1 | tee "$OUT/sdpa_anchor.txt"
exit 0

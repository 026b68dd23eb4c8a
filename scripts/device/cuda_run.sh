#!/usr/bin/env bash
# Run ON THE GPU MACHINE after build_cuda.sh: the CUDA tests (kernels against
# their CPU references; the whole model against the CPU backend), then the
# benchmarks on the Qwen2.5-1.5B shape with their anchors in the same call.
# The default model travels in two halves that join_model.sh joins (see
# there). Logs go to $OUT.
#   CUDA_RUN=tests|bench|all (default all)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.device-deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
B=${B:-build-gpu}  # prebuilt_env.sh sets another
WHAT="${CUDA_RUN:-all}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

scripts/device/join_model.sh || true

run_test() {  # name [env...]
  local t=$1; shift
  env "$@" "$B/tests/$t" > "$OUT/$t${SUFFIX:-}.log" 2>&1
  echo "$t${SUFFIX:-}: exit $? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$t${SUFFIX:-}.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]|Failure|agreement|agree on|whole model|mixed batch|device sampling' "$OUT/$t${SUFFIX:-}.log" | head -20
}

if [ "$WHAT" != bench ]; then
  for t in test_cuda_layer_ops test_cuda_gemv test_cuda_decode_attention test_cuda_prefill_attention test_cuda_lag_kernels test_cuda_sampling; do
    run_test $t
  done
  # Reads past an allocation (a slice's tail, say) fault only where nothing
  # is mapped beyond it; memcheck sees them wherever they land.
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  if [ -n "$SAN" ]; then
    "$SAN" --tool memcheck --error-exitcode 1 "$B/tests/test_cuda_gemv" --gtest_filter='*MatchTheCpu*' \
      > "$OUT/memcheck_gemv.log" 2>&1
    echo "memcheck test_cuda_gemv: exit $? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_gemv.log")"
  fi
  run_test test_cuda_backend
  run_test test_tensor_parallel
  SUFFIX=_cuda run_test test_engine LAGSERVE_TEST_DEVICE=cuda
  SUFFIX=_cuda run_test test_async_engine LAGSERVE_TEST_DEVICE=cuda
  # Each skinny GEMM forced on (the default takes the one that the test's backend size gets).
  # Not the preemption test: a preempted sequence is recomputed as a prefill
  # chunk, through cuBLAS, so its tokens need not equal the run's without
  # preemption (docs/cuda.md); the test's backend (64 sequences) takes cuBLAS
  # by default.
  for g in stream mma; do
    SUFFIX=_cuda_$g run_test test_engine LAGSERVE_TEST_DEVICE=cuda LAGSERVE_CUDA_GEMV=$g \
      'GTEST_FILTER=-*ForcedPreemptionKeepsOutputs*'
    SUFFIX=_$g run_test test_cuda_backend LAGSERVE_CUDA_GEMV=$g
  done
fi

if [ "$WHAT" != tests ]; then
  Q=/tmp/qwen2.5-1.5b-shape
  [ -f "$Q/model.safetensors" ] || python3 scripts/make_random_model.py "$Q" | tee "$OUT/make_model.txt"
  "$B/bench/bench_gemv" 2>&1 | tee "$OUT/bench_gemv.txt"
  "$B/bench/bench_prefill_attention" --seq 32768 2>&1 | tee "$OUT/bench_prefill_attention.txt"
  python3 bench/kernels/sdpa_anchor.py 2>&1 | tee "$OUT/sdpa_anchor.txt"
  # The roofline is this GPU's measured copy bandwidth (4.25 TB/s on the H200 of GPU.md).
  HBM=$(sed -n 's/^hbm copy: \([0-9.]*\) TB\/s/\1/p' "$OUT/sdpa_anchor.txt")
  HBM_ARG="--hbm-tbs ${HBM:-4.25}"
  # Batch 1: the default (streaming skinny GEMMs), the tensor-core ones, cuBLAS, no graphs.
  "$B/bench/bench_cuda_decode" $HBM_ARG --model "$Q" --batch 1 --context 4096 --steps 256 --policy off \
    2>&1 | tee "$OUT/bench_decode_b1_4k.txt"
  for g in mma 0; do
    LAGSERVE_CUDA_GEMV=$g "$B/bench/bench_cuda_decode" $HBM_ARG --model "$Q" --batch 1 --context 4096 \
      --steps 256 --policy off 2>&1 | tee "$OUT/bench_decode_b1_4k_gemv_$g.txt"
  done
  LAGSERVE_CUDA_GRAPHS=0 "$B/bench/bench_cuda_decode" $HBM_ARG --model "$Q" --batch 1 --context 4096 \
    --steps 256 --policy off 2>&1 | tee "$OUT/bench_decode_b1_4k_nographs.txt"
  "$B/bench/bench_cuda_decode" $HBM_ARG --model "$Q" --batch 32 --context 32768 --steps 256 \
    --policy off --policy sink=16,lag=128,ratio=0.25 2>&1 | tee "$OUT/bench_decode_b32_32k.txt"
  [ -f "$HOME/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf" ] && [ -x "$B/server/lagserve" ] && "$B/server/lagserve" generate -m default --device cuda -n 64 \
    -p "The capital of France is" 2>&1 | tail -3 | tee "$OUT/generate_default.txt"
fi

#!/usr/bin/env bash
# Run ON THE GPU MACHINE (after prebuilt_env.sh or build_cuda.sh): why a
# skinny GEMM runs at the speed it does, from ncu's launch, occupancy, memory
# and warp-stall sections for the tensor-core kernel (gemv_kernel) at the
# given row count, on each product of bench_gemv (Qwen2.5-1.5B shapes):
#   scripts/device/profile_gemv.sh [ROWS] [KERNEL_REGEX]   (defaults: 32, gemv_kernel)
# Writes the full report to $OUT/profile_gemv_<rows>.txt and prints, per
# launch, the kernel, its time, DRAM throughput, achieved occupancy, L1 hit
# rate and ncu's notes on where warps stall.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
ROWS=${1:-32} KERNEL=${2:-gemv_kernel}
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
BENCH=${BENCH:-${B:-build-gpu}/bench/bench_gemv}
REPORT="$OUT/profile_gemv_${ROWS}.txt"
# Caches and clocks left alone, as in profile_step.sh; 5 timed launches
# a product and column are enough for the sections; 64 MB of weight copies
# still exceed the 50 MB L2.
"$NCU" --clock-control none --cache-control none --kernel-name "regex:$KERNEL" --launch-count 200 \
  --section LaunchStats --section Occupancy --section SpeedOfLight --section MemoryWorkloadAnalysis \
  --section WarpStateStats --print-units base \
  "$BENCH" --rows "$ROWS" --iters 5 --flush-mb 64 --lt-algos 0 > "$REPORT" 2>&1 || tail -5 "$REPORT"
grep -E "^  [^ ].*gemv|Duration|DRAM Throughput|Achieved Occupancy|Registers Per Thread|L1/TEX Hit Rate|Warp Cycles Per Issued|stalled" \
  "$REPORT" | cut -c1-200 | head -400

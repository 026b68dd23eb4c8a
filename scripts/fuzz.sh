#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang into build-fuzz/ and
# runs each for SECONDS (default 600), two at a time.
#   scripts/fuzz.sh [SECONDS] [TARGETS...]     targets: gguf safetensors
#       model_config tokenizer chat_template openai_request lag_policy (default: all)
# New corpus entries go to build-fuzz/corpus/<target>/ (the committed seeds in
# tests/fuzz/corpus/<target>/ are read, never written), crashes, leaks and
# timeouts to build-fuzz/crashes/<target>/, the log to build-fuzz/logs/<target>.log.
# Reproduce one: build-fuzz/tests/fuzz/<target>_fuzz build-fuzz/crashes/<target>/crash-...
# FUZZ_JOBS sets how many run at once (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-600}
shift || true
ALL=(gguf safetensors model_config tokenizer chat_template openai_request lag_policy)
if (($#)); then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi
JOBS=${FUZZ_JOBS:-2}

# Longest input per target: room for the seeds and a little more.
declare -A MAX_LEN=([gguf]=65536 [safetensors]=16384 [model_config]=4096 [tokenizer]=4096
                    [chat_template]=8192 [openai_request]=8192 [lag_policy]=1024)

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: installing clang (libFuzzer comes with it)" >&2
  apt-get install -y -q clang >&2
fi
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLAGSERVE_FUZZ=ON -DLAGSERVE_CUDA=OFF -DLAGSERVE_TRAINER=OFF -DLAGSERVE_SERVER=OFF \
  -DLAGSERVE_TESTS=OFF -DLAGSERVE_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "${JOBS}" --target "${TARGETS[@]/%/_fuzz}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p build-fuzz/logs

run_one() {
  local t=$1
  local corpus=build-fuzz/corpus/$t crashes=build-fuzz/crashes/$t
  mkdir -p "$corpus" "$crashes"
  # -fork=1 -ignore_crashes=1: one crash does not end the run; every crash,
  # leak, timeout and OOM is kept under $crashes.
  build-fuzz/tests/fuzz/${t}_fuzz "$corpus" "tests/fuzz/corpus/$t" \
    -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" -timeout=10 \
    -rss_limit_mb=2048 -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -artifact_prefix="$crashes/" >"build-fuzz/logs/$t.log" 2>&1 || true
  local stats
  stats=$(grep -E '^#[0-9]+' "build-fuzz/logs/$t.log" | tail -1 || true)
  echo "$t: $(ls "$corpus" | wc -l) corpus files, $(ls "$crashes" | wc -l) crash files; last: $stats"
}

for t in "${TARGETS[@]}"; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
  run_one "$t" &
done
wait

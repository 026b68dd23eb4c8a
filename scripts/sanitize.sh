#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake preset "asan", build folder build-asan/). Run scripts/setup.sh first
# (packages, model, and the venv of the Python tests, which is shared).
# Any sanitizer report fails the test that triggered it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake --preset asan >&2
cmake --build build-asan -j"$(nproc)" >&2
# LeakSanitizer stays on; the Python suites start the server under it too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd build-asan
ctest -j"$(nproc)" --output-on-failure --timeout 1800 "$@"

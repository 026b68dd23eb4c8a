#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool, carry .device-deps): builds the engine
# with the CUDA backend, the lagserve binary (no `serve`: no gRPC or
# cpp-httplib there), the CUDA tests and benchmarks into build-gpu/.
#   scripts/device/fetch_deps.sh   (here, once)
#   device run, carry [".device-deps"]: scripts/device/build_cuda.sh && scripts/device/cuda_run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX="$PWD/.device-deps/root"
if [ ! -d "$PREFIX" ]; then
  for deb in .device-deps/*.deb; do dpkg -x "$deb" "$PREFIX"; done
fi
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAGSERVE_SERVER=OFF \
  -DLAGSERVE_TRAINER=OFF -DLAGSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr" "$@" > /dev/null
cmake --build build-gpu -j"$(nproc)" --target lagserve bench_cuda_decode bench_prefill_attention \
  test_cuda_decode_attention test_cuda_gemv test_cuda_layer_ops test_cuda_prefill_attention test_cuda_lag_kernels test_cuda_sampling \
  test_cuda_backend test_engine test_async_engine 2>&1 | grep -E "error|warning: unused|FAILED" || true
test -x build-gpu/server/lagserve

#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool, carry .device-deps): builds the engine
# with the CUDA backend, the lagserve binary (its `serve` with HTTP alone:
# -DLAGSERVE_GRPC=OFF, no gRPC there; cpp-httplib is carried), the CUDA tests
# and benchmarks into build-gpu/ (BUILD_TARGETS="lagserve ..." builds only those).
#   scripts/device/fetch_deps.sh   (here, once)
#   device run, carry [".device-deps"]: scripts/device/build_cuda.sh && scripts/device/cuda_run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/deps_env.sh
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAGSERVE_SERVER=ON -DLAGSERVE_GRPC=OFF \
  -DLAGSERVE_TRAINER=OFF -DLAGSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr" "$@" > /dev/null
TARGETS=${BUILD_TARGETS:-lagserve bench_cuda_decode bench_prefill_attention bench_gemv \
  test_cuda_decode_attention test_cuda_gemv test_cuda_layer_ops test_cuda_prefill_attention test_cuda_lag_kernels test_cuda_sampling \
  test_cuda_backend test_tensor_parallel test_engine test_async_engine}
cmake --build build-gpu -j"$(nproc)" --target $TARGETS 2>&1 | grep -E "error|warning: unused|FAILED" || true
test -x build-gpu/server/lagserve
build-gpu/server/lagserve --version

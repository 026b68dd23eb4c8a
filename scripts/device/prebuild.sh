#!/usr/bin/env bash
# Run HERE (not on the GPU machine): builds the CUDA tests and benchmarks for
# sm_90 without -march=native into build-portable/, strips them and packs
# them with the Abseil libraries the GPU machine lacks into
# .device-prebuilt/pb.tar.xz (about 24 MB), so that a device call carries
# binaries instead of spending minutes of device time compiling:
#   scripts/device/prebuild.sh [targets...]     (default: the CUDA tests and benchmarks)
#   device run, carry [".device-prebuilt"]:
#     source scripts/device/prebuilt_env.sh && CUDA_RUN=tests scripts/device/cuda_run.sh
# The GPU machine has the same nvcc (13.0) and a newer glibc; CUDA, cuBLAS,
# NCCL, fmt and PCRE2 come from it (GPU.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(bench_cuda_decode bench_prefill_attention bench_gemv test_cuda_decode_attention
  test_cuda_gemv test_cuda_layer_ops test_cuda_prefill_attention test_cuda_lag_kernels test_cuda_sampling
  test_cuda_backend test_tensor_parallel test_engine test_async_engine)
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B build-portable -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAGSERVE_SERVER=OFF -DLAGSERVE_GRPC=OFF \
  -DLAGSERVE_TRAINER=OFF -DLAGSERVE_CUDA=ON -DLAGSERVE_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=90 > /dev/null
ninja -C build-portable "${TARGETS[@]}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/tests" "$stage/bench" "$stage/lib"
for t in "${TARGETS[@]}"; do
  for dir in tests bench; do
    [ -x "build-portable/$dir/$t" ] && strip -o "$stage/$dir/$t" "build-portable/$dir/$t"
  done
done
cp -a /usr/lib/x86_64-linux-gnu/libabsl_*.so.* "$stage/lib/"
# The tests find their data (tests/golden) under the source path compiled in.
echo "$PWD" > "$stage/SOURCE_DIR"
git rev-parse --short HEAD > "$stage/COMMIT"
mkdir -p .device-prebuilt
XZ_OPT=-T2 tar -C "$stage" -cJf .device-prebuilt/pb.tar.xz .
for d in /.device-prebuilt/ /.device-base/; do  # the second: ab_decode.sh's anchor
  grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
ls -la .device-prebuilt/pb.tar.xz

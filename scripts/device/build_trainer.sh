#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool, carry .device-deps): unpacks the carried
# Debian packages into a prefix inside the checkout, configures against the
# LibTorch inside the installed PyTorch (no server: no gRPC or cpp-httplib
# there), and builds the engine, the trainer, their tests and the trainer
# benchmark into build-gpu/ (TARGETS="lagtrain lagserve" builds only those:
# with the CUDA backend, the lagserve binary there has no `serve` but has `eval`).
#   scripts/device/fetch_deps.sh   (here, once)
#   device run, carry [".device-deps"]: scripts/device/build_trainer.sh && ...
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX="$PWD/.device-deps/root"
if [ ! -d "$PREFIX" ]; then
  for deb in .device-deps/*.deb; do dpkg -x "$deb" "$PREFIX"; done
fi
TORCH_CMAKE="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLAGSERVE_SERVER=OFF \
  -DLAGSERVE_TRAINER=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$PREFIX/usr" "$@"
TARGETS=${TARGETS:-lagtrain bench_train_step bench_lrsa_attention \
  test_lrsa_attention test_lrsa_conformance test_lag_select_torch test_lrsa_cuda \
  test_lrsa_gradcheck test_activation_checkpointing \
  test_lagtrain_cli test_lag_policy test_model_loader}
cmake --build build-gpu -j"$(nproc)" --target $TARGETS

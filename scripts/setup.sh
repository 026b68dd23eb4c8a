#!/usr/bin/env bash
# Installs what lagserve needs on Debian 12 (apt packages), fetches the default
# model into the cache and builds everything into build/.
# Usage: scripts/setup.sh   (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  python3 python3-pip python3-venv
  libopenblas-dev libpcre2-dev libabsl-dev libfmt-dev libspdlog-dev libcli11-dev
  nlohmann-json3-dev libcpp-httplib-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libgtest-dev libgmock-dev libbenchmark-dev
  libtorch-dev libgloo-dev
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

python3 scripts/fetch_model.py >&2

# The Python side of the tests (openai SDK, grpcio, pytest) and the client
# package, in a venv inside the build tree; redone when the requirements change.
VENV=build/venv
stamp="$(find tests/requirements.txt clients/python -type f -not -path '*/build/*' \
  -not -path '*.egg-info*' -not -path '*__pycache__*' | sort | xargs cat | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: creating $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check ./clients/python >&2
  echo "$stamp" > "$VENV/.stamp"
fi

# ccache: paths relative to the checkout so that clean clones hit the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
BUILD_TYPE="${BUILD_TYPE:-Release}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${CMAKE_ARGS:-} >&2
cmake --build build -j"$(nproc)" >&2

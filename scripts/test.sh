#!/usr/bin/env bash
# README command 2: set up (packages, model, build), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 900

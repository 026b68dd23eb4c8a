#!/usr/bin/env bash
# README command 1: set up (packages, model, build), then serve the default
# model (OpenAI-compatible HTTP on 127.0.0.1:8000, gRPC on :50051). Arguments
# are passed to `lagserve serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/server/lagserve serve "$@"

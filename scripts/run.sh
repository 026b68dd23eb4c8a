#!/usr/bin/env bash
# README command 1: set up (packages, model, build), then run lagserve on the
# default model. Arguments are passed to `lagserve generate`; without any, a
# demo chat prompt runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- --chat --prompt "Explain in two sentences why the sky is blue." --max-tokens 96
fi
exec build/server/lagserve generate "$@"

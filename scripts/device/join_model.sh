#!/usr/bin/env bash
# Run ON THE GPU MACHINE: joins the default model's two halves into the model
# cache and checks its SHA-256; does nothing when the model is already there.
# The file (98 MB) is more than one device call may carry (64 MiB), so it
# travels in two halves, .device-model-a/part and .device-model-b/part (made
# here as docs/cuda.md says). A call's carried paths do not outlive it, but
# /tmp does while the machine stays warm, so a first call copies half a there:
#   device run, carry [".device-model-a"]: cp .device-model-a/part /tmp/model-part-a
# and the next carries .device-model-b (or copies it to /tmp/model-part-b too,
# when its own carry has no room) and runs this; cuda_run.sh, serve_run.sh and
# lrsa_experiment.sh do.
set -euo pipefail
cd "$(dirname "$0")/../.."
GGUF="$HOME/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf"
PART_B=/tmp/model-part-b
[ -f "$PART_B" ] || PART_B=.device-model-b/part
if [ ! -f "$GGUF" ] && [ -f /tmp/model-part-a ] && [ -f "$PART_B" ]; then
  mkdir -p "$(dirname "$GGUF")"
  cat /tmp/model-part-a "$PART_B" > "$GGUF"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $GGUF" | sha256sum -c - || rm -f "$GGUF"
fi
if [ ! -f "$GGUF" ]; then
  echo "join_model.sh: no default model at $GGUF and no halves to join (see the top of this script)" >&2
  exit 1
fi

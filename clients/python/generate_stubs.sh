#!/usr/bin/env bash
# Regenerates the committed gRPC stubs of proto/lagserve/v1/lagserve.proto into lagserve_client/lagserve/v1/.
# Run from anywhere: clients/python/generate_stubs.sh   (needs: pip install grpcio-tools==1.85.1; PYTHON=... to pick the interpreter;
# STUBS_OUT=DIR writes elsewhere, as the test that the committed stubs match the proto does)
set -euo pipefail

GRPC_TOOLS_VERSION=1.85.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
out="${STUBS_OUT:-$here/lagserve_client}"

have="$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || echo none)"
if [[ "$have" != "$GRPC_TOOLS_VERSION" ]]; then
  echo "generate_stubs.sh: need grpcio-tools==$GRPC_TOOLS_VERSION for $python, found $have" >&2
  echo "  $python -m pip install grpcio-tools==$GRPC_TOOLS_VERSION" >&2
  exit 1
fi

mkdir -p "$out/lagserve/v1"
"$python" -m grpc_tools.protoc -I "$repo/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$repo/proto/lagserve/v1/lagserve.proto"

# NOTE: protoc writes absolute imports (`from lagserve.v1 import lagserve_pb2`) that only work with
# lagserve_client/ itself on sys.path; a relative import makes the stubs live inside our package.
sed -i 's/^from lagserve\.v1 import lagserve_pb2 as /from . import lagserve_pb2 as /' \
  "$out/lagserve/v1/lagserve_pb2_grpc.py"
if grep -q '^from lagserve\.v1' "$out"/lagserve/v1/*.py "$out"/lagserve/v1/*.pyi; then
  echo "generate_stubs.sh: an absolute lagserve.v1 import is left in the stubs" >&2
  exit 1
fi

for pkg in "$out/lagserve" "$out/lagserve/v1"; do
  [[ -f "$pkg/__init__.py" ]] || echo "# Generated gRPC stubs; see clients/python/generate_stubs.sh." > "$pkg/__init__.py"
done
echo "stubs written to $out/lagserve/v1"

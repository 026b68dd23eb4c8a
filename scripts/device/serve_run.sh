#!/usr/bin/env bash
# Run ON THE GPU MACHINE after build_cuda.sh: the server's Python tests
# (tests/server/python: the openai SDK and raw HTTP against the real
# `lagserve serve`) on CUDA with the default model. The build has no gRPC, so
# test_grpc.py skips. The tests' packages travel as wheels (.device-wheels, from
# fetch_deps.sh) and are installed into /tmp/lagserve-site (no network there).
# The default model (98 MB) does not fit one call with the rest (64 MiB with
# the working tree), so two calls before, each within the warm window (30 s)
# of the last, leave its halves in /tmp (docs/cuda.md says how they are made):
#   device run, carry [".device-model-a"]: cp .device-model-a/part /tmp/model-part-a
#   device run, carry [".device-model-b"]: cp .device-model-b/part /tmp/model-part-b
#   device run, carry [".device-deps", ".device-wheels"]:
#     BUILD_TARGETS=lagserve scripts/device/build_cuda.sh && scripts/device/serve_run.sh
# (A model that cuda_run.sh already joined on the warm machine also does.)
# Logs go to $OUT, a table last. SERVE_TESTS="test_openai.py ..." runs only those
# files; SERVE_TIMEOUT (default 300 s) bounds the tests.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT="${OUT:-/tmp/lagserve-out}"
mkdir -p "$OUT"
source scripts/device/deps_env.sh || exit 1  # LD_LIBRARY_PATH: the carried cpp-httplib and brotli
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

scripts/device/join_model.sh || exit 1

SITE=/tmp/lagserve-site
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .device-wheels/*.whl > "$OUT/pip.log" 2>&1; then
  tail -20 "$OUT/pip.log"
  exit 1
fi
rm -f "$OUT/pip.log"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

export LAGSERVE_BINARY="$PWD/build-gpu/server/lagserve" LAGSERVE_TEST_DEVICE=cuda
"$LAGSERVE_BINARY" --version | tee "$OUT/version.txt"
# The servers' own logs (conftest.py writes them under $TMPDIR), one archive at the end.
LOGS=/tmp/lagserve-serve-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
start=$(date +%s)
# NOTE: no plugin autoload: the pytest plugins installed there (cov, xdist,
# benchmark...) were made for its own pytest, not the carried one.
(cd tests/server/python && TMPDIR="$LOGS" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
  timeout "${SERVE_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -rfEs \
  --junitxml="$OUT/serve_tests.xml" ${SERVE_TESTS:-.}) > "$OUT/serve_tests.log" 2>&1
rc=$?
tar czf "$OUT/server_logs.tgz" -C "$LOGS" --exclude='pytest-of-*' . 2> /dev/null

grep -E "^(FAILED|ERROR|SKIPPED) " "$OUT/serve_tests.log" | cut -c1-200
tail -1 "$OUT/serve_tests.log"
echo "pytest exit $rc after $(( $(date +%s) - start )) s (124: timed out)"
[ -f "$OUT/serve_tests.xml" ] && python3 - "$OUT/serve_tests.xml" <<'PY'
import collections, sys, xml.etree.ElementTree as ET
by = collections.defaultdict(collections.Counter)
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    name = case.get("classname") or case.get("name") or "?"
    outcome = "passed"
    for child in case:
        if child.tag in ("failure", "error"):
            outcome = "failed"
        elif child.tag == "skipped":
            outcome = "skipped"
    by[name.split(".")[0]][outcome] += 1
print(f"{'file':<18} {'passed':>6} {'failed':>6} {'skipped':>7}")
for name, c in sorted(by.items()):
    print(f"{name:<18} {c['passed']:>6} {c['failed']:>6} {c['skipped']:>7}")
PY
exit $rc

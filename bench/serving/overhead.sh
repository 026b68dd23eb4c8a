#!/usr/bin/env bash
# Server overhead: the same workload (N prompts x P random tokens, G generated,
# all submitted at once) through HTTP (`lagserve serve` + bench_serving.py)
# and through the offline engine (bench_offline), policy off and ratio=0.25.
# Run from the repository root after scripts/setup.sh:
#   bench/serving/overhead.sh [N=64] [P=512] [G=128] [THREADS=2]
# Prints both output throughputs per policy; JSON results go to $OUT_DIR
# (default build/bench-serving).
set -euo pipefail
N=${1:-64} P=${2:-512} G=${3:-128} THREADS=${4:-2}
OUT_DIR=${OUT_DIR:-build/bench-serving}
PY=${PYTHON:-build/venv/bin/python}
PORT=${PORT:-18400}
mkdir -p "$OUT_DIR"

server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

# The engine settings bench_offline uses: 4 GiB of KV, every request admitted at once.
build/server/lagserve serve --port "$PORT" --grpc-port -1 --threads "$THREADS" \
  --kv-cache-mb 4096 --max-seqs "$N" --max-queued-requests "$((N * 2))" \
  --log-level warn > "$OUT_DIR/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  sleep 0.1
done

for policy in off sink=16,lag=128,ratio=0.25; do
  tag=${policy//[=,]/_}
  "$PY" bench/serving/bench_serving.py --base-url "http://127.0.0.1:$PORT" \
    --num-prompts "$N" --input-len "$P" --output-len "$G" --request-rate inf \
    --lagkv "$policy" --warmup 2 --result-json "$OUT_DIR/serving_$tag.json" \
    | tee "$OUT_DIR/serving_$tag.txt" || true  # failed requests are counted in the table below
done
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""

for policy in off sink=16,lag=128,ratio=0.25; do
  tag=${policy//[=,]/_}
  build/bench/bench_offline --threads "$THREADS" --prompts "$N" --prompt-tokens "$P" \
    --gen-tokens "$G" --lagkv "$policy" --kv-lengths "" | tee "$OUT_DIR/offline_$tag.txt"
done

echo
echo "policy | HTTP output tok/s (failed requests) | offline generated tok/s | overhead"
for policy in off sink=16,lag=128,ratio=0.25; do
  tag=${policy//[=,]/_}
  http=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['output_throughput'], r['failed'])" \
         "$OUT_DIR/serving_$tag.json")
  # the batch row of bench_offline's table: | N | P | G | generated tok/s | ...
  offline=$(awk -F'|' -v n="$N" '$2 + 0 == n { print $5 + 0 }' "$OUT_DIR/offline_$tag.txt")
  "$PY" -c "import sys; h,f,o=float(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]); print(f'{sys.argv[1]} | {h:.1f} ({f}) | {o:.1f} | {100*(1-h/o):+.1f}%')" \
    "$policy" $http "$offline"
done

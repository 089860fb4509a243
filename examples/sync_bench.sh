#!/usr/bin/env bash
# Figures of the etcd sync, release build, one run: propagation (etcd put acknowledged → first
# proxied request that sees it) with 10, 10k and 100k routes; cold start with 100k routes;
# throughput through a stable route with and without 100 route changes a second; memory.
#
#   bash examples/sync_bench.sh          (needs etcd, nginx and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in etcd nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "sync_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico --example sync_bench >/dev/null
BENCH=./target/release/examples/sync_bench
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port)

nginx_upstream upstream "$UP"

start_etcd() {
  ETCD_C=$(port); ETCD_P=$(port)
  rm -rf "$dir/etcd"
  etcd --name b --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_C" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_C" --listen-peer-urls "http://127.0.0.1:$ETCD_P" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_P" --initial-cluster "b=http://127.0.0.1:$ETCD_P" \
    --log-level error --quota-backend-bytes 4294967296 > "$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ETCD_C/health" >/dev/null && break; sleep 0.1; done
}

start_portico() {
  PTC=$(port); STATUS=$(port)
  cat > "$dir/config.yaml" <<CONF
proxy:
  listen: ["127.0.0.1:$PTC"]
  threads: 1
status:
  listen: "127.0.0.1:$STATUS"
config:
  provider: etcd
etcd:
  endpoints: ["http://127.0.0.1:$ETCD_C"]
  prefix: /apisix
  saved_config: ""
CONF
  local t0; t0=$(date +%s.%N)
  RUST_LOG=${PORTICO_LOG:-warn} ${PORTICO_BIN:-./target/release/portico} -c "$dir/config.yaml" > "$dir/portico.log" 2>&1 &
  echo $! > "$dir/portico.pid"
  local n=0
  until curl -sf "http://127.0.0.1:$STATUS/status/ready" >/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 12000 ] || { echo "portico not ready after 2 minutes:" >&2; cat "$dir/portico.log" >&2; exit 1; }
    sleep 0.01
  done
  READY=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
}

stop_all() {
  kill "$(cat "$dir/portico.pid")" "$(cat "$dir/etcd.pid")" 2>/dev/null || true
  sleep 1
}

rss() { awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$(cat "$dir/portico.pid")/status"; }

for n in ${SIZES:-10 10000 100000}; do
  start_etcd
  $BENCH load --etcd "http://127.0.0.1:$ETCD_C" --routes "$n" --upstream "127.0.0.1:$UP"
  start_portico
  echo "== $n routes: ready $READY s after start, RSS $(rss)"
  $BENCH propagation --etcd "http://127.0.0.1:$ETCD_C" --gateway "$PTC" --changes 200
  if [ "$n" = 100000 ]; then
    wrk -t1 -c50 -d1s "http://127.0.0.1:$PTC/hello" >/dev/null
    echo "-- wrk -t1 -c50 -d10s through /hello, no churn"
    wrk -t1 -c50 -d10s "http://127.0.0.1:$PTC/hello" | grep -E "Requests/sec|Non-2xx|errors" || true
    echo "-- the same while 100 routes change every second"
    $BENCH churn --etcd "http://127.0.0.1:$ETCD_C" --rate 100 --seconds 11 &
    CHURN=$!
    wrk -t1 -c50 -d10s "http://127.0.0.1:$PTC/hello" | grep -E "Requests/sec|Non-2xx|errors" || true
    wait $CHURN
    echo "   RSS after churn: $(rss)"
  fi
  [ -z "${KEEP_LOG:-}" ] || cp "$dir/portico.log" "$KEEP_LOG"
  stop_all
done

#!/usr/bin/env bash
# Upstream figures, release build: throughput of each balancer against round robin (wrk,
# three nginx upstream nodes), then client-visible errors while one of the three nodes is
# stopped and started again under a 30 s load, then keepalive_pool.size 4 against the default
# under 50 concurrent connections (throughput, upstream connections opened and left open).
#
#   bash examples/upstream_bench.sh          (needs nginx and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "upstream_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null
dir=$(mktemp -d)
trap 'for p in "$dir"/*.pid; do kill "$(cat "$p")" 2>/dev/null || true; done; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
DURATION=${DURATION:-10s}

U1=$(port); U2=$(port); U3=$(port); U4=$(port); PTC=$(port); STATUS=$(port)
nginx_upstream u1 "$U1"; nginx_upstream u2 "$U2"; nginx_upstream u3 "$U3"; nginx_upstream u4 "$U4"
NODES="\"127.0.0.1:$U1\": 1, \"127.0.0.1:$U2\": 1, \"127.0.0.1:$U3\": 1"
CHECKS='checks: {active: {http_path: /, timeout: 0.5, healthy: {interval: 0.5, successes: 2}, unhealthy: {interval: 0.5, tcp_failures: 2}}, passive: {unhealthy: {tcp_failures: 1}}}'
cat > "$dir/apisix.yaml" <<CONF
routes:
  - {id: rr, uri: /roundrobin, upstream: {type: roundrobin, nodes: {$NODES}}}
  - {id: chash, uri: /chash, upstream: {type: chash, hash_on: vars, key: remote_addr, nodes: {$NODES}}}
  - {id: ewma, uri: /ewma, upstream: {type: ewma, nodes: {$NODES}}}
  - {id: lc, uri: /least_conn, upstream: {type: least_conn, nodes: {$NODES}}}
  - {id: ka_default, uri: /ka_default, upstream: {nodes: {"127.0.0.1:$U3": 1}}}
  - {id: ka_size4, uri: /ka_size4, upstream: {keepalive_pool: {size: 4}, nodes: {"127.0.0.1:$U4": 1}}}
  - {id: kill, uri: /kill, upstream: {type: roundrobin, nodes: {$NODES}, $CHECKS}}
#END
CONF
start_portico_yaml "$PTC" "$STATUS"

for b in roundrobin chash ewma least_conn; do
  wrk -t1 -c50 -d1s "http://127.0.0.1:$PTC/$b" >/dev/null
  printf '%-11s ' "$b:"
  wrk -t1 -c50 -d"$DURATION" --latency "http://127.0.0.1:$PTC/$b" \
    | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} /Non-2xx/ {n=$4} END {printf "%s req/s, p99 %s, non-2xx %s\n", r, p, n+0}'
done

echo "== wrk -t1 -c50 -d30s on /kill; node u2 stopped at 10 s, started again at 20 s"
( sleep 10; nginx -c "$dir/u2.conf" -s stop; sleep 10; nginx_upstream u2 "$U2" ) &
flip=$!
wrk -t1 -c50 -d30s "http://127.0.0.1:$PTC/kill" | grep -E "Requests/sec|requests in|Non-2xx|Socket errors" || true
wait "$flip"

echo "== keepalive_pool: wrk -t1 -c50 -d$DURATION on one node (default: u3, size 4: u4)"
accepts() { curl -s "http://127.0.0.1:$1/nginx_status" | awk 'NR==3 {print $1}'; }
open_to() { ss -Htn state established "( dport = :$1 )" | wc -l; }
for r in ka_default ka_size4; do
  if [ "$r" = ka_default ]; then u=$U3; else u=$U4; fi
  sleep 2 # connections from the run before close or settle
  before=$(accepts "$u")
  wrk -t1 -c50 -d"$DURATION" "http://127.0.0.1:$PTC/$r" > "$dir/wrk.out" &
  sleep 3; during=$(open_to "$u")
  wait $!
  opened=$(( $(accepts "$u") - before - 1 ))
  # wrk drops its connections mid-request when it stops, which closes upstream ones too:
  # end with 20 requests at once that all complete, then count what stays open.
  seq 20 | xargs -P20 -I{} curl -s -o /dev/null "http://127.0.0.1:$PTC/$r"
  sleep 1.5; after=$(open_to "$u")
  printf '%-11s %s req/s, upstream connections: %s opened, %s open under load, %s open 1.5 s after 20 more at once\n' \
    "$r:" "$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")" "$opened" "$during" "$after"
done

#!/usr/bin/env bash
# Upstream figures, release build: throughput of each balancer against round robin (wrk,
# three nginx upstream nodes), then client-visible errors while one of the three nodes is
# stopped and started again under a 30 s load.
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

U1=$(port); U2=$(port); U3=$(port); PTC=$(port); STATUS=$(port)
nginx_upstream u1 "$U1"; nginx_upstream u2 "$U2"; nginx_upstream u3 "$U3"
NODES="\"127.0.0.1:$U1\": 1, \"127.0.0.1:$U2\": 1, \"127.0.0.1:$U3\": 1"
CHECKS='checks: {active: {http_path: /, timeout: 0.5, healthy: {interval: 0.5, successes: 2}, unhealthy: {interval: 0.5, tcp_failures: 2}}, passive: {unhealthy: {tcp_failures: 1}}}'
cat > "$dir/config.yaml" <<CONF
proxy:
  listen: ["127.0.0.1:$PTC"]
  threads: 1
status:
  listen: "127.0.0.1:$STATUS"
config:
  provider: yaml
  yaml: apisix.yaml
CONF
cat > "$dir/apisix.yaml" <<CONF
routes:
  - {id: rr, uri: /roundrobin, upstream: {type: roundrobin, nodes: {$NODES}}}
  - {id: chash, uri: /chash, upstream: {type: chash, hash_on: vars, key: remote_addr, nodes: {$NODES}}}
  - {id: ewma, uri: /ewma, upstream: {type: ewma, nodes: {$NODES}}}
  - {id: lc, uri: /least_conn, upstream: {type: least_conn, nodes: {$NODES}}}
  - {id: kill, uri: /kill, upstream: {type: roundrobin, nodes: {$NODES}, $CHECKS}}
CONF
RUST_LOG=warn ./target/release/portico -c "$dir/config.yaml" > "$dir/portico.log" 2>&1 &
echo $! > "$dir/portico.pid"
until curl -sf "http://127.0.0.1:$STATUS/status/ready" >/dev/null; do sleep 0.05; done

for b in roundrobin chash ewma least_conn; do
  wrk -t1 -c50 -d1s "http://127.0.0.1:$PTC/$b" >/dev/null
  printf '%-11s ' "$b:"
  wrk -t1 -c50 -d"$DURATION" --latency "http://127.0.0.1:$PTC/$b" \
    | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} /Non-2xx/ {n=$4} END {printf "%s req/s, p99 %s, non-2xx %s\n", r, p, n+0}'
done

echo "== wrk -t1 -c50 -d30s on /kill; node u2 stopped at 10 s, started again at 20 s"
( sleep 10; nginx -c "$dir/u2.conf" -s stop; sleep 10; nginx_upstream u2 "$U2" ) &
wrk -t1 -c50 -d30s "http://127.0.0.1:$PTC/kill" | grep -E "Requests/sec|requests in|Non-2xx|Socket errors" || true
wait

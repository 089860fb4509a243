#!/usr/bin/env bash
# What plugins cost per request: wrk through one Portico (threads: 1) on three routes to the
# same nginx upstream: no plugins, key-auth, and key-auth + proxy-rewrite + cors + request-id.
# The routes are measured in turns (bare, key, four, bare, key, four, ...) so drift hits all
# alike; each line is one run.
#
#   bash examples/plugin_bench.sh            (needs nginx and wrk: apt-get install nginx wrk)
#   DURATION=5s ROUNDS=3 CONNECTIONS=50 bash examples/plugin_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "plugin_bench: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null

dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); PTC=$(port); STATUS=$(port)

cat > "$dir/apisix.yaml" <<CONF
upstreams:
  - id: up
    nodes:
      "127.0.0.1:$UP": 1
routes:
  - {id: bare, uri: /bare, upstream_id: up}
  - {id: key, uri: /key, upstream_id: up, plugins: {key-auth: {}}}
  - id: four
    uri: /four
    upstream_id: up
    plugins:
      key-auth: {}
      proxy-rewrite: {uri: /rewritten, headers: {set: {X-Api-Version: v2}}}
      cors: {}
      request-id: {}
consumers:
  - {username: jack, plugins: {key-auth: {key: bench-key}}}
#END
CONF

nginx_upstream upstream "$UP"
start_portico_yaml "$PTC" "$STATUS"

# CPU seconds (user + system) Portico has used so far.
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$(cat "$dir/portico.pid")/stat"; }

declare -A sum_rps sum_us
one() {
  local name=$1 out rps p99 before after reqs us
  before=$(cpu)
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "apikey: bench-key" -H "Origin: http://a.test" \
    "http://127.0.0.1:$PTC/$name")
  after=$(cpu)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  us=$(awk -v a="$after" -v b="$before" -v r="$reqs" 'BEGIN { printf "%.1f", (a - b) * 1e6 / r }')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  printf "%-5s %10s req/s  p99 %8s  Portico CPU %5s us/request  non-2xx %s\n" "$name" "$rps" "$p99" "$us" "${non2xx:-0}"
  sum_rps[$name]=$(awk -v a="${sum_rps[$name]:-0}" -v b="$rps" 'BEGIN{print a+b}')
  sum_us[$name]=$(awk -v a="${sum_us[$name]:-0}" -v b="$us" 'BEGIN{print a+b}')
}
for name in bare key four; do
  wrk -t1 -c4 -d1s -H "apikey: bench-key" "http://127.0.0.1:$PTC/$name" >/dev/null # warm up
done
echo "== wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds"
for _ in $(seq "$ROUNDS"); do
  for name in bare key four; do one "$name"; done
done
for name in key four; do
  awk -v n="$name" -v a="${sum_rps[$name]}" -v b="${sum_rps[bare]}" -v c="${sum_us[$name]}" -v d="${sum_us[bare]}" \
    'BEGIN { printf "%s / bare: %.1f%% of the throughput, %.1f%% of the CPU per request\n", n, 100 * a / b, 100 * c / d }'
done

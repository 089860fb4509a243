#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (repeatable where wrk's req/s on a
# shared 2-core machine swing by 20%): one Portico (release, threads: 1) under valgrind,
# counting only while wrk drives one route, for each route in $ROUTES in turn. Routes: bare,
# local (limit-count), key (key-auth), four (key-auth + proxy-rewrite + cors + request-id),
# obs (prometheus + http-logger posting to an nginx), otel (opentelemetry, always_on, exporting
# to that nginx). Every thread counts (the log thread's batches too).
#
#   ROUTES="bare local key four obs otel" bash examples/instr_bench.sh   (needs valgrind, nginx, wrk)
#   KEEP=/tmp/cg bash examples/instr_bench.sh    (keeps each route's callgrind file there)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUTES=${ROUTES:-bare local key four}
for tool in valgrind callgrind_control callgrind_annotate nginx wrk; do
  command -v "$tool" >/dev/null || { echo "instr_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); LOGS=$(port); PTC=$(port); STATUS=$(port)
cat > "$dir/apisix.yaml" <<CONF
upstreams:
  - id: up
    nodes:
      "127.0.0.1:$UP": 1
routes:
  - {id: bare, uri: /bare, upstream_id: up}
  - {id: local, uri: /local, upstream_id: up, plugins: {limit-count: {count: 1000000000, time_window: 60}}}
  - {id: key, uri: /key, upstream_id: up, plugins: {key-auth: {}}}
  - id: four
    uri: /four
    upstream_id: up
    plugins:
      key-auth: {}
      proxy-rewrite: {uri: /rewritten, headers: {set: {X-Api-Version: v2}}}
      cors: {}
      request-id: {}
  - id: obs
    uri: /obs
    upstream_id: up
    plugins:
      prometheus: {}
      http-logger: {uri: "http://127.0.0.1:$LOGS/logs"}
  - {id: otel, uri: /otel, upstream_id: up, plugins: {opentelemetry: {sampler: {name: always_on}}}}
plugin_metadata:
  - {id: opentelemetry, collector: {address: "127.0.0.1:$LOGS"}}
consumers:
  - {username: jack, plugins: {key-auth: {key: bench-key}}}
#END
CONF
nginx_upstream upstream "$UP"
nginx_upstream logs "$LOGS"
PORTICO_BIN="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$dir/cg.%p.out ./target/release/portico" start_portico_yaml "$PTC" "$STATUS" || { cat $dir/portico.log; exit 1; }
pid=$(cat "$dir/portico.pid")
for route in $ROUTES; do
  wrk -t1 -c4 -d2s -H "apikey: bench-key" -H "Origin: http://a.test" "http://127.0.0.1:$PTC/$route" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  out=$(wrk -t1 -c4 -d5s -H "apikey: bench-key" -H "Origin: http://a.test" "http://127.0.0.1:$PTC/$route")
  callgrind_control -i off "$pid" >/dev/null 2>&1
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  f=$(ls -t "$dir"/cg.*.out* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  awk -v r="$route" -v ir="$ir" -v n="$reqs" 'BEGIN { printf "%-6s %8d requests  %10.0f instructions/request\n", r, n, ir / n }'
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$f" "$KEEP/$route.out"; fi
done

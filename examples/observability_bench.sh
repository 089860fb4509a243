#!/usr/bin/env bash
# What observability costs per request, and what a scrape costs at 10k routes.
#
# 1. wrk through one Portico (threads: 1) to one nginx upstream: a bare route against a route
#    with prometheus + http-logger (batches POSTed to a second nginx), and one whose
#    http-logger posts to a dead server (accepts, never answers), measured in turns.
# 2. 10,000 routes with prometheus, each requested once, then the exporter scraped: time and
#    size of the answer.
#
#   bash examples/observability_bench.sh      (needs nginx, wrk, curl, python3)
#   DURATION=5s ROUNDS=3 CONNECTIONS=50 ROUTES=10000 bash examples/observability_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
ROUTES=${ROUTES:-10000}
for tool in nginx wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "observability_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null

dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); LOGS=$(port); PTC=$(port); STATUS=$(port); METRICS=$(port); HOLE=$(port)
# a log server that accepts connections and never answers
python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $HOLE)); s.listen(1024); held = []
while True:
    c, _ = s.accept(); held.append(c)
" & echo $! > "$dir/hole.pid"

cat > "$dir/apisix.yaml" <<CONF
upstreams:
  - id: up
    nodes:
      "127.0.0.1:$UP": 1
routes:
  - {id: bare, uri: /bare, upstream_id: up}
  - id: obs
    uri: /obs
    upstream_id: up
    plugins:
      prometheus: {}
      http-logger: {uri: "http://127.0.0.1:$LOGS/logs"}
  - id: dead
    uri: /dead
    upstream_id: up
    plugins:
      prometheus: {}
      http-logger: {uri: "http://127.0.0.1:$HOLE/logs", timeout: 30}
#END
CONF

nginx_upstream upstream "$UP"
nginx_upstream logs "$LOGS"
PORTICO_EXTRA="metrics:
  listen: \"127.0.0.1:$METRICS\"" start_portico_yaml "$PTC" "$STATUS"

for name in bare obs dead; do wrk -t1 -c4 -d1s "http://127.0.0.1:$PTC/$name" >/dev/null; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$(cat "$dir/portico.pid")/status"; }
rss_before=$(rss)
echo "== wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds"
for _ in $(seq "$ROUNDS"); do
  for name in bare obs dead; do wrk_one "$name"; done
done
awk -v a="${sum_rps[obs]}" -v b="${sum_rps[bare]}" -v c="${sum_p99[obs]}" -v d="${sum_p99[bare]}" \
  -v e="${sum_us[obs]}" -v f="${sum_us[bare]}" \
  'BEGIN { printf "prometheus + http-logger / bare: %.3fx the throughput, p99 %.2fx, %.2fx the CPU per request\n", a / b, c / d, e / f }'
sleep 6 # the last batch
awk -v a="${sum_rps[dead]}" -v b="${sum_rps[bare]}" -v c="${sum_p99[dead]}" -v d="${sum_p99[bare]}" \
  'BEGIN { printf "same, logging to a dead server / bare: %.3fx the throughput, p99 %.2fx\n", a / b, c / d }'
echo "Portico RSS: $rss_before KiB after warm-up, $(rss) KiB after the rounds"
grep -c "log queue is full" "$dir/portico.log" | sed 's/^/"log queue is full" lines: /'
echo "log posts the log server answered: $(curl -s "http://127.0.0.1:$LOGS/nginx_status" | awk 'NR==3 {print $3 - 1}')"
kill "$(cat "$dir/portico.pid")"; rm -f "$dir/portico.pid"; sleep 0.5

# 2. the scrape at $ROUTES routes that all saw traffic
python3 - "$dir/apisix.yaml" "$ROUTES" "$UP" <<'PY'
import sys
path, n, up = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    f.write(f'upstreams:\n  - id: up\n    nodes:\n      "127.0.0.1:{up}": 1\nroutes:\n')
    for i in range(n):
        f.write(f"  - {{id: r{i}, uri: /r/{i}, upstream_id: up, plugins: {{prometheus: {{}}}}}}\n")
    f.write("#END\n")
PY
PORTICO_EXTRA="metrics:
  listen: \"127.0.0.1:$METRICS\"" start_portico_yaml "$PTC" "$STATUS"
python3 - "$PTC" "$ROUTES" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    c.request("GET", f"/r/{i}")
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
# The answer's time (first byte, last byte) as a client that does not store it sees it; then
# one kept to count its series.
for _ in 1 2 3; do
  curl -s -o /dev/null -w "scrape of $ROUTES routes: first byte %{time_starttransfer} s, whole answer %{time_total} s, %{size_download} bytes\n" \
    "http://127.0.0.1:$METRICS/apisix/prometheus/metrics"
done
curl -s -o "$dir/scrape.txt" "http://127.0.0.1:$METRICS/apisix/prometheus/metrics"
echo "series lines: $(grep -vc '^#' "$dir/scrape.txt")"

#!/usr/bin/env bash
# Throughput and latency through Portico (threads: 1) against nginx as a reverse proxy
# (1 worker, upstream keepalive), both in front of the same nginx upstream returning a short
# body, measured with the same wrk command, one after the other.
#
#   bash examples/proxy_bench.sh            (needs nginx and wrk: apt-get install nginx wrk)
#   DURATION=10s CONNECTIONS=50 bash examples/proxy_bench.sh
#   COMPARE_BIN=/tmp/portico-old ROUNDS=3 bash examples/proxy_bench.sh
#       (also a second Portico binary, e.g. another build profile, in turns with this one)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-1}
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "proxy_bench: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null

dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); NGX=$(port); PTC=$(port); STATUS=$(port)

cat > "$dir/proxy.conf" <<CONF
worker_processes 1;
pid $dir/proxy.pid;
error_log $dir/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$UP; keepalive 320; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGX;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
cat > "$dir/apisix.yaml" <<CONF
routes:
  - id: hello
    uri: /hello
    upstream:
      nodes:
        "127.0.0.1:$UP": 1
#END
CONF

nginx_upstream upstream "$UP"
nginx -c "$dir/proxy.conf" -e "$dir/proxy.err"
start_portico_yaml "$PTC" "$STATUS"

# CPU seconds (user + system) used so far by the processes in $@.
cpu() {
  local total=0 pid
  for pid in "$@"; do
    total=$(awk -v t="$total" '{print t + ($14 + $15) / 100}' "/proc/$pid/stat")
  done
  echo "$total"
}

run() {
  local name=$1 port=$2; shift 2
  wrk -t1 -c1 -d1s "http://127.0.0.1:$port/hello" >/dev/null # warm up pools
  echo "== $name: wrk -t1 -c$CONNECTIONS -d$DURATION --latency"
  local before out reqs after
  before=$(cpu "$@")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/hello")
  after=$(cpu "$@")
  echo "$out" | grep -E "Requests/sec|Latency |50%|99%|Non-2xx|errors"
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v c="$(awk -v a="$after" -v b="$before" 'BEGIN{print a-b}')" -v r="$reqs" \
    'BEGIN { printf "    proxy CPU: %.1f s for %d requests = %.1f us per request\n", c, r, c * 1e6 / r }'
}
ngx_worker=$(pgrep -P "$(cat "$dir/proxy.pid")" | head -1)
this_pid=$(cat "$dir/portico.pid")
if [ -n "${COMPARE_BIN:-}" ]; then
  PTC2=$(port); STATUS2=$(port)
  mkdir -p "$dir/b" && cp "$dir/apisix.yaml" "$dir/b/"
  (dir="$dir/b" PORTICO_BIN="$COMPARE_BIN" start_portico_yaml "$PTC2" "$STATUS2")
  other_pid=$(cat "$dir/b/portico.pid"); echo "$other_pid" > "$dir/other.pid"
fi
for _ in $(seq "$ROUNDS"); do
  [ -n "${SKIP_NGINX:-}" ] || run "nginx reverse proxy (1 worker, keepalive)" "$NGX" "$ngx_worker"
  run "portico (threads: 1) ${PORTICO_BIN:-./target/release/portico}" "$PTC" "$this_pid"
  [ -z "${COMPARE_BIN:-}" ] || run "portico (threads: 1) $COMPARE_BIN" "$PTC2" "$other_pid"
done
[ -z "${HOLD:-}" ] || { echo "holding; upstream port $UP"; sleep "$HOLD"; }

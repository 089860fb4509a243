#!/usr/bin/env bash
# Figures of issue 16 (hostile config and clients), release build, one run:
#  1. RSS and sync stall for a chash upstream of 100, 2,000 and 20,000 nodes of weight 1000
#     put in etcd (stall: put of the upstream, then of a route, until the route answers);
#  2. memory and file descriptors held by 2,000 clients that trickle a header byte by byte,
#     at the default timeouts, and how long until the gateway has closed them;
#  3. peak memory of a gateway whose etcd answers a watch whose first line never ends.
#
#   bash examples/hostile_bench.sh         (needs etcd, etcdctl, curl, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in etcd etcdctl curl python3; do
  command -v "$tool" >/dev/null || { echo "hostile_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh

rss_mb() { awk '{printf "%.1f", $2 * 4096 / 1e6}' "/proc/$1/statm"; }
fds() { ls "/proc/$1/fd" | wc -l; }
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.0f", (a - b) * 1000 }'; }

ETCD_C=$(port); ETCD_P=$(port)
etcd --name h --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_C" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_C" --listen-peer-urls "http://127.0.0.1:$ETCD_P" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_P" --initial-cluster "h=http://127.0.0.1:$ETCD_P" \
  --log-level error --max-request-bytes 10485760 > "$dir/etcd.log" 2>&1 &
echo $! > "$dir/etcd.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ETCD_C/health" >/dev/null && break; sleep 0.1; done
ETCDCTL="etcdctl --endpoints=http://127.0.0.1:$ETCD_C"

start_portico() { # $1: etcd endpoint
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
  endpoints: ["$1"]
  prefix: /apisix
  saved_config: ""
CONF
  RUST_LOG=warn ./target/release/portico -c "$dir/config.yaml" > "$dir/portico.log" 2>&1 &
  echo $! > "$dir/portico.pid"
  PID=$(cat "$dir/portico.pid")
}

echo "== 1. chash upstreams of weight 1000 through etcd"
start_portico "http://127.0.0.1:$ETCD_C"
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$STATUS/status/ready" >/dev/null && break; sleep 0.05; done
$ETCDCTL put /apisix/upstreams/u '{"nodes": {"127.0.0.1:1": 1}}' >/dev/null
for n in 100 2000 20000; do
  python3 - "$n" > "$dir/up.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"type": "chash", "key": "remote_addr",
                  "nodes": {f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80": 1000 for i in range(n)}}))
PY
  before=$(rss_mb "$PID")
  t0=$(now)
  $ETCDCTL put "/apisix/upstreams/c$n" < "$dir/up.json" >/dev/null
  $ETCDCTL put "/apisix/routes/r$n" "{\"uri\": \"/r$n\", \"upstream_id\": \"c$n\"}" >/dev/null
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PTC/r$n")" != 404 ]; do sleep 0.005; done
  echo "  $n nodes ($(wc -c < "$dir/up.json") bytes): applied in $(since "$t0") ms (two etcdctl runs included), RSS $before -> $(rss_mb "$PID") MB"
done
kill "$PID"; sleep 0.5

echo "== 2. 2,000 clients trickling a header (default client_header_timeout 60 s)"
start_portico "http://127.0.0.1:$ETCD_C"
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$STATUS/status/ready" >/dev/null && break; sleep 0.05; done
base_rss=$(rss_mb "$PID"); base_fds=$(fds "$PID")
python3 - "$PTC" "$PID" <<'PY' &
import socket, sys, time, os
port, pid = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(2000):
    s = socket.create_connection(("127.0.0.1", port))
    s.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    socks.append(s)
start = time.time()
while socks and time.time() - start < 90:
    alive = []
    for s in socks:
        try:
            s.send(b"a")
            alive.append(s)
        except OSError:
            s.close()
    socks = alive
    time.sleep(1)
for s in socks:
    s.close()
PY
echo $! > "$dir/slow.pid"
sleep 10
echo "  after 10 s: RSS $base_rss -> $(rss_mb "$PID") MB, open fds $base_fds -> $(fds "$PID")"
t0=$(now)
until [ "$(fds "$PID")" -le "$((base_fds + 10))" ]; do
  sleep 0.5
  [ "$(since "$t0")" -lt 90000 ] || break
done
echo "  all closed by the gateway $(awk -v s="$(since "$t0")" 'BEGIN{printf "%.1f", s/1000 + 10}') s after they connected; RSS now $(rss_mb "$PID") MB"
kill "$(cat "$dir/slow.pid")" 2>/dev/null || true
kill "$PID"; sleep 0.5

echo "== 3. an etcd whose watch line never ends"
BAD=$(port)
python3 - "$BAD" <<'PY' &
import socket, sys, threading
port = int(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(64)
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d: return
        data += d
    head = data.split(b"\r\n", 1)[0]
    try:
        if b"/version" in head:
            body = b'{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}'
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif b"/range" in head:
            body = b'{"header":{"revision":"5"},"kvs":[],"count":"0"}'
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"x" * 65536
            while True:
                c.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    except OSError:
        pass
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
echo $! > "$dir/badetcd.pid"
sleep 0.5
start_portico "http://127.0.0.1:$BAD"
sleep 1
base=$(rss_mb "$PID"); peak=$base
for _ in $(seq 40); do
  r=$(rss_mb "$PID"); peak=$(awk -v a="$peak" -v b="$r" 'BEGIN{print (b > a) ? b : a}')
  sleep 0.5
done
echo "  RSS at start $base MB, peak over 20 s $peak MB; log: $(grep -c 'larger than' "$dir/portico.log") watch(es) cut at the limit"

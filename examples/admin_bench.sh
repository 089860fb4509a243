#!/usr/bin/env bash
# Figures of the Admin API, release build, one run: PUTs of a route per second (one client,
# keep-alive, each waiting for its answer), and the time from the Admin API's 201 to the
# gateway serving that route (p50/p99 over 500 new routes, polled on a kept-alive connection).
#
#   bash examples/admin_bench.sh          (needs etcd, nginx, python3; PORTICO_BIN to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in etcd nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "admin_bench: $tool is needed" >&2; exit 1; }
done
[ -n "${PORTICO_BIN:-}" ] || cargo build --release --bin portico >/dev/null
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); ETCD_C=$(port); ETCD_P=$(port); PTC=$(port); STATUS=$(port); ADMIN=$(port)
nginx_upstream upstream "$UP"
etcd --name b --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_C" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_C" --listen-peer-urls "http://127.0.0.1:$ETCD_P" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_P" --initial-cluster "b=http://127.0.0.1:$ETCD_P" \
  --log-level error > "$dir/etcd.log" 2>&1 &
echo $! > "$dir/etcd.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ETCD_C/health" >/dev/null && break; sleep 0.1; done
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
  saved_config: ""
admin:
  listen: "127.0.0.1:$ADMIN"
  keys: [{name: admin, key: bench-key, role: admin}]
CONF
RUST_LOG=warn ${PORTICO_BIN:-./target/release/portico} -c "$dir/config.yaml" > "$dir/portico.log" 2>&1 &
echo $! > "$dir/portico.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$STATUS/status/ready" >/dev/null && break; sleep 0.1; done

python3 - "$ADMIN" "$PTC" "$UP" <<'PY'
import http.client, json, sys, time
admin, proxy, up = sys.argv[1:4]
a = http.client.HTTPConnection("127.0.0.1", int(admin))
p = http.client.HTTPConnection("127.0.0.1", int(proxy))
def put(path, body):
    a.request("PUT", "/apisix/admin" + path, json.dumps(body), {"X-API-KEY": "bench-key"})
    r = a.getresponse(); r.read()
    return r.status
assert put("/upstreams/up", {"nodes": {f"127.0.0.1:{up}": 1}}) == 201
# writes per second: one route replaced over and over
n = 2000
t0 = time.perf_counter()
for i in range(n):
    assert put("/routes/w", {"uri": "/w", "upstream_id": "up", "desc": str(i)}) in (200, 201)
dt = time.perf_counter() - t0
print(f"admin PUT /routes/w: {n / dt:.0f} writes/s ({dt / n * 1000:.2f} ms each, one client)")
# 201 -> served
lat = []
for i in range(500):
    path = f"/new/{i}"
    assert put(f"/routes/n{i}", {"uri": path, "upstream_id": "up"}) == 201
    t = time.perf_counter()
    while True:
        p.request("GET", path); r = p.getresponse(); r.read()
        if r.status == 200:
            break
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print(f"201 -> served (500 new routes): p50 {lat[len(lat)//2]:.2f} ms, p99 {lat[int(len(lat)*0.99)]:.2f} ms, max {lat[-1]:.2f} ms")
PY

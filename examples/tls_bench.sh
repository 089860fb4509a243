#!/usr/bin/env bash
# HTTPS figures, Portico (threads: 1) against nginx (1 worker) with the same ECDSA P-256
# certificate and the same upstream, one run, in turns:
#  - new TLS handshakes a second (wrk with Connection: close: one handshake per request),
#  - HTTPS requests a second on keep-alive connections,
#  - and plain HTTP on keep-alive, for the ratio the HTTPS one is compared with.
#
#   bash examples/tls_bench.sh          (needs nginx, wrk, openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
for tool in nginx wrk openssl; do
  command -v "$tool" >/dev/null || { echo "tls_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); PTC=$(port); PTLS=$(port); STATUS=$(port); NG=$(port); NGTLS=$(port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$dir/key.pem" \
  -out "$dir/cert.pem" -days 2 -subj /CN=bench.test -addext "subjectAltName=DNS:bench.test" 2>/dev/null

nginx_upstream upstream "$UP"
cat > "$dir/proxy.conf" <<CONF
worker_processes 1;
pid $dir/proxy.pid;
error_log $dir/proxy.err warn;
events { worker_connections 4096; }
http { access_log off;
  upstream u { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG; listen 127.0.0.1:$NGTLS ssl; server_name bench.test;
    ssl_certificate $dir/cert.pem; ssl_certificate_key $dir/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
nginx -c "$dir/proxy.conf" -e "$dir/proxy.err"

python3 - "$dir" "$UP" <<'PY'
import json, sys
d, up = sys.argv[1], sys.argv[2]
ssl = {"id": "b", "snis": ["bench.test"], "cert": open(d + "/cert.pem").read(), "key": open(d + "/key.pem").read()}
with open(d + "/apisix.yaml", "w") as f:
    f.write("routes:\n  - " + json.dumps({"id": "r", "uri": "/*", "upstream": {"nodes": {"127.0.0.1:" + up: 1}}}) + "\n")
    f.write("ssls:\n  - " + json.dumps(ssl) + "\n#END\n")
PY
start_portico_yaml "$PTC" "$STATUS"
kill "$(cat "$dir/portico.pid")"; sleep 0.5
sed -i "s/  threads: 1/  threads: 1\n  tls_listen: [\"127.0.0.1:$PTLS\"]\n  fallback_sni: bench.test/" "$dir/config.yaml"
RUST_LOG=warn ./target/release/portico -c "$dir/config.yaml" > "$dir/portico.log" 2>&1 &
echo $! > "$dir/portico.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$STATUS/status/ready" >/dev/null && break; sleep 0.1; done

run() { # name url [extra wrk args]
  local name=$1 url=$2; shift 2
  wrk -t1 -c50 -d"$DURATION" --latency "$@" "$url" | awk -v n="$name" '/Requests\/sec/ {r = $2} $1 == "99%" {p = $2} END {printf "%-28s %10s req/s  p99 %s\n", n, r, p}'
}
echo "== wrk -t1 -c50 -d$DURATION"
for target in "nginx:$NG:$NGTLS" "portico:$PTC:$PTLS"; do
  IFS=: read -r name plain tls <<<"$target"
  run "$name http keep-alive" "http://127.0.0.1:$plain/"
  run "$name https keep-alive" "https://127.0.0.1:$tls/" -H "Host: bench.test"
  run "$name https new handshakes" "https://127.0.0.1:$tls/" -H "Host: bench.test" -H "Connection: close"
done

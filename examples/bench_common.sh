# Shared by the bench scripts in examples/: source it after setting $dir (a temp directory).

# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# An nginx upstream (1 worker, keep-alive) named $1 on port $2, answering "hello from $1".
# /nginx_status counts its accepted connections. Its pid is in $dir/$1.pid; stop it with `nginx -c "$dir/$1.conf" -s stop`.
nginx_upstream() {
  cat > "$dir/$1.conf" <<CONF
worker_processes 1;
pid $dir/$1.pid;
error_log $dir/$1.err warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$2; keepalive_requests 1000000;
  location / { return 200 "hello from $1\n"; }
  location = /nginx_status { stub_status; } } }
CONF
  nginx -c "$dir/$1.conf" -e "$dir/$1.err"
}

# Portico (release build, one thread) on $dir/apisix.yaml, proxy on $1, status on $2; waits
# until it is ready, and fails (with its log) if it is not within 10 s. Pid in $dir/portico.pid.
# $PORTICO_EXTRA is appended to its config.yaml.
start_portico_yaml() {
  cat > "$dir/config.yaml" <<CONF
proxy:
  listen: ["127.0.0.1:$1"]
  threads: 1
status:
  listen: "127.0.0.1:$2"
config:
  provider: yaml
  yaml: apisix.yaml
${PORTICO_EXTRA:-}
CONF
  RUST_LOG=${PORTICO_LOG:-warn} ${PORTICO_BIN:-./target/release/portico} -c "$dir/config.yaml" > "$dir/portico.log" 2>&1 &
  echo $! > "$dir/portico.pid"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$2/status/ready" >/dev/null && return 0
    sleep 0.1
  done
  echo "portico did not get ready:" >&2; cat "$dir/portico.log" >&2
  return 1
}

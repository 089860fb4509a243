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

# CPU seconds (user + system, every thread) Portico ($dir/portico.pid) has used so far.
portico_cpu() { awk '{print ($14 + $15) / 100}' "/proc/$(cat "$dir/portico.pid")/stat"; }

# wrk's latency text (850us, 1.2ms, 2s) in milliseconds.
p99_ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }; print v }'; }

# One wrk run (-t1 -c$CONNECTIONS -d$DURATION) against http://127.0.0.1:$PTC/$1: prints
# req/s, p99, Portico's CPU per request and non-2xx answers, and adds req/s, p99 (ms) and
# CPU (us) to sum_rps[$1], sum_p99[$1], sum_us[$1].
declare -A sum_rps sum_p99 sum_us
wrk_one() {
  local name=$1 out rps p99 before after reqs us non2xx
  before=$(portico_cpu)
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PTC/$name")
  after=$(portico_cpu)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  us=$(awk -v a="$after" -v b="$before" -v r="$reqs" 'BEGIN { printf "%.1f", (a - b) * 1e6 / r }')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  printf "%-6s %10s req/s  p99 %8s  Portico CPU %5s us/request  non-2xx %s\n" "$name" "$rps" "$p99" "$us" "${non2xx:-0}"
  sum_rps[$name]=$(awk -v a="${sum_rps[$name]:-0}" -v b="$rps" 'BEGIN{print a+b}')
  sum_p99[$name]=$(awk -v a="${sum_p99[$name]:-0}" -v b="$(echo "$p99" | p99_ms)" 'BEGIN{print a+b}')
  sum_us[$name]=$(awk -v a="${sum_us[$name]:-0}" -v b="$us" 'BEGIN{print a+b}')
}

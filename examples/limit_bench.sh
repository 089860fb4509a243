#!/usr/bin/env bash
# What limit-count costs, how exact it is, and what a million keys weigh (issue 11):
#  1. wrk through one Portico (threads: 1) on a bare route and on limit-count routes with a
#     limit too high to hit, policy local and policy redis (a real redis-server), in turns.
#  2. Accuracy: 10 connections against count 1000, time_window 5 for 4 s (one window): on one
#     gateway (local), and split between two gateways sharing Redis. Accepted = non-refused.
#  3. Memory: one million distinct keys (a header per request) in one window (local policy),
#     then as many again after that window expired.
#
#   bash examples/limit_bench.sh      (needs nginx, wrk, redis-server: apt-get install nginx wrk redis-server)
#   DURATION=5s ROUNDS=3 KEYS=1000000 bash examples/limit_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-1000000}
for tool in nginx wrk redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "limit_bench: $tool is needed" >&2; exit 1; }
done
cargo build --release --bin portico >/dev/null

dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$dir"' EXIT
. examples/bench_common.sh
UP=$(port); PTC=$(port); STATUS=$(port); PTC2=$(port); STATUS2=$(port); REDIS=$(port)

redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --requirepass bench \
  --dir "$dir" --logfile "$dir/redis.log" --daemonize yes --pidfile "$dir/redis.pid"
for _ in $(seq 50); do redis-cli -p "$REDIS" -a bench --no-auth-warning ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

R="policy: redis, redis_host: 127.0.0.1, redis_port: $REDIS, redis_password: bench"
cat > "$dir/apisix.yaml" <<CONF
upstreams:
  - id: up
    nodes:
      "127.0.0.1:$UP": 1
routes:
  - {id: bare, uri: /bare, upstream_id: up}
  - {id: local, uri: /local, upstream_id: up, plugins: {limit-count: {count: 1000000000, time_window: 60}}}
  - {id: redis, uri: /redis, upstream_id: up, plugins: {limit-count: {count: 1000000000, time_window: 60, $R}}}
  - {id: acc_local, uri: /acc_local, upstream_id: up, plugins: {limit-count: {count: 1000, time_window: 5}}}
  - {id: acc_redis, uri: /acc_redis, upstream_id: up, plugins: {limit-count: {count: 1000, time_window: 5, $R}}}
  - {id: keys, uri: /keys, upstream_id: up, plugins: {limit-count: {count: 10, time_window: 20, key: http_x_key}}}
#END
CONF

nginx_upstream upstream "$UP"
start_portico_yaml "$PTC" "$STATUS"
# The second gateway, on the same file.
mkdir "$dir/b"
sed -e "s/127.0.0.1:$PTC/127.0.0.1:$PTC2/; s/127.0.0.1:$STATUS/127.0.0.1:$STATUS2/; s#yaml: apisix.yaml#yaml: $dir/apisix.yaml#" \
  "$dir/config.yaml" > "$dir/b/config.yaml"
RUST_LOG=warn ./target/release/portico -c "$dir/b/config.yaml" > "$dir/b/portico.log" 2>&1 &
echo $! > "$dir/portico2.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$STATUS2/status/ready" >/dev/null && break; sleep 0.1; done

pid=$(cat "$dir/portico.pid")
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$pid/status"; }
for name in bare local redis; do wrk -t1 -c4 -d1s "http://127.0.0.1:$PTC/$name" >/dev/null; done
echo "== 1. throughput: wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds"
for _ in $(seq "$ROUNDS"); do
  for name in bare local redis; do wrk_one "$name"; done
done
for name in local redis; do
  awk -v n="$name" -v a="${sum_rps[$name]}" -v b="${sum_rps[bare]}" -v c="${sum_p99[$name]}" -v d="${sum_p99[bare]}" \
    'BEGIN { printf "%s / bare: %.1f%% of the throughput, p99 %.2fx\n", n, 100 * a / b, c / d }'
done

accepted() { awk '/requests in/ {t = $1} /Non-2xx/ {n = $NF} END {print t - n}'; }
echo "== 2. accuracy: count 1000, time_window 5, 10 connections for 4 s"
one_gw=$(wrk -t2 -c10 -d4s "http://127.0.0.1:$PTC/acc_local" | accepted)
echo "one gateway, local: $one_gw accepted"
wrk -t1 -c5 -d4s "http://127.0.0.1:$PTC/acc_redis" | accepted > "$dir/a.n" &
first=$!
wrk -t1 -c5 -d4s "http://127.0.0.1:$PTC2/acc_redis" | accepted > "$dir/b.n"
wait "$first"
a=$(cat "$dir/a.n"); b=$(cat "$dir/b.n")
echo "two gateways, redis: $((a + b)) accepted ($a + $b)"

echo "== 3. memory: $KEYS distinct keys (local policy, time_window 20)"
cat > "$dir/keys.lua" <<LUA
local n, limit = 0, math.floor($KEYS / 2)
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
function request()
  n = n + 1
  return wrk.format("GET", "/keys", {["X-Key"] = id .. ":" .. n})
end
function response() if n >= limit then wrk.thread:stop() end end
LUA
echo "before: $(rss)"
wrk -t2 -c20 -d120s -s "$dir/keys.lua" "http://127.0.0.1:$PTC" | awk '/requests in/ {print "sent " $1 " requests"}'
echo "after $KEYS keys in one window: $(rss)"
sleep 21
wrk -t2 -c20 -d120s -s "$dir/keys.lua" "http://127.0.0.1:$PTC" | awk '/requests in/ {print "sent " $1 " requests"}'
echo "after the window expired and $KEYS new keys: $(rss)"

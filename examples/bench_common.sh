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

//! The real `portico` binary on free ports with a standalone YAML file, and real upstream
//! HTTP servers that echo what they received.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{free_port, http_get, wait_until, TempDir};

/// A running gateway, killed when dropped.
pub struct Gateway {
    pub dir: TempDir,
    pub port: u16,
    pub status_port: u16,
    /// A second listener on `[::1]`, when started with [`Gateway::start_v6`].
    pub v6_port: Option<u16>,
    child: Option<Child>,
}

impl Gateway {
    /// Starts the gateway on `apisix_yaml` and waits until it is ready.
    pub fn start(apisix_yaml: &str) -> Gateway {
        Gateway::spawn_with(apisix_yaml, "", false, 2).ready_or_panic()
    }

    /// Like [`Gateway::start`] with one worker thread: every task on one runtime, for tests
    /// that count upstream connections exactly (with two, Pingora 0.9 sometimes drops a
    /// pooled connection as another thread takes it out, cloudflare/pingora#998).
    pub fn start_one_thread(apisix_yaml: &str) -> Gateway {
        Gateway::spawn_with(apisix_yaml, "", false, 1).ready_or_panic()
    }

    /// Like [`Gateway::start`], listening on `[::1]` too.
    pub fn start_v6(apisix_yaml: &str) -> Gateway {
        Gateway::spawn_with(apisix_yaml, "", true, 2).ready_or_panic()
    }

    /// Like [`Gateway::start`] with `upstream_ca` trusted for upstreams.
    pub fn start_with_upstream_ca(apisix_yaml: &str, ca: &std::path::Path) -> Gateway {
        let proxy_extra = format!("  upstream_ca: \"{}\"\n", ca.display());
        Gateway::spawn_with(apisix_yaml, &proxy_extra, false, 2).ready_or_panic()
    }

    /// Like [`Gateway::start`] with `proxy_extra` under `proxy:` in config.yaml.
    pub fn start_with_proxy(apisix_yaml: &str, proxy_extra: &str) -> Gateway {
        Gateway::spawn_with(apisix_yaml, proxy_extra, false, 2).ready_or_panic()
    }

    /// Like [`Gateway::start`] with `extra` at the top level of config.yaml (e.g. `plugins:`).
    pub fn start_with_config(apisix_yaml: &str, extra: &str) -> Gateway {
        Gateway::spawn_full(&portico_bin(), apisix_yaml, "", extra, false, 2).ready_or_panic()
    }

    /// Starts the gateway without waiting.
    pub fn spawn(apisix_yaml: &str) -> Gateway {
        Gateway::spawn_with(apisix_yaml, "", false, 2)
    }

    fn ready_or_panic(self) -> Gateway {
        assert!(
            wait_until(Duration::from_secs(20), || self.ready()),
            "gateway not ready:\n{}",
            self.log()
        );
        self
    }

    /// Starts the gateway on etcd (`endpoints`, prefix `/apisix`) without waiting; `extra`
    /// goes under `etcd:` in config.yaml.
    pub fn spawn_etcd(endpoints: &[String], extra: &str) -> Gateway {
        Gateway::spawn_etcd_in(TempDir::new("gateway"), endpoints, extra)
    }

    /// Like [`Gateway::spawn_etcd`] with `proxy_extra` under `proxy:` in config.yaml.
    pub fn spawn_etcd_with_proxy(endpoints: &[String], proxy_extra: &str) -> Gateway {
        Gateway::spawn_etcd_full(TempDir::new("gateway"), endpoints, "", proxy_extra)
    }

    /// Like [`Gateway::spawn_etcd`] in a given directory (to find a saved config again).
    pub fn spawn_etcd_in(dir: TempDir, endpoints: &[String], extra: &str) -> Gateway {
        Gateway::spawn_etcd_full(dir, endpoints, extra, "")
    }

    fn spawn_etcd_full(
        dir: TempDir,
        endpoints: &[String],
        extra: &str,
        proxy_extra: &str,
    ) -> Gateway {
        let port = free_port();
        let status_port = free_port();
        let list = endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "proxy:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 2\n{proxy_extra}status:\n  listen: \"127.0.0.1:{status_port}\"\nconfig:\n  provider: etcd\netcd:\n  endpoints: [{list}]\n  prefix: /apisix\n  timeout: 3\n{extra}"
        );
        Gateway::launch(&portico_bin(), dir, port, status_port, None, &config)
    }

    /// The gateway's process id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Stops the process and hands back its directory (saved config inside).
    pub fn into_dir(mut self) -> TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let dir = TempDir::new("moved");
        std::mem::replace(&mut self.dir, dir)
    }

    /// `proxy_extra` goes under `proxy:` in config.yaml.
    fn spawn_with(apisix_yaml: &str, proxy_extra: &str, v6: bool, threads: u8) -> Gateway {
        Gateway::spawn_full(&portico_bin(), apisix_yaml, proxy_extra, "", v6, threads)
    }

    /// Like [`Gateway::start`] with another gateway binary (an example built on the crate).
    pub fn start_binary(bin: &std::path::Path, apisix_yaml: &str) -> Gateway {
        Gateway::spawn_full(bin, apisix_yaml, "", "", false, 2).ready_or_panic()
    }

    /// `top_extra` goes at the top level of config.yaml.
    fn spawn_full(
        bin: &std::path::Path,
        apisix_yaml: &str,
        proxy_extra: &str,
        top_extra: &str,
        v6: bool,
        threads: u8,
    ) -> Gateway {
        let dir = TempDir::new("gateway");
        let port = free_port();
        let status_port = free_port();
        let v6_port = v6.then(free_port);
        let listen = match v6_port {
            Some(p6) => format!("[\"127.0.0.1:{port}\", \"[::1]:{p6}\"]"),
            None => format!("[\"127.0.0.1:{port}\"]"),
        };
        std::fs::write(dir.path().join("apisix.yaml"), with_end(apisix_yaml)).unwrap();
        let config = format!(
            "proxy:\n  listen: {listen}\n  threads: {threads}\n{proxy_extra}status:\n  listen: \"127.0.0.1:{status_port}\"\nconfig:\n  provider: yaml\n  yaml: apisix.yaml\n{top_extra}"
        );
        Gateway::launch(bin, dir, port, status_port, v6_port, &config)
    }

    fn launch(
        bin: &std::path::Path,
        dir: TempDir,
        port: u16,
        status_port: u16,
        v6_port: Option<u16>,
        config: &str,
    ) -> Gateway {
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("portico.log"))
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.path().join("config.yaml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start portico");
        Gateway {
            dir,
            port,
            status_port,
            v6_port,
            child: Some(child),
        }
    }

    pub fn ready(&self) -> bool {
        matches!(http_get(self.status_port, "/status/ready"), Some((200, _)))
    }

    pub fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.status_port, "/status").expect("status");
        serde_json::from_str(&body).expect("status JSON")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("portico.log")).unwrap_or_default()
    }

    pub fn yaml_path(&self) -> PathBuf {
        self.dir.path().join("apisix.yaml")
    }

    /// Rewrites apisix.yaml and waits until the gateway published a newer version (or, for a
    /// file it must refuse, until it logged the refusal).
    pub fn update(&self, apisix_yaml: &str) {
        let before = self.status()["version"].as_u64().unwrap_or(0);
        std::fs::write(self.yaml_path(), with_end(apisix_yaml)).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || {
                self.status()["version"].as_u64().unwrap_or(0) > before
            }),
            "config not reloaded:\n{}",
            self.log()
        );
    }

    /// A request through the gateway.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.port, method, path, headers, "")
    }

    pub fn get(&self, path: &str, host: Option<&str>) -> Reply {
        match host {
            Some(h) => self.request("GET", path, &[("Host", h)]),
            None => self.request("GET", path, &[]),
        }
    }

    /// Sends a signal and waits for the process to exit; returns how long it took.
    pub fn stop_with(&mut self, signal: &str) -> Duration {
        let child = self.child.as_mut().expect("running");
        let start = std::time::Instant::now();
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let _ = child.wait();
        self.child = None;
        start.elapsed()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // The failed test's gateway log: its last lines say what the gateway saw.
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- gateway log (last 40 lines) ---\n{tail}\n---");
        }
    }
}

/// The file with APISIX's `#END` line, which a whole standalone file ends with (tests that
/// check a cut file write it themselves).
pub fn with_end(apisix_yaml: &str) -> String {
    if apisix_yaml.trim_end().ends_with("#END") {
        apisix_yaml.to_string()
    } else {
        format!("{}\n#END\n", apisix_yaml.trim_end())
    }
}

/// The `portico` binary under test.
fn portico_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portico"))
}

/// An example binary of this crate (cargo builds them with the tests).
pub fn example_bin(name: &str) -> PathBuf {
    // target/debug/deps/<test>-… → target/debug/examples/NAME
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join(name))
        .expect("target directory")
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    /// The echo server's JSON, when the request reached one.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `Host` the upstream saw (how tests learn which route matched).
    pub fn upstream_host(&self) -> String {
        self.echo()["headers"]["host"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A GET to `[::1]:port`.
pub fn request_v6(port: u16, path: &str) -> Reply {
    match TcpStream::connect(("::1", port)) {
        Ok(s) => exchange(s, "GET", path, &[], ""),
        Err(e) => no_answer(format!("connect: {e}")),
    }
}

/// Status 0: no answer; the body says what failed on the client side.
fn no_answer(why: String) -> Reply {
    Reply {
        status: 0,
        headers: BTreeMap::new(),
        body: format!("no answer: {why}"),
    }
}

/// One HTTP/1.1 request with `Connection: close`; status 0 when the connection failed.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => exchange(s, method, path, headers, body),
        Err(e) => no_answer(format!("connect: {e}")),
    }
}

fn exchange(
    mut s: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if let Err(e) = s.write_all(req.as_bytes()) {
        return no_answer(format!("write: {e}"));
    }
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return no_answer("closed before a status line".into()),
        Err(e) => return no_answer(format!("read: {e}")),
        Ok(_) => {}
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut raw = Vec::new();
    let _ = reader.read_to_end(&mut raw);
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(&raw)
    } else {
        raw
    };
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..pos]).trim(), 16).unwrap_or(0);
        raw = &raw[pos + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
}

/// An upstream HTTP server that answers every request with JSON describing it:
/// `{"server": NAME, "method", "path", "headers": {lowercase: value}, "body"}`.
pub struct Echo {
    pub port: u16,
    pub name: String,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    /// Every request answered, as the JSON it answered with.
    seen: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Echo {
    pub fn start(name: &str) -> Echo {
        Echo::start_slow(name, Duration::ZERO)
    }

    pub fn start_on(name: &str, port: u16) -> Echo {
        Echo::start_full(name, port, Duration::ZERO)
    }

    /// An echo server that waits `delay` before each answer.
    pub fn start_slow(name: &str, delay: Duration) -> Echo {
        // A port can be taken between choosing and binding it: choose again.
        for _ in 0..20 {
            if let Some(echo) = Echo::try_start(name, free_port(), delay) {
                return echo;
            }
        }
        panic!("no free port for an echo server")
    }

    /// Stops answering: the port refuses connections and open ones are closed.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }

    fn start_full(name: &str, port: u16, delay: Duration) -> Echo {
        Echo::try_start(name, port, delay).expect("bind echo")
    }

    fn try_start(name: &str, port: u16, delay: Duration) -> Option<Echo> {
        let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, name2, open2, seen2) =
            (stop.clone(), name.to_string(), open.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let name = name2.clone();
                        let stop = stop2.clone();
                        let open = open2.clone();
                        let seen = seen2.clone();
                        open.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            serve(sock, &name, &stop, delay, &seen);
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Some(Echo {
            port,
            name: name.to_string(),
            stop,
            open,
            seen,
        })
    }

    /// The requests this server answered so far (method, path, headers, body).
    pub fn seen(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections open to this server now (it closes one after 30 s without a request).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    sock: TcpStream,
    name: &str,
    stop: &AtomicBool,
    delay: Duration,
    seen: &std::sync::Mutex<Vec<serde_json::Value>>,
) {
    let client_port = sock.peer_addr().map(|a| a.port()).unwrap_or(0);
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(sock.try_clone().expect("clone socket"));
    let mut out = sock;
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = serde_json::Map::new();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().to_string();
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                if k == "transfer-encoding" && v.contains("chunked") {
                    chunked = true;
                }
                headers.insert(k, v.into());
            }
        }
        let connection_upgrade = headers
            .get("connection")
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
        if headers.contains_key("upgrade") && connection_upgrade {
            // A websocket-style upgrade: switch, then echo raw bytes back.
            let _ = out.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            let mut buf = [0u8; 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if chunked {
            body = read_chunked(&mut reader);
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(delay);
        if let Some(rest) = path.strip_prefix("/sleep/") {
            let ms: u64 = rest
                .split(['/', '?'])
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
        }
        let answer = serde_json::json!({
            "server": name,
            "client_port": client_port,
            "method": method,
            "path": path,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let reply = answer.to_string();
        if let Ok(mut seen) = seen.lock() {
            seen.push(answer);
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0u8; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return body;
        }
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

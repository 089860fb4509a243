//! The shared test harness: real etcd members (single, with auth, with TLS, a 3-member
//! cluster) on free loopback ports, each in its own temp dir, stopped when dropped (also on
//! panic). Tests using it can run in parallel.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// === temp dirs and ports ===

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "portico-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody in this process was given before and that is free right now.
///
/// Ports come from below the kernel's ephemeral range (32768 and up), so that an outgoing
/// connection cannot take a port between the moment it is chosen and the moment a server
/// binds it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = 20_000 + (rand_u32() % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.get_or_insert_with(HashSet::new).contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.get_or_insert_with(HashSet::new).insert(port);
            return port;
        }
    }
}

/// A random number without a crate: the process id, the time and a counter, mixed.
fn rand_u32() -> u32 {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t
        ^ (std::process::id() as u64).rotate_left(32)
        ^ N.fetch_add(0x9e37_79b9, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

/// Polls `check` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A plain HTTP/1.1 request over std TCP, for readiness checks and setup without the client
/// under test. Returns the status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path, &[], "")
}

// === certificates ===

/// A CA, a server certificate (localhost, etcd.test, 127.0.0.1) and a client certificate,
/// made with the openssl command at test time.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = TempDir::new("certs");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl (install the openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,DNS:etcd.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=portico test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        for (name, cn) in [
            ("server", "localhost"),
            ("client", "root"),
            ("other-ca", "other"),
        ] {
            if name == "other-ca" {
                run(&[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=another CA",
                    "-keyout",
                    "other-ca.key",
                    "-out",
                    "other-ca.pem",
                ]);
                continue;
            }
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

// === etcd ===

/// How a member is run.
#[derive(Clone, Default)]
pub struct EtcdConfig {
    /// Enable the v2 keys API.
    pub v2: bool,
    /// Create this root password and enable auth.
    pub root_password: Option<String>,
    /// `--auth-token-ttl` in seconds.
    pub auth_token_ttl: Option<u32>,
    /// Serve clients over TLS with these certificates.
    pub tls: Option<PathBuf>,
    /// Require client certificates (with `tls`).
    pub client_cert_auth: bool,
    pub extra_args: Vec<String>,
}

/// One etcd process. Killed when dropped.
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    data: TempDir,
    args: Vec<String>,
    child: Option<Child>,
    config: EtcdConfig,
}

impl EtcdMember {
    /// Starts a single member and waits until it answers.
    pub fn start() -> EtcdMember {
        Self::start_with(EtcdConfig::default())
    }

    pub fn start_with(config: EtcdConfig) -> EtcdMember {
        let client_port = free_port();
        let peer_port = free_port();
        let name = format!("m{client_port}");
        let cluster = format!("{name}=http://127.0.0.1:{peer_port}");
        let mut m = EtcdMember::new(name, client_port, peer_port, &cluster, "new", config);
        m.spawn();
        m.wait_ready();
        m.setup_auth();
        m
    }

    fn new(
        name: String,
        client_port: u16,
        peer_port: u16,
        cluster: &str,
        state: &str,
        config: EtcdConfig,
    ) -> EtcdMember {
        let data = TempDir::new("etcd");
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let mut args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data.path().join("data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster={cluster}"),
            format!("--initial-cluster-state={state}"),
            "--initial-cluster-token=portico-test".to_string(),
            "--heartbeat-interval=50".to_string(),
            "--election-timeout=500".to_string(),
            "--log-level=warn".to_string(),
            "--logger=zap".to_string(),
        ];
        if config.v2 {
            args.push("--enable-v2=true".into());
        }
        if let Some(ttl) = config.auth_token_ttl {
            args.push(format!("--auth-token-ttl={ttl}"));
        }
        if let Some(dir) = &config.tls {
            args.push(format!("--cert-file={}", dir.join("server.pem").display()));
            args.push(format!("--key-file={}", dir.join("server.key").display()));
            // etcd asks for client certificates as soon as it has a trusted CA.
            if config.client_cert_auth {
                args.push(format!(
                    "--trusted-ca-file={}",
                    dir.join("ca.pem").display()
                ));
                args.push("--client-cert-auth=true".into());
            }
        }
        args.extend(config.extra_args.iter().cloned());
        EtcdMember {
            name,
            client_port,
            peer_port,
            data,
            args,
            child: None,
            config,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let child = Command::new(etcd_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start etcd (is etcd-server installed?)");
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    /// The member's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The client URL (`http://127.0.0.1:PORT` or `https://…`).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn wait_ready(&mut self) {
        let ok = wait_until(Duration::from_secs(30), || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd exited with {status}:\n{}", self.log());
                }
            }
            self.is_healthy()
        });
        assert!(ok, "etcd did not become ready:\n{}", self.log());
    }

    /// Whether the member answers (with a leader).
    pub fn is_healthy(&self) -> bool {
        if self.config.tls.is_some() {
            self.etcdctl_try(&["endpoint", "health"]).is_ok()
        } else {
            matches!(http_get(self.client_port, "/health"), Some((200, body)) if body.contains("true"))
        }
    }

    fn setup_auth(&self) {
        if let Some(pw) = &self.config.root_password {
            self.etcdctl(&["user", "add", &format!("root:{pw}")]);
            self.etcdctl(&["auth", "enable"]);
        }
    }

    /// Stops the member (SIGKILL) and keeps its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped member again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// Starts a stopped member without waiting for it (cluster members need their peers).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Runs etcdctl against this member (with root credentials and certificates as needed).
    pub fn etcdctl(&self, args: &[&str]) -> String {
        self.etcdctl_try(args)
            .unwrap_or_else(|e| panic!("etcdctl {args:?} failed: {e}"))
    }

    pub fn etcdctl_try(&self, args: &[&str]) -> Result<String, String> {
        etcdctl_at(&self.url(), &self.config, args)
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.stop();
    }
}

fn etcd_binary() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

fn etcdctl_at(endpoints: &str, config: &EtcdConfig, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into()));
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .arg("--dial-timeout=3s");
    if let Some(dir) = &config.tls {
        cmd.arg(format!("--cacert={}", dir.join("ca.pem").display()));
        cmd.arg(format!("--cert={}", dir.join("client.pem").display()));
        cmd.arg(format!("--key={}", dir.join("client.key").display()));
    }
    let auth_on = config.root_password.is_some() && !matches!(args, ["user", "add", ..]);
    if let (true, Some(pw)) = (auth_on, &config.root_password) {
        cmd.arg(format!("--user=root:{pw}"));
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Three members on loopback whose members can be stopped and restarted.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    pub fn start() -> EtcdCluster {
        Self::start_with(EtcdConfig::default())
    }

    pub fn start_with(config: EtcdConfig) -> EtcdCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .map(|(c, p)| format!("m{c}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = ports
            .iter()
            .map(|(c, p)| EtcdMember::new(format!("m{c}"), *c, *p, &cluster, "new", config.clone()))
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &mut members {
            m.wait_ready();
        }
        members[0].setup_auth();
        EtcdCluster { members }
    }

    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url()).collect()
    }

    /// etcdctl against every member that runs.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.url())
            .collect();
        etcdctl_at(&urls.join(","), &self.members[0].config, args)
            .unwrap_or_else(|e| panic!("etcdctl {args:?} failed: {e}"))
    }

    /// Stops a member and waits until the others have a leader again.
    pub fn stop(&mut self, i: usize) {
        self.members[i].stop();
        self.wait_healthy();
    }

    /// Waits until every running member answers a quorum read.
    pub fn wait_healthy(&self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.members
                .iter()
                .filter(|m| m.is_running())
                .all(|m| m.etcdctl_try(&["endpoint", "health"]).is_ok())
        });
        assert!(ok, "the cluster did not recover a leader");
    }

    /// Restarts a stopped member and waits until it serves again.
    pub fn restart(&mut self, i: usize) {
        self.members[i].start_again();
        self.members[i].wait_ready();
        self.wait_healthy();
    }
}
pub mod gateway;
pub mod redis;

// === a TCP relay that can be cut ===

/// Forwards a loopback port to another; [`Relay::cut`] closes every connection and refuses new
/// ones (as a dead network would), [`Relay::restore`] listens again on the same port.
pub struct Relay {
    pub port: u16,
    state: std::sync::Arc<Mutex<RelayState>>,
}

struct RelayState {
    open: bool,
    conns: Vec<TcpStream>,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let port = free_port();
        let state = std::sync::Arc::new(Mutex::new(RelayState {
            open: true,
            conns: Vec::new(),
        }));
        let st = state.clone();
        std::thread::spawn(move || loop {
            let open = st.lock().map(|s| s.open).unwrap_or(false);
            if !open {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = listener.set_nonblocking(true);
            while st.lock().map(|s| s.open).unwrap_or(false) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let _ = down.set_nonblocking(false);
                        let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        if let Ok(mut s) = st.lock() {
                            s.conns.extend(down.try_clone().ok());
                            s.conns.extend(up.try_clone().ok());
                        }
                        for (mut a, mut b) in [
                            (down.try_clone(), up.try_clone()),
                            (up.try_clone(), down.try_clone()),
                        ]
                        .into_iter()
                        .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut a, &mut b);
                                let _ = b.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Leaving the loop drops the listener: new connections are refused.
        });
        Relay { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.open = false;
            for c in s.conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    pub fn restore(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.open = true;
        }
    }
}

/// A Python venv in `dir` with `packages` from PyPI (tools nobody here wrote: an SDK, a
/// Prometheus parser); returns its `python`.
pub fn python_venv(dir: &Path, packages: &[&str]) -> PathBuf {
    let venv = dir.join("venv");
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv")
        .success();
    assert!(ok, "python3 -m venv failed");
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(packages)
        .output()
        .expect("pip");
    assert!(
        pip.status.success(),
        "pip install {packages:?}: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    venv.join("bin/python")
}

//! Real Redis servers (Debian's `redis-server`) on free loopback ports, each in its own temp
//! dir with a password, stopped when dropped; and a three-master Redis Cluster made with
//! `redis-cli --cluster create`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, TempDir};

/// The password every test Redis asks for.
pub const PASSWORD: &str = "portico-redis-pw";

/// One `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    /// A cluster member's bus port (kept across restarts: its nodes.conf names it).
    cluster: Option<u16>,
    /// Serving TLS only, with `server.pem`/`server.key` of this directory (see `Certs`).
    tls: Option<std::path::PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with [`PASSWORD`] and waits until it answers.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: TempDir::new("redis"),
            cluster: None,
            tls: None,
            child: None,
        };
        r.start_again();
        r
    }

    /// Like [`RedisServer::start`], speaking TLS only, with the certificates in `certs`.
    pub fn start_tls(certs: &std::path::Path) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: TempDir::new("redis"),
            cluster: None,
            tls: Some(certs.to_path_buf()),
            child: None,
        };
        r.start_again();
        r
    }

    fn start_cluster_member() -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: TempDir::new("redis"),
            cluster: Some(free_port()),
            tls: None,
            child: None,
        };
        r.start_again();
        r
    }

    /// Starts a stopped server again on the same port (its data is not kept).
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = self.dir.path().join("redis.log");
        let mut args = match &self.tls {
            None => vec!["--port".to_string(), self.port.to_string()],
            Some(d) => vec![
                "--port".to_string(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                d.join("server.pem").display().to_string(),
                "--tls-key-file".into(),
                d.join("server.key").display().to_string(),
                "--tls-ca-cert-file".into(),
                d.join("ca.pem").display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        args.extend([
            "--bind".to_string(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--logfile".into(),
            log.display().to_string(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--requirepass".into(),
            PASSWORD.into(),
            "--masterauth".into(),
            PASSWORD.into(),
        ]);
        if let Some(bus) = self.cluster {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                self.dir.path().join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".into(),
                "2000".into(),
                // The bus port is port + 10000 unless given, which can land on a port in
                // use (an outgoing connection's): a free one of its own instead.
                "--cluster-port".into(),
                bus.to_string(),
            ]);
        }
        let child = Command::new(
            std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into()),
        )
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (is redis-server installed?)");
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(20), || {
            self.cli_try(&["ping"])
                .map(|o| o.contains("PONG"))
                .unwrap_or(false)
        });
        assert!(ok, "redis did not become ready:\n{}", self.log());
    }

    /// Stops the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs redis-cli against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_try(args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?} failed: {e}"))
    }

    pub fn cli_try(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "--no-auth-warning",
        ])
        .args(["-a", PASSWORD]);
        if let Some(d) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(d.join("ca.pem"));
        }
        if self.cluster.is_some() {
            cmd.arg("-c");
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters holding every slot between them, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_cluster_member())
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(["--no-auth-warning", "-a", PASSWORD])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = wait_until(Duration::from_secs(30), || {
            nodes.iter().all(|n| {
                n.cli_try(&["cluster", "info"])
                    .map(|o| o.contains("cluster_state:ok"))
                    .unwrap_or(false)
            })
        });
        assert!(ok, "redis cluster did not become ready");
        RedisCluster { nodes }
    }

    /// The nodes as `redis_cluster_nodes` lists them.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }

    /// Every key in the cluster.
    pub fn keys(&self) -> Vec<String> {
        let mut all = Vec::new();
        for n in &self.nodes {
            all.extend(n.cli(&["--scan"]).lines().map(str::to_string));
        }
        all
    }
}

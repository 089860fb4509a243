//! Upstream behaviour through the real gateway and real upstream servers that can be slowed,
//! stopped and restarted.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::gateway::{Echo, Gateway, Reply};
use harness::{free_port, wait_until};

fn server(r: &Reply) -> String {
    r.echo()["server"]
        .as_str()
        .unwrap_or(&format!("status {}", r.status))
        .to_string()
}

fn counts(g: &Gateway, path: &str, n: usize) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        *c.entry(server(&g.get(path, None))).or_default() += 1;
    }
    c
}

/// The health of `node` in `upstream` as `/status/upstreams` reports it.
fn healthy(g: &Gateway, upstream: &str, node: &str) -> Option<bool> {
    let (_, body) = harness::http_get(g.status_port, "/status/upstreams")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v[upstream]["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["healthy"].as_bool())
}

#[test]
fn round_robin_is_smooth_and_weighted() {
    let (a, b, c) = (Echo::start("a"), Echo::start("b"), Echo::start("c"));
    // The array form keeps the node order (the map form is ordered by address).
    let g = Gateway::start(&format!(
        "routes:\n  - {{id: r, uri: /rr, upstream: {{nodes: [{{host: 127.0.0.1, port: {}, weight: 5}}, {{host: 127.0.0.1, port: {}, weight: 1}}, {{host: 127.0.0.1, port: {}, weight: 1}}, {{host: 127.0.0.1, port: 1, weight: 0}}]}}}}\n",
        a.port,
        b.port,
        c.port
    ));
    let seq: String = (0..14).map(|_| server(&g.get("/rr", None))).collect();
    assert_eq!(
        seq, "aabacaaaabacaa",
        "smooth, not aaaaabc; weight 0 never picked"
    );
}

#[test]
fn chash_is_stable_and_a_new_node_moves_about_one_nth() {
    let echoes: Vec<Echo> = (0..5).map(|i| Echo::start(&format!("n{i}"))).collect();
    let nodes = |k: usize| {
        echoes[..k]
            .iter()
            .map(|e| format!("\"{}\": 1", e.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let yaml = |k: usize| {
        format!(
            "routes:\n  - {{id: v, uri: /v, upstream: {{type: chash, hash_on: vars, key: arg_user, nodes: {{{}}}}}}}\n  - {{id: h, uri: /h, upstream: {{type: chash, hash_on: header, key: X-User, nodes: {{{}}}}}}}\n",
            nodes(k),
            nodes(k)
        )
    };
    let g = Gateway::start(&yaml(4));
    let users: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
    let before: Vec<String> = users
        .iter()
        .map(|u| server(&g.get(&format!("/v?user={u}"), None)))
        .collect();
    for (u, s) in users.iter().zip(&before) {
        assert_eq!(
            &server(&g.get(&format!("/v?user={u}"), None)),
            s,
            "stable for {u}"
        );
        let by_header = g.request("GET", "/h", &[("X-User", u)]);
        assert_eq!(&server(&by_header), s, "header and var keys hash alike");
    }
    g.update(&yaml(5));
    let after: Vec<String> = users
        .iter()
        .map(|u| server(&g.get(&format!("/v?user={u}"), None)))
        .collect();
    let moved: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(_, a)| a)
        .collect();
    assert!(
        (30..110).contains(&moved.len()),
        "about 1/5 of 300 keys move: {}",
        moved.len()
    );
    assert!(moved.iter().all(|s| *s == "n4"), "only to the new node");
}

#[test]
fn ewma_steers_away_from_a_slow_node() {
    let fast = Echo::start("fast");
    let slow = Echo::start_slow("slow", Duration::from_millis(150));
    let g = Gateway::start(&format!(
        "routes:\n  - {{id: e, uri: /e, upstream: {{type: ewma, nodes: {{\"{}\": 1, \"{}\": 1}}}}}}\n",
        fast.addr(),
        slow.addr()
    ));
    let c = counts(&g, "/e", 80);
    // Round robin would send 40; timing noise on a busy machine can cost a few.
    assert!(c.get("slow").copied().unwrap_or(0) <= 16, "{c:?}");
    assert!(c.get("fast").copied().unwrap_or(0) >= 64, "{c:?}");
}

#[test]
fn least_conn_spreads_long_requests() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let g = Gateway::start(&format!(
        "routes:\n  - {{id: l, uri: /sleep/*, upstream: {{type: least_conn, nodes: {{\"{}\": 1, \"{}\": 1}}}}}}\n",
        a.addr(),
        b.addr()
    ));
    let port = g.port;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(30));
            std::thread::spawn(move || {
                let r = harness::gateway::request(
                    port,
                    "GET",
                    &format!("/sleep/{}", 800 - i * 20),
                    &[],
                    "",
                );
                server(&r)
            })
        })
        .collect();
    let mut c: HashMap<String, usize> = HashMap::new();
    for t in threads {
        *c.entry(t.join().unwrap()).or_default() += 1;
    }
    assert_eq!((c.get("a"), c.get("b")), (Some(&3), Some(&3)), "{c:?}");
}

#[test]
fn priority_fallback_and_retries_hide_a_dead_node() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let dead = free_port();
    let g = Gateway::start(&format!(
        r#"routes:
  - {{id: p, uri: /p, upstream: {{nodes: [{{host: 127.0.0.1, port: {dead}, weight: 1, priority: 10}}, {{host: 127.0.0.1, port: {pa}, weight: 1, priority: 0}}]}}}}
  - {{id: r, uri: /r, upstream: {{nodes: {{"127.0.0.1:{dead}": 1, "{a}": 1, "{b}": 1}}}}}}
  - {{id: last, uri: /last, upstream: {{retries: 1, nodes: {{"127.0.0.1:{dead}": 1, "127.0.0.1:{dead2}": 1}}}}}}
  - {{id: slow, uri: /sleep/*, timeout: {{read: 0.2}}, upstream: {{nodes: {{"{a}": 1, "{b}": 1}}}}}}
"#,
        pa = a.port,
        a = a.addr(),
        b = b.addr(),
        dead2 = free_port()
    ));
    // The high-priority node is dead: the lower one serves, and the client never sees it.
    for _ in 0..10 {
        let r = g.get("/p", None);
        assert_eq!(r.status, 200, "{r:?}");
    }
    // One dead node of three: zero client-visible errors for GETs.
    let c = counts(&g, "/r", 60);
    assert_eq!(
        c.get("a").copied().unwrap_or(0) + c.get("b").copied().unwrap_or(0),
        60,
        "{c:?}"
    );
    // After the last try: 502 for refused connections, 504 for timeouts.
    assert_eq!(g.get("/last", None).status, 502);
    assert_eq!(g.get("/sleep/1000", None).status, 504);
}

#[test]
fn a_node_killed_under_load_is_taken_out_and_put_back() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let b_port = b.port;
    let g = Gateway::start(&format!(
        r#"routes:
  - {{id: k, uri: /k, upstream_id: u}}
  - {{id: other, uri: /other, upstream_id: u}}
upstreams:
  - id: u
    nodes: {{"{a}": 1, "{b}": 1}}
    checks:
      active:
        http_path: /health
        timeout: 0.5
        healthy: {{interval: 0.2, successes: 2}}
        unhealthy: {{interval: 0.2, tcp_failures: 2, http_failures: 2}}
      passive:
        unhealthy: {{tcp_failures: 1}}
"#,
        a = a.addr(),
        b = b.addr()
    ));
    let node_b = format!("127.0.0.1:{b_port}");
    assert!(wait_until(Duration::from_secs(5), || healthy(
        &g,
        "upstreams/u",
        &node_b
    ) == Some(true)));
    let port = g.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen: HashMap<String, usize> = HashMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = harness::gateway::request(port, "GET", "/k", &[], "");
                *seen.entry(server(&r)).or_default() += 1;
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    b.stop();
    assert!(
        wait_until(Duration::from_secs(5), || healthy(
            &g,
            "upstreams/u",
            &node_b
        ) == Some(false)),
        "the checks take the dead node out:\n{}",
        g.log()
    );
    // Unrelated config change: the node's health is kept.
    let text = std::fs::read_to_string(g.yaml_path())
        .unwrap()
        .replace("/other", "/other2");
    g.update(&text);
    assert_eq!(
        healthy(&g, "upstreams/u", &node_b),
        Some(false),
        "kept across the swap"
    );
    let b = Echo::start_on("b", b_port);
    assert!(
        wait_until(Duration::from_secs(5), || healthy(
            &g,
            "upstreams/u",
            &node_b
        ) == Some(true)),
        "put back once it answers again"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.join().unwrap();
    let errors: usize = seen
        .iter()
        .filter(|(k, _)| k.starts_with("status"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, 0, "no client-visible error: {seen:?}");
    assert!(seen.get("b").copied().unwrap_or(0) > 0);
    drop(b);
}

#[test]
fn host_name_nodes_are_resolved() {
    let a = Echo::start("a");
    let g = Gateway::start(&format!(
        "routes:\n  - {{id: n, uri: /n, upstream: {{nodes: {{\"localhost:{}\": 1}}}}}}\n",
        a.port
    ));
    assert_eq!(server(&g.get("/n", None)), "a");
}

/// `openssl s_server -www` on a free port: a real TLS backend answering `GET /`.
struct TlsServer {
    port: u16,
    child: std::process::Child,
}

impl TlsServer {
    fn start(certs: &harness::Certs, require_client_cert: bool) -> TlsServer {
        let port = free_port();
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certs.path("server.pem"))
            .arg("-key")
            .arg(certs.path("server.key"));
        if require_client_cert {
            cmd.arg("-Verify")
                .arg("1")
                .arg("-CAfile")
                .arg(certs.path("ca.pem"));
        }
        let child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        assert!(wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        TlsServer { port, child }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_upstreams_with_and_without_verification_and_client_certificates() {
    let certs = harness::Certs::generate();
    let plain = TlsServer::start(&certs, false);
    let mtls = TlsServer::start(&certs, true);
    let pem =
        |f: &str| serde_json::to_string(&std::fs::read_to_string(certs.path(f)).unwrap()).unwrap();
    let yaml = format!(
        r#"routes:
  - {{id: plain, uri: /, host: plain.test, upstream: {{scheme: https, nodes: {{"127.0.0.1:{p}": 1}}}}}}
  - {{id: verify, uri: /, host: verify.test, upstream: {{scheme: https, pass_host: rewrite, upstream_host: localhost, tls: {{verify: true}}, nodes: {{"127.0.0.1:{p}": 1}}}}}}
  - {{id: wrongname, uri: /, host: wrongname.test, upstream: {{scheme: https, pass_host: rewrite, upstream_host: other.test, tls: {{verify: true}}, nodes: {{"127.0.0.1:{p}": 1}}}}}}
  - {{id: mtls, uri: /, host: mtls.test, upstream: {{scheme: https, tls: {{client_cert: {cert}, client_key: {key}}}, nodes: {{"127.0.0.1:{m}": 1}}}}}}
  - {{id: byid, uri: /, host: byid.test, upstream: {{scheme: https, tls: {{client_cert_id: c1}}, nodes: {{"127.0.0.1:{m}": 1}}}}}}
  - {{id: nocert, uri: /, host: nocert.test, upstream: {{scheme: https, nodes: {{"127.0.0.1:{m}": 1}}}}}}
ssls:
  - {{id: c1, type: client, cert: {cert}, key: {key}}}
"#,
        p = plain.port,
        m = mtls.port,
        cert = pem("client.pem"),
        key = pem("client.key"),
    );
    let g = Gateway::start_with_upstream_ca(&yaml, &certs.path("ca.pem"));
    let status = |host: &str| g.get("/", Some(host)).status;
    assert_eq!(status("plain.test"), 200, "{}", g.log());
    assert_eq!(
        status("verify.test"),
        200,
        "verified against the configured CA:\n{}",
        g.log()
    );
    assert_eq!(
        status("wrongname.test"),
        502,
        "a name the certificate does not carry"
    );
    assert_eq!(
        status("mtls.test"),
        200,
        "client certificate from the upstream:\n{}",
        g.log()
    );
    assert_eq!(
        status("byid.test"),
        200,
        "client certificate from an ssl object"
    );
    assert_eq!(
        status("nocert.test"),
        502,
        "the backend wants a client certificate"
    );
}

#[test]
fn keepalive_pool_requests_per_connection() {
    let a = Echo::start("a");
    let g = Gateway::start_one_thread(&format!(
        "routes:\n  - {{id: k, uri: /k, upstream: {{keepalive_pool: {{requests: 3, idle_timeout: 30, size: 10}}, nodes: {{\"{}\": 1}}}}}}\n  - {{id: d, uri: /d, upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
        a.addr(),
        a.addr()
    ));
    let ports = |path: &str| {
        (0..9)
            .map(|_| {
                // Give the gateway a moment to put the connection back in its pool.
                std::thread::sleep(Duration::from_millis(150));
                g.get(path, None).echo()["client_port"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    // A connection goes back to the pool just after the client has its answer, so the next
    // request sometimes opens another one: count at least, not exactly.
    assert!(
        ports("/k") >= 3,
        "a new upstream connection every 3 requests"
    );
    let d = ports("/d");
    assert!(
        d <= 2,
        "by default pooled connections are reused: {d} for 9 requests"
    );
}

#[test]
fn keepalive_pool_size_per_peer() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let g = Gateway::start_one_thread(&format!(
        "routes:\n  - {{id: small, uri: /sleep/*, host: small, upstream: {{keepalive_pool: {{size: 2, idle_timeout: 30}}, nodes: {{\"{}\": 1}}}}}}\n  - {{id: big, uri: /sleep/*, host: big, upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
        a.addr(),
        b.addr()
    ));
    // Eight requests at once need eight connections to each node.
    let burst = |host: &str| {
        std::thread::scope(|s| {
            let replies: Vec<_> = (0..8)
                .map(|_| s.spawn(|| g.get("/sleep/400", Some(host))))
                .collect();
            for r in replies {
                let r = r.join().expect("request thread");
                assert_eq!(r.status, 200, "{r:?}");
            }
        })
    };
    burst("small");
    burst("big");
    assert_eq!(a.open_connections(), 8);
    // Past the spare connections' grace, `size` stay open; the default (320) keeps all.
    wait_until(Duration::from_secs(5), || a.open_connections() == 2);
    assert_eq!(a.open_connections(), 2, "keepalive_pool.size is 2");
    assert_eq!(b.open_connections(), 8, "the default size keeps all eight");
    // The gateway's own count agrees.
    let (_, body) = harness::http_get(g.status_port, "/status/connections").expect("status");
    let peers: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let peer = |addr: String| {
        peers
            .as_array()
            .and_then(|l| l.iter().find(|p| p["peer"] == addr.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(peer(a.addr())["open"], 2, "{peers}");
    assert_eq!(peer(a.addr())["kept_idle"], 2, "{peers}");
    assert_eq!(peer(b.addr())["open"], 8, "{peers}");
    // The two kept connections serve what follows, and no other is opened.
    let ports: std::collections::BTreeSet<_> = (0..6)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            g.get("/sleep/0", Some("small")).echo()["client_port"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert!(ports.len() <= 2, "pooled connections reused: {ports:?}");
    assert_eq!(a.open_connections(), 2);
}

#[test]
fn retry_timeout_and_all_nodes_unhealthy() {
    let a = Echo::start("a");
    let dead = free_port();
    let g = Gateway::start(&format!(
        r#"routes:
  - {{id: quick, uri: /quick, upstream: {{retry_timeout: 0.000001, nodes: [{{host: 127.0.0.1, port: {dead}, weight: 100}}, {{host: 127.0.0.1, port: {pa}, weight: 1}}]}}}}
  - {{id: patient, uri: /patient, upstream: {{nodes: [{{host: 127.0.0.1, port: {dead}, weight: 100}}, {{host: 127.0.0.1, port: {pa}, weight: 1}}]}}}}
  - {{id: all, uri: /all, upstream: {{checks: {{active: {{healthy: {{interval: 300}}, unhealthy: {{interval: 300}}}}, passive: {{unhealthy: {{tcp_failures: 1, http_statuses: [500]}}}}}}, nodes: [{{host: 127.0.0.1, port: {dead}, weight: 1}}, {{host: 127.0.0.1, port: {pa}, weight: 1}}]}}}}
"#,
        pa = a.port
    ));
    // The dead node is tried first; past retry_timeout there is no second try.
    assert_eq!(g.get("/quick", None).status, 502);
    assert_eq!(g.get("/patient", None).status, 200);
    // The dead node turns unhealthy on its first failure; the live one keeps serving.
    for _ in 0..4 {
        assert_eq!(g.get("/all", None).status, 200);
    }
    let node = format!("127.0.0.1:{dead}");
    assert_eq!(healthy(&g, "routes/all (inline)", &node), Some(false));
    // Now the live node goes too: with every node unhealthy, traffic goes to all of them.
    a.stop();
    for _ in 0..4 {
        g.get("/all", None);
    }
    assert_eq!(
        healthy(&g, "routes/all (inline)", &format!("127.0.0.1:{}", a.port)),
        Some(false)
    );
    let back = Echo::start_on("a", a.port);
    assert!(
        (0..6).any(|_| g.get("/all", None).status == 200),
        "all nodes unhealthy: they are all tried, and the one that is back answers"
    );
    drop(back);
}

//! What the proxy does with a matched request, and its error codes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::free_port;
use crate::harness::gateway::{request, Echo, Gateway};

#[test]
fn headers_host_balancing_bodies_and_websocket() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let yaml = format!(
        r#"
routes:
  - {{id: pass, uri: /pass, upstream_id: ab}}
  - {{id: node, uri: /node, upstream: {{nodes: {{"{a}": 1}}, pass_host: node}}}}
  - {{id: ws, uri: /ws, enable_websocket: true, upstream: {{nodes: {{"{a}": 1}}}}}}
  - {{id: ws1, uri: /ws1, enable_websocket: true, upstream: {{keepalive_pool: {{requests: 1}}, nodes: {{"{a}": 1}}}}}}
  - {{id: nows, uri: /nows, upstream: {{nodes: {{"{a}": 1}}}}}}
  - {{id: body, uri: /body, methods: [POST], upstream_id: ab}}
  - {{id: weighted, uri: /w, upstream: {{nodes: [{{host: 127.0.0.1, port: {pa}, weight: 2}}, {{host: 127.0.0.1, port: {pb}, weight: 1}}]}}}}
  - {{id: prio, uri: /prio, upstream: {{nodes: [{{host: 127.0.0.1, port: {pa}, weight: 1, priority: 0}}, {{host: 127.0.0.1, port: {pb}, weight: 1, priority: 1}}]}}}}
upstreams:
  - id: ab
    nodes:
      "{a}": 1
"#,
        a = a.addr(),
        pa = a.port,
        pb = b.port
    );
    let g = Gateway::start(&yaml);

    // Forwarded headers as APISIX sets them; the client's Host passes by default.
    let r = g.request(
        "GET",
        "/pass?x=1",
        &[("Host", "shop.test:8443"), ("X-Forwarded-For", "1.2.3.4")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.echo()["headers"];
    assert_eq!(r.echo()["path"], "/pass?x=1");
    assert_eq!(h["host"], "shop.test:8443");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test:8443");
    assert_eq!(h["x-forwarded-port"], g.port.to_string());
    // pass_host: node
    assert_eq!(g.get("/node", Some("x.test")).upstream_host(), a.addr());

    // Weighted round robin, 2:1.
    let mut counts = std::collections::HashMap::new();
    for _ in 0..30 {
        let r = g.get("/w", None);
        *counts
            .entry(r.echo()["server"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&20), Some(&10)),
        "{counts:?}"
    );
    // Only the highest priority takes traffic.
    assert!((0..5).all(|_| g.get("/prio", None).echo()["server"] == "b"));

    // A large body goes through whole.
    let big = "z".repeat(2 * 1024 * 1024);
    let r = request(g.port, "POST", "/body", &[], &big);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["body"].as_str().map(str::len), Some(big.len()));

    // Websocket upgrade only where enabled; also on a connection's last request
    // (`keepalive_pool.requests: 1`), where `Connection: Upgrade` must stay.
    for path in ["/ws", "/ws1"] {
        let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
        s.write_all(b"ping over the upgraded connection").unwrap();
        let mut got = Vec::new();
        while got.len() < 33 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[..], b"ping over the upgraded connection");
    }
    let r = g.request(
        "GET",
        "/nows",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
    );
    assert_eq!(r.status, 200, "no upgrade without enable_websocket: {r:?}");
    assert!(r.echo()["headers"].get("upgrade").is_none());
}

#[test]
fn error_codes_and_unreachable_upstreams() {
    let echo = Echo::start("e");
    let dead = free_port();
    let yaml = format!(
        r#"
routes:
  - {{id: no-upstream, uri: /no-upstream, upstream_id: missing}}
  - {{id: no-service, uri: /no-service, service_id: missing}}
  - {{id: no-pc, uri: /no-pc, plugin_config_id: missing, upstream_id: ok}}
  - {{id: empty, uri: /empty, upstream: {{nodes: {{}}}}}}
  - {{id: zero, uri: /zero, upstream: {{nodes: {{"{e}": 0}}}}}}
  - {{id: dead, uri: /dead, upstream: {{nodes: {{"127.0.0.1:{dead}": 1}}}}}}
  - {{id: slow, uri: /sleep/*, timeout: {{read: 0.3}}, upstream_id: ok}}
  - {{id: retry, uri: /retry, upstream: {{nodes: {{"127.0.0.1:{dead}": 100, "{e}": 1}}}}}}
  - {{id: nothing, uri: /nothing}}
upstreams:
  - {{id: ok, nodes: {{"{e}": 1}}}}
"#,
        e = echo.addr()
    );
    let g = Gateway::start(&yaml);
    assert_eq!(g.get("/no-upstream", None).status, 502);
    assert_eq!(g.get("/no-service", None).status, 404);
    assert_eq!(g.get("/no-pc", None).status, 503);
    assert_eq!(g.get("/empty", None).status, 502);
    assert_eq!(g.get("/zero", None).status, 502);
    assert_eq!(g.get("/nothing", None).status, 502);
    assert_eq!(g.get("/dead", None).status, 502);
    let log = g.log();
    assert!(
        log.contains("route dead") && log.contains(&format!("127.0.0.1:{dead}")),
        "the log names the route and the node:\n{log}"
    );
    // A read timeout from the route: 504.
    let start = std::time::Instant::now();
    assert_eq!(g.get("/sleep/2000", None).status, 504);
    assert!(start.elapsed() < Duration::from_millis(1800));
    assert_eq!(g.get("/sleep/10", None).status, 200);
    // A dead node is retried on the other one (retries default to nodes - 1).
    for _ in 0..5 {
        assert_eq!(g.get("/retry", None).status, 200);
    }
}

//! Clients that hold connections or send too much: every resource bounded (short limits
//! configured so the tests are quick).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::gateway::{request, Echo, Gateway};

fn route(echo: &Echo) -> String {
    format!(
        "routes:\n  - {{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
        echo.addr()
    )
}

/// Seconds until the server closes `s` (reads until EOF or error), at most `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn slow_idle_and_oversized_clients_are_cut_off() {
    let echo = Echo::start("lim");
    let g = Gateway::start_with_proxy(
        &route(&echo),
        "  client_header_timeout: 1s\n  keepalive_timeout: 1\n  client_max_body_size: 1k\n",
    );
    // A header trickled a byte at a time, each within any per-read timeout: the total
    // deadline closes it.
    let mut slow = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let waited = if cut {
        Some(started.elapsed())
    } else {
        closed_within(&mut slow, Duration::from_secs(5)).map(|_| started.elapsed())
    };
    assert!(
        waited.is_some_and(|w| w < Duration::from_secs(4)),
        "{waited:?}"
    );

    // An idle keep-alive connection is closed after keepalive_timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    idle.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let after = closed_within(&mut idle, Duration::from_secs(6));
    assert!(
        after.is_some_and(|w| w < Duration::from_secs(4)),
        "{after:?}"
    );

    // Too long a target, too big a header, too big a body.
    let long = format!("/{}", "a".repeat(9000));
    assert_eq!(g.request("GET", &long, &[]).status, 414);
    let big = "b".repeat(9000);
    assert_eq!(g.request("GET", "/h", &[("X-Big", &big)]).status, 431);
    let r = request(g.port, "POST", "/body", &[], &"c".repeat(2000));
    assert_eq!(r.status, 413);
    assert!(
        r.body.contains("413 Request Entity Too Large"),
        "{}",
        r.body
    );
    assert_eq!(
        request(g.port, "POST", "/body", &[], &"c".repeat(500)).status,
        200
    );
    // A chunked body is counted as it comes.
    let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = "d".repeat(800);
    let req = format!(
        "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Still serving.
    assert_eq!(g.get("/after", None).status, 200);
}

#[test]
fn open_connections_are_capped() {
    let echo = Echo::start("cap");
    let g = Gateway::start_with_proxy(&route(&echo), "  max_connections: 3\n");
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", g.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let _ = extra.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(closed_within(&mut extra, Duration::from_secs(3)).is_some());
    assert!(crate::harness::wait_until(Duration::from_secs(5), || g
        .log()
        .contains("max_connections (3) reached")));
    drop(held);
    assert!(crate::harness::wait_until(Duration::from_secs(5), || g
        .get("/back", None)
        .status
        == 200));
}

/// One raw request; the status and the body.
fn raw(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn request_targets_and_hosts_as_nginx_treats_them() {
    let echo = Echo::start("t");
    let g = Gateway::start(&format!(
        "routes:\n  - {{id: good, uri: /h/*, host: good.example, upstream: {{nodes: {{\"{a}\": 1}}, pass_host: rewrite, upstream_host: r-good}}}}\n  - {{id: any, uri: /h/*, upstream: {{nodes: {{\"{a}\": 1}}, pass_host: rewrite, upstream_host: r-any}}}}\n",
        a = echo.addr()
    ));
    // Absolute form: routed by its own host, sent upstream in origin form.
    let (status, out) = raw(
        g.port,
        "GET http://good.example/h/x?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("\"path\":\"/h/x?q=1\""), "{out}");
    assert!(out.contains("r-good"), "{out}");
    // A trailing dot in Host is dropped before matching.
    let r = g.request("GET", "/h/y", &[("Host", "good.example.")]);
    assert_eq!(r.upstream_host(), "r-good");
    for bad in [
        "GET /h/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /h/x HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        "GET /h/x HTTP/1.1\r\nHost: t/admin\r\nConnection: close\r\n\r\n",
        "GET /h/x HTTP/1.1\r\nHost: t:99999999\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(raw(g.port, bad).0, 400, "{bad:?}");
    }
    let (status, _) = raw(
        g.port,
        "TRACE /h/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    // HTTP/1.0 needs no Host.
    assert_eq!(raw(g.port, "GET /h/x HTTP/1.0\r\n\r\n").0, 200);
}

#[test]
fn a_config_error_met_by_requests_is_logged_once_a_minute() {
    let g = Gateway::start("routes:\n  - {id: lost, uri: /lost, service_id: gone}\n");
    for _ in 0..5 {
        assert_eq!(g.get("/lost", None).status, 404);
    }
    let log = g.log();
    assert_eq!(log.matches("service gone not found").count(), 1, "{log}");
}

#[test]
fn a_client_that_never_reads_is_dropped_after_send_timeout() {
    let echo = Echo::start("big");
    let g = Gateway::start_with_proxy(&route(&echo), "  send_timeout: 1\n");
    // The echo server answers with the body it got: 16 MB that the client will not read.
    let body = "a".repeat(16 * 1024 * 1024);
    let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    s.set_nonblocking(false).unwrap();
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    // Not reading: the gateway's writes stall, and send_timeout gives up on the client.
    std::thread::sleep(Duration::from_secs(4));
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.len() < body.len(),
        "the whole answer ({} bytes) arrived: the gateway waited for the client",
        got.len()
    );
    assert!(crate::harness::wait_until(Duration::from_secs(5), || g
        .log()
        .to_lowercase()
        .contains("timed")));
    assert_eq!(g.get("/after", None).status, 200);
}

//! Helpers for `examples/sync_bench.sh`: load routes into etcd, measure propagation from an
//! etcd put to the gateway, and churn routes while `wrk` runs.
//!
//! cargo run --release --example sync_bench -- load --etcd URL --routes N --upstream ADDR
//! cargo run --release --example sync_bench -- propagation --etcd URL --gateway PORT [--changes 200]
//! cargo run --release --example sync_bench -- churn --etcd URL --rate 100 --seconds 10

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use portico::etcd::{Client, ClientOptions, SetOptions, TxnOp};
use serde_json::json;

struct Args {
    cmd: String,
    etcd: String,
    routes: usize,
    upstream: String,
    gateway: u16,
    changes: usize,
    rate: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        cmd: String::new(),
        etcd: "http://127.0.0.1:2379".into(),
        routes: 10,
        upstream: "127.0.0.1:80".into(),
        gateway: 9080,
        changes: 200,
        rate: 100,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    a.cmd = it.next().unwrap_or_default();
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--etcd" => a.etcd = v,
            "--routes" => a.routes = v.parse().unwrap_or(10),
            "--upstream" => a.upstream = v,
            "--gateway" => a.gateway = v.parse().unwrap_or(9080),
            "--changes" => a.changes = v.parse().unwrap_or(200),
            "--rate" => a.rate = v.parse().unwrap_or(100),
            "--seconds" => a.seconds = v.parse().unwrap_or(10),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

/// Route `i` of the mix: exact, prefix, host-bound and wildcard-host routes.
fn route(i: usize) -> serde_json::Value {
    let mut r = match i % 4 {
        0 => json!({"uri": format!("/api/v{}/svc{i}/items", i % 7)}),
        1 => json!({"uri": format!("/pfx/{i}/*")}),
        2 => json!({"uri": format!("/h/{i}"), "host": format!("h{}.example.com", i % 1000)}),
        _ => json!({"uri": format!("/w/{i}*"), "host": format!("*.w{}.example.com", i % 500)}),
    };
    r["id"] = json!(format!("r{i}"));
    r["upstream_id"] = json!("1");
    r
}

async fn load(c: &Client, a: &Args) {
    let started = Instant::now();
    let upstream = json!({"id": "1", "nodes": {a.upstream.clone(): 1}, "type": "roundrobin"});
    c.set("/apisix/upstreams/1", &upstream, SetOptions::default())
        .await
        .expect("upstream");
    let stable = json!({"id": "stable", "uri": "/hello", "upstream_id": "1"});
    c.set("/apisix/routes/stable", &stable, SetOptions::default())
        .await
        .expect("stable route");
    let mut ops = Vec::with_capacity(128);
    for i in 0..a.routes {
        ops.push(TxnOp::put(
            format!("/apisix/routes/r{i}"),
            route(i),
            SetOptions::default(),
        ));
        if ops.len() == 128 || i + 1 == a.routes {
            c.txn(&[], &ops, &[]).await.expect("txn");
            ops.clear();
        }
    }
    println!("loaded {} routes in {:?}", a.routes, started.elapsed());
}

/// Asks the gateway for `path` over `conn` (reconnecting when needed); returns the status.
fn status_of(conn: &mut Option<TcpStream>, port: u16, path: &str) -> u16 {
    for _ in 0..2 {
        if conn.is_none() {
            *conn = TcpStream::connect(("127.0.0.1", port)).ok();
            if let Some(s) = conn.as_ref() {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            }
        }
        let Some(s) = conn.as_mut() else { return 0 };
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            *conn = None;
            continue;
        }
        // Read the head and a Content-Length body.
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    *conn = None;
                    break;
                }
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return text
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    0
}

async fn propagation(c: &Client, a: &Args) {
    let mut samples = Vec::with_capacity(a.changes);
    let mut conn = None;
    for k in 0..a.changes {
        let path = format!("/prop/{k}/{}", std::process::id());
        let r = json!({"id": format!("prop{k}"), "uri": path, "upstream_id": "1"});
        c.set(
            &format!("/apisix/routes/prop{k}"),
            &r,
            SetOptions::default(),
        )
        .await
        .expect("put");
        let acked = Instant::now();
        loop {
            if status_of(&mut conn, a.gateway, &path) == 200 {
                samples.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                eprintln!("change {k} not seen after 10 s");
                break;
            }
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "propagation over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(0.5),
        pct(0.99),
        samples.last().copied().unwrap_or_default()
    );
    for k in 0..a.changes {
        let _ = c
            .delete(&format!("/apisix/routes/prop{k}"), Default::default())
            .await;
    }
}

async fn churn(c: &Client, a: &Args) {
    let every = Duration::from_micros(1_000_000 / a.rate.max(1));
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut n = 0u64;
    let mut tick = tokio::time::interval(every);
    while Instant::now() < end {
        tick.tick().await;
        let i = n % 100;
        let r = json!({"id": format!("churn{i}"), "uri": format!("/churn/{i}/{}", n % 7), "upstream_id": "1"});
        if c.set(
            &format!("/apisix/routes/churn{i}"),
            &r,
            SetOptions::default(),
        )
        .await
        .is_ok()
        {
            n += 1;
        }
    }
    println!("churned {n} route changes in {} s", a.seconds);
}

#[tokio::main]
async fn main() {
    let a = args();
    let c = Client::new(ClientOptions {
        endpoints: vec![a.etcd.clone()],
        ..Default::default()
    })
    .expect("client");
    match a.cmd.as_str() {
        "load" => load(&c, &a).await,
        "propagation" => propagation(&c, &a).await,
        "churn" => churn(&c, &a).await,
        _ => {
            eprintln!("usage: sync_bench load|propagation|churn [options]");
            std::process::exit(2);
        }
    }
}

//! Router figures: build time, matches per second on one core, and resident memory, for 1k,
//! 10k and 100k routes (a mix of exact, prefix, host-bound and wildcard-host routes).
//!
//! cargo run --release --example router_bench -- [ROUTES...]   (default: 1000 10000 100000)

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico::model::Route;
use portico::router::{Request, RouteEntry, Router};
use portico::vars::VarLookup;
use serde_json::json;

struct NoVars;

impl VarLookup for NoVars {
    fn var(&self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Route `i` of the mix, as APISIX JSON.
fn route_json(i: usize) -> serde_json::Value {
    match i % 4 {
        0 => {
            json!({"id": i + 1, "uri": format!("/api/v{}/svc{i}/items", i % 7), "methods": ["GET", "POST"]})
        }
        1 => json!({"id": i + 1, "uri": format!("/pfx/{i}/*")}),
        2 => {
            json!({"id": i + 1, "uri": format!("/h/{i}"), "host": format!("h{}.example.com", i % 1000)})
        }
        _ => {
            json!({"id": i + 1, "uri": format!("/w/{i}*"), "host": format!("*.w{}.example.com", i % 500)})
        }
    }
}

/// A request that hits route `i` (or misses, for every fifth).
fn request_for(i: usize) -> (Option<String>, String) {
    if i % 5 == 4 {
        return (Some("nowhere.example.org".into()), format!("/missing/{i}"));
    }
    match i % 4 {
        0 => (None, format!("/api/v{}/svc{i}/items", i % 7)),
        1 => (None, format!("/pfx/{i}/deeper/path")),
        2 => (
            Some(format!("h{}.example.com", i % 1000)),
            format!("/h/{i}"),
        ),
        _ => (
            Some(format!("a.w{}.example.com", i % 500)),
            format!("/w/{i}/x"),
        ),
    }
}

fn bench(n: usize) {
    let rss_before = rss_mb();
    let routes: Vec<Arc<RouteEntry>> = (0..n)
        .map(|i| {
            let route = Route::parse(&route_json(i), None).expect("valid route");
            Arc::new(RouteEntry {
                chain: Default::default(),
                hosts: route.hosts.clone(),
                route: Arc::new(route),
                seq: i as u64,
            })
        })
        .collect();
    let started = Instant::now();
    let router = Router::build(routes.iter().cloned());
    let build = started.elapsed();
    let rss_after = rss_mb();

    let requests: Vec<(Option<String>, String)> =
        (0..4096).map(|k| request_for((k * 7919) % n)).collect();
    let vars = NoVars;
    let mut matched = 0usize;
    let mut done = 0usize;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        for (host, path) in &requests {
            let hit = router.find(&Request {
                host: host.as_deref(),
                path,
                method: "GET",
                remote_addr: None,
                vars: &vars,
            });
            matched += usize::from(hit.is_some());
        }
        done += requests.len();
    }
    let per_sec = done as f64 / started.elapsed().as_secs_f64();
    println!(
        "{n:>7} routes: build {:>8.1} ms, {:>6.2} M matches/s (one core, {:.0}% hits), RSS {:.0} MB (router and routes {:.0} MB)",
        build.as_secs_f64() * 1000.0,
        per_sec / 1e6,
        100.0 * matched as f64 / done as f64,
        rss_after,
        rss_after - rss_before,
    );
    drop(router);
    drop(routes);
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    for n in sizes {
        bench(n);
    }
}

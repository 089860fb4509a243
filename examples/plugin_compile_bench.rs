//! What plugins cost the tables: time and memory to compile N routes that each carry three
//! plugins (key-auth, proxy-rewrite, cors), against N bare routes.
//!
//!   cargo run --release --example plugin_compile_bench -- 10000
//!   NO_REGEX=1 cargo run --release --example plugin_compile_bench -- 10000   (proxy-rewrite
//!   with a plain `uri` instead of a `regex_uri` of its own per route)
//!
//! Each kind is built in a child process of its own, so one's memory does not hide the
//! other's.

use std::process::Command;
use std::time::Instant;

use portico::model::{Kind, Resource};
use portico::tables::{ConfigSet, Tables};
use serde_json::json;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn build(n: usize, plugins: bool) {
    let values: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut r = json!({
                "id": format!("r{i}"),
                "uri": format!("/api/{i}/*"),
                "host": format!("h{}.test", i % 100),
                "upstream": {"nodes": {"127.0.0.1:1980": 1}},
            });
            if plugins && std::env::var_os("NO_REGEX").is_some() {
                r["plugins"] = json!({
                    "key-auth": {},
                    "proxy-rewrite": {"uri": "/x", "headers": {"set": {"X-Route": format!("r{i}")}}},
                    "cors": {"allow_origins": "http://a.test,http://b.test"},
                });
            } else if plugins {
                r["plugins"] = json!({
                    "key-auth": {},
                    "proxy-rewrite": {"regex_uri": [format!("^/api/{i}/(.*)"), "/$1"], "headers": {"set": {"X-Route": format!("r{i}")}}},
                    "cors": {"allow_origins": "http://a.test,http://b.test"},
                });
            }
            r
        })
        .collect();
    let before = rss();
    let started = Instant::now();
    let mut config = ConfigSet::default();
    for (i, v) in values.iter().enumerate() {
        match Resource::parse(Kind::Route, v, None) {
            Ok(r) => config.insert(i as u64, r),
            Err(e) => panic!("route {i}: {e}"),
        }
    }
    let parsed = started.elapsed();
    let tables = Tables::compile(config, Vec::new(), &Tables::default());
    let total = started.elapsed();
    let after = rss();
    println!(
        "{:>6} routes {:<22} parse+check {:>7.1} ms, compile {:>7.1} ms, total {:>7.1} ms, memory +{:.1} MB ({} routes filed)",
        n,
        if plugins { "with 3 plugins each" } else { "bare" },
        parsed.as_secs_f64() * 1e3,
        (total - parsed).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        after.saturating_sub(before) as f64 / 1e6,
        tables.router.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    match args.get(2).map(String::as_str) {
        Some("bare") => build(n, false),
        Some("plugins") => build(n, true),
        _ => {
            let me = std::env::current_exe().expect("own path");
            for kind in ["bare", "plugins"] {
                let status = Command::new(&me).arg(n.to_string()).arg(kind).status();
                if !status.is_ok_and(|s| s.success()) {
                    eprintln!("the {kind} run failed");
                    std::process::exit(1);
                }
            }
        }
    }
}

//! The plugin pipeline through the real binary: each plugin's answers for the allowed and the
//! refused request, checked against what the upstream (a real echo server) received.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

mod auth;
mod body;
mod custom;
mod etcd;
mod pipeline;
mod redis;
mod traffic;

use serde_json::Value;

use harness::gateway::{Echo, Gateway};

/// An apisix.yaml with `routes` (each sent to `echo` unless it names an upstream) and any
/// other sections given as (name, items).
pub fn yaml(echo: &Echo, routes: Vec<Value>, other: &[(&str, Vec<Value>)]) -> String {
    let mut s = String::from("routes:\n");
    for mut r in routes {
        if r.get("upstream").is_none()
            && r.get("upstream_id").is_none()
            && r.get("service_id").is_none()
        {
            r["upstream"] = serde_json::json!({"nodes": {echo.addr(): 1}});
        }
        s.push_str(&format!("  - {r}\n"));
    }
    for (name, items) in other {
        s.push_str(&format!("{name}:\n"));
        for i in items {
            s.push_str(&format!("  - {i}\n"));
        }
    }
    s.push_str("#END\n");
    s
}

/// Starts a gateway on `yaml` with one echo upstream.
pub fn start(echo: &Echo, routes: Vec<Value>, other: &[(&str, Vec<Value>)]) -> Gateway {
    Gateway::start(&yaml(echo, routes, other))
}

//! A gateway with a plugin of your own, next to the built-in ones.
//!
//! `tenant-guard` lets a request through only when its `X-Tenant` header names one of the
//! route's tenants, and tells the upstream which tenant it was. It is configured like any
//! APISIX plugin, in etcd or the YAML file:
//!
//! ```yaml
//! routes:
//!   - uri: /api/*
//!     plugins:
//!       tenant-guard: {tenants: ["acme", "globex"], header: X-Tenant}
//! ```
//!
//! Run it exactly like `portico`: `cargo run --example custom_plugin -- -c conf/config.yaml`.
//! Its settings are typed and checked when the route loads: a route with
//! `tenant-guard: {tenants: []}` is rejected (and shown in `/status`), never served open.

use std::process::ExitCode;
use std::sync::Arc;

use portico::plugin::{parse_settings, Answer, Cx, Factory, Flow, Plugin, Registry};
use serde::Deserialize;
use serde_json::Value;

/// The settings, with APISIX-style defaults; unknown fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    tenants: Vec<String>,
    #[serde(default = "default_header")]
    header: String,
}

fn default_header() -> String {
    "X-Tenant".into()
}

struct TenantGuard {
    tenants: Vec<String>,
    header: String,
}

struct TenantGuardFactory;

impl Factory for TenantGuardFactory {
    fn name(&self) -> &'static str {
        "tenant-guard"
    }

    /// After authentication (rewrite), with the other access-phase restrictions.
    fn priority(&self) -> i32 {
        2450
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if s.tenants.is_empty() {
            return Err(
                "property \"tenants\" validation failed: expect array to have at least 1 items"
                    .into(),
            );
        }
        Ok(Arc::new(TenantGuard {
            tenants: s.tenants,
            header: s.header,
        }))
    }
}

impl Plugin for TenantGuard {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        match cx.header(&self.header) {
            Some(t) if self.tenants.iter().any(|k| k == t) => {
                let tenant = t.to_string();
                // Upstreams trust this header: the gateway sets it, never the client.
                let _ = cx.req_mut().insert_header("X-Tenant-Verified", tenant);
                Flow::Continue
            }
            Some(_) => Flow::Respond(Answer::message(403, "unknown tenant")),
            None => Flow::Respond(Answer::message(401, "missing tenant")),
        }
    }
}

fn main() -> ExitCode {
    let mut registry = Registry::builtin();
    registry.register(TenantGuardFactory);
    portico::server::run(registry)
}

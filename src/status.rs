//! `GET /status` (what is loaded, from where, what was rejected), `GET /status/ready`
//! (200 once a config is in place, else 503), `/status/keys`, `/status/upstreams` (node
//! health) and `/status/connections` (upstream connections per peer), on their own listener.

use parking_lot::Mutex;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::tables::Store;
use crate::upstream::keepalive::Pools;

/// Seconds since the Unix epoch (0 when the clock is before it).
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A view computed on demand (e.g. every key the etcd sync knows, with its revision).
pub type View = Arc<dyn Fn() -> Value + Send + Sync>;

/// What the config source reports about itself (provider-specific fields).
pub struct SourceStatus {
    pub provider: &'static str,
    detail: Mutex<Value>,
    keys: Mutex<Option<View>>,
}

impl std::fmt::Debug for SourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceStatus")
            .field("provider", &self.provider)
            .finish()
    }
}

impl SourceStatus {
    pub fn new(provider: &'static str) -> Arc<SourceStatus> {
        Arc::new(SourceStatus {
            provider,
            detail: Mutex::new(json!({})),
            keys: Mutex::new(None),
        })
    }

    /// Serves `view` at `GET /status/keys`.
    pub fn set_keys_view(&self, view: View) {
        *self.keys.lock() = Some(view);
    }

    fn keys(&self) -> Option<Value> {
        let view = self.keys.lock().clone();
        view.map(|v| v())
    }

    /// Sets one field of the source's detail.
    pub fn set(&self, key: &str, value: Value) {
        let mut detail = self.detail.lock();
        if let Value::Object(map) = &mut *detail {
            map.insert(key.to_string(), value);
        }
    }

    /// Whether the source answered last time it was asked (etcd: contacted, no error since).
    pub fn reachable(&self) -> bool {
        let detail = self.detail.lock();
        detail.get("last_contact").is_some() && detail.get("last_error").is_none_or(Value::is_null)
    }

    /// The source's revision and every key's `mod_revision`, when it keeps them (etcd).
    pub fn revisions(&self) -> Option<(i64, Vec<(String, i64)>)> {
        let view = self.keys()?;
        let revision = view.get("revision").and_then(Value::as_i64).unwrap_or(0);
        let keys = view
            .get("keys")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        Some((revision, keys))
    }

    fn snapshot(&self) -> Value {
        self.detail.lock().clone()
    }
}

pub struct StatusApp {
    store: Arc<Store>,
    source: Arc<SourceStatus>,
    pools: Arc<Pools>,
    /// The proxy's listeners, probed until each accepts a connection: Pingora binds them in
    /// the proxy service's own thread, which can start after this listener answers.
    proxy_listen: Vec<SocketAddr>,
    proxy_listening: AtomicBool,
}

impl StatusApp {
    pub fn new(
        store: Arc<Store>,
        source: Arc<SourceStatus>,
        pools: Arc<Pools>,
        proxy_listen: Vec<SocketAddr>,
    ) -> StatusApp {
        StatusApp {
            store,
            source,
            pools,
            proxy_listen,
            proxy_listening: AtomicBool::new(false),
        }
    }

    /// Whether every proxy listener accepts connections (once true, it stays true).
    async fn proxy_listening(&self) -> bool {
        if self.proxy_listening.load(Ordering::Relaxed) {
            return true;
        }
        for addr in &self.proxy_listen {
            // A wildcard address is reached through loopback.
            let mut to = *addr;
            if to.ip().is_unspecified() {
                to.set_ip(match to {
                    SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                });
            }
            let probe = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(to));
            if !matches!(probe.await, Ok(Ok(_))) {
                return false;
            }
        }
        self.proxy_listening.store(true, Ordering::Relaxed);
        true
    }

    fn status(&self) -> Value {
        let tables = self.store.load();
        let rejected: Vec<Value> = tables
            .rejected
            .iter()
            .chain(tables.conflicts.iter())
            .chain(tables.route_problems())
            .map(|r| json!({"kind": r.kind.dir(), "id": r.id, "error": r.message}))
            .collect();
        // Loud: a rejected global rule means every request goes without its plugins.
        let global_rejected: Vec<Value> = tables
            .rejected
            .iter()
            .filter(|r| r.kind == crate::model::Kind::GlobalRule)
            .map(|r| json!({"id": r.id, "error": r.message}))
            .collect();
        let mut source = self.source.snapshot();
        if let Some(at) = source.get("last_contact").and_then(Value::as_f64) {
            source["seconds_since_contact"] = json!((now_secs() - at).max(0.0));
        }
        json!({
            "provider": self.source.provider,
            "source": source,
            "ready": tables.loaded,
            "version": tables.version,
            "published_at": tables.published_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            "counts": tables.config.counts(),
            "routes_enabled": tables.router.len(),
            "rejected": rejected,
            "global_rules_rejected": global_rejected,
            "plugins": crate::plugin::registry().enabled_names().collect::<Vec<_>>(),
        })
    }
}

impl StatusApp {
    /// Every upstream's nodes with their health, load and latency.
    fn upstreams(&self) -> Value {
        let tables = self.store.load();
        let mut out = serde_json::Map::new();
        for (name, b) in tables.balancers() {
            let nodes: Vec<Value> = b
                .nodes()
                .iter()
                .map(|n| {
                    json!({
                        "node": n.node.authority(),
                        "weight": n.node.weight,
                        "priority": n.node.priority,
                        "healthy": n.health.is_healthy(),
                        "in_flight": n.stats.in_flight.load(Ordering::Relaxed),
                        "ewma_ms": n.stats.ewma_ms(),
                    })
                })
                .collect();
            out.insert(
                name.clone(),
                json!({
                    "active_checks": b.checks.active.is_some(),
                    "passive_checks": b.checks.passive.is_some(),
                    "nodes": nodes,
                }),
            );
        }
        Value::Object(out)
    }
}

fn reply(status: u16, body: String) -> Response<Vec<u8>> {
    let len = body.len();
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("Content-Length", len)
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for StatusApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/status" | "/status/" => reply(200, self.status().to_string()),
            "/status/keys" => match self.source.keys() {
                Some(v) => reply(200, v.to_string()),
                None => reply(
                    404,
                    "{\"error_msg\":\"this provider has no key view\"}".into(),
                ),
            },
            "/status/upstreams" => reply(200, self.upstreams().to_string()),
            "/status/connections" => reply(200, self.pools.snapshot().to_string()),
            "/status/ready" => {
                if self.store.load().loaded && self.proxy_listening().await {
                    reply(200, "{\"ready\":true}".into())
                } else {
                    reply(503, "{\"ready\":false}".into())
                }
            }
            _ => reply(404, "{\"error_msg\":\"not found\"}".into()),
        }
    }
}

//! What APISIX's logger plugins share: the log entry (APISIX's full entry, or the plugin's
//! `log_format`), the request and response bodies they may include, and a batch processor
//! started the first time the plugin logs (so checking a config starts nothing).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Cx, Plugin};
use crate::logs::batch::{BatchSettings, Batcher, Sink};
use crate::vars::{VarLookup, Vars};

/// APISIX's default cap on a logged request or response body.
const MAX_BODY: usize = 524_288;

/// The settings every logger takes (besides where it sends).
#[derive(Debug, Clone, Deserialize)]
pub struct Common {
    pub log_format: Option<Map<String, Value>>,
    #[serde(default)]
    pub include_req_body: bool,
    pub include_req_body_expr: Option<Value>,
    #[serde(default)]
    pub include_resp_body: bool,
    pub include_resp_body_expr: Option<Value>,
    #[serde(default = "max_body")]
    pub max_req_body_bytes: usize,
    #[serde(default = "max_body")]
    pub max_resp_body_bytes: usize,
}

fn max_body() -> usize {
    MAX_BODY
}

/// The common fields' names, for the unknown-field check of each logger.
pub const COMMON_FIELDS: &[&str] = &[
    "log_format",
    "include_req_body",
    "include_req_body_expr",
    "include_resp_body",
    "include_resp_body_expr",
    "max_req_body_bytes",
    "max_resp_body_bytes",
];

/// The batch processor's fields.
pub const BATCH_FIELDS: &[&str] = &[
    "batch_max_size",
    "inactive_timeout",
    "buffer_duration",
    "max_retry_count",
    "retry_delay",
    "max_pending_entries",
    "name",
];

/// Refuses a field the logger does not know: Portico does not serve a route with a setting
/// it would ignore.
pub fn known_fields(settings: &Value, own: &[&str], batched: bool) -> Result<(), String> {
    let Some(map) = settings.as_object() else {
        return Err("wrong type: expected object".into());
    };
    for key in map.keys() {
        let known = key == "_meta"
            || own.contains(&key.as_str())
            || COMMON_FIELDS.contains(&key.as_str())
            || (batched && BATCH_FIELDS.contains(&key.as_str()));
        if !known {
            return Err(format!(
                "additional properties forbidden, found {key} (Portico does not support it)"
            ));
        }
    }
    Ok(())
}

/// A `log_format`: names to `$var`s, literals or nested formats.
#[derive(Debug, Clone)]
enum Format {
    Var(String),
    Literal(Value),
    Nested(Vec<(String, Format)>),
}

impl Format {
    fn parse(map: &Map<String, Value>) -> Format {
        Format::Nested(
            map.iter()
                .map(|(k, v)| {
                    let f = match v {
                        Value::String(s) if s.starts_with('$') => {
                            Format::Var(s.trim_start_matches('$').to_string())
                        }
                        Value::Object(m) => Format::parse(m),
                        other => Format::Literal(other.clone()),
                    };
                    (k.clone(), f)
                })
                .collect(),
        )
    }

    fn render(&self, vars: &dyn VarLookup, bodies: &Bodies) -> Value {
        match self {
            Format::Var(name) if name == "request_body" => {
                bodies.request.as_ref().map_or(Value::Null, |b| {
                    Value::String(String::from_utf8_lossy(b).into_owned())
                })
            }
            Format::Var(name) => vars
                .var(name)
                .map_or(Value::Null, |v| Value::String(v.into_owned())),
            Format::Literal(v) => v.clone(),
            Format::Nested(items) => Value::Object(
                items
                    .iter()
                    .map(|(k, f)| (k.clone(), f.render(vars, bodies)))
                    .filter(|(_, v)| !v.is_null())
                    .collect(),
            ),
        }
    }
}

/// The bodies kept for one request.
#[derive(Default)]
struct Bodies {
    request: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
    /// The answer's headers, for the full entry.
    headers: Option<http::HeaderMap>,
}

/// One configured logger: its entry settings and its queue.
pub struct Logger {
    name: &'static str,
    format: Option<Format>,
    req_body: Option<Option<Arc<Vars>>>,
    resp_body: Option<Option<Arc<Vars>>>,
    max_req: usize,
    max_resp: usize,
    batch: BatchSettings,
    sink: Arc<dyn Sink<Value>>,
    queue: OnceLock<Option<Batcher<Value>>>,
    /// Tells apart two instances in one request (a route's and a global rule's).
    id: usize,
}

impl Logger {
    pub fn new(
        name: &'static str,
        common: Common,
        batch: BatchSettings,
        sink: Arc<dyn Sink<Value>>,
    ) -> Result<Logger, String> {
        batch.check()?;
        let expr = |field: &str, v: &Option<Value>| -> Result<Option<Arc<Vars>>, String> {
            v.as_ref()
                .map(|v| {
                    Vars::parse(v)
                        .map(Arc::new)
                        .map_err(|e| format!("property \"{field}\" validation failed: {e}"))
                })
                .transpose()
        };
        let req_expr = expr("include_req_body_expr", &common.include_req_body_expr)?;
        let resp_expr = expr("include_resp_body_expr", &common.include_resp_body_expr)?;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        crate::logs::want_details();
        Ok(Logger {
            name,
            format: common.log_format.as_ref().map(Format::parse),
            req_body: common.include_req_body.then_some(req_expr),
            resp_body: common.include_resp_body.then_some(resp_expr),
            max_req: common.max_req_body_bytes,
            max_resp: common.max_resp_body_bytes,
            batch,
            sink,
            queue: OnceLock::new(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn bodies<'a>(&self, cx: &'a mut Cx<'_>) -> &'a mut Bodies {
        cx.state.get_or_default_at::<Bodies>("logger", self.id)
    }

    fn wanted(cx: &Cx<'_>, when: &Option<Option<Arc<Vars>>>) -> bool {
        match when {
            None => false,
            Some(None) => true,
            Some(Some(expr)) => cx.with_vars(|v| expr.matches(v)),
        }
    }

    /// APISIX's entry for this request.
    fn entry(&self, cx: &mut Cx<'_>) -> Value {
        let bodies = cx
            .state
            .get_at::<Bodies>("logger", self.id)
            .map(|b| Bodies {
                request: b.request.clone(),
                response: b.response.clone(),
                headers: b.headers.clone(),
            })
            .unwrap_or_default();
        let route = cx.state.route.as_deref();
        let route_id = route.and_then(|r| r.route_id.clone());
        let service_id = route.and_then(|r| r.service_id.clone());
        if let Some(f) = &self.format {
            let mut v = cx.with_log_vars(|vars| f.render(vars, &bodies));
            if let Value::Object(m) = &mut v {
                if let Some(r) = route_id {
                    m.insert("route_id".into(), r.into());
                    if let Some(s) = service_id {
                        m.insert("service_id".into(), s.into());
                    }
                }
            }
            return v;
        }
        full_entry(cx, &bodies, route_id, service_id)
    }
}

/// APISIX's `get_full_log`.
fn full_entry(
    cx: &Cx<'_>,
    bodies: &Bodies,
    route_id: Option<String>,
    service_id: Option<String>,
) -> Value {
    let done = cx.state.finished.clone().unwrap_or_default();
    let req = cx.req();
    let headers = header_map(&req.headers);
    let mut query = Map::new();
    if let Some(q) = done.request_uri.query().or(req.uri.query()) {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::vars::request::percent_decode(&v.replace('+', " ")).into_owned();
            query.insert(k.to_string(), Value::String(v));
        }
    }
    let (scheme, host, port, uri) = cx.with_log_vars(|v| {
        let s = |n: &str| v.var(n).map(|c| c.into_owned()).unwrap_or_default();
        (s("scheme"), s("host"), s("server_port"), s("request_uri"))
    });
    let latency = done.latency.as_secs_f64() * 1000.0;
    let upstream_latency = done.upstream_latency.map(|d| d.as_secs_f64() * 1000.0);
    let apisix_latency = (latency - upstream_latency.unwrap_or(0.0)).max(0.0);
    let mut request = json!({
        "url": format!("{scheme}://{host}:{port}{uri}"),
        "uri": uri,
        "method": done.method.as_str(),
        "headers": headers,
        "querystring": query,
        "size": done.request_bytes,
    });
    if let Some(b) = &bodies.request {
        request["body"] = Value::String(String::from_utf8_lossy(b).into_owned());
    }
    let mut response = json!({
        "status": cx.state.status,
        "headers": bodies.headers.as_ref().map_or(json!({}), header_map),
        "size": done.response_bytes,
    });
    if let Some(b) = &bodies.response {
        response["body"] = Value::String(String::from_utf8_lossy(b).into_owned());
    }
    let start_ms = done
        .start_time
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let mut entry = json!({
        "request": request,
        "response": response,
        "server": {"hostname": hostname(), "version": env!("CARGO_PKG_VERSION")},
        "client_ip": cx.state.client_ip.map(|ip| ip.to_string()),
        "start_time": start_ms,
        "latency": latency,
        "apisix_latency": apisix_latency,
    });
    if let Some(up) = upstream_latency {
        entry["upstream_latency"] = json!(up);
    }
    if let Some(node) = done.node {
        entry["upstream"] = json!(node.to_string());
    }
    match route_id {
        Some(r) => {
            entry["route_id"] = json!(r);
            entry["service_id"] = json!(service_id.unwrap_or_default());
        }
        None => entry["service_id"] = json!(host),
    }
    if let Some(c) = &cx.state.consumer {
        entry["consumer"] = json!({"username": c.username});
    }
    entry
}

/// Headers as APISIX logs them: lowercase names, a list for a repeated one.
fn header_map(headers: &http::HeaderMap) -> Value {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in headers {
        let v = Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match out.get_mut(k.as_str()) {
            Some(Value::Array(list)) => list.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                out.insert(k.as_str().to_string(), v);
            }
        }
    }
    Value::Object(out.into_iter().collect())
}

fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

fn keep(into: &mut Option<Vec<u8>>, piece: &[u8], max: usize) {
    let buf = into.get_or_insert_with(Vec::new);
    let room = max.saturating_sub(buf.len());
    buf.extend_from_slice(&piece[..piece.len().min(room)]);
}

impl Plugin for Logger {
    fn request_body(&self, cx: &mut Cx<'_>, body: &Option<Bytes>, _end: bool) {
        if !Logger::wanted(cx, &self.req_body) {
            return;
        }
        let max = self.max_req;
        if let Some(b) = body {
            keep(&mut self.bodies(cx).request, b, max);
        }
    }

    fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        if self.format.is_none() {
            self.bodies(cx).headers = Some(resp.headers.clone());
        }
    }

    fn body_filter(&self, cx: &mut Cx<'_>, body: &mut Option<Bytes>, _end: bool) {
        if !Logger::wanted(cx, &self.resp_body) {
            return;
        }
        let max = self.max_resp;
        if let Some(b) = body {
            keep(&mut self.bodies(cx).response, b, max);
        }
    }

    fn log(&self, cx: &mut Cx<'_>) {
        // A body the plugins read whole went by before the body phase.
        if Logger::wanted(cx, &self.req_body) {
            if let Some(whole) = cx.state.body.clone() {
                let max = self.max_req;
                let b = self.bodies(cx);
                if b.request.is_none() {
                    keep(&mut b.request, &whole, max);
                }
            }
        }
        let entry = self.entry(cx);
        let queue = self
            .queue
            .get_or_init(|| Batcher::start(self.name, self.batch.clone(), self.sink.clone()));
        if let Some(q) = queue {
            q.push(entry);
        }
    }
}

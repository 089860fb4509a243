//! What APISIX's logger plugins share: the log entry (APISIX's full entry, or the plugin's
//! `log_format`), the request and response bodies they may include, and a batch processor
//! started the first time the plugin logs (so checking a config starts nothing).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Cx, Plugin};
use crate::logs::batch::{BatchSettings, Batcher, Sink};
use crate::logs::json::Json;
use crate::logs::sink::Entry;
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

/// A logger's `plugin_metadata`: its `log_format` (the plugin's own wins), for every
/// instance of the plugin.
pub fn metadata(value: &Value) -> Result<Option<super::Metadata>, String> {
    match value.get("log_format") {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(Arc::new(Format::parse(map)))),
        Some(_) => {
            Err("property \"log_format\" validation failed: wrong type: expected object".into())
        }
    }
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
}

/// Wraps a finished entry for its transport.
pub type Frame = fn(&Cx<'_>, Entry) -> Entry;

/// One configured logger: its entry settings and its queue.
pub struct Logger {
    name: &'static str,
    format: Option<Format>,
    req_body: Option<Option<Arc<Vars>>>,
    resp_body: Option<Option<Arc<Vars>>>,
    max_req: usize,
    max_resp: usize,
    batch: BatchSettings,
    sink: Arc<dyn Sink<Entry>>,
    queue: OnceLock<Option<Batcher<Entry>>>,
    /// Wraps each entry before it is queued (`syslog`'s RFC 5424 frame).
    frame: Option<Frame>,
    /// Tells apart two instances in one request (a route's and a global rule's).
    id: usize,
}

impl Logger {
    pub fn new(
        name: &'static str,
        common: Common,
        batch: BatchSettings,
        sink: Arc<dyn Sink<Entry>>,
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
            frame: None,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Each entry goes out wrapped by `frame`.
    pub fn framed(mut self, frame: Frame) -> Logger {
        self.frame = Some(frame);
        self
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

    /// APISIX's entry for this request, as JSON text.
    fn entry(&self, cx: &Cx<'_>) -> Entry {
        let none = Bodies::default();
        let bodies = cx
            .state
            .get_at::<Bodies>("logger", self.id)
            .unwrap_or(&none);
        let route = cx.state.route.as_deref();
        let route_id = route.and_then(|r| r.route_id.as_deref());
        let service_id = route.and_then(|r| r.service_id.as_deref());
        let from_metadata = cx
            .state
            .metadata
            .as_deref()
            .and_then(|m| m.get::<Format>(self.name));
        if let Some(f) = self.format.as_ref().or(from_metadata) {
            let mut v = cx.with_log_vars(|vars| f.render(vars, bodies));
            if let Value::Object(m) = &mut v {
                if let Some(r) = route_id {
                    m.insert("route_id".into(), r.into());
                    if let Some(s) = service_id {
                        m.insert("service_id".into(), s.into());
                    }
                }
            }
            return v.to_string().into();
        }
        full_entry(cx, bodies, route_id, service_id)
    }
}

/// Headers as APISIX logs them: lowercase names, a list for a repeated one.
fn headers(j: &mut Json, key: &str, h: Option<&http::HeaderMap>) {
    j.key(key);
    j.open();
    if let Some(h) = h {
        // A name's values come one after the other: no lookup per name.
        let mut all = h.iter().peekable();
        while let Some((k, v)) = all.next() {
            if all.peek().is_some_and(|(next, _)| *next == k) {
                let mut list = vec![header_text(v)];
                while let Some((_, v)) = all.next_if(|(next, _)| *next == k) {
                    list.push(header_text(v));
                }
                j.strs(k.as_str(), list.iter().map(|v| &**v));
            } else {
                j.str(k.as_str(), &header_text(v));
            }
        }
    }
    j.close();
}

/// A header value as text: as it is when it is UTF-8 (checked on the fast path first).
fn header_text(v: &http::HeaderValue) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

/// Query arguments, decoded; a repeated one as a list (`ngx.req.get_uri_args`).
fn querystring(j: &mut Json, query: Option<&str>) {
    let mut args: Vec<(std::borrow::Cow<'_, str>, Vec<String>)> = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = crate::vars::request::percent_decode(k);
        let v = crate::vars::request::percent_decode(&v.replace('+', " ")).into_owned();
        match args.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => args.push((k, vec![v])),
        }
    }
    j.key("querystring");
    j.open();
    for (k, vs) in &args {
        j.key_escaped(k);
        match vs.as_slice() {
            [one] => j.value_str(one),
            many => j.value_strs(many.iter().map(String::as_str)),
        }
    }
    j.close();
}

fn body(j: &mut Json, b: &Option<Vec<u8>>) {
    if let Some(b) = b.as_deref() {
        j.str("body", &String::from_utf8_lossy(b));
    }
}

/// APISIX's `get_full_log`, written straight to JSON text.
fn full_entry(
    cx: &Cx<'_>,
    bodies: &Bodies,
    route_id: Option<&str>,
    service_id: Option<&str>,
) -> Entry {
    let state = &*cx.state;
    let empty = super::Finished::default();
    let done = state.finished.as_ref().unwrap_or(&empty);
    let req = cx.req();
    let uri = done
        .request_uri
        .path_and_query()
        .or(req.uri.path_and_query())
        .map_or("/", |p| p.as_str());
    let (scheme, host, port) = cx.with_vars(|v| {
        let s = |n: &str| v.var(n).map(|c| c.into_owned()).unwrap_or_default();
        (s("scheme"), s("host"), s("server_port"))
    });
    let latency = done.latency.as_secs_f64() * 1000.0;
    let upstream_latency = done.upstream_latency.map(|d| d.as_secs_f64() * 1000.0);
    let mut j = Json::with_capacity(1024);
    j.open();
    j.key("request");
    j.open();
    j.concat("url", &[&scheme, "://", &host, ":", &port, uri]);
    j.str("uri", uri);
    j.str("method", done.method.as_str());
    headers(&mut j, "headers", Some(&req.headers));
    querystring(&mut j, done.request_uri.query().or(req.uri.query()));
    j.u64("size", done.request_bytes);
    body(&mut j, &bodies.request);
    j.close();
    j.key("response");
    j.open();
    j.u64("status", u64::from(state.status));
    headers(
        &mut j,
        "headers",
        cx.session.response_written().map(|r| &r.headers),
    );
    j.u64("size", done.response_bytes);
    body(&mut j, &bodies.response);
    j.close();
    j.key("server");
    j.open();
    j.str("hostname", crate::net::hostname());
    j.str("version", env!("CARGO_PKG_VERSION"));
    j.close();
    if let Some(node) = done.node {
        j.addr("upstream", node.ip(), Some(node.port()));
    }
    if let Some(r) = route_id {
        j.str("route_id", r);
    }
    j.str(
        "service_id",
        match route_id {
            Some(_) => service_id.unwrap_or_default(),
            None => host.as_str(),
        },
    );
    if let Some(c) = &state.consumer {
        j.key("consumer");
        j.open();
        j.str("username", &c.username);
        j.close();
    }
    match state.client_ip {
        Some(ip) => j.addr("client_ip", ip, None),
        None => j.null("client_ip"),
    }
    j.u64(
        "start_time",
        done.start_time
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64),
    );
    j.f64("latency", latency);
    if let Some(u) = upstream_latency {
        j.f64("upstream_latency", u);
    }
    j.f64(
        "apisix_latency",
        (latency - upstream_latency.unwrap_or(0.0)).max(0.0),
    );
    j.close();
    j.finish().into()
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
        let mut entry = self.entry(cx);
        if let Some(frame) = self.frame {
            entry = frame(cx, entry);
        }
        let queue = self
            .queue
            .get_or_init(|| Batcher::start(self.name, self.batch.clone(), self.sink.clone()));
        if let Some(q) = queue {
            q.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_query_as_apisix_logs_them() {
        let mut h = http::HeaderMap::new();
        h.append("x-one", http::HeaderValue::from_static("1"));
        h.append("x-many", http::HeaderValue::from_static("a"));
        h.append("x-many", http::HeaderValue::from_static("b\""));
        h.append("x-last", http::HeaderValue::from_static("z"));
        let mut j = Json::with_capacity(64);
        j.open();
        headers(&mut j, "headers", Some(&h));
        headers(&mut j, "none", None);
        querystring(&mut j, Some("a=1&b=x+y&a=2&c&q%22=%41"));
        j.close();
        let v: Value = serde_json::from_str(&j.finish()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "headers": {"x-one": "1", "x-many": ["a", "b\""], "x-last": "z"},
                "none": {},
                "querystring": {"a": ["1", "2"], "b": "x y", "c": "", "q\"": "A"}
            })
        );
    }
}

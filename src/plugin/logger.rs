//! What APISIX's logger plugins share: the log entry (APISIX's full entry, or the plugin's
//! `log_format`), the request and response bodies they may include, and a batch processor
//! started the first time the plugin logs (so checking a config starts nothing).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Cx, Plugin};
use crate::logs::batch::{BatchSettings, Batcher, Sink};
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
        Some(Value::Object(map)) => Ok(Some(std::sync::Arc::new(Format::parse(map)))),
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

/// APISIX's `get_full_log`, written straight to JSON text.
#[derive(Serialize)]
struct Full<'a> {
    request: Req<'a>,
    response: Resp<'a>,
    server: Server,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<std::net::SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route_id: Option<&'a str>,
    service_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<Consumer<'a>>,
    client_ip: Option<std::net::IpAddr>,
    start_time: u64,
    latency: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_latency: Option<f64>,
    apisix_latency: f64,
}

#[derive(Serialize)]
struct Req<'a> {
    url: String,
    uri: &'a str,
    method: &'a str,
    headers: Headers<'a>,
    querystring: Query<'a>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize)]
struct Resp<'a> {
    status: u16,
    headers: Headers<'a>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize)]
struct Server {
    hostname: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Consumer<'a> {
    username: &'a str,
}

/// Headers as APISIX logs them: lowercase names, a list for a repeated one.
struct Headers<'a>(Option<&'a http::HeaderMap>);

impl serde::Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(h) = self.0 else {
            return s.serialize_map(Some(0))?.end();
        };
        let mut m = s.serialize_map(Some(h.keys_len()))?;
        for k in h.keys() {
            let mut all = h.get_all(k).iter();
            match (all.next(), all.next()) {
                (Some(one), None) => m.serialize_entry(k.as_str(), &header_text(one))?,
                _ => {
                    let list: Vec<_> = h.get_all(k).iter().map(header_text).collect();
                    m.serialize_entry(k.as_str(), &list)?
                }
            }
        }
        m.end()
    }
}

fn header_text(v: &http::HeaderValue) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(v.as_bytes())
}

/// Query arguments, decoded; a repeated one as a list (`ngx.req.get_uri_args`).
struct Query<'a>(Option<&'a str>);

impl serde::Serialize for Query<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut args: Vec<(std::borrow::Cow<'_, str>, Vec<String>)> = Vec::new();
        for pair in self
            .0
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
        let mut m = s.serialize_map(Some(args.len()))?;
        for (k, vs) in &args {
            match vs.as_slice() {
                [one] => m.serialize_entry(k, one)?,
                many => m.serialize_entry(k, many)?,
            }
        }
        m.end()
    }
}

fn lossy(b: &Option<Vec<u8>>) -> Option<std::borrow::Cow<'_, str>> {
    b.as_deref().map(String::from_utf8_lossy)
}

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
    let entry = Full {
        request: Req {
            url: format!("{scheme}://{host}:{port}{uri}"),
            uri,
            method: done.method.as_str(),
            headers: Headers(Some(&req.headers)),
            querystring: Query(done.request_uri.query().or(req.uri.query())),
            size: done.request_bytes,
            body: lossy(&bodies.request),
        },
        response: Resp {
            status: state.status,
            headers: Headers(cx.session.response_written().map(|r| &r.headers)),
            size: done.response_bytes,
            body: lossy(&bodies.response),
        },
        server: Server {
            hostname: crate::net::hostname(),
            version: env!("CARGO_PKG_VERSION"),
        },
        upstream: done.node,
        route_id,
        service_id: match route_id {
            Some(_) => service_id.unwrap_or_default(),
            None => host.as_str(),
        },
        consumer: state.consumer.as_ref().map(|c| Consumer {
            username: c.username.as_str(),
        }),
        client_ip: state.client_ip,
        start_time: done
            .start_time
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64),
        latency,
        upstream_latency,
        apisix_latency: (latency - upstream_latency.unwrap_or(0.0)).max(0.0),
    };
    serde_json::to_string(&entry).unwrap_or_default().into()
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

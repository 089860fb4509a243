//! `opentelemetry`: a server span per request, exported over OTLP/HTTP, with the W3C trace
//! context passed on to the upstream.
//!
//! As in APISIX, the plugin's own settings choose the sampler and extra attributes, and its
//! `plugin_metadata` (required: without it nothing is traced) names the collector, the
//! resource and the batch span processor. The rewrite phase decides the span's ids and
//! whether it is sampled and sets `traceparent` (and `tracestate`) on the request that goes
//! upstream, also for spans not sampled; the log phase builds the sampled span and queues it
//! for the log thread, which batches and exports it.
//!
//! The OpenTelemetry project's crates do the parts with rules of their own: the SDK's
//! samplers (`trace_id_ratio` reads the trace id as every SDK does), its id generator and its
//! W3C propagator (which refuses the malformed `traceparent`s the spec lists).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId};
use opentelemetry::Context;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_range, parse_settings, Cx, Factory, Flow, Metadata, Plugin};
use crate::logs::batch::{Batcher, Plan};
use crate::logs::otlp::OtlpSink;
use crate::logs::sink::{Endpoint, HttpPost};

const NAME: &str = "opentelemetry";

pub struct OpenTelemetryFactory;

/// The plugin's settings (APISIX's schema; an unknown field is refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    sampler: SamplerSettings,
    #[serde(default)]
    additional_attributes: Vec<String>,
    #[serde(default)]
    additional_header_prefix_attributes: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SamplerSettings {
    #[serde(default)]
    name: SamplerName,
    #[serde(default)]
    options: SamplerOptions,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "snake_case")]
enum SamplerName {
    AlwaysOn,
    #[default]
    AlwaysOff,
    TraceIdRatio,
    ParentBase,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SamplerOptions {
    #[serde(default)]
    fraction: f64,
    root: Option<RootSampler>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RootSampler {
    #[serde(default)]
    name: RootName,
    #[serde(default)]
    options: RootOptions,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RootName {
    AlwaysOn,
    #[default]
    AlwaysOff,
    TraceIdRatio,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RootOptions {
    #[serde(default)]
    fraction: f64,
}

/// The plugin's `plugin_metadata` (APISIX's metadata schema, its defaults).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataSettings {
    #[serde(default)]
    trace_id_source: TraceIdSource,
    #[serde(default)]
    resource: Map<String, Value>,
    #[serde(default)]
    collector: Collector,
    #[serde(default)]
    batch_span_processor: SpanProcessor,
    #[serde(default)]
    set_ngx_var: bool,
    /// Metadata kept in etcd carries its key's id (read, not used).
    #[serde(default, rename = "id")]
    _id: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum TraceIdSource {
    XRequestId,
    #[default]
    Random,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Collector {
    #[serde(default = "default_address")]
    address: String,
    #[serde(default = "default_timeout")]
    request_timeout: u64,
    #[serde(default)]
    request_headers: Map<String, Value>,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            address: default_address(),
            request_timeout: default_timeout(),
            request_headers: Map::new(),
        }
    }
}

fn default_address() -> String {
    "127.0.0.1:4318".into()
}

fn default_timeout() -> u64 {
    3
}

/// The batch span processor; the defaults are those APISIX's `config.yaml` ships.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanProcessor {
    #[serde(default)]
    drop_on_queue_full: bool,
    #[serde(default = "default_queue")]
    max_queue_size: usize,
    #[serde(default = "default_batch_timeout")]
    batch_timeout: f64,
    #[serde(default = "default_inactive_timeout")]
    inactive_timeout: f64,
    #[serde(default = "default_batch_size")]
    max_export_batch_size: usize,
}

impl Default for SpanProcessor {
    fn default() -> Self {
        SpanProcessor {
            drop_on_queue_full: false,
            max_queue_size: default_queue(),
            batch_timeout: default_batch_timeout(),
            inactive_timeout: default_inactive_timeout(),
            max_export_batch_size: default_batch_size(),
        }
    }
}

fn default_queue() -> usize {
    1024
}
fn default_batch_timeout() -> f64 {
    2.0
}
fn default_inactive_timeout() -> f64 {
    1.0
}
fn default_batch_size() -> usize {
    16
}

fn seconds(field: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v < 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "property \"batch_span_processor.{field}\" validation failed: expected a number of seconds above 0"
        ))
    }
}

/// A JSON scalar as an attribute value (APISIX takes booleans, numbers and strings).
fn scalar(field: &str, key: &str, v: &Value) -> Result<any_value::Value, String> {
    Ok(match v {
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        _ => {
            return Err(format!(
                "property \"{field}.{key}\" validation failed: expected a boolean, number or string"
            ))
        }
    })
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

/// The compiled metadata: where spans go, and how trace ids are chosen.
pub struct Tracer {
    trace_id_from_request: bool,
    set_vars: bool,
    sink: Arc<OtlpSink>,
    plan: Plan,
    /// Started the first time a span is exported (checking a config starts nothing).
    queue: OnceLock<Option<Batcher<Span>>>,
}

impl Tracer {
    fn parse(value: &Value) -> Result<Tracer, String> {
        let m: MetadataSettings = parse_settings(value)?;
        let address = m.collector.address.trim();
        let uri = if address.starts_with("http://") || address.starts_with("https://") {
            format!("{}/v1/traces", address.trim_end_matches('/'))
        } else {
            format!("http://{address}/v1/traces")
        };
        let endpoint = Endpoint::parse(&uri)
            .map_err(|e| e.replace("property \"uri\"", "property \"collector.address\""))?;
        if m.collector.request_timeout == 0 {
            return Err(
                "property \"collector.request_timeout\" validation failed: expected >= 1".into(),
            );
        }
        let mut headers = Vec::new();
        for (k, v) in &m.collector.request_headers {
            let field = "collector.request_headers";
            let value = match scalar(field, k, v)? {
                any_value::Value::StringValue(s) => s,
                any_value::Value::BoolValue(b) => b.to_string(),
                _ => v.to_string(),
            };
            let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                format!("property \"{field}\" validation failed: {k:?} is not a header name")
            })?;
            let value = http::HeaderValue::from_str(&value).map_err(|_| {
                format!("property \"{field}.{k}\" validation failed: not a valid header value")
            })?;
            headers.push((name, value));
        }
        let mut attributes = vec![text("hostname", crate::net::hostname())];
        if !m.resource.contains_key("service.name") {
            attributes.push(text("service.name", "APISIX"));
        }
        for (k, v) in &m.resource {
            attributes.push(attribute(k, scalar("resource", k, v)?));
        }
        attributes.push(text("telemetry.sdk.language", "rust"));
        attributes.push(text("telemetry.sdk.name", "opentelemetry"));
        let p = &m.batch_span_processor;
        if p.max_queue_size < 1 {
            return Err(
                "property \"batch_span_processor.max_queue_size\" validation failed: expected >= 1"
                    .into(),
            );
        }
        if p.max_export_batch_size < 1 {
            return Err("property \"batch_span_processor.max_export_batch_size\" validation failed: expected >= 1".into());
        }
        // The queue never blocks a request: a full one drops spans (and says so once a
        // minute) whether or not `drop_on_queue_full` asks to.
        let _ = p.drop_on_queue_full;
        let plan = Plan {
            batch_max_size: p.max_export_batch_size,
            max_pending: p.max_queue_size,
            inactive: seconds("inactive_timeout", p.inactive_timeout)?,
            buffer: seconds("batch_timeout", p.batch_timeout)?,
            max_retry_count: 2,
            retry_delay: Duration::from_secs(1),
            name: Some("opentelemetry".into()),
        };
        Ok(Tracer {
            trace_id_from_request: m.trace_id_source == TraceIdSource::XRequestId,
            set_vars: m.set_ngx_var,
            sink: Arc::new(OtlpSink {
                post: HttpPost {
                    endpoint,
                    headers,
                    timeout: Duration::from_secs(m.collector.request_timeout.min(3600)),
                    verify: true,
                    connector: pingora_core::connectors::http::v1::Connector::new(None),
                },
                resource: Resource {
                    attributes,
                    ..Resource::default()
                },
                scope: InstrumentationScope {
                    name: "portico".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                },
            }),
            plan,
            queue: OnceLock::new(),
        })
    }

    fn export(&self, span: Span) {
        let queue = self
            .queue
            .get_or_init(|| Batcher::start(NAME, self.plan.clone(), self.sink.clone()));
        if let Some(q) = queue {
            q.push(span);
        }
    }
}

/// An additional attribute from the request headers: one header, or every header whose
/// name starts with a prefix (`x-my-*`).
enum HeaderAttribute {
    Exact(String),
    Prefix(String),
}

struct OpenTelemetry {
    sampler: Sampler,
    attributes: Vec<String>,
    headers: Vec<HeaderAttribute>,
    /// Tells apart this instance's span from another's in the same request (route and
    /// global rule).
    id: usize,
}

/// What the rewrite phase decided, for the log phase.
struct Started {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    trace_state: String,
}

/// The W3C context of a request, as `$opentelemetry_*` variables read it (`set_ngx_var`).
#[derive(Debug, Clone)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
    pub traceparent: String,
}

impl Factory for OpenTelemetryFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        12009
    }

    fn metadata(&self, value: &Value) -> Result<Option<Metadata>, String> {
        Ok(Some(Arc::new(Tracer::parse(value)?)))
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        let ratio = |field: &str, f: f64| -> Result<f64, String> {
            check_range(field, f, 0.0, Some(1.0))?;
            Ok(f)
        };
        let sampler = match s.sampler.name {
            SamplerName::AlwaysOn => Sampler::AlwaysOn,
            SamplerName::AlwaysOff => Sampler::AlwaysOff,
            SamplerName::TraceIdRatio => Sampler::TraceIdRatioBased(ratio(
                "sampler.options.fraction",
                s.sampler.options.fraction,
            )?),
            SamplerName::ParentBase => {
                let root = s.sampler.options.root.unwrap_or_default();
                let root = match root.name {
                    RootName::AlwaysOn => Sampler::AlwaysOn,
                    RootName::AlwaysOff => Sampler::AlwaysOff,
                    RootName::TraceIdRatio => Sampler::TraceIdRatioBased(ratio(
                        "sampler.options.root.options.fraction",
                        root.options.fraction,
                    )?),
                };
                Sampler::ParentBased(Box::new(root))
            }
        };
        for (field, list) in [
            ("additional_attributes", &s.additional_attributes),
            (
                "additional_header_prefix_attributes",
                &s.additional_header_prefix_attributes,
            ),
        ] {
            if list.iter().any(String::is_empty) {
                return Err(format!(
                    "property \"{field}\" validation failed: string too short, expected at least 1"
                ));
            }
        }
        let headers = s
            .additional_header_prefix_attributes
            .iter()
            .map(|h| match h.strip_suffix('*') {
                Some(prefix) if !prefix.is_empty() => {
                    HeaderAttribute::Prefix(prefix.to_ascii_lowercase())
                }
                _ => HeaderAttribute::Exact(h.clone()),
            })
            .collect();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        Ok(Arc::new(OpenTelemetry {
            sampler,
            attributes: s.additional_attributes,
            headers,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }))
    }
}

/// The request headers, for the W3C propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A trace id from `X-Request-Id` when it is one (32 hex digits, not all zero).
fn request_trace_id(cx: &Cx<'_>) -> Option<TraceId> {
    let id = cx.header("x-request-id")?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = TraceId::from_hex(&id.to_ascii_lowercase()).ok()?;
    (id != TraceId::INVALID).then_some(id)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Says once a minute that the plugin traces nothing without its metadata (as APISIX warns).
fn warn_no_metadata() {
    static ONCE: OnceLock<crate::logs::Once> = OnceLock::new();
    ONCE.get_or_init(Default::default).say(|n| {
        format!("opentelemetry: plugin_metadata is required for the opentelemetry plugin to trace requests ({n} requests not traced)")
    });
}

/// The compiled `plugin_metadata/opentelemetry` of the request's config snapshot.
fn tracer<'a>(cx: &'a Cx<'_>) -> Option<&'a Tracer> {
    cx.state.metadata.as_deref()?.get::<Tracer>(NAME)
}

impl Plugin for OpenTelemetry {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let Some(tracer) = tracer(cx) else {
            warn_no_metadata();
            return Flow::Continue;
        };
        let set_vars = tracer.set_vars;
        let parent = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &Headers(&cx.req().headers));
        let remote = parent.span().span_context().clone();
        let ids = RandomIdGenerator::default();
        let trace_id = if remote.is_valid() {
            remote.trace_id()
        } else if tracer.trace_id_from_request {
            request_trace_id(cx).unwrap_or_else(|| ids.new_trace_id())
        } else {
            ids.new_trace_id()
        };
        let span_id = ids.new_span_id();
        let parent_cx = remote.is_valid().then_some(&parent);
        let decision = self
            .sampler
            .should_sample(
                parent_cx,
                trace_id,
                cx.req().method.as_str(),
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision;
        let sampled = decision == SamplingDecision::RecordAndSample;
        let traceparent = format!(
            "00-{trace_id}-{span_id}-{:02x}",
            if sampled { 1 } else { 0 }
        );
        let trace_state = remote.trace_state().header();
        let req = cx.req_mut();
        let _ = req.insert_header("traceparent", traceparent.as_str());
        if !trace_state.is_empty() {
            let _ = req.insert_header("tracestate", trace_state.as_str());
        }
        if set_vars {
            cx.state.trace = Some(TraceIds {
                trace_id: trace_id.to_string(),
                span_id: span_id.to_string(),
                traceparent,
            });
        }
        if sampled {
            cx.state.set_at(
                NAME,
                self.id,
                Started {
                    trace_id,
                    span_id,
                    parent: remote.is_valid().then(|| remote.span_id()),
                    trace_state,
                },
            );
        }
        Flow::Continue
    }

    fn log(&self, cx: &mut Cx<'_>) {
        let Some(started) = cx.state.get_at::<Started>(NAME, self.id) else {
            return;
        };
        let Some(tracer) = tracer(cx) else {
            return;
        };
        let empty = super::Finished::default();
        let done = cx.state.finished.as_ref().unwrap_or(&empty);
        let end = SystemTime::now();
        let start = done
            .start_time
            .unwrap_or_else(|| end.checked_sub(done.latency).unwrap_or(end));
        let span = self.span(cx, started, done, start, end);
        tracer.export(span);
    }
}

impl OpenTelemetry {
    /// The finished server span, with APISIX's attributes.
    fn span(
        &self,
        cx: &Cx<'_>,
        started: &Started,
        done: &super::Finished,
        start: SystemTime,
        end: SystemTime,
    ) -> Span {
        let state = &*cx.state;
        let req = cx.req();
        let method = done.method.as_str();
        let (host, scheme, request_uri, uri, agent) = cx.with_log_vars(|v| {
            let var = |n: &str| v.var(n).map(|s| s.into_owned()).unwrap_or_default();
            (
                var("host"),
                var("scheme"),
                var("request_uri"),
                var("uri"),
                var("http_user_agent"),
            )
        });
        let mut attributes = vec![
            text("net.host.name", host),
            text("http.method", method),
            text("http.scheme", scheme.clone()),
            text("http.target", request_uri),
            text("http.user_agent", agent.clone()),
            text("http.request.method", method),
            text("url.scheme", scheme),
            text("url.path", uri),
            text("user_agent.original", agent),
        ];
        let mut name = method.to_string();
        if let Some(chain) = state.route.as_deref() {
            if let Some(id) = &chain.route_id {
                attributes.push(text("apisix.route_id", id.as_str()));
                attributes.push(text(
                    "apisix.route_name",
                    chain.route_name.as_deref().unwrap_or_default(),
                ));
                let pattern = state
                    .matched
                    .0
                    .and_then(|i| chain.uris.get(usize::from(i)))
                    .map_or("", String::as_str);
                if !pattern.is_empty() {
                    attributes.push(text("http.route", pattern));
                    name = format!("{method} {pattern}");
                }
            }
            if let Some(id) = &chain.service_id {
                attributes.push(text("apisix.service_id", id.as_str()));
                attributes.push(text(
                    "apisix.service_name",
                    chain.service_name.as_deref().unwrap_or_default(),
                ));
            }
        }
        let source = done.response_source().as_str();
        attributes.push(text("apisix.response_source", source));
        let code = i64::from(state.status);
        attributes.push(attribute(
            "http.status_code",
            any_value::Value::IntValue(code),
        ));
        attributes.push(attribute(
            "http.response.status_code",
            any_value::Value::IntValue(code),
        ));
        if !self.attributes.is_empty() {
            cx.with_log_vars(|v| {
                for key in &self.attributes {
                    if let Some(value) = v.var(key) {
                        attributes.push(text(key, value.into_owned()));
                    }
                }
            });
        }
        for wanted in &self.headers {
            match wanted {
                HeaderAttribute::Exact(name) => {
                    let values: Vec<&str> = req
                        .headers
                        .get_all(name.as_str())
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    if !values.is_empty() {
                        attributes.push(text(name, values.join(", ")));
                    }
                }
                HeaderAttribute::Prefix(prefix) => {
                    for key in req.headers.keys() {
                        if key.as_str().starts_with(prefix.as_str()) {
                            let values: Vec<&str> = req
                                .headers
                                .get_all(key)
                                .iter()
                                .filter_map(|v| v.to_str().ok())
                                .collect();
                            attributes.push(text(key.as_str(), values.join(", ")));
                        }
                    }
                }
            }
        }
        let status = if state.status >= 500 {
            Status {
                code: status::StatusCode::Error as i32,
                message: format!("{source} error: {}", state.status),
            }
        } else {
            Status::default()
        };
        Span {
            trace_id: started.trace_id.to_bytes().to_vec(),
            span_id: started.span_id.to_bytes().to_vec(),
            trace_state: started.trace_state.clone(),
            parent_span_id: started
                .parent
                .map_or_else(Vec::new, |p| p.to_bytes().to_vec()),
            // Sampled, and whether the parent is remote (OTLP 1.1's span flags).
            flags: 1 | 0x100 | if started.parent.is_some() { 0x200 } else { 0 },
            name,
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: unix_nanos(start),
            end_time_unix_nano: unix_nanos(end),
            attributes,
            status: Some(status),
            ..Span::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_checked() {
        let f = OpenTelemetryFactory;
        assert!(f.build(&json!({})).is_ok());
        assert!(f
            .build(&json!({"sampler": {"name": "trace_id_ratio", "options": {"fraction": 0.5}}}))
            .is_ok());
        assert!(f
            .build(&json!({"sampler": {"name": "parent_base",
                "options": {"root": {"name": "trace_id_ratio", "options": {"fraction": 1}}}}}))
            .is_ok());
        for (bad, field) in [
            (json!({"sampler": {"name": "sometimes"}}), "sampler.name"),
            (
                json!({"sampler": {"name": "trace_id_ratio", "options": {"fraction": 2}}}),
                "fraction",
            ),
            (
                json!({"additional_attributes": [""]}),
                "additional_attributes",
            ),
            (json!({"samplr": {}}), "samplr"),
        ] {
            let e = f.build(&bad).err().unwrap();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn metadata_is_checked() {
        let f = OpenTelemetryFactory;
        assert!(f.metadata(&json!({})).is_ok());
        assert!(f
            .metadata(
                &json!({"collector": {"address": "https://otel.example:4318"},
                "trace_id_source": "x-request-id", "resource": {"service.name": "gw", "n": 1},
                "batch_span_processor": {"inactive_timeout": 0.5, "max_export_batch_size": 1}})
            )
            .is_ok());
        for (bad, field) in [
            (json!({"trace_id_source": "header"}), "trace_id_source"),
            (json!({"collector": {"address": ""}}), "collector.address"),
            (
                json!({"batch_span_processor": {"batch_timeout": 0}}),
                "batch_timeout",
            ),
            (json!({"resource": {"a": [1]}}), "resource.a"),
            (
                json!({"collector": {"request_headers": {"bad name": "x"}}}),
                "request_headers",
            ),
        ] {
            let e = f.metadata(&bad).err().unwrap();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn the_sdk_samplers_decide_as_apisix_configures_them() {
        let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let decide = |s: &Sampler, parent: Option<&Context>| {
            s.should_sample(parent, id, "GET", &SpanKind::Server, &[], &[])
                .decision
        };
        let sampled_parent = TraceContextPropagator::new().extract_with_context(
            &Context::new(),
            &Headers(&{
                let mut h = http::HeaderMap::new();
                h.insert(
                    "traceparent",
                    http::HeaderValue::from_static(
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                );
                h
            }),
        );
        assert!(sampled_parent.span().span_context().is_valid());
        let parent_base = Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        assert_eq!(
            decide(&parent_base, Some(&sampled_parent)),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(decide(&parent_base, None), SamplingDecision::Drop);
        assert_eq!(
            decide(&Sampler::TraceIdRatioBased(1.0), None),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(&Sampler::TraceIdRatioBased(0.0), None),
            SamplingDecision::Drop
        );
    }
}

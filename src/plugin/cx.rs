//! What a plugin sees of a request: the Pingora session (the downstream request, which
//! plugins may rewrite before it goes upstream) and the request's plugin state.

use std::any::Any;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::chain::Chain;
use super::consumers::{ConsumerIndex, ConsumerMatch};
use crate::vars::request::{normalize_path, request_host, RequestVars};
use crate::vars::{VarLookup, Vars};

/// The consumer headers only the gateway sets (`X-Consumer-Username`,
/// `X-Credential-Identifier`, `X-Consumer-Custom-ID`): a client never claims to be a consumer.
pub const CONSUMER_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-consumer-username"),
    http::HeaderName::from_static("x-credential-identifier"),
    http::HeaderName::from_static("x-consumer-custom-id"),
];

/// The plugin state of one request, kept by the proxy from the first phase to the log.
#[derive(Default)]
pub struct RequestState {
    pub client_ip: Option<IpAddr>,
    /// `https` on TLS listeners.
    pub scheme: &'static str,
    /// The matched route's merged chain (with its route and service ids), once matched.
    pub route: Option<Arc<Chain>>,
    /// The consumer an auth plugin identified.
    pub consumer: Option<Arc<ConsumerMatch>>,
    /// Consumers by credential, from the request's config snapshot (see [`Self::consumers`]).
    pub consumer_index: Option<Arc<ConsumerIndex>>,
    /// The plugins' `plugin_metadata`, from the request's config snapshot.
    pub metadata: Option<Arc<super::MetadataIndex>>,
    /// The status of the answer, once known (for the log phase).
    pub status: u16,
    /// The status the upstream answered (502/504 when the try failed), if one was asked.
    pub upstream_status: Option<u16>,
    /// Where the request goes instead of the route's upstream (`traffic-split`).
    pub upstream: Option<super::UpstreamChoice>,
    /// The most request body bytes the upstream may get (`client-control`); above it, 413.
    pub body_limit: Option<u64>,
    /// The whole request body, when a plugin asked for it (see [`super::Plugin::wants_body`]).
    pub body: Option<Bytes>,
    /// The body is too big to read before the request phases: plugins that want it check it
    /// in [`super::Plugin::check_body`] once it has arrived, before the upstream gets it.
    pub body_later: bool,
    /// Which of the matched route's `uris` and `hosts` took the request (indexes into the
    /// chain's [`Chain::uris`] and [`Chain::hosts`]): APISIX's `matched_uri`, `matched_host`.
    pub matched: (Option<u16>, Option<u16>),
    /// What the proxy knows once the answer is sent: set before the log phase.
    pub finished: Option<Finished>,
    /// The `prometheus` plugin asked for this request to be counted (the route's setting
    /// over a global rule's, and once however many carry it).
    pub count_metrics: Option<CountMetrics>,
    /// The request's W3C trace context, when the `opentelemetry` plugin's metadata asks for
    /// the `$opentelemetry_*` variables (`set_ngx_var`).
    pub trace: Option<super::opentelemetry::TraceIds>,
    scratch: Vec<(ScratchKey, Box<dyn Any + Send + Sync>)>,
}

/// A finished request, for the log phase (loggers, metrics).
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// From the request header to the last byte of the answer.
    pub latency: std::time::Duration,
    /// From the first try to the upstream's last byte, when an upstream was asked.
    pub upstream_latency: Option<std::time::Duration>,
    /// The last node tried (also when its connect failed).
    pub node: Option<std::net::SocketAddr>,
    /// Header and body bytes read from the client.
    pub request_bytes: u64,
    /// Header and body bytes written to the client.
    pub response_bytes: u64,
    /// Body bytes written to the client.
    pub body_bytes_sent: u64,
    /// The upstream sent the answer's header (APISIX's `response_source` "upstream").
    pub from_upstream: bool,
    /// When the request began (APISIX's `start_time`).
    pub start_time: Option<std::time::SystemTime>,
    /// The request line as the client sent it, before any plugin rewrote it (`$request`).
    pub method: http::Method,
    pub request_uri: http::Uri,
    pub version: http::Version,
    /// The request as it went upstream (`$upstream_scheme`, `$upstream_host`, `$upstream_uri`).
    pub upstream_scheme: &'static str,
    pub upstream_host: Option<http::HeaderValue>,
    pub upstream_uri: Option<http::Uri>,
}

impl Finished {
    /// Who wrote the answer: the upstream, the proxy when the try failed, or the gateway.
    pub fn response_source(&self) -> crate::metrics::ResponseSource {
        use crate::metrics::ResponseSource;
        if self.from_upstream {
            ResponseSource::Upstream
        } else if self.node.is_some() {
            ResponseSource::Nginx
        } else {
            ResponseSource::Apisix
        }
    }
}

/// How the `prometheus` plugin wants a request counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountMetrics {
    /// Route and service names in place of ids, where they have one.
    pub prefer_name: bool,
}

/// A plugin's name for a value, and which instance of the plugin set it.
type ScratchKey = (&'static str, usize);

impl RequestState {
    /// Consumers by credential (none before a config snapshot is attached).
    pub fn consumers(&self) -> &ConsumerIndex {
        static EMPTY: std::sync::OnceLock<ConsumerIndex> = std::sync::OnceLock::new();
        match &self.consumer_index {
            Some(c) => c,
            None => EMPTY.get_or_init(ConsumerIndex::default),
        }
    }

    /// A plugin's per-request value, under a name of its own.
    pub fn get<T: 'static>(&self, key: &'static str) -> Option<&T> {
        self.get_at(key, 0)
    }

    /// A plugin's per-request value, to change.
    pub fn get_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        self.get_mut_at(key, 0)
    }

    /// Sets a plugin's per-request value.
    pub fn set<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.set_at(key, 0, value)
    }

    /// Like [`Self::get`] for one instance of a plugin (`instance`: e.g. its address), when
    /// a global rule and a route may both run it.
    pub fn get_at<T: 'static>(&self, key: &'static str, instance: usize) -> Option<&T> {
        self.scratch
            .iter()
            .find(|(k, _)| *k == (key, instance))
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// Like [`Self::get_mut`] for one instance of a plugin.
    pub fn get_mut_at<T: 'static>(&mut self, key: &'static str, instance: usize) -> Option<&mut T> {
        self.scratch
            .iter_mut()
            .find(|(k, _)| *k == (key, instance))
            .and_then(|(_, v)| v.downcast_mut())
    }

    /// Like [`Self::get_mut_at`], setting the default first when there is none.
    pub fn get_or_default_at<T: Any + Send + Sync + Default>(
        &mut self,
        key: &'static str,
        instance: usize,
    ) -> &mut T {
        let at = match self
            .scratch
            .iter()
            .position(|(k, v)| *k == (key, instance) && v.is::<T>())
        {
            Some(i) => i,
            None => {
                self.scratch.retain(|(k, _)| *k != (key, instance));
                self.scratch.push(((key, instance), Box::new(T::default())));
                self.scratch.len() - 1
            }
        };
        let slot: &mut (dyn Any + Send + Sync) = &mut *self.scratch[at].1;
        match slot.downcast_mut::<T>() {
            Some(v) => v,
            // The slot holds a T: it was checked or just made so.
            None => unreachable!(),
        }
    }

    /// Like [`Self::set`] for one instance of a plugin.
    pub fn set_at<T: Any + Send + Sync>(&mut self, key: &'static str, instance: usize, value: T) {
        self.scratch.retain(|(k, _)| *k != (key, instance));
        self.scratch.push(((key, instance), Box::new(value)));
    }
}

/// A request as a plugin phase sees it.
pub struct Cx<'a> {
    pub session: &'a mut Session,
    pub state: &'a mut RequestState,
}

impl Cx<'_> {
    /// The downstream request (as rewritten so far).
    pub fn req(&self) -> &RequestHeader {
        self.session.req_header()
    }

    /// The downstream request, to rewrite before it goes upstream.
    pub fn req_mut(&mut self) -> &mut RequestHeader {
        self.session.req_header_mut()
    }

    /// A request header as text (`None` when absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req().headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An APISIX variable (`uri`, `arg_x`, `http_x`, `route_id`, `consumer_name`, …).
    pub fn var(&self, name: &str) -> Option<String> {
        self.with_vars(|v| v.var(name).map(Cow::into_owned))
    }

    /// Whether a `vars` expression holds for this request.
    pub fn matches(&self, vars: &Vars) -> bool {
        self.with_vars(|v| vars.matches(v))
    }

    /// Runs `f` with the request's variables.
    pub fn with_vars<R>(&self, f: impl FnOnce(&dyn VarLookup) -> R) -> R {
        let req = self.session.req_header();
        let path = normalize_path(req.uri.path());
        let host = request_host(req);
        let base = RequestVars {
            req,
            path: &path,
            host: host.as_deref(),
            client_ip: self.state.client_ip,
            server_port: self
                .session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
            scheme: if self.state.scheme.is_empty() {
                "http"
            } else {
                self.state.scheme
            },
        };
        f(&StateVars {
            base,
            state: self.state,
        })
    }
}

impl Cx<'_> {
    /// Like [`Cx::with_vars`], with the variables of a finished request too (`$status`,
    /// `$request_time`, `$upstream_addr`, `$bytes_sent`, `$time_local`, …), for the log
    /// phase. `$request` and `$request_uri` are the request as the client sent it.
    pub fn with_log_vars<R>(&self, f: impl FnOnce(&dyn VarLookup) -> R) -> R {
        let state = &*self.state;
        self.with_vars(|base| f(&LogVars { base, state }))
    }
}

/// A finished request's variables over the request's.
struct LogVars<'a> {
    base: &'a dyn VarLookup,
    state: &'a RequestState,
}

/// Seconds with milliseconds, as nginx writes times (`0.003`).
fn seconds(d: std::time::Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn version_text(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

impl VarLookup for LogVars<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        let state = self.state;
        let Some(done) = state.finished.as_ref() else {
            return self.base.var(name);
        };
        let owned = |s: String| Some(Cow::Owned(s));
        match name {
            "status" => owned(state.status.to_string()),
            "request_time" => owned(seconds(done.latency)),
            "upstream_response_time" => done.upstream_latency.map(seconds).map(Cow::Owned),
            "upstream_addr" => done.node.map(|a| Cow::Owned(a.to_string())),
            "upstream_status" => state.upstream_status.map(|s| Cow::Owned(s.to_string())),
            "bytes_sent" => owned(done.response_bytes.to_string()),
            "body_bytes_sent" => owned(done.body_bytes_sent.to_string()),
            "request_length" => owned(done.request_bytes.to_string()),
            "request" => owned(format!(
                "{} {} {}",
                done.method,
                done.request_uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str()),
                version_text(done.version)
            )),
            "request_uri" => match done.request_uri.path_and_query() {
                Some(p) => Some(Cow::Borrowed(p.as_str())),
                None => self.base.var(name),
            },
            "server_protocol" => Some(Cow::Borrowed(version_text(done.version))),
            "upstream_scheme" => done.node.map(|_| Cow::Borrowed(done.upstream_scheme)),
            "upstream_host" => done
                .upstream_host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(Cow::Borrowed),
            "upstream_uri" => done
                .upstream_uri
                .as_ref()
                .and_then(|u| u.path_and_query())
                .map(|p| Cow::Borrowed(p.as_str())),
            "time_local" => owned(
                chrono::Local::now()
                    .format("%d/%b/%Y:%H:%M:%S %z")
                    .to_string(),
            ),
            "time_iso8601" => owned(
                chrono::Local::now()
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            ),
            "opentelemetry_context_traceparent" => state
                .trace
                .as_ref()
                .map(|t| Cow::Borrowed(t.traceparent.as_str())),
            "opentelemetry_trace_id" => state
                .trace
                .as_ref()
                .map(|t| Cow::Borrowed(t.trace_id.as_str())),
            "opentelemetry_span_id" => state
                .trace
                .as_ref()
                .map(|t| Cow::Borrowed(t.span_id.as_str())),
            "msec" => owned(format!("{:.3}", crate::status::now_secs())),
            "remote_user" => self.base.var("http_authorization").and_then(|a| {
                let b64 = a.strip_prefix("Basic ")?;
                let raw =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
                        .ok()?;
                let text = String::from_utf8(raw).ok()?;
                let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
                Some(Cow::Owned(user.to_string()))
            }),
            _ => self.base.var(name),
        }
    }
}

/// Request variables and the ones the pipeline knows (route, service, consumer).
struct StateVars<'a> {
    base: RequestVars<'a>,
    state: &'a RequestState,
}

impl VarLookup for StateVars<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        let route = self.state.route.as_deref();
        let consumer = self.state.consumer.as_deref();
        match name {
            "route_id" => route.and_then(|r| r.route_id.as_deref()).map(Cow::Borrowed),
            "service_id" => route
                .and_then(|r| r.service_id.as_deref())
                .map(Cow::Borrowed),
            "consumer_name" => consumer.map(|c| Cow::Borrowed(c.username.as_str())),
            "consumer_group_id" => consumer
                .and_then(|c| c.group_id.as_deref())
                .map(Cow::Borrowed),
            _ => self.base.var(name),
        }
    }
}

impl Cx<'_> {
    /// Marks the request as `consumer`'s (an auth plugin found it) and tells the upstream who
    /// it is, as APISIX does; a header the consumer has no value for is removed.
    pub fn attach_consumer(&mut self, consumer: Arc<ConsumerMatch>) {
        let req = self.session.req_header_mut();
        let [user, credential, custom] = CONSUMER_HEADERS;
        for (name, value) in [
            (user, Some(&consumer.username)),
            (credential, consumer.credential_id.as_ref()),
            (custom, consumer.custom_id.as_ref()),
        ] {
            match value {
                // A value that is no valid header is left out rather than failing the request.
                Some(v) => {
                    let _ = req.insert_header(name, v.as_str());
                }
                None if req.headers.contains_key(&name) => {
                    req.remove_header(&name);
                }
                None => {}
            }
        }
        self.state.consumer = Some(consumer);
    }

    /// The value of query argument `name` (percent-decoded), if present.
    pub fn query_arg(&self, name: &str) -> Option<String> {
        let query = self.req().uri.query()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name)
                .then(|| crate::vars::request::percent_decode(&v.replace('+', " ")).into_owned())
        })
    }

    /// Removes query argument `name` from the request that goes upstream.
    pub fn remove_query_arg(&mut self, name: &str) {
        let req = self.req();
        let Some(query) = req.uri.query() else {
            return;
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
            .collect();
        let path = req.uri.path();
        let uri = if kept.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        self.set_uri(&uri);
    }

    /// Replaces the path and query the upstream gets (an invalid one is logged and ignored).
    pub fn set_uri(&mut self, uri: &str) {
        match uri.parse::<http::Uri>() {
            Ok(u) => self.session.req_header_mut().set_uri(u),
            Err(e) => log::warn!("cannot set the upstream uri to {uri:?}: {e}"),
        }
    }
}

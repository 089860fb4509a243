//! The plugin pipeline: APISIX's plugins as Rust types, compiled once per config version and
//! run by the proxy in APISIX's phases.
//!
//! The door in is the [`Registry`]: a plugin's [`Factory`] turns the JSON settings of one
//! resource into a ready [`Plugin`] (typed, checked, regexes built) when that resource loads,
//! so a bad setting rejects that resource alone and the request path never looks at JSON.
//! A name the registry does not know rejects its resource: Portico never serves a route
//! without a protection it asks for (APISIX's data plane would skip it with a warning).
//!
//! Per route, the tables merge the plugins of service, plugin_config and route into one
//! [`Chain`] ordered by priority; global rules are chains of their own. The proxy runs
//! every plugin's `rewrite` before any plugin's `access`, whatever their priorities, as APISIX
//! does, and answers a refusal through one door that still runs the header filters.
//!
//! Users add plugins of their own with [`Registry::register`] (see
//! `examples/custom_plugin.rs`).

mod answer;
mod chain;
mod consumers;
mod cx;
mod redis_policy;
mod registry;
mod settings;
mod state;

mod template;
mod traffic_split;

mod api_breaker;
mod basic_auth;
mod client_control;
mod consumer_restriction;
mod cors;
mod csrf;
mod fault_injection;
mod hmac_auth;
mod ip_restriction;
mod jwt_auth;
mod key_auth;
mod limit_conn;
mod limit_count;
mod limit_req;
mod logger;
mod loggers;
mod mocking;
mod multi_auth;
mod opentelemetry;
mod prometheus;
mod proxy_mirror;
mod proxy_rewrite;
mod real_ip;
mod redirect;
mod referer_restriction;
mod request_id;
mod request_validation;
mod response_rewrite;
mod ua_restriction;

pub use answer::{nginx_page as answer_page, Answer};
pub use chain::{Chain, Entry, Layer, Meta, Phase};
pub use consumers::{anonymous_or_refuse, ConsumerIndex, ConsumerMatch};
pub use cx::{CountMetrics, Cx, Finished, RequestState, CONSUMER_HEADERS};
pub use registry::{registry, Built, Configured, Factory, Registry, Scope};
pub use settings::{allow_or_deny, check_range, parse_settings, ConsumerAuth};
pub use template::Template;
pub use traffic_split::UpstreamChoice;

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use std::future::Future;
use std::pin::Pin;

/// A plugin's compiled `plugin_metadata`, read by its instances at request time.
pub type Metadata = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Every plugin's compiled metadata, by plugin name (one per config snapshot).
#[derive(Default, Clone)]
pub struct MetadataIndex(std::collections::BTreeMap<String, Metadata>);

impl std::fmt::Debug for MetadataIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl MetadataIndex {
    pub fn new(entries: impl IntoIterator<Item = (String, Metadata)>) -> MetadataIndex {
        MetadataIndex(entries.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `plugin`'s metadata, as the type its factory made.
    pub fn get<T: 'static>(&self, plugin: &str) -> Option<&T> {
        self.0.get(plugin).and_then(|m| m.downcast_ref())
    }
}

/// What a request phase decides.
pub enum Flow {
    /// Go on with the next plugin.
    Continue,
    /// Stop here and answer the client (no later plugin runs, the upstream is not asked).
    Respond(Answer),
    /// Wait for this (a delay, a remote counter), then decide.
    Wait(Pin<Box<dyn Future<Output = Flow> + Send + 'static>>),
}

/// One configured plugin, as a route, service, consumer or global rule uses it. Every phase
/// defaults to doing nothing; a plugin overrides the phases it works in, as in APISIX.
///
/// The request phases are synchronous: a plugin that must wait returns [`Flow::Wait`], so the
/// plugins that never wait cost no boxed future per request.
pub trait Plugin: Send + Sync + 'static {
    /// APISIX's `rewrite` phase: authentication, rewrites, redirects, CORS preflights.
    fn rewrite(&self, _cx: &mut Cx<'_>) -> Flow {
        Flow::Continue
    }

    /// APISIX's `access` phase: restrictions and limits, after every plugin's rewrite.
    fn access(&self, _cx: &mut Cx<'_>) -> Flow {
        Flow::Continue
    }

    /// Each piece of the request body as it goes upstream; `end` on the last.
    fn request_body(&self, _cx: &mut Cx<'_>, _body: &Option<Bytes>, _end: bool) {}

    /// The most request body bytes this plugin reads whole (`hmac-auth`'s digest,
    /// `request-validation`'s schema), or `None` when it reads none. A route with such a
    /// plugin has its body read before the request phases run, up to that size (413 above),
    /// and [`RequestState::body`] holds it for them.
    fn wants_body(&self) -> Option<u64> {
        None
    }

    /// The whole body, for a body too big to read before the request phases (above Pingora's
    /// 64 KiB replay buffer): it is held back from the upstream until it has all arrived and
    /// this plugin agreed. A plugin whose request phase found [`RequestState::body`] empty
    /// with [`RequestState::body_later`] set checks here what it would have checked there.
    fn check_body(&self, _cx: &mut Cx<'_>, _body: &Bytes) -> Option<Answer> {
        None
    }

    /// Just before the request goes upstream, after the gateway's own headers
    /// (`X-Forwarded-*`, `pass_host`) are set.
    fn before_proxy(&self, _cx: &mut Cx<'_>, _upstream: &mut RequestHeader) {}

    /// The response header, from the upstream or from the gateway's own answer.
    fn header_filter(&self, _cx: &mut Cx<'_>, _resp: &mut ResponseHeader) {}

    /// Each piece of the response body; `end` on the last.
    fn body_filter(&self, _cx: &mut Cx<'_>, _body: &mut Option<Bytes>, _end: bool) {}

    /// After the response is sent.
    fn log(&self, _cx: &mut Cx<'_>) {}

    /// Upstreams the plugin may send to, in APISIX's upstream JSON (`traffic-split`'s inline
    /// ones): the tables check them and give each a balancer, or refuse the route.
    fn upstreams(&self) -> &[serde_json::Value] {
        &[]
    }
}

/// Registers every plugin Portico implements.
fn register_builtins(r: &mut Registry) {
    r.register(api_breaker::ApiBreakerFactory);
    r.register(basic_auth::BasicAuthFactory);
    r.register(client_control::ClientControlFactory);
    r.register(consumer_restriction::ConsumerRestrictionFactory);
    r.register(cors::CorsFactory);
    r.register(csrf::CsrfFactory);
    r.register(fault_injection::FaultInjectionFactory);
    r.register(loggers::FileLoggerFactory);
    r.register(loggers::HttpLoggerFactory);
    r.register(hmac_auth::HmacAuthFactory);
    r.register(ip_restriction::IpRestrictionFactory);
    r.register(jwt_auth::JwtAuthFactory);
    r.register(key_auth::KeyAuthFactory);
    r.register(limit_conn::LimitConnFactory);
    r.register(limit_count::LimitCountFactory);
    r.register(limit_req::LimitReqFactory);
    r.register(mocking::MockingFactory);
    r.register(multi_auth::MultiAuthFactory);
    r.register(opentelemetry::OpenTelemetryFactory);
    r.register(prometheus::PrometheusFactory);
    r.register(proxy_mirror::ProxyMirrorFactory);
    r.register(proxy_rewrite::ProxyRewriteFactory);
    r.register(real_ip::RealIpFactory);
    r.register(redirect::RedirectFactory);
    r.register(referer_restriction::RefererRestrictionFactory);
    r.register(loggers::SyslogFactory);
    r.register(loggers::TcpLoggerFactory);
    r.register(loggers::UdpLoggerFactory);
    r.register(request_id::RequestIdFactory);
    r.register(request_validation::RequestValidationFactory);
    r.register(response_rewrite::ResponseRewriteFactory);
    r.register(traffic_split::TrafficSplitFactory);
    r.register(ua_restriction::UaRestrictionFactory);
}

//! A compiled, ordered list of plugins, and running it phase by phase.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::Value;

use super::answer::Answer;
use super::cx::Cx;
use super::registry::{Built, Configured};
use super::{Flow, Plugin};
use crate::vars::Vars;

/// `_meta` of a plugin's settings.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Turns the plugin off (also the service's plugin of that name, when set on a route).
    pub disable: bool,
    /// Replaces the plugin's priority for this use.
    pub priority: Option<i32>,
    /// Runs the plugin only for requests where this holds.
    pub filter: Option<Arc<Vars>>,
    /// Replaces the body of the plugin's refusals (status 400 and above).
    pub error_response: Option<Bytes>,
}

impl Meta {
    pub fn parse(settings: &Value) -> Result<Meta, String> {
        let Some(meta) = settings.get("_meta") else {
            return Ok(Meta::default());
        };
        let Value::Object(map) = meta else {
            return Err("property \"_meta\" validation failed: wrong type: expected object".into());
        };
        let mut out = Meta::default();
        for (k, v) in map {
            match k.as_str() {
                "disable" => out.disable = v.as_bool().ok_or(
                    "property \"_meta.disable\" validation failed: wrong type: expected boolean",
                )?,
                "priority" => {
                    let p = v.as_i64().and_then(|p| i32::try_from(p).ok()).ok_or(
                        "property \"_meta.priority\" validation failed: wrong type: expected integer",
                    )?;
                    out.priority = Some(p);
                }
                "filter" => {
                    let vars = Vars::parse(v)
                        .map_err(|e| format!("property \"_meta.filter\" validation failed: {e}"))?;
                    out.filter = Some(Arc::new(vars));
                }
                "error_response" => {
                    out.error_response = Some(match v {
                        Value::String(s) => Bytes::from(s.clone()),
                        Value::Object(_) => Bytes::from(format!("{v}\n")),
                        _ => return Err("property \"_meta.error_response\" validation failed: wrong type: expected string or object".into()),
                    });
                }
                // Not something a request would go without; refused so nobody relies on it.
                other => {
                    return Err(format!(
                        "property \"_meta.{other}\" is not supported by Portico"
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// One plugin in a chain.
#[derive(Clone)]
pub struct Entry {
    pub name: Arc<str>,
    pub priority: i32,
    pub plugin: Arc<dyn Plugin>,
    pub filter: Option<Arc<Vars>>,
    pub error_response: Option<Bytes>,
    /// Came from the consumer (its rewrite runs after authentication).
    pub from_consumer: bool,
    /// An auth plugin (its rewrite never runs again for the consumer).
    pub auth: bool,
}

/// Plugins in the order they run within a phase: higher priority first, then by name.
#[derive(Clone, Default)]
pub struct Chain {
    entries: Vec<Entry>,
    /// The most body bytes a plugin of the chain reads whole, if one does.
    wants_body: Option<u64>,
    /// The route and service the chain was compiled for (`route_id`, `service_id` vars).
    pub route_id: Option<String>,
    pub service_id: Option<String>,
    /// The route's and service's `name`s (`prefer_name` of the metrics and loggers).
    pub route_name: Option<Arc<str>>,
    pub service_name: Option<Arc<str>>,
    /// The route's `uris` and `hosts`, for `matched_uri` and `matched_host`.
    pub uris: Arc<[String]>,
    pub hosts: Arc<[String]>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &*e.name))
            .finish()
    }
}

fn wants_body(entries: &[Entry]) -> Option<u64> {
    entries.iter().filter_map(|e| e.plugin.wants_body()).min()
}

/// Plugins by name, as one resource configures them.
pub type Layer = BTreeMap<String, Configured>;

impl Chain {
    /// Merges `layers`, lowest precedence first: for each name the last layer that has it wins
    /// whole (APISIX replaces the setting, it does not merge fields); disabled ones drop out.
    /// Consumer-side auth settings are not plugins of a chain and are left out.
    pub fn build<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Chain {
        let mut by_name: BTreeMap<&str, &Configured> = BTreeMap::new();
        for layer in layers {
            for (name, c) in layer {
                by_name.insert(name, c);
            }
        }
        let mut entries: Vec<Entry> = by_name
            .into_iter()
            .filter(|(_, c)| !c.meta.disable)
            .filter_map(|(name, c)| match &c.built {
                Built::Plugin(p) => Some(Entry {
                    name: Arc::from(name),
                    priority: c.priority,
                    plugin: p.clone(),
                    filter: c.meta.filter.clone(),
                    error_response: c.meta.error_response.clone(),
                    from_consumer: false,
                    auth: super::registry().factory(name).is_some_and(|f| f.is_auth()),
                }),
                Built::Credential(_) => None,
            })
            .collect();
        sort(&mut entries);
        Chain {
            wants_body: wants_body(&entries),
            entries,
            ..Chain::default()
        }
    }

    /// The global rules' plugins as one chain (a plugin in two rules runs twice; APISIX runs
    /// neither, which would drop a protection).
    pub fn concat<'a>(chains: impl IntoIterator<Item = &'a Chain>) -> Chain {
        let mut entries: Vec<Entry> = chains
            .into_iter()
            .flat_map(|c| c.entries.iter().cloned())
            .collect();
        sort(&mut entries);
        Chain {
            wants_body: wants_body(&entries),
            entries,
            ..Chain::default()
        }
    }

    /// This chain with a consumer's plugins over it (same name: the consumer's wins).
    pub fn with_consumer(&self, consumer: &Chain) -> Chain {
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| !consumer.entries.iter().any(|c| c.name == e.name))
            .cloned()
            .collect();
        entries.extend(consumer.entries.iter().cloned().map(|mut e| {
            // Its rewrite runs after authentication only if the route's did not already run
            // under that name, and never for auth plugins (as APISIX's rewrite_in_consumer).
            e.from_consumer = !e.auth && !self.entries.iter().any(|r| r.name == e.name);
            e
        }));
        sort(&mut entries);
        Chain {
            wants_body: wants_body(&entries),
            entries,
            route_id: self.route_id.clone(),
            service_id: self.service_id.clone(),
            route_name: self.route_name.clone(),
            service_name: self.service_name.clone(),
            uris: self.uris.clone(),
            hosts: self.hosts.clone(),
        }
    }

    /// The most request body bytes a plugin of this chain reads whole, if one does (the
    /// smallest, when several do).
    pub fn wants_body(&self) -> Option<u64> {
        self.wants_body
    }

    /// Asks the plugins that read the body whole about a body that arrived after the request
    /// phases; the first refusal is the answer.
    pub fn check_body(&self, cx: &mut Cx<'_>, body: &Bytes) -> Option<Answer> {
        for e in &self.entries {
            if e.plugin.wants_body().is_some() && applies(e, cx) {
                if let Some(mut a) = e.plugin.check_body(cx, body) {
                    if let (Some(b), true) = (&e.error_response, a.status >= 400) {
                        a.body = Some(b.clone());
                    }
                    return Some(a);
                }
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The inline upstreams a plugin of the chain may send to (see [`Plugin::upstreams`]).
    pub fn inline_upstreams(&self) -> &[Value] {
        self.entries
            .iter()
            .map(|e| e.plugin.upstreams())
            .find(|u| !u.is_empty())
            .unwrap_or(&[])
    }

    /// The names in running order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// Runs `rewrite` (all, or only the consumer's plugins) or `access`; the first answer
    /// stops the chain.
    pub async fn run(&self, phase: Phase, cx: &mut Cx<'_>) -> Option<Answer> {
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            if phase == Phase::ConsumerRewrite && !e.from_consumer {
                continue;
            }
            if !applies(e, cx) {
                continue;
            }
            let flow = match phase {
                Phase::Rewrite | Phase::ConsumerRewrite => e.plugin.rewrite(cx),
                Phase::Access => e.plugin.access(cx),
            };
            let flow = match flow {
                Flow::Wait(f) => f.await,
                other => other,
            };
            match flow {
                Flow::Continue | Flow::Wait(_) => {}
                Flow::Respond(mut a) => {
                    if let (Some(body), true) = (&e.error_response, a.status >= 400) {
                        a.body = Some(body.clone());
                    }
                    return Some(a);
                }
            }
        }
        None
    }

    /// Runs `f` for each plugin whose `_meta.filter` holds for this request.
    fn each(&self, cx: &mut Cx<'_>, mut f: impl FnMut(&dyn Plugin, &mut Cx<'_>)) {
        for e in &self.entries {
            if applies(e, cx) {
                f(&*e.plugin, cx);
            }
        }
    }

    pub fn before_proxy(&self, cx: &mut Cx<'_>, up: &mut RequestHeader) {
        self.each(cx, |p, cx| p.before_proxy(cx, up));
    }

    pub fn request_body(&self, cx: &mut Cx<'_>, body: &Option<Bytes>, end: bool) {
        self.each(cx, |p, cx| p.request_body(cx, body, end));
    }

    pub fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        self.each(cx, |p, cx| p.header_filter(cx, resp));
    }

    pub fn body_filter(&self, cx: &mut Cx<'_>, body: &mut Option<Bytes>, end: bool) {
        self.each(cx, |p, cx| p.body_filter(cx, body, end));
    }

    pub fn log(&self, cx: &mut Cx<'_>) {
        self.each(cx, |p, cx| p.log(cx));
    }
}

/// Whether a plugin runs for this request: its `_meta.filter`, decided once per request (as
/// APISIX caches it), so a plugin never runs in one phase and not in the next because an
/// earlier plugin rewrote the request.
fn applies(e: &Entry, cx: &mut Cx<'_>) -> bool {
    let Some(filter) = &e.filter else {
        return true;
    };
    let key = Arc::as_ptr(filter) as usize;
    if let Some(Decided(d)) = cx.state.get_at::<Decided>(FILTERED, key) {
        return *d;
    }
    let holds = cx.matches(filter);
    cx.state.set_at(FILTERED, key, Decided(holds));
    holds
}

/// A `_meta.filter` decided for this request.
struct Decided(bool);
const FILTERED: &str = "_meta.filter";

fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The request phases a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Rewrite,
    /// The rewrite of the plugins a consumer brought, after authentication found it.
    ConsumerRewrite,
    Access,
}

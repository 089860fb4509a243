//! The compiled, immutable tables a request reads (router, resources, balancers), published
//! as one snapshot through arc-swap. Config sources (standalone YAML, etcd) hand validated
//! resources to a [`Store`]; requests `load()` a snapshot once and use it to the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

pub mod sharded;

use crate::model::{
    Consumer, GlobalRule, Id, Invalid, Kind, PluginConfig, Resource, Route, Service, Ssl, Timeout,
    Upstream,
};
use crate::router::{RouteEntry, Router};
use crate::upstream::Balancer;

/// A resource with the order it was loaded in (the router's last tie-breaker).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub seq: u64,
    pub item: Arc<T>,
}

/// Every valid resource, by kind and id.
#[derive(Debug, Clone, Default)]
pub struct ConfigSet {
    pub routes: BTreeMap<Id, Loaded<Route>>,
    pub services: BTreeMap<Id, Loaded<Service>>,
    pub upstreams: BTreeMap<Id, Loaded<Upstream>>,
    pub plugin_configs: BTreeMap<Id, Loaded<PluginConfig>>,
    pub global_rules: BTreeMap<Id, Loaded<GlobalRule>>,
    pub consumers: BTreeMap<String, Loaded<Consumer>>,
    pub ssls: BTreeMap<Id, Loaded<Ssl>>,
}

impl ConfigSet {
    /// Adds (or replaces) a resource.
    pub fn insert(&mut self, seq: u64, resource: Resource) {
        fn put<K: Ord, T>(map: &mut BTreeMap<K, Loaded<T>>, key: K, seq: u64, item: T) {
            map.insert(
                key,
                Loaded {
                    seq,
                    item: Arc::new(item),
                },
            );
        }
        match resource {
            Resource::Route(r) => put(&mut self.routes, r.id.clone(), seq, *r),
            Resource::Service(s) => put(&mut self.services, s.id.clone(), seq, s),
            Resource::Upstream(u) => match u.id.clone() {
                Some(id) => put(&mut self.upstreams, id, seq, u),
                None => log::warn!("upstream without id ignored"),
            },
            Resource::PluginConfig(p) => put(&mut self.plugin_configs, p.id.clone(), seq, p),
            Resource::GlobalRule(g) => put(&mut self.global_rules, g.id.clone(), seq, g),
            Resource::Consumer(c) => put(&mut self.consumers, c.username.clone(), seq, c),
            Resource::Ssl(s) => put(&mut self.ssls, s.id.clone(), seq, s),
        }
    }

    /// How many resources of each kind.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c = BTreeMap::new();
        c.insert(Kind::Route.dir(), self.routes.len());
        c.insert(Kind::Service.dir(), self.services.len());
        c.insert(Kind::Upstream.dir(), self.upstreams.len());
        c.insert(Kind::PluginConfig.dir(), self.plugin_configs.len());
        c.insert(Kind::GlobalRule.dir(), self.global_rules.len());
        c.insert(Kind::Consumer.dir(), self.consumers.len());
        c.insert(Kind::Ssl.dir(), self.ssls.len());
        c
    }
}

/// Where a matched request goes.
#[derive(Debug)]
pub struct Target<'a> {
    pub upstream: &'a Upstream,
    pub balancer: &'a Arc<Balancer>,
    /// How the upstream is named in logs: `upstreams/1`, `routes/7 (inline)`, …
    pub upstream_name: &'a str,
    pub timeout: Timeout,
    pub websocket: bool,
}

/// Why a matched request cannot be proxied, with the status APISIX answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable {
    pub status: u16,
    pub message: String,
}

/// One version of everything a request needs.
#[derive(Debug, Default)]
pub struct Tables {
    pub config: ConfigSet,
    pub router: Router,
    /// Balancers by upstream name (see [`Target::upstream_name`]).
    balancers: HashMap<String, (Arc<Balancer>, Arc<Upstream>)>,
    /// Items that failed validation, with their errors.
    pub rejected: Vec<Invalid>,
    pub version: u64,
    /// Whether a config was ever loaded (readiness).
    pub loaded: bool,
    pub published_at: Option<SystemTime>,
}

impl Tables {
    /// Compiles `config`, reusing the balancers of `previous` whose nodes did not change.
    pub fn compile(config: ConfigSet, rejected: Vec<Invalid>, previous: &Tables) -> Tables {
        let started = Instant::now();
        let entries = config.routes.values().map(|loaded| {
            let route = loaded.item.clone();
            let hosts = if route.hosts.is_empty() {
                route
                    .service_id
                    .as_ref()
                    .and_then(|id| config.services.get(id))
                    .map(|s| s.item.hosts.clone())
                    .unwrap_or_default()
            } else {
                route.hosts.clone()
            };
            Arc::new(RouteEntry {
                route,
                hosts,
                seq: loaded.seq,
            })
        });
        let router = Router::build(entries);

        let mut balancers = HashMap::new();
        let mut keep = |name: String, upstream: &Arc<Upstream>| {
            let balancer = match previous.balancers.get(&name) {
                Some((b, old)) if old.nodes == upstream.nodes => b.clone(),
                _ => Arc::new(Balancer::new(upstream.nodes.clone())),
            };
            balancers.insert(name, (balancer, upstream.clone()));
        };
        for (id, u) in &config.upstreams {
            keep(format!("upstreams/{id}"), &u.item);
        }
        for (id, r) in &config.routes {
            if let Some(u) = &r.item.upstream {
                keep(format!("routes/{id} (inline)"), &Arc::new(u.clone()));
            }
        }
        for (id, s) in &config.services {
            if let Some(u) = &s.item.upstream {
                keep(format!("services/{id} (inline)"), &Arc::new(u.clone()));
            }
        }
        log::debug!(
            "compiled {} routes in {:?}",
            router.len(),
            started.elapsed()
        );
        Tables {
            config,
            router,
            balancers,
            rejected,
            version: 0,
            loaded: true,
            published_at: Some(SystemTime::now()),
        }
    }

    /// The upstream (and timeouts, websocket) of a matched route, merged with its service:
    /// the route's own fields win.
    pub fn target(&self, entry: &RouteEntry) -> Result<Target<'_>, Unroutable> {
        let route = &entry.route;
        let service = match &route.service_id {
            None => None,
            Some(id) => match self.config.services.get(id) {
                Some(s) => Some(&s.item),
                None => {
                    return Err(Unroutable {
                        status: 404,
                        message: format!("route {}: service {id} not found", route.id),
                    })
                }
            },
        };
        if let Some(id) = &route.plugin_config_id {
            if !self.config.plugin_configs.contains_key(id) {
                return Err(Unroutable {
                    status: 503,
                    message: format!("route {}: plugin_config {id} not found", route.id),
                });
            }
        }
        let name = if let Some(id) = &route.upstream_id {
            format!("upstreams/{id}")
        } else if route.upstream.is_some() {
            format!("routes/{} (inline)", route.id)
        } else if let Some(s) = service {
            match &s.upstream_id {
                Some(id) => format!("upstreams/{id}"),
                None if s.upstream.is_some() => format!("services/{} (inline)", s.id),
                None => String::new(),
            }
        } else {
            String::new()
        };
        let Some((name, (balancer, upstream))) = self.balancers.get_key_value(&name) else {
            return Err(Unroutable {
                status: 502,
                message: if name.is_empty() {
                    format!("route {}: no upstream configured", route.id)
                } else {
                    format!("route {}: {name} not found", route.id)
                },
            });
        };
        Ok(Target {
            upstream,
            balancer,
            upstream_name: name,
            timeout: route.timeout.unwrap_or_default().or(upstream.timeout),
            websocket: route
                .enable_websocket
                .or(service.and_then(|s| s.enable_websocket))
                .unwrap_or(false),
        })
    }
}

/// Holds the current [`Tables`] and publishes new versions.
#[derive(Debug, Default)]
pub struct Store {
    current: ArcSwap<Tables>,
    versions: AtomicU64,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// The current snapshot; keep it for the whole request.
    pub fn load(&self) -> Arc<Tables> {
        self.current.load_full()
    }

    /// Compiles and publishes a new config.
    pub fn publish(&self, config: ConfigSet, rejected: Vec<Invalid>) -> Arc<Tables> {
        let previous = self.current.load();
        let mut tables = Tables::compile(config, rejected, &previous);
        tables.version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let tables = Arc::new(tables);
        self.current.store(tables.clone());
        tables
    }
}

/// Parses resources of one kind from JSON values, keeping the valid ones and collecting the
/// errors of the others: one bad item never blocks the rest.
pub fn load_items<'a>(
    kind: Kind,
    items: impl IntoIterator<Item = (Option<String>, &'a serde_json::Value)>,
    config: &mut ConfigSet,
    rejected: &mut Vec<Invalid>,
    seq: &mut u64,
) {
    for (fallback_id, value) in items {
        match Resource::parse(kind, value, fallback_id.as_deref()) {
            Ok(resource) => {
                *seq += 1;
                config.insert(*seq, resource);
            }
            Err(message) => {
                let id = value
                    .get("id")
                    .or_else(|| value.get("username"))
                    .map(|v| v.to_string().trim_matches('"').to_string())
                    .or(fallback_id)
                    .unwrap_or_else(|| "(no id)".to_string());
                let invalid = Invalid { kind, id, message };
                log::error!("{invalid}");
                rejected.push(invalid);
            }
        }
    }
}

//! The compiled, immutable tables a request reads (router, resources, balancers), published
//! as one snapshot through arc-swap. Config sources (standalone YAML, etcd) hand validated
//! resources to a [`Store`]; requests `load()` a snapshot once and use it to the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::model::{
    Consumer, ConsumerGroup, Credential, GlobalRule, Id, Invalid, Kind, PluginConfig, Resource,
    Route, Service, Ssl, Timeout, Upstream,
};
use crate::plugin::{Built, Chain, ConsumerIndex, ConsumerMatch, UpstreamChoice};
use crate::router::{RouteEntry, Router};
use crate::sharded::ShardedMap;
use crate::upstream::Balancer;

/// A resource with the order it was loaded in (the router's last tie-breaker).
#[derive(Debug)]
pub struct Loaded<T> {
    pub seq: u64,
    pub item: Arc<T>,
}

impl<T> Clone for Loaded<T> {
    fn clone(&self) -> Self {
        Loaded {
            seq: self.seq,
            item: self.item.clone(),
        }
    }
}

/// Every valid resource, by kind and id. Cheap to clone (shared shards).
#[derive(Debug, Clone, Default)]
pub struct ConfigSet {
    pub routes: ShardedMap<Id, Loaded<Route>>,
    pub services: ShardedMap<Id, Loaded<Service>>,
    pub upstreams: ShardedMap<Id, Loaded<Upstream>>,
    pub plugin_configs: ShardedMap<Id, Loaded<PluginConfig>>,
    pub global_rules: ShardedMap<Id, Loaded<GlobalRule>>,
    pub consumers: ShardedMap<String, Loaded<Consumer>>,
    pub consumer_groups: ShardedMap<Id, Loaded<ConsumerGroup>>,
    /// By `username/id`.
    pub credentials: ShardedMap<String, Loaded<Credential>>,
    pub ssls: ShardedMap<Id, Loaded<Ssl>>,
    /// By plugin name.
    pub plugin_metadata: ShardedMap<Id, Loaded<crate::model::PluginMetadata>>,
}

fn loaded<T>(seq: u64, item: T) -> Loaded<T> {
    Loaded {
        seq,
        item: Arc::new(item),
    }
}

impl ConfigSet {
    /// Adds (or replaces) a resource.
    pub fn insert(&mut self, seq: u64, resource: Resource) {
        match resource {
            Resource::Route(r) => {
                self.routes.insert(r.id.clone(), loaded(seq, *r));
            }
            Resource::Service(s) => {
                self.services.insert(s.id.clone(), loaded(seq, s));
            }
            Resource::Upstream(u) => match u.id.clone() {
                Some(id) => {
                    self.upstreams.insert(id, loaded(seq, u));
                }
                None => log::warn!("upstream without id ignored"),
            },
            Resource::PluginConfig(p) => {
                self.plugin_configs.insert(p.id.clone(), loaded(seq, p));
            }
            Resource::GlobalRule(g) => {
                self.global_rules.insert(g.id.clone(), loaded(seq, g));
            }
            Resource::Consumer(c) => {
                self.consumers.insert(c.username.clone(), loaded(seq, c));
            }
            Resource::ConsumerGroup(g) => {
                self.consumer_groups.insert(g.id.clone(), loaded(seq, g));
            }
            Resource::Credential(c) => {
                self.credentials
                    .insert(format!("{}/{}", c.consumer, c.id), loaded(seq, c));
            }
            Resource::Ssl(s) => {
                self.ssls.insert(s.id.clone(), loaded(seq, s));
            }
            Resource::PluginMetadata(m) => {
                self.plugin_metadata.insert(m.id.clone(), loaded(seq, m));
            }
        }
    }

    /// Keeps `previous`'s version of a resource that is missing here (it was rejected), so a
    /// bad edit does not take a working resource out of service.
    pub fn keep_previous(&mut self, previous: &ConfigSet, kind: Kind, id: &str) {
        fn keep<K: Clone + std::hash::Hash + Eq, V: Clone>(
            to: &mut ShardedMap<K, V>,
            from: &ShardedMap<K, V>,
            key: K,
        ) {
            if !to.contains_key(&key) {
                if let Some(v) = from.get(&key) {
                    to.insert(key, v.clone());
                }
            }
        }
        let Ok(key) = Id::parse_str(id) else {
            // Consumers and credentials are keyed by name.
            match kind {
                Kind::Consumer => keep(&mut self.consumers, &previous.consumers, id.to_string()),
                Kind::Credential => {
                    keep(&mut self.credentials, &previous.credentials, id.to_string())
                }
                _ => {}
            }
            return;
        };
        match kind {
            Kind::Route => keep(&mut self.routes, &previous.routes, key),
            Kind::Service => keep(&mut self.services, &previous.services, key),
            Kind::Upstream => keep(&mut self.upstreams, &previous.upstreams, key),
            Kind::PluginConfig => keep(&mut self.plugin_configs, &previous.plugin_configs, key),
            Kind::GlobalRule => keep(&mut self.global_rules, &previous.global_rules, key),
            Kind::ConsumerGroup => keep(&mut self.consumer_groups, &previous.consumer_groups, key),
            Kind::Ssl => keep(&mut self.ssls, &previous.ssls, key),
            Kind::PluginMetadata => keep(&mut self.plugin_metadata, &previous.plugin_metadata, key),
            Kind::Consumer => keep(&mut self.consumers, &previous.consumers, id.to_string()),
            Kind::Credential => keep(&mut self.credentials, &previous.credentials, id.to_string()),
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
        c.insert(Kind::ConsumerGroup.dir(), self.consumer_groups.len());
        c.insert(Kind::Credential.dir(), self.credentials.len());
        c.insert(Kind::Ssl.dir(), self.ssls.len());
        c.insert(Kind::PluginMetadata.dir(), self.plugin_metadata.len());
        c
    }
}

/// One change to the resources: a resource put (with its load order) or a deletion.
#[derive(Debug, Clone)]
pub enum Change {
    Put { seq: u64, resource: Box<Resource> },
    Delete { kind: Kind, id: String },
}

/// Where a matched request goes; resolved once per request and kept for all its tries.
#[derive(Debug)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    pub balancer: Arc<Balancer>,
    /// How the upstream is named in logs: `upstreams/1`, `routes/7 (inline)`, …
    pub upstream_name: String,
    pub timeout: Timeout,
    pub websocket: bool,
}

/// Why a matched request cannot be proxied, with the status APISIX answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable {
    pub status: u16,
    pub message: String,
}

/// A balancer and the upstream it was made for.
type BalancerSlot = (Arc<Balancer>, Arc<Upstream>);

/// One version of everything a request needs. Built from a previous version by applying
/// changes: only what a change touches is copied.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    pub config: ConfigSet,
    pub router: Router,
    /// The entries filed in the router, by route id (to take them out again).
    entries: ShardedMap<Id, Arc<RouteEntry>>,
    /// Routes by the service they use (to re-file them when the service's hosts or plugins
    /// change).
    service_routes: ShardedMap<Id, Arc<BTreeSet<Id>>>,
    /// Routes by the plugin_config they use (to recompile their chains when it changes).
    plugin_config_routes: ShardedMap<Id, Arc<BTreeSet<Id>>>,
    /// The global rules' plugins: they run for every request, each phase before the route's.
    global: Arc<Chain>,
    /// Consumers by the credential of each auth plugin.
    consumers: Arc<ConsumerIndex>,
    /// The TLS listeners' certificates by SNI.
    certs: Arc<crate::tls::CertIndex>,
    /// The plugins' compiled `plugin_metadata`, by plugin name.
    metadata: Arc<crate::plugin::MetadataIndex>,
    /// Resources that are valid alone but conflict with another (a key two consumers share).
    pub conflicts: Arc<Vec<Invalid>>,
    /// Routes not served because of what their plugins ask for (a traffic-split upstream that
    /// is no valid upstream), by route id.
    route_problems: ShardedMap<Id, Invalid>,
    /// Set while a global rule is rejected without a last good version (or asks for what only a
    /// route can have): every request is refused with 503 rather than served without it.
    global_blocked: Option<Arc<Invalid>>,
    /// How many traffic-split balancers each route has (`routes/<id>/traffic-split/<n>`).
    split_balancers: ShardedMap<Id, usize>,
    /// Balancers by upstream name (see [`Target::upstream_name`]).
    balancers: ShardedMap<String, BalancerSlot>,
    /// Items that failed validation, with their errors.
    pub rejected: Arc<Vec<Invalid>>,
    pub version: u64,
    /// Whether a config was ever loaded (readiness).
    pub loaded: bool,
    pub published_at: Option<SystemTime>,
}

fn inline_name(kind: &str, id: &Id) -> String {
    format!("{kind}/{id} (inline)")
}

/// The balancer of a route's n-th traffic-split upstream.
fn split_name(route: &Id, n: usize) -> String {
    format!("routes/{route}/traffic-split/{n}")
}

impl Tables {
    /// Compiles `config` from scratch, reusing the balancers of `previous` whose nodes did not
    /// change.
    pub fn compile(config: ConfigSet, rejected: Vec<Invalid>, previous: &Tables) -> Tables {
        let started = Instant::now();
        let mut tables = Tables {
            rejected: Arc::new(rejected),
            loaded: true,
            published_at: Some(SystemTime::now()),
            ..Tables::default()
        };
        // Everything but routes as it is; then the balancers; then routes in load order, so
        // that each finds its service's hosts.
        tables.config = ConfigSet {
            routes: ShardedMap::default(),
            ..config.clone()
        };
        for (id, u) in config.upstreams.iter() {
            tables.keep_balancer(format!("upstreams/{id}"), &u.item, Some(previous));
        }
        for (id, s) in config.services.iter() {
            if let Some(u) = &s.item.upstream {
                tables.keep_balancer(
                    inline_name("services", id),
                    &Arc::new(u.clone()),
                    Some(previous),
                );
            }
        }
        tables.rebuild_global();
        tables.rebuild_consumers();
        tables.rebuild_certs();
        tables.rebuild_metadata();
        let mut routes: Vec<&Loaded<Route>> = config.routes.values().collect();
        routes.sort_by_key(|r| r.seq);
        for r in routes {
            tables.put_route(r.clone(), Some(previous));
        }
        tables.refresh_global_block();
        log::debug!(
            "compiled {} routes in {:?}",
            tables.router.len(),
            started.elapsed()
        );
        tables
    }

    /// Fail closed on global rules: one that was rejected (and has no last good version
    /// serving) protects every request, so no request is served without it.
    fn refresh_global_block(&mut self) {
        let rejected = self
            .rejected
            .iter()
            .find(|r| {
                r.kind == Kind::GlobalRule
                    && Id::parse_str(&r.id)
                        .map_or(true, |id| !self.config.global_rules.contains_key(&id))
            })
            .cloned();
        let inline = (!self.global.inline_upstreams().is_empty()).then(|| Invalid {
            kind: Kind::GlobalRule,
            id: "(all)".into(),
            message: "plugin traffic-split with inline upstreams works on routes and services only"
                .into(),
        });
        let blocked = rejected.or(inline);
        if let (Some(b), None) = (&blocked, &self.global_blocked) {
            log::error!("{b}: every request is refused with 503 until it is fixed or removed");
        }
        self.global_blocked = blocked.map(Arc::new);
    }

    /// Why every request is refused, if a global rule cannot be honoured.
    pub fn global_blocked(&self) -> Option<&Invalid> {
        self.global_blocked.as_deref()
    }

    /// A new version with `changes` applied; `rejected` replaces the rejected list when given.
    pub fn apply(&self, changes: Vec<Change>, rejected: Option<Vec<Invalid>>) -> Tables {
        let mut next = self.clone();
        next.loaded = true;
        next.published_at = Some(SystemTime::now());
        if let Some(r) = rejected {
            next.rejected = Arc::new(r);
        }
        next.apply_all(changes, None);
        next.refresh_global_block();
        next
    }

    fn apply_all(&mut self, changes: Vec<Change>, previous: Option<&Tables>) {
        let (mut global, mut consumers, mut certs, mut metadata) = (false, false, false, false);
        for change in changes {
            let kind = match &change {
                Change::Put { resource, .. } => resource.kind(),
                Change::Delete { kind, .. } => *kind,
            };
            global |= kind == Kind::GlobalRule;
            certs |= kind == Kind::Ssl;
            metadata |= kind == Kind::PluginMetadata;
            consumers |= matches!(
                kind,
                Kind::Consumer | Kind::Credential | Kind::ConsumerGroup
            );
            match change {
                Change::Put { seq, resource } => self.put(seq, *resource, previous),
                Change::Delete { kind, id } => self.delete(kind, &id),
            }
        }
        if global {
            self.rebuild_global();
        }
        if consumers {
            self.rebuild_consumers();
        }
        if certs {
            self.rebuild_certs();
        }
        if metadata {
            self.rebuild_metadata();
        }
    }

    /// The plugins' compiled metadata, by plugin name.
    fn rebuild_metadata(&mut self) {
        self.metadata = Arc::new(crate::plugin::MetadataIndex::new(
            self.config
                .plugin_metadata
                .values()
                .filter_map(|m| m.item.built.clone().map(|b| (m.item.id.to_string(), b))),
        ));
    }

    /// The plugins' `plugin_metadata`.
    pub fn plugin_metadata(&self) -> &Arc<crate::plugin::MetadataIndex> {
        &self.metadata
    }

    /// Files the server certificates by SNI, in load order.
    fn rebuild_certs(&mut self) {
        let mut ssls: Vec<&Loaded<Ssl>> = self.config.ssls.values().collect();
        ssls.sort_by_key(|s| s.seq);
        self.certs = Arc::new(crate::tls::CertIndex::build(
            ssls.into_iter().map(|s| &*s.item),
        ));
    }

    /// The TLS listeners' certificates by SNI.
    pub fn certs(&self) -> &Arc<crate::tls::CertIndex> {
        &self.certs
    }

    /// The global rules' chains, in id order.
    fn rebuild_global(&mut self) {
        let mut rules: Vec<(&Id, &Loaded<GlobalRule>)> = self.config.global_rules.iter().collect();
        rules.sort_by(|a, b| a.0.cmp(b.0));
        let chains: Vec<Chain> = rules
            .into_iter()
            .map(|(_, g)| Chain::build([&g.item.plugins.0]))
            .collect();
        self.global = Arc::new(Chain::concat(&chains));
    }

    /// Files every consumer under the credentials of its auth plugins (its own, and those of
    /// its credentials). A credential another consumer already holds is a conflict of the one
    /// loaded later, which is then not found by it.
    fn rebuild_consumers(&mut self) {
        let mut index = ConsumerIndex::default();
        let mut conflicts = Vec::new();
        // (seq, consumer, credential id, plugins)
        let mut sources: Vec<(u64, Arc<Consumer>, Option<&Credential>)> = Vec::new();
        for c in self.config.consumers.values() {
            sources.push((c.seq, c.item.clone(), None));
        }
        for cred in self.config.credentials.values() {
            match self.config.consumers.get(&cred.item.consumer) {
                Some(c) => sources.push((cred.seq, c.item.clone(), Some(&*cred.item))),
                None => log::warn!(
                    "credential {}/{}: consumer {} not found; the credential is not used",
                    cred.item.consumer,
                    cred.item.id,
                    cred.item.consumer
                ),
            }
        }
        sources.sort_by_key(|s| s.0);
        // Each consumer's chain once, for its own credentials and its anonymous use.
        let chains: std::collections::HashMap<&str, Arc<Chain>> = self
            .config
            .consumers
            .values()
            .map(|c| {
                (
                    c.item.username.as_str(),
                    Arc::new(self.consumer_chain(&c.item)),
                )
            })
            .collect();
        for c in self.config.consumers.values() {
            // As `anonymous_consumer`: no credential, no custom id (APISIX maps neither).
            let consumer = &c.item;
            index.insert_name(Arc::new(ConsumerMatch {
                username: consumer.username.clone(),
                credential_id: None,
                custom_id: None,
                group_id: consumer.group_id.as_ref().map(|g| g.to_string()),
                group_missing: self.group_missing(consumer),
                plugins: chains[consumer.username.as_str()].clone(),
                auth: Arc::new(()),
            }));
        }
        for (_, consumer, credential) in sources {
            let Some(plugins) = chains.get(consumer.username.as_str()).cloned() else {
                continue;
            };
            let group_missing = self.group_missing(&consumer);
            if !plugins.inline_upstreams().is_empty() {
                let (kind, id) = match credential {
                    Some(c) => (Kind::Credential, format!("{}/{}", c.consumer, c.id)),
                    None => (Kind::Consumer, consumer.username.clone()),
                };
                conflicts.push(Invalid {
                    kind,
                    id,
                    message: "plugin traffic-split with inline upstreams works on routes and services only; the consumer is not served".into(),
                });
                continue;
            }
            let auths = credential.map_or(&consumer.plugins, |c| &c.plugins);
            for (name, conf) in &auths.0 {
                let Built::Credential(auth) = &conf.built else {
                    continue;
                };
                if conf.meta.disable {
                    continue;
                }
                let found = Arc::new(ConsumerMatch {
                    username: consumer.username.clone(),
                    credential_id: credential.map(|c| c.id.to_string()),
                    custom_id: consumer.custom_id.clone(),
                    group_id: consumer.group_id.as_ref().map(|g| g.to_string()),
                    group_missing,
                    plugins: plugins.clone(),
                    auth: auth.data.clone(),
                });
                if let Err(e) = index.insert(name, auth.lookup.clone(), found) {
                    let (kind, id) = match credential {
                        Some(c) => (Kind::Credential, format!("{}/{}", c.consumer, c.id)),
                        None => (Kind::Consumer, consumer.username.clone()),
                    };
                    let invalid = Invalid {
                        kind,
                        id,
                        message: e,
                    };
                    log::error!("{invalid}");
                    conflicts.push(invalid);
                }
            }
        }
        self.consumers = Arc::new(index);
        self.conflicts = Arc::new(conflicts);
    }

    /// Whether the consumer names a group that is not there.
    fn group_missing(&self, consumer: &Consumer) -> bool {
        consumer
            .group_id
            .as_ref()
            .is_some_and(|g| !self.config.consumer_groups.contains_key(g))
    }

    /// A consumer's plugins over its group's.
    fn consumer_chain(&self, consumer: &Consumer) -> Chain {
        let group = consumer
            .group_id
            .as_ref()
            .and_then(|g| self.config.consumer_groups.get(g));
        if let (Some(id), None) = (&consumer.group_id, group) {
            log::warn!(
                "consumer {}: consumer group {id} not found",
                consumer.username
            );
        }
        let mut layers = Vec::new();
        if let Some(g) = group {
            layers.push(&g.item.plugins.0);
        }
        layers.push(&consumer.plugins.0);
        Chain::build(layers)
    }

    /// The global rules' plugins.
    pub fn global_chain(&self) -> &Arc<Chain> {
        &self.global
    }

    /// Consumers by credential.
    pub fn consumers(&self) -> &Arc<ConsumerIndex> {
        &self.consumers
    }

    /// Keeps the balancer of `name` when its nodes did not change, else makes a new one.
    fn keep_balancer(&mut self, name: String, upstream: &Arc<Upstream>, previous: Option<&Tables>) {
        let old = self
            .balancers
            .get(name.as_str())
            .or_else(|| previous.and_then(|p| p.balancers.get(name.as_str())));
        let same = |u: &Upstream| {
            u.nodes == upstream.nodes
                && u.kind == upstream.kind
                && u.checks == upstream.checks
                && u.hash_on == upstream.hash_on
                && u.key == upstream.key
                && u.tls == upstream.tls
                && upstream.tls.client_cert_id.is_none()
        };
        let balancer = match old {
            Some((b, u)) if same(u) => b.clone(),
            old => {
                let cert = self.client_cert(&name, upstream);
                Arc::new(Balancer::with_cert(upstream, old.map(|(b, _)| &**b), cert))
            }
        };
        self.balancers.insert(name, (balancer, upstream.clone()));
    }

    /// The client certificate of an upstream: its own PEM, or the ssl object it names.
    fn client_cert(
        &self,
        name: &str,
        u: &Upstream,
    ) -> Option<Arc<pingora_core::utils::tls::CertKey>> {
        let (cert, key) = match (&u.tls.client_cert, &u.tls.client_key, &u.tls.client_cert_id) {
            (Some(c), Some(k), _) => (c.clone(), k.clone()),
            (_, _, Some(id)) => match self.config.ssls.get(id) {
                Some(ssl) => (ssl.item.cert.clone(), ssl.item.key.clone()),
                None => {
                    log::error!("{name}: tls.client_cert_id {id}: no such ssl");
                    return None;
                }
            },
            _ => return None,
        };
        match crate::model::cert_key(&cert, &key) {
            Ok(ck) => Some(Arc::new(ck)),
            Err(e) => {
                log::error!("{name}: {e}");
                None
            }
        }
    }

    fn file_route(&mut self, loaded: &Loaded<Route>) {
        let route = loaded.item.clone();
        let hosts = if route.hosts.is_empty() {
            route
                .service_id
                .as_ref()
                .and_then(|id| self.config.services.get(id))
                .map(|s| s.item.hosts.clone())
                .unwrap_or_default()
        } else {
            route.hosts.clone()
        };
        let mut chain = self.route_chain(&route);
        chain.hosts = hosts.clone().into();
        let chain = Arc::new(chain);
        if let Err(problem) = self.split_upstreams(&route.id, &chain) {
            // Fail closed: the route is not served without the split it asks for.
            log::error!("{problem}");
            self.route_problems.insert(route.id.clone(), problem);
            return;
        }
        self.route_problems.remove(&route.id);
        let entry = Arc::new(RouteEntry {
            route,
            hosts,
            seq: loaded.seq,
            chain,
        });
        self.router.add(&entry);
        self.entries.insert(entry.route.id.clone(), entry);
    }

    /// Gives each inline upstream of the route's traffic-split a balancer (keeping the live
    /// state of those whose nodes did not change), and drops the ones it no longer has.
    fn split_upstreams(&mut self, id: &Id, chain: &Chain) -> Result<(), Invalid> {
        let specs = chain.inline_upstreams();
        let mut parsed = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            match Upstream::parse(spec, None) {
                Ok(u) => parsed.push(u),
                Err(e) => {
                    self.drop_split_balancers(id, 0);
                    return Err(Invalid {
                        kind: Kind::Route,
                        id: id.to_string(),
                        message: format!(
                            "plugin traffic-split: weighted upstream {i}: {e}; the route is not served"
                        ),
                    });
                }
            }
        }
        let n = parsed.len();
        for (i, u) in parsed.into_iter().enumerate() {
            self.keep_balancer(split_name(id, i), &Arc::new(u), None);
        }
        self.drop_split_balancers(id, n);
        if n > 0 {
            self.split_balancers.insert(id.clone(), n);
        }
        Ok(())
    }

    /// Removes a route's traffic-split balancers from the `keep`-th on.
    fn drop_split_balancers(&mut self, id: &Id, keep: usize) {
        let had = self.split_balancers.get(id).copied().unwrap_or(0);
        for i in keep..had {
            self.balancers.remove(split_name(id, i).as_str());
        }
        if keep == 0 {
            self.split_balancers.remove(id);
        }
    }

    /// Routes not served because of their plugins.
    pub fn route_problems(&self) -> impl Iterator<Item = &Invalid> {
        self.route_problems.values()
    }

    /// A route's plugins over its plugin_config's over its service's (APISIX's precedence).
    fn route_chain(&self, route: &Route) -> Chain {
        let service = route
            .service_id
            .as_ref()
            .and_then(|id| self.config.services.get(id));
        let plugin_config = route
            .plugin_config_id
            .as_ref()
            .and_then(|id| self.config.plugin_configs.get(id));
        let mut layers = Vec::new();
        if let Some(s) = service {
            layers.push(&s.item.plugins.0);
        }
        if let Some(p) = plugin_config {
            layers.push(&p.item.plugins.0);
        }
        layers.push(&route.plugins.0);
        let mut chain = Chain::build(layers);
        chain.route_id = Some(route.id.to_string());
        chain.service_id = route.service_id.as_ref().map(|s| s.to_string());
        chain.route_name = route.name.as_deref().map(Arc::from);
        chain.service_name = service.and_then(|s| s.item.name.as_deref()).map(Arc::from);
        chain.uris = route.uris.clone().into();
        chain
    }

    fn unfile_route(&mut self, id: &Id) {
        if let Some(entry) = self.entries.remove(id) {
            self.router.remove(&entry);
        }
    }

    fn link_service(&mut self, service: &Id, route: &Id, linked: bool) {
        link(&mut self.service_routes, service, route, linked);
    }

    fn put_route(&mut self, loaded: Loaded<Route>, previous: Option<&Tables>) {
        let id = loaded.item.id.clone();
        let name = inline_name("routes", &id);
        // The inline upstream's live state (health, position) outlives an edit of the route.
        let old_inline = self.balancers.get(name.as_str()).cloned();
        // So do its traffic-split upstreams' (kept below when their nodes did not change).
        let old_splits: Vec<(String, BalancerSlot)> =
            (0..self.split_balancers.get(&id).copied().unwrap_or(0))
                .filter_map(|i| {
                    let n = split_name(&id, i);
                    self.balancers.get(n.as_str()).cloned().map(|b| (n, b))
                })
                .collect();
        let splits = old_splits.len();
        self.remove_route(&id);
        for (n, b) in old_splits {
            self.balancers.insert(n, b);
        }
        if splits > 0 {
            self.split_balancers.insert(id.clone(), splits);
        }
        if let Some(u) = &loaded.item.upstream {
            if let Some(old) = old_inline {
                self.balancers.insert(name.clone(), old);
            }
            self.keep_balancer(name, &Arc::new(u.clone()), previous);
        }
        if let Some(service) = &loaded.item.service_id {
            self.link_service(service, &id, true);
        }
        if let Some(pc) = &loaded.item.plugin_config_id {
            link(&mut self.plugin_config_routes, pc, &id, true);
        }
        self.config.routes.insert(id, loaded.clone());
        self.file_route(&loaded);
    }

    fn remove_route(&mut self, id: &Id) {
        self.unfile_route(id);
        self.drop_split_balancers(id, 0);
        self.route_problems.remove(id);
        if let Some(old) = self.config.routes.remove(id) {
            if old.item.upstream.is_some() {
                self.balancers.remove(inline_name("routes", id).as_str());
            }
            if let Some(service) = &old.item.service_id {
                self.link_service(service, id, false);
            }
            if let Some(pc) = &old.item.plugin_config_id {
                link(&mut self.plugin_config_routes, pc, id, false);
            }
        }
    }

    /// Re-files the routes of a service whose hosts or plugins changed (or that appeared or
    /// went away).
    fn refile_service_routes(&mut self, service: &Id) {
        let Some(ids) = self.service_routes.get(service).cloned() else {
            return;
        };
        self.refile(&ids);
    }

    fn refile(&mut self, ids: &BTreeSet<Id>) {
        for id in ids.iter() {
            if let Some(loaded) = self.config.routes.get(id).cloned() {
                self.unfile_route(id);
                self.file_route(&loaded);
            }
        }
    }

    /// Recompiles the chains of the routes that use a plugin_config.
    fn refile_plugin_config_routes(&mut self, plugin_config: &Id) {
        if let Some(ids) = self.plugin_config_routes.get(plugin_config).cloned() {
            self.refile(&ids);
        }
    }

    fn put(&mut self, seq: u64, resource: Resource, previous: Option<&Tables>) {
        match resource {
            Resource::Route(r) => self.put_route(loaded(seq, *r), previous),
            Resource::Service(s) => {
                let id = s.id.clone();
                let old = self
                    .config
                    .services
                    .get(&id)
                    .map(|o| (o.item.hosts.clone(), o.item.plugins.clone()));
                match &s.upstream {
                    Some(u) => self.keep_balancer(
                        inline_name("services", &id),
                        &Arc::new(u.clone()),
                        previous,
                    ),
                    None => {
                        self.balancers.remove(inline_name("services", &id).as_str());
                    }
                }
                let changed = old.as_ref() != Some(&(s.hosts.clone(), s.plugins.clone()));
                self.config.services.insert(id.clone(), loaded(seq, s));
                if changed {
                    self.refile_service_routes(&id);
                }
            }
            Resource::Upstream(u) => {
                if let Some(id) = u.id.clone() {
                    let u = Arc::new(u);
                    self.keep_balancer(format!("upstreams/{id}"), &u, previous);
                    self.config.upstreams.insert(id, Loaded { seq, item: u });
                }
            }
            Resource::PluginConfig(p) => {
                let id = p.id.clone();
                self.config.insert(seq, Resource::PluginConfig(p));
                self.refile_plugin_config_routes(&id);
            }
            Resource::Ssl(ssl) => {
                let id = ssl.id.clone();
                self.config.insert(seq, Resource::Ssl(ssl));
                self.refresh_client_certs(&id);
            }
            other => self.config.insert(seq, other),
        }
    }

    /// Rebuilds the balancers whose client certificate comes from ssl `id`.
    fn refresh_client_certs(&mut self, id: &Id) {
        let users: Vec<(String, Arc<Upstream>)> = self
            .balancers
            .iter()
            .filter(|(_, (_, u))| u.tls.client_cert_id.as_ref() == Some(id))
            .map(|(name, (_, u))| (name.clone(), u.clone()))
            .collect();
        for (name, upstream) in users {
            self.keep_balancer(name, &upstream, None);
        }
    }

    fn delete(&mut self, kind: Kind, id: &str) {
        match kind {
            Kind::Consumer => {
                self.config.consumers.remove(id);
                return;
            }
            Kind::Credential => {
                self.config.credentials.remove(id);
                return;
            }
            _ => {}
        }
        let Ok(id_) = Id::parse_str(id) else {
            return;
        };
        let id = &id_;
        match kind {
            Kind::Route => self.remove_route(id),
            Kind::Service => {
                if self.config.services.remove(id).is_some() {
                    self.balancers.remove(inline_name("services", id).as_str());
                    self.refile_service_routes(id);
                }
            }
            Kind::Upstream => {
                self.config.upstreams.remove(id);
                self.balancers.remove(format!("upstreams/{id}").as_str());
            }
            Kind::PluginConfig => {
                if self.config.plugin_configs.remove(id).is_some() {
                    self.refile_plugin_config_routes(id);
                }
            }
            Kind::GlobalRule => {
                self.config.global_rules.remove(id);
            }
            Kind::ConsumerGroup => {
                self.config.consumer_groups.remove(id);
            }
            Kind::Consumer | Kind::Credential => {}
            Kind::Ssl => {
                self.config.ssls.remove(id);
                self.refresh_client_certs(id);
            }
            Kind::PluginMetadata => {
                self.config.plugin_metadata.remove(id);
            }
        }
    }

    /// Every upstream's balancer, by name.
    pub fn balancers(&self) -> impl Iterator<Item = (&String, &Arc<Balancer>)> {
        self.balancers.iter().map(|(name, (b, _))| (name, b))
    }

    /// Whether the service and plugin_config a matched route names exist (APISIX answers 404
    /// and 503 before any plugin runs).
    pub fn check_refs(&self, entry: &RouteEntry) -> Result<(), Unroutable> {
        let route = &entry.route;
        match &route.service_id {
            None => {}
            Some(id) => match self.config.services.get(id) {
                Some(_) => {}
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
        Ok(())
    }

    /// The upstream (and timeouts, websocket) of a matched route, merged with its service:
    /// the route's own fields win.
    pub fn target(&self, entry: &RouteEntry) -> Result<Target, Unroutable> {
        self.target_with(entry, None)
    }

    /// Like [`Tables::target`], to the upstream a plugin chose (`traffic-split`) when it chose.
    pub fn target_with(
        &self,
        entry: &RouteEntry,
        choice: Option<&UpstreamChoice>,
    ) -> Result<Target, Unroutable> {
        self.check_refs(entry)?;
        let route = &entry.route;
        let service = route
            .service_id
            .as_ref()
            .and_then(|id| self.config.services.get(id))
            .map(|s| &s.item);
        let name = if let Some(choice) = choice {
            match choice {
                UpstreamChoice::Id(id) => {
                    let name = format!("upstreams/{id}");
                    if self.balancers.get(name.as_str()).is_none() {
                        return Err(Unroutable {
                            status: 500,
                            message: format!(
                                "route {}: failed to fetch upstream info by upstream id: {id}",
                                route.id
                            ),
                        });
                    }
                    name
                }
                UpstreamChoice::Inline(n) => split_name(&route.id, *n),
            }
        } else if let Some(id) = &route.upstream_id {
            format!("upstreams/{id}")
        } else if route.upstream.is_some() {
            inline_name("routes", &route.id)
        } else if let Some(s) = service {
            match &s.upstream_id {
                Some(id) => format!("upstreams/{id}"),
                None if s.upstream.is_some() => inline_name("services", &s.id),
                None => String::new(),
            }
        } else {
            String::new()
        };
        let Some((balancer, upstream)) = self.balancers.get(name.as_str()) else {
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
            upstream: upstream.clone(),
            balancer: balancer.clone(),
            upstream_name: name,
            timeout: route.timeout.unwrap_or_default().or(upstream.timeout),
            websocket: route
                .enable_websocket
                .or(service.and_then(|s| s.enable_websocket))
                .unwrap_or(false),
        })
    }
}

/// Adds or removes `route` in the set of routes that use `to`.
fn link(map: &mut ShardedMap<Id, Arc<BTreeSet<Id>>>, to: &Id, route: &Id, linked: bool) {
    let mut set = map.get(to).map(|s| (**s).clone()).unwrap_or_default();
    if linked {
        set.insert(route.clone());
    } else {
        set.remove(route);
    }
    if set.is_empty() {
        map.remove(to);
    } else {
        map.insert(to.clone(), Arc::new(set));
    }
}

/// Holds the current [`Tables`] and publishes new versions.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Tables>,
    versions: AtomicU64,
    /// The version last published, for services that act on a change (the health checker).
    published: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            current: ArcSwap::default(),
            versions: AtomicU64::new(0),
            published: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Told of every version published from now on (the latest, not each one).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The current snapshot; keep it for the whole request.
    pub fn load(&self) -> Arc<Tables> {
        self.current.load_full()
    }

    fn store(&self, mut tables: Tables) -> Arc<Tables> {
        tables.version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let version = tables.version;
        let tables = Arc::new(tables);
        self.current.store(tables.clone());
        self.published.send_replace(version);
        tables
    }

    /// Compiles and publishes a whole new config (the standalone file).
    pub fn publish(&self, config: ConfigSet, rejected: Vec<Invalid>) -> Arc<Tables> {
        let previous = self.current.load();
        self.store(Tables::compile(config, rejected, &previous))
    }

    /// Publishes the current version with `changes` applied (the etcd sync).
    pub fn publish_changes(
        &self,
        changes: Vec<Change>,
        rejected: Option<Vec<Invalid>>,
    ) -> Arc<Tables> {
        let next = self.current.load().apply(changes, rejected);
        self.store(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Request;
    use crate::vars::VarLookup;
    use serde_json::json;
    use std::borrow::Cow;

    struct NoVars;

    impl VarLookup for NoVars {
        fn var(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
    }

    fn put(seq: u64, kind: Kind, v: serde_json::Value) -> Change {
        Change::Put {
            seq,
            resource: Box::new(Resource::parse(kind, &v, None).unwrap()),
        }
    }

    fn hit(t: &Tables, host: Option<&str>, path: &str) -> Option<String> {
        t.router
            .find(&Request {
                host,
                path,
                method: "GET",
                remote_addr: None,
                vars: &NoVars,
            })
            .map(|e| e.route.id.to_string())
    }

    #[test]
    fn changes_apply_incrementally() {
        let t0 = Tables::default().apply(
            vec![
                put(
                    1,
                    Kind::Upstream,
                    json!({"id": "u", "nodes": {"127.0.0.1:1": 1}}),
                ),
                put(
                    2,
                    Kind::Service,
                    json!({"id": "s", "hosts": ["a.test"], "upstream_id": "u"}),
                ),
                put(
                    3,
                    Kind::Route,
                    json!({"id": "r", "uri": "/x", "service_id": "s"}),
                ),
            ],
            None,
        );
        assert_eq!(hit(&t0, Some("a.test"), "/x").as_deref(), Some("r"));
        assert_eq!(hit(&t0, Some("b.test"), "/x"), None);
        let entry = t0
            .entries
            .get(&Id::parse_str("r").unwrap())
            .unwrap()
            .clone();
        let b0 = t0.target(&entry).unwrap().balancer;

        // The service's hosts change: its route is filed again; the old version is unchanged.
        let t1 = t0.apply(
            vec![put(
                4,
                Kind::Service,
                json!({"id": "s", "hosts": ["b.test"], "upstream_id": "u"}),
            )],
            None,
        );
        assert_eq!(hit(&t1, Some("b.test"), "/x").as_deref(), Some("r"));
        assert_eq!(hit(&t1, Some("a.test"), "/x"), None);
        assert_eq!(hit(&t0, Some("a.test"), "/x").as_deref(), Some("r"));

        // An upstream rewritten with the same nodes keeps its balancer; new nodes get a new one.
        let t2 = t1.apply(
            vec![put(
                5,
                Kind::Upstream,
                json!({"id": "u", "nodes": {"127.0.0.1:1": 1}, "name": "x"}),
            )],
            None,
        );
        let entry = t2
            .entries
            .get(&Id::parse_str("r").unwrap())
            .unwrap()
            .clone();
        assert!(Arc::ptr_eq(&t2.target(&entry).unwrap().balancer, &b0));
        let t3 = t2.apply(
            vec![put(
                6,
                Kind::Upstream,
                json!({"id": "u", "nodes": {"127.0.0.1:2": 1}}),
            )],
            None,
        );
        assert!(!Arc::ptr_eq(&t3.target(&entry).unwrap().balancer, &b0));

        // Editing a route keeps its inline upstream's live state.
        let inline = t3.apply(
            vec![put(
                7,
                Kind::Route,
                json!({"id": "i", "uri": "/i", "upstream": {"nodes": {"127.0.0.1:3": 1}}}),
            )],
            None,
        );
        let ie = inline
            .entries
            .get(&Id::parse_str("i").unwrap())
            .unwrap()
            .clone();
        let ib = inline.target(&ie).unwrap().balancer;
        let edited = inline.apply(
            vec![put(
                8,
                Kind::Route,
                json!({"id": "i", "uri": "/i2", "upstream": {"nodes": {"127.0.0.1:3": 1}}}),
            )],
            None,
        );
        let ee = edited
            .entries
            .get(&Id::parse_str("i").unwrap())
            .unwrap()
            .clone();
        assert!(Arc::ptr_eq(&edited.target(&ee).unwrap().balancer, &ib));

        // Deletes.
        let t4 = t3.apply(
            vec![Change::Delete {
                kind: Kind::Route,
                id: "r".into(),
            }],
            None,
        );
        assert_eq!(hit(&t4, Some("b.test"), "/x"), None);
        assert_eq!(t4.router.len(), 0);
        let t5 = t3.apply(
            vec![Change::Delete {
                kind: Kind::Service,
                id: "s".into(),
            }],
            None,
        );
        // Without its service the route has no host and no upstream: it matches anywhere and
        // answers 404 (missing service).
        let e = t5
            .entries
            .get(&Id::parse_str("r").unwrap())
            .unwrap()
            .clone();
        assert_eq!(hit(&t5, Some("c.test"), "/x").as_deref(), Some("r"));
        assert_eq!(t5.target(&e).unwrap_err().status, 404);
    }
}

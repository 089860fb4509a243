//! Route matching with APISIX's `radixtree_host_uri` semantics.
//!
//! Host-bound routes are tried before host-less ones (the exact host, then wildcard hosts from
//! the longest suffix), and within a host, exact paths before prefixes from the longest.
//! Candidates on one path are ordered by priority, then path length, then insertion order;
//! the first whose methods, remote addresses and vars hold wins. A lookup costs a few hash
//! probes and one walk of the path, whatever the number of routes.

mod radix;

use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{Methods, Route};
use crate::sharded::ShardedMap;
use crate::vars::VarLookup;
use radix::PrefixTree;

/// A route as the router files it: the route, and the hosts it answers for (its own, or its
/// service's when it has none).
#[derive(Debug)]
pub struct RouteEntry {
    pub route: Arc<Route>,
    pub hosts: Vec<String>,
    /// Insertion order: the last tie-breaker.
    pub seq: u64,
    /// The route's plugins merged with its service's and plugin_config's, in running order.
    pub chain: Arc<crate::plugin::Chain>,
}

/// What the router looks at in a request.
pub struct Request<'a> {
    /// Lowercase host without port; `None` when the request has none.
    pub host: Option<&'a str>,
    /// Normalized path without the query string.
    pub path: &'a str,
    pub method: &'a str,
    pub remote_addr: Option<IpAddr>,
    pub vars: &'a dyn VarLookup,
}

#[derive(Debug, Clone)]
struct Candidate {
    entry: Arc<RouteEntry>,
    path_len: u32,
    /// Copied from the route so that the common case never leaves this cache line.
    methods: Methods,
    /// The route has remote addresses or vars to check.
    needs_more: bool,
}

impl Candidate {
    fn new(entry: &Arc<RouteEntry>, path_len: usize) -> Candidate {
        let route = &entry.route;
        Candidate {
            entry: entry.clone(),
            path_len: path_len.min(u32::MAX as usize) as u32,
            methods: route.methods,
            needs_more: !route.remote_addrs.is_empty() || route.vars.is_some(),
        }
    }

    fn order_key(&self) -> (std::cmp::Reverse<i64>, std::cmp::Reverse<u32>, u64) {
        (
            std::cmp::Reverse(self.entry.route.priority),
            std::cmp::Reverse(self.path_len),
            self.entry.seq,
        )
    }

    fn accepts(&self, req: &Request<'_>) -> bool {
        if !self.methods.allows(req.method) {
            return false;
        }
        if !self.needs_more {
            return true;
        }
        let route = &self.entry.route;
        if !route.remote_addrs.is_empty() {
            let Some(ip) = req.remote_addr else {
                return false;
            };
            if !route.remote_addrs.iter().any(|c| c.contains(ip)) {
                return false;
            }
        }
        match &route.vars {
            Some(vars) => vars.matches(req.vars),
            None => true,
        }
    }
}

/// Candidates of one path in match order; the usual single route is kept inline.
#[derive(Debug, Clone)]
enum Candidates {
    One(Candidate),
    Many(Vec<Candidate>),
}

impl Candidates {
    fn insert(&mut self, c: Candidate) {
        let list = match self {
            Candidates::One(first) => {
                *self = Candidates::Many(vec![first.clone()]);
                match self {
                    Candidates::Many(list) => list,
                    Candidates::One(_) => unreachable!("just replaced"),
                }
            }
            Candidates::Many(list) => list,
        };
        let key = c.order_key();
        let at = list.partition_point(|x| x.order_key() <= key);
        list.insert(at, c);
    }

    fn first_accepting(&self, req: &Request<'_>) -> Option<&Arc<RouteEntry>> {
        match self {
            Candidates::One(c) => c.accepts(req).then_some(&c.entry),
            Candidates::Many(list) => list.iter().find(|c| c.accepts(req)).map(|c| &c.entry),
        }
    }

    /// Drops `entry`'s candidate; returns whether nothing is left.
    fn remove(&mut self, entry: &Arc<RouteEntry>) -> bool {
        match self {
            Candidates::One(c) => Arc::ptr_eq(&c.entry, entry),
            Candidates::Many(list) => {
                list.retain(|c| !Arc::ptr_eq(&c.entry, entry));
                if list.len() == 1 {
                    let only = list.remove(0);
                    *self = Candidates::One(only);
                }
                list_is_empty(self)
            }
        }
    }
}

fn list_is_empty(c: &Candidates) -> bool {
    matches!(c, Candidates::Many(list) if list.is_empty())
}

/// Prefix trees are split by the path's first segment (`/api/`), so that a change copies only
/// the tree of its segment; prefixes without a second `/` (`/*`, `/ap*`) share one tree.
type Tree = PrefixTree<Option<Candidates>>;

/// `/api/` for `/api/v1/x`; `None` when there is no second `/`.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    rest.find('/').map(|i| &path[..i + 2])
}

/// The routes of one host class (one exact host, one wildcard, or no host).
#[derive(Debug, Default, Clone)]
struct PathTable {
    exact: ShardedMap<Box<str>, Candidates>,
    prefix: ShardedMap<Box<str>, Arc<Tree>>,
    short: Arc<Tree>,
    /// Candidates filed (one per route and uri).
    len: usize,
}

fn add_to_tree(tree: &mut Tree, prefix: &str, candidate: Candidate) {
    let slot = tree.entry(prefix.as_bytes(), || None);
    match slot {
        Some(existing) => existing.insert(candidate),
        None => *slot = Some(Candidates::One(candidate)),
    }
}

fn remove_from_tree(tree: &mut Tree, prefix: &str, entry: &Arc<RouteEntry>) {
    let slot = tree.entry(prefix.as_bytes(), || None);
    if slot.as_mut().is_some_and(|c| c.remove(entry)) {
        *slot = None;
    }
}

fn find_in_tree<'a>(tree: &'a Tree, req: &Request<'_>) -> Option<&'a Arc<RouteEntry>> {
    tree.find_map(req.path.as_bytes(), |slot| {
        slot.as_ref().and_then(|list| list.first_accepting(req))
    })
}

impl PathTable {
    fn add(&mut self, uri: &str, entry: &Arc<RouteEntry>) {
        let candidate = Candidate::new(entry, uri.len());
        self.len += 1;
        match uri.strip_suffix('*') {
            Some(prefix) => match first_segment(prefix) {
                Some(seg) => match self.prefix.get_mut(seg) {
                    Some(tree) => add_to_tree(Arc::make_mut(tree), prefix, candidate),
                    None => {
                        let mut tree = Tree::default();
                        add_to_tree(&mut tree, prefix, candidate);
                        self.prefix.insert(seg.into(), Arc::new(tree));
                    }
                },
                None => add_to_tree(Arc::make_mut(&mut self.short), prefix, candidate),
            },
            None => match self.exact.get_mut(uri) {
                Some(existing) => existing.insert(candidate),
                None => {
                    self.exact.insert(uri.into(), Candidates::One(candidate));
                }
            },
        }
    }

    fn remove(&mut self, uri: &str, entry: &Arc<RouteEntry>) {
        self.len = self.len.saturating_sub(1);
        match uri.strip_suffix('*') {
            Some(prefix) => match first_segment(prefix) {
                Some(seg) => {
                    if let Some(tree) = self.prefix.get_mut(seg) {
                        remove_from_tree(Arc::make_mut(tree), prefix, entry);
                    }
                }
                None => remove_from_tree(Arc::make_mut(&mut self.short), prefix, entry),
            },
            None => {
                if self.exact.get_mut(uri).is_some_and(|c| c.remove(entry)) {
                    self.exact.remove(uri);
                }
            }
        }
    }

    fn find(&self, req: &Request<'_>) -> Option<&Arc<RouteEntry>> {
        if let Some(list) = self.exact.get(req.path) {
            if let Some(hit) = list.first_accepting(req) {
                return Some(hit);
            }
        }
        // Every prefix under the path's segment is longer than any short prefix of the path.
        if !self.prefix.is_empty() {
            if let Some(tree) = first_segment(req.path).and_then(|seg| self.prefix.get(seg)) {
                if let Some(hit) = find_in_tree(tree, req) {
                    return Some(hit);
                }
            }
        }
        if self.short.is_empty() {
            return None;
        }
        find_in_tree(&self.short, req)
    }
}

/// The compiled, immutable routing table. Cloning is cheap (shared shards), and
/// [`Router::add`]/[`Router::remove`] on a clone copy only the shards they touch.
#[derive(Debug, Default, Clone)]
pub struct Router {
    exact_hosts: ShardedMap<Box<str>, Arc<PathTable>>,
    /// Keyed by the suffix with its dot: `*.foo.com` → `.foo.com`.
    wildcard_hosts: ShardedMap<Box<str>, Arc<PathTable>>,
    any_host: Arc<PathTable>,
    routes: usize,
}

/// Which table a host files into.
enum HostKey<'a> {
    Exact(&'a str),
    Wildcard(&'a str),
}

fn host_key(host: &str) -> HostKey<'_> {
    match host.strip_prefix('*') {
        Some(suffix) => HostKey::Wildcard(suffix),
        None => HostKey::Exact(host),
    }
}

impl Router {
    /// Files every enabled route.
    pub fn build(entries: impl IntoIterator<Item = Arc<RouteEntry>>) -> Router {
        let mut router = Router::default();
        for entry in entries {
            router.add(&entry);
        }
        router
    }

    /// Runs `f` on the table of each host of `entry` (or the host-less table).
    fn for_each_table(&mut self, entry: &RouteEntry, mut f: impl FnMut(&mut PathTable)) {
        if entry.hosts.is_empty() {
            f(Arc::make_mut(&mut self.any_host));
            return;
        }
        for host in &entry.hosts {
            let map = match host_key(host) {
                HostKey::Exact(_) => &mut self.exact_hosts,
                HostKey::Wildcard(_) => &mut self.wildcard_hosts,
            };
            let key = match host_key(host) {
                HostKey::Exact(h) | HostKey::Wildcard(h) => h,
            };
            match map.get_mut(key) {
                Some(table) => {
                    let table = Arc::make_mut(table);
                    f(table);
                    if table.len == 0 {
                        map.remove(key);
                    }
                }
                None => {
                    let mut table = PathTable::default();
                    f(&mut table);
                    if table.len > 0 {
                        map.insert(key.into(), Arc::new(table));
                    }
                }
            }
        }
    }

    /// Files one route (nothing for a disabled one).
    pub fn add(&mut self, entry: &Arc<RouteEntry>) {
        if !entry.route.enabled {
            return;
        }
        self.routes += 1;
        self.for_each_table(entry, |table| {
            for uri in &entry.route.uris {
                table.add(uri, entry);
            }
        });
    }

    /// Takes out a route filed with [`Router::add`] (the same `Arc`).
    pub fn remove(&mut self, entry: &Arc<RouteEntry>) {
        if !entry.route.enabled {
            return;
        }
        self.routes = self.routes.saturating_sub(1);
        self.for_each_table(entry, |table| {
            for uri in &entry.route.uris {
                table.remove(uri, entry);
            }
        });
    }

    /// The number of enabled routes filed.
    pub fn len(&self) -> usize {
        self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// The route that takes this request, if any.
    pub fn find(&self, req: &Request<'_>) -> Option<&Arc<RouteEntry>> {
        if let Some(host) = req.host {
            if !self.exact_hosts.is_empty() {
                if let Some(hit) = self.exact_hosts.get(host).and_then(|t| t.find(req)) {
                    return Some(hit);
                }
            }
            if !self.wildcard_hosts.is_empty() {
                // Longest suffix first: "a.b.foo.com" tries ".b.foo.com", ".foo.com", ".com".
                for (i, _) in host.match_indices('.') {
                    if let Some(hit) = self
                        .wildcard_hosts
                        .get(&host[i..])
                        .and_then(|t| t.find(req))
                    {
                        return Some(hit);
                    }
                }
            }
        }
        self.any_host.find(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;

    struct NoVars;

    impl VarLookup for NoVars {
        fn var(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
    }

    fn entry(seq: u64, v: serde_json::Value) -> Arc<RouteEntry> {
        let route = Route::parse(&v, None).unwrap();
        Arc::new(RouteEntry {
            chain: Default::default(),
            hosts: route.hosts.clone(),
            route: Arc::new(route),
            seq,
        })
    }

    fn find(r: &Router, host: Option<&str>, path: &str) -> Option<String> {
        r.find(&Request {
            host,
            path,
            method: "GET",
            remote_addr: None,
            vars: &NoVars,
        })
        .map(|e| e.route.id.to_string())
    }

    #[test]
    fn add_and_remove_match_a_fresh_build_and_leave_old_versions_alone() {
        let routes: Vec<_> = [
            json!({"id": 1, "uri": "/api/v1/*"}),
            json!({"id": 2, "uri": "/api/*"}),
            json!({"id": 3, "uri": "/a*"}),
            json!({"id": 4, "uri": "/api/v1/users"}),
            json!({"id": 5, "uri": "/api/v1/*", "host": "x.test"}),
            json!({"id": 6, "uri": "/*", "host": "*.test"}),
            json!({"id": 7, "uri": "/api/v1/*", "priority": 5}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, v)| entry(i as u64, v))
        .collect();
        let full = Router::build(routes.iter().cloned());
        let mut partial = Router::build(routes[..3].iter().cloned());
        let before = partial.clone();
        for e in &routes[3..] {
            partial.add(e);
        }
        let probes = [
            (None, "/api/v1/x"),
            (None, "/api/v1/users"),
            (None, "/api/v2"),
            (None, "/apx"),
            (Some("x.test"), "/api/v1/x"),
            (Some("y.test"), "/z"),
            (Some("x.test"), "/z"),
        ];
        for (host, path) in probes {
            assert_eq!(
                find(&full, host, path),
                find(&partial, host, path),
                "{host:?} {path}"
            );
        }
        assert_eq!(find(&partial, None, "/api/v1/x").as_deref(), Some("7"));
        assert_eq!(
            find(&before, None, "/api/v1/x").as_deref(),
            Some("1"),
            "the old version is untouched"
        );
        // Removing goes back.
        for e in &routes[3..] {
            partial.remove(e);
        }
        for (host, path) in probes {
            assert_eq!(
                find(&before, host, path),
                find(&partial, host, path),
                "{host:?} {path}"
            );
        }
        assert_eq!(partial.len(), 3);
        assert_eq!(find(&partial, Some("x.test"), "/z"), None);
    }
}

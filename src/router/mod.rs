//! Route matching with APISIX's `radixtree_host_uri` semantics.
//!
//! Host-bound routes are tried before host-less ones (the exact host, then wildcard hosts from
//! the longest suffix), and within a host, exact paths before prefixes from the longest.
//! Candidates on one path are ordered by priority, then path length, then insertion order;
//! the first whose methods, remote addresses and vars hold wins. A lookup costs a few hash
//! probes and one walk of the path, whatever the number of routes.

mod radix;
pub mod vars;

use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap as HashMap;

use crate::model::{Methods, Route};
use radix::PrefixTree;
use vars::VarLookup;

/// A route as the router files it: the route, and the hosts it answers for (its own, or its
/// service's when it has none).
#[derive(Debug)]
pub struct RouteEntry {
    pub route: Arc<Route>,
    pub hosts: Vec<String>,
    /// Insertion order: the last tie-breaker.
    pub seq: u64,
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

    fn len(&self) -> usize {
        match self {
            Candidates::One(_) => 1,
            Candidates::Many(list) => list.len(),
        }
    }
}

fn add_candidate(slot: Option<&mut Candidates>, c: Candidate) -> Option<Candidates> {
    match slot {
        Some(existing) => {
            existing.insert(c);
            None
        }
        None => Some(Candidates::One(c)),
    }
}

/// The routes of one host class (one exact host, one wildcard, or no host).
#[derive(Debug, Default, Clone)]
struct PathTable {
    exact: HashMap<Box<str>, Candidates>,
    prefix: PrefixTree<Option<Candidates>>,
}

impl PathTable {
    fn add(&mut self, uri: &str, entry: &Arc<RouteEntry>) {
        let candidate = Candidate::new(entry, uri.len());
        match uri.strip_suffix('*') {
            Some(prefix) => {
                let slot = self.prefix.entry(prefix.as_bytes(), || None);
                if let Some(new) = add_candidate(slot.as_mut(), candidate) {
                    *slot = Some(new);
                }
            }
            None => {
                if let Some(existing) = self.exact.get_mut(uri) {
                    existing.insert(candidate);
                } else {
                    self.exact.insert(uri.into(), Candidates::One(candidate));
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
        if self.prefix.is_empty() {
            return None;
        }
        self.prefix.find_map(req.path.as_bytes(), |slot| {
            slot.as_ref().and_then(|list| list.first_accepting(req))
        })
    }

    fn len(&self) -> usize {
        self.exact.values().map(Candidates::len).sum::<usize>()
    }
}

/// The compiled, immutable routing table.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, PathTable>,
    /// Keyed by the suffix with its dot: `*.foo.com` → `.foo.com`.
    wildcard_hosts: HashMap<Box<str>, PathTable>,
    any_host: PathTable,
    routes: usize,
}

impl Router {
    /// Files every enabled route under each of its hosts and uris.
    pub fn build(entries: impl IntoIterator<Item = Arc<RouteEntry>>) -> Router {
        let mut router = Router::default();
        for entry in entries {
            if !entry.route.enabled {
                continue;
            }
            router.routes += 1;
            if entry.hosts.is_empty() {
                for uri in &entry.route.uris {
                    router.any_host.add(uri, &entry);
                }
                continue;
            }
            for host in &entry.hosts {
                let table = match host.strip_prefix('*') {
                    Some(suffix) => router.wildcard_hosts.entry(suffix.into()).or_default(),
                    None => router.exact_hosts.entry(host.as_str().into()).or_default(),
                };
                for uri in &entry.route.uris {
                    table.add(uri, &entry);
                }
            }
        }
        router
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
            if let Some(hit) = self.exact_hosts.get(host).and_then(|t| t.find(req)) {
                return Some(hit);
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

    /// Exact-path entries filed (for status and tests).
    pub fn exact_len(&self) -> usize {
        self.any_host.len()
            + self.exact_hosts.values().map(PathTable::len).sum::<usize>()
            + self
                .wildcard_hosts
                .values()
                .map(PathTable::len)
                .sum::<usize>()
    }
}

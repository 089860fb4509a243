//! Choosing a node: smooth weighted round robin, consistent hashing, EWMA of latency and
//! least connections, within the highest priority group of healthy nodes.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::{Checks, Health};
use crate::model::{BalancerKind, Node, Upstream};

/// EWMA decay: a sample's weight halves roughly every 10 s without new samples (APISIX's
/// `decay_time`).
const DECAY: Duration = Duration::from_secs(10);
/// Points per unit of weight on the consistent-hash ring, while the ring fits its budget.
const POINTS_PER_WEIGHT: u32 = 160;

/// The most points a ring holds (16 bytes each: 4 MiB), whatever the nodes and weights: an
/// upstream of 20,000 nodes of weight 1000 would otherwise need 3.2 billion. Past the budget
/// every node's share is scaled down alike, so the ring stays proportional to the weights and
/// a node more still moves about 1/n of the keys.
const MAX_RING_POINTS: u64 = 1 << 18;

/// Latency and load of one node, kept across config versions while the node stays.
#[derive(Debug, Default)]
pub struct Stats {
    pub in_flight: AtomicU32,
    ewma: Mutex<Option<(f64, Instant)>>,
}

impl Stats {
    /// Adds a latency sample (EWMA with time-based decay).
    pub fn observe(&self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        let now = Instant::now();
        let mut e = self.ewma.lock();
        *e = Some(match *e {
            None => (ms, now),
            Some((old, at)) => {
                let w = (-(now.duration_since(at).as_secs_f64()) / DECAY.as_secs_f64()).exp();
                (old * w + ms * (1.0 - w), now)
            }
        });
    }

    /// The current EWMA in milliseconds; 0 before any sample (new nodes get tried).
    pub fn ewma_ms(&self) -> f64 {
        self.ewma.lock().map_or(0.0, |(v, _)| v)
    }
}

/// How long a resolved host name is used before it is looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// How long a lookup may take (the system resolver has no limit of its own here).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One node of a balancer, with the state it shares with later versions of the upstream.
#[derive(Debug)]
pub struct NodeState {
    pub node: Node,
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    /// The last addresses a host-name node resolved to, and when.
    resolved: Arc<Mutex<Option<(std::net::SocketAddr, Instant)>>>,
}

impl NodeState {
    /// The node's address. Names are resolved with the system resolver (without blocking) and
    /// again every 30 s; a failed lookup keeps the last address and says so.
    pub async fn address(&self) -> Result<std::net::SocketAddr, String> {
        if let Ok(ip) = self.node.host.parse::<std::net::IpAddr>() {
            return Ok(std::net::SocketAddr::new(ip, self.node.port));
        }
        let cached = {
            let mut slot = self.resolved.lock();
            match *slot {
                Some((addr, at)) if at.elapsed() < RESOLVE_EVERY => return Ok(addr),
                // This request looks the name up again; the others meanwhile keep the address.
                Some((addr, _)) => {
                    *slot = Some((addr, Instant::now()));
                    Some(addr)
                }
                None => None,
            }
        };
        let lookup = tokio::net::lookup_host((self.node.host.as_str(), self.node.port));
        let looked_up = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(r) => r.map_err(|e| format!("cannot resolve {}: {e}", self.node.host)),
            Err(_) => Err(format!(
                "cannot resolve {}: no answer in {RESOLVE_TIMEOUT:?}",
                self.node.host
            )),
        };
        let looked_up = looked_up.and_then(|mut a| {
            a.next()
                .ok_or_else(|| format!("{} resolves to no address", self.node.host))
        });
        match (looked_up, cached) {
            (Ok(addr), _) => {
                *self.resolved.lock() = Some((addr, Instant::now()));
                Ok(addr)
            }
            // Kept for another RESOLVE_EVERY (stamped above), not looked up on every request.
            (Err(e), Some(addr)) => {
                log::warn!("{e}; keeping its last address {addr}");
                Ok(addr)
            }
            (Err(e), None) => Err(e),
        }
    }
}

/// One upstream's live state: its nodes, how to choose among them, its health checks.
#[derive(Debug)]
pub struct Balancer {
    nodes: Vec<Arc<NodeState>>,
    kind: BalancerKind,
    /// Smooth round robin's current weights.
    current: Mutex<Vec<i64>>,
    /// Consistent-hash ring: (point, node index), sorted.
    ring: Vec<(u64, usize)>,
    pub checks: Checks,
    /// The client certificate presented to TLS backends.
    pub client_cert: Option<Arc<pingora_core::utils::tls::CertKey>>,
    /// Set once an active checker runs for this balancer.
    checker: std::sync::atomic::AtomicBool,
}

/// FNV-1a with a final mix: stable across processes and versions.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Balancer {
    /// A balancer for `upstream`, keeping the stats and health of nodes that were in
    /// `previous` (same address).
    pub fn new(upstream: &Upstream, previous: Option<&Balancer>) -> Balancer {
        Balancer::with_cert(upstream, previous, None)
    }

    /// Like [`Balancer::new`], presenting `client_cert` to TLS backends.
    pub fn with_cert(
        upstream: &Upstream,
        previous: Option<&Balancer>,
        client_cert: Option<Arc<pingora_core::utils::tls::CertKey>>,
    ) -> Balancer {
        let checks = upstream.checks.clone();
        let nodes: Vec<Arc<NodeState>> = upstream
            .nodes
            .iter()
            .map(|n| {
                let old = previous.and_then(|p| {
                    p.nodes
                        .iter()
                        .find(|o| o.node.host == n.host && o.node.port == n.port)
                });
                Arc::new(NodeState {
                    node: n.clone(),
                    resolved: old.map(|o| o.resolved.clone()).unwrap_or_default(),
                    stats: old.map(|o| o.stats.clone()).unwrap_or_default(),
                    // Without active checks nothing would ever bring a node back: start afresh.
                    health: old
                        .filter(|_| checks.active.is_some())
                        .map(|o| o.health.clone())
                        .unwrap_or_else(|| Arc::new(Health::new())),
                })
            })
            .collect();
        let mut ring = Vec::new();
        if upstream.kind == BalancerKind::Chash {
            let weight = |n: &NodeState| u64::from(n.node.weight.min(1000));
            let total: u64 = nodes.iter().map(|n| weight(n)).sum();
            let per_weight =
                (MAX_RING_POINTS as f64 / total.max(1) as f64).min(f64::from(POINTS_PER_WEIGHT));
            ring.reserve(((total as f64 * per_weight) as usize).min(2 * MAX_RING_POINTS as usize));
            for (i, n) in nodes.iter().enumerate() {
                let w = weight(n);
                // Every node with weight keeps at least one point.
                let points = if w == 0 {
                    0
                } else {
                    ((w as f64 * per_weight).round() as u64).max(1)
                };
                for p in 0..points {
                    ring.push((hash64(format!("{}#{p}", n.node.authority()).as_bytes()), i));
                }
            }
            ring.sort_unstable();
        }
        Balancer {
            current: Mutex::new(vec![0; nodes.len()]),
            nodes,
            kind: upstream.kind,
            ring,
            checks,
            client_cert,
            checker: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True for the one caller that gets to start this balancer's active checker.
    pub fn claim_checker(&self) -> bool {
        !self.checker.swap(true, Ordering::Relaxed)
    }

    pub fn nodes(&self) -> &[Arc<NodeState>] {
        &self.nodes
    }

    pub fn kind(&self) -> BalancerKind {
        self.kind
    }

    /// The node for this request. Unhealthy nodes are left out unless every node is
    /// unhealthy; nodes `skip` rejects (already tried) are left out; only the highest
    /// priority group takes traffic. `key` is the consistent-hash key.
    pub fn pick(&self, key: Option<&str>, skip: impl Fn(&Node) -> bool) -> Option<Arc<NodeState>> {
        let usable = |n: &NodeState| n.node.weight > 0 && !skip(&n.node);
        let any_healthy = self
            .nodes
            .iter()
            .any(|n| usable(n) && n.health.is_healthy());
        let eligible_base = |n: &NodeState| usable(n) && (!any_healthy || n.health.is_healthy());
        let top = self
            .nodes
            .iter()
            .filter(|n| eligible_base(n))
            .map(|n| n.node.priority)
            .max()?;
        let eligible = |n: &NodeState| eligible_base(n) && n.node.priority == top;
        let index = match self.kind {
            BalancerKind::Roundrobin => self.pick_round_robin(&|i| eligible(&self.nodes[i])),
            BalancerKind::LeastConn => self.pick_least_conn(&eligible),
            BalancerKind::Ewma => self.pick_ewma(&eligible),
            BalancerKind::Chash => match key {
                Some(key) => self.pick_chash(key, &eligible),
                None => self.pick_round_robin(&|i| eligible(&self.nodes[i])),
            },
        }?;
        Some(self.nodes[index].clone())
    }

    fn pick_round_robin(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.current.lock();
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        for (i, n) in self.nodes.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            current[i] += n.node.weight as i64;
            total += n.node.weight as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    fn pick_least_conn(&self, eligible: &dyn Fn(&NodeState) -> bool) -> Option<usize> {
        // Fewest in-flight requests per unit of weight, read once (other requests change the
        // counters meanwhile); ties go round robin.
        let scores: Vec<Option<f64>> = self
            .nodes
            .iter()
            .map(|n| {
                eligible(n).then(|| {
                    (n.stats.in_flight.load(Ordering::Relaxed) as f64 + 1.0) / n.node.weight as f64
                })
            })
            .collect();
        let best = scores
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let first_best = scores.iter().position(|s| s.is_some_and(|s| s == best))?;
        let is_tied = |i: usize| scores[i].is_some_and(|s| s == best);
        self.pick_round_robin(&is_tied).or(Some(first_best))
    }

    fn pick_ewma(&self, eligible: &dyn Fn(&NodeState) -> bool) -> Option<usize> {
        // Power of two choices on latency × load (APISIX's ewma picks the lower of two).
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|i| eligible(&self.nodes[*i]))
            .collect();
        let score = |i: usize| {
            let n = &self.nodes[i];
            let load = n.stats.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
            (n.stats.ewma_ms() + 0.001) * load / n.node.weight as f64
        };
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            len => {
                let a = candidates[rand::random::<usize>() % len];
                let mut b = candidates[rand::random::<usize>() % len];
                if a == b {
                    b = candidates
                        [(candidates.iter().position(|c| *c == a).unwrap_or(0) + 1) % len];
                }
                Some(if score(a) <= score(b) { a } else { b })
            }
        }
    }

    fn pick_chash(&self, key: &str, eligible: &dyn Fn(&NodeState) -> bool) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let h = hash64(key.as_bytes());
        let start = self.ring.partition_point(|(p, _)| *p < h);
        (0..self.ring.len())
            .map(|i| self.ring[(start + i) % self.ring.len()].1)
            .find(|i| eligible(&self.nodes[*i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn upstream(v: serde_json::Value) -> Upstream {
        Upstream::parse(&v, Some("u")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pick(b: &Balancer, key: Option<&str>) -> u16 {
        b.pick(key, |_| false).unwrap().node.port
    }

    #[test]
    fn smooth_weighted_order() {
        let b = Balancer::new(
            &upstream(json!({"nodes": [
            {"host": "127.0.0.1", "port": 1, "weight": 5},
            {"host": "127.0.0.1", "port": 2, "weight": 1},
            {"host": "127.0.0.1", "port": 3, "weight": 1}]})),
            None,
        );
        let seq: Vec<u16> = (0..7).map(|_| pick(&b, None)).collect();
        assert_eq!(seq, [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn zero_weight_skip_priority_and_health() {
        let b = Balancer::new(
            &upstream(json!({"nodes": [
            {"host": "127.0.0.1", "port": 1, "weight": 1, "priority": 1},
            {"host": "127.0.0.1", "port": 2, "weight": 1, "priority": 0},
            {"host": "127.0.0.1", "port": 3, "weight": 0, "priority": 5}]})),
            None,
        );
        assert!((0..5).all(|_| pick(&b, None) == 1));
        assert_eq!(b.pick(None, |n| n.port == 1).unwrap().node.port, 2);
        b.nodes[0].health.force(false);
        assert!(
            (0..5).all(|_| pick(&b, None) == 2),
            "unhealthy nodes get nothing"
        );
        b.nodes[1].health.force(false);
        let all: Vec<u16> = (0..4).map(|_| pick(&b, None)).collect();
        assert!(
            all.contains(&1),
            "all unhealthy: traffic goes to all (by priority)"
        );
        assert!(b.pick(None, |n| n.port != 3).is_none());
    }

    #[test]
    fn chash_ring_stays_within_its_budget() {
        let nodes = |n: u32| {
            let list: Vec<_> = (0..n)
                .map(|i| json!({"host": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), "port": 80, "weight": 1000}))
                .collect();
            upstream(json!({"type": "chash", "key": "uri", "nodes": list}))
        };
        let huge = Balancer::new(&nodes(20_000), None);
        assert!(
            huge.ring.len() as u64 <= 2 * MAX_RING_POINTS,
            "{}",
            huge.ring.len()
        );
        // Scaled down (2000 × 1000 × 160 points would not fit), one node more still moves
        // about 1/n of the keys.
        let big = Balancer::new(&nodes(2_000), None);
        let bigger = Balancer::new(&nodes(2_001), None);
        assert!(big.ring.len() as u64 <= MAX_RING_POINTS + 2_000);
        let keys: Vec<String> = (0..4_000).map(|i| format!("/k/{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| pick(&big, Some(k)) != pick(&bigger, Some(k)))
            .count();
        assert!(moved < 20, "{moved} of 4000 keys moved");
        // Small rings are as before: 160 points per unit of weight.
        let small = Balancer::new(
            &upstream(json!({"type": "chash", "key": "uri", "nodes": {"127.0.0.1:1": 2}})),
            None,
        );
        assert_eq!(small.ring.len(), 320);
    }

    #[test]
    fn chash_is_stable_and_moves_about_one_nth() {
        let nodes = |n: u16| {
            let list: Vec<_> = (1..=n)
                .map(|p| json!({"host": "10.0.0.1", "port": p, "weight": 1}))
                .collect();
            upstream(json!({"type": "chash", "key": "uri", "nodes": list}))
        };
        let four = Balancer::new(&nodes(4), None);
        let five = Balancer::new(&nodes(5), None);
        let keys: Vec<String> = (0..10_000).map(|i| format!("/k/{i}")).collect();
        let mut moved = 0;
        let mut spread: HashMap<u16, usize> = HashMap::new();
        for k in &keys {
            let a = pick(&four, Some(k));
            assert_eq!(a, pick(&four, Some(k)), "stable");
            *spread.entry(a).or_default() += 1;
            if a != pick(&five, Some(k)) {
                moved += 1;
            }
        }
        // Adding a fifth node moves about 1/5 of the keys, all of them to the new node.
        assert!((1500..2600).contains(&moved), "moved {moved}");
        assert!(
            spread.values().all(|c| (1800..3200).contains(c)),
            "{spread:?}"
        );
        // Weights count: a node of weight 3 takes about three times the keys.
        let weighted = Balancer::new(
            &upstream(json!({"type": "chash", "key": "uri", "nodes": [
            {"host": "10.0.0.1", "port": 1, "weight": 3}, {"host": "10.0.0.1", "port": 2, "weight": 1}]})),
            None,
        );
        let heavy = keys
            .iter()
            .filter(|k| pick(&weighted, Some(k)) == 1)
            .count();
        assert!((6800..8200).contains(&heavy), "{heavy}");
    }

    #[test]
    fn least_conn_and_ewma() {
        let b = Balancer::new(
            &upstream(json!({"type": "least_conn", "nodes": {"10.0.0.1:1": 1, "10.0.0.1:2": 1}})),
            None,
        );
        b.nodes[0].stats.in_flight.store(3, Ordering::Relaxed);
        assert!((0..5).all(|_| pick(&b, None) == 2));
        let e = Balancer::new(
            &upstream(json!({"type": "ewma", "nodes": {"10.0.0.1:1": 1, "10.0.0.1:2": 1}})),
            None,
        );
        e.nodes[0].stats.observe(Duration::from_millis(200));
        e.nodes[1].stats.observe(Duration::from_millis(2));
        let slow = (0..1000).filter(|_| pick(&e, None) == 1).count();
        assert!(slow < 50, "the slow node gets little traffic: {slow}");
    }

    #[test]
    fn state_survives_for_nodes_that_stay() {
        let a = Balancer::new(
            &upstream(json!({"nodes": {"10.0.0.1:1": 1, "10.0.0.1:2": 1}})),
            None,
        );
        a.nodes[0].health.force(false);
        let checked = json!({"active": {}});
        let b = Balancer::new(
            &upstream(json!({"nodes": {"10.0.0.1:1": 2, "10.0.0.1:3": 1}, "checks": checked})),
            Some(&a),
        );
        assert!(
            !b.nodes[0].health.is_healthy(),
            "kept for the node that stayed"
        );
        assert!(b.nodes[1].health.is_healthy(), "a new node starts healthy");
        // Without active checks nothing would bring it back: it starts afresh.
        let c = Balancer::new(&upstream(json!({"nodes": {"10.0.0.1:1": 2}})), Some(&b));
        assert!(c.nodes[0].health.is_healthy());
    }
}

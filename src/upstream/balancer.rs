//! Smooth weighted round robin (nginx's): a 5:1:1 set gives a a b a c a a, not aaaaabc.

use std::sync::Mutex;

use crate::model::Node;

/// Picks nodes of one upstream. Shared across config versions while the nodes stay the same.
#[derive(Debug)]
pub struct Balancer {
    nodes: Vec<Node>,
    /// Current weights of the smooth round robin, one per node.
    current: Mutex<Vec<i64>>,
    total: i64,
}

impl Balancer {
    pub fn new(nodes: Vec<Node>) -> Balancer {
        let total = nodes.iter().map(|n| n.weight as i64).sum();
        Balancer {
            current: Mutex::new(vec![0; nodes.len()]),
            nodes,
            total,
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The next node, skipping those `skip` rejects (nodes already tried); `None` when no node
    /// with a weight is left.
    pub fn pick(&self, skip: impl Fn(&Node) -> bool) -> Option<&Node> {
        if self.total == 0 {
            return None;
        }
        // Only the highest priority group with an eligible node takes traffic.
        let top = self
            .nodes
            .iter()
            .filter(|n| n.weight > 0 && !skip(n))
            .map(|n| n.priority)
            .max()?;
        let eligible = |n: &Node| n.weight > 0 && n.priority == top && !skip(n);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        for (i, node) in self.nodes.iter().enumerate() {
            if !eligible(node) {
                continue;
            }
            current[i] += node.weight as i64;
            total += node.weight as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(&self.nodes[best])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, weight: u32, priority: i32) -> Node {
        Node {
            host: host.into(),
            port: 80,
            weight,
            priority,
        }
    }

    #[test]
    fn smooth_weighted_order() {
        let b = Balancer::new(vec![node("a", 5, 0), node("b", 1, 0), node("c", 1, 0)]);
        let seq: String = (0..7)
            .map(|_| b.pick(|_| false).unwrap().host.clone())
            .collect();
        assert_eq!(seq, "aabacaa");
    }

    #[test]
    fn zero_weight_skip_and_priority() {
        let b = Balancer::new(vec![node("a", 1, 1), node("b", 1, 0), node("z", 0, 5)]);
        for _ in 0..5 {
            assert_eq!(b.pick(|_| false).unwrap().host, "a");
        }
        assert_eq!(b.pick(|n| n.host == "a").unwrap().host, "b");
        assert!(b.pick(|n| n.host != "z").is_none());
        assert!(Balancer::new(vec![node("z", 0, 0)])
            .pick(|_| false)
            .is_none());
        assert!(Balancer::new(vec![]).pick(|_| false).is_none());
    }
}

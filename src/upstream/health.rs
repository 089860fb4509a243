//! Node health: APISIX's `checks.active` (probes) and `checks.passive` (real traffic), with
//! its thresholds and defaults. A node's health lives beside it across config versions.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// What one probe or one proxied request says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    TcpFailure,
    Timeout,
}

pub use crate::model::checks::{ActiveCheck, Checks, ProbeKind, Thresholds};

/// One node's health and the counters that move it.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    successes: AtomicU32,
    http_failures: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// New nodes start healthy.
    pub fn new() -> Health {
        Health {
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            http_failures: AtomicU32::new(0),
            tcp_failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn force(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Counts an outcome; returns the new state when it flipped.
    pub fn record(&self, outcome: Outcome, t: &Thresholds) -> Option<bool> {
        let failure = |counter: &AtomicU32, limit: u32| {
            self.successes.store(0, Ordering::Relaxed);
            let n = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            (limit > 0 && n >= limit && self.healthy.swap(false, Ordering::Relaxed))
                .then_some(false)
        };
        match outcome {
            Outcome::Status(s) if t.healthy_statuses.contains(&s) => {
                for c in [&self.http_failures, &self.tcp_failures, &self.timeouts] {
                    c.store(0, Ordering::Relaxed);
                }
                let n = self
                    .successes
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                (n >= t.successes.max(1) && !self.healthy.swap(true, Ordering::Relaxed))
                    .then_some(true)
            }
            Outcome::Status(s) if t.unhealthy_statuses.contains(&s) => {
                failure(&self.http_failures, t.http_failures)
            }
            Outcome::Status(_) => None,
            Outcome::TcpFailure => failure(&self.tcp_failures, t.tcp_failures),
            Outcome::Timeout => failure(&self.timeouts, t.timeouts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thresholds_move_the_state_both_ways() {
        let u = crate::model::Upstream::parse(
            &json!({"nodes": {"127.0.0.1:1": 1}, "checks": {"active": {"healthy": {"successes": 2}, "unhealthy": {"tcp_failures": 2, "http_failures": 3}}, "passive": {}}}),
            Some("u"),
        )
        .unwrap();
        let checks = u.checks.clone();
        let t = &checks.active.as_ref().unwrap().thresholds;
        let h = Health::new();
        assert_eq!(h.record(Outcome::TcpFailure, t), None);
        assert_eq!(h.record(Outcome::TcpFailure, t), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(Outcome::Status(200), t), None);
        assert_eq!(h.record(Outcome::Status(200), t), Some(true));
        for _ in 0..2 {
            assert_eq!(h.record(Outcome::Status(500), t), None);
        }
        assert_eq!(h.record(Outcome::Status(500), t), Some(false));
        assert_eq!(
            h.record(Outcome::Status(418), t),
            None,
            "neither list: ignored"
        );
        let p = checks.passive.unwrap();
        assert_eq!(p.tcp_failures, 2);
        assert!(p.healthy_statuses.contains(&204));
    }
}

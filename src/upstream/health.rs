//! Node health: APISIX's `checks.active` (probes) and `checks.passive` (real traffic), with
//! its thresholds and defaults. A node's health lives beside it across config versions.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::model::Upstream;

/// What one probe or one proxied request says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    TcpFailure,
    Timeout,
}

/// When a node changes state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy_statuses: Vec<u16>,
    pub successes: u32,
    pub unhealthy_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
}

/// `checks.active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    pub kind: ProbeKind,
    pub http_path: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub req_headers: Vec<String>,
    pub healthy_interval: Duration,
    pub unhealthy_interval: Duration,
    pub thresholds: Thresholds,
}

/// The checks of one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    pub active: Option<ActiveCheck>,
    pub passive: Option<Thresholds>,
}

fn statuses(v: Option<&Value>, default: &[u16]) -> Vec<u16> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_u64())
                .map(|s| s as u16)
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}

fn count(v: Option<&Value>, default: u32) -> u32 {
    v.and_then(Value::as_u64)
        .map_or(default, |n| n.min(254) as u32)
}

fn secs(v: Option<&Value>, default: f64) -> Duration {
    let s = v.and_then(Value::as_f64).unwrap_or(default);
    Duration::from_secs_f64(if s.is_finite() && s > 0.0 {
        s.min(3600.0)
    } else {
        default
    })
}

const ACTIVE_HEALTHY: &[u16] = &[200, 302];
const ACTIVE_UNHEALTHY: &[u16] = &[429, 404, 500, 501, 502, 503, 504, 505];
const PASSIVE_HEALTHY: &[u16] = &[
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308,
];
const PASSIVE_UNHEALTHY: &[u16] = &[429, 500, 503];

impl Checks {
    /// Reads APISIX's `checks` (already shape-checked as JSON); absent parts are off.
    pub fn from_upstream(u: &Upstream) -> Checks {
        let Some(checks) = &u.checks else {
            return Checks::default();
        };
        let active = checks.get("active").map(|a| {
            let healthy = a.get("healthy");
            let unhealthy = a.get("unhealthy");
            let h = |k: &str| healthy.and_then(|x| x.get(k));
            let uh = |k: &str| unhealthy.and_then(|x| x.get(k));
            ActiveCheck {
                kind: match a.get("type").and_then(Value::as_str) {
                    Some("https") => ProbeKind::Https,
                    Some("tcp") => ProbeKind::Tcp,
                    _ => ProbeKind::Http,
                },
                http_path: a
                    .get("http_path")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string(),
                host: a.get("host").and_then(Value::as_str).map(str::to_string),
                port: a
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok()),
                timeout: secs(a.get("timeout"), 1.0),
                concurrency: a
                    .get("concurrency")
                    .and_then(Value::as_u64)
                    .map_or(10, |c| c.clamp(1, 1000) as usize),
                req_headers: a
                    .get("req_headers")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(|h| h.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                healthy_interval: secs(h("interval"), 1.0),
                unhealthy_interval: secs(uh("interval"), 1.0),
                thresholds: Thresholds {
                    healthy_statuses: statuses(h("http_statuses"), ACTIVE_HEALTHY),
                    successes: count(h("successes"), 2),
                    unhealthy_statuses: statuses(uh("http_statuses"), ACTIVE_UNHEALTHY),
                    http_failures: count(uh("http_failures"), 5),
                    tcp_failures: count(uh("tcp_failures"), 2),
                    timeouts: count(uh("timeouts"), 3),
                },
            }
        });
        let passive = checks.get("passive").map(|p| {
            let h = |k: &str| p.get("healthy").and_then(|x| x.get(k));
            let uh = |k: &str| p.get("unhealthy").and_then(|x| x.get(k));
            Thresholds {
                healthy_statuses: statuses(h("http_statuses"), PASSIVE_HEALTHY),
                successes: count(h("successes"), 5),
                unhealthy_statuses: statuses(uh("http_statuses"), PASSIVE_UNHEALTHY),
                http_failures: count(uh("http_failures"), 5),
                tcp_failures: count(uh("tcp_failures"), 2),
                timeouts: count(uh("timeouts"), 7),
            }
        });
        Checks { active, passive }
    }
}

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
        let u = Upstream::parse(
            &json!({"nodes": {"127.0.0.1:1": 1}, "checks": {"active": {"healthy": {"successes": 2}, "unhealthy": {"tcp_failures": 2, "http_failures": 3}}, "passive": {}}}),
            Some("u"),
        )
        .unwrap();
        let checks = Checks::from_upstream(&u);
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

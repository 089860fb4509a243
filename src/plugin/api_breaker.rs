//! `api-breaker`: after `unhealthy.failures` upstream answers with an unhealthy status, the
//! gateway answers `break_response_code` itself for a while (2, 4, 8 … seconds, at most
//! `max_breaker_sec`), until `healthy.successes` healthy answers close the breaker again.
//! Breakers are kept per host and path, in the plugin instance.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::template::Template;
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct ApiBreakerFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unhealthy {
    #[serde(default = "five_hundred")]
    http_statuses: Vec<u16>,
    #[serde(default = "three")]
    failures: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Healthy {
    #[serde(default = "two_hundred")]
    http_statuses: Vec<u16>,
    #[serde(default = "three")]
    successes: u64,
}

fn five_hundred() -> Vec<u16> {
    vec![500]
}
fn two_hundred() -> Vec<u16> {
    vec![200]
}
fn three() -> u64 {
    3
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    break_response_code: u16,
    break_response_body: Option<String>,
    #[serde(default)]
    break_response_headers: Vec<Header>,
    #[serde(default = "max_default")]
    max_breaker_sec: u64,
    #[serde(default = "unhealthy_default")]
    unhealthy: Unhealthy,
    #[serde(default = "healthy_default")]
    healthy: Healthy,
}

fn max_default() -> u64 {
    300
}
fn unhealthy_default() -> Unhealthy {
    Unhealthy {
        http_statuses: five_hundred(),
        failures: 3,
    }
}
fn healthy_default() -> Healthy {
    Healthy {
        http_statuses: two_hundred(),
        successes: 3,
    }
}

#[derive(Default, Clone, Copy)]
struct State {
    unhealthy: u64,
    healthy: u64,
    broke_at: Option<Instant>,
}

struct ApiBreaker {
    code: u16,
    body: Option<Bytes>,
    headers: Vec<(String, Template)>,
    max: Duration,
    unhealthy: Unhealthy,
    healthy: Healthy,
    states: Arc<Mutex<HashMap<String, State>>>,
}

/// Breakers by host and path.
type States = Mutex<HashMap<String, State>>;

/// Endpoints (host and path) tracked at most; past it, healthy ones are forgotten first.
const MAX_TRACKED: usize = 10_000;

impl Factory for ApiBreakerFactory {
    fn name(&self) -> &'static str {
        "api-breaker"
    }

    fn priority(&self) -> i32 {
        1005
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        self.build_for(settings, "")
    }

    fn build_for(&self, settings: &Value, owner: &str) -> Result<Arc<dyn Plugin>, String> {
        let mut b = ApiBreaker::parse(settings)?;
        b.states = super::state::shared(super::state::key("api-breaker", owner, settings), || {
            States::default()
        });
        Ok(Arc::new(b))
    }
}

impl ApiBreaker {
    fn parse(settings: &Value) -> Result<ApiBreaker, String> {
        let s: Settings = parse_settings(settings)?;
        check_range("break_response_code", s.break_response_code, 200, Some(599))?;
        check_range("max_breaker_sec", s.max_breaker_sec, 3, Some(86_400 * 365))?;
        check_range("unhealthy.failures", s.unhealthy.failures, 1, None)?;
        check_range("healthy.successes", s.healthy.successes, 1, None)?;
        for st in &s.unhealthy.http_statuses {
            check_range("unhealthy.http_statuses", *st, 500, Some(599))?;
        }
        for st in &s.healthy.http_statuses {
            check_range("healthy.http_statuses", *st, 200, Some(499))?;
        }
        if s.break_response_headers
            .iter()
            .any(|h| h.key.is_empty() || h.value.is_empty())
        {
            return Err("property \"break_response_headers\" validation failed: key and value must not be empty".into());
        }
        Ok(ApiBreaker {
            code: s.break_response_code,
            body: s.break_response_body.map(Bytes::from),
            headers: s
                .break_response_headers
                .iter()
                .map(|h| (h.key.clone(), Template::parse(&h.value)))
                .collect(),
            max: Duration::from_secs(s.max_breaker_sec),
            unhealthy: s.unhealthy,
            healthy: s.healthy,
            states: Arc::new(Mutex::new(HashMap::new())),
        })
    }
}

impl ApiBreaker {
    fn key(cx: &Cx<'_>) -> String {
        format!(
            "{}{}",
            cx.var("host").unwrap_or_default(),
            cx.var("uri").unwrap_or_default()
        )
    }

    /// Whether the breaker of `key` is open now.
    fn open(&self, key: &str, now: Instant) -> bool {
        let states = self.states.lock();
        let Some(st) = states.get(key) else {
            return false;
        };
        let Some(at) = st.broke_at.filter(|at| now.duration_since(*at) < self.max) else {
            return false;
        };
        let times = (st.unhealthy / self.unhealthy.failures).clamp(1, 62) as u32;
        let open_for = Duration::from_secs(1u64 << times).min(self.max);
        now.duration_since(at) <= open_for
    }

    /// Counts an upstream answer.
    fn record(&self, key: String, status: u16, now: Instant) {
        let mut states = self.states.lock();
        if self.unhealthy.http_statuses.contains(&status) {
            if states.len() >= MAX_TRACKED && !states.contains_key(&key) {
                states.retain(|_, s| s.unhealthy > 0 && s.broke_at.is_some());
                if states.len() >= MAX_TRACKED {
                    // Still full (a client inventing paths): the oldest breakers go.
                    let mut by_age: Vec<(String, Option<Instant>)> = states
                        .iter()
                        .map(|(k, s)| (k.clone(), s.broke_at))
                        .collect();
                    by_age.sort_by_key(|(_, at)| *at);
                    for (k, _) in by_age.into_iter().take(MAX_TRACKED / 10) {
                        states.remove(&k);
                    }
                }
            }
            let st = states.entry(key).or_default();
            st.unhealthy += 1;
            st.healthy = 0;
            if st.unhealthy.is_multiple_of(self.unhealthy.failures) {
                st.broke_at = Some(now);
            }
        } else if self.healthy.http_statuses.contains(&status) {
            if let Some(st) = states.get_mut(&key) {
                st.healthy += 1;
                if st.healthy >= self.healthy.successes {
                    states.remove(&key);
                }
            }
        }
    }
}

impl Plugin for ApiBreaker {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        if !self.open(&Self::key(cx), Instant::now()) {
            return Flow::Continue;
        }
        let mut answer = Answer {
            status: self.code,
            headers: Vec::new(),
            body: self.body.clone(),
        };
        if self.body.is_some() {
            for (k, v) in &self.headers {
                answer.headers.push((k.clone(), v.render(cx)));
            }
        }
        Flow::Respond(answer)
    }

    fn log(&self, cx: &mut Cx<'_>) {
        if let Some(status) = cx.state.upstream_status {
            self.record(Self::key(cx), status, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubling_breaks_on_virtual_time() {
        let b = ApiBreaker::parse(&serde_json::json!({"break_response_code": 502, "unhealthy": {"failures": 2}, "healthy": {"successes": 1}}))
            .unwrap();
        let t0 = Instant::now();
        b.record("k".into(), 500, t0);
        assert!(!b.open("k", t0), "one failure is not enough");
        b.record("k".into(), 500, t0);
        assert!(b.open("k", t0));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!b.open("k", Instant::now()), "2 s break is over");
        let t = Instant::now();
        b.record("k".into(), 500, t);
        b.record("k".into(), 500, t);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(b.open("k", Instant::now()), "the second break lasts 4 s");
        b.record("k".into(), 200, Instant::now());
        assert!(!b.open("k", Instant::now()), "a healthy answer closes it");
    }
}

//! `limit-req` with `policy: local`: a leaky bucket per key, `rate` requests a second with
//! `burst` more queued (delayed to the rate, or let through at once with `nodelay`), the rest
//! refused. Counters belong to the plugin instance, as for `limit-count`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::limit_count::{limit_key, shard_of, KeyType};
use super::template::Template;
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct LimitReqFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    rate: f64,
    burst: f64,
    key: String,
    #[serde(default = "var")]
    key_type: KeyType,
    #[serde(default = "local")]
    policy: String,
    #[serde(default = "default_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    #[serde(default)]
    nodelay: bool,
    #[serde(default)]
    allow_degradation: bool,
}

fn var() -> KeyType {
    KeyType::Var
}
fn local() -> String {
    "local".into()
}
fn default_code() -> u16 {
    503
}

/// One key's bucket: requests in excess of the rate, and when it was last updated.
#[derive(Clone, Copy)]
struct Bucket {
    excess: f64,
    last: Instant,
}

pub(super) struct Buckets {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

const SWEEP_AT: usize = 4096;

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// One request for `key`: how long to wait to keep to the rate, or `None` when refused
    /// (resty.limit.req's arithmetic: the excess leaks at `rate` a second).
    fn incoming(&self, key: &str, rate: f64, burst: f64) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.shards[shard_of(key, self.shards.len())]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT && !map.contains_key(key) {
            map.retain(|_, b| b.excess - rate * now.duration_since(b.last).as_secs_f64() > 0.0);
        }
        let excess = match map.get(key) {
            Some(b) => (b.excess - rate * now.duration_since(b.last).as_secs_f64() + 1.0).max(0.0),
            None => 0.0,
        };
        if excess > burst {
            return None;
        }
        map.insert(key.to_string(), Bucket { excess, last: now });
        Some(Duration::from_secs_f64(excess / rate))
    }
}

struct LimitReq {
    rate: f64,
    burst: f64,
    key_type: KeyType,
    key: String,
    combination: Template,
    refused: Answer,
    nodelay: bool,
    buckets: Arc<Buckets>,
    per_route: bool,
}

impl Factory for LimitReqFactory {
    fn name(&self) -> &'static str {
        "limit-req"
    }

    fn priority(&self) -> i32 {
        1001
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        self.build_for(settings, "")
    }

    fn build_for(&self, settings: &Value, owner: &str) -> Result<Arc<dyn Plugin>, String> {
        if let Some(p) = settings
            .get("policy")
            .and_then(Value::as_str)
            .filter(|p| *p != "local")
        {
            return Err(format!(
                "property \"policy\": {p:?} (counters shared through Redis) is not supported by Portico yet; the resource is not served"
            ));
        }
        let s: Settings = parse_settings(settings)?;
        if !(s.rate > 0.0 && s.rate.is_finite()) {
            return Err(format!(
                "property \"rate\" validation failed: expected a number above 0, got {}",
                s.rate
            ));
        }
        if !(s.burst >= 0.0 && s.burst.is_finite()) {
            return Err(format!(
                "property \"burst\" validation failed: expected {} to be at least 0",
                s.burst
            ));
        }
        check_range("rejected_code", s.rejected_code, 200, Some(599))?;
        if s.key_type == KeyType::Constant {
            return Err(
                "property \"key_type\" validation failed: matches none of the enum values".into(),
            );
        }
        let _ = (&s.policy, s.allow_degradation);
        Ok(Arc::new(LimitReq {
            rate: s.rate,
            burst: s.burst,
            key_type: s.key_type,
            combination: Template::parse(&s.key),
            key: s.key,
            refused: match &s.rejected_msg {
                Some(m) => Answer::error_msg(s.rejected_code, m),
                None => Answer::status(s.rejected_code),
            },
            nodelay: s.nodelay,
            buckets: super::state::shared(
                super::state::key("limit-req", owner, settings),
                Buckets::new,
            ),
            per_route: super::state::per_route(owner),
        }))
    }
}

impl Plugin for LimitReq {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let mut key = limit_key(cx, self.key_type, &self.key, &self.combination);
        if let (true, Some(route)) = (
            self.per_route,
            cx.state.route.as_ref().and_then(|r| r.route_id.as_deref()),
        ) {
            key = format!("{route}:{key}");
        }
        match self.buckets.incoming(&key, self.rate, self.burst) {
            None => Flow::Respond(self.refused.clone()),
            Some(delay) if !self.nodelay && delay >= Duration::from_millis(1) => {
                Flow::Wait(Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    Flow::Continue
                }))
            }
            Some(_) => Flow::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leaky_bucket_on_virtual_time() {
        let b = Buckets::new();
        // rate 1/s, burst 1: the first goes at once, the second waits a second, the third is
        // refused; a second later one more fits.
        assert_eq!(b.incoming("a", 1.0, 1.0), Some(Duration::ZERO));
        assert_eq!(b.incoming("a", 1.0, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(b.incoming("a", 1.0, 1.0), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.incoming("a", 1.0, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(b.incoming("other", 1.0, 1.0), Some(Duration::ZERO));
    }
}

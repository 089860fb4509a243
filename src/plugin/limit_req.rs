//! `limit-req` with `policy: local`: a leaky bucket per key, `rate` requests a second with
//! `burst` more queued (delayed to the rate, or let through at once with `nodelay`), the rest
//! refused. Counters belong to the plugin instance, as for `limit-count`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::limit_count::{refusal, refuse_shared_policy, KeyType, LimitKey};
use super::state::{self, Keyed};
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

#[derive(Default)]
pub(super) struct Buckets(Keyed<Bucket>);

impl Buckets {
    /// One request for `key`: how long to wait to keep to the rate, or `None` when refused
    /// (resty.limit.req's arithmetic: the excess leaks at `rate` a second).
    fn incoming(&self, key: &str, rate: f64, burst: f64) -> Option<Duration> {
        let now = Instant::now();
        let left = |b: &Bucket| b.excess - rate * now.duration_since(b.last).as_secs_f64();
        self.0.with(
            key,
            |b| left(b) <= 0.0,
            |map| {
                let excess = map.get(key).map_or(0.0, |b| (left(b) + 1.0).max(0.0));
                if excess > burst {
                    return None;
                }
                map.insert(key.to_string(), Bucket { excess, last: now });
                Some(Duration::from_secs_f64(excess / rate))
            },
        )
    }
}

struct LimitReq {
    rate: f64,
    burst: f64,
    key: LimitKey,
    refused: Answer,
    nodelay: bool,
    buckets: Arc<Buckets>,
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
        refuse_shared_policy(settings)?;
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
            key: LimitKey::new(s.key_type, &s.key, state::per_route(owner)),
            refused: refusal(s.rejected_code, &s.rejected_msg),
            nodelay: s.nodelay,
            buckets: state::shared(state::key("limit-req", owner, settings), Buckets::default),
        }))
    }
}

impl Plugin for LimitReq {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let key = self.key.of(cx);
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
        let b = Buckets::default();
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

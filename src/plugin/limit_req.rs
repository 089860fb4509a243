//! `limit-req`: a leaky bucket per key, `rate` requests a second with `burst` more queued
//! (delayed to the rate, or let through at once with `nodelay`), the rest refused. Buckets
//! belong to the plugin instance, as for `limit-count`, in this gateway (`policy: local`) or
//! in Redis (`redis`, `redis-cluster`), where Redis's own clock drains them, so gateways whose
//! clocks differ still agree.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::limit_count::{refusal, KeyType, LimitKey};
use super::redis_policy::{take_policy, version_tag, Policy, Redis};
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

/// Where the buckets are kept.
enum Store {
    Local(Arc<Buckets>),
    /// In Redis, under `prefix` + the request's key.
    Redis {
        redis: Arc<Redis>,
        prefix: String,
        degrade: bool,
    },
}

struct LimitReq {
    rate: f64,
    burst: f64,
    key: LimitKey,
    refused: Answer,
    nodelay: bool,
    store: Store,
}

/// One request into a Redis bucket (a hash of `excess` and `last`, in Redis's clock):
/// `{1, excess}` when it fits, `{0, excess}` when refused. The same arithmetic as
/// [`Buckets::incoming`]; the bucket expires once it would have drained.
static BUCKET_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local seen = redis.call('hmget', KEYS[1], 'excess', 'last')
local excess = 0
if seen[1] and seen[2] then
  local elapsed = math.abs(now - tonumber(seen[2]))
  excess = math.max(tonumber(seen[1]) - rate * elapsed + 1, 0)
  if excess > burst then
    return {0, tostring(excess)}
  end
end
redis.call('hset', KEYS[1], 'excess', tostring(excess), 'last', tostring(now))
redis.call('expire', KEYS[1], math.ceil(burst / rate) + 1)
return {1, tostring(excess)}
",
    )
});

impl Factory for LimitReqFactory {
    fn name(&self) -> &'static str {
        "limit-req"
    }

    fn priority(&self) -> i32 {
        1001
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["redis_password"]
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        self.build_for(settings, "")
    }

    fn build_for(&self, settings: &Value, owner: &str) -> Result<Arc<dyn Plugin>, String> {
        let (rest, policy) = take_policy(settings, &["local", "redis", "redis-cluster"])?;
        let s: Settings = parse_settings(&rest)?;
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
        let store = match policy {
            Policy::Local => Store::Local(state::shared(
                state::key("limit-req", owner, settings),
                Buckets::default,
            )),
            Policy::Redis(redis) => Store::Redis {
                redis,
                prefix: format!(
                    "limit_req:plugin-limit-req:{}:",
                    version_tag("limit-req", owner, settings)
                ),
                degrade: s.allow_degradation,
            },
        };
        Ok(Arc::new(LimitReq {
            rate: s.rate,
            burst: s.burst,
            key: LimitKey::new(s.key_type, &s.key, state::per_route(owner)),
            refused: refusal(s.rejected_code, &s.rejected_msg),
            nodelay: s.nodelay,
            store,
        }))
    }
}

impl LimitReq {
    /// What a bucket's answer means for the request.
    fn decide(&self, delay: Option<Duration>) -> Flow {
        match delay {
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

impl Plugin for LimitReq {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let key = self.key.of(cx);
        match &self.store {
            Store::Local(buckets) => self.decide(buckets.incoming(&key, self.rate, self.burst)),
            Store::Redis {
                redis,
                prefix,
                degrade,
            } => {
                let (redis, degrade, nodelay) = (redis.clone(), *degrade, self.nodelay);
                let (key, refused, rate) =
                    (format!("{prefix}{key}"), self.refused.clone(), self.rate);
                let args = [self.rate.to_string(), self.burst.to_string()];
                Flow::Wait(Box::pin(async move {
                    let args = [args[0].as_str(), args[1].as_str()];
                    match redis
                        .eval::<(i64, String)>(&BUCKET_SCRIPT, &key, &args)
                        .await
                    {
                        Ok((0, _)) => Flow::Respond(refused),
                        Ok((_, excess)) => {
                            let excess: f64 = excess.parse().unwrap_or(0.0);
                            let delay =
                                // From Redis: whatever it holds, no panic here.
                                Duration::try_from_secs_f64((excess / rate).min(86_400.0))
                                    .unwrap_or(Duration::ZERO);
                            if !nodelay && delay >= Duration::from_millis(1) {
                                tokio::time::sleep(delay).await;
                            }
                            Flow::Continue
                        }
                        Err(e) => redis.failed("limit-req", &e, degrade, || Answer::status(500)),
                    }
                }))
            }
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

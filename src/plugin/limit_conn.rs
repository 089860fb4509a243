//! `limit-conn`: at most `conn` requests under way per key, `burst` more delayed for each
//! multiple of `conn` ahead of them, the rest refused. A request counts until its context
//! ends: response sent, or client gone. Counted in this gateway (`policy: local`) or in Redis
//! (`redis`, `redis-cluster`): a sorted set of the requests under way, each one expiring after
//! `key_ttl` seconds should its gateway die before giving it back.
//!
//! The delay per multiple starts at `default_conn_delay`; unless `only_use_default_delay`,
//! it then follows the requests' own time (half the old delay plus half the latest request's
//! time after its delay), as resty.limit.conn does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::limit_count::{refusal, KeyType, LimitKey};
use super::redis_policy::{take_policy, version_tag, Policy, Redis};
use super::state::{self, Keyed};
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct LimitConnFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    conn: u64,
    burst: u64,
    default_conn_delay: f64,
    #[serde(default)]
    only_use_default_delay: bool,
    key: String,
    #[serde(default = "var")]
    key_type: KeyType,
    #[serde(default = "default_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    #[serde(default)]
    allow_degradation: bool,
    /// Seconds a request counts in Redis at most (its gateway may die before giving it back).
    #[serde(default = "default_key_ttl")]
    key_ttl: u64,
}

fn var() -> KeyType {
    KeyType::Var
}
fn default_code() -> u16 {
    503
}
fn default_key_ttl() -> u64 {
    3600
}

/// Requests under way, by key (never swept: each is given back when its request ends, and
/// there are no more of them than requests under way).
#[derive(Default)]
struct InFlight(Keyed<u64>);

impl InFlight {
    /// One more for `key`; the count now, or `None` (and nothing counted) past `max`.
    fn enter(&self, key: &str, max: u64) -> Option<u64> {
        self.0.with(
            key,
            |n| *n == 0,
            |map| {
                let n = map.entry(key.to_string()).or_insert(0);
                if *n >= max {
                    if *n == 0 {
                        map.remove(key);
                    }
                    return None;
                }
                *n += 1;
                Some(*n)
            },
        )
    }

    fn leave(&self, key: &str) {
        self.0.with(
            key,
            |n| *n == 0,
            |map| {
                if let Some(n) = map.get_mut(key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        map.remove(key);
                    }
                }
            },
        )
    }
}

/// Where the requests under way are counted.
enum Store {
    Local(Arc<InFlight>),
    /// In Redis, under `prefix` + the request's key.
    Redis {
        redis: Arc<Redis>,
        prefix: String,
        degrade: bool,
        ttl: u64,
    },
}

/// Enters a request into a Redis set of requests under way (members expire at their score):
/// `{1, count}` when it fits under `ARGV[1]`, `{0, count}` when refused.
static ENTER_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('time')
local now = tonumber(t[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
local n = redis.call('zcard', KEYS[1])
if n >= tonumber(ARGV[1]) then
  return {0, n}
end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('expire', KEYS[1], tonumber(ARGV[2]))
return {1, n + 1}
",
    )
});

/// Gives a request's place in a Redis set back.
static LEAVE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new("return redis.call('zrem', KEYS[1], ARGV[1])"));

/// Where a request holds its place, given back when its context ends, however it ends.
enum Held {
    Local(Arc<InFlight>),
    Redis(Arc<Redis>),
}

struct Place {
    held: Held,
    key: String,
    /// This request's member of the Redis set.
    member: String,
    /// When the request was let through (after its delay), for the adaptive delay.
    since: Instant,
    adapt: Option<Arc<UnitDelay>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(unit) = &self.adapt {
            unit.learn(self.since.elapsed());
        }
        match &self.held {
            Held::Local(in_flight) => in_flight.leave(&self.key),
            Held::Redis(redis) => {
                // Given back off the request path; should that fail, the member expires.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let (redis, key) = (redis.clone(), std::mem::take(&mut self.key));
                    let member = std::mem::take(&mut self.member);
                    rt.spawn(async move {
                        if let Err(e) = redis.eval::<i64>(&LEAVE_SCRIPT, &key, &[&member]).await {
                            redis.log_failure("limit-conn", &e);
                        }
                    });
                }
            }
        }
    }
}

/// The delay for each multiple of `conn` ahead, in seconds (an `f64`'s bits).
struct UnitDelay(AtomicU64);

impl UnitDelay {
    fn new(d: Duration) -> UnitDelay {
        UnitDelay(AtomicU64::new(d.as_secs_f64().to_bits()))
    }

    fn get(&self) -> Duration {
        let secs = f64::from_bits(self.0.load(Ordering::Relaxed)).min(86_400.0);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
    }

    /// resty.limit.conn's `leaving`: the new delay is the mean of the old and the latency.
    fn learn(&self, latency: Duration) {
        let old = f64::from_bits(self.0.load(Ordering::Relaxed));
        let new = (old + latency.as_secs_f64()) / 2.0;
        self.0.store(new.to_bits(), Ordering::Relaxed);
    }
}

struct LimitConn {
    conn: u64,
    burst: u64,
    unit: Arc<UnitDelay>,
    adaptive: bool,
    key: LimitKey,
    refused: Answer,
    store: Store,
}

impl Factory for LimitConnFactory {
    fn name(&self) -> &'static str {
        "limit-conn"
    }

    fn priority(&self) -> i32 {
        1003
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
        check_range("conn", s.conn, 1, None)?;
        check_range("rejected_code", s.rejected_code, 200, Some(599))?;
        check_range("key_ttl", s.key_ttl, 1, None)?;
        if !(s.default_conn_delay > 0.0 && s.default_conn_delay <= 86_400.0) {
            return Err(format!(
                "property \"default_conn_delay\" validation failed: expected a number of seconds above 0, got {}",
                s.default_conn_delay
            ));
        }
        if s.key_type == KeyType::Constant {
            return Err(
                "property \"key_type\" validation failed: matches none of the enum values".into(),
            );
        }
        let store = match policy {
            Policy::Local => Store::Local(state::shared(
                state::key("limit-conn", owner, settings),
                InFlight::default,
            )),
            Policy::Redis(redis) => Store::Redis {
                redis,
                prefix: format!(
                    "limit_conn:plugin-limit-conn:{}:",
                    version_tag("limit-conn", owner, settings)
                ),
                degrade: s.allow_degradation,
                ttl: s.key_ttl,
            },
        };
        Ok(Arc::new(LimitConn {
            conn: s.conn,
            burst: s.burst,
            unit: Arc::new(UnitDelay::new(Duration::from_secs_f64(
                s.default_conn_delay,
            ))),
            adaptive: !s.only_use_default_delay,
            key: LimitKey::new(s.key_type, &s.key, state::per_route(owner)),
            refused: refusal(s.rejected_code, &s.rejected_msg),
            store,
        }))
    }
}

/// resty.limit.conn: one unit of delay for each `conn` requests ahead.
fn delay_for(n: u64, conn: u64, unit: Duration) -> Duration {
    if n > conn {
        unit.mul_f64(((n - 1) / conn) as f64)
    } else {
        Duration::ZERO
    }
}

/// Waits `delay`, then holds the place from then on.
fn wait_then(delay: Duration, mut place: Place, slot: PlaceSlot) -> Flow {
    Flow::Wait(Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        place.since = Instant::now();
        slot.put(place);
        Flow::Continue
    }))
}

/// Holds a place taken after a wait, until the request's context ends.
#[derive(Clone, Default)]
struct PlaceSlot(Arc<parking_lot::Mutex<Option<Place>>>);

impl PlaceSlot {
    fn put(&self, place: Place) {
        *self.0.lock() = Some(place);
    }
}

impl Plugin for LimitConn {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let key = self.key.of(cx);
        let max = self.conn.saturating_add(self.burst);
        let adapt = self.adaptive.then(|| self.unit.clone());
        let instance = self as *const Self as usize;
        match &self.store {
            Store::Local(in_flight) => {
                let Some(n) = in_flight.enter(&key, max) else {
                    return Flow::Respond(self.refused.clone());
                };
                let place = Place {
                    held: Held::Local(in_flight.clone()),
                    key,
                    member: String::new(),
                    since: Instant::now(),
                    adapt,
                };
                let delay = delay_for(n, self.conn, self.unit.get());
                if delay.is_zero() {
                    cx.state.set_at(PLACE, instance, place);
                    return Flow::Continue;
                }
                let slot = PlaceSlot::default();
                cx.state.set_at(PLACE, instance, slot.clone());
                wait_then(delay, place, slot)
            }
            Store::Redis {
                redis,
                prefix,
                degrade,
                ttl,
            } => {
                let slot = PlaceSlot::default();
                cx.state.set_at(PLACE, instance, slot.clone());
                let (redis, degrade, refused) = (redis.clone(), *degrade, self.refused.clone());
                let (conn, unit) = (self.conn, self.unit.get());
                let key = format!("{prefix}{key}");
                let member = format!(
                    "{:016x}{:016x}",
                    rand::random::<u64>(),
                    rand::random::<u64>()
                );
                let (max, ttl) = (max.to_string(), ttl.to_string());
                Flow::Wait(Box::pin(async move {
                    let args = [max.as_str(), ttl.as_str(), member.as_str()];
                    match redis.eval::<(i64, u64)>(&ENTER_SCRIPT, &key, &args).await {
                        Ok((0, _)) => Flow::Respond(refused),
                        Ok((_, n)) => {
                            let place = Place {
                                held: Held::Redis(redis),
                                key,
                                member,
                                since: Instant::now(),
                                adapt,
                            };
                            // Held before the wait, so a client gone meanwhile gives it back.
                            let delay = delay_for(n, conn, unit);
                            slot.put(place);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                                if let Some(p) = slot.0.lock().as_mut() {
                                    p.since = Instant::now();
                                }
                            }
                            Flow::Continue
                        }
                        Err(e) => redis.failed("limit-conn", &e, degrade, || Answer::status(500)),
                    }
                }))
            }
        }
    }
}

const PLACE: &str = "limit-conn.place";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_and_given_back() {
        let f = InFlight::default();
        assert_eq!(f.enter("a", 2), Some(1));
        assert_eq!(f.enter("a", 2), Some(2));
        assert_eq!(f.enter("a", 2), None);
        f.leave("a");
        assert_eq!(f.enter("a", 2), Some(2));
        f.leave("a");
        f.leave("a");
        assert_eq!(f.enter("a", 1), Some(1), "all given back");
    }

    #[test]
    fn delays_grow_with_the_queue_and_follow_latency() {
        let unit = Duration::from_millis(100);
        assert_eq!(delay_for(1, 2, unit), Duration::ZERO);
        assert_eq!(delay_for(2, 2, unit), Duration::ZERO);
        assert_eq!(delay_for(3, 2, unit), unit);
        assert_eq!(delay_for(5, 2, unit), unit * 2);
        let d = UnitDelay::new(unit);
        d.learn(Duration::from_millis(300));
        assert_eq!(
            d.get(),
            Duration::from_millis(200),
            "mean of old and latest"
        );
    }
}

//! `limit-count`: at most `count` requests per `time_window` seconds for each key (client
//! address by default), in fixed windows, with APISIX's headers; counted in this gateway
//! (`policy: local`) or in Redis, shared by every gateway using it (`redis`, `redis-cluster`).
//!
//! Counters belong to the plugin instance, so the same setting on two routes counts apart, a
//! consumer's limit counts for that consumer across routes, and a changed setting starts
//! afresh (as APISIX keys them by resource and version); `group` shares one set of counters
//! between every instance of the group.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::redis_policy::{take_policy, version_tag, Policy, Redis};
use super::state::{self, Keyed};
use super::template::Template;
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct LimitCountFactory;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum KeyType {
    Var,
    VarCombination,
    Constant,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    count: Value,
    time_window: Value,
    #[serde(default = "fixed")]
    window_type: String,
    group: Option<String>,
    #[serde(default = "remote_addr")]
    key: String,
    #[serde(default = "var")]
    key_type: KeyType,
    #[serde(default = "default_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    #[serde(default)]
    allow_degradation: bool,
    #[serde(default = "yes")]
    show_limit_quota_header: bool,
    /// Delayed syncing to Redis: Portico counts in Redis on every request instead, which is
    /// exact and no less strict.
    sync_interval: Option<f64>,
}

fn fixed() -> String {
    "fixed".into()
}
fn remote_addr() -> String {
    "remote_addr".into()
}
fn var() -> KeyType {
    KeyType::Var
}
fn default_code() -> u16 {
    503
}
fn yes() -> bool {
    true
}

/// One key's window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u64,
}

/// Windows by key.
#[derive(Default)]
pub(super) struct Counters(Keyed<Window>);

impl Counters {
    /// Counts one request for `key`: `Ok(remaining)`, or `Err(())` when over the limit; and
    /// the seconds left in the window.
    fn take(&self, key: &str, limit: u64, window: Duration) -> (Result<u64, ()>, f64) {
        let now = Instant::now();
        let stale = |w: &Window| now.duration_since(w.start) >= window;
        self.0.with(key, stale, |map| {
            // The key is copied only when it is new.
            let w = map.entry_ref(key).or_insert(Window {
                start: now,
                used: 0,
            });
            if stale(w) {
                *w = Window {
                    start: now,
                    used: 0,
                };
            }
            let reset = (window.saturating_sub(now.duration_since(w.start))).as_secs_f64();
            let reset = (reset * 100.0).floor() / 100.0;
            if w.used >= limit {
                return (Err(()), reset);
            }
            w.used += 1;
            (Ok(limit - w.used), reset)
        })
    }
}

/// Where the windows are kept.
enum Store {
    Local(Arc<Counters>),
    /// In Redis, under `prefix` + the request's key.
    Redis {
        redis: Arc<Redis>,
        prefix: String,
        degrade: bool,
    },
}

struct LimitCount {
    limit: u64,
    window: Duration,
    key: LimitKey,
    refused: Answer,
    show_headers: bool,
    store: Store,
}

/// Counts one request in a Redis window: the count so far and the window's milliseconds
/// left. The window starts with the first request, as the local one does.
static COUNT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local used = redis.call('incrby', KEYS[1], ARGV[2])
local left = redis.call('pttl', KEYS[1])
if left < 0 then
  redis.call('pexpire', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {used, left}
",
    )
});

/// What the response says of the limit.
struct Quota {
    limit: u64,
    remaining: u64,
    reset: f64,
}

fn positive(field: &str, v: &Value) -> Result<u64, String> {
    match v.as_u64().filter(|n| *n > 0) {
        Some(n) => Ok(n),
        None if v.is_string() => Err(format!(
            "property \"{field}\": values from variables are not supported by Portico yet"
        )),
        None => Err(format!(
            "property \"{field}\" validation failed: expected an integer above 0, got {v}"
        )),
    }
}

impl Factory for LimitCountFactory {
    fn name(&self) -> &'static str {
        "limit-count"
    }

    fn priority(&self) -> i32 {
        1002
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["redis_password", "sentinel_password"]
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        self.build_for(settings, "")
    }

    fn build_for(&self, settings: &Value, owner: &str) -> Result<Arc<dyn Plugin>, String> {
        let (rest, policy) = take_policy(settings, &["local", "redis", "redis-cluster"])?;
        if rest.get("rules").is_some() {
            return Err(
                "property \"rules\" is not supported by Portico yet; the resource is not served"
                    .into(),
            );
        }
        let s: Settings = parse_settings(&rest)?;
        let limit = positive("count", &s.count)?;
        let window = positive("time_window", &s.time_window)?;
        check_range("time_window", window, 1, Some(10 * 365 * 86_400))?;
        check_range("rejected_code", s.rejected_code, 200, Some(599))?;
        if s.window_type != "fixed" {
            return Err(format!(
                "property \"window_type\": {:?} is not supported by Portico yet (fixed is)",
                s.window_type
            ));
        }
        if s.rejected_msg.as_deref() == Some("") {
            return Err("property \"rejected_msg\" validation failed: string too short, expected at least 1".into());
        }
        if let (Policy::Redis(_), Some(sync)) = (&policy, s.sync_interval) {
            if sync != -1.0 && sync < 0.1 {
                return Err("sync_interval should not be smaller than 0.1".into());
            }
            if sync != -1.0 && sync >= window as f64 {
                return Err("sync_interval should be smaller than time_window".into());
            }
        }
        let store = match policy {
            // A group is one set of counters for every use of it.
            Policy::Local => Store::Local(match &s.group {
                Some(g) => state::shared(format!("limit-count group|{g}"), Counters::default),
                None => state::shared(
                    state::key("limit-count", owner, settings),
                    Counters::default,
                ),
            }),
            Policy::Redis(redis) => Store::Redis {
                redis,
                prefix: match &s.group {
                    Some(g) => format!("plugin-limit-count:v1:{g}:"),
                    None => format!(
                        "plugin-limit-count:v1:{}:",
                        version_tag("limit-count", owner, settings)
                    ),
                },
                degrade: s.allow_degradation,
            },
        };
        Ok(Arc::new(LimitCount {
            limit,
            window: Duration::from_secs(window),
            key: LimitKey::new(
                s.key_type,
                &s.key,
                s.group.is_none() && state::per_route(owner),
            ),
            refused: refusal(s.rejected_code, &s.rejected_msg),
            show_headers: s.show_limit_quota_header,
            store,
        }))
    }
}

impl LimitCount {
    fn instance(&self) -> usize {
        self as *const Self as usize
    }
}

impl Plugin for LimitCount {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let key = self.key.of(cx);
        match &self.store {
            Store::Local(counters) => {
                let (taken, reset) = counters.take(&key, self.limit, self.window);
                if self.show_headers {
                    let quota = Quota {
                        limit: self.limit,
                        remaining: taken.unwrap_or(0),
                        reset,
                    };
                    cx.state.set_at(QUOTA, self.instance(), quota);
                }
                match taken {
                    Ok(_) => Flow::Continue,
                    Err(()) => Flow::Respond(self.refused.clone()),
                }
            }
            Store::Redis {
                redis,
                prefix,
                degrade,
            } => {
                // The answer comes after the wait; the header filter finds it here.
                let slot = Arc::new(OnceLock::new());
                if self.show_headers {
                    cx.state
                        .set_at(REDIS_QUOTA, self.instance(), RedisQuota(slot.clone()));
                }
                let (redis, degrade, limit) = (redis.clone(), *degrade, self.limit);
                let (key, refused) = (format!("{prefix}{key}"), self.refused.clone());
                let window_ms = self.window.as_millis().to_string();
                Flow::Wait(Box::pin(async move {
                    match redis
                        .eval::<(u64, i64)>(&COUNT_SCRIPT, &key, &[&window_ms, "1"])
                        .await
                    {
                        Ok((used, left_ms)) => {
                            let reset = (left_ms.max(0) as f64 / 10.0).floor() / 100.0;
                            let _ = slot.set(Quota {
                                limit,
                                remaining: limit.saturating_sub(used),
                                reset,
                            });
                            if used > limit {
                                Flow::Respond(refused)
                            } else {
                                Flow::Continue
                            }
                        }
                        Err(e) => redis.failed("limit-count", &e, degrade, || {
                            Answer::error_msg(500, "failed to limit count")
                        }),
                    }
                }))
            }
        }
    }

    fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        let local = cx.state.get_at::<Quota>(QUOTA, self.instance());
        let remote = || {
            cx.state
                .get_at::<RedisQuota>(REDIS_QUOTA, self.instance())
                .and_then(|q| q.0.get())
        };
        if let Some(q) = local.or_else(remote) {
            // Numbers straight into header values: no string to build and check.
            let _ = resp.insert_header("X-RateLimit-Limit", HeaderValue::from(q.limit));
            let _ = resp.insert_header("X-RateLimit-Remaining", HeaderValue::from(q.remaining));
            let reset = if q.reset.fract() == 0.0 {
                HeaderValue::from(q.reset as u64)
            } else {
                HeaderValue::from_str(&q.reset.to_string())
                    .unwrap_or_else(|_| HeaderValue::from(q.reset.ceil() as u64))
            };
            let _ = resp.insert_header("X-RateLimit-Reset", reset);
        }
    }
}

/// A Redis count's quota, filled in when Redis answers.
struct RedisQuota(Arc<OnceLock<Quota>>);

const REDIS_QUOTA: &str = "limit-count.redis-quota";
const QUOTA: &str = "limit-count.quota";

/// What a limit counts a request under, shared by limit-count, limit-req and limit-conn.
pub(super) struct LimitKey {
    kind: KeyType,
    key: String,
    combination: Template,
    /// Apart for each route (the limit is configured on a service or plugin_config).
    per_route: bool,
}

impl LimitKey {
    pub(super) fn new(kind: KeyType, key: &str, per_route: bool) -> LimitKey {
        LimitKey {
            kind,
            key: key.to_string(),
            combination: Template::parse(key),
            per_route,
        }
    }

    /// A variable, a combination of variables, or a constant; the client address when the
    /// variables are empty (as APISIX); with the route in front when counted per route.
    pub(super) fn of(&self, cx: &Cx<'_>) -> String {
        let found = match self.kind {
            KeyType::Constant => Some(self.key.clone()),
            // The default key, without building the request's variables.
            KeyType::Var if self.key == "remote_addr" => {
                cx.state.client_ip.map(|ip| ip.to_string())
            }
            KeyType::Var => cx.var(self.key.trim_start_matches('$')),
            KeyType::VarCombination => {
                let any = std::cell::Cell::new(false);
                let v = self.combination.render_with(|name| {
                    let v = cx.var(name);
                    any.set(any.get() || v.is_some());
                    v
                });
                any.get().then_some(v)
            }
        };
        let key = found.unwrap_or_else(|| cx.var("remote_addr").unwrap_or_default());
        match (
            self.per_route,
            cx.state.route.as_ref().and_then(|r| r.route_id.as_deref()),
        ) {
            (true, Some(route)) => format!("{route}:{key}"),
            _ => key,
        }
    }
}

/// A limit's refusal: `{"error_msg": rejected_msg}`, or nginx's page for the code.
pub(super) fn refusal(code: u16, msg: &Option<String>) -> Answer {
    match msg {
        Some(m) => Answer::error_msg(code, m),
        None => Answer::status(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fixed_windows_on_virtual_time() {
        let c = Counters::default();
        let w = Duration::from_secs(60);
        assert_eq!(c.take("a", 2, w).0, Ok(1));
        assert_eq!(c.take("a", 2, w).0, Ok(0));
        let (over, reset) = c.take("a", 2, w);
        assert_eq!(over, Err(()));
        assert_eq!(reset, 60.0);
        // Another key counts apart.
        assert_eq!(c.take("b", 2, w).0, Ok(1));
        tokio::time::advance(Duration::from_secs(59)).await;
        let (still, reset) = c.take("a", 2, w);
        assert_eq!((still, reset), (Err(()), 1.0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.take("a", 2, w).0, Ok(1), "a new window");
    }

    #[test]
    fn unsupported_settings_are_refused() {
        let f = LimitCountFactory;
        assert!(f
            .build(&serde_json::json!({"count": 1, "time_window": 1}))
            .is_ok());
        for bad in [
            serde_json::json!({"count": 1, "time_window": 1, "policy": "redis"}),
            serde_json::json!({"count": 1, "time_window": 1, "policy": "redis-sentinel"}),
            serde_json::json!({"count": 0, "time_window": 1}),
            serde_json::json!({"count": "$arg_n", "time_window": 1}),
            serde_json::json!({"count": 1, "time_window": 1, "window_type": "sliding"}),
            serde_json::json!({"rules": []}),
        ] {
            assert!(f.build(&bad).is_err(), "{bad}");
        }
    }
}

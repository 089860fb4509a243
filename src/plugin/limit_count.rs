//! `limit-count` with `policy: local`: at most `count` requests per `time_window` seconds for
//! each key (client address by default), in fixed windows, with APISIX's headers.
//!
//! Counters belong to the plugin instance, so the same setting on two routes counts apart, a
//! consumer's limit counts for that consumer across routes, and a new version of the resource
//! starts afresh (as APISIX keys them by resource and version); `group` shares one set of
//! counters between every instance of the group. Shared counters through Redis are issue 11.

use std::sync::Arc;
use std::time::Duration;

use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

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
    #[serde(default = "local")]
    policy: String,
    #[serde(default)]
    allow_degradation: bool,
    #[serde(default = "yes")]
    show_limit_quota_header: bool,
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
fn local() -> String {
    "local".into()
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
            let w = map.entry(key.to_string()).or_insert(Window {
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

struct LimitCount {
    limit: u64,
    window: Duration,
    key: LimitKey,
    refused: Answer,
    show_headers: bool,
    counters: Arc<Counters>,
}

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

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        self.build_for(settings, "")
    }

    fn build_for(&self, settings: &Value, owner: &str) -> Result<Arc<dyn Plugin>, String> {
        refuse_shared_policy(settings)?;
        if settings.get("rules").is_some() {
            return Err(
                "property \"rules\" is not supported by Portico yet; the resource is not served"
                    .into(),
            );
        }
        let s: Settings = parse_settings(settings)?;
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
        if s.policy != "local" {
            return Err(format!(
                "property \"policy\": {:?} (counters shared through Redis) is not supported by Portico yet; the resource is not served",
                s.policy
            ));
        }
        if s.rejected_msg.as_deref() == Some("") {
            return Err("property \"rejected_msg\" validation failed: string too short, expected at least 1".into());
        }
        // Local counters cannot fail, so there is nothing to degrade to.
        let _ = s.allow_degradation;
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
            // A group is one set of counters for every use of it.
            counters: match &s.group {
                Some(g) => state::shared(format!("limit-count group|{g}"), Counters::default),
                None => state::shared(
                    state::key("limit-count", owner, settings),
                    Counters::default,
                ),
            },
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
        let (taken, reset) = self.counters.take(&key, self.limit, self.window);
        let remaining = taken.unwrap_or(0);
        if self.show_headers {
            cx.state.set_at(
                QUOTA,
                self.instance(),
                Quota {
                    limit: self.limit,
                    remaining,
                    reset,
                },
            );
        }
        match taken {
            Ok(_) => Flow::Continue,
            Err(()) => Flow::Respond(self.refused.clone()),
        }
    }

    fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        if let Some(q) = cx.state.get_at::<Quota>(QUOTA, self.instance()) {
            let _ = resp.insert_header("X-RateLimit-Limit", q.limit.to_string());
            let _ = resp.insert_header("X-RateLimit-Remaining", q.remaining.to_string());
            let reset = if q.reset.fract() == 0.0 {
                format!("{}", q.reset as u64)
            } else {
                format!("{}", q.reset)
            };
            let _ = resp.insert_header("X-RateLimit-Reset", reset);
        }
    }
}

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

/// Redis policies (issue 11) are refused before the settings are read, with a message that
/// says why (their fields would otherwise read as unknown).
pub(super) fn refuse_shared_policy(settings: &Value) -> Result<(), String> {
    match settings.get("policy").and_then(Value::as_str) {
        Some(p) if p != "local" => Err(format!(
            "property \"policy\": {p:?} (counters shared through Redis) is not supported by Portico yet; the resource is not served"
        )),
        _ => Ok(()),
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
            serde_json::json!({"count": 0, "time_window": 1}),
            serde_json::json!({"count": "$arg_n", "time_window": 1}),
            serde_json::json!({"count": 1, "time_window": 1, "window_type": "sliding"}),
            serde_json::json!({"rules": []}),
        ] {
            assert!(f.build(&bad).is_err(), "{bad}");
        }
    }
}

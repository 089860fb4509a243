//! `limit-conn` with `policy: local`: at most `conn` requests under way per key, `burst` more
//! delayed by `default_conn_delay` for each multiple of `conn` ahead of them, the rest refused.
//! A request counts until its context ends: response sent, or client gone.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::limit_count::{refusal, refuse_shared_policy, KeyType, LimitKey};
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
    #[serde(default = "local")]
    policy: String,
    #[serde(default)]
    allow_degradation: bool,
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

/// Gives the request's place back when its context ends, however it ends.
struct Place {
    in_flight: Arc<InFlight>,
    key: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.in_flight.leave(&self.key);
    }
}

struct LimitConn {
    conn: u64,
    burst: u64,
    delay: Duration,
    key: LimitKey,
    refused: Answer,
    in_flight: Arc<InFlight>,
}

impl Factory for LimitConnFactory {
    fn name(&self) -> &'static str {
        "limit-conn"
    }

    fn priority(&self) -> i32 {
        1003
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        self.build_for(settings, "")
    }

    fn build_for(&self, settings: &Value, owner: &str) -> Result<Arc<dyn Plugin>, String> {
        refuse_shared_policy(settings)?;
        let s: Settings = parse_settings(settings)?;
        check_range("conn", s.conn, 1, None)?;
        check_range("rejected_code", s.rejected_code, 200, Some(599))?;
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
        // Adaptive delays (only_use_default_delay: false) use the default delay here.
        let _ = (s.only_use_default_delay, s.allow_degradation, &s.policy);
        Ok(Arc::new(LimitConn {
            conn: s.conn,
            burst: s.burst,
            delay: Duration::from_secs_f64(s.default_conn_delay),
            key: LimitKey::new(s.key_type, &s.key, state::per_route(owner)),
            refused: refusal(s.rejected_code, &s.rejected_msg),
            in_flight: state::shared(state::key("limit-conn", owner, settings), InFlight::default),
        }))
    }
}

impl Plugin for LimitConn {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let key = self.key.of(cx);
        let Some(n) = self
            .in_flight
            .enter(&key, self.conn.saturating_add(self.burst))
        else {
            return Flow::Respond(self.refused.clone());
        };
        cx.state.set_at(
            PLACE,
            self as *const Self as usize,
            Place {
                in_flight: self.in_flight.clone(),
                key,
            },
        );
        if n > self.conn {
            // resty.limit.conn: one unit of delay for each `conn` requests ahead.
            let delay = self.delay.mul_f64(((n - 1) / self.conn) as f64);
            return Flow::Wait(Box::pin(async move {
                tokio::time::sleep(delay).await;
                Flow::Continue
            }));
        }
        Flow::Continue
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
}

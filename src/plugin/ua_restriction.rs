//! `ua-restriction`: allow or deny by User-Agent (regular expressions).

use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{allow_or_deny, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct UaRestrictionFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    bypass_missing: bool,
    allowlist: Option<Vec<String>>,
    denylist: Option<Vec<String>>,
    #[serde(default = "default_message")]
    message: String,
}

fn default_message() -> String {
    "Not allowed".into()
}

struct UaRestriction {
    bypass_missing: bool,
    rules: Vec<Regex>,
    allow: bool,
    message: String,
}

/// Compiles a non-empty list of patterns, naming the bad one.
fn patterns(field: &str, list: &[String]) -> Result<Vec<Regex>, String> {
    list.iter()
        .map(|p| {
            Regex::new(p).map_err(|e| format!("property \"{field}\" validation failed: {p:?}: {e}"))
        })
        .collect()
}

impl Factory for UaRestrictionFactory {
    fn name(&self) -> &'static str {
        "ua-restriction"
    }

    fn priority(&self) -> i32 {
        2999
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        let (rules, allow) = allow_or_deny(
            ("allowlist", &s.allowlist),
            ("denylist", &s.denylist),
            patterns,
        )?;
        Ok(Arc::new(UaRestriction {
            bypass_missing: s.bypass_missing,
            rules,
            allow,
            message: s.message,
        }))
    }
}

impl Plugin for UaRestriction {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        // Every value, text or not (a byte above 0x7f must not hide a value from a denylist).
        let agents: Vec<String> = cx
            .req()
            .headers
            .get_all(http::header::USER_AGENT)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .collect();
        if agents.is_empty() {
            return if self.bypass_missing {
                Flow::Continue
            } else {
                Flow::Respond(Answer::message(403, &self.message))
            };
        }
        let hit = agents
            .iter()
            .any(|ua| self.rules.iter().any(|r| r.is_match(ua)));
        if hit == self.allow {
            Flow::Continue
        } else {
            Flow::Respond(Answer::message(403, &self.message))
        }
    }
}

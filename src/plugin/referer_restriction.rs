//! `referer-restriction`: allow or deny by the host of the Referer.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{allow_or_deny, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct RefererRestrictionFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    bypass_missing: bool,
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    #[serde(default = "default_message")]
    message: String,
}

fn default_message() -> String {
    "Your referer host is not allowed".into()
}

/// `*` (any), `*.suffix` (ends with `.suffix`), or an exact host.
enum HostPattern {
    Any,
    Suffix(String),
    Exact(String),
}

impl HostPattern {
    fn parse(p: &str) -> Result<HostPattern, String> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        };
        if p == "*" {
            Ok(HostPattern::Any)
        } else if let Some(rest) = p.strip_prefix('*').filter(|r| ok(r)) {
            Ok(HostPattern::Suffix(rest.to_string()))
        } else if ok(p) {
            Ok(HostPattern::Exact(p.to_string()))
        } else {
            Err(format!("invalid host pattern {p:?}"))
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()),
            HostPattern::Exact(e) => host == e,
        }
    }
}

struct RefererRestriction {
    bypass_missing: bool,
    list: Vec<HostPattern>,
    allow: bool,
    message: String,
}

impl Factory for RefererRestrictionFactory {
    fn name(&self) -> &'static str {
        "referer-restriction"
    }

    fn priority(&self) -> i32 {
        2990
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        let parse = |field: &str, l: &[String]| -> Result<Vec<HostPattern>, String> {
            l.iter()
                .map(|p| {
                    HostPattern::parse(p)
                        .map_err(|e| format!("property \"{field}\" validation failed: {e}"))
                })
                .collect()
        };
        let (list, allow) = allow_or_deny(
            ("whitelist", &s.whitelist),
            ("blacklist", &s.blacklist),
            parse,
        )?;
        Ok(Arc::new(RefererRestriction {
            bypass_missing: s.bypass_missing,
            list,
            allow,
            message: s.message,
        }))
    }
}

/// The host of a Referer URL (`scheme://host[:port]/...`, or `//host...`), without port.
fn referer_host(referer: &str) -> Option<&str> {
    let rest = referer.split_once("//")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

impl Plugin for RefererRestriction {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let raw = cx
            .req()
            .headers
            .get(http::header::REFERER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let Some(host) = raw.as_deref().and_then(referer_host) else {
            return if self.bypass_missing {
                Flow::Continue
            } else {
                Flow::Respond(Answer::message(403, &self.message))
            };
        };
        let hit = self.list.iter().any(|p| p.matches(host));
        if hit == self.allow {
            Flow::Continue
        } else {
            Flow::Respond(Answer::message(403, &self.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_referers() {
        assert_eq!(
            referer_host("http://www.xx.com:8080/a?b"),
            Some("www.xx.com")
        );
        assert_eq!(referer_host("https://[::1]:80/"), Some("[::1]"));
        assert_eq!(referer_host("www.yy.com"), None);
        let p = HostPattern::parse("*.xx.com").unwrap();
        assert!(p.matches("www.xx.com") && !p.matches("xx.com"));
    }
}

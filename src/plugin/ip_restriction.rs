//! `ip-restriction`: allow or deny clients by address (IPv4, IPv6, CIDR).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{allow_or_deny, check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};
use crate::net::Cidr;

pub struct IpRestrictionFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    #[serde(default = "default_message")]
    message: String,
    #[serde(default = "default_code")]
    response_code: u16,
}

fn default_message() -> String {
    "Your IP address is not allowed".into()
}

fn default_code() -> u16 {
    403
}

struct IpRestriction {
    list: Vec<Cidr>,
    allow: bool,
    message: String,
    code: u16,
}

/// Parses a list of addresses or CIDRs, naming the bad one.
pub(super) fn cidrs(_field: &str, list: &[String]) -> Result<Vec<Cidr>, String> {
    list.iter()
        .map(|a| Cidr::parse(a).map_err(|_| format!("invalid ip address: {a}")))
        .collect()
}

impl Factory for IpRestrictionFactory {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn priority(&self) -> i32 {
        3000
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        check_range("response_code", s.response_code, 403, Some(404))?;
        if s.message.is_empty() || s.message.len() > 1024 {
            return Err("property \"message\" validation failed: length must be 1 to 1024".into());
        }
        let (list, allow) = allow_or_deny(
            ("whitelist", &s.whitelist),
            ("blacklist", &s.blacklist),
            cidrs,
        )?;
        Ok(Arc::new(IpRestriction {
            list,
            allow,
            message: s.message,
            code: s.response_code,
        }))
    }
}

impl Plugin for IpRestriction {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let listed = cx
            .state
            .client_ip
            .is_some_and(|ip| self.list.iter().any(|c| c.contains(ip)));
        if listed == self.allow {
            Flow::Continue
        } else {
            Flow::Respond(Answer::message(self.code, &self.message))
        }
    }
}

//! `consumer-restriction`: allow or deny by consumer, consumer group, route or service.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct ConsumerRestrictionFactory;

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Type {
    ConsumerName,
    ConsumerGroupId,
    RouteId,
    ServiceId,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::ConsumerName => "consumer_name",
            Type::ConsumerGroupId => "consumer_group_id",
            Type::RouteId => "route_id",
            Type::ServiceId => "service_id",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByMethods {
    user: String,
    methods: Vec<Method>,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy, Debug)]
#[serde(rename_all = "UPPERCASE")]
enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
    Connect,
    Trace,
    Purge,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(rename = "type", default = "default_type")]
    kind: Type,
    blacklist: Option<Vec<String>>,
    whitelist: Option<Vec<String>>,
    allowed_by_methods: Option<Vec<ByMethods>>,
    #[serde(default = "default_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
}

fn default_type() -> Type {
    Type::ConsumerName
}

fn default_code() -> u16 {
    403
}

struct ConsumerRestriction {
    s: Settings,
    refused: Answer,
}

impl Factory for ConsumerRestrictionFactory {
    fn name(&self) -> &'static str {
        "consumer-restriction"
    }

    fn priority(&self) -> i32 {
        2400
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        check_range("rejected_code", s.rejected_code, 200, Some(599))?;
        if s.blacklist.is_none() && s.whitelist.is_none() && s.allowed_by_methods.is_none() {
            return Err("object matches none of the required: [\"blacklist\"] or [\"whitelist\"] or [\"allowed_by_methods\"]".into());
        }
        for (field, list) in [("blacklist", &s.blacklist), ("whitelist", &s.whitelist)] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                return Err(format!(
                    "property \"{field}\" validation failed: expect array to have at least 1 items"
                ));
            }
        }
        if let Some(m) = &s.allowed_by_methods {
            if m.iter().any(|e| e.methods.is_empty()) {
                return Err("property \"allowed_by_methods\" validation failed: methods: expect array to have at least 1 items".into());
            }
        }
        let msg = s
            .rejected_msg
            .clone()
            .unwrap_or_else(|| format!("The {} is forbidden.", s.kind.name()));
        Ok(Arc::new(ConsumerRestriction {
            refused: Answer::message(s.rejected_code, &msg),
            s,
        }))
    }
}

impl Plugin for ConsumerRestriction {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let kind = self.s.kind;
        let Some(value) = cx.var(kind.name()) else {
            return Flow::Respond(Answer::message(
                401,
                &format!(
                    "The request is rejected, please check the {} for this request",
                    kind.name()
                ),
            ));
        };
        if self
            .s
            .blacklist
            .as_ref()
            .is_some_and(|b| b.contains(&value))
        {
            return Flow::Respond(self.refused.clone());
        }
        let whitelisted = self
            .s
            .whitelist
            .as_ref()
            .is_some_and(|w| w.contains(&value));
        let mut block = self.s.whitelist.is_some() && !whitelisted;
        if let (Some(rules), false) = (&self.s.allowed_by_methods, whitelisted) {
            let method = cx.req().method.as_str();
            // The first rule for this user decides; a user without one may use any method.
            let allowed = rules.iter().find(|r| r.user == value).is_none_or(|r| {
                r.methods
                    .iter()
                    .any(|m| format!("{m:?}").eq_ignore_ascii_case(method))
            });
            block |= !allowed;
        }
        if block {
            return Flow::Respond(self.refused.clone());
        }
        Flow::Continue
    }
}

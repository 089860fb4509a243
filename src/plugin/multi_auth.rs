//! `multi-auth`: any one of several auth plugins lets the request in (a route with two auth
//! plugins side by side requires both).

use std::sync::Arc;

use serde_json::Value;

use super::{registry, Answer, Cx, Factory, Flow, Plugin};

pub struct MultiAuthFactory;

struct MultiAuth {
    /// Each auth plugin with its settings, in the configured order.
    auths: Vec<(String, Arc<dyn Plugin>)>,
}

impl Factory for MultiAuthFactory {
    fn name(&self) -> &'static str {
        "multi-auth"
    }

    fn priority(&self) -> i32 {
        2600
    }

    fn is_auth(&self) -> bool {
        true
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let list = match settings.get("auth_plugins") {
            Some(Value::Array(a)) if a.len() >= 2 => a,
            Some(Value::Array(_)) => {
                return Err("property \"auth_plugins\" validation failed: expect array to have at least 2 items".into())
            }
            Some(_) => return Err("property \"auth_plugins\" validation failed: wrong type: expected array".into()),
            None => return Err("property \"auth_plugins\" is required".into()),
        };
        if let Some(other) = settings
            .as_object()
            .and_then(|m| m.keys().find(|k| *k != "auth_plugins" && *k != "_meta"))
        {
            return Err(format!("unknown field `{other}`"));
        }
        let registry = registry();
        let mut auths = Vec::new();
        for item in list {
            let Some(map) = item.as_object() else {
                return Err("property \"auth_plugins\" validation failed: each item is {\"<auth plugin>\": {...}}".into());
            };
            for (name, conf) in map {
                let factory = registry
                    .factory(name)
                    .ok_or_else(|| format!("{name} plugin did not found"))?;
                if !factory.is_auth() || name == "multi-auth" {
                    return Err(format!("{name} plugin is not supported"));
                }
                let plugin = factory
                    .build(conf)
                    .map_err(|e| format!("plugin {name} check schema failed: {e}"))?;
                auths.push((name.clone(), plugin));
            }
        }
        Ok(Arc::new(MultiAuth { auths }))
    }
}

impl Plugin for MultiAuth {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        for (name, auth) in &self.auths {
            match auth.rewrite(cx) {
                Flow::Continue => return Flow::Continue,
                Flow::Respond(a) => log::debug!("multi-auth: {name} failed ({})", a.status),
                Flow::Wait(_) => {
                    log::warn!("multi-auth: {name} cannot wait here; counted as failed")
                }
            }
        }
        Flow::Respond(Answer::message(401, "Authorization Failed"))
    }
}

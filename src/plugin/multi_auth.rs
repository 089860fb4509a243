//! `multi-auth`: any one of several auth plugins lets the request in (a route with two auth
//! plugins side by side requires both).

use std::sync::Arc;

use serde_json::Value;

use super::{registry, Answer, Cx, Factory, Flow, Plugin};

pub struct MultiAuthFactory;

struct MultiAuth {
    /// Each auth plugin with its settings, in the configured order.
    auths: Vec<(String, Arc<dyn Plugin>)>,
    /// Tells this instance's choice apart from another's in the same request.
    id: usize,
}

/// Which of the auth plugins let the request in: the one that checks a body arriving later
/// (`hmac-auth`'s `validate_request_body` on a big or chunked body).
struct Passed(usize);

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
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        Ok(Arc::new(MultiAuth {
            auths,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }))
    }
}

impl Plugin for MultiAuth {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        for (i, (name, auth)) in self.auths.iter().enumerate() {
            match auth.rewrite(cx) {
                Flow::Continue => {
                    cx.state.set_at("multi-auth", self.id, Passed(i));
                    return Flow::Continue;
                }
                Flow::Respond(a) => log::debug!("multi-auth: {name} failed ({})", a.status),
                Flow::Wait(_) => {
                    log::warn!("multi-auth: {name} cannot wait here; counted as failed")
                }
            }
        }
        Flow::Respond(Answer::message(401, "Authorization Failed"))
    }

    /// The body its auth plugins read whole (the smallest limit, as the chain takes it), so a
    /// sub-plugin's body check is never skipped.
    fn wants_body(&self) -> Option<u64> {
        self.auths.iter().filter_map(|(_, a)| a.wants_body()).min()
    }

    /// The auth plugin that let the request in checks the body that arrived later; one that
    /// passed without reading bodies has nothing to check.
    fn check_body(&self, cx: &mut Cx<'_>, body: &bytes::Bytes) -> Option<Answer> {
        let Some(Passed(i)) = cx.state.get_at::<Passed>("multi-auth", self.id) else {
            // No auth plugin let it in: the rewrite phase refused it already.
            return Some(Answer::message(401, "Authorization Failed"));
        };
        let (_, auth) = self.auths.get(*i)?;
        auth.wants_body()?;
        auth.check_body(cx, body)
    }
}

//! `client-control`: a body size limit per route (413 above it).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct ClientControlFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    max_body_size: Option<u64>,
}

struct ClientControl {
    /// 0: no limit.
    max: u64,
}

impl Factory for ClientControlFactory {
    fn name(&self) -> &'static str {
        "client-control"
    }

    fn priority(&self) -> i32 {
        22000
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        if let Some(n) = settings.get("max_body_size").and_then(Value::as_i64) {
            if n < 0 {
                return Err(format!(
                    "property \"max_body_size\" validation failed: expected {n} to be at least 0"
                ));
            }
        }
        let s: Settings = parse_settings(settings)?;
        Ok(Arc::new(ClientControl {
            max: s.max_body_size.unwrap_or(0),
        }))
    }
}

impl Plugin for ClientControl {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        if self.max == 0 {
            return Flow::Continue;
        }
        let declared = cx
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) {
            return Flow::Respond(Answer::status(413));
        }
        // A chunked body is checked as it is read (the proxy's request body filter).
        cx.state.body_limit = Some(self.max);
        Flow::Continue
    }
}

//! `prometheus`: counts the requests of the routes (or, in a global rule, of every request,
//! 404s included) in APISIX's metrics. The plugin only marks the request; the proxy records it
//! once after the log phase (see `proxy/finish.rs`), so a route and a global rule that both
//! carry it count a request once, with the route's settings (APISIX's `prefer_route`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{parse_settings, CountMetrics, Cx, Factory, Plugin};

pub struct PrometheusFactory;

/// APISIX's one property; another (which APISIX would accept and ignore) is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    prefer_name: bool,
}

struct Prometheus {
    how: CountMetrics,
}

impl Factory for PrometheusFactory {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn priority(&self) -> i32 {
        500
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        Ok(Arc::new(Prometheus {
            how: CountMetrics {
                prefer_name: s.prefer_name,
            },
        }))
    }
}

impl Plugin for Prometheus {
    fn log(&self, cx: &mut Cx<'_>) {
        // The global rules' chain runs first: the route's setting replaces theirs.
        cx.state.count_metrics = Some(self.how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let f = PrometheusFactory;
        assert!(f.build(&serde_json::json!({})).is_ok());
        assert!(f.build(&serde_json::json!({"prefer_name": true})).is_ok());
        let e = f
            .build(&serde_json::json!({"prefer_name": "yes"}))
            .err()
            .unwrap();
        assert!(e.contains("prefer_name"), "{e}");
        assert!(f.build(&serde_json::json!({"prefer_nmae": true})).is_err());
    }
}

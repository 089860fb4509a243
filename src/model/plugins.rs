//! The `plugins` field of a resource: each plugin's settings checked by the plugin registry
//! when the resource loads, so a bad or unknown plugin rejects that resource alone.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{failed, kind_of};
use crate::plugin::{registry, Configured, Scope};

/// Plugin name → its checked settings. Plugins the operator left out of `plugins:` in
/// config.yaml are not here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plugins(pub BTreeMap<String, Configured>);

impl Plugins {
    /// `owner` names the resource (`routes/1`): state a plugin keeps across config versions
    /// (rate-limit counters) is keyed by it and the plugin's settings.
    pub fn parse(value: Option<&Value>, scope: Scope, owner: &str) -> Result<Plugins, String> {
        let Some(value) = value else {
            return Ok(Plugins::default());
        };
        let Value::Object(map) = value else {
            return Err(failed(
                "plugins",
                format!("wrong type: expected object, got {}", kind_of(value)),
            ));
        };
        let registry = registry();
        let mut out = BTreeMap::new();
        for (name, conf) in map {
            if let Some(c) = registry
                .configure_for(name, conf, scope, owner)
                .map_err(|e| failed("plugins", e))?
            {
                out.insert(name.clone(), c);
            }
        }
        Ok(Plugins(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_bad_shapes_are_refused() {
        let ok = serde_json::json!({"request-id": {}});
        assert_eq!(
            Plugins::parse(Some(&ok), Scope::Route, "routes/t")
                .unwrap()
                .0
                .len(),
            1
        );
        let bad = serde_json::json!({"nope": {}});
        assert!(Plugins::parse(Some(&bad), Scope::Route, "routes/t")
            .unwrap_err()
            .contains("unknown plugin [nope]"));
        let bad = serde_json::json!({"cors": 1});
        assert!(Plugins::parse(Some(&bad), Scope::Route, "routes/t").is_err());
    }
}

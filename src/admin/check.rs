//! What a body must be before it is written: the model's own checks (the same the sync
//! applies when the value comes back through the watch), references to other resources,
//! and the fields stored encrypted.

use serde_json::{Map, Value};

use super::path::Dir;
use crate::model::{Kind, Resource};

/// The plugins' fields APISIX stores encrypted, encrypted with the process keyring (those
/// already encrypted are left as they are); private keys too (SSL `key` and `keys`, an
/// upstream's `tls.client_key`), which APISIX encrypts when they are PEM.
pub fn encrypt(dir: Dir, value: &mut Value) {
    let keyring = crate::keyring::current();
    let seal_pem = |v: &mut Value| {
        if let Value::String(s) = v {
            if s.trim_start().starts_with("---") {
                if let Some(sealed) = keyring.encrypt(s) {
                    *s = sealed;
                }
            }
        }
    };
    match dir {
        Dir::Kind(Kind::Ssl) => {
            if let Some(k) = value.get_mut("key") {
                seal_pem(k);
            }
            if let Some(Value::Array(keys)) = value.get_mut("keys") {
                keys.iter_mut().for_each(seal_pem);
            }
            return;
        }
        Dir::Kind(Kind::Upstream) => {
            if let Some(k) = value.pointer_mut("/tls/client_key") {
                seal_pem(k);
            }
        }
        Dir::Kind(Kind::Route | Kind::Service) => {
            if let Some(k) = value.pointer_mut("/upstream/tls/client_key") {
                seal_pem(k);
            }
        }
        _ => {}
    }
    let seal = |v: &mut Value| {
        if let Value::String(s) = v {
            if keyring.decrypt(s).is_none() {
                if let Some(sealed) = keyring.encrypt(s) {
                    *s = sealed;
                }
            }
        }
    };
    for_each_secret(dir, value, |v| seal(v));
}

/// The value as a GET shows it: plugin secrets decrypted, SSL private keys left out (never
/// shown).
pub fn shown(dir: Dir, mut value: Value) -> Value {
    if dir == Dir::Kind(Kind::Ssl) {
        if let Value::Object(map) = &mut value {
            map.remove("key");
            map.remove("keys");
        }
        return value;
    }
    reveal(dir, &mut value);
    value
}

/// Decrypts the plugins' encrypted fields in place (before a PATCH merges into them, so
/// they are encrypted once again, not twice).
pub fn reveal(dir: Dir, value: &mut Value) {
    let keyring = crate::keyring::current();
    for_each_secret(dir, value, |v| {
        if let Value::String(s) = v {
            if let Some(plain) = keyring.decrypt(s) {
                *s = plain;
            }
        }
    });
}

/// Calls `f` on every plugin field that is stored encrypted.
fn for_each_secret(dir: Dir, value: &mut Value, mut f: impl FnMut(&mut Value)) {
    let registry = crate::plugin::registry();
    if let Dir::PluginMetadata = dir {
        return;
    }
    for_each_plugin(value, |name, conf| {
        if let Some(factory) = registry.factory(name) {
            for field in factory.encrypt_fields() {
                if let Some(v) = conf.get_mut(*field) {
                    f(v);
                }
            }
        }
    });
}

fn for_each_plugin(value: &mut Value, mut f: impl FnMut(&str, &mut Map<String, Value>)) {
    if let Some(Value::Object(plugins)) = value.get_mut("plugins") {
        for (name, conf) in plugins.iter_mut() {
            if let Value::Object(conf) = conf {
                f(name, conf);
            }
        }
    }
}

/// Checks `value` as the resource `id` of `dir` (for a credential, `consumer/id`) with the
/// model's rules; the message is APISIX's `invalid configuration: ...`.
pub fn validate(dir: Dir, id: &str, value: &Value) -> Result<Option<Resource>, String> {
    match dir {
        Dir::Kind(kind) => Resource::parse(kind, value, Some(id))
            .map(Some)
            .map_err(|e| format!("invalid configuration: {e}")),
        Dir::PluginMetadata => {
            if crate::plugin::registry().factory(id).is_none() {
                return Err(format!("invalid plugin name: {id}"));
            }
            if !value.is_object() {
                return Err("invalid configuration: wrong type: expected object".into());
            }
            // The plugin's own metadata checks (a logger's log_format), as the sync will.
            Resource::parse(Kind::PluginMetadata, value, Some(id))
                .map(Some)
                .map_err(|e| format!("invalid configuration: {e}"))
        }
    }
}

/// The resources `value` refers to by id, as (kind, id, field).
pub fn references(dir: Dir, value: &Value) -> Vec<(Kind, String, &'static str)> {
    let fields: &[(&str, Kind)] = match dir {
        Dir::Kind(Kind::Route) => &[
            ("upstream_id", Kind::Upstream),
            ("service_id", Kind::Service),
            ("plugin_config_id", Kind::PluginConfig),
        ],
        Dir::Kind(Kind::Service) => &[("upstream_id", Kind::Upstream)],
        Dir::Kind(Kind::Consumer) => &[("group_id", Kind::ConsumerGroup)],
        _ => &[],
    };
    fields
        .iter()
        .filter_map(|(field, kind)| {
            let id = match value.get(*field)? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((*kind, id, *field))
        })
        .collect()
}

/// APISIX's word for a directory in messages (`wrong route id`, `global rule`).
pub fn noun(dir: Dir) -> &'static str {
    match dir {
        Dir::Kind(Kind::GlobalRule) => "global rule",
        Dir::Kind(Kind::PluginConfig) => "plugin config",
        Dir::Kind(Kind::ConsumerGroup) => "consumer group",
        Dir::Kind(k) => k.name(),
        Dir::PluginMetadata => "plugin_metadata",
    }
}

/// The kinds whose resources can refer to one of `kind`, by which field, and how APISIX
/// names the one deleted in its refusal (`can not delete this service directly, ...`).
pub fn referrers(kind: Kind) -> (&'static str, &'static [(Kind, &'static str)]) {
    match kind {
        Kind::Upstream => (
            "upstream",
            &[(Kind::Route, "upstream_id"), (Kind::Service, "upstream_id")],
        ),
        Kind::Service => ("service directly", &[(Kind::Route, "service_id")]),
        Kind::PluginConfig => ("plugin config", &[(Kind::Route, "plugin_config_id")]),
        Kind::ConsumerGroup => ("consumer group", &[(Kind::Consumer, "group_id")]),
        _ => ("", &[]),
    }
}

/// The kinds whose plugins can name an upstream (traffic-split's weighted upstreams), with
/// the word APISIX's refusal uses for each.
pub const PLUGIN_HOLDERS: [(Kind, &str); 6] = [
    (Kind::Route, "route"),
    (Kind::Service, "service"),
    (Kind::PluginConfig, "plugin_config"),
    (Kind::Consumer, "consumer"),
    (Kind::ConsumerGroup, "consumer_group"),
    (Kind::GlobalRule, "global_rules"),
];

/// Whether `value`'s traffic-split sends requests to the upstream `id`.
pub fn plugins_use_upstream(value: &Value, id: &str) -> bool {
    let Some(rules) = value
        .pointer("/plugins/traffic-split/rules")
        .and_then(Value::as_array)
    else {
        return false;
    };
    rules
        .iter()
        .filter_map(|r| r.get("weighted_upstreams").and_then(Value::as_array))
        .flatten()
        .filter_map(|w| w.get("upstream_id"))
        .any(|u| match u {
            Value::String(s) => s == id,
            Value::Number(n) => n.to_string() == id,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_sealed_and_shown_decrypted() {
        let mut v = json!({"username": "jack", "plugins": {"key-auth": {"key": "secret-1"}}});
        encrypt(Dir::Kind(Kind::Consumer), &mut v);
        let sealed = v["plugins"]["key-auth"]["key"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(sealed, "secret-1");
        // sealing twice leaves it as it is
        encrypt(Dir::Kind(Kind::Consumer), &mut v);
        assert_eq!(v["plugins"]["key-auth"]["key"], json!(sealed));
        let view = shown(Dir::Kind(Kind::Consumer), v);
        assert_eq!(view["plugins"]["key-auth"]["key"], json!("secret-1"));
        let ssl = shown(
            Dir::Kind(Kind::Ssl),
            json!({"cert": "c", "key": "k", "keys": ["k2"], "snis": ["a"]}),
        );
        assert_eq!(ssl, json!({"cert": "c", "snis": ["a"]}));
        // private keys: sealed when PEM, left alone when already sealed
        let mut ssl =
            json!({"cert": "c", "key": "-----BEGIN PRIVATE KEY-----", "keys": ["sealed"]});
        encrypt(Dir::Kind(Kind::Ssl), &mut ssl);
        assert!(!ssl["key"].as_str().unwrap().starts_with("---"));
        assert_eq!(ssl["keys"], json!(["sealed"]));
    }

    #[test]
    fn traffic_split_upstreams_are_references() {
        let v = json!({"plugins": {"traffic-split": {"rules": [{"weighted_upstreams": [{"upstream_id": 7, "weight": 1}, {"weight": 1}]}]}}});
        assert!(plugins_use_upstream(&v, "7"));
        assert!(!plugins_use_upstream(&v, "8"));
    }

    #[test]
    fn references_by_kind() {
        let r = references(
            Dir::Kind(Kind::Route),
            &json!({"uri": "/", "upstream_id": 1, "service_id": "s"}),
        );
        assert_eq!(
            r,
            vec![
                (Kind::Upstream, "1".to_string(), "upstream_id"),
                (Kind::Service, "s".to_string(), "service_id")
            ]
        );
    }
}

//! What a body must be before it is written: the model's own checks (the same the sync
//! applies when the value comes back through the watch), references to other resources,
//! and the fields stored encrypted.

use serde_json::{Map, Value};

use super::path::Dir;
use crate::model::{Kind, Resource};

/// The plugins' fields APISIX stores encrypted, encrypted with the process keyring (those
/// already encrypted are left as they are). SSL private keys too.
pub fn encrypt(dir: Dir, value: &mut Value) {
    let keyring = crate::keyring::current();
    let seal = |v: &mut Value| {
        if let Value::String(s) = v {
            if keyring.decrypt(s).is_none() {
                if let Some(sealed) = keyring.encrypt(s) {
                    *s = sealed;
                }
            }
        }
    };
    if dir == Dir::Kind(Kind::Ssl) {
        if let Some(k) = value.get_mut("key") {
            seal(k);
        }
        if let Some(Value::Array(keys)) = value.get_mut("keys") {
            keys.iter_mut().for_each(seal);
        }
        return;
    }
    for_each_plugin(value, |name, conf| {
        if let Some(f) = crate::plugin::registry().factory(name) {
            for field in f.encrypt_fields() {
                if let Some(v) = conf.get_mut(*field) {
                    seal(v);
                }
            }
        }
    });
}

/// The value as the Admin API shows it: plugin secrets decrypted, SSL private keys left
/// out (never shown).
pub fn shown(dir: Dir, mut value: Value) -> Value {
    if dir == Dir::Kind(Kind::Ssl) {
        if let Value::Object(map) = &mut value {
            map.remove("key");
            map.remove("keys");
        }
        return value;
    }
    let keyring = crate::keyring::current();
    for_each_plugin(&mut value, |name, conf| {
        if let Some(f) = crate::plugin::registry().factory(name) {
            for field in f.encrypt_fields() {
                if let Some(Value::String(s)) = conf.get_mut(*field) {
                    if let Some(plain) = keyring.decrypt(s) {
                        *s = plain;
                    }
                }
            }
        }
    });
    value
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
            Ok(None)
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

/// The kinds whose resources can refer to one of `kind`, and by which field.
pub fn referrers(kind: Kind) -> &'static [(Kind, &'static str)] {
    match kind {
        Kind::Upstream => &[(Kind::Route, "upstream_id"), (Kind::Service, "upstream_id")],
        Kind::Service => &[(Kind::Route, "service_id")],
        Kind::PluginConfig => &[(Kind::Route, "plugin_config_id")],
        Kind::ConsumerGroup => &[(Kind::Consumer, "group_id")],
        _ => &[],
    }
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

//! Typed plugin settings from JSON, with errors that name the field.

use std::any::Any;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reads a plugin's settings into `T` (`_meta` left out: the pipeline reads it). Unknown
/// fields should be refused by `T` (`#[serde(deny_unknown_fields)]`): a setting Portico would
/// ignore may be a protection the user counts on.
pub fn parse_settings<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    let stripped;
    let value = match value {
        Value::Object(map) if map.contains_key("_meta") => {
            let mut map = map.clone();
            map.remove("_meta");
            stripped = Value::Object(map);
            &stripped
        }
        v => v,
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            e.inner().to_string()
        } else {
            format!("property \"{path}\" validation failed: {}", e.inner())
        }
    })
}

/// The consumer side of an auth plugin: the value requests are matched by (the API key, the
/// user name, the JWT key) and the settings the plugin checks afterwards.
pub struct ConsumerAuth {
    pub lookup: String,
    pub data: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for ConsumerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.write_str("ConsumerAuth")
    }
}

/// Exactly one of an allow list and a deny list (APISIX's `oneOf`), parsed with `parse`:
/// the parsed list and whether it allows.
pub fn allow_or_deny<T>(
    allow: (&str, &Option<Vec<String>>),
    deny: (&str, &Option<Vec<String>>),
    parse: impl Fn(&str, &[String]) -> Result<Vec<T>, String>,
) -> Result<(Vec<T>, bool), String> {
    let check = |field: &str, l: &[String]| {
        if l.is_empty() {
            return Err(format!(
                "property \"{field}\" validation failed: expect array to have at least 1 items"
            ));
        }
        parse(field, l)
    };
    match (allow.1, deny.1) {
        (Some(a), None) => Ok((check(allow.0, a)?, true)),
        (None, Some(d)) => Ok((check(deny.0, d)?, false)),
        (Some(_), Some(_)) => {
            Err("value should match only one schema, but matches both schemas 1 and 2".into())
        }
        (None, None) => Err("value should match only one schema, but matches none".into()),
    }
}

/// Checks a number against inclusive bounds, in APISIX's words.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    v: T,
    min: T,
    max: Option<T>,
) -> Result<(), String> {
    if v < min {
        return Err(format!(
            "property \"{field}\" validation failed: expected {v} to be at least {min}"
        ));
    }
    if let Some(max) = max {
        if v > max {
            return Err(format!(
                "property \"{field}\" validation failed: expected {v} to be at most {max}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[allow(dead_code)]
        count: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_settings::<S>(&serde_json::json!({"count": "x"})).unwrap_err();
        assert!(e.starts_with("property \"count\" validation failed"), "{e}");
        let e = parse_settings::<S>(&serde_json::json!({"count": 1, "cuont": 2})).unwrap_err();
        assert!(e.contains("unknown field `cuont`"), "{e}");
        assert!(parse_settings::<S>(&serde_json::json!({"count": 1, "_meta": {}})).is_ok());
    }
}

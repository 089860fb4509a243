//! Resource ids: APISIX accepts a string of 1–64 `[a-zA-Z0-9-_.]` or an integer ≥ 1.

use std::fmt;
use std::sync::Arc;

/// A validated id, kept in its string form (`1` and `"1"` are the same id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(Arc<str>);

impl Id {
    pub fn parse(value: &serde_json::Value) -> Result<Id, String> {
        match value {
            serde_json::Value::String(s) => Id::parse_str(s),
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(n) if n >= 1 => Ok(Id(n.to_string().into())),
                _ => Err(format!("id {n} must be an integer of at least 1")),
            },
            other => Err(format!(
                "wrong type: expected string or integer, got {}",
                super::fields::kind_of(other)
            )),
        }
    }

    pub fn parse_str(s: &str) -> Result<Id, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Id(s.into()))
        } else {
            Err(format!(
                "id {s:?} must be 1 to 64 characters of [a-zA-Z0-9-_.]"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids() {
        assert_eq!(
            Id::parse(&json!(1)).unwrap(),
            Id::parse(&json!("1")).unwrap()
        );
        assert!(Id::parse(&json!(0)).is_err());
        assert!(Id::parse(&json!(-3)).is_err());
        assert!(Id::parse(&json!("a b")).is_err());
        assert!(Id::parse(&json!("x".repeat(65))).is_err());
        assert!(Id::parse(&json!("route-1.a_b")).is_ok());
        assert!(Id::parse(&json!(null)).is_err());
    }
}

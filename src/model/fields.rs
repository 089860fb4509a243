//! Reading fields out of APISIX's JSON with APISIX's error messages
//! (`property "methods" validation failed: …`).

use serde_json::{Map, Value};

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub fn failed(name: &str, why: impl std::fmt::Display) -> String {
    format!("property \"{name}\" validation failed: {why}")
}

fn wrong_type(name: &str, want: &str, got: &Value) -> String {
    failed(
        name,
        format!("wrong type: expected {want}, got {}", kind_of(got)),
    )
}

/// A JSON object being read field by field.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a Value) -> Result<Obj<'a>, String> {
        match value {
            Value::Object(map) => Ok(Obj { map }),
            other => Err(format!(
                "wrong type: expected object, got {}",
                kind_of(other)
            )),
        }
    }

    /// A field that is present and not null.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn str(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, "string", other)),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(name, "boolean", other)),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(wrong_type(name, "integer", &Value::Number(n.clone()))),
                },
            },
            Some(other) => Err(wrong_type(name, "integer", other)),
        }
    }

    /// A number (fractional allowed), e.g. timeouts in seconds.
    pub fn number(&self, name: &str) -> Result<Option<f64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "number", &Value::Number(n.clone()))),
            Some(other) => Err(wrong_type(name, "number", other)),
        }
    }

    pub fn object(&self, name: &str) -> Result<Option<Obj<'a>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(Obj::new(v)?)),
            Some(other) => Err(wrong_type(name, "object", other)),
        }
    }

    pub fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(wrong_type(name, "array", other)),
        }
    }

    /// An array of strings; `unique` refuses duplicates as APISIX's schema does.
    pub fn strings(&self, name: &str, unique: bool) -> Result<Option<Vec<String>>, String> {
        let Some(items) = self.array(name)? else {
            return Ok(None);
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => {
                    if unique && out.contains(s) {
                        return Err(failed(
                            name,
                            "expected unique items but items are duplicated",
                        ));
                    }
                    out.push(s.clone());
                }
                other => {
                    return Err(failed(
                        name,
                        format!("wrong type: expected string, got {}", kind_of(other)),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    /// `single` xor `plural` (`uri`/`uris`, `host`/`hosts`, …): both set is an error.
    pub fn one_or_many(&self, single: &str, plural: &str) -> Result<Option<Vec<String>>, String> {
        match (self.str(single)?, self.strings(plural, true)?) {
            (Some(_), Some(_)) => Err(format!(
                "value should match only one schema, but matches both \"{single}\" and \"{plural}\""
            )),
            (Some(one), None) => Ok(Some(vec![one.to_string()])),
            (None, many) => Ok(many),
        }
    }
}

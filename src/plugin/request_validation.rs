//! `request-validation`: the request's headers and body checked against JSON Schemas before
//! the upstream sees them, with APISIX's fields (`header_schema`, `body_schema`,
//! `max_req_body_size`, `rejected_code`, `rejected_msg`) and answers.
//!
//! The body is JSON unless its `Content-Type` is `application/x-www-form-urlencoded`. So that
//! the upstream cannot read another document than the schema saw, a JSON object with a key
//! twice is refused (parsers disagree on which one counts), as is a duplicated
//! `Content-Type`. A body that passes goes upstream byte for byte; APISIX instead re-encodes
//! it, which also rounds large numbers, so Portico refuses the ambiguous documents instead.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct RequestValidationFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    header_schema: Option<Value>,
    body_schema: Option<Value>,
    #[serde(default = "default_max_body")]
    max_req_body_size: u64,
    #[serde(default = "default_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
}

fn default_max_body() -> u64 {
    64 * 1024 * 1024
}
fn default_code() -> u16 {
    400
}

struct RequestValidation {
    headers: Option<jsonschema::Validator>,
    body: Option<jsonschema::Validator>,
    max_body: u64,
    code: u16,
    msg: Option<String>,
}

/// A schema compiled once, when its resource loads (draft 7 unless it names its `$schema`).
fn compile(field: &str, schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() {
        return Err(format!(
            "property \"{field}\" validation failed: wrong type: expected object"
        ));
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(schema)
        .map_err(|e| format!("property \"{field}\": invalid JSON Schema: {e}"))
}

impl Factory for RequestValidationFactory {
    fn name(&self) -> &'static str {
        "request-validation"
    }

    fn priority(&self) -> i32 {
        2800
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if s.header_schema.is_none() && s.body_schema.is_none() {
            return Err(
                "value should match at least one schema: header_schema or body_schema is required"
                    .into(),
            );
        }
        check_range("max_req_body_size", s.max_req_body_size, 1, None)?;
        check_range("rejected_code", s.rejected_code, 200, Some(599))?;
        if let Some(m) = &s.rejected_msg {
            if m.is_empty() || m.chars().count() > 256 {
                return Err(
                    "property \"rejected_msg\" validation failed: string length must be 1 to 256"
                        .into(),
                );
            }
        }
        Ok(Arc::new(RequestValidation {
            headers: s
                .header_schema
                .as_ref()
                .map(|v| compile("header_schema", v))
                .transpose()?,
            body: s
                .body_schema
                .as_ref()
                .map(|v| compile("body_schema", v))
                .transpose()?,
            max_body: s.max_req_body_size,
            code: s.rejected_code,
            msg: s.rejected_msg,
        }))
    }
}

/// What a failed check says, in the words of APISIX's validator where they differ.
fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let path: Vec<String> = e
        .instance_path()
        .iter()
        .map(|seg| match seg {
            jsonschema::paths::LocationSegment::Property(p) => p.to_string(),
            jsonschema::paths::LocationSegment::Index(i) => i.to_string(),
        })
        .collect();
    if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
        let name = property
            .as_str()
            .map_or(property.to_string(), str::to_string);
        return if path.is_empty() {
            format!("property \"{name}\" is required")
        } else {
            format!("property \"{}.{name}\" is required", path.join("."))
        };
    }
    if path.is_empty() {
        e.to_string()
    } else {
        format!("property \"{}\" validation failed: {e}", path.join("."))
    }
}

/// A form body as a table: each name once, a repeated name as an array of its values.
fn form_table(body: &[u8]) -> Value {
    let mut map = Map::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], Value::String(unescape(&pair[i + 1..]))),
            None => (pair, Value::Bool(true)),
        };
        let k = unescape(k);
        match map.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            Some(old) => *old = Value::Array(vec![old.take(), v]),
            None => {
                map.insert(k, v);
            }
        }
    }
    Value::Object(map)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn unescape(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Any JSON document, refused when an object in it has a key twice.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<NoDuplicates, A::Error> {
        while a.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = a.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
            }
            a.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

impl RequestValidation {
    fn refuse(&self, why: Option<String>) -> Answer {
        match (&self.msg, why) {
            (Some(m), _) => Answer::text(self.code, m.clone()),
            (None, Some(w)) => Answer::text(self.code, w),
            (None, None) => Answer::status(self.code),
        }
    }

    fn check_headers(&self, cx: &Cx<'_>) -> Result<(), Answer> {
        let Some(schema) = &self.headers else {
            return Ok(());
        };
        let mut map = Map::new();
        for (name, value) in cx.req().headers.iter() {
            let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
            match map.get_mut(name.as_str()) {
                Some(Value::Array(a)) => a.push(v),
                Some(old) => *old = Value::Array(vec![old.take(), v]),
                None => {
                    map.insert(name.as_str().to_string(), v);
                }
            }
        }
        let headers = Value::Object(map);
        schema.validate(&headers).map_err(|e| {
            let why = describe(&e);
            log::info!("request-validation: headers refused: {why}");
            self.refuse(Some(why))
        })
    }

    /// Checks a whole body.
    fn check_body_bytes(&self, cx: &Cx<'_>, body: &[u8]) -> Result<(), Answer> {
        let Some(schema) = &self.body else {
            return Ok(());
        };
        if body.is_empty() {
            return Err(self.refuse(None));
        }
        let types = cx.req().headers.get_all(http::header::CONTENT_TYPE);
        let mut types = types.iter();
        let content_type = types.next();
        if types.next().is_some() {
            log::info!("request-validation: duplicated Content-Type refused");
            return Err(self.refuse(None));
        }
        let form = content_type.and_then(|v| v.to_str().ok()).is_some_and(|t| {
            t.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let doc = if form {
            form_table(body)
        } else {
            let undecodable = |e: serde_json::Error| {
                self.refuse(Some(format!("failed to decode the request body: {e}")))
            };
            serde_json::from_slice::<NoDuplicates>(body).map_err(undecodable)?;
            serde_json::from_slice::<Value>(body).map_err(undecodable)?
        };
        if let Err(e) = schema.validate(&doc) {
            let why = describe(&e);
            log::info!("request-validation: body refused: {why}");
            return Err(self.refuse(Some(why)));
        }
        Ok(())
    }
}

impl Plugin for RequestValidation {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        if let Err(a) = self.check_headers(cx) {
            return Flow::Respond(a);
        }
        if self.body.is_none() {
            return Flow::Continue;
        }
        match &cx.state.body {
            Some(body) => match self.check_body_bytes(cx, body) {
                Ok(()) => Flow::Continue,
                Err(a) => Flow::Respond(a),
            },
            // Checked once it has all arrived, before the upstream has any of it.
            None if cx.state.body_later => Flow::Continue,
            None => Flow::Respond(self.refuse(None)),
        }
    }

    fn wants_body(&self) -> Option<u64> {
        self.body.as_ref().map(|_| self.max_body)
    }

    fn check_body(&self, cx: &mut Cx<'_>, body: &Bytes) -> Option<Answer> {
        self.check_body_bytes(cx, body).err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_decode_like_nginx() {
        assert_eq!(
            form_table(b"a=1&b=x+y%21&a=2&flag"),
            json!({"a": ["1", "2"], "b": "x y!", "flag": true})
        );
        assert_eq!(unescape(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        assert!(
            serde_json::from_slice::<NoDuplicates>(br#"{"a": [1, {"b": 2, "c": null}]}"#).is_ok()
        );
        let e = serde_json::from_slice::<NoDuplicates>(br#"{"a": [{"b": 1, "b": 2}]}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("duplicate key \"b\""), "{e}");
    }

    #[test]
    fn settings_are_checked() {
        let f = RequestValidationFactory;
        assert!(f.build(&json!({"body_schema": {"type": "object"}})).is_ok());
        for bad in [
            json!({}),
            json!({"body_schema": {"type": 5}}),
            json!({"header_schema": "x"}),
            json!({"body_schema": {}, "rejected_code": 100}),
            json!({"body_schema": {}, "rejected_msg": ""}),
        ] {
            assert!(f.build(&bad).is_err(), "{bad}");
        }
    }
}

//! Bytes on the wire: base64, int64s written as strings, key prefixes and value serializers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer};

use super::error::{DecodeError, Error, Result};
use super::options::Serializer;

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(s)
        .map_err(|e| format!("invalid base64 from etcd: {e}"))
}

/// The `range_end` that makes a range cover every key starting with `prefix`.
///
/// Trailing 0xff bytes cannot be incremented, so they are dropped and the carry goes to the
/// byte before; a prefix of only 0xff bytes (or the empty prefix) means "to the end": `\0`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Accepts an int64 written as a JSON string (etcd's way) or as a number.
pub fn de_i64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(i64),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Like [`de_i64`] for uint64 fields (cluster and member IDs).
pub fn de_u64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(u64),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Key prefixing and value encoding, applied the same way to every kind of request.
#[derive(Debug, Clone)]
pub struct Codec {
    pub key_prefix: String,
    pub serializer: Serializer,
}

impl Codec {
    /// The full key as stored in etcd, base64-encoded for the JSON gateway.
    pub fn key(&self, key: &str) -> String {
        b64(self.full_key(key).as_bytes())
    }

    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// `range_end` for every key under `dir` (after prefixing), base64-encoded.
    pub fn dir_range_end(&self, dir: &str) -> String {
        b64(&prefix_range_end(self.full_key(dir).as_bytes()))
    }

    /// A key received from etcd, with the key prefix removed.
    pub fn strip_key(&self, raw: &[u8]) -> String {
        let full = String::from_utf8_lossy(raw);
        match full.strip_prefix(self.key_prefix.as_str()) {
            Some(rest) => rest.to_string(),
            None => full.into_owned(),
        }
    }

    pub fn encode_value(&self, key: &str, value: &serde_json::Value) -> Result<String> {
        let bytes = match self.serializer {
            Serializer::Json => serde_json::to_vec(value).map_err(|e| Error::Encode {
                key: key.to_string(),
                reason: e.to_string(),
            })?,
            Serializer::Raw => match value {
                serde_json::Value::String(s) => s.as_bytes().to_vec(),
                other => {
                    return Err(Error::Encode {
                        key: key.to_string(),
                        reason: format!(
                            "the raw serializer stores strings only, got {}",
                            json_kind(other)
                        ),
                    })
                }
            },
        };
        Ok(b64(&bytes))
    }

    pub fn decode_value(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> std::result::Result<serde_json::Value, DecodeError> {
        let fail = |reason: String| DecodeError {
            key: key.to_string(),
            reason,
        };
        match self.serializer {
            Serializer::Json => {
                serde_json::from_slice(bytes).map_err(|e| fail(format!("not valid JSON ({e})")))
            }
            Serializer::Raw => String::from_utf8(bytes.to_vec())
                .map(serde_json::Value::String)
                .map_err(|_| fail("not UTF-8; read raw_value for the bytes".to_string())),
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_carries() {
        assert_eq!(prefix_range_end(b"/dir/"), b"/dir0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }

    #[test]
    fn int64_as_string_or_number() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "de_i64")]
            a: i64,
            #[serde(deserialize_with = "de_i64")]
            b: i64,
        }
        let t: T = serde_json::from_str(r#"{"a":"7587867165298014465","b":-3}"#).unwrap();
        assert_eq!((t.a, t.b), (7587867165298014465, -3));
        assert!(serde_json::from_str::<T>(r#"{"a":"x","b":1}"#).is_err());
    }

    #[test]
    fn serializers() {
        let json = Codec {
            key_prefix: "/p".into(),
            serializer: Serializer::Json,
        };
        let v = serde_json::json!({"a": 1});
        let enc = json.encode_value("k", &v).unwrap();
        assert_eq!(json.decode_value("k", &unb64(&enc).unwrap()).unwrap(), v);
        assert!(json.decode_value("k", b"not json").is_err());
        assert_eq!(json.strip_key(b"/p/a"), "/a");
        let raw = Codec {
            key_prefix: String::new(),
            serializer: Serializer::Raw,
        };
        assert!(raw.encode_value("k", &v).is_err());
        let enc = raw.encode_value("k", &serde_json::json!("hi")).unwrap();
        assert_eq!(unb64(&enc).unwrap(), b"hi");
    }
}

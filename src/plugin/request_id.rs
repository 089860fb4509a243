//! `request-id`: every request carries an id, to the upstream and back in the response.

use std::sync::Arc;

use pingora_http::ResponseHeader;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

use super::{check_range, parse_settings, Cx, Factory, Flow, Plugin};

pub struct RequestIdFactory;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    Uuid,
    Uuidv7,
    Nanoid,
    RangeId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeId {
    #[serde(default = "default_length")]
    length: usize,
    #[serde(default = "default_charset")]
    char_set: String,
}

fn default_length() -> usize {
    16
}

fn default_charset() -> String {
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_header")]
    header_name: String,
    #[serde(default = "yes")]
    include_in_response: bool,
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    range_id: Option<RangeId>,
}

fn default_header() -> String {
    "X-Request-Id".into()
}

fn yes() -> bool {
    true
}

fn default_algorithm() -> Algorithm {
    Algorithm::Uuid
}

struct RequestId {
    header: http::HeaderName,
    include_in_response: bool,
    algorithm: Algorithm,
    range: (usize, Vec<char>),
}

/// The request's id, for the response header (per instance: a global rule and a route may
/// both set ids, under two names).
struct Generated(String);
const GENERATED: &str = "request-id";

impl Factory for RequestIdFactory {
    fn name(&self) -> &'static str {
        "request-id"
    }

    fn priority(&self) -> i32 {
        12015
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        let header = http::HeaderName::from_bytes(s.header_name.as_bytes()).map_err(|_| {
            format!(
                "property \"header_name\" validation failed: {:?} is not a header name",
                s.header_name
            )
        })?;
        let range = s.range_id.unwrap_or(RangeId {
            length: default_length(),
            char_set: default_charset(),
        });
        check_range("range_id.length", range.length, 6, None)?;
        if range.char_set.chars().count() < 6 {
            return Err(
                "property \"range_id.char_set\" validation failed: string too short, expected at least 6".into(),
            );
        }
        Ok(Arc::new(RequestId {
            header,
            include_in_response: s.include_in_response,
            algorithm: s.algorithm,
            range: (range.length, range.char_set.chars().collect()),
        }))
    }
}

/// A random (version 4) UUID, or a time-ordered version 7 one.
fn uuid(v7: bool) -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    if v7 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6] = (b[6] & 0x0f) | 0x70;
    } else {
        b[6] = (b[6] & 0x0f) | 0x40;
    }
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(x >> 4) as usize] as char);
        out.push(HEX[(x & 15) as usize] as char);
    }
    out
}

impl RequestId {
    fn generate(&self) -> String {
        let mut rng = rand::thread_rng();
        match self.algorithm {
            Algorithm::Uuid => uuid(false),
            Algorithm::Uuidv7 => uuid(true),
            Algorithm::Nanoid => {
                const ALPHABET: &[u8] =
                    b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
                (0..21)
                    .map(|_| ALPHABET[rng.gen_range(0..64)] as char)
                    .collect()
            }
            Algorithm::RangeId => {
                let (len, set) = &self.range;
                (0..*len)
                    .map(|_| set[rng.gen_range(0..set.len())])
                    .collect()
            }
        }
    }
}

impl Plugin for RequestId {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let id = match cx
            .req()
            .headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        {
            Some(v) => v.to_string(),
            None => {
                let id = self.generate();
                // Made of header-safe characters (or the operator's own char_set).
                let _ = cx.req_mut().insert_header(self.header.clone(), id.as_str());
                id
            }
        };
        if self.include_in_response {
            cx.state
                .set_at(GENERATED, self as *const Self as usize, Generated(id));
        }
        Flow::Continue
    }

    fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        if !self.include_in_response {
            return;
        }
        let has = resp
            .headers
            .get(&self.header)
            .is_some_and(|v| !v.is_empty());
        if has {
            return;
        }
        if let Some(Generated(id)) = cx
            .state
            .get_at::<Generated>(GENERATED, self as *const Self as usize)
        {
            let _ = resp.insert_header(self.header.clone(), id.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_their_version() {
        let u = uuid(false);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(&uuid(true)[14..15], "7");
        assert_ne!(uuid(false), uuid(false));
    }
}

//! `hmac-auth` (APISIX 3.x): requests signed with a consumer's secret, as
//! `Authorization: Signature keyId="…",algorithm="hmac-sha256",headers="@request-target date",signature="…"`.

use std::sync::Arc;

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use serde::Deserialize;
use serde_json::Value;

use bytes::Bytes;

use super::{check_range, parse_settings, Answer, ConsumerAuth, Cx, Factory, Flow, Plugin};

pub struct HmacAuthFactory;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum Algorithm {
    #[serde(rename = "hmac-sha1")]
    Sha1,
    #[serde(rename = "hmac-sha256")]
    Sha256,
    #[serde(rename = "hmac-sha512")]
    Sha512,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "hmac-sha1" => Some(Algorithm::Sha1),
            "hmac-sha256" => Some(Algorithm::Sha256),
            "hmac-sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            Algorithm::Sha1 => MessageDigest::sha1(),
            Algorithm::Sha256 => MessageDigest::sha256(),
            Algorithm::Sha512 => MessageDigest::sha512(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "all_algorithms")]
    allowed_algorithms: Vec<Algorithm>,
    #[serde(default = "default_skew")]
    clock_skew: i64,
    #[serde(default = "default_signed")]
    signed_headers: Vec<String>,
    #[serde(default)]
    validate_request_body: bool,
    #[serde(default = "default_max_body")]
    max_req_body_size: u64,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "default_realm")]
    realm: String,
    anonymous_consumer: Option<String>,
}

fn all_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512]
}

fn default_skew() -> i64 {
    300
}

fn default_signed() -> Vec<String> {
    vec!["date".into()]
}

fn default_max_body() -> u64 {
    64 * 1024 * 1024
}

fn default_realm() -> String {
    "hmac".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerSettings {
    key_id: String,
    secret_key: String,
}

struct Secret(Vec<u8>);

struct HmacAuth {
    s: Settings,
    www_authenticate: String,
}

impl Factory for HmacAuthFactory {
    fn name(&self) -> &'static str {
        "hmac-auth"
    }

    fn priority(&self) -> i32 {
        2530
    }

    fn is_auth(&self) -> bool {
        true
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["secret_key"]
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        check_range("clock_skew", s.clock_skew, 1, None)?;
        check_range("max_req_body_size", s.max_req_body_size, 1, None)?;
        if s.allowed_algorithms.is_empty() {
            return Err("property \"allowed_algorithms\" validation failed: expect array to have at least 1 items".into());
        }
        Ok(Arc::new(HmacAuth {
            www_authenticate: format!("hmac realm=\"{}\"", s.realm),
            s,
        }))
    }

    fn consumer(&self, settings: &Value) -> Option<Result<ConsumerAuth, String>> {
        Some(parse_settings::<ConsumerSettings>(settings).and_then(|c| {
            if c.key_id.is_empty() || c.secret_key.is_empty() {
                return Err("properties \"key_id\" and \"secret_key\" must not be empty".into());
            }
            Ok(ConsumerAuth {
                lookup: c.key_id,
                data: Arc::new(Secret(c.secret_key.into_bytes())),
            })
        }))
    }
}

/// The fields of a `Signature …` Authorization value.
#[derive(Default, Debug)]
struct Params {
    key_id: Option<String>,
    algorithm: Option<String>,
    signature: Option<String>,
    headers: Vec<String>,
}

fn params(auth: &str) -> Result<Params, &'static str> {
    let rest = auth
        .strip_prefix("Signature")
        .ok_or("Authorization header does not start with 'Signature'")?;
    let mut p = Params::default();
    for field in rest.split(',') {
        let field = field.trim_start();
        let Some((k, v)) = field.split_once("=\"") else {
            continue;
        };
        let Some(v) = v.strip_suffix('"').or_else(|| v.split('"').next()) else {
            continue;
        };
        match k.trim() {
            "keyId" => p.key_id = Some(v.to_string()),
            "algorithm" => p.algorithm = Some(v.to_string()),
            "signature" => p.signature = Some(v.to_string()),
            "headers" => p.headers = v.split(' ').map(str::to_string).collect(),
            _ => {}
        }
    }
    Ok(p)
}

/// Seconds since the epoch of an RFC 1123 date (`Tue, 01 Dec 2026 23:19:47 GMT`).
fn http_time(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    if !(1970..=9999).contains(&y) {
        return None;
    }
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&d) || *h > 23 || *mi > 59 || *se > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if month <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

impl HmacAuth {
    fn check(&self, cx: &Cx<'_>) -> Result<Arc<super::ConsumerMatch>, String> {
        const PREFIX: &str = "client request can't be validated";
        let auth = cx
            .header("Authorization")
            .ok_or_else(|| format!("{PREFIX}: missing Authorization header"))?;
        let p = params(auth).map_err(|e| format!("{PREFIX}: {e}"))?;
        let generic = || PREFIX.to_string();
        let (Some(key_id), Some(signature)) = (&p.key_id, &p.signature) else {
            return Err(generic());
        };
        let algorithm = p.algorithm.as_deref().ok_or_else(generic)?;
        let consumer = cx
            .state
            .consumers()
            .find("hmac-auth", key_id)
            .cloned()
            .ok_or_else(generic)?;
        let alg = Algorithm::parse(algorithm)
            .filter(|a| self.s.allowed_algorithms.contains(a))
            .ok_or_else(generic)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let date = cx.header("Date").and_then(http_time).ok_or_else(generic)?;
        if (now - date).abs() > self.s.clock_skew {
            return Err(generic());
        }
        if self.s.signed_headers.iter().any(|h| !p.headers.contains(h)) {
            return Err(generic());
        }
        let secret = consumer.auth::<Secret>().ok_or_else(generic)?;
        let uri = cx
            .req()
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|u| !u.is_empty())
            .unwrap_or("/");
        let mut signing = format!("{key_id}\n");
        for h in &p.headers {
            // A listed header that is not text cannot be signed as given: refused.
            if cx.req().headers.get(h.as_str()).is_some() && cx.header(h).is_none() {
                return Err(generic());
            }
            match cx.header(h) {
                Some(v) => signing.push_str(&format!("{h}: {v}\n")),
                None if h == "@request-target" => {
                    signing.push_str(&format!("{} {uri}\n", cx.req().method))
                }
                None => {}
            }
        }
        let given = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| generic())?;
        let mac = PKey::hmac(&secret.0)
            .and_then(|k| {
                openssl::sign::Signer::new(alg.digest(), &k)?
                    .sign_oneshot_to_vec(signing.as_bytes())
            })
            .map_err(|_| generic())?;
        if mac.len() != given.len() || !openssl::memcmp::eq(&mac, &given) {
            return Err(generic());
        }
        if self.s.validate_request_body {
            let digest = cx.header("Digest").ok_or_else(generic)?;
            match &cx.state.body {
                Some(body) if !digest_matches(digest, body) => return Err(generic()),
                Some(_) => {}
                // Too big to read before this phase: checked once it has all arrived.
                None if cx.state.body_later => {}
                None => return Err(generic()),
            }
        }
        Ok(consumer)
    }
}

/// Whether `Digest: SHA-256=<base64>` is the body's.
fn digest_matches(header: &str, body: &[u8]) -> bool {
    let Ok(hash) = openssl::hash::hash(MessageDigest::sha256(), body) else {
        return false;
    };
    let expected = format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    );
    expected.len() == header.len() && openssl::memcmp::eq(expected.as_bytes(), header.as_bytes())
}

impl Plugin for HmacAuth {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let checked = self.check(cx);
        let consumer = match checked.or_else(|why| {
            super::anonymous_or_refuse(
                cx.state.consumers(),
                self.s.anonymous_consumer.as_deref(),
                &why,
                &self.www_authenticate,
            )
        }) {
            Ok(c) => c,
            Err(answer) => return Flow::Respond(answer),
        };
        if self.s.hide_credentials {
            cx.req_mut().remove_header("Authorization");
        }
        cx.attach_consumer(consumer);
        Flow::Continue
    }

    fn wants_body(&self) -> Option<u64> {
        self.s
            .validate_request_body
            .then_some(self.s.max_req_body_size)
    }

    fn check_body(&self, cx: &mut Cx<'_>, body: &Bytes) -> Option<Answer> {
        let ok = cx.header("Digest").is_some_and(|d| digest_matches(d, body));
        (!ok).then(|| {
            Answer::message(401, "client request can't be validated")
                .header("WWW-Authenticate", &self.www_authenticate)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_params() {
        assert_eq!(http_time("Thu, 01 Jan 1970 00:00:10 GMT"), Some(10));
        assert_eq!(
            http_time("Tue, 01 Dec 2026 23:19:47 GMT"),
            Some(1_796_167_187)
        );
        assert_eq!(http_time("yesterday"), None);
        let p = params(r#"Signature keyId="my-key",algorithm="hmac-sha256",headers="@request-target date",signature="abc=""#).unwrap();
        assert_eq!(p.key_id.as_deref(), Some("my-key"));
        assert_eq!(p.headers, ["@request-target", "date"]);
        assert!(params("Basic x").is_err());
    }
}

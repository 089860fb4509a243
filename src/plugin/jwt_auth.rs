//! `jwt-auth`: a consumer is found by a claim of a signed JSON Web Token (header, query or
//! cookie), and the token checked with that consumer's secret or public key.

use std::sync::Arc;

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde::Deserialize;
use serde_json::Value;

use super::{check_range, parse_settings, ConsumerAuth, Cx, Factory, Flow, Plugin};

pub struct JwtAuthFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_jwt")]
    query: String,
    #[serde(default = "default_jwt")]
    cookie: String,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "default_key")]
    key_claim_name: String,
    /// Keeps the payload for later plugins; none in Portico reads it, so `true` is refused.
    #[serde(default)]
    store_in_ctx: bool,
    #[serde(default = "default_jwt")]
    realm: String,
    anonymous_consumer: Option<String>,
    claims_to_verify: Option<Vec<Claim>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Claim {
    Exp,
    Nbf,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_jwt() -> String {
    "jwt".into()
}

fn default_key() -> String {
    "key".into()
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    ES512,
    PS256,
    PS384,
    PS512,
    EdDSA,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerSettings {
    key: String,
    secret: Option<String>,
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    #[serde(default = "default_exp")]
    exp: i64,
    #[serde(default)]
    base64_secret: bool,
    #[serde(default)]
    lifetime_grace_period: i64,
    public_key: Option<String>,
}

fn default_algorithm() -> Algorithm {
    Algorithm::HS256
}

fn default_exp() -> i64 {
    86400
}

/// What a consumer's tokens are checked with.
enum VerifyKey {
    Secret(Vec<u8>),
    Public(PKey<Public>),
}

struct ConsumerKey {
    algorithm: Algorithm,
    key: VerifyKey,
    grace: i64,
}

struct JwtAuth {
    s: Settings,
    www_authenticate: String,
}

impl Factory for JwtAuthFactory {
    fn name(&self) -> &'static str {
        "jwt-auth"
    }

    fn priority(&self) -> i32 {
        2510
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if s.store_in_ctx {
            return Err(
                "property \"store_in_ctx\": no Portico plugin reads the JWT payload; remove it"
                    .into(),
            );
        }
        if s.key_claim_name.is_empty() {
            return Err("property \"key_claim_name\" validation failed: string too short, expected at least 1".into());
        }
        Ok(Arc::new(JwtAuth {
            www_authenticate: format!("Bearer realm=\"{}\"", s.realm),
            s,
        }))
    }

    fn is_auth(&self) -> bool {
        true
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["secret"]
    }

    fn consumer(&self, settings: &Value) -> Option<Result<ConsumerAuth, String>> {
        Some(consumer_key(settings))
    }
}

fn consumer_key(settings: &Value) -> Result<ConsumerAuth, String> {
    let c: ConsumerSettings = parse_settings(settings)?;
    if c.key.is_empty() {
        return Err(
            "property \"key\" validation failed: string too short, expected at least 1".into(),
        );
    }
    check_range("exp", c.exp, 1, None)?;
    check_range(
        "lifetime_grace_period",
        c.lifetime_grace_period,
        0,
        Some(10 * 365 * 86_400),
    )?;
    let hs = matches!(
        c.algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    );
    let key = if hs {
        let secret = c
            .secret
            .filter(|s| !s.is_empty())
            .ok_or("property \"secret\" is required when using HS based algorithms")?;
        VerifyKey::Secret(if c.base64_secret {
            base64::engine::general_purpose::STANDARD
                .decode(&secret)
                .map_err(|_| "base64_secret required but the secret is not in base64 format")?
        } else {
            secret.into_bytes()
        })
    } else {
        let pem = c
            .public_key
            .filter(|p| !p.is_empty())
            .ok_or("missing valid public key")?;
        VerifyKey::Public(
            PKey::public_key_from_pem(pem.as_bytes())
                .map_err(|e| format!("invalid public key: {e}"))?,
        )
    };
    Ok(ConsumerAuth {
        lookup: c.key,
        data: Arc::new(ConsumerKey {
            algorithm: c.algorithm,
            key,
            grace: c.lifetime_grace_period,
        }),
    })
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// A token split and decoded: the signed text, the signature, header and payload.
struct Token {
    signed: String,
    signature: Vec<u8>,
    header: Value,
    payload: Value,
}

fn parse_token(token: &str) -> Option<Token> {
    let mut parts = token.split('.');
    let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url(h)?).ok()?;
    let payload: Value = serde_json::from_slice(&b64url(p)?).ok()?;
    if !header.is_object() || !payload.is_object() {
        return None;
    }
    Some(Token {
        signed: format!("{h}.{p}"),
        signature: b64url(sig)?,
        header,
        payload,
    })
}

fn digest(a: Algorithm) -> MessageDigest {
    use Algorithm::*;
    match a {
        HS256 | RS256 | ES256 | PS256 => MessageDigest::sha256(),
        HS384 | RS384 | ES384 | PS384 => MessageDigest::sha384(),
        HS512 | RS512 | ES512 | PS512 => MessageDigest::sha512(),
        EdDSA => MessageDigest::null(),
    }
}

/// Whether the signature holds (constant-time for secrets).
fn signature_ok(t: &Token, k: &ConsumerKey) -> bool {
    use Algorithm::*;
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        match (&k.key, k.algorithm) {
            (VerifyKey::Secret(secret), alg) => {
                let key = PKey::hmac(secret)?;
                let mut signer = openssl::sign::Signer::new(digest(alg), &key)?;
                let mac = signer.sign_oneshot_to_vec(t.signed.as_bytes())?;
                Ok(mac.len() == t.signature.len() && openssl::memcmp::eq(&mac, &t.signature))
            }
            (VerifyKey::Public(key), EdDSA) => {
                let mut v = Verifier::new_without_digest(key)?;
                v.verify_oneshot(&t.signature, t.signed.as_bytes())
            }
            (VerifyKey::Public(key), alg @ (ES256 | ES384 | ES512)) => {
                let half = match alg {
                    ES256 => 32,
                    ES384 => 48,
                    _ => 66,
                };
                if t.signature.len() != half * 2 {
                    return Ok(false);
                }
                let r = openssl::bn::BigNum::from_slice(&t.signature[..half])?;
                let s = openssl::bn::BigNum::from_slice(&t.signature[half..])?;
                let der = openssl::ecdsa::EcdsaSig::from_private_components(r, s)?.to_der()?;
                let mut v = Verifier::new(digest(alg), key)?;
                v.update(t.signed.as_bytes())?;
                v.verify(&der)
            }
            (VerifyKey::Public(key), alg) => {
                let mut v = Verifier::new(digest(alg), key)?;
                if matches!(alg, PS256 | PS384 | PS512) {
                    v.set_rsa_padding(Padding::PKCS1_PSS)?;
                    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                }
                v.update(t.signed.as_bytes())?;
                v.verify(&t.signature)
            }
        }
    };
    run().unwrap_or(false)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl JwtAuth {
    /// The token and where it came from (to hide it).
    fn find_token(&self, cx: &mut Cx<'_>) -> Option<String> {
        if let Some(h) = cx.header(&self.s.header).map(str::to_string) {
            if self.s.hide_credentials {
                cx.req_mut().remove_header(self.s.header.as_str());
            }
            let token = h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .unwrap_or(&h);
            return Some(token.to_string());
        }
        if let Some(q) = cx.query_arg(&self.s.query) {
            if self.s.hide_credentials {
                cx.remove_query_arg(&self.s.query);
            }
            return Some(q);
        }
        let cookie = cx.var(&format!("cookie_{}", self.s.cookie))?;
        if self.s.hide_credentials {
            let kept: Vec<String> = cx
                .req()
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != self.s.cookie)
                .map(str::to_string)
                .collect();
            let req = cx.req_mut();
            req.remove_header(&http::header::COOKIE);
            if !kept.is_empty() {
                let _ = req.insert_header(http::header::COOKIE, kept.join("; "));
            }
        }
        Some(cookie)
    }

    fn check(&self, cx: &mut Cx<'_>) -> Result<Arc<super::ConsumerMatch>, &'static str> {
        let token = self.find_token(cx).ok_or("Missing JWT token in request")?;
        let t = parse_token(&token).ok_or("JWT token invalid")?;
        let user_key = match t.payload.get(&self.s.key_claim_name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("missing user key in JWT token"),
        };
        let consumer = cx
            .state
            .consumers()
            .find("jwt-auth", &user_key)
            .cloned()
            .ok_or("Invalid user key in JWT token")?;
        let key = consumer
            .auth::<ConsumerKey>()
            .ok_or("failed to verify jwt")?;
        let alg = t.header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != format!("{:?}", key.algorithm) || !signature_ok(&t, key) {
            return Err("failed to verify jwt");
        }
        let now = now();
        let listed = self.s.claims_to_verify.as_deref().filter(|c| !c.is_empty());
        for claim in [Claim::Exp, Claim::Nbf] {
            let name = if claim == Claim::Exp { "exp" } else { "nbf" };
            let required = listed.is_some_and(|l| l.contains(&claim));
            let checked = listed.is_none() || required;
            match t.payload.get(name) {
                None if required => return Err("failed to verify jwt"),
                None => {}
                Some(_) if !checked => {}
                Some(v) => {
                    let v = v.as_f64().ok_or("failed to verify jwt")?;
                    let ok = match claim {
                        Claim::Exp => v > (now - key.grace) as f64,
                        Claim::Nbf => v < (now + key.grace) as f64,
                    };
                    if !ok {
                        return Err("failed to verify jwt");
                    }
                }
            }
        }
        Ok(consumer)
    }
}

impl Plugin for JwtAuth {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let checked = self.check(cx);
        let consumer = match checked.or_else(|why| {
            super::anonymous_or_refuse(
                cx.state.consumers(),
                self.s.anonymous_consumer.as_deref(),
                why,
                &self.www_authenticate,
            )
        }) {
            Ok(c) => c,
            Err(answer) => return Flow::Respond(answer),
        };
        cx.attach_consumer(consumer);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs256(payload: &Value, secret: &[u8]) -> String {
        let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let signed = format!(
            "{}.{}",
            e(br#"{"alg":"HS256","typ":"JWT"}"#),
            e(payload.to_string().as_bytes())
        );
        let key = PKey::hmac(secret).unwrap();
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &key).unwrap();
        format!(
            "{signed}.{}",
            e(&s.sign_oneshot_to_vec(signed.as_bytes()).unwrap())
        )
    }

    #[test]
    fn hmac_tokens_verify() {
        let c = consumer_key(&serde_json::json!({"key": "user-key", "secret": "my-secret-key"}))
            .unwrap();
        let k = c.data.downcast_ref::<ConsumerKey>().unwrap();
        let good = parse_token(&hs256(
            &serde_json::json!({"key": "user-key"}),
            b"my-secret-key",
        ))
        .unwrap();
        assert!(signature_ok(&good, k));
        let bad = parse_token(&hs256(&serde_json::json!({"key": "user-key"}), b"other")).unwrap();
        assert!(!signature_ok(&bad, k));
        assert!(parse_token("a.b").is_none());
        assert!(consumer_key(&serde_json::json!({"key": "k"})).is_err());
        assert!(consumer_key(&serde_json::json!({"key": "k", "algorithm": "RS256"})).is_err());
    }
}

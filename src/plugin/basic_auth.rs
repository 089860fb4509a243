//! `basic-auth`: a consumer is found by the user name of HTTP Basic authentication, and its
//! password checked.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::{parse_settings, ConsumerAuth, Cx, Factory, Flow, Plugin};

pub struct BasicAuthFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "default_realm")]
    realm: String,
    anonymous_consumer: Option<String>,
}

fn default_realm() -> String {
    "basic".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerSettings {
    username: String,
    password: String,
}

/// A consumer's password, checked after the user name found it.
struct Password(String);

struct BasicAuth {
    s: Settings,
    www_authenticate: String,
}

impl Factory for BasicAuthFactory {
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn priority(&self) -> i32 {
        2520
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        Ok(Arc::new(BasicAuth {
            www_authenticate: format!("Basic realm=\"{}\"", s.realm),
            s,
        }))
    }

    fn is_auth(&self) -> bool {
        true
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["password"]
    }

    fn consumer(&self, settings: &Value) -> Option<Result<ConsumerAuth, String>> {
        Some(
            parse_settings::<ConsumerSettings>(settings).map(|c| ConsumerAuth {
                lookup: c.username,
                data: Arc::new(Password(c.password)),
            }),
        )
    }
}

/// User name and password of an `Authorization: Basic …` value, as APISIX reads them: the
/// scheme in any case, whitespace removed, the password up to a second `:`.
fn credentials(header: &str) -> Option<(String, String)> {
    let lower = header.to_ascii_lowercase();
    let at = lower.find("basic")?;
    let rest = &header[at + 5..];
    if !rest.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    let encoded = rest.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let mut parts = decoded.split(':');
    let user = parts.next()?;
    let pass = parts.next()?;
    let clean = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    Some((clean(user), clean(pass)))
}

impl Plugin for BasicAuth {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let result = match cx.header("Authorization") {
            None => Err("Missing authorization in request"),
            Some(h) => match credentials(h) {
                None => Err("Invalid authorization in request"),
                Some((user, pass)) => match cx.state.consumers().find("basic-auth", &user) {
                    Some(c) if c.auth::<Password>().is_some_and(|p| p.0 == pass) => Ok(c.clone()),
                    _ => Err("Invalid user authorization"),
                },
            },
        };
        let consumer = match result.or_else(|why| {
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
        if self.s.hide_credentials {
            cx.req_mut().remove_header("Authorization");
        }
        cx.attach_consumer(consumer);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_credentials_as_apisix() {
        // foo:bar
        assert_eq!(
            credentials("Basic Zm9vOmJhcg=="),
            Some(("foo".into(), "bar".into()))
        );
        assert_eq!(
            credentials("bASiC Zm9vOmJhcg=="),
            Some(("foo".into(), "bar".into()))
        );
        // foo:bar:baz keeps "bar"
        assert_eq!(
            credentials("Basic Zm9vOmJhcjpiYXo="),
            Some(("foo".into(), "bar".into()))
        );
        assert_eq!(credentials("Basic YmFy"), None);
        assert_eq!(credentials("Bearer x"), None);
        assert_eq!(credentials("Basic aca_a"), None);
    }
}

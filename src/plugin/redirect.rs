//! `redirect`: answers with a redirect (a fixed or templated URI, a regex rewrite of the path,
//! or to HTTPS).

use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::proxy_rewrite::replacement;
use super::template::Template;
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct RedirectFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_code")]
    ret_code: u16,
    uri: Option<String>,
    regex_uri: Option<Vec<String>>,
    http_to_https: Option<bool>,
    #[serde(default)]
    encode_uri: bool,
    #[serde(default)]
    append_query_string: bool,
}

fn default_code() -> u16 {
    302
}

enum Target {
    Uri(Template),
    Regex(Regex, String),
    Https,
}

struct Redirect {
    target: Target,
    code: u16,
    encode_uri: bool,
    append_query_string: bool,
}

impl Factory for RedirectFactory {
    fn name(&self) -> &'static str {
        "redirect"
    }

    fn priority(&self) -> i32 {
        900
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        check_range("ret_code", s.ret_code, 200, Some(599))?;
        let given = [
            s.uri.is_some(),
            s.regex_uri.is_some(),
            s.http_to_https.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => return Err("value should match only one schema, but matches none".into()),
            1 => {}
            _ => return Err("value should match only one schema, but matches more than one: uri, regex_uri, http_to_https".into()),
        }
        if s.http_to_https == Some(true) && s.append_query_string {
            return Err(
                "only one of `http_to_https` and `append_query_string` can be configured.".into(),
            );
        }
        let target = if let Some(u) = &s.uri {
            if u.len() < 2 {
                return Err(
                    "property \"uri\" validation failed: string too short, expected at least 2"
                        .into(),
                );
            }
            Target::Uri(Template::parse(u))
        } else if let Some(r) = &s.regex_uri {
            if r.len() != 2 {
                return Err("property \"regex_uri\" validation failed: expect array to have exactly 2 items".into());
            }
            let re = Regex::new(&r[0])
                .map_err(|e| format!("invalid regex_uri ({}, {}), err:{e}", r[0], r[1]))?;
            Target::Regex(re, replacement(&r[1]))
        } else {
            // `http_to_https: false` alone does nothing.
            Target::Https
        };
        Ok(Arc::new(Redirect {
            target,
            code: s.ret_code,
            encode_uri: s.encode_uri,
            append_query_string: s.append_query_string,
        }))
    }
}

impl Plugin for Redirect {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let mut code = self.code;
        let mut uri = match &self.target {
            Target::Uri(t) => t.render(cx),
            Target::Regex(re, rep) => {
                let path = crate::vars::request::normalize_path(cx.req().uri.path()).into_owned();
                if !re.is_match(&path) {
                    // No match: the request goes on to the upstream.
                    return Flow::Continue;
                }
                re.replacen(&path, 1, rep.as_str()).into_owned()
            }
            Target::Https => {
                let scheme = cx
                    .header("X-Forwarded-Proto")
                    .map(str::to_string)
                    .or_else(|| cx.var("scheme"))
                    .unwrap_or_default();
                if scheme == "https" {
                    return Flow::Continue;
                }
                let host = cx.var("host").unwrap_or_default();
                let request_uri = cx.var("request_uri").unwrap_or_default();
                code = if matches!(cx.req().method, http::Method::GET | http::Method::HEAD) {
                    301
                } else {
                    308
                };
                // The gateway's HTTPS listener, as APISIX points at its own (no port for 443).
                match crate::net::https_port().filter(|p| *p != 443) {
                    Some(port) => format!("https://{host}:{port}{request_uri}"),
                    None => format!("https://{host}{request_uri}"),
                }
            }
        };
        if self.encode_uri {
            let (p, q) = uri
                .split_once('?')
                .map_or((uri.as_str(), None), |(p, q)| (p, Some(q)));
            let mut encoded = String::new();
            for b in p.bytes() {
                if b <= 0x20 || b == b'#' || b == b'%' || b == b'?' || b >= 0x7f {
                    encoded.push_str(&format!("%{b:02X}"));
                } else {
                    encoded.push(b as char);
                }
            }
            if let Some(q) = q {
                encoded.push('?');
                encoded.push_str(q);
            }
            uri = encoded;
        }
        if self.append_query_string {
            if let Some(q) = cx.req().uri.query().filter(|q| !q.is_empty()) {
                uri.push(if uri.contains('?') { '&' } else { '?' });
                uri.push_str(q);
            }
        }
        Flow::Respond(Answer::status(code).header("Location", uri))
    }
}

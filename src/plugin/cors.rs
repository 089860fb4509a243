//! `cors`: answers preflights itself and adds the CORS headers to every answer of the route
//! (also the gateway's own refusals), for the origins it allows.

use std::sync::Arc;

use pingora_http::ResponseHeader;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct CorsFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "star")]
    allow_origins: String,
    #[serde(default = "star")]
    allow_methods: String,
    #[serde(default = "star")]
    allow_headers: String,
    expose_headers: Option<String>,
    #[serde(default = "default_max_age")]
    max_age: i64,
    #[serde(default)]
    allow_credential: bool,
    allow_origins_by_regex: Option<Vec<String>>,
    timing_allow_origins: Option<String>,
    timing_allow_origins_by_regex: Option<Vec<String>>,
}

fn star() -> String {
    "*".into()
}

fn default_max_age() -> i64 {
    5
}

const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

struct Cors {
    s: Settings,
    max_age: String,
    by_regex: Option<Vec<Regex>>,
    timing_by_regex: Option<Vec<Regex>>,
    methods: String,
}

/// `*`, `**`, `null`, or a comma list of `scheme://host[:port]`.
fn valid_origins(v: &str) -> bool {
    v == "*"
        || v == "**"
        || v == "null"
        || v.split(',').all(|o| {
            o.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !rest.is_empty()
            })
        })
}

fn regexes(field: &str, list: &Option<Vec<String>>) -> Result<Option<Vec<Regex>>, String> {
    list.as_ref()
        .map(|l| {
            if l.is_empty() {
                return Err(format!(
                    "property \"{field}\" validation failed: expect array to have at least 1 items"
                ));
            }
            l.iter()
                .map(|p| {
                    Regex::new(p)
                        .map_err(|e| format!("property \"{field}\" validation failed: {e}"))
                })
                .collect()
        })
        .transpose()
}

impl Factory for CorsFactory {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn priority(&self) -> i32 {
        4000
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        for (field, v) in [
            ("allow_origins", Some(&s.allow_origins)),
            ("timing_allow_origins", s.timing_allow_origins.as_ref()),
        ] {
            if let Some(v) = v {
                if !valid_origins(v) {
                    return Err(format!(
                        "property \"{field}\" validation failed: failed to match pattern with {v:?}"
                    ));
                }
            }
        }
        if s.allow_credential {
            let stars = [
                Some(&s.allow_origins),
                Some(&s.allow_methods),
                Some(&s.allow_headers),
                s.expose_headers.as_ref(),
                s.timing_allow_origins.as_ref(),
            ];
            if stars.iter().flatten().any(|v| *v == "*") {
                return Err(
                    "you can not set '*' for other option when 'allow_credential' is true".into(),
                );
            }
        }
        Ok(Arc::new(Cors {
            max_age: s.max_age.to_string(),
            by_regex: regexes("allow_origins_by_regex", &s.allow_origins_by_regex)?,
            timing_by_regex: regexes(
                "timing_allow_origins_by_regex",
                &s.timing_allow_origins_by_regex,
            )?,
            methods: if s.allow_methods == "**" {
                ALL_METHODS.into()
            } else {
                s.allow_methods.clone()
            },
            s,
        }))
    }
}

/// The Origin, saved in rewrite (before any rewrite of the request headers).
struct Origin(Option<String>);

/// `**`: the request's origin (or `*`); a list: the origin if listed; else the value.
fn process(v: &str, origin: Option<&str>) -> Option<String> {
    if v == "**" {
        return Some(origin.unwrap_or("*").to_string());
    }
    if v.contains(',') {
        let o = origin?;
        return v.split(',').any(|x| x == o).then(|| o.to_string());
    }
    Some(v.to_string())
}

fn allowed(origin: Option<&str>, a: Option<&str>) -> bool {
    a == Some("*") || origin == a
}

impl Plugin for Cors {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let origin = cx.header("Origin").map(str::to_string);
        cx.state.set("cors.origin", Origin(origin));
        if cx.req().method == http::Method::OPTIONS {
            return Flow::Respond(Answer {
                status: 200,
                headers: Vec::new(),
                body: Some(bytes::Bytes::new()),
            });
        }
        Flow::Continue
    }

    fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        let origin = match cx.state.get::<Origin>("cors.origin") {
            Some(Origin(o)) => o.clone(),
            None => cx.header("Origin").map(str::to_string),
        };
        let origin = origin.as_deref();
        let a = match &self.by_regex {
            Some(rs) => origin
                .filter(|o| rs.iter().any(|r| r.is_match(o)))
                .map(str::to_string),
            None => process(&self.s.allow_origins, origin),
        };
        let a = a.filter(|a| allowed(origin, Some(a)));
        if self.s.allow_origins != "*" {
            resp.append_header("Vary", "Origin").ok();
        }
        if let Some(a) = a {
            let mut set = |k: &'static str, v: &str| {
                let _ = resp.insert_header(k, v);
            };
            set("Access-Control-Allow-Origin", &a);
            set("Access-Control-Allow-Methods", &self.methods);
            set("Access-Control-Max-Age", &self.max_age);
            if let Some(e) = self.s.expose_headers.as_deref().filter(|e| !e.is_empty()) {
                set("Access-Control-Expose-Headers", e);
            }
            if self.s.allow_headers == "**" {
                let asked = cx
                    .header("Access-Control-Request-Headers")
                    .map(str::to_string);
                if let Some(h) = asked {
                    let _ = resp.insert_header("Access-Control-Allow-Headers", h);
                }
            } else {
                let _ = resp.insert_header("Access-Control-Allow-Headers", &self.s.allow_headers);
            }
            if self.s.allow_credential {
                let _ = resp.insert_header("Access-Control-Allow-Credentials", "true");
            }
        }
        let timing = match (&self.timing_by_regex, &self.s.timing_allow_origins) {
            (Some(rs), _) => origin
                .filter(|o| rs.iter().any(|r| r.is_match(o)))
                .map(str::to_string),
            (None, Some(t)) => process(t, origin),
            (None, None) => None,
        };
        if let Some(t) = timing.filter(|t| allowed(origin, Some(t))) {
            let _ = resp.insert_header("Timing-Allow-Origin", t);
        }
    }
}

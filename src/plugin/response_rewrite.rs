//! `response-rewrite`: changes the status, headers or body of the answer (the upstream's or the
//! gateway's own), optionally only when a `vars` expression holds.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::proxy_rewrite::replacement;
use super::template::Template;
use super::{check_range, parse_settings, Cx, Factory, Plugin};
use crate::vars::Vars;

pub struct ResponseRewriteFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    regex: String,
    replace: String,
    #[serde(default = "default_scope")]
    scope: String,
    #[serde(default = "default_options")]
    options: String,
}

fn default_scope() -> String {
    "once".into()
}

fn default_options() -> String {
    "jo".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    status_code: Option<u16>,
    body: Option<String>,
    #[serde(default)]
    body_base64: bool,
    headers: Option<serde_json::Map<String, Value>>,
    vars: Option<Value>,
    filters: Option<Vec<Filter>>,
    #[serde(default = "default_max")]
    max_resp_body_size: usize,
}

fn default_max() -> usize {
    64 * 1024 * 1024
}

struct Compiled {
    regex: Regex,
    replace: String,
    global: bool,
}

#[derive(Default)]
struct Headers {
    add: Vec<(http::HeaderName, Template)>,
    set: Vec<(http::HeaderName, Template)>,
    remove: Vec<http::HeaderName>,
}

enum Body {
    Keep,
    Replace(Bytes),
    Filter(Vec<Compiled>, usize),
}

struct ResponseRewrite {
    status: Option<u16>,
    headers: Headers,
    vars: Option<Vars>,
    body: Body,
}

fn name(field: &str, n: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(n.trim().as_bytes())
        .map_err(|_| format!("property \"{field}\" validation failed: invalid header name {n:?}"))
}

fn value(field: &str, v: &Value) -> Result<Template, String> {
    match v {
        Value::String(s) => Ok(Template::parse(s)),
        Value::Number(n) => Ok(Template::parse(&n.to_string())),
        _ => Err(format!(
            "property \"{field}\" validation failed: invalid type as header value"
        )),
    }
}

fn parse_headers(map: &serde_json::Map<String, Value>) -> Result<Headers, String> {
    let mut h = Headers::default();
    let new_form = ["add", "set", "remove"]
        .iter()
        .any(|k| map.get(*k).is_some_and(|v| v.is_object() || v.is_array()));
    if !new_form {
        for (k, v) in map {
            h.set.push((name("headers", k)?, value("headers", v)?));
        }
        return Ok(h);
    }
    for (k, v) in map {
        match (k.as_str(), v) {
            ("add", Value::Array(items)) => {
                for item in items {
                    let line = item.as_str().unwrap_or_default();
                    let (n, v) = line.split_once(':').filter(|(_, v)| !v.contains(':')).ok_or_else(|| {
                        format!("property \"headers.add\" validation failed: {line:?} is not \"Name: value\"")
                    })?;
                    h.add
                        .push((name("headers.add", n)?, Template::parse(v.trim())));
                }
            }
            ("set", Value::Object(m)) => {
                for (n, v) in m {
                    h.set
                        .push((name("headers.set", n)?, value("headers.set", v)?));
                }
            }
            ("remove", Value::Array(items)) => {
                for n in items {
                    h.remove
                        .push(name("headers.remove", n.as_str().unwrap_or_default())?);
                }
            }
            _ => {
                return Err(
                    "property \"headers\" validation failed: object matches none of the required"
                        .into(),
                )
            }
        }
    }
    Ok(h)
}

impl Factory for ResponseRewriteFactory {
    fn name(&self) -> &'static str {
        "response-rewrite"
    }

    fn priority(&self) -> i32 {
        899
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if let Some(c) = s.status_code {
            check_range("status_code", c, 200, Some(598))?;
        }
        check_range("max_resp_body_size", s.max_resp_body_size, 1, None)?;
        let body = match (&s.body, &s.filters) {
            (Some(_), Some(_)) => {
                return Err("failed to validate dependent schema for \"filters|body\": value wasn't supposed to match schema".into())
            }
            (Some(b), None) => Body::Replace(if s.body_base64 {
                Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .ok()
                        .filter(|d| !d.is_empty())
                        .ok_or("invalid base64 content")?,
                )
            } else {
                Bytes::from(b.clone())
            }),
            (None, Some(filters)) => {
                if filters.is_empty() {
                    return Err("property \"filters\" validation failed: expect array to have at least 1 items".into());
                }
                let compiled = filters
                    .iter()
                    .map(|f| {
                        // ngx.re options: i, s, m, x change matching; j, o, u, d only how
                        // PCRE runs; anything else cannot be honoured.
                        let mut flags = String::new();
                        for c in f.options.chars() {
                            match c {
                                'i' | 's' | 'm' | 'x' => flags.push(c),
                                'j' | 'o' | 'u' | 'd' => {}
                                other => {
                                    return Err(format!(
                                        "property \"filters.options\": option {other:?} is not supported"
                                    ))
                                }
                            }
                        }
                        let pattern = if flags.is_empty() {
                            f.regex.clone()
                        } else {
                            format!("(?{flags}){}", f.regex)
                        };
                        Ok(Compiled {
                            regex: Regex::new(&pattern)
                                .map_err(|e| format!("regex \"{}\" validation failed: {e}", f.regex))?,
                            replace: replacement(&f.replace),
                            global: match f.scope.as_str() {
                                "once" => false,
                                "global" => true,
                                other => return Err(format!("property \"filters.scope\" validation failed: matches none of the enum values: {other:?}")),
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Body::Filter(compiled, s.max_resp_body_size)
            }
            (None, None) if s.body_base64 => return Err("invalid base64 content".into()),
            (None, None) => Body::Keep,
        };
        Ok(Arc::new(ResponseRewrite {
            status: s.status_code,
            headers: s
                .headers
                .as_ref()
                .map(parse_headers)
                .transpose()?
                .unwrap_or_default(),
            vars: s
                .vars
                .as_ref()
                .map(|v| {
                    Vars::parse(v).map_err(|e| format!("property \"vars\" validation failed: {e}"))
                })
                .transpose()?,
            body,
        }))
    }
}

/// Whether this response is rewritten (decided on the header, kept for the body).
struct Matched;
/// The body gathered for filters; `done` once the rewritten body went out.
struct Gathered {
    bytes: Vec<u8>,
    done: bool,
}

impl ResponseRewrite {
    /// This instance, for its per-request state (a global rule and a route may both have one).
    fn instance(&self) -> usize {
        self as *const Self as usize
    }
}

impl Plugin for ResponseRewrite {
    /// A body to rewrite must come uncompressed: the upstream is asked for no encoding.
    fn before_proxy(&self, _cx: &mut Cx<'_>, up: &mut pingora_http::RequestHeader) {
        if !matches!(self.body, Body::Keep) {
            up.remove_header(&http::header::ACCEPT_ENCODING);
        }
    }

    fn header_filter(&self, cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        let status = resp.status.as_u16().to_string();
        if let Some(v) = &self.vars {
            let ok = cx.with_vars(|vars| {
                struct WithStatus<'a>(&'a dyn crate::vars::VarLookup, &'a str);
                impl crate::vars::VarLookup for WithStatus<'_> {
                    fn var(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
                        if name == "status" {
                            return Some(std::borrow::Cow::Borrowed(self.1));
                        }
                        self.0.var(name)
                    }
                }
                v.matches(&WithStatus(vars, &status))
            });
            if !ok {
                return;
            }
        }
        cx.state.set_at(MATCHED, self.instance(), Matched);
        if let Some(code) = self.status {
            let _ = resp.set_status(code);
        }
        if !matches!(self.body, Body::Keep) {
            for h in [
                http::header::CONTENT_LENGTH,
                http::header::CONTENT_ENCODING,
                http::header::LAST_MODIFIED,
                http::header::ETAG,
            ] {
                resp.remove_header(&h);
            }
            if resp.version == http::Version::HTTP_11 {
                let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
            }
        }
        for (n, t) in &self.headers.add {
            let v = t.render(cx);
            let _ = resp.append_header(n.clone(), v);
        }
        for (n, t) in &self.headers.set {
            let v = t.render(cx);
            resp.remove_header(n);
            if !v.is_empty() {
                let _ = resp.insert_header(n.clone(), v);
            }
        }
        for n in &self.headers.remove {
            resp.remove_header(n);
        }
    }

    fn body_filter(&self, cx: &mut Cx<'_>, body: &mut Option<Bytes>, end: bool) {
        if cx
            .state
            .get_at::<Matched>(MATCHED, self.instance())
            .is_none()
        {
            return;
        }
        match &self.body {
            Body::Keep => {}
            Body::Replace(b) => {
                // The first piece becomes the body; the rest of the upstream's is dropped.
                match cx.state.get_mut_at::<Gathered>(GATHERED, self.instance()) {
                    Some(_) => *body = None,
                    None => {
                        cx.state.set_at(
                            GATHERED,
                            self.instance(),
                            Gathered {
                                bytes: Vec::new(),
                                done: true,
                            },
                        );
                        *body = Some(b.clone());
                    }
                }
            }
            Body::Filter(filters, max) => {
                if cx
                    .state
                    .get_at::<Gathered>(GATHERED, self.instance())
                    .is_none()
                {
                    cx.state.set_at(
                        GATHERED,
                        self.instance(),
                        Gathered {
                            bytes: Vec::new(),
                            done: false,
                        },
                    );
                }
                let Some(g) = cx.state.get_mut_at::<Gathered>(GATHERED, self.instance()) else {
                    return;
                };
                let piece = body.take();
                if g.done {
                    return;
                }
                if let Some(b) = piece {
                    let room = max.saturating_sub(g.bytes.len());
                    g.bytes.extend_from_slice(&b[..b.len().min(room)]);
                }
                if !end && g.bytes.len() < *max {
                    return;
                }
                g.done = true;
                let mut text = String::from_utf8_lossy(&std::mem::take(&mut g.bytes)).into_owned();
                for f in filters {
                    text = if f.global {
                        f.regex.replace_all(&text, f.replace.as_str()).into_owned()
                    } else {
                        f.regex.replacen(&text, 1, f.replace.as_str()).into_owned()
                    };
                }
                *body = Some(Bytes::from(text));
            }
        }
    }
}

const GATHERED: &str = "response-rewrite.body";
const MATCHED: &str = "response-rewrite.matched";

//! `proxy-rewrite`: changes what the upstream gets (path, host, method, headers).

use std::sync::Arc;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::template::Template;
use super::{parse_settings, Cx, Factory, Flow, Plugin};

pub struct ProxyRewriteFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    uri: Option<String>,
    method: Option<String>,
    regex_uri: Option<Vec<String>>,
    host: Option<String>,
    headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    use_real_request_uri_unsafe: bool,
}

const METHODS: [&str; 14] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND", "LOCK",
    "UNLOCK", "PATCH", "TRACE",
];

/// A header value: text with variables (and `$1`-style regex_uri captures).
type Values = Vec<Template>;

#[derive(Default)]
struct Headers {
    add: Vec<(http::HeaderName, Values)>,
    set: Vec<(http::HeaderName, Values)>,
    remove: Vec<http::HeaderName>,
}

struct ProxyRewrite {
    /// The path template, split at a `?` of the template itself.
    uri: Option<(Template, Option<Template>)>,
    regex_uri: Vec<(Regex, String)>,
    host: Option<String>,
    method: Option<http::Method>,
    headers: Headers,
    unsafe_uri: bool,
}

fn header_name(field: &str, name: &str) -> Result<http::HeaderName, String> {
    if name.is_empty() || name.contains(':') {
        return Err(format!(
            "property \"{field}\" validation failed: invalid field length in header"
        ));
    }
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!(
            "property \"{field}\" validation failed: invalid field character in header {name:?}"
        )
    })
}

fn header_values(field: &str, v: &Value) -> Result<Values, String> {
    let one = |v: &Value| match v {
        Value::String(s) => {
            if s.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                Err(format!(
                    "property \"{field}\" validation failed: invalid value character in header"
                ))
            } else {
                Ok(Template::parse(s))
            }
        }
        Value::Number(n) => Ok(Template::parse(&n.to_string())),
        _ => Err(format!(
            "property \"{field}\" validation failed: invalid type as header value"
        )),
    };
    match v {
        Value::Array(a) if !a.is_empty() => a.iter().map(one).collect(),
        Value::Array(_) => Err(format!(
            "property \"{field}\" validation failed: expect array to have at least 1 items"
        )),
        v => Ok(vec![one(v)?]),
    }
}

fn parse_headers(map: &serde_json::Map<String, Value>) -> Result<Headers, String> {
    let mut h = Headers::default();
    let new_form = ["add", "set", "remove"]
        .iter()
        .any(|k| map.get(*k).is_some_and(|v| v.is_object() || v.is_array()));
    if !new_form {
        for (k, v) in map {
            h.set
                .push((header_name("headers", k)?, header_values("headers", v)?));
        }
        return Ok(h);
    }
    for (k, v) in map {
        match (k.as_str(), v) {
            ("add" | "set", Value::Object(m)) => {
                let field = format!("headers.{k}");
                for (name, val) in m {
                    let entry = (header_name(&field, name)?, header_values(&field, val)?);
                    if k == "add" {
                        h.add.push(entry);
                    } else {
                        h.set.push(entry);
                    }
                }
            }
            ("remove", Value::Array(names)) => {
                for n in names {
                    let n = n.as_str().ok_or(
                        "property \"headers.remove\" validation failed: wrong type: expected string",
                    )?;
                    h.remove.push(header_name("headers.remove", n)?);
                }
            }
            (other, _) => {
                return Err(format!(
                    "property \"headers\" validation failed: {other:?}: expected add, set or remove"
                ))
            }
        }
    }
    Ok(h)
}

impl Factory for ProxyRewriteFactory {
    fn name(&self) -> &'static str {
        "proxy-rewrite"
    }

    fn priority(&self) -> i32 {
        1008
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if settings
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k == "_meta"))
        {
            return Err("expect object to have at least 1 properties".into());
        }
        let uri = match &s.uri {
            Some(u) if !u.starts_with('/') => {
                return Err(format!(
                    "property \"uri\" validation failed: failed to match pattern \"^\\\\/.*\" with {u:?}"
                ))
            }
            Some(u) => Some(match u.split_once('?') {
                Some((p, q)) => (Template::parse(p), Some(Template::parse(q))),
                None => (Template::parse(u), None),
            }),
            None => None,
        };
        let mut regex_uri = Vec::new();
        if let Some(list) = &s.regex_uri {
            if list.len() < 2 || list.len() % 2 != 0 {
                return Err("The length of regex_uri should be an even number".into());
            }
            for pair in list.chunks(2) {
                let re = Regex::new(&pair[0])
                    .map_err(|e| format!("invalid regex_uri({}, {}): {e}", pair[0], pair[1]))?;
                regex_uri.push((re, pair[1].clone()));
            }
        }
        if let Some(h) = &s.host {
            let (name, port) = h
                .rsplit_once(':')
                .map_or((h.as_str(), None), |(n, p)| (n, Some(p)));
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && port.is_none_or(|p| {
                    (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
                });
            if !ok {
                return Err(format!(
                    "property \"host\" validation failed: invalid host {h:?}"
                ));
            }
        }
        let method = match &s.method {
            Some(m) if METHODS.contains(&m.as_str()) => m.parse::<http::Method>().ok(),
            Some(_) => {
                return Err(
                    "property \"method\" validation failed: matches none of the enum values".into(),
                )
            }
            None => None,
        };
        Ok(Arc::new(ProxyRewrite {
            uri,
            regex_uri,
            host: s.host,
            method,
            headers: s
                .headers
                .as_ref()
                .map(parse_headers)
                .transpose()?
                .unwrap_or_default(),
            unsafe_uri: s.use_real_request_uri_unsafe,
        }))
    }
}

/// nginx's `ngx_escape_uri` for a path: controls, space, `#`, `%`, `?`, DEL and non-ASCII.
fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= 0x20 || b == b'#' || b == b'%' || b == b'?' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Only control characters, for a query.
fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b < 0x20 || b == 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A regex_uri replacement (`$0`, `$1`, `${1}`, `$$`, as nginx's `ngx.re.sub`) in the regex
/// crate's syntax, where `$1_` would name a group `1_`: each `$N` becomes `${N}`.
pub(super) fn replacement(r: &str) -> String {
    let mut out = String::with_capacity(r.len() + 4);
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some(d) if d.is_ascii_digit() => {
                out.push_str("${");
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    out.push(*d);
                    chars.next();
                }
                out.push('}');
            }
            Some('$') => {
                chars.next();
                out.push_str("$$");
            }
            Some('{') => out.push('$'),
            // A lone `$` is literal.
            _ => out.push_str("$$"),
        }
    }
    out
}

impl Plugin for ProxyRewrite {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let mut captures: Vec<Option<String>> = Vec::new();
        let base = if self.unsafe_uri {
            cx.req()
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default()
        } else {
            crate::vars::request::normalize_path(cx.req().uri.path()).into_owned()
        };
        let query = if self.unsafe_uri {
            None
        } else {
            cx.req().uri.query().map(str::to_string)
        };
        let new_path: Option<String> = if let Some((path, q)) = &self.uri {
            let p = path.render(cx);
            let mut out = if self.unsafe_uri { p } else { escape_path(&p) };
            if let Some(q) = q {
                out.push('?');
                out.push_str(&escape_controls(&q.render(cx)));
            }
            Some(out)
        } else {
            let mut found = None;
            for (re, rep) in &self.regex_uri {
                if let Some(c) = re.captures(&base) {
                    captures = c
                        .iter()
                        .map(|m| m.map(|m| m.as_str().to_string()))
                        .collect();
                    let replaced = re
                        .replacen(&base, 1, replacement(rep).as_str())
                        .into_owned();
                    found = Some(if self.unsafe_uri {
                        replaced
                    } else {
                        match replaced.split_once('?') {
                            Some((p, q)) if !base.contains('?') => {
                                format!("{}?{}", escape_path(p), escape_controls(q))
                            }
                            _ => escape_path(&replaced),
                        }
                    });
                    break;
                }
            }
            found
        };
        if let Some(mut uri) = new_path {
            if let Some(q) = &query {
                uri.push(if uri.contains('?') { '&' } else { '?' });
                uri.push_str(q);
            }
            cx.set_uri(&uri);
        }
        if let Some(h) = &self.host {
            let _ = cx.req_mut().insert_header(http::header::HOST, h.as_str());
        }
        if let Some(m) = &self.method {
            cx.req_mut().set_method(m.clone());
        }
        let render = |cx: &Cx<'_>, t: &Template| {
            t.render_with(|name| {
                if let Ok(i) = name.parse::<usize>() {
                    return Some(captures.get(i).cloned().flatten().unwrap_or_default());
                }
                cx.var(name)
            })
        };
        for (name, values) in &self.headers.add {
            for v in values {
                let v = render(cx, v);
                let _ = cx.req_mut().append_header(name.clone(), v.as_str());
            }
        }
        for (name, values) in &self.headers.set {
            let rendered: Vec<String> = values.iter().map(|v| render(cx, v)).collect();
            let req = cx.req_mut();
            req.remove_header(name);
            for v in rendered.iter().filter(|v| !v.is_empty()) {
                let _ = req.append_header(name.clone(), v.as_str());
            }
        }
        for name in &self.headers.remove {
            cx.req_mut().remove_header(name);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_as_nginx() {
        let re = Regex::new("^/test/(.*)/(.*)/(.*)").unwrap();
        let r = replacement("/$1_$2_$3");
        assert_eq!(
            re.replacen("/test/plugin/proxy/rewrite", 1, r.as_str()),
            "/plugin_proxy_rewrite"
        );
        assert_eq!(replacement("a$"), "a$$");
    }

    #[test]
    fn escapes_like_nginx() {
        assert_eq!(escape_path("/a b?c%"), "/a%20b%3Fc%25");
        assert_eq!(escape_controls("a=1&b=\r"), "a=1&b=%0D");
    }

    #[test]
    fn settings_are_checked() {
        let f = ProxyRewriteFactory;
        assert!(f.build(&serde_json::json!({"uri": "home"})).is_err());
        assert!(f.build(&serde_json::json!({"regex_uri": ["^/a"]})).is_err());
        assert!(f
            .build(&serde_json::json!({"regex_uri": ["(", "/"]}))
            .is_err());
        assert!(f.build(&serde_json::json!({"method": "FETCH"})).is_err());
        assert!(f.build(&serde_json::json!({})).is_err());
        assert!(f
            .build(&serde_json::json!({"headers": {"add": {"a": "1"}, "set": {"b": ["1", 2]}, "remove": ["c"]}}))
            .is_ok());
    }
}

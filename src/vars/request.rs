//! What the router and `vars` see of a downstream request.

use std::borrow::Cow;
use std::net::IpAddr;

use pingora_http::RequestHeader;

use crate::vars::VarLookup;

/// Decodes `%XX` (leaving invalid escapes as they are), then resolves `.`/`..` segments and
/// merges repeated slashes, as nginx does for `$uri`. Borrows when there is nothing to do.
pub fn normalize_path(raw: &str) -> Cow<'_, str> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let needs_work = path.contains('%') || path.contains("//") || path.contains("/.");
    if !needs_work {
        return if path.is_empty() {
            Cow::Borrowed("/")
        } else {
            Cow::Borrowed(path)
        };
    }
    let decoded = percent_decode(path);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() || (decoded.ends_with('/') && !out.is_empty()) {
        result.push('/');
    }
    Cow::Owned(result)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` → byte; `+` is kept (it is a space only in form bodies and query strings).
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The request's host: the Host header (or the URI's authority), without port, lowercased.
pub fn request_host(req: &RequestHeader) -> Option<Cow<'_, str>> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())?;
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    // `example.com.` is `example.com`.
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// APISIX variables of one request.
pub struct RequestVars<'a> {
    pub req: &'a RequestHeader,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub server_port: Option<u16>,
    pub scheme: &'static str,
}

fn find_pair<'q>(list: &'q str, sep: char, name: &str) -> Option<&'q str> {
    list.split(sep).find_map(|pair| {
        let pair = pair.trim_start();
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

impl VarLookup for RequestVars<'_> {
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "uri" => return Some(Cow::Borrowed(self.path)),
            "host" => return self.host.map(Cow::Borrowed),
            "remote_addr" => return self.client_ip.map(|ip| Cow::Owned(ip.to_string())),
            "request_method" => return Some(Cow::Borrowed(self.req.method.as_str())),
            "scheme" => return Some(Cow::Borrowed(self.scheme)),
            "server_port" => return self.server_port.map(|p| Cow::Owned(p.to_string())),
            "request_uri" => {
                return self
                    .req
                    .uri
                    .path_and_query()
                    .map(|pq| Cow::Borrowed(pq.as_str()))
            }
            "query_string" | "args" => return self.req.uri.query().map(Cow::Borrowed),
            _ => {}
        }
        if let Some(header) = name.strip_prefix("http_") {
            // http_x_api_key → x-api-key
            let wanted = header.replace('_', "-");
            return self
                .req
                .headers
                .get(wanted.as_str())
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed);
        }
        if let Some(cookie) = name.strip_prefix("cookie_") {
            return self
                .req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|list| find_pair(list, ';', cookie))
                .map(Cow::Borrowed);
        }
        if let Some(arg) = name.strip_prefix("arg_") {
            let query = self.req.uri.query()?;
            let value = find_pair(query, '&', arg)?;
            return Some(if value.contains('+') {
                Cow::Owned(percent_decode(&value.replace('+', " ")).into_owned())
            } else {
                percent_decode(value)
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_nginx() {
        assert_eq!(normalize_path("/a/b?x=1"), "/a/b");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(normalize_path("/a/b/"), "/a/b/");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/hello%20world"), "/hello world");
        assert_eq!(normalize_path("/bad%zz"), "/bad%zz");
        assert_eq!(normalize_path("/end%2"), "/end%2");
        assert!(matches!(normalize_path("/plain/path"), Cow::Borrowed(_)));
    }

    #[test]
    fn variables() {
        let mut req = RequestHeader::build("GET", b"/p?a=1&b=x+y&c=%41", None).unwrap();
        req.insert_header("Host", "Example.COM:8080").unwrap();
        req.insert_header("X-Api-Key", "k").unwrap();
        req.insert_header("Cookie", "s=1; theme=dark").unwrap();
        let host = request_host(&req).unwrap();
        assert_eq!(host, "example.com");
        let vars = RequestVars {
            req: &req,
            path: "/p",
            host: Some(&host),
            client_ip: "10.0.0.1".parse().ok(),
            server_port: Some(9080),
            scheme: "http",
        };
        let v = |n: &str| vars.var(n).map(|c| c.into_owned());
        assert_eq!(v("arg_a").as_deref(), Some("1"));
        assert_eq!(v("arg_b").as_deref(), Some("x y"));
        assert_eq!(v("arg_c").as_deref(), Some("A"));
        assert_eq!(v("arg_z"), None);
        assert_eq!(v("http_x_api_key").as_deref(), Some("k"));
        assert_eq!(v("cookie_theme").as_deref(), Some("dark"));
        assert_eq!(v("remote_addr").as_deref(), Some("10.0.0.1"));
        assert_eq!(v("request_method").as_deref(), Some("GET"));
        assert_eq!(v("host").as_deref(), Some("example.com"));
    }
}

//! The end of a request: what the log phase sees ([`Finished`]), and the metrics the
//! `prometheus` plugin asked for, recorded once after every plugin's log phase.

use std::time::Instant;

use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::Ctx;
use crate::metrics::HttpSample;
use crate::plugin::{Chain, Finished};

/// The bytes of a request header as it came (request line, fields, blank line).
pub fn request_header_len(req: &RequestHeader) -> u64 {
    let line = req.method.as_str().len()
        + 1
        + req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len();
    (line + fields_len(&req.headers) + 2) as u64
}

/// The bytes of a response header as written.
pub fn response_header_len(resp: &ResponseHeader) -> u64 {
    let line = "HTTP/1.1 200 ".len() + resp.status.canonical_reason().map_or(0, str::len) + 2;
    (line + fields_len(&resp.headers) + 2) as u64
}

fn fields_len(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum()
}

/// Fills in what the log phase reads about the request (taking the request's details).
pub fn finished(session: &Session, ctx: &mut Ctx) -> Finished {
    let now = Instant::now();
    let started = ctx.started.unwrap_or(now);
    let details = ctx.details.take();
    let body_bytes_sent = session.body_bytes_sent() as u64;
    let mut done = Finished {
        latency: now.saturating_duration_since(started),
        upstream_latency: ctx.first_try.map(|t| {
            ctx.upstream_done
                .unwrap_or(now)
                .saturating_duration_since(t)
        }),
        node: ctx.node_addr,
        request_bytes: ctx.request_header_bytes + session.body_bytes_read() as u64,
        response_bytes: ctx.response_header_bytes + body_bytes_sent,
        body_bytes_sent,
        from_upstream: ctx.from_upstream,
        upstream_scheme: match ctx.target.as_ref() {
            Some(t) if t.upstream.scheme.is_tls() => "https",
            _ => "http",
        },
        ..Finished::default()
    };
    if let Some(d) = details {
        let d = *d;
        done.start_time = Some(d.start_time);
        done.method = d.method;
        done.request_uri = d.uri;
        done.version = d.version;
        done.upstream_host = d.upstream_host;
        done.upstream_uri = d.upstream_uri;
    } else {
        let req = session.req_header();
        done.method = req.method.clone();
        done.version = req.version;
    }
    done
}

/// Records the request in the metrics if a `prometheus` plugin asked for it. Every label is
/// borrowed from the route's chain or written on the stack: nothing is allocated.
pub fn count(ctx: &Ctx) {
    let (Some(how), Some(done)) = (ctx.plugins.count_metrics, &ctx.plugins.finished) else {
        return;
    };
    let chain: Option<&Chain> = ctx.plugins.route.as_deref();
    let route = chain.map_or("", |c| named(how.prefer_name, &c.route_name, &c.route_id));
    let service = chain.map_or("", |c| {
        named(how.prefer_name, &c.service_name, &c.service_id)
    });
    let (uri, host) = ctx.plugins.matched;
    let matched_uri = at(chain.map(|c| &*c.uris), uri);
    let matched_host = at(chain.map(|c| &*c.hosts), host);
    let mut ip = [0u8; 48];
    let node = done.node.map_or("", |a| ip_text(a.ip(), &mut ip));
    let source = done.response_source();
    let consumer = ctx
        .plugins
        .consumer
        .as_ref()
        .map_or("", |c| c.username.as_str());
    crate::metrics::record(&HttpSample {
        code: ctx.plugins.status,
        route,
        matched_uri,
        matched_host,
        service,
        consumer,
        node,
        source,
        latency_ms: done.latency.as_secs_f64() * 1000.0,
        upstream_ms: done.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
        request_bytes: done.request_bytes,
        response_bytes: done.response_bytes,
    });
}

/// The `i`-th of `list`, or "".
fn at(list: Option<&[String]>, i: Option<u16>) -> &str {
    list.zip(i)
        .and_then(|(l, i)| l.get(usize::from(i)))
        .map_or("", String::as_str)
}

/// The name with `prefer_name` when there is one, else the id.
fn named<'a>(
    prefer_name: bool,
    name: &'a Option<std::sync::Arc<str>>,
    id: &'a Option<String>,
) -> &'a str {
    match name {
        Some(n) if prefer_name => n,
        _ => id.as_deref().unwrap_or_default(),
    }
}

/// An IP address as text, in `buf` (IPv4 without core::fmt, which costs a request about a
/// thousand instructions).
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> &str {
    use std::io::Write as _;
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut at = 0;
            let mut digits = itoa::Buffer::new();
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                let d = digits.format(*o).as_bytes();
                buf[at..at + d.len()].copy_from_slice(d);
                at += d.len();
            }
            at
        }
        std::net::IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// Which of `uris` and `hosts` took a request for `path` on `host` (the longest prefix, as
/// the router prefers it).
pub fn matched(
    uris: &[String],
    hosts: &[String],
    path: &str,
    host: Option<&str>,
) -> (Option<u16>, Option<u16>) {
    let uri = uris
        .iter()
        .enumerate()
        .filter(|(_, u)| match u.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => u.as_str() == path,
        })
        .max_by_key(|(_, u)| (!u.ends_with('*'), u.len()))
        .and_then(|(i, _)| u16::try_from(i).ok());
    let host = host.and_then(|h| {
        hosts
            .iter()
            .position(|p| match p.strip_prefix('*') {
                Some(suffix) => h.ends_with(suffix),
                None => p == h,
            })
            .and_then(|i| u16::try_from(i).ok())
    });
    (uri, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_that_took_the_request() {
        let uris = vec!["/foo*".to_string(), "/foo/bar".into(), "/f*".into()];
        let hosts = vec!["a.com".to_string(), "*.b.com".into()];
        assert_eq!(
            matched(&uris, &hosts, "/foo/bar", Some("x.b.com")),
            (Some(1), Some(1))
        );
        assert_eq!(
            matched(&uris, &hosts, "/foo/baz", Some("a.com")),
            (Some(0), Some(0))
        );
        assert_eq!(matched(&uris, &hosts, "/fx", None), (Some(2), None));
        assert_eq!(matched(&[], &[], "/", None), (None, None));
    }

    #[test]
    fn addresses_as_text() {
        let mut buf = [0u8; 48];
        for ip in [
            "255.255.255.255",
            "0.0.0.0",
            "10.1.20.3",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            assert_eq!(ip_text(ip.parse().unwrap(), &mut buf), ip);
        }
    }
}

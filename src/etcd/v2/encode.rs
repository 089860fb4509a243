//! Percent-encoding for v2 paths, query strings and form bodies.

use std::fmt::Write;

fn escape(out: &mut String, s: &str, keep_slash: bool) {
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A key as a URL path: every byte but unreserved characters and `/` escaped, so spaces,
/// `%`, `?`, `#` and non-ASCII names reach etcd as they are.
pub fn path(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    if !key.starts_with('/') {
        out.push('/');
    }
    escape(&mut out, key, true);
    out
}

fn pairs(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        escape(&mut out, name, false);
        out.push('=');
        escape(&mut out, value, false);
    }
    out
}

/// `?a=b&c=d`, or nothing.
pub fn query(q: &[(&str, String)]) -> String {
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs(q))
    }
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(f: &[(&str, String)]) -> String {
    pairs(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_awkward_keys_and_values() {
        assert_eq!(path("/a b/%?#/é"), "/a%20b/%25%3F%23/%C3%A9");
        assert_eq!(path("message"), "/message");
        assert_eq!(
            form(&[("value", "a&b=c +".into()), ("ttl", String::new())]),
            "value=a%26b%3Dc%20%2B&ttl="
        );
        assert_eq!(query(&[]), "");
        assert_eq!(query(&[("wait", "true".into())]), "?wait=true");
    }
}

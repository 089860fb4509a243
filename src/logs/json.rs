//! A JSON object writer for log entries, written on the request's thread: straight into one
//! buffer sized for a typical entry, strings copied whole unless they hold a character JSON
//! must escape, numbers by serde_json's own formatters. serde's generic serializer cost about
//! 14,000 instructions per http-logger entry (`examples/instr_bench.sh`).

use std::fmt::Write as _;

/// Writes one JSON value, objects nested by [`Json::open`] and [`Json::close`].
pub struct Json {
    out: String,
    /// No member written yet in the innermost open object or array.
    first: bool,
}

impl Json {
    pub fn with_capacity(n: usize) -> Json {
        Json {
            out: String::with_capacity(n),
            first: true,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn comma(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }

    /// `{` as a value (top level or after [`Json::key`]).
    pub fn open(&mut self) {
        self.out.push('{');
        self.first = true;
    }

    pub fn close(&mut self) {
        self.out.push('}');
        self.first = false;
    }

    /// A member's name that needs no escaping (the entry's own names, header names: HTTP
    /// tokens have no quote, backslash or control character); its value follows.
    pub fn key(&mut self, k: &str) {
        self.comma();
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    /// A member's name from outside (a query argument), escaped.
    pub fn key_escaped(&mut self, k: &str) {
        self.comma();
        string(&mut self.out, k);
        self.out.push(':');
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        string(&mut self.out, v);
    }

    /// A string value (after [`Json::key_escaped`]).
    pub fn value_str(&mut self, v: &str) {
        string(&mut self.out, v);
    }

    /// A member whose string value is `parts` one after the other (a URL).
    pub fn concat(&mut self, k: &str, parts: &[&str]) {
        self.key(k);
        self.out.push('"');
        for p in parts {
            escaped(&mut self.out, p);
        }
        self.out.push('"');
    }

    pub fn u64(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.push_str(itoa::Buffer::new().format(v));
    }

    /// The shortest text that reads back as `v` (no `NaN` or infinity: `null`).
    pub fn f64(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            self.out.push_str(zmij::Buffer::new().format_finite(v));
        } else {
            self.out.push_str("null");
        }
    }

    pub fn null(&mut self, k: &str) {
        self.key(k);
        self.out.push_str("null");
    }

    /// An address as text: `1.2.3.4`, `::1`; with a port, `1.2.3.4:80`, `[::1]:80`.
    pub fn addr(&mut self, k: &str, ip: std::net::IpAddr, port: Option<u16>) {
        self.key(k);
        self.out.push('"');
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut b = itoa::Buffer::new();
                for (i, o) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        self.out.push('.');
                    }
                    self.out.push_str(b.format(*o));
                }
            }
            std::net::IpAddr::V6(v6) if port.is_some() => {
                let _ = write!(self.out, "[{v6}]");
            }
            std::net::IpAddr::V6(v6) => {
                let _ = write!(self.out, "{v6}");
            }
        }
        if let Some(p) = port {
            self.out.push(':');
            self.out.push_str(itoa::Buffer::new().format(p));
        }
        self.out.push('"');
    }

    /// A member holding a list of strings.
    pub fn strs<'a>(&mut self, k: &str, vs: impl IntoIterator<Item = &'a str>) {
        self.key(k);
        self.value_strs(vs);
    }

    /// A list of strings as a value (after [`Json::key_escaped`]).
    pub fn value_strs<'a>(&mut self, vs: impl IntoIterator<Item = &'a str>) {
        self.out.push('[');
        for (i, v) in vs.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            string(&mut self.out, v);
        }
        self.out.push(']');
    }
}

/// Whether a byte must be escaped in a JSON string.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn string(out: &mut String, s: &str) {
    out.push('"');
    escaped(out, s);
    out.push('"');
}

/// `s`'s characters as they go between a JSON string's quotes.
fn escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(|&b| needs_escape(b)) else {
        out.push_str(s);
        return;
    };
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        if !needs_escape(b) {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_serde_json_would_write() {
        let mut j = Json::with_capacity(16);
        j.open();
        j.str("a", "plain");
        j.str("esc", "q\"b\\n\n\r\t\u{8}\u{c}\u{1}é");
        j.u64("n", 42);
        j.f64("f", 1.5);
        j.f64("nan", f64::NAN);
        j.key("o");
        j.open();
        j.strs("l", ["x", "y"]);
        j.close();
        j.key("empty");
        j.open();
        j.close();
        j.addr("ip", std::net::Ipv4Addr::LOCALHOST.into(), None);
        j.addr("node", std::net::Ipv6Addr::LOCALHOST.into(), Some(80));
        j.concat("url", &["http", "://", "h\"", "/p"]);
        j.key_escaped("a\"b");
        j.open();
        j.close();
        j.close();
        let text = j.finish();
        let expected = serde_json::json!({
            "a": "plain", "esc": "q\"b\\n\n\r\t\u{8}\u{c}\u{1}é", "n": 42, "f": 1.5,
            "nan": null, "o": {"l": ["x", "y"]}, "empty": {}, "ip": "127.0.0.1",
            "node": "[::1]:80", "url": "http://h\"/p", "a\"b": {}
        });
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            expected
        );
        assert!(
            text.contains(r#""esc":"q\"b\\n\n\r\t\b\f\u0001é""#),
            "{text}"
        );
    }
}

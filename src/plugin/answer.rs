//! An answer the gateway writes itself (a refusal, a redirect, a preflight, a mock). The proxy
//! renders it in one place (`proxy/respond.rs`), after the header filters ran on it.

use bytes::Bytes;

/// Status, extra headers and body of an answer the gateway writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// `None`: nginx's own page for the status, as APISIX answers `core.response.exit(code)`.
    pub body: Option<Bytes>,
}

impl Answer {
    /// Just a status; the body is nginx's page for it.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    /// `{"message": …}`, as APISIX's plugins answer refusals (JSON and a newline, sent as
    /// nginx's default type, `text/plain`, exactly as APISIX does).
    pub fn message(status: u16, message: &str) -> Answer {
        Answer::encoded(status, &serde_json::json!({ "message": message }))
    }

    /// `{"error_msg": …}`, as APISIX answers for its own errors (no route, no upstream).
    pub fn error_msg(status: u16, message: &str) -> Answer {
        Answer::encoded(status, &serde_json::json!({ "error_msg": message }))
    }

    /// A table body as APISIX's `core.response.exit` encodes it.
    pub fn encoded(status: u16, value: &serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Some(Bytes::from(format!("{value}\n"))),
        }
    }

    /// A JSON body, typed as such.
    pub fn json(status: u16, value: &serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some(Bytes::from(value.to_string())),
        }
    }

    /// A body as given (`text/plain` unless a header says otherwise).
    pub fn text(status: u16, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Some(body.into()),
        }
    }

    /// Adds (or replaces) a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Answer {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// nginx's title for a status, as its error pages show it.
pub fn reason(status: u16) -> &'static str {
    match status {
        302 => "Found",
        401 => "Authorization Required",
        405 => "Not Allowed",
        408 => "Request Time-out",
        414 => "Request-URI Too Large",
        431 => "Request Header Fields Too Large",
        413 => "Request Entity Too Large",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        s => http::StatusCode::from_u16(s)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
    }
}

/// The page nginx (and so APISIX) sends for an error status without a body of its own.
pub fn nginx_page(status: u16) -> Bytes {
    let title = format!("{status} {}", reason(status));
    Bytes::from(format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>portico</center>\r\n</body>\r\n</html>\r\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let a = Answer::message(401, "Missing API key in request");
        assert_eq!(
            a.body.as_deref(),
            Some(&b"{\"message\":\"Missing API key in request\"}\n"[..])
        );
        let a = Answer::status(403).header("X", "1").header("x", "2");
        assert_eq!(a.headers, vec![("x".to_string(), "2".to_string())]);
        assert!(String::from_utf8_lossy(&nginx_page(403)).contains("403 Forbidden"));
    }
}

//! Every answer the Admin API writes, in APISIX's shapes: the one place its status codes,
//! bodies and headers are chosen.

use http::Response;
use serde_json::{json, Value};

/// What an answer carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Value),
    /// APISIX answers a few things in plain text (`done`, the page size refusal).
    Text(&'static str),
    Empty,
    /// The network refusal, as nginx's `deny` writes it.
    Forbidden,
}

/// One Admin API answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Body,
    /// Written by a resource handler: APISIX marks those with `X-API-VERSION: v3`.
    pub versioned: bool,
    /// The answer to a CORS preflight.
    preflight: bool,
}

const FORBIDDEN_PAGE: &str = "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n<center><h1>403 Forbidden</h1></center>\r\n<hr><center>portico</center>\r\n</body>\r\n</html>\r\n";

impl Answer {
    pub fn new(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Body::Json(body),
            versioned: false,
            preflight: false,
        }
    }

    pub fn ok(body: Value) -> Answer {
        Answer::new(200, body)
    }

    pub fn text(status: u16, text: &'static str) -> Answer {
        Answer {
            body: Body::Text(text),
            ..Answer::new(status, Value::Null)
        }
    }

    pub fn empty(status: u16) -> Answer {
        Answer {
            body: Body::Empty,
            ..Answer::new(status, Value::Null)
        }
    }

    /// `OPTIONS`: APISIX's admin CORS preflight, answered before the key is looked at.
    pub fn preflight() -> Answer {
        Answer {
            preflight: true,
            ..Answer::empty(200)
        }
    }

    /// A client outside `admin.allow`.
    pub fn forbidden() -> Answer {
        Answer {
            body: Body::Forbidden,
            ..Answer::new(403, Value::Null)
        }
    }

    /// `{"error_msg": ...}`, APISIX's form for a refused request.
    pub fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer::new(status, json!({ "error_msg": message.into() }))
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Answer {
        Answer::error(400, message)
    }

    /// 401, with APISIX's reason (`missing apikey`, `wrong apikey`, `invalid method for
    /// role viewer`).
    pub fn unauthorized(reason: &str) -> Answer {
        Answer::new(
            401,
            json!({"error_msg": "failed to check token", "description": reason}),
        )
    }

    /// 404 for a key that is not in etcd: `message`, not `error_msg`, as APISIX answers.
    pub fn key_not_found() -> Answer {
        Answer::new(404, json!({ "message": "Key not found" }))
    }

    /// 405 for a method a kind does not take (`not supported `POST` method for consumer`).
    pub fn method_not_allowed(method: &str, noun: &str) -> Answer {
        Answer::error(405, format!("not supported `{method}` method for {noun}"))
    }

    /// 503 when etcd cannot be reached or refused the call: nothing was written.
    pub fn etcd(what: &str, e: &crate::etcd::Error) -> Answer {
        log::error!("admin: {what}: {e}");
        Answer::error(503, format!("{what}: {e}"))
    }

    /// Marks an answer of a resource handler.
    pub fn versioned(self) -> Answer {
        Answer {
            versioned: true,
            ..self
        }
    }

    /// The HTTP response, with APISIX's admin CORS headers.
    pub fn into_response(self) -> Response<Vec<u8>> {
        let (body, content_type) = match self.body {
            // cjson ends what it encodes with a newline
            Body::Json(v) => (format!("{v}\n").into_bytes(), "application/json"),
            Body::Text(t) => (t.as_bytes().to_vec(), "application/json"),
            Body::Empty if self.preflight => (Vec::new(), "text/plain"),
            Body::Empty => (Vec::new(), "application/json"),
            Body::Forbidden => (FORBIDDEN_PAGE.as_bytes().to_vec(), "text/html"),
        };
        let mut r = Response::builder()
            .status(self.status)
            .header("Content-Type", content_type)
            .header("Content-Length", body.len())
            .header("Server", concat!("Portico/", env!("CARGO_PKG_VERSION")))
            .header("Access-Control-Allow-Origin", "*")
            .header("Access-Control-Allow-Credentials", "true")
            .header("Access-Control-Expose-Headers", "*")
            .header("Access-Control-Max-Age", "3600");
        if self.preflight {
            r = r
                .header(
                    "Access-Control-Allow-Methods",
                    "POST, GET, PUT, OPTIONS, DELETE, PATCH",
                )
                .header("Access-Control-Allow-Headers", "*");
        }
        if self.versioned {
            r = r.header("X-API-VERSION", "v3");
        }
        r.body(body).unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

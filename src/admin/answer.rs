//! Every answer the Admin API writes, in APISIX's shapes: the one place its status codes and
//! bodies are chosen.

use http::Response;
use serde_json::{json, Value};

/// One Admin API answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn new(status: u16, body: Value) -> Answer {
        Answer { status, body }
    }

    pub fn ok(body: Value) -> Answer {
        Answer::new(200, body)
    }

    /// `{"error_msg": ...}`, APISIX's form for a refused request.
    pub fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer::new(status, json!({ "error_msg": message.into() }))
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Answer {
        Answer::error(400, message)
    }

    /// 404 for a key that is not in etcd: `message`, not `error_msg`, as APISIX answers.
    pub fn key_not_found() -> Answer {
        Answer::new(404, json!({ "message": "Key not found" }))
    }

    /// 404 for a path the Admin API does not have.
    pub fn no_such_path() -> Answer {
        Answer::error(404, "404 Route Not Found")
    }

    /// 405 for a method a kind does not take.
    pub fn method_not_allowed(method: &str, what: &str) -> Answer {
        Answer::error(405, format!("not supported `{method}` method for {what}"))
    }

    /// 503 when etcd cannot be reached or refused the call: the write did not happen.
    pub fn etcd(what: &str, e: &crate::etcd::Error) -> Answer {
        log::error!("admin: {what}: {e}");
        Answer::error(503, format!("{what}: {e}"))
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Vec<u8>> {
        let body = self.body.to_string().into_bytes();
        Response::builder()
            .status(self.status)
            .header("Content-Type", "application/json")
            .header("Content-Length", body.len())
            .header("Server", concat!("Portico/", env!("CARGO_PKG_VERSION")))
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

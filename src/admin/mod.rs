//! APISIX's Admin API (3.x), so its dashboard, ADC, the ingress controller, Terraform and
//! scripts drive Portico unchanged.
//!
//! It is a writer to etcd and nothing else: a body is checked with the same model the sync
//! uses, written with the etcd client in a transaction on the key's revision, and the
//! gateway sees its own write come back through the watch like anyone else's. It never
//! touches the tables.
//!
//! - [`auth`]: networks, keys and roles; [`path`]: what a URL names;
//! - [`check`]: validation, references, encrypted fields; [`store`]: the etcd calls;
//! - [`ops`]: one function per method; [`answer`]: every status and body it writes.

pub mod answer;
pub mod auth;
pub mod check;
pub mod ops;
pub mod path;
pub mod store;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use answer::Answer;
use auth::{Access, Refusal};

/// The largest request body, as APISIX's Admin API takes (1.5 MiB).
pub const MAX_BODY: usize = 1536 * 1024;

/// The Admin API as a Pingora HTTP app.
pub struct AdminApp {
    access: Access,
    ops: ops::Ops,
}

impl AdminApp {
    /// `tables` is the gateway's own compiled config, when one runs beside (the auth-key
    /// duplicate check reads its consumers).
    pub fn new(
        config: &crate::config::AdminConfig,
        client: crate::etcd::Client,
        prefix: String,
        tables: Option<std::sync::Arc<crate::tables::Store>>,
    ) -> AdminApp {
        AdminApp {
            access: Access::new(config),
            ops: ops::Ops::new(store::Store::new(client, prefix), tables),
        }
    }
}

/// A request as the operations see it: the path read, the body parsed.
pub struct Request {
    pub method: http::Method,
    pub target: path::Target,
    pub query: Query,
    /// The JSON body; `None` when there is none.
    pub body: Option<serde_json::Value>,
    /// `?ttl=`: seconds.
    pub ttl: Option<i64>,
}

/// The query arguments the Admin API reads.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Query { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding of a query component (`+` is a space); a bad escape is kept as written.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn too_large(size: usize) -> Answer {
    Answer::bad_request(format!(
        "invalid request body: request size {size} is greater than the maximum size {MAX_BODY} allowed"
    ))
}

/// Reads the body, refusing one over [`MAX_BODY`].
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_large(body.len() + chunk.len()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Answer::bad_request(format!(
                    "invalid request body: cannot read it: {e}"
                )))
            }
        }
    }
}

/// The `x_api_key` cookie.
fn cookie_key(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == "x_api_key").then(|| v.to_string())
        })
}

impl AdminApp {
    async fn answer(&self, session: &mut ServerSession) -> Answer {
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if !self.access.allows(ip) {
            return Answer::forbidden();
        }
        let head = session.req_header();
        let method = head.method.clone();
        let uri = head.uri.clone();
        if method == http::Method::OPTIONS {
            return Answer::preflight();
        }
        if method == http::Method::HEAD && uri.path() == path::ROOT {
            return Answer::empty(200);
        }
        let query = Query::parse(uri.query());
        let key = query
            .get("api_key")
            .map(str::to_string)
            .or_else(|| {
                head.headers
                    .get("x-api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .or_else(|| cookie_key(&head.headers));
        match self.access.check(key.as_deref(), &method) {
            Ok(_) => {}
            Err(Refusal::Missing) => return Answer::unauthorized("missing apikey"),
            Err(Refusal::Wrong) => return Answer::unauthorized("wrong apikey"),
            Err(Refusal::ViewerWrite) => {
                return Answer::unauthorized("invalid method for role viewer")
            }
        }
        let declared = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let target = match path::Target::parse(uri.path()) {
            Ok(t) => t,
            Err(path::NotFound::Kind(kind)) => {
                return Answer::error(404, format!("Unsupported resource type: {kind}"))
            }
            Err(path::NotFound::StreamRoutes) => {
                return Answer::bad_request("stream mode is disabled, can not add stream routes")
            }
            Err(path::NotFound::Path) => return Answer::error(404, "not found"),
        };
        if let Some(len) = declared.filter(|l| *l > MAX_BODY) {
            return too_large(len);
        }
        let raw = match read_body(session).await {
            Ok(b) => b,
            Err(a) => return a,
        };
        let body = if raw.is_empty() {
            None
        } else {
            match serde_json::from_slice(&raw) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Answer::new(
                        400,
                        serde_json::json!({
                            "error_msg": format!("invalid request body: {e}"),
                            "req_body": String::from_utf8_lossy(&raw),
                        }),
                    )
                }
            }
        };
        let ttl = match query.get("ttl") {
            None => None,
            Some(t) => match t.parse::<f64>() {
                Ok(n) if n.is_finite() => Some(n.ceil() as i64),
                _ => return Answer::bad_request("invalid argument ttl: should be a number"),
            },
        };
        self.ops
            .run(Request {
                method,
                target,
                query,
                body,
                ttl,
            })
            .await
            .versioned()
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        self.answer(session).await.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let q = Query::parse(Some("name=a%20b+c&label=&filter=service_id%3D1&bad=%zz"));
        assert_eq!(q.get("name"), Some("a b c"));
        assert_eq!(q.get("label"), Some(""));
        assert_eq!(q.get("filter"), Some("service_id=1"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("none"), None);
    }
}

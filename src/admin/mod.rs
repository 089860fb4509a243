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

/// The largest request body, as APISIX's `client_max_body_size` for the Admin API.
pub const MAX_BODY: usize = 1536 * 1024;

/// The Admin API as a Pingora HTTP app.
pub struct AdminApp {
    access: Access,
    ops: ops::Ops,
}

impl AdminApp {
    pub fn new(
        config: &crate::config::AdminConfig,
        client: crate::etcd::Client,
        prefix: String,
    ) -> AdminApp {
        AdminApp {
            access: Access::new(config),
            ops: ops::Ops::new(store::Store::new(client, prefix)),
        }
    }
}

/// A request as the operations see it.
pub struct Request {
    pub method: http::Method,
    pub target: path::Target,
    pub query: Query,
    pub body: Vec<u8>,
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

/// Reads the body, refusing one over `limit` bytes.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(Answer::error(
                        413,
                        format!("request body is larger than {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Answer::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
        }
    }
}

impl AdminApp {
    async fn answer(&self, session: &mut ServerSession) -> Answer {
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if !self.access.allows(ip) {
            return Answer::error(403, "403 Forbidden: this client may not use the Admin API");
        }
        let head = session.req_header();
        let method = head.method.clone();
        let uri = head.uri.clone();
        let query = Query::parse(uri.query());
        let key = head
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query.get("api_key").map(str::to_string));
        match self.access.check(key.as_deref(), &method) {
            Ok(_) => {}
            Err(Refusal::ViewerWrite) => {
                return Answer::error(401, "invalid method for role viewer")
            }
            Err(_) => return Answer::error(401, "failed to check token"),
        }
        if let Some(len) = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len > MAX_BODY {
                return Answer::error(413, format!("request body is larger than {MAX_BODY} bytes"));
            }
        }
        let body = match read_body(session, MAX_BODY).await {
            Ok(b) => b,
            Err(a) => return a,
        };
        let Some(target) = path::Target::parse(uri.path()) else {
            return Answer::no_such_path();
        };
        self.ops
            .run(Request {
                method,
                target,
                query,
                body,
            })
            .await
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        self.answer(session).await.into_response()
    }
}

//! HTTP/1.1 to etcd over Pingora's own connector: pooled keep-alive connections, TLS with
//! CA / client certificate / SNI, and unix sockets, so the gateway carries one HTTP stack.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::protocols::TcpKeepalive;
use pingora_core::tls::pkey::PKey;
use pingora_core::tls::x509::X509;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::CertKey;
use pingora_http::RequestHeader;

use super::endpoint::Endpoint;
use super::error::{Error, Result};
use super::options::TlsOptions;

/// Headers the client owns; extra headers may not set them.
const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "host",
];

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Certificates and keys, loaded once when the client is built.
struct TlsMaterial {
    verify: bool,
    sni: Option<String>,
    ca: Option<Arc<Box<[X509]>>>,
    cert_key: Option<Arc<CertKey>>,
}

impl TlsMaterial {
    fn load(opts: &TlsOptions) -> Result<Self> {
        let config = |msg: String| Error::Config(msg);
        let ca = match &opts.ca {
            None => None,
            Some(pem) => {
                let bytes = pem.load("CA").map_err(config)?;
                let certs = X509::stack_from_pem(&bytes)
                    .map_err(|e| config(format!("CA is not valid PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(config("CA PEM holds no certificate".into()));
                }
                Some(Arc::new(certs.into_boxed_slice()))
            }
        };
        let cert_key = match (&opts.cert, &opts.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let certs = X509::stack_from_pem(&cert.load("client certificate").map_err(config)?)
                    .map_err(|e| config(format!("client certificate is not valid PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(config("client certificate PEM holds no certificate".into()));
                }
                let key = PKey::private_key_from_pem(&key.load("client key").map_err(config)?)
                    .map_err(|e| {
                        config(format!("client key is not a valid PEM private key: {e}"))
                    })?;
                Some(Arc::new(CertKey::new(certs, key)))
            }
            _ => {
                return Err(config(
                    "a client certificate needs both cert and key".to_string(),
                ))
            }
        };
        Ok(TlsMaterial {
            verify: opts.verify,
            sni: opts.sni.clone(),
            ca,
            cert_key,
        })
    }
}

/// A response read in full.
pub(crate) struct Response {
    pub status: u16,
    /// `X-Etcd-Index` (v2 API answers).
    pub etcd_index: Option<u64>,
    pub body: Bytes,
}

/// What a request carries.
#[derive(Clone, Copy)]
pub(crate) struct Body<'a> {
    pub bytes: &'a [u8],
    pub content_type: &'static str,
}

impl<'a> Body<'a> {
    pub fn json(bytes: &'a [u8]) -> Self {
        Body {
            bytes,
            content_type: "application/json",
        }
    }

    pub fn form(bytes: &'a [u8]) -> Self {
        Body {
            bytes,
            content_type: "application/x-www-form-urlencoded",
        }
    }

    pub fn empty() -> Self {
        Body {
            bytes: b"",
            content_type: "",
        }
    }
}

/// `X-Etcd-Index` of a response, if any.
pub(crate) fn etcd_index(session: &HttpSession) -> Option<u64> {
    session
        .get_header("X-Etcd-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A response whose body is still to be read, chunk by chunk (watches).
pub(crate) struct OpenResponse {
    pub status: u16,
    pub session: HttpSession,
}

/// The reason a body over the limit gives; [`super::client`] turns it into
/// [`super::Error::TooLarge`].
pub(crate) const TOO_LARGE: &str = "answer body over max_response_bytes";

pub(crate) struct Transport {
    connector: Connector,
    tls: TlsMaterial,
    unix_socket: Option<PathBuf>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Last resolved address of each endpoint given by name.
    resolved: Vec<Mutex<Option<SocketAddr>>>,
    /// The largest body read from an answer.
    pub(crate) max_body: usize,
}

impl Transport {
    pub fn new(
        endpoints: usize,
        tls: &TlsOptions,
        unix_socket: Option<PathBuf>,
        extra_headers: &[(String, String)],
        max_body: usize,
    ) -> Result<Self> {
        let mut headers = Vec::with_capacity(extra_headers.len());
        for (name, value) in extra_headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(Error::Config(format!(
                    "extra header {name:?} cannot be set: the client owns it"
                )));
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Config(format!("extra header name {name:?} is not valid")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::Config(format!("extra header {name}: value {value:?} is not valid"))
            })?;
            headers.push((name, value));
        }
        Ok(Transport {
            connector: Connector::new(None),
            tls: TlsMaterial::load(tls)?,
            unix_socket,
            extra_headers: headers,
            resolved: (0..endpoints).map(|_| Mutex::new(None)).collect(),
            max_body,
        })
    }

    async fn peer(&self, index: usize, ep: &Endpoint) -> Result<HttpPeer, String> {
        let sni = if ep.tls {
            self.tls.sni.clone().unwrap_or_else(|| ep.host.clone())
        } else {
            String::new()
        };
        let mut peer = match &self.unix_socket {
            Some(path) if path.exists() => {
                let path = path
                    .to_str()
                    .ok_or_else(|| format!("unix socket path {} is not UTF-8", path.display()))?;
                HttpPeer::new_uds(path, ep.tls, sni).map_err(|e| e.to_string())?
            }
            _ => {
                let mut peer = HttpPeer::new(self.resolve(index, ep).await?, ep.tls, sni);
                // A member that vanished without a FIN (power loss, partition) ends a
                // long-poll watch within about 45 s instead of never.
                peer.options.tcp_keepalive = Some(TcpKeepalive {
                    idle: Duration::from_secs(30),
                    interval: Duration::from_secs(5),
                    count: 3,
                    user_timeout: Duration::ZERO,
                });
                peer
            }
        };
        if ep.tls {
            peer.options.verify_cert = self.tls.verify;
            // Pingora checks names, not IP addresses: an IP endpoint without a configured
            // SNI gets its chain verified but not its name (see `TlsOptions::sni`).
            let name_checkable = self.tls.sni.is_some() || ep.ip().is_none();
            peer.options.verify_hostname = self.tls.verify && name_checkable;
            peer.options.ca = self.tls.ca.clone();
            peer.client_cert_key = self.tls.cert_key.clone();
        }
        Ok(peer)
    }

    /// Resolves a host name without blocking (Pingora's own resolution blocks and panics).
    async fn resolve(&self, index: usize, ep: &Endpoint) -> Result<SocketAddr, String> {
        if let Some(ip) = ep.ip() {
            return Ok(SocketAddr::new(ip, ep.port));
        }
        if let Some(addr) = *self.resolved[index].lock() {
            return Ok(addr);
        }
        let addr = tokio::net::lookup_host((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", ep.host))?;
        *self.resolved[index].lock() = Some(addr);
        Ok(addr)
    }

    fn forget_address(&self, index: usize) {
        *self.resolved[index].lock() = None;
    }

    /// Sends one request and returns once the response header is in.
    pub async fn open(
        &self,
        index: usize,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Body<'_>,
        token: Option<&str>,
    ) -> Result<(OpenResponse, HttpPeer), String> {
        let peer = self.peer(index, ep).await?;
        let (mut session, _reused) = match self.connector.get_http_session(&peer).await {
            Ok(s) => s,
            Err(e) => {
                self.forget_address(index);
                return Err(format!("connect: {e}"));
            }
        };
        let mut req = RequestHeader::build(method, path.as_bytes(), Some(6))
            .map_err(|e| format!("building request: {e}"))?;
        let header = |e: pingora_core::BError| format!("building request: {e}");
        req.insert_header("Host", ep.authority()).map_err(header)?;
        for (name, value) in &self.extra_headers {
            req.insert_header(name.clone(), value.clone())
                .map_err(header)?;
        }
        if let Some(token) = token {
            req.insert_header("Authorization", token).map_err(header)?;
        }
        if !body.content_type.is_empty() {
            req.insert_header("Content-Type", body.content_type)
                .map_err(header)?;
        }
        if method != "GET" {
            req.insert_header("Content-Length", body.bytes.len().to_string())
                .map_err(header)?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| format!("write: {e}"))?;
        if !body.bytes.is_empty() {
            session
                .write_body(body.bytes)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        session
            .finish_body()
            .await
            .map_err(|e| format!("write: {e}"))?;
        session
            .read_response()
            .await
            .map_err(|e| format!("read: {e}"))?;
        let status = session.get_status().map(|s| s.as_u16()).unwrap_or(0);
        Ok((OpenResponse { status, session }, peer))
    }

    /// Sends one request, reads the whole answer and returns the connection to the pool.
    pub async fn request(
        &self,
        index: usize,
        ep: &Endpoint,
        method: &str,
        path: &str,
        body: Body<'_>,
        token: Option<&str>,
    ) -> Result<Response, String> {
        let (open, peer) = self.open(index, ep, method, path, body, token).await?;
        let OpenResponse {
            status,
            mut session,
        } = open;
        let etcd_index = etcd_index(&session);
        let mut buf = BytesMut::new();
        while let Some(chunk) = session
            .read_body_ref()
            .await
            .map_err(|e| format!("read: {e}"))?
        {
            if buf.len() + chunk.len() > self.max_body {
                // The connection is dropped, not pooled: the rest of the body is unread.
                return Err(TOO_LARGE.to_string());
            }
            buf.extend_from_slice(chunk);
        }
        self.connector
            .release_http_session(session, &peer, Some(POOL_IDLE))
            .await;
        Ok(Response {
            status,
            etcd_index,
            body: buf.freeze(),
        })
    }
}

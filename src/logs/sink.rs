//! Where the logger plugins send their batches: an HTTP endpoint, a file, a TCP or UDP peer.
//! Each is a [`Sink`] of JSON entries; the plugin chooses how a batch is encoded.

use parking_lot::Mutex;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use tokio::io::AsyncWriteExt;

use super::batch::Sink;

/// How a batch of entries becomes one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `[{…},{…}]` (a batch of one: `{…}` for TCP and UDP, as APISIX sends it).
    JsonArray,
    /// One JSON object per line.
    Lines,
    /// The entries one after the other, as they are (syslog frames end with their newline).
    Concat,
}

impl Encoding {
    /// `batch` holds JSON texts, one per entry.
    pub fn encode(self, batch: &[Entry], single_as_object: bool) -> Vec<u8> {
        let len: usize = batch.iter().map(|e| e.len() + 1).sum::<usize>() + 2;
        let mut out = Vec::with_capacity(len);
        match self {
            Encoding::JsonArray if single_as_object && batch.len() == 1 => {
                out.extend_from_slice(batch[0].as_bytes());
            }
            Encoding::JsonArray => {
                out.push(b'[');
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(e.as_bytes());
                }
                out.push(b']');
            }
            Encoding::Concat => {
                for e in batch {
                    out.extend_from_slice(e.as_bytes());
                }
            }
            Encoding::Lines => {
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b'\n');
                    }
                    out.extend_from_slice(e.as_bytes());
                }
            }
        }
        out
    }
}

/// One log entry, as JSON text (serialized once, on the request's thread).
pub type Entry = Box<str>;

/// A URI a logger posts to, checked when the plugin loads.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

impl Endpoint {
    pub fn parse(uri: &str) -> Result<Endpoint, String> {
        let u: http::Uri = uri
            .parse()
            .map_err(|e| format!("property \"uri\" validation failed: {uri:?}: {e}"))?;
        let tls = match u.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "property \"uri\" validation failed: {uri:?} is not an http or https URI"
                ))
            }
        };
        let host = u
            .host()
            .ok_or_else(|| format!("property \"uri\" validation failed: {uri:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Endpoint {
            tls,
            port: u.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: u
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            host,
        })
    }

    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Resolves without blocking the log runtime.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// POSTs payloads to one endpoint over pooled keep-alive connections: `http-logger`'s
/// batches and the `opentelemetry` plugin's OTLP exports.
pub struct HttpPost {
    pub endpoint: Endpoint,
    /// Sent with every request (`auth_header`, the collector's `request_headers`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout: Duration,
    pub verify: bool,
    pub connector: Connector,
}

impl HttpPost {
    /// Sends `body`, within the timeout; an answer of 400 or above is an error.
    pub async fn send(&self, body: Vec<u8>, content_type: &'static str) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.post(body, content_type)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{}: no answer within {:?}",
                self.endpoint.authority(),
                self.timeout
            )),
        }
    }

    async fn post(&self, body: Vec<u8>, content_type: &'static str) -> Result<(), String> {
        let ep = &self.endpoint;
        let addr = resolve(&ep.host, ep.port).await?;
        let sni = if ep.tls {
            ep.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, ep.tls, sni);
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("connect to {}: {e}", ep.authority()))?;
        let mut req =
            RequestHeader::build("POST", ep.path.as_bytes(), Some(5)).map_err(|e| e.to_string())?;
        let h = |e: pingora_core::BError| e.to_string();
        req.insert_header("Host", ep.authority()).map_err(h)?;
        req.insert_header("Content-Type", content_type).map_err(h)?;
        req.insert_header("Content-Length", body.len().to_string())
            .map_err(h)?;
        for (name, value) in &self.headers {
            req.insert_header(name.clone(), value.clone()).map_err(h)?;
        }
        let io = |e: pingora_core::BError| format!("{}: {e}", ep.authority());
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(io)?;
        session.write_body(&Bytes::from(body)).await.map_err(io)?;
        session.finish_body().await.map_err(io)?;
        session.read_response().await.map_err(io)?;
        let status = session.get_status().map_or(0, |s| s.as_u16());
        // Drain the answer (bounded) so the connection can be pooled.
        let mut read = 0usize;
        while let Some(chunk) = session.read_body_ref().await.map_err(io)? {
            read += chunk.len();
            if read > 64 * 1024 {
                break;
            }
        }
        if read <= 64 * 1024 {
            self.connector
                .release_http_session(session, &peer, Some(Duration::from_secs(30)))
                .await;
        }
        if status >= 400 {
            return Err(format!("{} answered HTTP {status}", ep.authority()));
        }
        Ok(())
    }
}

/// `http-logger`: POSTs each batch, encoded as the plugin says.
pub struct HttpSink {
    pub post: HttpPost,
    pub encoding: Encoding,
}

#[async_trait]
impl Sink<Entry> for HttpSink {
    async fn send(&self, batch: &[Entry]) -> Result<(), String> {
        let content_type = match self.encoding {
            Encoding::JsonArray => "application/json",
            Encoding::Lines | Encoding::Concat => "text/plain",
        };
        self.post
            .send(self.encoding.encode(batch, false), content_type)
            .await
    }
}

/// `file-logger`: appends one JSON line per entry.
pub struct FileSink {
    pub path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl FileSink {
    pub fn new(path: PathBuf) -> FileSink {
        FileSink {
            path,
            file: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Sink<Entry> for FileSink {
    async fn send(&self, batch: &[Entry]) -> Result<(), String> {
        let mut out = Encoding::Lines.encode(batch, false);
        out.push(b'\n');
        let mut slot = self.file.lock();
        // Reopened when the file was moved away (logrotate) or never opened.
        let moved = slot.is_some() && !self.path.exists();
        if slot.is_none() || moved {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
            *slot = Some(f);
        }
        let Some(f) = slot.as_mut() else {
            return Err("no file".into());
        };
        f.write_all(&out).map_err(|e| {
            let msg = format!("cannot write {}: {e}", self.path.display());
            *slot = None;
            msg
        })
    }
}

/// `tcp-logger` and `syslog` over TCP: one connection per batch, optionally TLS.
pub struct TcpSink {
    pub encoding: Encoding,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub tls_server_name: Option<String>,
    pub timeout: Duration,
}

#[async_trait]
impl Sink<Entry> for TcpSink {
    async fn send(&self, batch: &[Entry]) -> Result<(), String> {
        let data = self.encoding.encode(batch, true);
        let work = async {
            let addr = resolve(&self.host, self.port).await?;
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect to {addr}: {e}"))?;
            if self.tls {
                let connector = pingora_core::tls::ssl::SslConnector::builder(
                    pingora_core::tls::ssl::SslMethod::tls(),
                )
                .map_err(|e| e.to_string())?
                .build();
                let name = self.tls_server_name.as_deref().unwrap_or(&self.host);
                let ssl = connector
                    .configure()
                    .and_then(|c| c.into_ssl(name))
                    .map_err(|e| e.to_string())?;
                let mut tls = tokio_openssl_stream(ssl, stream).await?;
                tls.write_all(&data).await.map_err(|e| e.to_string())?;
                tls.shutdown().await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            stream
                .write_all(&data)
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let _ = stream.shutdown().await;
            Ok(())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| format!("{}:{}: timed out", self.host, self.port))?
    }
}

/// A TLS client stream over `tcp` with Pingora's OpenSSL.
async fn tokio_openssl_stream(
    ssl: pingora_core::tls::ssl::Ssl,
    tcp: tokio::net::TcpStream,
) -> Result<pingora_core::tls::tokio_ssl::SslStream<tokio::net::TcpStream>, String> {
    let mut s =
        pingora_core::tls::tokio_ssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    std::pin::Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(s)
}

/// `udp-logger` and `syslog` over UDP: one datagram per batch.
pub struct UdpSink {
    pub encoding: Encoding,
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
}

#[async_trait]
impl Sink<Entry> for UdpSink {
    async fn send(&self, batch: &[Entry]) -> Result<(), String> {
        let data = self.encoding.encode(batch, true);
        let work = async {
            let addr = resolve(&self.host, self.port).await?;
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().map_err(|_| "bind".to_string())?
            } else {
                "[::]:0".parse().map_err(|_| "bind".to_string())?
            };
            let sock = tokio::net::UdpSocket::bind(bind)
                .await
                .map_err(|e| e.to_string())?;
            sock.send_to(&data, addr)
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            Ok(())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| format!("{}:{}: timed out", self.host, self.port))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_and_endpoints() {
        let batch: Vec<Entry> = vec![r#"{"a":1}"#.into(), r#"{"b":2}"#.into()];
        assert_eq!(
            Encoding::JsonArray.encode(&batch, false),
            br#"[{"a":1},{"b":2}]"#
        );
        assert_eq!(
            Encoding::Lines.encode(&batch, false),
            b"{\"a\":1}\n{\"b\":2}"
        );
        assert_eq!(Encoding::JsonArray.encode(&batch[..1], true), br#"{"a":1}"#);
        let e = Endpoint::parse("https://logs.example.com/in?x=1").unwrap();
        assert!(e.tls);
        assert_eq!((e.port, e.path.as_str()), (443, "/in?x=1"));
        assert_eq!(e.authority(), "logs.example.com");
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((e.port, e.path.as_str()), (9000, "/"));
        assert!(Endpoint::parse("ftp://x").unwrap_err().contains("uri"));
        assert!(Endpoint::parse("not a uri").is_err());
    }
}

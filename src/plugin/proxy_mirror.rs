//! `proxy-mirror`: a copy of each (sampled) request, body included, goes to another host; its
//! answer is ignored and it never delays or fails the real request (a mirror that cannot keep
//! up loses the copy, not the request).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{check_range, parse_settings, Cx, Factory, Plugin};

pub struct ProxyMirrorFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    host: String,
    path: Option<String>,
    #[serde(default = "default_mode")]
    path_concat_mode: String,
    #[serde(default = "one")]
    sample_ratio: f64,
}

fn default_mode() -> String {
    "replace".into()
}

fn one() -> f64 {
    1.0
}

struct ProxyMirror {
    tls: bool,
    /// `host[:port]`, for the connection and the Host header.
    authority: String,
    host: String,
    port: u16,
    path: Option<String>,
    prefix: bool,
    sample_ratio: f64,
    connector: Arc<Connector>,
    /// Copies in flight at most; past it a copy is skipped (a mirror that does not answer
    /// must not take the gateway's sockets).
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// What goes to the mirror task: body pieces, then `End` for a body that arrived whole.
enum Piece {
    Body(Bytes),
    End,
}

/// The copy of the body on its way to the mirror.
struct BodyTee(Option<mpsc::Sender<Piece>>);

/// Mirror copies in flight at most, per plugin use.
const MAX_IN_FLIGHT: usize = 256;

/// How long a mirrored request may take in all.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

impl Factory for ProxyMirrorFactory {
    fn name(&self) -> &'static str {
        "proxy-mirror"
    }

    fn priority(&self) -> i32 {
        1010
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        let bad = || {
            format!(
                "property \"host\" validation failed: {:?} is not http(s)://host[:port]",
                s.host
            )
        };
        let (tls, rest) = if let Some(r) = s.host.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.host.strip_prefix("https://") {
            (true, r)
        } else if s.host.starts_with("grpc") {
            return Err("property \"host\": grpc mirrors are not supported by Portico".into());
        } else {
            return Err(bad());
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| bad())?),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
        {
            return Err(bad());
        }
        if let Some(p) = &s.path {
            if !p.starts_with('/') || p.len() < 2 || p.contains(['?', '&']) {
                return Err(format!(
                    "property \"path\" validation failed: {p:?} must match ^/[^?&]+$"
                ));
            }
        }
        let prefix = match s.path_concat_mode.as_str() {
            "replace" => false,
            "prefix" => true,
            other => {
                return Err(format!(
                    "property \"path_concat_mode\" validation failed: matches none of the enum values: {other:?}"
                ))
            }
        };
        check_range("sample_ratio", s.sample_ratio, 0.00001, Some(1.0))?;
        Ok(Arc::new(ProxyMirror {
            tls,
            authority: rest.to_string(),
            host,
            port,
            path: s.path,
            prefix,
            sample_ratio: s.sample_ratio,
            connector: Arc::new(Connector::new(None)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }))
    }
}

impl ProxyMirror {
    fn target(&self, req: &RequestHeader) -> String {
        let path = req.uri.path();
        let query = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        match &self.path {
            Some(p) if self.prefix => format!("{p}{path}{query}"),
            Some(p) => format!("{p}{query}"),
            None => format!("{path}{query}"),
        }
    }
}

/// Sends one mirrored request: the header, then the body as it comes from the real one.
async fn mirror(
    connector: Arc<Connector>,
    host: String,
    port: u16,
    tls: bool,
    req: RequestHeader,
    mut body: mpsc::Receiver<Piece>,
    has_body: bool,
) -> Result<(), String> {
    let addr: SocketAddr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolve {host}: no address"))?,
    };
    let peer = HttpPeer::new(addr, tls, host.clone());
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| format!("write: {e}"))?;
    if has_body {
        loop {
            match body.recv().await {
                Some(Piece::Body(chunk)) => session
                    .write_request_body(chunk, false)
                    .await
                    .map_err(|e| format!("write: {e}"))?,
                Some(Piece::End) => break,
                // The copy lost part of its body: dropped, never finished as if whole.
                None => return Err("the copy's body was cut short; not sent".into()),
            }
        }
    }
    session
        .finish_request_body()
        .await
        .map_err(|e| format!("write: {e}"))?;
    session
        .read_response_header()
        .await
        .map_err(|e| format!("read: {e}"))?;
    while let Ok(Some(_)) = session.read_response_body().await {}
    connector
        .release_http_session(session, &peer, Some(Duration::from_secs(30)))
        .await;
    Ok(())
}

impl Plugin for ProxyMirror {
    /// After every request phase (a request the gateway refuses is never copied), once per
    /// request (not again on a retry).
    fn before_proxy(&self, cx: &mut Cx<'_>, _up: &mut RequestHeader) {
        if cx.state.get::<Mirrored>(MIRRORED).is_some() {
            return;
        }
        cx.state.set(MIRRORED, Mirrored);
        if self.sample_ratio < 1.0 && rand::thread_rng().gen::<f64>() >= self.sample_ratio {
            return;
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            log::warn!("proxy-mirror: {MAX_IN_FLIGHT} copies in flight; this one is skipped");
            return;
        };
        let mut req = cx.req().clone();
        let target = self.target(&req);
        if req.set_raw_path(target.as_bytes()).is_err() {
            return;
        }
        let _ = req.insert_header(http::header::HOST, self.authority.as_str());
        req.remove_header(&http::header::CONNECTION);
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let has_body = declared > 0 || req.headers.contains_key(http::header::TRANSFER_ENCODING);
        let (tx, rx) = mpsc::channel(64);
        if has_body {
            cx.state.set(BODY, BodyTee(Some(tx)));
        }
        let (connector, host, port, tls) = (
            self.connector.clone(),
            self.host.clone(),
            self.port,
            self.tls,
        );
        tokio::spawn(async move {
            let _permit = permit;
            let sent = tokio::time::timeout(
                MIRROR_TIMEOUT,
                mirror(connector, host.clone(), port, tls, req, rx, has_body),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::warn!("proxy-mirror to {host}:{port}: {e}"),
                Err(_) => {
                    log::warn!("proxy-mirror to {host}:{port}: no answer within {MIRROR_TIMEOUT:?}")
                }
            }
        });
    }

    fn request_body(&self, cx: &mut Cx<'_>, body: &Option<Bytes>, end: bool) {
        let Some(tee) = cx.state.get_mut::<BodyTee>(BODY) else {
            return;
        };
        if let (Some(tx), Some(chunk)) = (&tee.0, body) {
            if tx.try_send(Piece::Body(chunk.clone())).is_err() {
                // The mirror cannot keep up: its copy is abandoned, the request goes on.
                log::warn!("proxy-mirror: the mirror is too slow; this copy is dropped");
                tee.0 = None;
            }
        }
        if end {
            if let Some(tx) = tee.0.take() {
                let _ = tx.try_send(Piece::End);
            }
        }
    }
}

/// Marks a request already copied.
struct Mirrored;
const MIRRORED: &str = "proxy-mirror.done";
const BODY: &str = "proxy-mirror.body";

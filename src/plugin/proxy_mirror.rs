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

use super::{check_range, parse_settings, Cx, Factory, Flow, Plugin};

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
}

/// The copy of the body on its way to the mirror.
struct BodyTee(Option<mpsc::Sender<Bytes>>);

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
    mut body: mpsc::Receiver<Bytes>,
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
        while let Some(chunk) = body.recv().await {
            session
                .write_request_body(chunk, false)
                .await
                .map_err(|e| format!("write: {e}"))?;
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
    Ok(())
}

impl Plugin for ProxyMirror {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        if self.sample_ratio < 1.0 && rand::thread_rng().gen::<f64>() >= self.sample_ratio {
            return Flow::Continue;
        }
        let mut req = cx.req().clone();
        let target = self.target(&req);
        if req.set_raw_path(target.as_bytes()).is_err() {
            return Flow::Continue;
        }
        let _ = req.insert_header(http::header::HOST, self.authority.as_str());
        req.remove_header(&http::header::CONNECTION);
        let has_body = req.headers.contains_key(http::header::CONTENT_LENGTH)
            || req.headers.contains_key(http::header::TRANSFER_ENCODING);
        let (tx, rx) = mpsc::channel(64);
        if has_body {
            cx.state.set("proxy-mirror.body", BodyTee(Some(tx)));
        }
        let (connector, host, port, tls) = (
            self.connector.clone(),
            self.host.clone(),
            self.port,
            self.tls,
        );
        tokio::spawn(async move {
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
        Flow::Continue
    }

    fn request_body(&self, cx: &mut Cx<'_>, body: &Option<Bytes>, end: bool) {
        let Some(tee) = cx.state.get_mut::<BodyTee>("proxy-mirror.body") else {
            return;
        };
        if let (Some(tx), Some(chunk)) = (&tee.0, body) {
            if tx.try_send(chunk.clone()).is_err() {
                // The mirror cannot keep up: its copy is abandoned, the request goes on.
                log::warn!("proxy-mirror: the mirror is too slow; this copy is dropped");
                tee.0 = None;
            }
        }
        if end {
            tee.0 = None;
        }
    }
}

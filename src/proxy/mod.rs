//! The Pingora proxy: match a route in the current tables, pick a node, forward.

pub mod request;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::prelude::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::model::{Node, PassHost};
use crate::router::{Request, RouteEntry};
use crate::tables::{Store, Tables};
use request::{normalize_path, request_host, RequestVars};

/// APISIX's default when no timeout is configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The gateway's proxy logic; shared by every request.
pub struct Gateway {
    store: Arc<Store>,
}

impl Gateway {
    pub fn new(store: Arc<Store>) -> Gateway {
        Gateway { store }
    }
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    tables: Option<Arc<Tables>>,
    route: Option<Arc<RouteEntry>>,
    /// Nodes tried so far (`host:port`), for retries and logs.
    tried: Vec<Node>,
    client_ip: Option<IpAddr>,
    /// The original Host header, for `pass_host: pass` and X-Forwarded-Host.
    host_header: Option<String>,
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn server_port(session: &Session) -> Option<u16> {
    session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.port())
}

/// Answers `{"error_msg": …}` with `status`, keeping the connection usable.
async fn respond_json(session: &mut Session, status: u16, message: &str) -> Result<()> {
    let body = Bytes::from(serde_json::json!({ "error_msg": message }).to_string());
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Server", "portico")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

fn http_error(status: u16, why: String) -> Box<Error> {
    let mut e = Error::explain(ErrorType::HTTPStatus(status), why);
    e.set_retry(false);
    e
}

impl Gateway {
    /// The number of tries a request gets: `retries` + 1, `retries` defaulting to nodes − 1.
    fn max_tries(tables: &Tables, entry: &RouteEntry) -> usize {
        match tables.target(entry) {
            Ok(t) => {
                let retries = t
                    .upstream
                    .retries
                    .map(|r| r as usize)
                    .unwrap_or_else(|| t.upstream.nodes.len().saturating_sub(1));
                retries + 1
            }
            Err(_) => 1,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// No downstream modules (Pingora adds a disabled compression module by default, which
    /// still costs every request).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let tables = self.store.load();
        let ip = client_ip(session);
        let port = server_port(session);
        let req = session.req_header();
        let raw_path = req.uri.path();
        let path = normalize_path(raw_path);
        let host = request_host(req);
        let vars = RequestVars {
            req,
            path: &path,
            host: host.as_deref(),
            client_ip: ip,
            server_port: port,
            scheme: "http",
        };
        let found = tables.router.find(&Request {
            host: host.as_deref(),
            path: &path,
            method: req.method.as_str(),
            remote_addr: ip,
            vars: &vars,
        });
        let Some(entry) = found.cloned() else {
            respond_json(session, 404, "404 Route Not Found").await?;
            return Ok(true);
        };
        if let Err(why) = tables.target(&entry) {
            log::error!("{}", why.message);
            let text = match why.status {
                404 => "404 Route Not Found".to_string(),
                503 => "503 Service Unavailable".to_string(),
                s => format!("{s} Bad Gateway"),
            };
            respond_json(session, why.status, &text).await?;
            return Ok(true);
        }
        ctx.host_header = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        ctx.client_ip = ip;
        ctx.route = Some(entry);
        ctx.tables = Some(tables);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(tables), Some(entry)) = (ctx.tables.as_ref(), ctx.route.as_ref()) else {
            return Err(http_error(500, "no route in context".into()));
        };
        let target = tables
            .target(entry)
            .map_err(|u| http_error(u.status, u.message))?;
        let tried = &ctx.tried;
        let node = target
            .balancer
            .pick(|n| tried.contains(n))
            .or_else(|| {
                // Every node was tried: start over rather than fail early.
                (!tried.is_empty())
                    .then(|| target.balancer.pick(|_| false))
                    .flatten()
            })
            .cloned()
            .ok_or_else(|| {
                log::error!(
                    "route {}: {} has no node to send to",
                    entry.route.id,
                    target.upstream_name
                );
                http_error(502, format!("{}: no available node", target.upstream_name))
            })?;
        let addr = resolve(&node).await.map_err(|why| {
            log::error!(
                "route {}: {} node {}: {why}",
                entry.route.id,
                target.upstream_name,
                node.authority()
            );
            let mut e = Error::explain(ErrorType::ConnectNoRoute, why);
            e.set_retry(true);
            e
        })?;
        let tls = target.upstream.scheme.is_tls();
        let sni = if tls {
            match &target.upstream.pass_host {
                PassHost::Rewrite(h) => h.clone(),
                PassHost::Node => node.host.clone(),
                PassHost::Pass => ctx
                    .host_header
                    .as_deref()
                    .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_string())
                    .unwrap_or_else(|| node.host.clone()),
            }
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        // APISIX does not verify upstream certificates unless told to.
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
        let t = target.timeout;
        peer.options.connection_timeout = Some(t.connect.unwrap_or(DEFAULT_TIMEOUT));
        peer.options.write_timeout = Some(t.send.unwrap_or(DEFAULT_TIMEOUT));
        peer.options.read_timeout = Some(t.read.unwrap_or(DEFAULT_TIMEOUT));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        ctx.tried.push(node);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(tables), Some(entry)) = (ctx.tables.as_ref(), ctx.route.as_ref()) else {
            return Ok(());
        };
        let target = tables
            .target(entry)
            .map_err(|u| http_error(u.status, u.message))?;
        match &target.upstream.pass_host {
            PassHost::Pass => {}
            PassHost::Node => {
                if let Some(node) = ctx.tried.last() {
                    up.insert_header(
                        "Host",
                        node_host_header(node, target.upstream.scheme.is_tls()),
                    )?;
                }
            }
            PassHost::Rewrite(h) => up.insert_header("Host", h.as_str())?,
        }
        let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        up.insert_header("X-Real-IP", ip.as_str())?;
        let xff = match session.req_header().headers.get("X-Forwarded-For") {
            Some(prev) => format!("{}, {ip}", prev.to_str().unwrap_or_default()),
            None => ip.clone(),
        };
        up.insert_header("X-Forwarded-For", xff)?;
        let req = session.req_header();
        let keep_or = |name: &str, default: String| -> String {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or(default)
        };
        let proto = keep_or("X-Forwarded-Proto", "http".into());
        let fwd_host = keep_or(
            "X-Forwarded-Host",
            ctx.host_header.clone().unwrap_or_default(),
        );
        let fwd_port = keep_or(
            "X-Forwarded-Port",
            server_port(session)
                .map(|p| p.to_string())
                .unwrap_or_default(),
        );
        up.insert_header("X-Forwarded-Proto", proto)?;
        up.insert_header("X-Forwarded-Host", fwd_host)?;
        up.insert_header("X-Forwarded-Port", fwd_port)?;
        if !target.websocket && up.headers.contains_key(http::header::UPGRADE) {
            up.remove_header(&http::header::UPGRADE);
            up.remove_header(&http::header::CONNECTION);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(tables), Some(entry)) = (ctx.tables.as_ref(), ctx.route.as_ref()) {
            let name = tables
                .target(entry)
                .map(|t| t.upstream_name.to_string())
                .unwrap_or_default();
            log::error!(
                "route {}: {name} node {}: connect failed: {e}",
                entry.route.id,
                peer._address
            );
            if ctx.tried.len() < Gateway::max_tries(tables, entry) {
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 502,
            },
        };
        if code >= 500 {
            if let Some(entry) = &ctx.route {
                let node = ctx.tried.last().map(Node::authority).unwrap_or_default();
                log::error!(
                    "route {}: node {node}: answering {code}: {e}",
                    entry.route.id
                );
            }
        }
        if code > 0 {
            let _ = session.respond_error(code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// `host[:port]` for `pass_host: node`, without the scheme's default port.
fn node_host_header(node: &Node, tls: bool) -> String {
    let default = if tls { 443 } else { 80 };
    let host = if node.host.contains(':') {
        format!("[{}]", node.host)
    } else {
        node.host.clone()
    };
    if node.port == default {
        host
    } else {
        format!("{host}:{}", node.port)
    }
}

/// A node's socket address; names are resolved without blocking.
async fn resolve(node: &Node) -> std::result::Result<SocketAddr, String> {
    if let Ok(ip) = node.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, node.port));
    }
    tokio::net::lookup_host((node.host.as_str(), node.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", node.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", node.host))
}

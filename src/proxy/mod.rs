//! The Pingora proxy: match a route in the current tables, run its plugins, pick a node,
//! forward.

mod body;
mod finish;
pub mod guard;
mod request_line;
mod respond;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::prelude::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::model::{BalancerKind, HashOn, Node, PassHost, Upstream};
use crate::plugin::{Chain, Cx, Phase, RequestState, CONSUMER_HEADERS};
use crate::router::{Request, RouteEntry};
use crate::tables::{Store, Target};
use crate::upstream::health::{Checks, Outcome};
use crate::upstream::keepalive::{Lease, Pools};
use crate::upstream::NodeState;
use crate::vars::request::{normalize_path, request_host, RequestVars};
use crate::vars::VarLookup;

/// APISIX's default when no timeout is configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// CA certificates trusted for upstreams with `tls.verify`.
pub type TrustedCa = Arc<Box<[pingora_core::tls::x509::X509]>>;

/// The gateway's proxy logic; shared by every request.
pub struct Gateway {
    store: Arc<Store>,
    upstream_ca: Option<TrustedCa>,
    pools: Arc<Pools>,
    client: ClientTimeouts,
    /// Config errors seen by requests, logged once a minute each rather than per request.
    said: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
    /// The access log's line format, when there is an access log.
    access_log: Option<crate::plugin::Template>,
}

/// How often one config error met by requests is logged again.
const SAY_AGAIN: Duration = Duration::from_secs(60);

/// Per-request client limits (`proxy:` in config.yaml); the header deadline and the connection
/// cap are in [`guard`].
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Between two reads of the request body.
    pub body: Duration,
    /// Between two writes to the client.
    pub send: Duration,
    /// The wait for the next request; `None`: no keep-alive.
    pub keepalive: Option<Duration>,
    /// The largest request body (0: no limit).
    pub max_body: u64,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            body: Duration::from_secs(60),
            send: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(60)),
            max_body: 0,
        }
    }
}

impl Gateway {
    /// `pools` is shared with the status listener.
    pub fn new(store: Arc<Store>, upstream_ca: Option<TrustedCa>, pools: Arc<Pools>) -> Gateway {
        Gateway {
            store,
            upstream_ca,
            pools,
            client: ClientTimeouts::default(),
            said: Default::default(),
            access_log: None,
        }
    }

    /// Logs a config error a request met (a missing service or upstream), once a minute at
    /// most for each, so a flood of requests does not flood the log.
    fn say_once(&self, message: &str) {
        let mut said = self.said.lock();
        let now = Instant::now();
        if said
            .get(message)
            .is_some_and(|at| now.duration_since(*at) < SAY_AGAIN)
        {
            return;
        }
        if said.len() > 1024 {
            said.retain(|_, at| now.duration_since(*at) < SAY_AGAIN);
        }
        said.insert(message.to_string(), now);
        log::error!("{message} (said once a minute while it lasts)");
    }

    /// Writes one line per request in `format` (nginx's `log_format` language).
    pub fn with_access_log(mut self, format: &str) -> Gateway {
        self.access_log = Some(crate::plugin::Template::parse(format));
        self
    }

    pub fn with_client_timeouts(mut self, client: ClientTimeouts) -> Gateway {
        self.client = client;
        self
    }
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    route: Option<Arc<RouteEntry>>,
    /// The route's upstream, resolved once in `request_filter` and used by every try.
    target: Option<Arc<Target>>,
    /// Nodes tried so far, for retries and logs.
    tried: Vec<Node>,
    /// The node of the try under way, and when it started (latency, load, passive checks).
    current: Option<(Arc<NodeState>, Instant)>,
    /// When the first try started (`retry_timeout`).
    first_try: Option<Instant>,
    /// The try's place in its peer's connection pool (`keepalive_pool.size`).
    lease: Option<Lease>,
    /// This request is the last on its upstream connection (`keepalive_pool.requests`, or
    /// `size` reached).
    close_upstream: bool,
    /// The upstream's answer ends its connection.
    upstream_closes: bool,
    client_ip: Option<IpAddr>,
    /// The original Host header, for `pass_host: pass` and X-Forwarded-Host.
    host_header: Option<String>,
    /// The global rules' plugins (when there are any); the route's are in `plugins.route`.
    global: Option<Arc<Chain>>,
    /// What the plugins know of this request (consumer, route chain, their own values).
    plugins: RequestState,
    /// Request body bytes read so far (for `client-control`).
    body_read: u64,
    /// A body held back for the plugins that read it whole (see `body`).
    held: Option<body::Held>,
    /// `client_max_body_size` (0: none).
    max_body: u64,
    /// The answer for a request refused after its upstream request began (a held body a
    /// plugin refused), written by `fail_to_proxy`.
    pending: Option<crate::plugin::Answer>,
    /// When the request header was in (`request_time`).
    started: Option<Instant>,
    /// The address of the last node tried (the metrics' `node`).
    node_addr: Option<std::net::SocketAddr>,
    /// The upstream sent the answer's header.
    from_upstream: bool,
    /// The upstream's last body byte arrived.
    upstream_done: Option<Instant>,
    request_header_bytes: u64,
    response_header_bytes: u64,
    /// What the access log and the logger plugins read of the request beyond the counters,
    /// taken only while something logs requests (see `logs::details_wanted`).
    details: Option<Box<Details>>,
}

/// The request line as it came and the request as it went upstream.
struct Details {
    start_time: std::time::SystemTime,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    upstream_host: Option<http::HeaderValue>,
    upstream_uri: Option<http::Uri>,
}

impl Ctx {
    /// Reads the body before the request phases if a plugin of the global or route chain
    /// reads it whole (see `body`); `Err` is the answer.
    async fn body_for_plugins(
        &mut self,
        session: &mut Session,
        max_body: u64,
    ) -> std::result::Result<(), crate::plugin::Answer> {
        let wants = [self.global.as_ref(), self.plugins.route.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|c| c.wants_body())
            .min();
        self.max_body = max_body;
        match wants {
            Some(w) => body::prepare(session, &mut self.plugins, &mut self.held, w, max_body).await,
            None => Ok(()),
        }
    }

    /// Runs `f` on the global chain, then on the route's.
    fn each_chain(&mut self, session: &mut Session, mut f: impl FnMut(&Chain, &mut Cx<'_>)) {
        let global = self.global.clone();
        let route = self.plugins.route.clone().filter(|r| !r.is_empty());
        if global.is_none() && route.is_none() {
            return;
        }
        let mut cx = Cx {
            session,
            state: &mut self.plugins,
        };
        for chain in [global, route].into_iter().flatten() {
            f(&chain, &mut cx);
        }
    }

    fn header_filters(&mut self, session: &mut Session, resp: &mut ResponseHeader) {
        self.each_chain(session, |c, cx| c.header_filter(cx, resp));
    }

    fn body_filters(&mut self, session: &mut Session, body: &mut Option<Bytes>, end: bool) {
        self.each_chain(session, |c, cx| c.body_filter(cx, body, end));
    }

    /// APISIX's order: global rewrite, route rewrite, (the consumer's plugins join), global
    /// access, route access. The first answer ends the request.
    async fn run_request_phases(&mut self, session: &mut Session) -> Option<crate::plugin::Answer> {
        let global = self.global.clone();
        let mut cx = Cx {
            session,
            state: &mut self.plugins,
        };
        if let Some(g) = &global {
            if let Some(a) = g.run(Phase::Rewrite, &mut cx).await {
                return Some(a);
            }
        }
        if let Some(route) = cx.state.route.clone() {
            if let Some(a) = route.run(Phase::Rewrite, &mut cx).await {
                return Some(a);
            }
            if let Some(c) = cx.state.consumer.as_ref().filter(|c| c.group_missing) {
                log::error!(
                    "consumer {}: consumer group {} not found: answering 503",
                    c.username,
                    c.group_id.as_deref().unwrap_or("")
                );
                return Some(crate::plugin::Answer::status(503));
            }
            let consumer = cx.state.consumer.as_ref().map(|c| c.plugins.clone());
            if let Some(consumer) = consumer.filter(|c| !c.is_empty()) {
                let merged = Arc::new(route.with_consumer(&consumer));
                cx.state.route = Some(merged.clone());
                // A consumer's plugin may read the body whole too.
                if let Some(wants) = merged.wants_body() {
                    let prepared =
                        body::prepare(cx.session, cx.state, &mut self.held, wants, self.max_body);
                    if let Err(a) = prepared.await {
                        return Some(a);
                    }
                }
                if let Some(a) = merged.run(Phase::ConsumerRewrite, &mut cx).await {
                    return Some(a);
                }
            }
        }
        if let Some(g) = &global {
            if let Some(a) = g.run(Phase::Access, &mut cx).await {
                return Some(a);
            }
        }
        if let Some(route) = cx.state.route.clone() {
            if let Some(a) = route.run(Phase::Access, &mut cx).await {
                return Some(a);
            }
        }
        None
    }
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

fn http_error(status: u16, why: String) -> Box<Error> {
    let mut e = Error::explain(ErrorType::HTTPStatus(status), why);
    e.set_retry(false);
    e
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

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        guard::header_read();
        ctx.started = Some(Instant::now());
        ctx.request_header_bytes = finish::request_header_len(session.req_header());
        crate::metrics::count_request();
        if crate::logs::details_wanted() {
            let req = session.req_header();
            ctx.details = Some(Box::new(Details {
                start_time: std::time::SystemTime::now(),
                method: req.method.clone(),
                uri: req.uri.clone(),
                version: req.version,
                upstream_host: None,
                upstream_uri: None,
            }));
        }
        match self.client.keepalive {
            // Only where the request keeps the connection (not HTTP/1.0 without keep-alive).
            Some(k) if session.get_keepalive().is_some() => {
                session.set_keepalive(Some(k.as_secs().max(1)))
            }
            Some(_) => {}
            None => session.set_keepalive(None),
        }
        // An upgraded connection (websocket) may be idle for long; its reads are not a body's.
        if !session.is_upgrade_req() {
            session.set_read_timeout(Some(self.client.body));
        }
        session.set_write_timeout(Some(self.client.send));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Err(status) = request_line::check(session.req_header_mut()) {
            respond::send(session, ctx, crate::plugin::Answer::status(status)).await?;
            return Ok(true);
        }
        if let Some(answer) = respond::too_large(session.req_header(), self.client.max_body) {
            respond::send(session, ctx, answer).await?;
            return Ok(true);
        }
        if self.client.max_body > 0 {
            ctx.plugins.body_limit = Some(self.client.max_body);
        }
        let tables = self.store.load();
        if let Some(why) = tables.global_blocked() {
            self.say_once(&format!("{why}: answering 503"));
            respond::send(session, ctx, crate::plugin::Answer::status(503)).await?;
            return Ok(true);
        }
        let ip = client_ip(session);
        let found = {
            let req = session.req_header();
            let path = normalize_path(req.uri.path());
            let host = request_host(req);
            let vars = request_vars(session, &path, host.as_deref(), ip);
            let found = tables
                .router
                .find(&Request {
                    host: host.as_deref(),
                    path: &path,
                    method: req.method.as_str(),
                    remote_addr: ip,
                    vars: &vars,
                })
                .cloned();
            if let Some(entry) = &found {
                ctx.plugins.matched =
                    finish::matched(&entry.route.uris, &entry.hosts, &path, host.as_deref());
            }
            found
        };
        ctx.client_ip = ip;
        ctx.plugins.client_ip = ip;
        // An HTTPS listener's connection (the `scheme` var, X-Forwarded-Proto).
        if let Some(tls) = session.digest().and_then(|d| d.ssl_digest.clone()) {
            ctx.plugins.scheme = "https";
            let host = request_host(session.req_header());
            let handshake = tls.extension.get::<crate::tls::Handshake>();
            if !crate::tls::host_allowed(tables.certs(), handshake, host.as_deref()) {
                // mTLS cannot be skipped by asking for its host over another SNI's connection.
                respond::send(session, ctx, crate::plugin::Answer::status(400)).await?;
                return Ok(true);
            }
        }
        let global = tables.global_chain();
        ctx.global = (!global.is_empty()).then(|| global.clone());
        ctx.plugins.consumer_index = Some(tables.consumers().clone());
        if !tables.plugin_metadata().is_empty() {
            ctx.plugins.metadata = Some(tables.plugin_metadata().clone());
        }
        let req = session.req_header_mut();
        for h in &CONSUMER_HEADERS {
            if req.headers.contains_key(h) {
                req.remove_header(h);
            }
        }
        let Some(entry) = found else {
            if let Err(answer) = ctx.body_for_plugins(session, self.client.max_body).await {
                respond::send(session, ctx, answer).await?;
                return Ok(true);
            }
            // Global rules run for requests no route takes too (a global limit counts 404s).
            let answer = match ctx.run_request_phases(session).await {
                Some(a) => a,
                None => respond::no_route(),
            };
            respond::send(session, ctx, answer).await?;
            return Ok(true);
        };
        // A missing service or plugin_config is known before the plugins run; the upstream is
        // looked up after them (a redirect or a mock needs none).
        if let Err(why) = tables.check_refs(&entry) {
            self.say_once(&why.message);
            respond::send(session, ctx, respond::unroutable(&why)).await?;
            return Ok(true);
        }
        ctx.plugins.route = Some(entry.chain.clone());
        // The Host the client sent (X-Forwarded-Host), before a plugin rewrites it.
        ctx.host_header = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Err(answer) = ctx.body_for_plugins(session, self.client.max_body).await {
            respond::send(session, ctx, answer).await?;
            return Ok(true);
        }
        if let Some(answer) = ctx.run_request_phases(session).await {
            respond::send(session, ctx, answer).await?;
            return Ok(true);
        }
        // `real-ip` may have found the client behind a trusted proxy.
        ctx.client_ip = ctx.plugins.client_ip;
        let choice = ctx.plugins.upstream.take();
        let target = match tables.target_with(&entry, choice.as_ref()) {
            Ok(t) => t,
            Err(why) => {
                self.say_once(&why.message);
                respond::send(session, ctx, respond::unroutable(&why)).await?;
                return Ok(true);
            }
        };
        ctx.route = Some(entry);
        ctx.target = Some(Arc::new(target));
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(held) = ctx.held.as_mut() {
            match held.take(body, end_of_stream) {
                Ok(None) => return Ok(()),
                Ok(Some(whole)) => {
                    ctx.held = None;
                    ctx.plugins.body = Some(whole.clone());
                    let mut refused = None;
                    ctx.each_chain(session, |c, cx| {
                        if refused.is_none() {
                            refused = c.check_body(cx, &whole);
                        }
                    });
                    if let Some(answer) = refused {
                        let status = answer.status;
                        ctx.pending = Some(answer);
                        return Err(http_error(
                            status,
                            "a plugin refused the request body".into(),
                        ));
                    }
                    *body = Some(whole);
                }
                Err(answer) => {
                    let status = answer.status;
                    ctx.pending = Some(answer);
                    return Err(http_error(
                        status,
                        "request body above what plugins read".into(),
                    ));
                }
            }
        }
        ctx.each_chain(session, |c, cx| c.request_body(cx, body, end_of_stream));
        // client_max_body_size, or the route's client-control in its place.
        if let (Some(limit), Some(b)) = (ctx.plugins.body_limit.filter(|l| *l > 0), body.as_ref()) {
            ctx.body_read += b.len() as u64;
            if ctx.body_read > limit {
                return Err(http_error(413, format!("request body above {limit} bytes")));
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(target), Some(entry)) = (ctx.target.clone(), ctx.route.clone()) else {
            return Err(http_error(500, "no route in context".into()));
        };
        let key = match target.balancer.kind() {
            BalancerKind::Chash => hash_key(
                session,
                &target.upstream,
                ctx.client_ip,
                ctx.plugins.consumer.as_ref().map(|c| c.username.as_str()),
            ),
            _ => None,
        };
        let tried = &ctx.tried;
        let picked = target
            .balancer
            .pick(key.as_deref(), |n| tried.contains(n))
            .or_else(|| {
                // Every node was tried: start over rather than fail early.
                (!tried.is_empty())
                    .then(|| target.balancer.pick(key.as_deref(), |_| false))
                    .flatten()
            })
            .ok_or_else(|| {
                log::error!(
                    "route {}: {} has no node to send to",
                    entry.route.id,
                    target.upstream_name
                );
                http_error(502, format!("{}: no available node", target.upstream_name))
            })?;
        let node = picked.node.clone();
        let addr = match picked.address().await {
            Ok(a) => a,
            Err(why) => {
                log::error!(
                    "route {}: {} node {}: {why}",
                    entry.route.id,
                    target.upstream_name,
                    node.authority()
                );
                ctx.first_try.get_or_insert_with(Instant::now);
                ctx.tried.push(node);
                let mut e = Error::explain(ErrorType::ConnectNoRoute, why);
                e.set_retry(ctx.may_retry(&target.upstream));
                return Err(e);
            }
        };
        let tls = target.upstream.scheme.is_tls();
        let sni = if tls {
            match &target.upstream.pass_host {
                PassHost::Rewrite(h) => h.clone(),
                PassHost::Node => node.host.clone(),
                // The host the router saw: port and IPv6 brackets removed.
                PassHost::Pass => request_host(session.req_header())
                    .map(|h| h.into_owned())
                    .unwrap_or_else(|| node.host.clone()),
            }
        } else {
            String::new()
        };
        ctx.node_addr = Some(addr);
        let mut peer = HttpPeer::new(addr, tls, sni);
        // APISIX does not verify upstream certificates unless `tls.verify` is set.
        let verify = target.upstream.tls.verify;
        peer.options.verify_cert = verify;
        peer.options.verify_hostname = verify;
        if tls {
            if verify {
                peer.options.ca = self.upstream_ca.clone();
            }
            peer.client_cert_key = target.balancer.client_cert.clone();
        }
        let t = target.timeout;
        peer.options.connection_timeout = Some(t.connect.unwrap_or(DEFAULT_TIMEOUT));
        peer.options.write_timeout = Some(t.send.unwrap_or(DEFAULT_TIMEOUT));
        peer.options.read_timeout = Some(t.read.unwrap_or(DEFAULT_TIMEOUT));
        // Replacing a previous try's lease gives its place back.
        ctx.lease = Some(if session.is_upgrade_req() {
            self.pools.checkout_unpooled(&mut peer)
        } else {
            self.pools
                .checkout(&mut peer, &target.upstream.keepalive_pool)
        });
        ctx.end_try(None, &target.balancer.checks);
        picked.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        ctx.first_try.get_or_insert(now);
        ctx.current = Some((picked, now));
        ctx.tried.push(node);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(target) = ctx.target.clone() else {
            return Ok(());
        };
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
        let scheme = if ctx.plugins.scheme.is_empty() {
            "http"
        } else {
            ctx.plugins.scheme
        };
        let proto = keep_or("X-Forwarded-Proto", scheme.into());
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
        // Not pooled again (`keepalive_pool`); an upgrade is never pooled, and needs its
        // `Connection: Upgrade`.
        if ctx.close_upstream && !up.headers.contains_key(http::header::UPGRADE) {
            up.insert_header(http::header::CONNECTION, "close")?;
        }
        ctx.each_chain(session, |c, cx| c.before_proxy(cx, up));
        if let Some(d) = ctx.details.as_mut() {
            d.upstream_host = up.headers.get(http::header::HOST).cloned();
            d.upstream_uri = Some(up.uri.clone());
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
        let outcome = if matches!(e.etype(), ErrorType::ConnectTimedout) {
            Outcome::Timeout
        } else {
            Outcome::TcpFailure
        };
        if let (Some(target), Some(entry)) = (ctx.target.clone(), ctx.route.clone()) {
            log::error!(
                "route {}: {} node {}: connect failed: {e}",
                entry.route.id,
                target.upstream_name,
                peer._address
            );
            ctx.end_try(Some(outcome), &target.balancer.checks);
            if ctx.may_retry(&target.upstream) {
                e.set_retry(true);
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {}", peer._address));
        e.retry.decide_reuse(client_reused);
        let Some(target) = ctx.target.clone() else {
            return e;
        };
        // A client that went away says nothing about the node, and is not worth a retry.
        if *e.esource() != ErrorSource::Upstream {
            ctx.end_try(None, &target.balancer.checks);
            return e;
        }
        let outcome = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Outcome::Timeout,
            _ => Outcome::TcpFailure,
        };
        ctx.end_try(Some(outcome), &target.balancer.checks);
        // Sent again only when nothing reached the client and the method is safe to repeat
        // (a stale pooled connection is retried by Pingora's own decision above).
        let safe = matches!(
            session.req_header().method.as_str(),
            "GET" | "HEAD" | "OPTIONS"
        );
        if session.response_written().is_none() && safe && ctx.may_retry(&target.upstream) {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let established = digest
            .and_then(|d| d.timing_digest.first().cloned().flatten())
            .map(|t| t.established_ts)
            .unwrap_or(std::time::UNIX_EPOCH);
        ctx.upstream_closes = false;
        ctx.close_upstream = ctx
            .lease
            .as_mut()
            .is_some_and(|l| l.connected((fd, established), reused));
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.plugins.status = resp.status.as_u16();
        ctx.header_filters(session, resp);
        ctx.response_header_bytes = finish::response_header_len(resp);
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        ctx.body_filters(session, body, end_of_stream);
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.plugins.upstream_status = Some(resp.status.as_u16());
        ctx.from_upstream = true;
        ctx.upstream_closes = closes_connection(resp);
        if let (Some((node, started)), Some(target)) = (&ctx.current, &ctx.target) {
            node.stats.observe(started.elapsed());
            if let Some(t) = &target.balancer.checks.passive {
                let status = resp.status.as_u16();
                if let Some(healthy) = node.health.record(Outcome::Status(status), t) {
                    log::warn!(
                        "{}: node {} is now {} (passive check: HTTP {status})",
                        target.upstream_name,
                        node.node.authority(),
                        if healthy { "healthy" } else { "unhealthy" }
                    );
                }
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            ctx.upstream_done = Some(Instant::now());
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.plugins.finished = Some(finish::finished(session, ctx));
        ctx.each_chain(session, |c, cx| c.log(cx));
        finish::count(ctx);
        if let Some(format) = &self.access_log {
            let cx = Cx {
                session,
                state: &mut ctx.plugins,
            };
            let mut line = String::with_capacity(256);
            cx.with_log_vars(|vars| {
                format.render_each(&mut line, |name, out| match vars.var(name) {
                    Some(v) => crate::logs::access::escape_into(out, &v),
                    None => out.push('-'),
                })
            });
            crate::logs::access::write(line);
        }
        if let Some((node, _)) = ctx.current.take() {
            node.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(mut lease) = ctx.lease.take() {
            lease.reusable = e.is_none() && !ctx.close_upstream && !ctx.upstream_closes;
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            // The client stopped sending its body (client_body_timeout): nginx's 408.
            ErrorType::ReadTimedout if *e.esource() == ErrorSource::Downstream => 408,
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
                let upstream = ctx.target.as_ref().map_or("", |t| t.upstream_name.as_str());
                log::error!(
                    "route {}: {upstream} node {node}: answering {code}: {e}",
                    entry.route.id
                );
            }
        }
        if !ctx.tried.is_empty() && code >= 500 {
            // The upstream was asked and failed (api-breaker counts it as nginx does).
            ctx.plugins.upstream_status = Some(code);
        }
        if code > 0 && session.response_written().is_none() {
            let answer = ctx
                .pending
                .take()
                .unwrap_or_else(|| crate::plugin::Answer::status(code));
            let _ = respond::send(session, ctx, answer).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

impl Ctx {
    /// Closes the try under way: its node is no longer loaded, and a failure counts against
    /// it for passive checks.
    fn end_try(&mut self, failure: Option<Outcome>, checks: &Checks) {
        let Some((node, _)) = self.current.take() else {
            return;
        };
        node.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let (Some(outcome), Some(t)) = (failure, &checks.passive) {
            if let Some(healthy) = node.health.record(outcome, t) {
                log::warn!(
                    "node {} is now {} (passive check: {outcome:?})",
                    node.node.authority(),
                    if healthy { "healthy" } else { "unhealthy" }
                );
            }
        }
    }

    /// Whether another try fits in `retries` (default: nodes − 1) and `retry_timeout`.
    fn may_retry(&self, upstream: &Upstream) -> bool {
        let retries = upstream
            .retries
            .map(|r| r as usize)
            .unwrap_or_else(|| upstream.nodes.len().saturating_sub(1));
        let in_time = match (upstream.retry_timeout, self.first_try) {
            (Some(limit), Some(start)) if !limit.is_zero() => start.elapsed() < limit,
            _ => true,
        };
        self.tried.len() <= retries && in_time
    }
}

/// The APISIX variables of a downstream request.
fn request_vars<'a>(
    session: &'a Session,
    path: &'a str,
    host: Option<&'a str>,
    ip: Option<IpAddr>,
) -> RequestVars<'a> {
    RequestVars {
        req: session.req_header(),
        path,
        host,
        client_ip: ip,
        server_port: server_port(session),
        scheme: "http",
    }
}

/// The consistent-hash key of a request, from the upstream's `hash_on` and `key`.
fn hash_key(
    session: &Session,
    upstream: &Upstream,
    ip: Option<IpAddr>,
    consumer: Option<&str>,
) -> Option<String> {
    let req = session.req_header();
    let path = normalize_path(req.uri.path());
    let host = request_host(req);
    let vars = request_vars(session, &path, host.as_deref(), ip);
    let key = upstream.key.as_deref().unwrap_or("remote_addr");
    let var = |name: &str| {
        vars.var(name.trim_start_matches('$'))
            .map(|v| v.into_owned())
    };
    match upstream.hash_on {
        HashOn::Header => var(&format!(
            "http_{}",
            key.to_ascii_lowercase().replace('-', "_")
        )),
        HashOn::Cookie => var(&format!("cookie_{key}")),
        // The consumer an auth plugin found; without one, the client address (as APISIX).
        HashOn::Consumer => consumer.map(str::to_string).or_else(|| var("remote_addr")),
        HashOn::VarsCombinations => {
            // "$host-$uri": each $name is replaced with its value.
            let mut out = String::new();
            let mut rest = key;
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                let after = &rest[i + 1..];
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                out.push_str(&var(&after[..end]).unwrap_or_default());
                rest = &after[end..];
            }
            out.push_str(rest);
            Some(out)
        }
        HashOn::Vars => var(key),
    }
}

/// Whether an upstream answer ends its connection, as Pingora decides: `Connection: close`,
/// HTTP/1.0 without `keep-alive`, or a protocol switch.
fn closes_connection(resp: &ResponseHeader) -> bool {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return true;
    }
    let has = |token: &str| {
        resp.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has("close") || (resp.version == http::Version::HTTP_10 && !has("keep-alive"))
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

//! Active health checks: one task per upstream that has `checks.active`, probing its nodes at
//! the healthy or unhealthy interval. The task ends when its upstream leaves the tables.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::balancer::{Balancer, NodeState};
use super::health::{ActiveCheck, Outcome, ProbeKind};
use crate::tables::Store;

/// Sends one probe to `node`.
async fn probe(check: &ActiveCheck, node: &NodeState) -> Outcome {
    let port = check.port.unwrap_or(node.node.port);
    let work = async {
        let tcp = match TcpStream::connect((node.node.host.as_str(), port)).await {
            Ok(s) => s,
            Err(_) => return Outcome::TcpFailure,
        };
        match check.kind {
            ProbeKind::Tcp => Outcome::Status(200),
            ProbeKind::Http => http_probe(check, node, tcp).await,
            ProbeKind::Https => match tls(check, node, tcp).await {
                Some(stream) => http_probe(check, node, stream).await,
                None => Outcome::TcpFailure,
            },
        }
    };
    tokio::time::timeout(check.timeout, work)
        .await
        .unwrap_or(Outcome::Timeout)
}

async fn tls(
    check: &ActiveCheck,
    node: &NodeState,
    tcp: TcpStream,
) -> Option<pingora_core::tls::tokio_ssl::SslStream<TcpStream>> {
    use pingora_core::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut builder = SslConnector::builder(SslMethod::tls()).ok()?;
    // Probes check liveness, not identity (APISIX's checker does not verify either).
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let name = check.host.as_deref().unwrap_or(&node.node.host);
    let ssl = connector.configure().ok()?.into_ssl(name).ok()?;
    let mut stream = pingora_core::tls::tokio_ssl::SslStream::new(ssl, tcp).ok()?;
    std::pin::Pin::new(&mut stream).connect().await.ok()?;
    Some(stream)
}

async fn http_probe<S: AsyncRead + AsyncWrite + Unpin>(
    check: &ActiveCheck,
    node: &NodeState,
    mut stream: S,
) -> Outcome {
    let host = check.host.clone().unwrap_or_else(|| node.node.authority());
    let mut req = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: portico-health-check\r\nConnection: close\r\n",
        check.http_path
    );
    for h in &check.req_headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return Outcome::TcpFailure;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return Outcome::TcpFailure,
            Ok(n) => got += n,
        }
    }
    // "HTTP/1.1 200 …"
    std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Outcome::TcpFailure, Outcome::Status)
}

/// Probes the nodes of one upstream until it is gone from the tables.
pub async fn run(balancer: Weak<Balancer>, name: String) {
    let mut next: Vec<Instant> = Vec::new();
    loop {
        let Some(b) = balancer.upgrade() else {
            log::debug!("health checks of {name} stop: the upstream is gone or changed");
            return;
        };
        let Some(check) = b.checks.active.clone() else {
            return;
        };
        let nodes = b.nodes().to_vec();
        drop(b);
        next.resize(nodes.len(), Instant::now());
        let now = Instant::now();
        let due: Vec<usize> = (0..nodes.len()).filter(|i| next[*i] <= now).collect();
        let results: Vec<(usize, Outcome)> = futures::stream::iter(due)
            .map(|i| {
                let (check, node) = (&check, nodes[i].clone());
                async move { (i, probe(check, &node).await) }
            })
            .buffer_unordered(check.concurrency)
            .collect()
            .await;
        for (i, outcome) in results {
            let node = &nodes[i];
            if let Some(healthy) = node.health.record(outcome, &check.thresholds) {
                let state = if healthy { "healthy" } else { "unhealthy" };
                log::warn!(
                    "{name}: node {} is now {state} (active check: {outcome:?})",
                    node.node.authority()
                );
            }
            next[i] = Instant::now()
                + if node.health.is_healthy() {
                    check.healthy_interval
                } else {
                    check.unhealthy_interval
                };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the checkers of upstreams that have active checks, as they appear in the tables:
/// woken by each published version, so a new upstream is probed at once.
pub struct HealthService {
    pub store: Arc<Store>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut published = self.store.subscribe();
        loop {
            let tables = self.store.load();
            for (name, balancer) in tables.balancers() {
                if balancer.checks.active.is_some() && balancer.claim_checker() {
                    tokio::spawn(run(Arc::downgrade(balancer), name.clone()));
                }
            }
            drop(tables);
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

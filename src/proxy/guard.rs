//! Bounds on what a client connection may hold, in front of Pingora's HTTP handling (whose
//! own defaults let a reused HTTP/1.1 connection wait forever and a header trickle in for as
//! long as each byte comes within 60 s):
//!
//! - `client_header_timeout` as a total deadline for each request header (a connection that
//!   misses it is closed, as nginx does with its 408);
//! - `keepalive_timeout` for the wait between requests;
//! - a cap on open client connections, with a log line (at most once a minute) when reached.
//!
//! The body and send timeouts are per request and set by the proxy's `early_request_filter`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::sync::Notify;

tokio::task_local! {
    /// Told by the proxy's first hook that the request header is in.
    static HEADER_READ: Arc<Notify>;
    /// Requests started on this connection (the first one has no keep-alive wait before it).
    static REQUESTS: Cell<u32>;
}

/// Called by the proxy's first hook: the header of the request under way is read.
pub fn header_read() {
    let _ = HEADER_READ.try_with(|n| n.notify_one());
}

/// The client-side limits of `proxy:` in config.yaml.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub header_timeout: Duration,
    /// `None`: no keep-alive (each connection serves one request).
    pub keepalive_timeout: Option<Duration>,
    pub max_connections: usize,
}

/// Puts the header deadline and the keep-alive wait on every HTTP/1 request of `inner`.
pub struct HeaderDeadline<A> {
    inner: Arc<A>,
    limits: ClientLimits,
}

impl<A> HeaderDeadline<A> {
    pub fn new(inner: A, limits: ClientLimits) -> HeaderDeadline<A> {
        HeaderDeadline {
            inner: Arc::new(inner),
            limits,
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for HeaderDeadline<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let inner = self.inner.clone();
        if session.is_http2() {
            // Streams of one HTTP/2 connection run in tasks of their own.
            return inner.process_new_http(session, shutdown).await;
        }
        let reused = REQUESTS
            .try_with(|n| {
                let before = n.get();
                n.set(before.saturating_add(1));
                before > 0
            })
            .unwrap_or(false);
        let limits = self.limits;
        if session.get_keepalive().is_some() {
            // Pingora's wait per read before this header (60 s on a new connection, none at
            // all on a reused one); the deadline below bounds the whole header.
            let wait = if reused {
                limits.keepalive_timeout.unwrap_or(limits.header_timeout)
            } else {
                limits.header_timeout
            };
            session.set_keepalive(Some(wait.as_secs().max(1)));
        }
        let deadline = if reused {
            limits.keepalive_timeout.unwrap_or_default() + limits.header_timeout
        } else {
            limits.header_timeout
        };
        let read = Arc::new(Notify::new());
        let work = HEADER_READ.scope(read.clone(), async move {
            inner.process_new_http(session, shutdown).await
        });
        tokio::pin!(work);
        // nginx's stub_status states: reading the header, then writing the answer. A reused
        // connection waits for its next header without a sign of when it starts: `waiting`.
        let reading = (!reused).then(crate::metrics::connections::reading);
        tokio::select! {
            biased;
            done = &mut work => return done,
            _ = read.notified() => {}
            _ = tokio::time::sleep(deadline) => {
                log::debug!("client_header_timeout: no whole request header within {deadline:?}; closing");
                return None;
            }
        }
        drop(reading);
        let _writing = crate::metrics::connections::writing();
        work.await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// Counts open client connections and refuses those above the cap.
pub struct ConnectionCap<A> {
    inner: Arc<A>,
    max: usize,
    open: Arc<AtomicUsize>,
    /// When the cap was last logged (seconds since start), to log it once a minute.
    last_logged: AtomicU64,
    started: std::time::Instant,
}

impl<A> ConnectionCap<A> {
    pub fn new(inner: A, max: usize) -> ConnectionCap<A> {
        ConnectionCap {
            inner: Arc::new(inner),
            max,
            open: Arc::new(AtomicUsize::new(0)),
            last_logged: AtomicU64::new(u64::MAX),
            started: std::time::Instant::now(),
        }
    }

    /// Open client connections now (shared with the status listener).
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }
}

/// Gives a connection's place back when it ends, however it ends.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<A> ServerApp for ConnectionCap<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let now_open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let place = Place(self.open.clone());
        let refused = self.max > 0 && now_open > self.max;
        let _active = crate::metrics::connections::accepted(!refused);
        if refused {
            let now = self.started.elapsed().as_secs();
            let last = self.last_logged.load(Ordering::Relaxed);
            if last == u64::MAX || now >= last + 60 {
                self.last_logged.store(now, Ordering::Relaxed);
                log::warn!(
                    "proxy.max_connections ({}) reached: closing new client connections until some end",
                    self.max
                );
            }
            drop(place);
            return None;
        }
        let inner = self.inner.clone();
        let out = REQUESTS
            .scope(Cell::new(0), async move {
                inner.process_new(stream, shutdown).await
            })
            .await;
        drop(place);
        out
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

//! Where finished requests are written, off the request path: the access log, and the
//! batches the logger plugins ship (HTTP, file, TCP, UDP).
//!
//! A request only formats its line or entry and hands it to a bounded queue; a full queue
//! drops it and counts the drop, so a slow disk or a dead log server never slows a request
//! nor grows memory. The shipping runs on a runtime of its own (one thread), started the
//! first time something logs.

pub mod access;
pub mod batch;
pub mod errors;
pub mod json;
pub mod otlp;
pub mod sink;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static DETAILS: AtomicBool = AtomicBool::new(false);

/// Whether requests should keep what only logs read (the request line as sent, the request
/// as it went upstream): once the access log or a logger plugin is on.
pub fn details_wanted() -> bool {
    DETAILS.load(Ordering::Relaxed)
}

/// Something logs requests from now on.
pub fn want_details() {
    DETAILS.store(true, Ordering::Relaxed);
}

/// The runtime that ships logs: one thread, never the proxy's. `None` when the thread
/// could not start (logged once; the logs are then dropped, the requests still served).
pub fn runtime() -> Option<&'static tokio::runtime::Handle> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("portico-logs".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Some(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            log::error!("cannot start the log shipping runtime: {e}");
                            let _ = tx.send(None);
                        }
                    }
                });
            if let Err(e) = &spawned {
                log::error!("cannot start the log shipping thread: {e}");
            }
            spawned.ok().and_then(|_| rx.recv().ok().flatten())
        })
        .as_ref()
}

/// Says something at most once a minute (a full queue, a dead endpoint), with how many
/// times it happened since it was last said.
pub struct Once {
    last: parking_lot::Mutex<Option<Instant>>,
    count: std::sync::atomic::AtomicU64,
}

impl Default for Once {
    fn default() -> Self {
        Once {
            last: parking_lot::Mutex::new(None),
            count: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Once {
    pub fn say(&self, message: impl FnOnce(u64) -> String) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(Instant::now());
        self.count.store(0, Ordering::Relaxed);
        log::warn!("{}", message(n));
    }
}

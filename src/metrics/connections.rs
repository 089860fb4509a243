//! Client connections as nginx's stub_status counts them (`apisix_nginx_http_current_connections`):
//! the proxy's connection guard moves these as connections open, read a header, are served
//! and close.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicI64 = AtomicI64::new(0);
static READING: AtomicI64 = AtomicI64::new(0);
static WRITING: AtomicI64 = AtomicI64::new(0);

/// The counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    pub accepted: u64,
    pub handled: u64,
    pub active: u64,
    pub reading: u64,
    pub writing: u64,
}

impl Connections {
    /// Open connections doing neither: between requests.
    pub fn waiting(&self) -> u64 {
        self.active.saturating_sub(self.reading + self.writing)
    }
}

pub fn snapshot() -> Connections {
    let g = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
    Connections {
        accepted: ACCEPTED.load(Ordering::Relaxed),
        handled: HANDLED.load(Ordering::Relaxed),
        active: g(&ACTIVE),
        reading: g(&READING),
        writing: g(&WRITING),
    }
}

/// A connection was accepted; `handled` when it was not refused (`proxy.max_connections`).
/// Counts as active until the guard is dropped.
pub fn accepted(handled: bool) -> State {
    ACCEPTED.fetch_add(1, Ordering::Relaxed);
    if handled {
        HANDLED.fetch_add(1, Ordering::Relaxed);
    }
    State::enter(&ACTIVE)
}

/// A request header is being read, until dropped.
pub fn reading() -> State {
    State::enter(&READING)
}

/// A request is being served, until dropped.
pub fn writing() -> State {
    State::enter(&WRITING)
}

/// Holds a connection in one state; leaves it however the connection ends.
pub struct State(&'static AtomicI64);

impl State {
    fn enter(gauge: &'static AtomicI64) -> State {
        gauge.fetch_add(1, Ordering::Relaxed);
        State(gauge)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

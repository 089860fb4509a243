//! `keepalive_pool` at run time: how many idle connections each peer keeps (`size`) and how
//! many requests one connection serves (`requests`).
//!
//! Pingora keeps idle upstream connections in one pool for all peers, with no per-peer limit
//! and no way to close a pooled connection from outside. So `size` is kept by deciding, when a
//! request is sent, how its connection will go back to the pool:
//!
//! - at most `size` connections per peer are *kept*: they go back with the upstream's
//!   `idle_timeout`;
//! - the others are *spare*: they go back with [`SPARE_IDLE`], long enough to be picked up
//!   again under load (no connection churn when concurrency exceeds `size`), short enough that
//!   a quiet peer is back to `size` idle connections a moment later. This is nginx's
//!   `keepalive` limit, with the excess closed after a short grace instead of at once.
//!
//! Open connections are counted exactly through Pingora's connection tracer, so a kept
//! connection that the server (or Pingora's global pool) closed while idle frees its place.

use ahash::AHashMap as HashMap;
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pingora_core::prelude::HttpPeer;
use pingora_core::upstreams::peer::{Peer, Tracer, Tracing};

use crate::model::KeepalivePool;

/// How long a spare connection waits in the pool for another request.
pub const SPARE_IDLE: Duration = Duration::from_secs(1);

/// An upstream connection: its socket and when it was established (socket numbers get reused).
pub type ConnKey = (i32, SystemTime);

/// The connections of every peer, grouped as Pingora pools them (by `reuse_hash`).
pub struct Pools {
    groups: RwLock<HashMap<u64, Arc<Group>>>,
    /// Groups held when the next sweep of unused ones happens (doubles with live ones, so a
    /// sweep costs little per new group).
    sweep_at: AtomicUsize,
}

/// Groups held before the first sweep.
const GROUPS_SWEEP: usize = 1024;

impl Default for Pools {
    fn default() -> Self {
        Pools {
            groups: RwLock::default(),
            sweep_at: AtomicUsize::new(GROUPS_SWEEP),
        }
    }
}

impl Pools {
    /// Takes a place in `peer`'s pool for this try, and sets how its connection goes back
    /// (`peer` must be complete: its pool key is read here).
    pub fn checkout(&self, peer: &mut HttpPeer, pool: &KeepalivePool) -> Lease {
        let group = self.traced_group(peer);
        let size = pool.size as usize;
        let kept = group.reserve(size);
        let idle_timeout = if kept {
            pool.idle_timeout
        } else {
            pool.idle_timeout.min(SPARE_IDLE)
        };
        peer.options.idle_timeout = Some(idle_timeout);
        Lease {
            group,
            size,
            idle_timeout,
            requests: pool.requests,
            kept,
            conn: None,
            reusable: false,
        }
    }

    /// For a connection that is never pooled again (a protocol upgrade): counted while open,
    /// holding no place.
    pub fn checkout_unpooled(&self, peer: &mut HttpPeer) -> Lease {
        let group = self.traced_group(peer);
        Lease {
            group,
            size: 0,
            idle_timeout: Duration::ZERO,
            requests: u32::MAX,
            kept: false,
            conn: None,
            reusable: false,
        }
    }

    /// Every peer's connections, for `GET /status/connections`.
    pub fn snapshot(&self) -> serde_json::Value {
        let groups = self.groups.read();
        let mut peers: Vec<serde_json::Value> = groups
            .values()
            .map(|g| {
                let mut st = lock(&g.state);
                let kept_idle = g.kept_idle(&mut st);
                serde_json::json!({
                    "peer": g.label,
                    "open": g.open.load(Ordering::Relaxed),
                    "busy": st.in_use.len(),
                    "kept_idle": kept_idle,
                    "kept_busy": st.kept_busy,
                })
            })
            .collect();
        peers.sort_by(|a, b| a["peer"].as_str().cmp(&b["peer"].as_str()));
        serde_json::Value::Array(peers)
    }

    /// `peer`'s group, with the tracer that counts its connections set on `peer` (only
    /// connections opened from now on carry it; reused ones carry their own).
    fn traced_group(&self, peer: &mut HttpPeer) -> Arc<Group> {
        let group = self.group(peer.reuse_hash(), || peer_label(peer));
        peer.options.tracer = Some(Tracer(Box::new(ConnTracer(group.clone()))));
        group
    }

    fn group(&self, key: u64, label: impl FnOnce() -> String) -> Arc<Group> {
        let groups = self.groups.read();
        if let Some(g) = groups.get(&key) {
            return g.clone();
        }
        drop(groups);
        let mut groups = self.groups.write();
        if groups.len() >= self.sweep_at.load(Ordering::Relaxed) {
            // Only the map holds a group with no open connection and no request under way.
            groups.retain(|_, g| Arc::strong_count(g) > 1);
            self.sweep_at
                .store((groups.len() * 2).max(GROUPS_SWEEP), Ordering::Relaxed);
        }
        groups
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Group {
                    label: label(),
                    ..Group::default()
                })
            })
            .clone()
    }
}

/// `address`, with `scheme` and SNI for TLS peers.
fn peer_label(peer: &HttpPeer) -> String {
    if peer.is_tls() {
        format!("https://{} (sni {})", peer._address, peer.sni)
    } else {
        peer._address.to_string()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

/// One peer's connections.
#[derive(Default)]
pub struct Group {
    /// The peer, for status.
    label: String,
    /// Connections open now, busy or idle (from the tracer).
    open: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections serving a request, with how many tries hold each (two for a moment:
    /// Pingora pools a connection before the try that used it ends, and another try can
    /// take it in between).
    in_use: HashMap<ConnKey, u32>,
    /// Requests sent on each connection, for `keepalive_pool.requests`.
    uses: HashMap<ConnKey, u32>,
    /// Requests whose connection goes back as a kept one.
    kept_busy: usize,
    /// Kept connections back in the pool, with when their idle timeout ends. Some may have been
    /// closed since; [`Group::kept_idle`] never counts more than are idle.
    kept_idle: HashMap<ConnKey, Instant>,
    /// The earliest end in `kept_idle`, so expired entries are swept only when there are some.
    next_expiry: Option<Instant>,
}

impl State {
    /// Connections that closed while idle leave request counts behind: past twice the open
    /// connections, keep only those of connections known to be busy or kept.
    fn forget_closed(&mut self, open: usize) {
        if self.uses.len() > 2 * open + 64 {
            let (in_use, kept_idle) = (&self.in_use, &self.kept_idle);
            self.uses
                .retain(|c, _| in_use.contains_key(c) || kept_idle.contains_key(c));
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("peer", &self.label)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Group {
    /// Idle connections: open ones that serve no request.
    fn idle(&self, st: &State) -> usize {
        self.open
            .load(Ordering::Relaxed)
            .saturating_sub(st.in_use.len())
    }

    /// Kept connections idle in the pool now.
    fn kept_idle(&self, st: &mut State) -> usize {
        if let Some(at) = st.next_expiry {
            let now = Instant::now();
            if at <= now {
                st.kept_idle.retain(|_, end| *end > now);
                st.next_expiry = st.kept_idle.values().min().copied();
            }
        }
        st.kept_idle.len().min(self.idle(st))
    }

    /// Whether a new try gets a kept place.
    fn reserve(&self, size: usize) -> bool {
        let mut st = lock(&self.state);
        let kept_idle = self.kept_idle(&mut st);
        let held = st.kept_busy + kept_idle;
        // With only kept connections idle, this try takes one of them and its place passes on,
        // unless the group holds more than this upstream's size (peers shared by upstreams
        // with different sizes).
        let takes_kept = kept_idle > 0 && kept_idle == self.idle(&st) && held <= size;
        let kept = held < size || takes_kept;
        if kept {
            st.kept_busy += 1;
        }
        kept
    }
}

/// Counts a group's open connections: Pingora clones it into every connection it opens and
/// drops it with the connection.
#[derive(Debug)]
struct ConnTracer(Arc<Group>);

impl Tracing for ConnTracer {
    fn on_connected(&self) {
        self.0.open.fetch_add(1, Ordering::Relaxed);
    }

    fn on_disconnected(&self) {
        let _ = self
            .0
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(ConnTracer(self.0.clone()))
    }
}

/// One try's place in its peer's pool; given back when dropped.
pub struct Lease {
    group: Arc<Group>,
    size: usize,
    idle_timeout: Duration,
    /// `keepalive_pool.requests`.
    requests: u32,
    kept: bool,
    conn: Option<ConnKey>,
    /// Set when the try ended with the connection going back to the pool.
    pub reusable: bool,
}

impl Lease {
    /// Records the connection this try got; true when it must close after this request
    /// (its `requests` are used up, or it would go over `size`).
    pub fn connected(&mut self, conn: ConnKey, reused: bool) -> bool {
        let mut st = lock(&self.group.state);
        if let Some(old) = self.conn.replace(conn) {
            release(&mut st, old);
        }
        let holders = st.in_use.entry(conn).or_insert(0);
        // Still held by the try that pooled it: handed over, as good as a kept one.
        let handed_over = *holders > 0;
        *holders += 1;
        if !reused {
            st.uses.remove(&conn);
        }
        let n = st.uses.entry(conn).or_insert(0);
        *n += 1;
        if *n >= self.requests {
            st.uses.remove(&conn);
            st.kept_idle.remove(&conn);
            return true;
        }
        st.forget_closed(self.group.open.load(Ordering::Relaxed));
        let was_kept = reused && (st.kept_idle.remove(&conn).is_some() || handed_over);
        if self.kept && !was_kept {
            // The place was given expecting a kept connection, and another came: over the
            // limit, this one closes rather than stay pooled for the whole idle timeout.
            let kept_idle = self.group.kept_idle(&mut st);
            if st.kept_busy + kept_idle > self.size {
                log::debug!("keepalive pool full: the connection closes after this request");
                st.kept_busy -= 1;
                self.kept = false;
                return true;
            }
        }
        false
    }
}

/// One try lets go of `conn`; true when no other try holds it.
fn release(st: &mut State, conn: ConnKey) -> bool {
    match st.in_use.get_mut(&conn) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            st.in_use.remove(&conn);
            true
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = lock(&self.group.state);
        let last_holder = self.conn.map(|c| release(&mut st, c)).unwrap_or(false);
        if let (false, true, Some(conn)) = (self.reusable, last_holder, self.conn) {
            // Closed, not pooled.
            st.uses.remove(&conn);
        }
        if !self.kept {
            return;
        }
        st.kept_busy = st.kept_busy.saturating_sub(1);
        if let (true, true, Some(conn)) = (self.reusable, last_holder, self.conn) {
            let end = Instant::now() + self.idle_timeout;
            st.kept_idle.insert(conn, end);
            st.next_expiry = Some(st.next_expiry.map_or(end, |at| at.min(end)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: u32) -> KeepalivePool {
        KeepalivePool {
            size,
            ..KeepalivePool::default()
        }
    }

    fn peer() -> HttpPeer {
        HttpPeer::new("127.0.0.1:80", false, String::new())
    }

    fn conn(fd: i32) -> ConnKey {
        (fd, SystemTime::UNIX_EPOCH)
    }

    /// A connection opened the way Pingora does: with a clone of the peer's tracer, told
    /// when it closes.
    struct Conn(Tracer);

    impl Drop for Conn {
        fn drop(&mut self) {
            self.0 .0.on_disconnected();
        }
    }

    fn open(p: &HttpPeer) -> Conn {
        let t = p.options.tracer.clone().expect("tracer set");
        t.0.on_connected();
        Conn(t)
    }

    #[test]
    fn at_most_size_kept_and_places_pass_on() {
        let pools = Pools::default();
        let mut leases = Vec::new();
        let mut tracers = Vec::new();
        for fd in 0..5 {
            let mut p = peer();
            let mut l = pools.checkout(&mut p, &pool(2));
            tracers.push(open(&p));
            assert!(!l.connected(conn(fd), false));
            leases.push((l, p));
        }
        let kept: Vec<bool> = leases.iter().map(|(l, _)| l.kept).collect();
        assert_eq!(kept, [true, true, false, false, false]);
        let spare = leases[4].1.options.idle_timeout;
        assert_eq!(spare, Some(SPARE_IDLE));
        for (l, _) in &mut leases {
            l.reusable = true;
        }
        drop(leases);
        // The three spares close after their grace; the two kept ones stay.
        tracers.truncate(2);
        // The next try takes a kept connection, so it is kept too.
        let mut p = peer();
        let mut l = pools.checkout(&mut p, &pool(2));
        assert!(l.kept);
        assert!(!l.connected(conn(0), true));
        // A second one while the first is busy: one kept place is left.
        let mut p2 = peer();
        let l2 = pools.checkout(&mut p2, &pool(2));
        assert!(l2.kept);
        drop((l, l2));
    }

    #[test]
    fn kept_connections_closed_while_idle_free_their_place() {
        let pools = Pools::default();
        let mut p = peer();
        let mut l = pools.checkout(&mut p, &pool(1));
        let t = open(&p);
        l.connected(conn(7), false);
        l.reusable = true;
        drop(l);
        // The server closed it in the pool.
        drop(t);
        let mut p = peer();
        let mut l = pools.checkout(&mut p, &pool(1));
        assert!(l.kept, "a closed connection holds no place");
        let _t = open(&p);
        assert!(!l.connected(conn(8), false));
    }

    #[test]
    fn a_wrong_guess_closes_instead_of_going_over() {
        let pools = Pools::default();
        // One kept connection idle, so the next try expects to take it...
        let mut p = peer();
        let mut l = pools.checkout(&mut p, &pool(1));
        let _t = open(&p);
        l.connected(conn(1), false);
        l.reusable = true;
        drop(l);
        let mut p = peer();
        let mut l = pools.checkout(&mut p, &pool(1));
        assert!(l.kept);
        // ...but opens another (the idle one was taken meanwhile): it must close.
        let _t2 = open(&p);
        assert!(l.connected(conn(2), false));
        assert!(!l.kept);
    }

    #[test]
    fn a_smaller_size_does_not_inherit_a_larger_ones_places() {
        let pools = Pools::default();
        let mut conns = Vec::new();
        let mut leases = Vec::new();
        for fd in 0..3 {
            let mut p = peer();
            let mut l = pools.checkout(&mut p, &pool(320));
            conns.push(open(&p));
            l.connected(conn(fd), false);
            l.reusable = true;
            leases.push(l);
        }
        drop(leases);
        // Three kept connections idle; an upstream with size 1 on the same peer takes one as
        // a spare.
        let mut p = peer();
        let mut l = pools.checkout(&mut p, &pool(1));
        assert!(!l.kept);
        assert!(!l.connected(conn(0), true));
    }

    #[test]
    fn requests_per_connection() {
        let pools = Pools::default();
        let limit = KeepalivePool {
            requests: 3,
            ..KeepalivePool::default()
        };
        let mut p = peer();
        let mut try_on = |reused: bool| {
            let mut l = pools.checkout(&mut p, &limit);
            let last = l.connected(conn(3), reused);
            l.reusable = !last;
            last
        };
        assert!(!try_on(false));
        assert!(!try_on(true));
        assert!(try_on(true), "the third request is the last");
        // A new connection on the same socket number starts again.
        assert!(!try_on(false));
    }

    #[test]
    fn a_connection_pooled_before_its_try_ends_is_handed_over() {
        let pools = Pools::default();
        let mut p = peer();
        let mut first = pools.checkout(&mut p, &pool(2));
        let _c = open(&p);
        first.connected(conn(5), false);
        first.reusable = true;
        // Pingora pooled it and another try took it before the first one ended.
        let mut p = peer();
        let mut second = pools.checkout(&mut p, &pool(2));
        assert!(!second.connected(conn(5), true), "not closed");
        drop(first);
        second.reusable = true;
        drop(second);
        let group = pools.group(peer().reuse_hash(), String::new);
        let st = lock(&group.state);
        assert_eq!(st.kept_idle.len(), 1);
        assert_eq!(st.kept_busy, 0);
        assert!(st.in_use.is_empty());
    }
}

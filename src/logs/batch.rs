//! APISIX's batch processor: entries gather into a batch that is sent when it is full
//! (`batch_max_size`), when no entry came for `inactive_timeout` seconds, or when its first
//! entry is `buffer_duration` seconds old; a failed send is tried again `max_retry_count`
//! times, `retry_delay` seconds apart, then dropped with an error line.
//!
//! Entries wait in a bounded queue (`max_pending_entries`, Portico's bound: APISIX's has
//! none): while a send is slow or retrying, a full queue drops new entries and says so once a
//! minute, instead of growing.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Once;

/// The batch processor's settings, as APISIX's logger plugins take them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchSettings {
    #[serde(default = "default_batch_max_size")]
    pub batch_max_size: usize,
    #[serde(default = "default_inactive_timeout")]
    pub inactive_timeout: u64,
    #[serde(default = "default_buffer_duration")]
    pub buffer_duration: u64,
    #[serde(default)]
    pub max_retry_count: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay: u64,
    #[serde(default = "default_max_pending")]
    pub max_pending_entries: usize,
    /// Names the processor in logs.
    pub name: Option<String>,
}

fn default_batch_max_size() -> usize {
    1000
}
fn default_inactive_timeout() -> u64 {
    5
}
fn default_buffer_duration() -> u64 {
    60
}
fn default_retry_delay() -> u64 {
    1
}
fn default_max_pending() -> usize {
    10_000
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            batch_max_size: default_batch_max_size(),
            inactive_timeout: default_inactive_timeout(),
            buffer_duration: default_buffer_duration(),
            max_retry_count: 0,
            retry_delay: default_retry_delay(),
            max_pending_entries: default_max_pending(),
            name: None,
        }
    }
}

impl BatchSettings {
    /// APISIX's minimums, named by field.
    pub fn check(&self) -> Result<(), String> {
        let low = |field: &str, min: u64| {
            format!("property \"{field}\" validation failed: expected >= {min}")
        };
        if self.batch_max_size < 1 {
            return Err(low("batch_max_size", 1));
        }
        if self.inactive_timeout < 1 {
            return Err(low("inactive_timeout", 1));
        }
        if self.buffer_duration < 1 {
            return Err(low("buffer_duration", 1));
        }
        if self.max_pending_entries < 1 {
            return Err(low("max_pending_entries", 1));
        }
        Ok(())
    }
}

/// The processor's sizes and times: from a logger's [`BatchSettings`] (whole seconds, as
/// APISIX's loggers take them) or from the `opentelemetry` plugin's `batch_span_processor`
/// (fractions of a second allowed).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub batch_max_size: usize,
    pub max_pending: usize,
    /// A batch goes when no entry came for this long…
    pub inactive: Duration,
    /// …or when its first entry is this old.
    pub buffer: Duration,
    pub max_retry_count: u32,
    pub retry_delay: Duration,
    /// Names the processor in logs.
    pub name: Option<String>,
}

impl From<BatchSettings> for Plan {
    fn from(s: BatchSettings) -> Plan {
        Plan {
            batch_max_size: s.batch_max_size.max(1),
            max_pending: s.max_pending_entries.max(1),
            inactive: Duration::from_secs(s.inactive_timeout),
            buffer: Duration::from_secs(s.buffer_duration),
            max_retry_count: s.max_retry_count,
            retry_delay: Duration::from_secs(s.retry_delay),
            name: s.name,
        }
    }
}

/// Where a batch goes.
#[async_trait]
pub trait Sink<T>: Send + Sync + 'static {
    /// Sends one batch; the message says why it failed.
    async fn send(&self, batch: &[T]) -> Result<(), String>;
}

/// The request side of a processor: a bounded buffer its task drains.
///
/// A push takes an uncontended lock and wakes the task only when the buffer was empty or a
/// batch is full, so a busy route costs a wakeup per batch, not per request.
pub struct Batcher<T> {
    shared: Arc<Shared<T>>,
    name: String,
    max_pending: usize,
    batch_max_size: usize,
    full: Once,
}

struct Shared<T> {
    pending: Mutex<Pending<T>>,
    wake: Notify,
}

struct Pending<T> {
    entries: Vec<T>,
    /// When the oldest entry of the buffer came (`buffer_duration`).
    first: Instant,
    /// When the newest came (`inactive_timeout`).
    last: Instant,
    /// The batcher is gone: send what is left and stop.
    closed: bool,
}

impl<T: Send + Sync + 'static> Batcher<T> {
    /// Starts the processor on the log runtime; `None` without one (see [`super::runtime`]).
    pub fn start(name: &str, plan: impl Into<Plan>, sink: Arc<dyn Sink<T>>) -> Option<Self> {
        let rt = super::runtime()?;
        Some(Batcher::start_on(rt, name, plan, sink))
    }

    /// Starts the processor on `rt`. It ends, after sending what it holds, when the batcher
    /// is dropped (the plugin's config was replaced).
    pub fn start_on(
        rt: &tokio::runtime::Handle,
        name: &str,
        plan: impl Into<Plan>,
        sink: Arc<dyn Sink<T>>,
    ) -> Self {
        let plan: Plan = plan.into();
        let now = Instant::now();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                entries: Vec::new(),
                first: now,
                last: now,
                closed: false,
            }),
            wake: Notify::new(),
        });
        let name = plan.name.clone().unwrap_or_else(|| name.to_string());
        let batcher = Batcher {
            shared: shared.clone(),
            name: name.clone(),
            max_pending: plan.max_pending.max(1),
            batch_max_size: plan.batch_max_size.max(1),
            full: Once::default(),
        };
        rt.spawn(run(shared, plan, sink, name));
        batcher
    }

    /// Queues an entry, or drops it when the buffer is full.
    pub fn push(&self, entry: T) {
        let wake = {
            let mut p = self.shared.pending.lock();
            if p.entries.len() >= self.max_pending {
                drop(p);
                let name = &self.name;
                self.full.say(|n| {
                    format!("{name}: the log queue is full: dropped {n} entries (the log server is slow or down)")
                });
                return;
            }
            let now = Instant::now();
            let was_empty = p.entries.is_empty();
            if was_empty {
                p.first = now;
            }
            p.last = now;
            p.entries.push(entry);
            was_empty || p.entries.len() == self.batch_max_size
        };
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl<T> Drop for Batcher<T> {
    fn drop(&mut self) {
        self.shared.pending.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

async fn run<T: Send + Sync + 'static>(
    shared: Arc<Shared<T>>,
    s: Plan,
    sink: Arc<dyn Sink<T>>,
    name: String,
) {
    let inactive = s.inactive;
    let buffer = s.buffer;
    let max = s.batch_max_size.max(1);
    loop {
        let (batch, due) = {
            let mut p = shared.pending.lock();
            if p.entries.is_empty() {
                if p.closed {
                    return;
                }
                (None, None)
            } else {
                let due = (p.last + inactive).min(p.first + buffer);
                let now = Instant::now();
                if p.entries.len() >= max || now >= due || p.closed {
                    let n = p.entries.len().min(max);
                    let batch: Vec<T> = p.entries.drain(..n).collect();
                    // What stays waits from now (its own arrival times are not kept).
                    p.first = now;
                    (Some(batch), None)
                } else {
                    (None, Some(due))
                }
            }
        };
        if let Some(batch) = batch {
            send(&*sink, &s, &name, batch).await;
            continue;
        }
        match due {
            None => shared.wake.notified().await,
            Some(due) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
        }
    }
}

async fn send<T: Send + Sync + 'static>(sink: &dyn Sink<T>, s: &Plan, name: &str, batch: Vec<T>) {
    for attempt in 0..=s.max_retry_count {
        match sink.send(&batch).await {
            Ok(()) => return,
            Err(e) => {
                log::error!(
                    "{name}: failed to send a batch of {} entries (attempt {}): {e}",
                    batch.len(),
                    attempt + 1
                );
                if attempt < s.max_retry_count {
                    tokio::time::sleep(s.retry_delay).await;
                }
            }
        }
    }
    log::error!(
        "{name}: dropped a batch of {} entries after {} attempts",
        batch.len(),
        s.max_retry_count + 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Collect {
        batches: Mutex<Vec<(Duration, Vec<u32>)>>,
        fail_first: std::sync::atomic::AtomicU32,
        start: Mutex<Option<Instant>>,
    }

    #[async_trait]
    impl Sink<u32> for Collect {
        async fn send(&self, batch: &[u32]) -> Result<(), String> {
            let at = self.start.lock().map(|s| s.elapsed()).unwrap_or_default();
            if self
                .fail_first
                .fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                return Err("down".into());
            }
            self.batches.lock().push((at, batch.to_vec()));
            Ok(())
        }
    }

    fn settings(max: usize) -> BatchSettings {
        BatchSettings {
            batch_max_size: max,
            ..BatchSettings::default()
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_the_rest_after_inactive_timeout() {
        let sink = Arc::new(Collect::default());
        *sink.start.lock() = Some(Instant::now());
        let b = Batcher::start_on(
            &tokio::runtime::Handle::current(),
            "t",
            settings(3),
            sink.clone(),
        );
        for i in 0..4 {
            b.push(i);
        }
        settle().await;
        assert_eq!(sink.batches.lock().len(), 1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        settle().await;
        assert_eq!(sink.batches.lock().len(), 1, "not yet inactive");
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        let got = sink.batches.lock().clone();
        assert_eq!(got[0].1, [0, 1, 2]);
        assert_eq!(got[1].1, [3]);
        assert_eq!(got[1].0, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_is_sent_after_buffer_duration() {
        let sink = Arc::new(Collect::default());
        *sink.start.lock() = Some(Instant::now());
        let s = BatchSettings {
            inactive_timeout: 10,
            ..settings(1000)
        };
        let b = Batcher::start_on(&tokio::runtime::Handle::current(), "t", s, sink.clone());
        // one entry every 7 s never lets the batch go inactive (10 s)
        for i in 0..12 {
            b.push(i);
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
        settle().await;
        let got = sink.batches.lock().clone();
        assert_eq!(got[0].0, Duration::from_secs(60));
        assert_eq!(got[0].1, (0..9).collect::<Vec<_>>(), "0 s to 56 s");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_then_dropped_and_a_full_queue_drops() {
        let sink = Arc::new(Collect::default());
        sink.fail_first
            .store(2, std::sync::atomic::Ordering::Relaxed);
        *sink.start.lock() = Some(Instant::now());
        let s = BatchSettings {
            batch_max_size: 1,
            max_retry_count: 2,
            retry_delay: 3,
            max_pending_entries: 2,
            ..BatchSettings::default()
        };
        let b = Batcher::start_on(&tokio::runtime::Handle::current(), "t", s, sink.clone());
        for i in 0..10 {
            b.push(i);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        let got = sink.batches.lock().clone();
        // the first entry got through on its third try, 6 s later; the queue held two more
        assert_eq!(got[0], (Duration::from_secs(6), vec![0]));
        let sent: Vec<u32> = got.iter().flat_map(|(_, b)| b.clone()).collect();
        assert!(sent.len() <= 3, "{sent:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_batcher_sends_what_it_holds() {
        let sink = Arc::new(Collect::default());
        let b = Batcher::start_on(
            &tokio::runtime::Handle::current(),
            "t",
            settings(100),
            sink.clone(),
        );
        b.push(7);
        drop(b);
        settle().await;
        assert_eq!(sink.batches.lock()[0].1, [7]);
    }

    #[test]
    fn settings_have_apisix_defaults_and_minimums() {
        let s: BatchSettings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(s, BatchSettings::default());
        assert_eq!(
            (s.batch_max_size, s.inactive_timeout, s.buffer_duration),
            (1000, 5, 60)
        );
        let bad = BatchSettings {
            batch_max_size: 0,
            ..BatchSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("batch_max_size"));
    }
}

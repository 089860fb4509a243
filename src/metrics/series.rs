//! The per-request counters: one shard per worker thread, folded at scrape time.
//!
//! A request records into its own thread's shard: one uncontended mutex, one hash lookup of a
//! key written into a buffer the shard keeps, so a label set seen before costs no allocation.
//! Only a scrape takes the other threads' locks, each for the time it takes to copy them.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// APISIX's default latency buckets, in milliseconds.
pub const BUCKETS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// Who wrote the answer (`response_source`), as APISIX tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResponseSource {
    /// The gateway itself: no route, a plugin's refusal, a mock.
    Apisix,
    /// The proxy failed before the upstream sent a header (connect refused, timeout).
    Nginx,
    /// The upstream's answer.
    Upstream,
}

impl ResponseSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseSource::Apisix => "apisix",
            ResponseSource::Nginx => "nginx",
            ResponseSource::Upstream => "upstream",
        }
    }
}

/// What one finished request contributes, borrowed from the request's state.
#[derive(Debug, Clone, Copy)]
pub struct HttpSample<'a> {
    pub code: u16,
    pub route: &'a str,
    pub matched_uri: &'a str,
    pub matched_host: &'a str,
    pub service: &'a str,
    pub consumer: &'a str,
    /// The node's IP; empty when none was picked.
    pub node: &'a str,
    pub source: ResponseSource,
    /// The whole request, milliseconds.
    pub latency_ms: f64,
    /// The upstream's part, when one was asked.
    pub upstream_ms: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The labels every HTTP metric shares (`route`, `service`, `consumer`, `node`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Labels {
    pub route: Box<str>,
    pub service: Box<str>,
    pub consumer: Box<str>,
    pub node: Box<str>,
}

/// `apisix_http_status`'s own labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusLabels {
    pub code: u16,
    pub matched_uri: Box<str>,
    pub matched_host: Box<str>,
    pub source: ResponseSource,
}

/// A latency histogram in milliseconds over [`BUCKETS`] (counts per bucket, not cumulative).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: [u64; BUCKETS.len()],
    /// Observations above the last bucket.
    pub over: u64,
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        match BUCKETS.iter().position(|b| ms <= *b) {
            Some(i) => self.buckets[i] += 1,
            None => self.over += 1,
        }
        self.sum += ms;
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.over += other.over;
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum::<u64>() + self.over
    }
}

/// Everything counted for one label set.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub statuses: Vec<(StatusLabels, u64)>,
    /// `request`, `upstream`, `apisix`.
    pub latency: [Histogram; 3],
    pub ingress: u64,
    pub egress: u64,
}

impl Series {
    fn new(labels: Labels) -> Series {
        Series {
            labels,
            statuses: Vec::new(),
            latency: Default::default(),
            ingress: 0,
            egress: 0,
        }
    }

    fn record(&mut self, s: &HttpSample<'_>) {
        let same = |l: &StatusLabels| {
            l.code == s.code
                && l.source == s.source
                && &*l.matched_uri == s.matched_uri
                && &*l.matched_host == s.matched_host
        };
        match self.statuses.iter_mut().find(|(l, _)| same(l)) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((
                StatusLabels {
                    code: s.code,
                    matched_uri: s.matched_uri.into(),
                    matched_host: s.matched_host.into(),
                    source: s.source,
                },
                1,
            )),
        }
        self.latency[0].observe(s.latency_ms);
        if let Some(up) = s.upstream_ms {
            self.latency[1].observe(up);
            self.latency[2].observe(s.latency_ms - up);
        } else {
            self.latency[2].observe(s.latency_ms);
        }
        self.ingress += s.request_bytes;
        self.egress += s.response_bytes;
    }

    fn add(&mut self, other: &Series) {
        for (l, n) in &other.statuses {
            match self.statuses.iter_mut().find(|(m, _)| m == l) {
                Some((_, m)) => *m += n,
                None => self.statuses.push((l.clone(), *n)),
            }
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            a.add(b);
        }
        self.ingress += other.ingress;
        self.egress += other.egress;
    }
}

#[derive(Default)]
struct Inner {
    /// By the label set written as `len:value` parts, so no value can run into the next.
    series: HashMap<Box<str>, Series>,
    key: String,
}

/// One worker thread's counters.
#[derive(Default)]
struct Shard {
    inner: Mutex<Inner>,
}

/// Every shard ever made (threads live as long as the server).
fn shards() -> &'static Mutex<Vec<Arc<Shard>>> {
    static SHARDS: OnceLock<Mutex<Vec<Arc<Shard>>>> = OnceLock::new();
    SHARDS.get_or_init(Default::default)
}

thread_local! {
    static SHARD: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        shards().lock().push(shard.clone());
        shard
    };
}

/// Requests the proxy read, whether or not a route counts them (`apisix_http_requests_total`).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Counts one request for `apisix_http_requests_total`.
pub fn count_request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Records a finished request in this thread's shard.
pub fn record(s: &HttpSample<'_>) {
    SHARD.with(|shard| {
        let mut inner = shard.inner.lock();
        let Inner { series, key } = &mut *inner;
        key.clear();
        for part in [s.route, s.service, s.consumer, s.node] {
            let _ = write!(key, "{}:{part}", part.len());
        }
        match series.get_mut(key.as_str()) {
            Some(found) => found.record(s),
            None => {
                let mut new = Series::new(Labels {
                    route: s.route.into(),
                    service: s.service.into(),
                    consumer: s.consumer.into(),
                    node: s.node.into(),
                });
                new.record(s);
                series.insert(key.as_str().into(), new);
            }
        }
    });
}

/// Every thread's counters added up, in label order.
pub fn fold() -> Vec<Series> {
    let all: Vec<Arc<Shard>> = shards().lock().clone();
    let mut out: BTreeMap<Labels, Series> = BTreeMap::new();
    for shard in all {
        let copy: Vec<Series> = {
            let inner = shard.inner.lock();
            inner.series.values().cloned().collect()
        };
        for s in copy {
            match out.get_mut(&s.labels) {
                Some(sum) => sum.add(&s),
                None => {
                    out.insert(s.labels.clone(), s);
                }
            }
        }
    }
    out.into_values()
        .map(|mut s| {
            s.statuses.sort_by(|a, b| a.0.cmp(&b.0));
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(route: &'a str, code: u16) -> HttpSample<'a> {
        HttpSample {
            code,
            route,
            matched_uri: "/x",
            matched_host: "",
            service: "",
            consumer: "",
            node: "127.0.0.1",
            source: ResponseSource::Upstream,
            latency_ms: 3.0,
            upstream_ms: Some(2.0),
            request_bytes: 10,
            response_bytes: 20,
        }
    }

    #[test]
    fn threads_fold_into_one_series_per_label_set() {
        // Route names unique to this test: other tests record into the same process.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10 {
                        record(&sample("fold-a", 200));
                    }
                    record(&sample("fold-a", 500));
                    record(&sample("fold-b", 200));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = fold();
        let a = all.iter().find(|s| &*s.labels.route == "fold-a").unwrap();
        assert_eq!(a.statuses.len(), 2);
        assert_eq!(a.statuses[0].0.code, 200);
        assert_eq!(a.statuses[0].1, 40);
        assert_eq!(a.statuses[1].1, 4);
        assert_eq!(a.latency[0].count(), 44);
        assert_eq!(a.latency[0].buckets[2], 44, "3 ms falls in the 5 ms bucket");
        assert_eq!(a.latency[1].buckets[1], 44, "2 ms in the 2 ms bucket");
        assert_eq!(a.latency[2].buckets[0], 44, "1 ms of the gateway's own");
        assert_eq!(a.ingress, 440);
        assert_eq!(a.egress, 880);
        let b = all.iter().find(|s| &*s.labels.route == "fold-b").unwrap();
        assert_eq!(b.statuses[0].1, 4);
    }

    #[test]
    fn label_values_cannot_run_into_each_other() {
        let mut one = sample("ab", 200);
        one.service = "c";
        let mut two = sample("a", 200);
        two.service = "bc";
        record(&one);
        record(&two);
        let all = fold();
        assert!(all
            .iter()
            .any(|s| &*s.labels.route == "ab" && &*s.labels.service == "c"));
        assert!(all
            .iter()
            .any(|s| &*s.labels.route == "a" && &*s.labels.service == "bc"));
    }

    #[test]
    fn odd_latencies_land_somewhere() {
        let mut h = Histogram::default();
        h.observe(f64::NAN);
        h.observe(-1.0);
        h.observe(1e9);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.over, 1);
        assert_eq!(h.count(), 3);
    }
}

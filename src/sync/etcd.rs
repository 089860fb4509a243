//! etcd as the config source: one paged read of the whole prefix, then one watch on it from
//! the read's revision + 1, applying events in revision order and publishing each burst as one
//! change set. Compaction, a wiped etcd or a watch that cannot resume lead to a fresh read
//! whose difference (by `mod_revision`) is applied. Failures keep the last good config and
//! retry with a growing, jittered delay; the watch resumes from the last applied revision.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::etcd::{Client, Error, EventKind, KeyValue, WatchMessage, WatchOptions};
use crate::model::{Invalid, Kind, Resource};
use crate::status::SourceStatus;
use crate::tables::{Change, Store};

/// Keys read per page of the full read.
const PAGE: i64 = 1000;
/// Never hold events longer than this while more keep coming.
const COALESCE_MAX: Duration = Duration::from_millis(50);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// The saved config is written at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// One key under the prefix that names a resource Portico serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    value: String,
    mod_revision: i64,
    create_revision: i64,
}

/// What Portico knows of etcd: every served key with its value and revision.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Mirror {
    /// The last revision applied.
    revision: i64,
    items: HashMap<String, Item>,
    /// Errors of the items that failed to parse or validate, by key.
    #[serde(skip)]
    rejected: HashMap<String, Invalid>,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
enum KeyIs {
    /// A resource of a served kind, with its id.
    Resource(Kind, String),
    /// Under a served kind's directory but no resource (`routes/x/y`, `routes//x`): rejected,
    /// and named in `/status`, never silently dropped.
    Odd(Kind, String),
    /// A directory marker, or a kind Portico does not serve (`protos`, `stream_routes`, …).
    Ignored,
}

/// Where a key points.
fn classify_key(prefix: &str, key: &str) -> KeyIs {
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return KeyIs::Ignored;
    };
    let Some((dir, id)) = rest.split_once('/') else {
        return KeyIs::Ignored;
    };
    let Some(kind) = Kind::from_dir(dir) else {
        return KeyIs::Ignored;
    };
    if id.is_empty() {
        return KeyIs::Ignored; // `routes/`: a directory marker
    }
    match id.split('/').collect::<Vec<_>>()[..] {
        [one] if one != "." && one != ".." => KeyIs::Resource(kind, id.to_string()),
        // consumers/<username>/credentials/<id>
        [user, "credentials", cred]
            if kind == Kind::Consumer && !user.is_empty() && !cred.is_empty() =>
        {
            KeyIs::Resource(Kind::Credential, format!("{user}/{cred}"))
        }
        _ => KeyIs::Odd(kind, id.to_string()),
    }
}

/// The resource a key names, if it names one.
fn classify(prefix: &str, key: &str) -> Option<(Kind, String)> {
    match classify_key(prefix, key) {
        KeyIs::Resource(kind, id) => Some((kind, id)),
        _ => None,
    }
}

/// Why an odd key is not served.
fn odd_key(key: &str, kind: Kind, id: &str) -> Invalid {
    Invalid {
        kind,
        id: id.to_string(),
        message: format!(
            "etcd key {key} names no {kind}: an id is one path segment (consumers/<name>/credentials/<id> for credentials); not served"
        ),
    }
}

impl Mirror {
    /// The change that putting `item` at `key` makes, recording a rejection if it is invalid.
    fn put(&mut self, key: &str, kind: Kind, id: &str, item: Item) -> Option<Change> {
        let parsed = serde_json::from_str::<Value>(&item.value)
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|mut v| {
                // The key names the resource, whatever id the value carries (as in APISIX).
                if let Value::Object(map) = &mut v {
                    match kind {
                        Kind::Consumer => {
                            map.insert("username".into(), Value::String(id.to_string()));
                        }
                        Kind::Credential => {
                            let own = id.split_once('/').map_or(id, |(_, c)| c);
                            map.insert("id".into(), Value::String(own.to_string()));
                        }
                        _ => {
                            map.insert("id".into(), Value::String(id.to_string()));
                        }
                    }
                }
                Resource::parse(kind, &v, Some(id))
            });
        let seq = item.create_revision.max(0) as u64;
        self.items.insert(key.to_string(), item);
        match parsed {
            Ok(resource) => {
                self.rejected.remove(key);
                Some(Change::Put {
                    seq,
                    resource: Box::new(resource),
                })
            }
            Err(message) => {
                let invalid = Invalid {
                    kind,
                    id: id.to_string(),
                    message,
                };
                log::error!("etcd key {key}: {invalid}; keeping its last valid value");
                self.rejected.insert(key.to_string(), invalid);
                // The last valid value stays in the tables (APISIX does the same).
                None
            }
        }
    }

    fn delete(&mut self, key: &str, kind: Kind, id: &str) -> Option<Change> {
        self.rejected.remove(key);
        self.items.remove(key).map(|_| Change::Delete {
            kind,
            id: id.to_string(),
        })
    }

    fn rejected_list(&self) -> Vec<Invalid> {
        let mut list: Vec<Invalid> = self.rejected.values().cloned().collect();
        list.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        list
    }
}

fn item_of(kv: &KeyValue) -> Item {
    Item {
        value: String::from_utf8_lossy(&kv.raw_value).into_owned(),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
    }
}

/// What `portico -t` finds under the prefix: how many resources of each kind are valid,
/// and every item that is not (invalid, naming no resource, or conflicting with another).
pub async fn check_prefix(
    client: &Client,
    prefix: &str,
) -> Result<
    (
        std::collections::BTreeMap<&'static str, usize>,
        Vec<Invalid>,
    ),
    Error,
> {
    let snapshot = client.readdir_paged(&format!("{prefix}/"), PAGE).await?;
    let mut m = Mirror::default();
    let mut changes = Vec::new();
    for kv in &snapshot.kvs {
        match classify_key(prefix, &kv.key) {
            KeyIs::Resource(kind, id) => changes.extend(m.put(&kv.key, kind, &id, item_of(kv))),
            KeyIs::Odd(kind, id) => {
                m.rejected
                    .insert(kv.key.clone(), odd_key(&kv.key, kind, &id));
            }
            KeyIs::Ignored => {}
        }
    }
    let tables = crate::tables::Tables::default().apply(changes, None);
    let mut invalid = m.rejected_list();
    invalid.extend(tables.conflicts.iter().cloned());
    invalid.extend(tables.route_problems().cloned());
    Ok((tables.config.counts(), invalid))
}

/// The etcd source's state, shared with the status listener.
pub struct EtcdSync {
    client: Client,
    prefix: String,
    store: Arc<Store>,
    status: Arc<SourceStatus>,
    mirror: Arc<Mutex<Mirror>>,
    saved: Option<PathBuf>,
    watch_idle: Duration,
    /// Keys per page of a full read: smaller after a page was too large for the client.
    page: std::sync::atomic::AtomicI64,
}

/// A growing, jittered, capped delay.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_FIRST)
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_FIRST;
    }

    async fn wait(&mut self) {
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(self.0.mul_f64(jitter)).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
}

/// How a watch ended.
enum WatchEnd {
    /// Watch again from the last applied revision + 1.
    Resume,
    /// History is gone or etcd was reset: read everything again.
    Reread,
}

impl EtcdSync {
    pub fn new(
        client: Client,
        prefix: String,
        store: Arc<Store>,
        status: Arc<SourceStatus>,
        saved: Option<PathBuf>,
        watch_idle: Duration,
    ) -> Arc<EtcdSync> {
        let sync = Arc::new(EtcdSync {
            client,
            prefix,
            store,
            status,
            mirror: Arc::new(Mutex::new(Mirror::default())),
            saved,
            watch_idle,
            page: std::sync::atomic::AtomicI64::new(PAGE),
        });
        let mirror = sync.mirror.clone();
        sync.status.set_keys_view(Arc::new(move || {
            let m = mirror.lock();
            let keys: serde_json::Map<String, Value> = m
                .items
                .iter()
                .map(|(k, i)| (k.clone(), json!(i.mod_revision)))
                .collect();
            json!({"revision": m.revision, "keys": keys})
        }));
        sync.status.set("prefix", json!(sync.prefix));
        sync
    }

    fn contact(&self, endpoint: Option<&str>) {
        self.status
            .set("last_contact", json!(crate::status::now_secs()));
        if let Some(e) = endpoint {
            self.status.set("endpoint", json!(e));
        }
    }

    fn failed(&self, what: &str, e: &Error) {
        log::warn!("etcd sync: {what}: {e}; serving the last good config");
        self.status.set("last_error", json!(format!("{what}: {e}")));
    }

    /// Publishes `changes` and records the mirror's revision and rejections.
    fn publish(&self, changes: Vec<Change>, rejected_changed: bool) {
        let (revision, rejected) = {
            let m = self.mirror.lock();
            (m.revision, rejected_changed.then(|| m.rejected_list()))
        };
        let loaded = self.store.load().loaded;
        if changes.is_empty() && rejected.is_none() && loaded {
            self.status.set("revision", json!(revision));
            return;
        }
        let n = changes.len();
        let started = Instant::now();
        let tables = self.store.publish_changes(changes, rejected);
        log::debug!(
            "etcd sync: applied {n} change(s) up to revision {revision} in {:?} (version {})",
            started.elapsed(),
            tables.version
        );
        self.status.set("revision", json!(revision));
    }

    /// Reads the whole prefix and applies the difference with what is known, by mod_revision.
    async fn full_read(&self) -> Result<(), Error> {
        let started = Instant::now();
        use std::sync::atomic::Ordering;
        let page = self.page.load(Ordering::Relaxed);
        let snapshot = match self
            .client
            .readdir_paged(&format!("{}/", self.prefix), page)
            .await
        {
            Ok(s) => s,
            Err(e @ Error::TooLarge { .. }) if page > 1 => {
                // Large values: the next try asks for fewer keys at a time.
                let smaller = (page / 10).max(1);
                log::warn!("{e}; reading {smaller} keys per page from now on");
                self.page.store(smaller, Ordering::Relaxed);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // Pages shrink only for the read that needed it.
        self.page.store(PAGE, Ordering::Relaxed);
        self.contact(None);
        let mut changes = Vec::new();
        {
            let mut m = self.mirror.lock();
            if snapshot.revision < m.revision {
                log::warn!(
                    "etcd revision went back from {} to {}: etcd was reset; taking its content as it is",
                    m.revision,
                    snapshot.revision
                );
            }
            let mut seen = std::collections::HashSet::with_capacity(snapshot.kvs.len());
            let all: std::collections::HashSet<&str> =
                snapshot.kvs.iter().map(|kv| kv.key.as_str()).collect();
            m.rejected.retain(|k, _| all.contains(k.as_str()));
            for kv in &snapshot.kvs {
                let (kind, id) = match classify_key(&self.prefix, &kv.key) {
                    KeyIs::Resource(kind, id) => (kind, id),
                    KeyIs::Odd(kind, id) => {
                        if !m.rejected.contains_key(&kv.key) {
                            let invalid = odd_key(&kv.key, kind, &id);
                            log::error!("{}", invalid.message);
                            m.rejected.insert(kv.key.clone(), invalid);
                        }
                        continue;
                    }
                    KeyIs::Ignored => continue,
                };
                seen.insert(kv.key.clone());
                let unchanged = m.items.get(&kv.key).is_some_and(|i| {
                    i.mod_revision == kv.mod_revision && i.value.as_bytes() == kv.raw_value
                });
                if !unchanged {
                    changes.extend(m.put(&kv.key, kind, &id, item_of(kv)));
                }
            }
            let gone: Vec<String> = m
                .items
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                if let Some((kind, id)) = classify(&self.prefix, &key) {
                    changes.extend(m.delete(&key, kind, &id));
                }
            }
            m.revision = snapshot.revision;
        }
        log::info!(
            "etcd sync: read {} keys at revision {} in {:?}; {} change(s)",
            snapshot.kvs.len(),
            snapshot.revision,
            started.elapsed(),
            changes.len()
        );
        self.publish(changes, true);
        self.status.set("last_error", json!(null));
        Ok(())
    }

    /// Applies the events of one watch message to the mirror; returns the table changes.
    fn apply_events(&self, events: Vec<crate::etcd::Event>, changes: &mut Vec<Change>) -> bool {
        let mut m = self.mirror.lock();
        let mut rejected_changed = false;
        // One revision comes in one message (a txn's writes share it): skip only revisions
        // applied before this message.
        let applied = m.revision;
        for e in events {
            if e.kv.mod_revision <= applied {
                continue;
            }
            m.revision = e.kv.mod_revision;
            let (kind, id) = match classify_key(&self.prefix, &e.kv.key) {
                KeyIs::Resource(kind, id) => (kind, id),
                KeyIs::Odd(kind, id) => {
                    rejected_changed = true;
                    match e.kind {
                        EventKind::Put => {
                            let invalid = odd_key(&e.kv.key, kind, &id);
                            log::error!("{}", invalid.message);
                            m.rejected.insert(e.kv.key.clone(), invalid);
                        }
                        EventKind::Delete => {
                            m.rejected.remove(&e.kv.key);
                        }
                    }
                    continue;
                }
                KeyIs::Ignored => continue,
            };
            // The rejected list changes when this key was or becomes rejected.
            rejected_changed |= m.rejected.contains_key(&e.kv.key);
            match e.kind {
                EventKind::Put => changes.extend(m.put(&e.kv.key, kind, &id, item_of(&e.kv))),
                EventKind::Delete => changes.extend(m.delete(&e.kv.key, kind, &id)),
            }
            rejected_changed |= m.rejected.contains_key(&e.kv.key);
        }
        rejected_changed
    }

    /// Follows the prefix from the last applied revision + 1 until the watch ends.
    async fn watch(&self, backoff: &mut Backoff, shutdown: &mut ShutdownWatch) -> WatchEnd {
        let from = self.mirror.lock().revision + 1;
        let opts = WatchOptions {
            start_revision: Some(from),
            idle_timeout: Some(self.watch_idle),
            ..Default::default()
        };
        let mut stream = match self
            .client
            .watchdir(&format!("{}/", self.prefix), opts)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.failed("opening the watch", &e);
                return WatchEnd::Resume;
            }
        };
        let endpoint = stream.endpoint().to_string();
        self.contact(Some(&endpoint));
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = shutdown.changed() => return WatchEnd::Resume,
            };
            match msg {
                Some(Ok(WatchMessage::Created { header, .. })) => {
                    backoff.reset();
                    self.status.set("last_error", json!(null));
                    if header.revision > 0 && header.revision < from - 1 {
                        log::warn!(
                            "etcd at {endpoint} is at revision {}, behind the {} applied: it was reset",
                            header.revision,
                            from - 1
                        );
                        return WatchEnd::Reread;
                    }
                }
                Some(Ok(WatchMessage::Events { events, .. })) => {
                    self.contact(None);
                    let mut changes = Vec::new();
                    let mut rejected = self.apply_events(events, &mut changes);
                    // Coalesce: take whatever the watch has already delivered (a burst
                    // becomes one publish), then publish at once, without waiting for more.
                    let started = Instant::now();
                    while started.elapsed() < COALESCE_MAX {
                        let Some(next) = stream.next().now_or_never() else {
                            break;
                        };
                        match next {
                            Some(Ok(WatchMessage::Events { events, .. })) => {
                                rejected |= self.apply_events(events, &mut changes);
                            }
                            Some(Ok(WatchMessage::Progress { .. })) => {}
                            Some(Ok(WatchMessage::Compacted { compact_revision })) => {
                                self.publish(changes, rejected);
                                log::warn!(
                                    "etcd watch: compacted at {compact_revision}; reading again"
                                );
                                return WatchEnd::Reread;
                            }
                            other => {
                                self.publish(changes, rejected);
                                return self.ended(other, &endpoint);
                            }
                        }
                    }
                    self.publish(changes, rejected);
                }
                Some(Ok(WatchMessage::Progress { .. })) => self.contact(None),
                Some(Ok(WatchMessage::Compacted { compact_revision })) => {
                    log::warn!(
                        "etcd watch from {from}: history compacted up to {compact_revision}; reading again"
                    );
                    return WatchEnd::Reread;
                }
                other => return self.ended(other, &endpoint),
            }
        }
    }

    fn ended(&self, msg: Option<Result<WatchMessage, Error>>, endpoint: &str) -> WatchEnd {
        match msg {
            Some(Err(Error::WatchIdle { .. })) => {
                log::debug!("etcd watch on {endpoint} idle; watching again");
            }
            Some(Err(e @ Error::TooLarge { .. })) => {
                // Watching again would get the same batch: read the prefix in pages instead.
                self.failed("watch", &e);
                return WatchEnd::Reread;
            }
            Some(Err(e)) => self.failed("watch", &e),
            Some(Ok(WatchMessage::Canceled { reason })) => {
                log::warn!("etcd watch on {endpoint} canceled: {reason}");
                self.status
                    .set("last_error", json!(format!("watch canceled: {reason}")));
            }
            Some(Ok(WatchMessage::ServerError { message, .. })) => {
                log::warn!("etcd watch on {endpoint}: {message}");
                self.status
                    .set("last_error", json!(format!("watch: {message}")));
            }
            Some(Ok(_)) => {}
            None => log::info!("etcd watch on {endpoint} ended; watching again"),
        }
        WatchEnd::Resume
    }

    /// The saved config, if any, loaded into the mirror and published.
    fn load_saved(&self) -> bool {
        let Some(path) = &self.saved else {
            return false;
        };
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        let saved: Mirror = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                log::error!("saved config {}: {e}; ignoring it", path.display());
                return false;
            }
        };
        let mut changes = Vec::new();
        {
            let mut m = self.mirror.lock();
            let mut items: Vec<(String, Item)> = saved.items.into_iter().collect();
            items.sort_by_key(|(_, i)| i.mod_revision);
            for (key, item) in items {
                if let Some((kind, id)) = classify(&self.prefix, &key) {
                    changes.extend(m.put(&key, kind, &id, item));
                }
            }
            m.revision = saved.revision;
        }
        log::warn!(
            "etcd unreachable at start: serving the config saved at revision {} ({})",
            saved.revision,
            path.display()
        );
        self.status.set("serving_saved_config", json!(true));
        self.publish(changes, true);
        true
    }

    /// Writes the mirror to the saved-config file (atomically) when it changed.
    fn save(&self, last_saved: &mut i64) {
        let Some(path) = &self.saved else {
            return;
        };
        let (revision, bytes) = {
            let m = self.mirror.lock();
            // Nothing read yet, or nothing new since the last save.
            if m.revision == 0 || m.revision == *last_saved {
                return;
            }
            (m.revision, serde_json::to_vec(&*m))
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                log::error!("saving the config: {e}");
                return;
            }
        };
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => *last_saved = revision,
            Err(e) => log::error!("saving the config to {}: {e}", path.display()),
        }
    }

    async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Backoff::new();
        let mut need_read = true;
        let mut tried_saved = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if need_read {
                match self.full_read().await {
                    Ok(()) => {
                        need_read = false;
                        backoff.reset();
                        self.status.set("serving_saved_config", json!(false));
                    }
                    Err(e) => {
                        self.failed("reading the prefix", &e);
                        if !tried_saved && !self.store.load().loaded {
                            tried_saved = true;
                            self.load_saved();
                        }
                        tokio::select! {
                            _ = backoff.wait() => {}
                            _ = shutdown.changed() => return,
                        }
                        continue;
                    }
                }
            }
            match self.watch(&mut backoff, &mut shutdown).await {
                WatchEnd::Reread => need_read = true,
                WatchEnd::Resume => {
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

/// The background services of the etcd source: the sync itself and the saved-config writer.
pub struct EtcdService(pub Arc<EtcdSync>);

#[async_trait]
impl BackgroundService for EtcdService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let sync = self.0.clone();
        let mut saver_shutdown = shutdown.clone();
        let saver = tokio::spawn(async move {
            let mut last_saved = -1i64;
            let mut tick = tokio::time::interval(SAVE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => sync.save(&mut last_saved),
                    _ = saver_shutdown.changed() => {
                        sync.save(&mut last_saved);
                        return;
                    }
                }
            }
        });
        self.0.run(shutdown).await;
        let _ = saver.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_kind_and_id() {
        let p = "/apisix";
        assert_eq!(
            classify(p, "/apisix/routes/1"),
            Some((Kind::Route, "1".into()))
        );
        assert_eq!(
            classify(p, "/apisix/consumers/jack"),
            Some((Kind::Consumer, "jack".into()))
        );
        assert_eq!(classify(p, "/apisix/routes/"), None, "directory marker");
        assert_eq!(classify(p, "/apisix/routes"), None, "directory marker");
        assert_eq!(classify(p, "/apisix/protos/1"), None, "kind not served");
        for odd in [
            "/apisix/routes/x/y",
            "/apisix/routes//dbl",
            "/apisix/routes/../upstreams/evil",
            "/apisix/upstreams/a/b",
            "/apisix/routes/..",
        ] {
            assert!(
                matches!(classify_key(p, odd), KeyIs::Odd(..)),
                "{odd} should be named as odd"
            );
        }
        assert_eq!(classify_key(p, "/apisix/protos/a/b"), KeyIs::Ignored);
        assert_eq!(
            classify(p, "/apisix/plugin_metadata/http-logger"),
            Some((Kind::PluginMetadata, "http-logger".into()))
        );
        assert_eq!(
            classify(p, "/apisix/consumers/jack/credentials/1"),
            Some((Kind::Credential, "jack/1".into()))
        );
        assert_eq!(classify(p, "/apisix/consumers/jack/credentials/"), None);
        assert_eq!(classify(p, "/apisix/routes/1/x"), None);
        assert_eq!(classify(p, "/apisixx/routes/1"), None);
        assert_eq!(classify(p, "/other/routes/1"), None);
    }
}

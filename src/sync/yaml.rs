//! Follows the standalone YAML file: publish it at start, then again whenever it changes.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::json;

use crate::config::standalone::{self, Watcher};
use crate::status::SourceStatus;
use crate::tables::Store;

pub struct YamlSource {
    path: PathBuf,
    store: Arc<Store>,
    status: Arc<SourceStatus>,
}

impl YamlSource {
    pub fn new(path: PathBuf, store: Arc<Store>, status: Arc<SourceStatus>) -> YamlSource {
        status.set("file", json!(path.display().to_string()));
        YamlSource {
            path,
            store,
            status,
        }
    }

    /// Loads the file and publishes it; on failure keeps what is there. Returns whether it
    /// published.
    pub fn reload_from(&self, bytes: &[u8]) -> bool {
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| format!("not UTF-8 text: {e}"))
            .and_then(standalone::parse);
        match parsed {
            Ok(mut loaded) => {
                let rejected = loaded.rejected.len();
                // As with etcd: an item that turned invalid keeps serving its last good version.
                let previous = self.store.load();
                for r in &loaded.rejected {
                    loaded.config.keep_previous(&previous.config, r.kind, &r.id);
                }
                let tables = self.store.publish(loaded.config, loaded.rejected);
                log::info!(
                    "{}: loaded {} routes ({} rejected items), version {}",
                    self.path.display(),
                    tables.config.routes.len(),
                    rejected,
                    tables.version
                );
                self.status.set("last_error", json!(null));
                true
            }
            Err(e) => {
                log::error!("{}: {e}; keeping the last good config", self.path.display());
                self.status.set("last_error", json!(e));
                false
            }
        }
    }

    /// The first load, before the listeners start.
    pub fn initial_load(&self) -> Option<Vec<u8>> {
        match standalone::read_file(&self.path) {
            Ok(bytes) => {
                self.reload_from(&bytes);
                Some(bytes)
            }
            Err(msg) => {
                log::error!("{msg}");
                self.status.set("last_error", json!(msg));
                None
            }
        }
    }
}

/// The background task that watches the file.
pub struct YamlWatch {
    pub source: YamlSource,
    pub initial: Option<Vec<u8>>,
}

#[async_trait]
impl BackgroundService for YamlWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut watcher = Watcher::new(self.source.path.clone(), self.initial.clone());
        let mut tick = tokio::time::interval(watcher.interval);
        // The last read error, said once (and in /status) until the file is back.
        let mut failing: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // A blocking read of a regular file of bounded size, off the runtime.
                    let (w, result) = match tokio::task::spawn_blocking(move || {
                        let r = watcher.changed();
                        (watcher, r)
                    }).await {
                        Ok(pair) => pair,
                        Err(e) => {
                            log::error!("standalone file watcher stopped: {e}");
                            return;
                        }
                    };
                    watcher = w;
                    match result {
                        Ok(Some(bytes)) => {
                            failing = None;
                            log::info!("{} changed; reloading", watcher.path().display());
                            self.source.reload_from(&bytes);
                        }
                        Ok(None) => {
                            if failing.take().is_some() {
                                log::info!("{} is readable again, unchanged", watcher.path().display());
                                self.source.status.set("last_error", json!(null));
                            }
                        }
                        Err(e) => {
                            if failing.as_deref() != Some(e.as_str()) {
                                log::error!("{e}; keeping the last good config");
                                self.source.status.set("last_error", json!(e));
                                failing = Some(e);
                            }
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

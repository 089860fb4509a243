//! Plugin state that outlives a config version (rate-limit counters, breakers): kept by key,
//! outside the snapshot, so an unrelated change to the resource (or a reload of the whole YAML
//! file) does not reset it, while a changed setting (another key) starts afresh. A state
//! nobody uses any more is dropped with its last user.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

type Entry = Weak<dyn Any + Send + Sync>;

/// The state under `key`, made by `make` if none is alive.
pub fn shared<T: Any + Send + Sync>(key: String, make: impl FnOnce() -> T) -> Arc<T> {
    static STATES: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    let mut states = STATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(found) = states
        .get(&key)
        .and_then(Weak::upgrade)
        .and_then(|a| a.downcast::<T>().ok())
    {
        return found;
    }
    if states.len() >= 1024 && states.len().is_power_of_two() {
        states.retain(|_, w| w.strong_count() > 0);
    }
    let made = Arc::new(make());
    let any: Arc<dyn Any + Send + Sync> = made.clone();
    states.insert(key, Arc::downgrade(&any));
    made
}

/// The key of a plugin's state: the plugin, the resource that configures it, its settings.
pub fn key(plugin: &str, owner: &str, settings: &serde_json::Value) -> String {
    let mut settings = settings.clone();
    if let Some(map) = settings.as_object_mut() {
        // Whether it runs for a request is not what it counts.
        map.remove("_meta");
    }
    format!("{plugin}|{owner}|{settings}")
}

/// Whether state of a plugin configured on `owner` is kept per route: a service's or
/// plugin_config's plugin counts for each of its routes apart, as APISIX keys it by route.
pub fn per_route(owner: &str) -> bool {
    owner.starts_with("services/") || owner.starts_with("plugin_configs/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_used() {
        let a = shared("k1".into(), || 1u32);
        let b = shared("k1".into(), || 2u32);
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert_eq!(*shared("k1".into(), || 3u32), 3, "made again once unused");
    }
}

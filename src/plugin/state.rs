//! Plugin state that outlives a config version (rate-limit counters, breakers): kept by key,
//! outside the snapshot, so an unrelated change to the resource (or a reload of the whole YAML
//! file) does not reset it, while a changed setting (another key) starts afresh. A state
//! nobody uses any more is dropped with its last user.

use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

type Entry = Weak<dyn Any + Send + Sync>;

/// The state under `key`, made by `make` if none is alive.
pub fn shared<T: Any + Send + Sync>(key: String, make: impl FnOnce() -> T) -> Arc<T> {
    static STATES: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    let mut states = STATES.get_or_init(Default::default).lock();
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

/// Per-key values of a limit (windows, buckets, requests under way), in shards so a lookup
/// locks one shard only, never across an await. Memory is bounded: a full shard first drops
/// what `stale` says is over, and past [`MAX_PER_SHARD`] drops keys at random, so a client
/// that invents keys cannot grow it (those keys start afresh, as in APISIX's fixed-size
/// shared dict).
pub struct Keyed<V> {
    /// Each shard's map, and the size at which it is swept next.
    shards: Vec<Mutex<(KeyMap<V>, usize)>>,
    max_per_shard: usize,
}

/// One shard's values by key: a fast hasher (keys are hashed on every request), and lookups
/// by `&str` that copy the key only when it is new (`entry_ref`).
pub type KeyMap<V> = hashbrown::HashMap<String, V, ahash::RandomState>;

/// Keys a shard holds before stale ones are swept.
const SWEEP_AT: usize = 4096;
/// Keys a shard holds at most (16 shards).
pub const MAX_PER_SHARD: usize = 65_536;

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Keyed::with_cap(MAX_PER_SHARD)
    }
}

impl<V> Keyed<V> {
    fn with_cap(max_per_shard: usize) -> Keyed<V> {
        Keyed {
            shards: (0..16)
                .map(|_| Mutex::new((KeyMap::default(), SWEEP_AT)))
                .collect(),
            max_per_shard,
        }
    }

    /// Runs `f` on the map of `key`'s shard, after making room for a new key.
    pub fn with<R>(
        &self,
        key: &str,
        stale: impl Fn(&V) -> bool,
        f: impl FnOnce(&mut KeyMap<V>) -> R,
    ) -> R {
        // FNV-1a picks the shard.
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut guard = self.shards[(h % self.shards.len() as u64) as usize].lock();
        let (map, next_sweep) = &mut *guard;
        if map.len() >= *next_sweep && !map.contains_key(key) {
            map.retain(|_, v| !stale(v));
            if map.len() >= self.max_per_shard {
                let drop: Vec<String> = map
                    .keys()
                    .take(self.max_per_shard / 10 + 1)
                    .cloned()
                    .collect();
                for k in drop {
                    map.remove(&k);
                }
            }
            // Swept again only once it has grown by half: a sweep costs the whole shard.
            *next_sweep = (map.len() + map.len() / 2).clamp(SWEEP_AT, self.max_per_shard);
        }
        f(map)
    }
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

    #[test]
    fn keyed_state_is_bounded() {
        let k: Keyed<u8> = Keyed::with_cap(5000);
        for i in 0..200_000 {
            let key = format!("key{i}");
            k.with(&key, |_| false, |m| m.insert(key.clone(), 1));
        }
        let total: usize = k.shards.iter().map(|s| s.lock().0.len()).sum();
        assert!(total <= 5000 * 16, "{total}");
    }
}

//! A hash map split into shards behind `Arc`s: cloning it costs one `Arc` per shard, and a
//! change copies only the shard it touches. This is what lets a one-route change publish new
//! tables without copying every route. A key is hashed once: the middle bits choose the shard,
//! the table uses the rest.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use ahash::RandomState;
use hashbrown::HashTable;

/// Shards of a large map; a small one keeps a single shard (cheap to create, one copy per
/// change is cheap anyway) and splits when it grows past `SPLIT_AT`.
const SHARDS: usize = 64;
const SPLIT_AT: usize = 1024;

/// Fixed seeds: the hash only needs to be stable within the process.
fn hasher() -> RandomState {
    RandomState::with_seeds(0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344)
}

#[derive(Debug)]
pub struct ShardedMap<K, V> {
    shards: Vec<Arc<HashTable<(K, V)>>>,
    hasher: RandomState,
    len: usize,
}

impl<K, V> Clone for ShardedMap<K, V> {
    fn clone(&self) -> Self {
        ShardedMap {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
            len: self.len,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: vec![Arc::new(HashTable::new())],
            hasher: hasher(),
            len: 0,
        }
    }
}

impl<K, V> ShardedMap<K, V> {
    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) as usize) & (self.shards.len() - 1)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shards[self.shard_of(hash)]
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The value at `key` for changing, copying its shard first if another version shares it.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let at = self.shard_of(hash);
        let shard = &mut self.shards[at];
        shard.find(hash, |(k, _)| k.borrow() == key)?;
        Arc::make_mut(shard)
            .find_mut(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    /// Moves a grown single-shard map to `SHARDS` shards.
    fn split(&mut self) {
        let mut shards: Vec<HashTable<(K, V)>> = (0..SHARDS).map(|_| HashTable::new()).collect();
        let hasher = &self.hasher;
        for (k, v) in self.shards.iter().flat_map(|s| s.iter()) {
            let hash = hasher.hash_one(k);
            shards[((hash >> 32) as usize) & (SHARDS - 1)].insert_unique(
                hash,
                (k.clone(), v.clone()),
                |(k, _)| hasher.hash_one(k),
            );
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.shards.len() == 1 && self.len >= SPLIT_AT {
            self.split();
        }
        let hash = self.hash(&key);
        let at = self.shard_of(hash);
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[at]);
        match shard.find_mut(hash, |(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                shard.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
                self.len += 1;
                None
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let at = self.shard_of(hash);
        let shard = &mut self.shards[at];
        shard.find(hash, |(k, _)| k.borrow() == key)?;
        let entry = Arc::make_mut(shard)
            .find_entry(hash, |(k, _)| k.borrow() == key)
            .ok()?;
        let ((_, v), _) = entry.remove();
        self.len -= 1;
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k, v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.iter().map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_share_untouched_shards() {
        let mut a: ShardedMap<String, u32> = ShardedMap::default();
        for i in 0..SPLIT_AT + 10 {
            a.insert(format!("k{i}"), i as u32);
        }
        let mut b = a.clone();
        b.insert("k1".into(), 99);
        b.remove("k2");
        assert_eq!(a.get("k1"), Some(&1));
        assert_eq!(b.get("k1"), Some(&99));
        assert_eq!(b.get("k2"), None);
        assert_eq!(a.len(), SPLIT_AT + 10);
        assert_eq!(b.len(), SPLIT_AT + 9);
        assert_eq!(a.shards.len(), SHARDS);
        assert!((0..SPLIT_AT + 10).all(|i| a.get(format!("k{i}").as_str()) == Some(&(i as u32))));
        let shared = a
            .shards
            .iter()
            .zip(&b.shards)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 2, "only the touched shards are copied");
        *b.get_mut("k3").unwrap() = 7;
        assert_eq!((a.get("k3"), b.get("k3")), (Some(&3), Some(&7)));
        assert_eq!(b.iter().count(), SPLIT_AT + 9);
        assert_eq!(b.remove("nope"), None);
    }
}

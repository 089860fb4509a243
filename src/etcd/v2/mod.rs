//! etcd's v2 keys API (`/v2/keys`), for deployments that still carry v2 data and tools.
//!
//! It shares the v3 client's transport, endpoints, health, TLS and timeouts: get a handle with
//! [`Client::v2`]. Credentials go as HTTP basic auth, as the v2 API wants them.

mod encode;
mod follow;

use serde::Deserialize;

use super::client::{Client, Replay};
use super::error::{Error, Result, V2Code};
use super::transport::{Body, Response};

pub use follow::{Follow, FollowEvent};

/// A handle on the v2 keys API.
#[derive(Clone, Debug)]
pub struct V2 {
    client: Client,
}

impl Client {
    /// The v2 keys API over this client's endpoints and settings.
    pub fn v2(&self) -> V2 {
        V2 {
            client: self.clone(),
        }
    }
}

/// What etcd did.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Get,
    Set,
    Create,
    Update,
    Delete,
    Expire,
    CompareAndSwap,
    CompareAndDelete,
}

/// A key or directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub key: String,
    /// `None` for directories and for deleted keys.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub dir: bool,
    /// Children of a listed directory (their own children only with `recursive`).
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub created_index: u64,
    #[serde(default)]
    pub modified_index: u64,
    /// RFC 3339 time at which a node with a TTL expires.
    #[serde(default)]
    pub expiration: Option<String>,
    /// Seconds left, for nodes with a TTL.
    #[serde(default)]
    pub ttl: Option<i64>,
}

/// One answer of the v2 API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V2Response {
    pub action: Action,
    pub node: Node,
    #[serde(default)]
    pub prev_node: Option<Node>,
    /// `X-Etcd-Index`: the store's index when the answer was made.
    #[serde(skip)]
    pub etcd_index: Option<u64>,
}

/// A key's TTL in a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Seconds(u64),
    /// `ttl=`: remove the TTL (with `prevExist=true`).
    Clear,
}

/// Conditions and settings of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2SetOptions {
    pub ttl: Option<Ttl>,
    /// `Some(false)`: create only; `Some(true)`: update only.
    pub prev_exist: Option<bool>,
    /// Compare-and-swap on the current value.
    pub prev_value: Option<String>,
    /// Compare-and-swap on the current modified index.
    pub prev_index: Option<u64>,
    /// Renew the TTL without changing the value or notifying watchers.
    pub refresh: bool,
}

/// How to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2GetOptions {
    /// List every level below a directory.
    pub recursive: bool,
    /// List children in key order.
    pub sorted: bool,
}

/// How to wait for a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2WaitOptions {
    /// Wake up for changes anywhere below the key.
    pub recursive: bool,
    /// The first index of interest; a past index answers at once from etcd's history of the
    /// last 1000 events.
    pub wait_index: Option<u64>,
}

/// Conditions of a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2DeleteOptions {
    /// The key is a directory (empty unless `recursive`).
    pub dir: bool,
    pub recursive: bool,
    pub prev_value: Option<String>,
    pub prev_index: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireV2Error {
    #[serde(default)]
    error_code: Option<u32>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    index: u64,
}

impl V2 {
    /// Sends one request to `/v2/keys{key}` and decodes the answer.
    async fn call(
        &self,
        method: &'static str,
        key: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
        replay: Replay,
        long_poll: bool,
    ) -> Result<V2Response> {
        let path = format!(
            "/v2/keys{}{}",
            encode::path(&self.client.inner.codec.full_key(key)),
            encode::query(query)
        );
        let form = encode::form(form);
        let (path, form) = (&path, &form);
        let limit = (!long_poll).then_some(self.client.inner.timeout);
        self.client
            .call_limited(replay, key, limit, |index| async move {
                let inner = &self.client.inner;
                let body = if form.is_empty() {
                    Body::empty()
                } else {
                    Body::form(form.as_bytes())
                };
                let auth = inner.basic_auth();
                let resp = inner
                    .transport
                    .request(
                        index,
                        inner.endpoints.get(index),
                        method,
                        path,
                        body,
                        auth.as_deref(),
                    )
                    .await
                    .map_err(|r| inner.transport_error(index, key, r))?;
                self.decode(index, key, resp)
            })
            .await
    }

    fn decode(&self, index: usize, key: &str, resp: Response) -> Result<V2Response> {
        let inner = &self.client.inner;
        let endpoint = inner.endpoint_name(index);
        if resp.status == 200 || resp.status == 201 {
            let mut answer: V2Response =
                serde_json::from_slice(&resp.body).map_err(|e| Error::Decode {
                    endpoint,
                    key: key.to_string(),
                    reason: format!("{e}: {}", super::client::snippet(&resp.body)),
                })?;
            answer.etcd_index = resp.etcd_index;
            strip_prefix(&mut answer.node, &inner.codec.key_prefix);
            if let Some(prev) = answer.prev_node.as_mut() {
                strip_prefix(prev, &inner.codec.key_prefix);
            }
            return Ok(answer);
        }
        let wire: WireV2Error = serde_json::from_slice(&resp.body).unwrap_or_default();
        match wire.error_code {
            Some(code) => Err(Error::V2 {
                endpoint,
                code: V2Code::from_number(code),
                message: wire.message,
                cause: wire.cause,
                index: wire.index,
            }),
            None => Err(inner.status_error(index, key, resp.status, &resp.body)),
        }
    }

    fn write_form(
        value: Option<&str>,
        opts: &V2SetOptions,
        dir: bool,
    ) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        if let Some(v) = value {
            form.push(("value", v.to_string()));
        }
        if dir {
            form.push(("dir", "true".to_string()));
        }
        match opts.ttl {
            Some(Ttl::Seconds(n)) => form.push(("ttl", n.to_string())),
            Some(Ttl::Clear) => form.push(("ttl", String::new())),
            None => {}
        }
        if let Some(p) = opts.prev_exist {
            form.push(("prevExist", p.to_string()));
        }
        if let Some(p) = &opts.prev_value {
            form.push(("prevValue", p.clone()));
        }
        if let Some(p) = opts.prev_index {
            form.push(("prevIndex", p.to_string()));
        }
        if opts.refresh {
            form.push(("refresh", "true".to_string()));
        }
        form
    }

    fn replay_for(opts: &V2SetOptions) -> Replay {
        // A conditional write repeated after it was applied would fail its own condition.
        if opts.prev_exist.is_some() || opts.prev_value.is_some() || opts.prev_index.is_some() {
            Replay::ConnectOnly
        } else {
            Replay::Safe
        }
    }

    // === writes ===

    /// Writes a key (action `set`, or `create`/`update`/`compareAndSwap` with conditions).
    pub async fn set(&self, key: &str, value: &str, opts: V2SetOptions) -> Result<V2Response> {
        let form = Self::write_form(Some(value), &opts, false);
        self.call("PUT", key, &[], &form, Self::replay_for(&opts), false)
            .await
    }

    /// Creates a key that must not exist yet (error 105 otherwise).
    pub async fn create(&self, key: &str, value: &str, ttl: Option<u64>) -> Result<V2Response> {
        let opts = V2SetOptions {
            prev_exist: Some(false),
            ttl: ttl.map(Ttl::Seconds),
            ..Default::default()
        };
        self.set(key, value, opts).await
    }

    /// Changes a key that must exist (error 100 otherwise).
    pub async fn update(&self, key: &str, value: &str, ttl: Option<Ttl>) -> Result<V2Response> {
        let opts = V2SetOptions {
            prev_exist: Some(true),
            ttl,
            ..Default::default()
        };
        self.set(key, value, opts).await
    }

    /// Writes only if the current value (and/or index) matches (error 101 otherwise).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<V2Response> {
        let opts = V2SetOptions {
            prev_value: prev_value.map(str::to_string),
            prev_index,
            ..Default::default()
        };
        self.set(key, value, opts).await
    }

    /// Renews a key's TTL without a value and without waking watchers.
    pub async fn refresh(&self, key: &str, ttl: u64) -> Result<V2Response> {
        let opts = V2SetOptions {
            ttl: Some(Ttl::Seconds(ttl)),
            prev_exist: Some(true),
            refresh: true,
            ..Default::default()
        };
        let form = Self::write_form(None, &opts, false);
        self.call("PUT", key, &[], &form, Replay::Safe, false).await
    }

    /// Creates a directory, optionally with a TTL (its children expire with it).
    pub async fn mkdir(&self, key: &str, ttl: Option<u64>) -> Result<V2Response> {
        let opts = V2SetOptions {
            ttl: ttl.map(Ttl::Seconds),
            ..Default::default()
        };
        let form = Self::write_form(None, &opts, true);
        self.call("PUT", key, &[], &form, Replay::ConnectOnly, false)
            .await
    }

    /// Sets or clears the TTL of an existing directory.
    pub async fn update_dir(&self, key: &str, ttl: Ttl) -> Result<V2Response> {
        let opts = V2SetOptions {
            ttl: Some(ttl),
            prev_exist: Some(true),
            ..Default::default()
        };
        let form = Self::write_form(None, &opts, true);
        self.call("PUT", key, &[], &form, Replay::Safe, false).await
    }

    /// Adds a key with a 20-digit, ever-increasing name under `dir` (action `create`).
    pub async fn create_in_order(
        &self,
        dir: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<V2Response> {
        let opts = V2SetOptions {
            ttl: ttl.map(Ttl::Seconds),
            ..Default::default()
        };
        let form = Self::write_form(Some(value), &opts, false);
        self.call("POST", dir, &[], &form, Replay::ConnectOnly, false)
            .await
    }

    // === reads ===

    /// Reads a key, or lists a directory.
    pub async fn get(&self, key: &str, opts: V2GetOptions) -> Result<V2Response> {
        let mut query = Vec::new();
        if opts.recursive {
            query.push(("recursive", "true".to_string()));
        }
        if opts.sorted {
            query.push(("sorted", "true".to_string()));
        }
        self.call("GET", key, &query, &[], Replay::Safe, false)
            .await
    }

    /// Waits for the next change of `key` (or below it, with `recursive`). A long poll with no
    /// time limit: wrap it in a timeout, or drop it to stop waiting.
    pub async fn wait(&self, key: &str, opts: V2WaitOptions) -> Result<V2Response> {
        let mut query = vec![("wait", "true".to_string())];
        if opts.recursive {
            query.push(("recursive", "true".to_string()));
        }
        if let Some(i) = opts.wait_index {
            query.push(("waitIndex", i.to_string()));
        }
        self.call("GET", key, &query, &[], Replay::Safe, true).await
    }

    // === deletes ===

    /// Deletes a key, or a directory with `dir` (and `recursive` for a full one).
    pub async fn delete(&self, key: &str, opts: V2DeleteOptions) -> Result<V2Response> {
        let mut query = Vec::new();
        if opts.dir {
            query.push(("dir", "true".to_string()));
        }
        if opts.recursive {
            query.push(("recursive", "true".to_string()));
        }
        if let Some(v) = &opts.prev_value {
            query.push(("prevValue", v.clone()));
        }
        if let Some(i) = opts.prev_index {
            query.push(("prevIndex", i.to_string()));
        }
        let replay = if opts.prev_value.is_some() || opts.prev_index.is_some() {
            Replay::ConnectOnly
        } else {
            Replay::Safe
        };
        self.call("DELETE", key, &query, &[], replay, false).await
    }

    /// Deletes only if the current value (and/or index) matches (error 101 otherwise).
    pub async fn compare_and_delete(
        &self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<V2Response> {
        let opts = V2DeleteOptions {
            prev_value: prev_value.map(str::to_string),
            prev_index,
            ..Default::default()
        };
        self.delete(key, opts).await
    }

    /// Deletes a directory: an empty one, or with `recursive` everything in it.
    pub async fn rmdir(&self, key: &str, recursive: bool) -> Result<V2Response> {
        let opts = V2DeleteOptions {
            dir: true,
            recursive,
            ..Default::default()
        };
        self.delete(key, opts).await
    }
}

/// Removes the client's key prefix from a node and its children.
fn strip_prefix(node: &mut Node, prefix: &str) {
    if prefix.is_empty() {
        return;
    }
    if let Some(rest) = node.key.strip_prefix(prefix) {
        node.key = if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        };
    }
    for child in &mut node.nodes {
        strip_prefix(child, prefix);
    }
}

//! Counters shared between gateways in Redis: the `policy: redis` and `policy: redis-cluster`
//! of `limit-count`, `limit-req` and `limit-conn`, with APISIX's fields and defaults.
//!
//! Every plugin instance that names the same Redis (host, port, database, credentials, TLS)
//! shares one multiplexed connection, made on first use and remade on its own after Redis
//! went away, so a request never opens a connection of its own and a worker thread never
//! blocks on Redis: every call is async and bounded by `redis_timeout`. A limit runs one Lua
//! script per request, so each check-and-count is atomic in Redis, also across gateways.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::settings::{check_range, parse_settings};
use super::{state, Answer, Flow};

/// Where a limit keeps its counters.
pub(super) enum Policy {
    /// In this gateway's memory.
    Local,
    /// In Redis, shared by every gateway using it.
    Redis(Arc<Redis>),
}

/// The fields of `policy: redis` (APISIX's `redis-schema`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleSettings {
    redis_host: String,
    #[serde(default = "default_port")]
    redis_port: u16,
    redis_username: Option<String>,
    #[serde(default)]
    redis_password: String,
    #[serde(default)]
    redis_database: i64,
    #[serde(default = "default_timeout")]
    redis_timeout: u64,
    #[serde(default)]
    redis_ssl: bool,
    #[serde(default)]
    redis_ssl_verify: bool,
    #[serde(default = "default_keepalive")]
    redis_keepalive_timeout: u64,
    #[serde(default = "default_pool")]
    redis_keepalive_pool: u64,
}

/// The fields of `policy: redis-cluster`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSettings {
    redis_cluster_nodes: Vec<String>,
    redis_cluster_name: String,
    #[serde(default)]
    redis_password: String,
    #[serde(default = "default_timeout")]
    redis_timeout: u64,
    #[serde(default)]
    redis_cluster_ssl: bool,
    #[serde(default)]
    redis_cluster_ssl_verify: bool,
    #[serde(default = "default_keepalive")]
    redis_keepalive_timeout: u64,
    #[serde(default = "default_pool")]
    redis_keepalive_pool: u64,
}

fn default_port() -> u16 {
    6379
}
fn default_timeout() -> u64 {
    1000
}
fn default_keepalive() -> u64 {
    10_000
}
fn default_pool() -> u64 {
    100
}

const SINGLE_FIELDS: &[&str] = &[
    "redis_host",
    "redis_port",
    "redis_username",
    "redis_password",
    "redis_database",
    "redis_timeout",
    "redis_ssl",
    "redis_ssl_verify",
    "redis_keepalive_timeout",
    "redis_keepalive_pool",
];
const CLUSTER_FIELDS: &[&str] = &[
    "redis_cluster_nodes",
    "redis_cluster_name",
    "redis_password",
    "redis_timeout",
    "redis_cluster_ssl",
    "redis_cluster_ssl_verify",
    "redis_keepalive_timeout",
    "redis_keepalive_pool",
];

/// Splits a limit's settings into its own fields and its policy. The Redis fields of the
/// other policies are ignored, as APISIX ignores them (so switching `policy` back to `local`
/// needs no other edit); `policies` names what this plugin accepts.
pub(super) fn take_policy(settings: &Value, policies: &[&str]) -> Result<(Value, Policy), String> {
    let Value::Object(map) = settings else {
        // The plugin's own parse names the wrong type.
        return Ok((settings.clone(), Policy::Local));
    };
    let policy = match map.get("policy") {
        None => "local",
        Some(Value::String(p)) => p.as_str(),
        Some(other) => {
            return Err(format!(
                "property \"policy\" validation failed: wrong type: expected string, got {}",
                json_type(other)
            ))
        }
    };
    if !policies.contains(&policy) {
        return Err(if policy == "redis-sentinel" {
            "property \"policy\": \"redis-sentinel\" is not supported by Portico yet (local, redis and redis-cluster are); the resource is not served".to_string()
        } else {
            format!("property \"policy\" validation failed: matches none of the enum values ({policy:?})")
        });
    }
    let (own, mine): (&[&str], bool) = match policy {
        "redis" => (SINGLE_FIELDS, true),
        "redis-cluster" => (CLUSTER_FIELDS, true),
        _ => (&[], false),
    };
    let mut rest = Map::new();
    let mut fields = Map::new();
    for (k, v) in map {
        let redis_like = k.starts_with("redis_") || k.starts_with("sentinel_");
        if own.contains(&k.as_str()) || (mine && redis_like && !other_policy(k)) {
            // This policy's, or a misspelling of one: its parse names an unknown field.
            fields.insert(k.clone(), v.clone());
        } else if k == "policy" || redis_like {
            // Another policy's settings: unused, as in APISIX.
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    if !mine {
        return Ok((Value::Object(rest), Policy::Local));
    }
    let redis = match policy {
        "redis" => Redis::single(parse_settings(&Value::Object(fields))?)?,
        _ => Redis::cluster(parse_settings(&Value::Object(fields))?)?,
    };
    Ok((Value::Object(rest), Policy::Redis(redis)))
}

/// Whether `field` belongs to one of APISIX's Redis policies (redis, redis-cluster,
/// redis-sentinel).
fn other_policy(field: &str) -> bool {
    const SENTINEL_FIELDS: &[&str] = &[
        "redis_sentinels",
        "redis_master_name",
        "redis_role",
        "redis_connect_timeout",
        "redis_read_timeout",
        "sentinel_username",
        "sentinel_password",
    ];
    SINGLE_FIELDS.contains(&field)
        || CLUSTER_FIELDS.contains(&field)
        || SENTINEL_FIELDS.contains(&field)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How a Redis is reached.
enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A connection to a Redis or a Redis Cluster: cheap to clone, one socket (or one per
/// cluster node) multiplexed between every request.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One Redis that limits keep counters in.
pub(super) struct Redis {
    /// What the log calls it (`redis 127.0.0.1:6379/0`); never the password.
    name: String,
    target: Target,
    timeout: Duration,
    conn: OnceCell<Conn>,
    /// When making the connection last failed: a dead Redis is tried again after a pause,
    /// not by every request.
    failed_at: Mutex<Option<Instant>>,
    /// When the last error was logged (ms since the first), so a dead Redis under load
    /// writes one line a second, not one per request.
    logged_at: AtomicU64,
    born: Instant,
}

/// Why a Redis call failed.
#[derive(Debug)]
pub(super) enum RedisError {
    Timeout(Duration),
    Unreachable(String),
    Redis(redis::RedisError),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
            RedisError::Unreachable(e) => write!(f, "cannot connect: {e}"),
            RedisError::Redis(e) => write!(f, "{e}"),
        }
    }
}

/// How long a failed connect keeps new requests from trying again.
const RETRY_CONNECT: Duration = Duration::from_millis(500);

impl Redis {
    fn single(s: SingleSettings) -> Result<Arc<Redis>, String> {
        if s.redis_host.len() < 2 {
            return Err(
                "property \"redis_host\" validation failed: string too short, expected at least 2"
                    .into(),
            );
        }
        check_range("redis_port", s.redis_port, 1, None)?;
        check_range("redis_database", s.redis_database, 0, None)?;
        check_range("redis_timeout", s.redis_timeout, 1, None)?;
        check_range(
            "redis_keepalive_timeout",
            s.redis_keepalive_timeout,
            1000,
            None,
        )?;
        check_range("redis_keepalive_pool", s.redis_keepalive_pool, 1, None)?;
        if s.redis_username.as_deref() == Some("") {
            return Err(
                "property \"redis_username\" validation failed: string too short, expected at least 1"
                    .into(),
            );
        }
        let host = if s.redis_host.contains(':') && !s.redis_host.starts_with('[') {
            format!("[{}]", s.redis_host)
        } else {
            s.redis_host.clone()
        };
        let url = match (s.redis_ssl, s.redis_ssl_verify) {
            (false, _) => format!("redis://{host}:{}", s.redis_port),
            (true, true) => format!("rediss://{host}:{}", s.redis_port),
            (true, false) => format!("rediss://{host}:{}/#insecure", s.redis_port),
        };
        let mut info = redis::RedisConnectionInfo::default().set_db(s.redis_database);
        if !s.redis_password.is_empty() {
            info = info.set_password(s.redis_password.clone());
            if let Some(u) = &s.redis_username {
                info = info.set_username(u.clone());
            }
        }
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| format!("property \"redis_host\": {e}"))?
            .set_redis_settings(info);
        let client = redis::Client::open(info).map_err(|e| format!("redis settings: {e}"))?;
        let name = format!(
            "redis {}{}:{}/{}",
            if s.redis_ssl { "tls://" } else { "" },
            s.redis_host,
            s.redis_port,
            s.redis_database
        );
        let key = format!(
            "redis|{}|{}|{}|{}|{:?}|{}|{}|{}",
            s.redis_host,
            s.redis_port,
            s.redis_database,
            s.redis_timeout,
            s.redis_username,
            s.redis_password,
            s.redis_ssl,
            s.redis_ssl_verify
        );
        Ok(Self::shared(
            key,
            name,
            Target::Single(Box::new(client)),
            s.redis_timeout,
        ))
    }

    fn cluster(s: ClusterSettings) -> Result<Arc<Redis>, String> {
        if s.redis_cluster_nodes.is_empty() {
            return Err("property \"redis_cluster_nodes\" validation failed: expect array to have at least 1 items".into());
        }
        for (i, n) in s.redis_cluster_nodes.iter().enumerate() {
            if n.len() < 2 || n.len() > 100 {
                return Err(format!(
                    "property \"redis_cluster_nodes\" validation failed: failed to validate item {}: string length must be 2 to 100",
                    i + 1
                ));
            }
        }
        check_range("redis_timeout", s.redis_timeout, 1, None)?;
        check_range(
            "redis_keepalive_timeout",
            s.redis_keepalive_timeout,
            1000,
            None,
        )?;
        check_range("redis_keepalive_pool", s.redis_keepalive_pool, 1, None)?;
        let scheme = if s.redis_cluster_ssl {
            "rediss"
        } else {
            "redis"
        };
        let nodes: Vec<String> = s
            .redis_cluster_nodes
            .iter()
            .map(|n| {
                let n = n.trim();
                let n = n
                    .strip_prefix("redis://")
                    .or_else(|| n.strip_prefix("rediss://"))
                    .unwrap_or(n);
                let insecure = if s.redis_cluster_ssl && !s.redis_cluster_ssl_verify {
                    "#insecure"
                } else {
                    ""
                };
                format!("{scheme}://{n}{insecure}")
            })
            .collect();
        let timeout = Duration::from_millis(s.redis_timeout);
        let mut builder = ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1);
        if !s.redis_password.is_empty() {
            builder = builder.password(s.redis_password.clone());
        }
        let client = builder
            .build()
            .map_err(|e| format!("property \"redis_cluster_nodes\": {e}"))?;
        let name = format!(
            "redis-cluster {} ({})",
            s.redis_cluster_name,
            s.redis_cluster_nodes.join(",")
        );
        let key = format!(
            "redis-cluster|{}|{}|{}|{}|{}|{}",
            s.redis_cluster_name,
            nodes.join(","),
            s.redis_timeout,
            s.redis_password,
            s.redis_cluster_ssl,
            s.redis_cluster_ssl_verify
        );
        Ok(Self::shared(
            key,
            name,
            Target::Cluster(Box::new(client)),
            s.redis_timeout,
        ))
    }

    /// The one `Redis` for these settings, made if none is in use.
    fn shared(key: String, name: String, target: Target, timeout_ms: u64) -> Arc<Redis> {
        state::shared(key, move || Redis {
            name,
            target,
            timeout: Duration::from_millis(timeout_ms),
            conn: OnceCell::new(),
            failed_at: Mutex::new(None),
            logged_at: AtomicU64::new(u64::MAX),
            born: Instant::now(),
        })
    }

    /// The connection, made on first use. A single Redis's connection manager connects in
    /// the background and reconnects on its own; a cluster connection is made here, and a
    /// failure is remembered for [`RETRY_CONNECT`].
    async fn conn(&self) -> Result<Conn, RedisError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        if let Some(at) = *self.failed_at.lock() {
            if at.elapsed() < RETRY_CONNECT {
                return Err(RedisError::Unreachable("failed a moment ago".into()));
            }
        }
        let made = self
            .conn
            .get_or_try_init(|| async {
                match &self.target {
                    Target::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            .set_response_timeout(Some(self.timeout))
                            .set_number_of_retries(1)
                            .set_max_delay(Duration::from_millis(500));
                        ConnectionManager::new_lazy_with_config((**client).clone(), config)
                            .map(Conn::Single)
                            .map_err(RedisError::Redis)
                    }
                    Target::Cluster(client) => {
                        match tokio::time::timeout(self.timeout, client.get_async_connection())
                            .await
                        {
                            Ok(Ok(c)) => Ok(Conn::Cluster(c)),
                            Ok(Err(e)) => Err(RedisError::Unreachable(e.to_string())),
                            Err(_) => Err(RedisError::Timeout(self.timeout)),
                        }
                    }
                }
            })
            .await;
        match made {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                *self.failed_at.lock() = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Runs `script` on `key` with `args`, within `redis_timeout`.
    pub(super) async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[&str],
    ) -> Result<T, RedisError> {
        let call = async {
            let mut inv = script.key(key);
            for a in args {
                inv.arg(*a);
            }
            match self.conn().await? {
                Conn::Single(mut c) => inv.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async(&mut c).await,
            }
            .map_err(RedisError::Redis)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        }
    }

    /// What a limit does when this Redis failed it: logs why, then lets the request through
    /// (`allow_degradation`) or answers `refusal` (APISIX's 500).
    pub(super) fn failed(
        &self,
        plugin: &str,
        err: &RedisError,
        degrade: bool,
        refusal: impl FnOnce() -> Answer,
    ) -> Flow {
        self.log_failure(plugin, err);
        if degrade {
            Flow::Continue
        } else {
            Flow::Respond(refusal())
        }
    }

    /// Logs a failed call, at most once a second for this Redis.
    pub(super) fn log_failure(&self, plugin: &str, err: &RedisError) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.logged_at.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < 1000 {
            return;
        }
        if self
            .logged_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            log::error!("{plugin}: {}: {err}", self.name);
        }
    }
}

/// The part of a Redis key that says which resource and which version of the plugin's
/// settings counts under it, so an edit of the settings starts afresh (as APISIX keys its
/// counters by the plugin configuration's version) and gateways reading one etcd agree.
pub(super) fn version_tag(plugin: &str, owner: &str, settings: &Value) -> String {
    let key = state::key(plugin, owner, settings);
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{owner}:{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[&str] = &["local", "redis", "redis-cluster"];

    #[test]
    fn policies_split_their_fields() {
        let (rest, p) = take_policy(&json!({"count": 1, "redis_host": "x1"}), ALL).unwrap();
        assert!(matches!(p, Policy::Local));
        assert_eq!(
            rest,
            json!({"count": 1}),
            "another policy's fields are ignored"
        );

        let (rest, p) = take_policy(
            &json!({"count": 1, "policy": "redis", "redis_host": "127.0.0.1", "redis_port": 1}),
            ALL,
        )
        .unwrap();
        assert!(matches!(p, Policy::Redis(_)));
        assert_eq!(rest, json!({"count": 1}));

        for (bad, says) in [
            (json!({"policy": "redis"}), "redis_host"),
            (json!({"policy": "redis", "redis_host": "h"}), "redis_host"),
            (
                json!({"policy": "redis", "redis_host": "hh", "redis_timeout": 0}),
                "redis_timeout",
            ),
            (
                json!({"policy": "redis-cluster", "redis_cluster_nodes": []}),
                "redis_cluster_name",
            ),
            (
                json!({"policy": "redis-cluster", "redis_cluster_nodes": [], "redis_cluster_name": "c"}),
                "redis_cluster_nodes",
            ),
            (json!({"policy": "redis-sentinel"}), "not supported"),
            (
                json!({"policy": "redis", "redis_host": "hh", "redis_prot": 1}),
                "redis_prot",
            ),
            (json!({"policy": "memcached"}), "enum"),
            (json!({"policy": 1}), "policy"),
        ] {
            let err = take_policy(&bad, ALL).err().unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(take_policy(&json!({"policy": "redis-cluster"}), &["local", "redis"]).is_err());
    }

    #[test]
    fn one_connection_per_redis() {
        let conf = json!({"policy": "redis", "redis_host": "127.0.0.1", "redis_port": 7});
        let (_, Policy::Redis(a)) = take_policy(&conf, ALL).unwrap() else {
            panic!("redis")
        };
        let (_, Policy::Redis(b)) = take_policy(&conf, ALL).unwrap() else {
            panic!("redis")
        };
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!a.name.contains("password"));
    }

    #[tokio::test]
    async fn a_dead_redis_answers_an_error_in_time() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = json!({"policy": "redis", "redis_host": "127.0.0.1", "redis_port": port, "redis_timeout": 300});
        let (_, Policy::Redis(r)) = take_policy(&conf, ALL).unwrap() else {
            panic!("redis")
        };
        let script = Script::new("return 1");
        let started = std::time::Instant::now();
        let got: Result<i64, _> = r.eval(&script, "k", &[]).await;
        assert!(got.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by redis_timeout"
        );
    }
}

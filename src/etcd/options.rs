//! What a caller can configure, mirroring lua-resty-etcd's `new` options.

use std::path::PathBuf;
use std::time::Duration;

/// Options for [`crate::etcd::Client::new`]. Start from `Default` and set what you need.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http://host:port` or `https://host:port`; IPv6 hosts in brackets; port defaults to 2379.
    pub endpoints: Vec<String>,
    /// User and password for etcd's auth; both or neither.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Limit for one request, connect to last byte. Watches use their own idle timeout.
    pub timeout: Duration,
    /// Prepended to every key sent, and removed from every key received.
    pub key_prefix: String,
    /// `/v3`, `/v3beta` or `/v3alpha`; detected from `GET /version` when `None`.
    pub api_prefix: Option<String>,
    pub tls: TlsOptions,
    pub serializer: Serializer,
    /// Sent with every request. Headers the client owns are refused at construction.
    pub extra_headers: Vec<(String, String)>,
    /// Reach etcd through this unix socket (a local proxy) instead of TCP, when it exists.
    pub unix_socket: Option<PathBuf>,
    pub health: HealthOptions,
    /// The largest answer body, and the longest watch message, accepted from an endpoint; a
    /// bigger one ends that connection with an error naming the endpoint (a broken proxy or
    /// member must not fill the memory). Well above etcd's own 1.5 MiB request limit; a paged read that
    /// meets it asks again for smaller pages.
    pub max_response_bytes: usize,
}

/// The default for [`ClientOptions::max_response_bytes`].
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            user: None,
            password: None,
            timeout: Duration::from_secs(5),
            key_prefix: String::new(),
            api_prefix: None,
            tls: TlsOptions::default(),
            serializer: Serializer::Json,
            extra_headers: Vec::new(),
            unix_socket: None,
            health: HealthOptions::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// TLS settings for `https://` endpoints.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Verify etcd's certificate chain and host name. On by default.
    pub verify: bool,
    /// CA certificates to trust instead of the system's.
    pub ca: Option<Pem>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub cert: Option<Pem>,
    pub key: Option<Pem>,
    /// Server name sent and verified; the endpoint's host when `None`. For an endpoint given
    /// as an IP address, set it to a name in etcd's certificate: without it the certificate
    /// chain is verified but not the name (Pingora's TLS checks DNS names only).
    pub sni: Option<String>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            verify: true,
            ca: None,
            cert: None,
            key: None,
            sni: None,
        }
    }
}

/// PEM material, given either as a file path or as the PEM text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Contents(String),
}

impl Pem {
    pub(crate) fn load(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read {what} file {}: {e}", path.display())),
            Pem::Contents(text) => Ok(text.as_bytes().to_vec()),
        }
    }
}

/// How values are turned into bytes stored in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Serializer {
    /// Values are JSON documents (`serde_json::Value`).
    #[default]
    Json,
    /// Values are stored as they are: strings only; anything else is refused.
    Raw,
}

/// When an endpoint counts as unhealthy, and whether a failed request tries the next one.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// How long an endpoint is skipped once it reached `max_fails`.
    pub fail_timeout: Duration,
    /// Consecutive failures before the endpoint is skipped.
    pub max_fails: u32,
    /// Move a failed request on to the next healthy endpoint.
    pub retry: bool,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            fail_timeout: Duration::from_secs(10),
            max_fails: 1,
            retry: true,
        }
    }
}

// The options of single calls (kv and txn share them).

/// Options of `get`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Read at this revision; 0 or `None` is the newest.
    pub revision: Option<i64>,
}

/// Options of `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Attach the key to this lease.
    pub lease: Option<i64>,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// Options of `delete` and `rmdir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// Options of `readdir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaddirOptions {
    pub revision: Option<i64>,
    /// At most this many keys; 0 or `None` is no limit.
    pub limit: Option<i64>,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
}

//! One error type for the whole client, with variants a caller can act on.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong talking to etcd.
///
/// Each variant names the endpoint and, where there is one, the key, so a log line is enough to
/// know what failed and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The options given to [`crate::etcd::Client::new`] cannot work.
    Config(String),
    /// A key was empty where etcd needs one.
    EmptyKey,
    /// A value could not be encoded with the configured serializer.
    Encode { key: String, reason: String },
    /// Connecting, writing or reading failed before an answer arrived.
    Transport {
        endpoint: String,
        key: String,
        reason: String,
    },
    /// No answer within the request timeout.
    Timeout {
        endpoint: String,
        key: String,
        after: Duration,
    },
    /// etcd answered with an HTTP error status; `code` is its gRPC code when the body had one.
    Status {
        endpoint: String,
        key: String,
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// The requested revision has been compacted away: re-read and watch from a newer revision.
    Compacted {
        endpoint: String,
        key: String,
        compact_revision: Option<i64>,
    },
    /// Authentication failed (wrong user or password, auth not enabled, permission denied).
    Auth { endpoint: String, message: String },
    /// Every endpoint is marked unhealthy.
    NoHealthyEndpoint { endpoints: Vec<String> },
    /// etcd answered something this client cannot read.
    Decode {
        endpoint: String,
        key: String,
        reason: String,
    },
    /// The v2 keys API refused the request (`errorCode` in its answer).
    V2 {
        endpoint: String,
        code: V2Code,
        message: String,
        cause: String,
        index: u64,
    },
    /// An answer body (or a watch message) grew past the client's `max_response_bytes`; the
    /// connection was closed. Ask for less (a smaller page) or raise the limit.
    TooLarge {
        endpoint: String,
        key: String,
        limit: usize,
    },
    /// A watch saw no data for its read timeout. The endpoint is fine; watch again.
    WatchIdle {
        endpoint: String,
        key: String,
        after: Duration,
    },
}

impl Error {
    /// Whether this failure says something bad about the endpoint (and may be retried on
    /// another one), as opposed to an answer from a healthy etcd.
    pub fn is_endpoint_failure(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } | Error::TooLarge { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The gRPC code etcd put in its error body, if any.
    pub fn grpc_code(&self) -> Option<i64> {
        match self {
            Error::Status { code, .. } => *code,
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "etcd client configuration: {msg}"),
            Error::EmptyKey => f.write_str("key should not be empty"),
            Error::Encode { key, reason } => {
                write!(f, "cannot encode value of key {key:?}: {reason}")
            }
            Error::Transport {
                endpoint,
                key,
                reason,
            } => {
                write!(
                    f,
                    "etcd {endpoint}: request for key {key:?} failed: {reason}"
                )
            }
            Error::Timeout {
                endpoint,
                key,
                after,
            } => write!(
                f,
                "etcd {endpoint}: request for key {key:?} timed out after {after:?}"
            ),
            Error::Status {
                endpoint,
                key,
                status,
                code,
                message,
            } => {
                write!(f, "etcd {endpoint}: key {key:?}: HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " (grpc code {code})")?;
                }
                write!(f, ": {message}")
            }
            Error::Compacted {
                endpoint,
                key,
                compact_revision,
            } => {
                write!(
                    f,
                    "etcd {endpoint}: key {key:?}: required revision has been compacted"
                )?;
                if let Some(rev) = compact_revision {
                    write!(f, " (compacted up to {rev})")?;
                }
                Ok(())
            }
            Error::Auth { endpoint, message } => {
                write!(f, "etcd {endpoint}: authentication failed: {message}")
            }
            Error::NoHealthyEndpoint { endpoints } => write!(
                f,
                "has no healthy etcd endpoint available (all marked unhealthy: {})",
                endpoints.join(", ")
            ),
            Error::Decode {
                endpoint,
                key,
                reason,
            } => {
                write!(
                    f,
                    "etcd {endpoint}: cannot read answer for key {key:?}: {reason}"
                )
            }
            Error::V2 {
                endpoint,
                code,
                message,
                cause,
                index,
            } => write!(
                f,
                "etcd {endpoint}: v2 error {} ({message}): {cause} [index {index}]",
                code.number()
            ),
            Error::TooLarge {
                endpoint,
                key,
                limit,
            } => write!(
                f,
                "etcd {endpoint}: the answer for {key:?} is larger than {limit} bytes (max_response_bytes); connection closed"
            ),
            Error::WatchIdle {
                endpoint,
                key,
                after,
            } => write!(
                f,
                "etcd {endpoint}: watch on {key:?} saw nothing for {after:?}; watch again"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// The v2 keys API's error codes that callers act on; the rest keep their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Code {
    /// 100
    KeyNotFound,
    /// 101: `prevValue` or `prevIndex` did not match.
    CompareFailed,
    /// 102: a file operation on a directory.
    NotAFile,
    /// 104: a directory operation on a file.
    NotADirectory,
    /// 105
    NodeExists,
    /// 107
    RootReadOnly,
    /// 108
    DirectoryNotEmpty,
    /// 201
    PrevValueRequired,
    /// 202
    TtlNotANumber,
    /// 203
    IndexNotANumber,
    /// 209
    InvalidField,
    /// 401: the waited-for index is older than the 1000 events etcd keeps.
    EventIndexCleared,
    /// 110 (v2 auth): the credentials were refused.
    Unauthorized,
    Other(u32),
}

impl V2Code {
    pub fn from_number(n: u32) -> V2Code {
        match n {
            100 => V2Code::KeyNotFound,
            101 => V2Code::CompareFailed,
            102 => V2Code::NotAFile,
            104 => V2Code::NotADirectory,
            105 => V2Code::NodeExists,
            107 => V2Code::RootReadOnly,
            108 => V2Code::DirectoryNotEmpty,
            201 => V2Code::PrevValueRequired,
            202 => V2Code::TtlNotANumber,
            203 => V2Code::IndexNotANumber,
            209 => V2Code::InvalidField,
            401 => V2Code::EventIndexCleared,
            110 => V2Code::Unauthorized,
            n => V2Code::Other(n),
        }
    }

    pub fn number(self) -> u32 {
        match self {
            V2Code::KeyNotFound => 100,
            V2Code::CompareFailed => 101,
            V2Code::NotAFile => 102,
            V2Code::NotADirectory => 104,
            V2Code::NodeExists => 105,
            V2Code::RootReadOnly => 107,
            V2Code::DirectoryNotEmpty => 108,
            V2Code::PrevValueRequired => 201,
            V2Code::TtlNotANumber => 202,
            V2Code::IndexNotANumber => 203,
            V2Code::InvalidField => 209,
            V2Code::EventIndexCleared => 401,
            V2Code::Unauthorized => 110,
            V2Code::Other(n) => n,
        }
    }
}

/// Why a stored value could not be decoded with the configured serializer.
///
/// Carried per key-value, so one bad value never hides the others in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "value of key {:?} cannot be decoded: {}",
            self.key, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

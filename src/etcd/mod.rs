//! Portico's etcd client.
//!
//! It speaks etcd's v3 JSON gateway (the surface of lua-resty-etcd, and more) over Pingora's
//! own HTTP client, so the gateway carries a single HTTP and TLS stack. Nothing here knows
//! about the gateway: the rest of Portico uses this module, never the other way round.
//!
//! ```no_run
//! # async fn demo() -> Result<(), portico::etcd::Error> {
//! use portico::etcd::{Client, ClientOptions, GetOptions, SetOptions};
//! let client = Client::new(ClientOptions {
//!     endpoints: vec!["http://127.0.0.1:2379".into()],
//!     ..Default::default()
//! })?;
//! client.set("/apisix/routes/1", &serde_json::json!({"uri": "/"}), SetOptions::default()).await?;
//! let got = client.get("/apisix/routes/1", GetOptions::default()).await?;
//! println!("revision {}: {:?}", got.header.revision, got.kv.map(|kv| kv.value));
//! # Ok(()) }
//! ```

mod client;
mod codec;
mod endpoint;
mod error;
mod kv;
mod lease;
mod options;
mod transport;
mod txn;
mod types;
pub mod v2;
mod watch;

pub use client::{api_prefix_for, Client};
pub use codec::prefix_range_end;
pub use endpoint::Endpoint;
pub use error::{DecodeError, Error, Result, V2Code};
pub use kv::{Snapshot, DEFAULT_PAGE};
pub use lease::{KeepAlive, KeepAliveState};
pub use options::{
    ClientOptions, DeleteOptions, GetOptions, HealthOptions, Pem, ReaddirOptions, Serializer,
    SetOptions, SortOrder, SortTarget, TlsOptions, DEFAULT_MAX_RESPONSE_BYTES,
};
pub use txn::{Compare, CompareResult, CompareTarget, TxnOp};
pub use types::{
    DeleteResponse, GetResponse, KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseTimeToLiveResponse, LeasesResponse, PutResponse, RangeResponse, ResponseHeader,
    TxnOpResponse, TxnResponse, Version,
};
pub use watch::{
    parse_line, Event, EventKind, LineSplitter, WatchFilter, WatchMessage, WatchOptions,
    WatchStream,
};

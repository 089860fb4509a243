//! Answers as callers see them, and the JSON gateway's wire shapes they are decoded from.

use serde::Deserialize;

use super::codec::{de_i64, de_u64, unb64, Codec};
use super::error::DecodeError;

// === public answers ===

/// The header every etcd answer carries; `revision` is the store revision it was served at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ResponseHeader {
    #[serde(default, deserialize_with = "de_u64")]
    pub cluster_id: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub member_id: u64,
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
    #[serde(default, deserialize_with = "de_u64")]
    pub raft_term: u64,
}

/// One stored key and its value, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The key with the client's key prefix removed.
    pub key: String,
    /// The stored bytes, as they are.
    pub raw_value: Vec<u8>,
    /// The value decoded by the serializer; a bad value is an error for this key only.
    pub value: Result<serde_json::Value, DecodeError>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// Lease ID, 0 when none.
    pub lease: i64,
}

/// `get`: the key, if it exists.
#[derive(Debug, Clone, PartialEq)]
pub struct GetResponse {
    pub header: ResponseHeader,
    pub kv: Option<KeyValue>,
}

/// `readdir` and range reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeResponse {
    pub header: ResponseHeader,
    pub kvs: Vec<KeyValue>,
    /// More keys are in the range than `limit` let through.
    pub more: bool,
    /// Keys in the range (all of them, whatever `limit` was).
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PutResponse {
    pub header: ResponseHeader,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeleteResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// One answer inside a transaction, in the order of the requests.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOpResponse {
    Put(PutResponse),
    Range(RangeResponse),
    Delete(DeleteResponse),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub etcdserver: String,
    pub etcdcluster: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub header: ResponseHeader,
    pub id: i64,
    pub ttl: i64,
}

/// `keepalive`: `ttl` is 0 when the lease no longer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKeepAliveResponse {
    pub header: ResponseHeader,
    pub id: i64,
    pub ttl: i64,
}

/// `timetolive`: `ttl` is -1 when the lease does not exist; `keys` only when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTimeToLiveResponse {
    pub header: ResponseHeader,
    pub id: i64,
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasesResponse {
    pub header: ResponseHeader,
    pub leases: Vec<i64>,
}

// === wire shapes (what the JSON gateway sends) ===

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireKv {
    #[serde(default)]
    pub key: String,
    #[serde(default, deserialize_with = "de_i64")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub version: i64,
    #[serde(default)]
    pub value: String,
    #[serde(default, deserialize_with = "de_i64")]
    pub lease: i64,
}

impl WireKv {
    pub fn decode(self, codec: &Codec) -> Result<KeyValue, String> {
        let key = codec.strip_key(&unb64(&self.key)?);
        let raw_value = unb64(&self.value)?;
        let value = codec.decode_value(&key, &raw_value);
        Ok(KeyValue {
            key,
            raw_value,
            value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        })
    }
}

pub(crate) fn decode_kvs(kvs: Vec<WireKv>, codec: &Codec) -> Result<Vec<KeyValue>, String> {
    kvs.into_iter().map(|kv| kv.decode(codec)).collect()
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireRange {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub kvs: Vec<WireKv>,
    #[serde(default)]
    pub more: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub count: i64,
}

impl WireRange {
    pub fn decode(self, codec: &Codec) -> Result<RangeResponse, String> {
        Ok(RangeResponse {
            header: self.header,
            kvs: decode_kvs(self.kvs, codec)?,
            more: self.more,
            count: self.count,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WirePut {
    #[serde(default)]
    pub header: ResponseHeader,
    pub prev_kv: Option<WireKv>,
}

impl WirePut {
    pub fn decode(self, codec: &Codec) -> Result<PutResponse, String> {
        Ok(PutResponse {
            header: self.header,
            prev_kv: self.prev_kv.map(|kv| kv.decode(codec)).transpose()?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireDelete {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, deserialize_with = "de_i64")]
    pub deleted: i64,
    #[serde(default)]
    pub prev_kvs: Vec<WireKv>,
}

impl WireDelete {
    pub fn decode(self, codec: &Codec) -> Result<DeleteResponse, String> {
        Ok(DeleteResponse {
            header: self.header,
            deleted: self.deleted,
            prev_kvs: decode_kvs(self.prev_kvs, codec)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireTxnOp {
    pub response_put: Option<WirePut>,
    pub response_range: Option<WireRange>,
    pub response_delete_range: Option<WireDelete>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireTxn {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<WireTxnOp>,
}

impl WireTxn {
    pub fn decode(self, codec: &Codec) -> Result<TxnResponse, String> {
        let mut responses = Vec::with_capacity(self.responses.len());
        for op in self.responses {
            responses.push(if let Some(p) = op.response_put {
                TxnOpResponse::Put(p.decode(codec)?)
            } else if let Some(r) = op.response_range {
                TxnOpResponse::Range(r.decode(codec)?)
            } else if let Some(d) = op.response_delete_range {
                TxnOpResponse::Delete(d.decode(codec)?)
            } else {
                // An empty object is etcd omitting an all-default answer: a put with no prev_kv.
                TxnOpResponse::Put(PutResponse {
                    header: ResponseHeader::default(),
                    prev_kv: None,
                })
            });
        }
        Ok(TxnResponse {
            header: self.header,
            succeeded: self.succeeded,
            responses,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireLease {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
    #[serde(rename = "grantedTTL", default, deserialize_with = "de_i64")]
    pub granted_ttl: i64,
    #[serde(default)]
    pub keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireKeepAlive {
    pub result: Option<WireLease>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireLeaseId {
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    pub id: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireLeases {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub leases: Vec<WireLeaseId>,
}

/// The error body etcd sends with a non-200 status.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireError {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    pub code: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireHeaderOnly {
    #[serde(default)]
    pub header: ResponseHeader,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireAuthenticate {
    #[serde(default)]
    pub token: String,
}

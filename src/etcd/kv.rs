//! Key-value calls: get, set, setnx, setx, delete, readdir (plain and paged), rmdir.

use serde_json::{json, Map, Value};

use super::client::{Client, Replay};
use super::codec::unb64;
use super::error::{Error, Result};
use super::options::{
    DeleteOptions, GetOptions, ReaddirOptions, SetOptions, SortOrder, SortTarget,
};
use super::txn::{Compare, CompareResult, CompareTarget, TxnOp};
use super::types::{
    DeleteResponse, GetResponse, KeyValue, PutResponse, RangeResponse, ResponseHeader, TxnResponse,
    WireDelete, WirePut, WireRange,
};

/// Every key under a prefix, read in pages at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The revision all pages were read at: watch from `revision + 1`.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// Keys per page for [`Client::readdir_paged`] unless told otherwise.
pub const DEFAULT_PAGE: i64 = 1000;

impl SortOrder {
    fn wire(self) -> &'static str {
        match self {
            SortOrder::None => "NONE",
            SortOrder::Ascend => "ASCEND",
            SortOrder::Descend => "DESCEND",
        }
    }
}

impl SortTarget {
    fn wire(self) -> &'static str {
        match self {
            SortTarget::Key => "KEY",
            SortTarget::Version => "VERSION",
            SortTarget::Create => "CREATE",
            SortTarget::Mod => "MOD",
            SortTarget::Value => "VALUE",
        }
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        Err(Error::EmptyKey)
    } else {
        Ok(())
    }
}

impl Client {
    // === request bodies (shared with txn) ===

    pub(crate) fn range_body(&self, key: &str, dir: bool, opts: &ReaddirOptions) -> Value {
        let codec = &self.inner.codec;
        let mut body = Map::new();
        body.insert("key".into(), codec.key(key).into());
        if dir {
            body.insert("range_end".into(), codec.dir_range_end(key).into());
        }
        if let Some(rev) = opts.revision.filter(|r| *r > 0) {
            body.insert("revision".into(), rev.to_string().into());
        }
        if let Some(limit) = opts.limit.filter(|l| *l > 0) {
            body.insert("limit".into(), limit.to_string().into());
        }
        if opts.sort_order != SortOrder::None {
            body.insert("sort_order".into(), opts.sort_order.wire().into());
            body.insert("sort_target".into(), opts.sort_target.wire().into());
        }
        if opts.keys_only {
            body.insert("keys_only".into(), true.into());
        }
        if opts.count_only {
            body.insert("count_only".into(), true.into());
        }
        Value::Object(body)
    }

    pub(crate) fn put_body(&self, key: &str, value: &Value, opts: &SetOptions) -> Result<Value> {
        let encoded = if opts.ignore_value {
            None
        } else {
            Some(self.inner.codec.encode_value(key, value)?)
        };
        Ok(self.put_body_encoded(key, encoded, opts))
    }

    /// A put body with the value already base64-encoded (`None` with `ignore_value`).
    fn put_body_encoded(&self, key: &str, encoded: Option<String>, opts: &SetOptions) -> Value {
        let codec = &self.inner.codec;
        let mut body = Map::new();
        body.insert("key".into(), codec.key(key).into());
        if let Some(value) = encoded {
            body.insert("value".into(), value.into());
        }
        if let Some(lease) = opts.lease.filter(|l| *l != 0) {
            body.insert("lease".into(), lease.to_string().into());
        }
        for (flag, name) in [
            (opts.prev_kv, "prev_kv"),
            (opts.ignore_value, "ignore_value"),
            (opts.ignore_lease, "ignore_lease"),
        ] {
            if flag {
                body.insert(name.into(), true.into());
            }
        }
        Value::Object(body)
    }

    pub(crate) fn delete_body(&self, key: &str, dir: bool, opts: &DeleteOptions) -> Value {
        let codec = &self.inner.codec;
        let mut body = json!({"key": codec.key(key)});
        if dir {
            body["range_end"] = codec.dir_range_end(key).into();
        }
        if opts.prev_kv {
            body["prev_kv"] = true.into();
        }
        body
    }

    // === calls ===

    /// Reads one key.
    pub async fn get(&self, key: &str, opts: GetOptions) -> Result<GetResponse> {
        check_key(key)?;
        let ropts = ReaddirOptions {
            revision: opts.revision,
            ..Default::default()
        };
        let body = self.range_body(key, false, &ropts);
        let mut range = self
            .post_decoded("/kv/range", &body, key, Replay::Safe, WireRange::decode)
            .await?;
        Ok(GetResponse {
            header: range.header,
            kv: range.kvs.pop(),
        })
    }

    /// Writes one key.
    pub async fn set(&self, key: &str, value: &Value, opts: SetOptions) -> Result<PutResponse> {
        check_key(key)?;
        let body = self.put_body(key, value, &opts)?;
        self.post_decoded("/kv/put", &body, key, Replay::Safe, WirePut::decode)
            .await
    }

    /// Writes the key only if it does not exist (`succeeded` says whether it did).
    pub async fn setnx(&self, key: &str, value: &Value) -> Result<TxnResponse> {
        check_key(key)?;
        let missing = Compare::new(key, CompareTarget::CreateRevision(0), CompareResult::Equal);
        let put = TxnOp::put(key, value.clone(), SetOptions::default());
        self.txn(&[missing], &[put], &[]).await
    }

    /// Writes the key only if it exists (`succeeded` says whether it did).
    pub async fn setx(&self, key: &str, value: &Value) -> Result<TxnResponse> {
        check_key(key)?;
        let missing = Compare::new(key, CompareTarget::CreateRevision(0), CompareResult::Equal);
        let put = TxnOp::put(key, value.clone(), SetOptions::default());
        let resp = self.txn(&[missing], &[], &[put]).await?;
        // The txn "succeeds" when the key is missing, which for setx means nothing was written.
        Ok(TxnResponse {
            succeeded: !resp.succeeded,
            ..resp
        })
    }

    /// Deletes one key.
    pub async fn delete(&self, key: &str, opts: DeleteOptions) -> Result<DeleteResponse> {
        check_key(key)?;
        let body = self.delete_body(key, false, &opts);
        self.post_decoded(
            "/kv/deleterange",
            &body,
            key,
            Replay::Safe,
            WireDelete::decode,
        )
        .await
    }

    /// Reads every key starting with `dir` (a plain prefix: pass a trailing `/` so that
    /// `/dir/` does not also match `/dir-x`). An empty `dir` with no key prefix reads all keys.
    pub async fn readdir(&self, dir: &str, opts: ReaddirOptions) -> Result<RangeResponse> {
        let body = self.range_body(dir, true, &opts);
        self.post_decoded("/kv/range", &body, dir, Replay::Safe, WireRange::decode)
            .await
    }

    /// Reads every key under `dir` in pages of `page` keys, all at the revision of the first
    /// page, so a prefix of any size is read consistently without hitting etcd's reply limit.
    /// A page etcd still finds too large is retried with half as many keys.
    pub async fn readdir_paged(&self, dir: &str, page: i64) -> Result<Snapshot> {
        let codec = &self.inner.codec;
        let range_end = codec.dir_range_end(dir);
        let mut page = page.max(1);
        let mut revision = 0i64;
        let mut start = codec.full_key(dir).into_bytes();
        let mut kvs = Vec::new();
        loop {
            let mut body = json!({
                "key": super::codec::b64(&start),
                "range_end": range_end,
                "limit": page.to_string(),
            });
            if revision > 0 {
                body["revision"] = revision.to_string().into();
            }
            // Keep the last raw key: decoded keys are prefix-stripped and may be lossy.
            let page_of = |w: WireRange, codec: &super::codec::Codec| {
                let last = w.kvs.last().map(|kv| unb64(&kv.key)).transpose()?;
                Ok((w.decode(codec)?, last))
            };
            let answer = self
                .post_decoded("/kv/range", &body, dir, Replay::Safe, page_of)
                .await;
            let (range, last) = match answer {
                Err(Error::Status { ref message, .. })
                    if page > 1 && message.contains("larger than max") =>
                {
                    page /= 2;
                    log::info!("etcd page for {dir:?} too large; reading {page} keys at a time");
                    continue;
                }
                other => other?,
            };
            if revision == 0 {
                revision = range.header.revision;
            }
            kvs.extend(range.kvs);
            match last {
                Some(mut key) if range.more => {
                    key.push(0);
                    start = key;
                }
                _ => return Ok(Snapshot { revision, kvs }),
            }
        }
    }

    /// Deletes every key starting with `dir` (a plain prefix, as for `readdir`).
    pub async fn rmdir(&self, dir: &str, opts: DeleteOptions) -> Result<DeleteResponse> {
        let body = self.delete_body(dir, true, &opts);
        self.post_decoded(
            "/kv/deleterange",
            &body,
            dir,
            Replay::Safe,
            WireDelete::decode,
        )
        .await
    }

    /// Compacts the store's history up to `revision`.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<ResponseHeader> {
        let body = json!({"revision": revision.to_string(), "physical": physical});
        let r: super::types::WireHeaderOnly =
            self.post("/kv/compaction", &body, "", Replay::Safe).await?;
        Ok(r.header)
    }

    /// Writes bytes as they are, whatever the serializer (for values that are not text).
    pub async fn set_bytes(
        &self,
        key: &str,
        bytes: &[u8],
        opts: SetOptions,
    ) -> Result<PutResponse> {
        check_key(key)?;
        let encoded = (!opts.ignore_value).then(|| super::codec::b64(bytes));
        let body = self.put_body_encoded(key, encoded, &opts);
        self.post_decoded("/kv/put", &body, key, Replay::Safe, WirePut::decode)
            .await
    }
}

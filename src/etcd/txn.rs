//! Transactions with typed compares and operations. Keys are prefixed and values encoded the
//! same way as in single calls, for compares and for every kind of operation.

use serde_json::{json, Map, Value};

use super::client::{Client, Replay};
use super::error::{Error, Result};
use super::options::{DeleteOptions, ReaddirOptions, SetOptions};
use super::types::{TxnResponse, WireTxn};

/// What a compare looks at, with the operand to compare it to.
#[derive(Debug, Clone, PartialEq)]
pub enum CompareTarget {
    Version(i64),
    /// 0 means "the key does not exist".
    CreateRevision(i64),
    ModRevision(i64),
    /// Compared after encoding with the client's serializer.
    Value(Value),
    Lease(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
    pub result: CompareResult,
    /// Compare every key under `key` (a prefix) instead of one key.
    pub prefix: bool,
}

impl Compare {
    pub fn new(key: impl Into<String>, target: CompareTarget, result: CompareResult) -> Self {
        Compare {
            key: key.into(),
            target,
            result,
            prefix: false,
        }
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Value,
        options: SetOptions,
    },
    Range {
        key: String,
        /// Read every key under `key` as a prefix.
        dir: bool,
        options: ReaddirOptions,
    },
    Delete {
        key: String,
        dir: bool,
        options: DeleteOptions,
    },
}

impl TxnOp {
    pub fn put(key: impl Into<String>, value: Value, options: SetOptions) -> Self {
        TxnOp::Put {
            key: key.into(),
            value,
            options,
        }
    }

    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Range {
            key: key.into(),
            dir: false,
            options: ReaddirOptions::default(),
        }
    }

    pub fn readdir(dir: impl Into<String>, options: ReaddirOptions) -> Self {
        TxnOp::Range {
            key: dir.into(),
            dir: true,
            options,
        }
    }

    pub fn delete(key: impl Into<String>, options: DeleteOptions) -> Self {
        TxnOp::Delete {
            key: key.into(),
            dir: false,
            options,
        }
    }

    pub fn rmdir(dir: impl Into<String>, options: DeleteOptions) -> Self {
        TxnOp::Delete {
            key: dir.into(),
            dir: true,
            options,
        }
    }
}

impl Client {
    fn compare_body(&self, c: &Compare) -> Result<Value> {
        let codec = &self.inner.codec;
        if c.key.is_empty() && !c.prefix {
            return Err(Error::EmptyKey);
        }
        let mut body = Map::new();
        body.insert("key".into(), codec.key(&c.key).into());
        if c.prefix {
            body.insert("range_end".into(), codec.dir_range_end(&c.key).into());
        }
        let result = match c.result {
            CompareResult::Equal => "EQUAL",
            CompareResult::Greater => "GREATER",
            CompareResult::Less => "LESS",
            CompareResult::NotEqual => "NOT_EQUAL",
        };
        body.insert("result".into(), result.into());
        let (target, field, operand): (&str, &str, Value) = match &c.target {
            CompareTarget::Version(v) => ("VERSION", "version", v.to_string().into()),
            CompareTarget::CreateRevision(v) => ("CREATE", "create_revision", v.to_string().into()),
            CompareTarget::ModRevision(v) => ("MOD", "mod_revision", v.to_string().into()),
            CompareTarget::Lease(v) => ("LEASE", "lease", v.to_string().into()),
            CompareTarget::Value(v) => ("VALUE", "value", codec.encode_value(&c.key, v)?.into()),
        };
        body.insert("target".into(), target.into());
        body.insert(field.into(), operand);
        Ok(Value::Object(body))
    }

    fn op_body(&self, op: &TxnOp) -> Result<Value> {
        Ok(match op {
            TxnOp::Put {
                key,
                value,
                options,
            } => {
                if key.is_empty() {
                    return Err(Error::EmptyKey);
                }
                json!({"request_put": self.put_body(key, value, options)?})
            }
            TxnOp::Range { key, dir, options } => {
                if key.is_empty() && !dir {
                    return Err(Error::EmptyKey);
                }
                json!({"request_range": self.range_body(key, *dir, options)})
            }
            TxnOp::Delete { key, dir, options } => {
                if key.is_empty() && !dir {
                    return Err(Error::EmptyKey);
                }
                json!({"request_delete_range": self.delete_body(key, *dir, options)})
            }
        })
    }

    /// Runs `success` if every compare holds, else `failure`, atomically.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<TxnResponse> {
        let body = json!({
            "compare": compare.iter().map(|c| self.compare_body(c)).collect::<Result<Vec<_>>>()?,
            "success": success.iter().map(|o| self.op_body(o)).collect::<Result<Vec<_>>>()?,
            "failure": failure.iter().map(|o| self.op_body(o)).collect::<Result<Vec<_>>>()?,
        });
        let key = compare.first().map(|c| c.key.as_str()).unwrap_or("(txn)");
        self.post_decoded("/kv/txn", &body, key, Replay::ConnectOnly, WireTxn::decode)
            .await
    }
}

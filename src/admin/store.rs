//! The Admin API's etcd calls: reads, and writes that only happen when the key is still
//! as it was read (a transaction on its mod_revision), so two writers never lose each
//! other's change.

use serde_json::Value;

use crate::etcd::{
    Client, Compare, CompareResult, CompareTarget, DeleteOptions, Error, GetOptions, KeyValue,
    ReaddirOptions, SetOptions, SortOrder, SortTarget, TxnOp,
};

/// One stored resource, as the Admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub key: String,
    /// The stored JSON; a value that is not JSON shows as the string it is.
    pub value: Value,
    pub created: i64,
    pub modified: i64,
}

impl Stored {
    fn from_kv(kv: &KeyValue) -> Stored {
        Stored {
            key: kv.key.clone(),
            value: match &kv.value {
                Ok(v) => v.clone(),
                Err(_) => Value::String(String::from_utf8_lossy(&kv.raw_value).into_owned()),
            },
            created: kv.create_revision,
            modified: kv.mod_revision,
        }
    }
}

/// What a conditional write expects of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It does not exist.
    Absent,
    /// It exists at this mod_revision.
    At(i64),
}

/// The lease a write attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// None: the key lives until deleted.
    None,
    /// This one (`?ttl=`).
    New(i64),
    /// Whatever the key has now (a PATCH without `?ttl=`).
    Keep,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the store's revision after the write.
    Done(i64),
    /// The key changed since it was read: nothing was written.
    Conflict,
}

/// etcd, as the Admin API uses it.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl Store {
    pub fn new(client: Client, prefix: String) -> Store {
        Store { client, prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn get(&self, key: &str) -> Result<Option<Stored>, Error> {
        let r = self.client.get(key, GetOptions::default()).await?;
        Ok(r.kv.as_ref().map(Stored::from_kv))
    }

    /// Every key under `dir` (ending in `/`) that names one resource (not what lies deeper,
    /// such as a consumer's credentials): in key order, or oldest first with `by_age`.
    pub async fn list(&self, dir: &str, by_age: bool) -> Result<Vec<Stored>, Error> {
        let opts = if by_age {
            ReaddirOptions {
                sort_order: SortOrder::Ascend,
                sort_target: SortTarget::Create,
                ..Default::default()
            }
        } else {
            ReaddirOptions::default()
        };
        let r = self.client.readdir(dir, opts).await?;
        Ok(r.kvs
            .iter()
            .filter(|kv| {
                kv.key
                    .strip_prefix(dir)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            })
            .map(Stored::from_kv)
            .collect())
    }

    /// Writes `value` at `key` if the key is as `expect` says, attached to `lease` if given.
    pub async fn write_if(
        &self,
        key: &str,
        value: &Value,
        expect: Expect,
        lease: Lease,
    ) -> Result<Written, Error> {
        let options = match lease {
            Lease::None => SetOptions::default(),
            Lease::New(id) => SetOptions {
                lease: Some(id),
                ..Default::default()
            },
            Lease::Keep => SetOptions {
                ignore_lease: true,
                ..Default::default()
            },
        };
        let put = TxnOp::put(key, value.clone(), options);
        let r = self
            .client
            .txn(&[compare(key, expect)], &[put], &[])
            .await?;
        Ok(if r.succeeded {
            Written::Done(r.header.revision)
        } else {
            Written::Conflict
        })
    }

    /// Deletes `key` (and, for a consumer, the credentials under it) if it is still at
    /// `modified`.
    pub async fn delete_if(
        &self,
        key: &str,
        modified: i64,
        also_dir: Option<&str>,
    ) -> Result<Written, Error> {
        let mut ops = vec![TxnOp::delete(key, DeleteOptions::default())];
        if let Some(dir) = also_dir {
            ops.push(TxnOp::rmdir(dir, DeleteOptions::default()));
        }
        let r = self
            .client
            .txn(&[compare(key, Expect::At(modified))], &ops, &[])
            .await?;
        Ok(if r.succeeded {
            Written::Done(r.header.revision)
        } else {
            Written::Conflict
        })
    }

    /// A new id for POST, as APISIX makes them: the revision of a write to `<prefix>/gen_id`,
    /// zero-padded to 20 digits (so ids sort as they were made).
    pub async fn gen_id(&self) -> Result<String, Error> {
        let key = format!("{}/gen_id", self.prefix);
        let r = self
            .client
            .set(&key, &Value::from(1), SetOptions::default())
            .await?;
        Ok(format!("{:020}", r.header.revision))
    }

    /// A lease of `ttl` seconds for `?ttl=`.
    pub async fn lease(&self, ttl: i64) -> Result<i64, Error> {
        Ok(self.client.grant(ttl, 0).await?.id)
    }
}

fn compare(key: &str, expect: Expect) -> Compare {
    match expect {
        Expect::Absent => Compare::new(key, CompareTarget::CreateRevision(0), CompareResult::Equal),
        Expect::At(rev) => Compare::new(key, CompareTarget::ModRevision(rev), CompareResult::Equal),
    }
}

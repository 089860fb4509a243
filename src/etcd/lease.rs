//! Leases: grant, revoke, keepalive (one-shot and kept alive until dropped), timetolive, list.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{Client, Replay};
use super::codec::{unb64, Codec};
use super::error::{Error, Result};
use super::types::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseTimeToLiveResponse, LeasesResponse,
    ResponseHeader, WireHeaderOnly, WireKeepAlive, WireLease, WireLeases,
};

impl Client {
    /// Creates a lease of `ttl` seconds (etcd raises anything below 2 to 2); `id` 0 lets etcd
    /// choose the ID.
    pub async fn grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse> {
        let body = json!({"TTL": ttl.to_string(), "ID": id.to_string()});
        let replay = if id == 0 {
            Replay::ConnectOnly
        } else {
            Replay::Safe
        };
        let l: WireLease = self.post("/lease/grant", &body, "(lease)", replay).await?;
        Ok(LeaseGrantResponse {
            header: l.header,
            id: l.id,
            ttl: l.ttl,
        })
    }

    /// Revokes a lease, deleting every key attached to it.
    pub async fn revoke(&self, id: i64) -> Result<ResponseHeader> {
        let body = json!({"ID": id.to_string()});
        let r: WireHeaderOnly = self
            .post("/lease/revoke", &body, "(lease)", Replay::Safe)
            .await?;
        Ok(r.header)
    }

    /// Renews a lease once. `ttl` is 0 when the lease does not exist any more.
    pub async fn keepalive(&self, id: i64) -> Result<LeaseKeepAliveResponse> {
        let body = json!({"ID": id.to_string()});
        let k: WireKeepAlive = self
            .post("/lease/keepalive", &body, "(lease)", Replay::Safe)
            .await?;
        // A 200 without a result (an error inside the stream) is not "lease gone".
        let r = k.result.ok_or_else(|| Error::Decode {
            endpoint: String::new(),
            key: "(lease)".into(),
            reason: "keepalive answer without a result".into(),
        })?;
        Ok(LeaseKeepAliveResponse {
            header: r.header,
            id: if r.id == 0 { id } else { r.id },
            ttl: r.ttl,
        })
    }

    /// A lease's remaining and granted TTL (-1 when it does not exist), with the keys
    /// attached to it when `keys` is set (decoded, key prefix removed).
    pub async fn timetolive(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        let body = json!({"ID": id.to_string(), "keys": keys});
        let decode = |l: WireLease, codec: &Codec| {
            let keys = l
                .keys
                .iter()
                .map(|k| unb64(k).map(|raw| codec.strip_key(&raw)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(LeaseTimeToLiveResponse {
                header: l.header,
                id: l.id,
                ttl: l.ttl,
                granted_ttl: l.granted_ttl,
                keys,
            })
        };
        self.post_decoded("/lease/timetolive", &body, "(lease)", Replay::Safe, decode)
            .await
    }

    /// Every lease in the cluster.
    pub async fn leases(&self) -> Result<LeasesResponse> {
        let l: WireLeases = self
            .post("/lease/leases", &json!({}), "(lease)", Replay::Safe)
            .await?;
        Ok(LeasesResponse {
            header: l.header,
            leases: l.leases.into_iter().map(|l| l.id).collect(),
        })
    }

    /// Keeps lease `id` alive, renewing every `interval`, until the returned handle is dropped.
    /// Failures are retried at the next tick and reported through the handle; it stops on its
    /// own once etcd says the lease is gone.
    pub fn keep_alive(&self, id: i64, interval: Duration) -> KeepAlive {
        let (tx, rx) = watch::channel(KeepAliveState::Pending);
        let client = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
            loop {
                ticker.tick().await;
                let state = match client.keepalive(id).await {
                    Ok(r) if r.ttl > 0 => KeepAliveState::Alive { ttl: r.ttl },
                    Ok(_) => KeepAliveState::Gone,
                    Err(e) => {
                        log::warn!("keeping lease {id} alive: {e}");
                        KeepAliveState::Failing(e)
                    }
                };
                let gone = state == KeepAliveState::Gone;
                if tx.send(state).is_err() || gone {
                    return;
                }
            }
        });
        KeepAlive { task, state: rx }
    }
}

/// The last outcome of a kept-alive lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAliveState {
    /// No renewal has answered yet.
    Pending,
    Alive {
        ttl: i64,
    },
    /// The lease expired or was revoked; renewals stopped.
    Gone,
    /// The last renewal failed; it will be tried again.
    Failing(Error),
}

/// Renews a lease in the background until dropped.
pub struct KeepAlive {
    task: JoinHandle<()>,
    state: watch::Receiver<KeepAliveState>,
}

impl KeepAlive {
    pub fn state(&self) -> KeepAliveState {
        self.state.borrow().clone()
    }

    /// Waits for the next renewal outcome.
    pub async fn changed(&mut self) -> KeepAliveState {
        let _ = self.state.changed().await;
        self.state.borrow().clone()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! The KV, transaction and lease calls of Portico's etcd client, a few lines each.
//!
//! cargo run --example etcd_kv -- http://127.0.0.1:2379

use std::time::Duration;

use portico::etcd::{
    Client, ClientOptions, Compare, CompareResult, CompareTarget, DeleteOptions, GetOptions,
    ReaddirOptions, SetOptions, TxnOp,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), portico::etcd::Error> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let etcd = Client::new(ClientOptions {
        endpoints: vec![endpoint],
        key_prefix: "/portico-example".into(),
        ..Default::default()
    })?;

    // Key-value: values are JSON; every answer carries the store revision.
    let put = etcd
        .set(
            "/routes/1",
            &json!({"uri": "/hello"}),
            SetOptions::default(),
        )
        .await?;
    let got = etcd.get("/routes/1", GetOptions::default()).await?;
    println!(
        "put at {}, read {:?}",
        put.header.revision,
        got.kv.map(|kv| kv.value)
    );
    let dir = etcd.readdir("/routes/", ReaddirOptions::default()).await?;
    println!("{} route(s) under /routes/", dir.count);

    // Transaction: create /routes/2 only if it does not exist yet.
    let absent = Compare::new(
        "/routes/2",
        CompareTarget::CreateRevision(0),
        CompareResult::Equal,
    );
    let create = TxnOp::put("/routes/2", json!({"uri": "/two"}), SetOptions::default());
    let txn = etcd.txn(&[absent], &[create], &[]).await?;
    println!("created /routes/2: {}", txn.succeeded);

    // Lease: a key that lives as long as its lease is kept alive.
    let lease = etcd.grant(5, 0).await?;
    let opts = SetOptions {
        lease: Some(lease.id),
        ..Default::default()
    };
    etcd.set("/nodes/me", &json!({"addr": "127.0.0.1:8080"}), opts)
        .await?;
    let keeper = etcd.keep_alive(lease.id, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("lease {:x}: {:?}", lease.id, keeper.state());
    drop(keeper);
    etcd.revoke(lease.id).await?;

    etcd.rmdir("/", DeleteOptions::default()).await?;
    Ok(())
}

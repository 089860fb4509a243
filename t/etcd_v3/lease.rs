use std::time::Duration;

use portico::etcd::{Error, GetOptions, KeepAliveState, SetOptions};
use serde_json::json;

use crate::harness::EtcdMember;
use crate::{client, client_for};

#[tokio::test]
async fn grant_attach_expire_revoke() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let lease = c.grant(2, 0).await.unwrap();
    assert!(lease.id > 0);
    assert_eq!(lease.ttl, 2);
    c.set(
        "/tmp/a",
        &json!(1),
        SetOptions {
            lease: Some(lease.id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // etcdctl sees the same lease, in hex.
    let listed = etcd.etcdctl(&["lease", "list"]);
    assert!(listed.contains(&format!("{:x}", lease.id)), "{listed}");
    let ttl = c.timetolive(lease.id, true).await.unwrap();
    assert_eq!(ttl.granted_ttl, 2);
    assert_eq!(ttl.keys, vec!["/tmp/a".to_string()]);
    assert!(c.leases().await.unwrap().leases.contains(&lease.id));
    // Unattended, it expires and takes the key with it.
    assert!(crate::harness::wait_until(Duration::from_secs(6), || {
        etcd.etcdctl(&["get", "/tmp/a"]).is_empty()
    }));
    assert_eq!(c.timetolive(lease.id, false).await.unwrap().ttl, -1);
    assert_eq!(c.keepalive(lease.id).await.unwrap().ttl, 0);

    // A chosen ID above 2^53 survives the round trip exactly.
    let id = (1i64 << 60) + 12345;
    let l = c.grant(60, id).await.unwrap();
    assert_eq!(l.id, id);
    let err = c.grant(60, id).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 412, .. }), "{err:?}");
    c.set(
        "/tmp/b",
        &json!(1),
        SetOptions {
            lease: Some(id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.revoke(id).await.unwrap();
    assert!(c
        .get("/tmp/b", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_none());
    let err = c.revoke(id).await.unwrap_err();
    assert!(err.to_string().contains("lease not found"), "{err}");
}

#[tokio::test]
async fn keepalive_once_and_until_dropped() {
    let etcd = EtcdMember::start();
    let c = client(&[etcd.url()], |o| o.key_prefix = "/pre".into());
    let lease = c.grant(2, 0).await.unwrap().id;
    let k = c.keepalive(lease).await.unwrap();
    assert_eq!((k.id, k.ttl), (lease, 2));
    c.set(
        "/kept",
        &json!(1),
        SetOptions {
            lease: Some(lease),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        c.timetolive(lease, true).await.unwrap().keys,
        vec!["/kept".to_string()]
    );
    let mut keeper = c.keep_alive(lease, Duration::from_millis(500));
    assert_eq!(keeper.changed().await, KeepAliveState::Alive { ttl: 2 });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c
        .get("/kept", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_some());
    drop(keeper);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c
        .get("/kept", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_none());

    // A keeper of a revoked lease reports it gone and stops.
    let lease = c.grant(5, 0).await.unwrap().id;
    c.revoke(lease).await.unwrap();
    let mut keeper = c.keep_alive(lease, Duration::from_millis(100));
    assert_eq!(keeper.changed().await, KeepAliveState::Gone);
}

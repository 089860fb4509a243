use std::time::Duration;

use portico::etcd::{Error, GetOptions, SetOptions, WatchMessage, WatchOptions};
use serde_json::json;

use crate::client;
use crate::harness::{EtcdConfig, EtcdMember};

fn with_auth(ttl: Option<u32>) -> EtcdMember {
    EtcdMember::start_with(EtcdConfig {
        root_password: Some("s3cret".into()),
        auth_token_ttl: ttl,
        ..Default::default()
    })
}

fn creds(user: &str, pw: &str) -> impl FnOnce(&mut portico::etcd::ClientOptions) {
    let (u, p) = (user.to_string(), pw.to_string());
    move |o| {
        o.user = Some(u);
        o.password = Some(p);
    }
}

#[tokio::test]
async fn auth_success_wrong_password_and_no_credentials() {
    let etcd = with_auth(None);
    let c = client(&[etcd.url()], creds("root", "s3cret"));
    c.set("/a", &json!(1), SetOptions::default()).await.unwrap();
    assert_eq!(
        c.get("/a", GetOptions::default())
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        Ok(json!(1))
    );
    assert_eq!(c.authentications(), 1);

    let wrong = client(&[etcd.url()], creds("root", "nope"));
    let err = wrong.get("/a", GetOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert_eq!(
        wrong.authentications(),
        1,
        "a wrong password is not retried in a loop"
    );

    let anonymous = client(&[etcd.url()], |_| {});
    let err = anonymous
        .get("/a", GetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");

    // Watches carry the token too.
    let mut w = c.watch("/a", WatchOptions::default()).await.unwrap();
    assert!(matches!(
        crate::watch::next(&mut w).await,
        WatchMessage::Created { .. }
    ));
    c.set("/a", &json!(2), SetOptions::default()).await.unwrap();
    assert_eq!(
        crate::watch::next_events(&mut w).await[0].kv.value,
        Ok(json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_authenticate() {
    let etcd = with_auth(None);
    let c = client(&[etcd.url()], creds("root", "s3cret"));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.set(&format!("/c/{i}"), &json!(i), SetOptions::default())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.authentications(), 1);
}

#[tokio::test]
async fn token_expiry_reauthenticates_transparently() {
    let etcd = with_auth(Some(1));
    let c = client(&[etcd.url()], creds("root", "s3cret"));
    c.set("/t", &json!(1), SetOptions::default()).await.unwrap();
    assert_eq!(c.authentications(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The token expired: one refusal, one new authenticate, and the caller sees success.
    assert_eq!(
        c.get("/t", GetOptions::default())
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        Ok(json!(1))
    );
    assert_eq!(c.authentications(), 2);
    // A watch opened with a dead token renews it too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut w = c.watch("/t", WatchOptions::default()).await.unwrap();
    assert!(matches!(
        crate::watch::next(&mut w).await,
        WatchMessage::Created { .. }
    ));
    assert_eq!(c.authentications(), 3);
}

#[tokio::test]
async fn etcd_restart_reauthenticates_transparently() {
    // Tokens are handed out through raft and come back when a restarted member replays its
    // log; a snapshot after every entry leaves nothing to replay, as in a long-running member.
    let mut etcd = EtcdMember::start_with(EtcdConfig {
        root_password: Some("s3cret".into()),
        extra_args: vec!["--snapshot-count=1".into()],
        ..Default::default()
    });
    let c = client(&[etcd.url()], creds("root", "s3cret"));
    c.set("/t", &json!(0), SetOptions::default()).await.unwrap();
    c.set("/t", &json!(1), SetOptions::default()).await.unwrap();
    assert_eq!(c.authentications(), 1);
    etcd.restart();
    c.set("/t", &json!(2), SetOptions::default()).await.unwrap();
    assert_eq!(c.authentications(), 2);
    assert_eq!(
        c.get("/t", GetOptions::default())
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        Ok(json!(2))
    );
}

#[tokio::test]
async fn credentials_without_auth_enabled_still_work() {
    let etcd = EtcdMember::start();
    let c = client(&[etcd.url()], creds("root", "whatever"));
    c.set("/x", &json!(1), SetOptions::default()).await.unwrap();
    c.get("/x", GetOptions::default()).await.unwrap();
    assert_eq!(c.authentications(), 1);
}

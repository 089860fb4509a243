use std::time::Duration;

use futures::StreamExt;
use portico::etcd::{SetOptions, WatchMessage, WatchOptions};
use serde_json::json;

use crate::client;
use crate::harness::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_stopped_mid_test_requests_and_watch_carry_on() {
    let mut cluster = EtcdCluster::start();
    let c = client(&cluster.urls(), |o| {
        o.timeout = Duration::from_secs(3);
        o.health.fail_timeout = Duration::from_secs(1);
    });
    c.set("/cl/0", &json!(0), SetOptions::default())
        .await
        .unwrap();
    let snap = c.readdir_paged("/cl/", 100).await.unwrap();
    let mut last = snap.revision;
    let mut w = c
        .watchdir(
            "/cl/",
            WatchOptions {
                start_revision: Some(last + 1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let on = w.endpoint().to_string();
    let idx = cluster.urls().iter().position(|u| *u == on).unwrap();

    // Writers keep going while the member the watch is on is stopped.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 1..=60 {
                // Retry through the election like any writer; create-only, so a write whose
                // answer was lost is not made twice.
                while c.setnx(&format!("/cl/{i}"), &json!(i)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.members[idx].stop();

    // Follow: on any end of the stream, watch again from the last revision seen + 1.
    let mut seen = Vec::new();
    while seen.len() < 60 {
        let msg = tokio::time::timeout(Duration::from_secs(15), w.next())
            .await
            .expect("watch progress");
        match msg {
            Some(Ok(WatchMessage::Events { events, .. })) => {
                for e in events {
                    last = e.kv.mod_revision;
                    seen.push(e.kv.key);
                }
            }
            Some(Ok(WatchMessage::Created { .. })) | Some(Ok(WatchMessage::Progress { .. })) => {}
            _ => {
                w = loop {
                    match c
                        .watchdir(
                            "/cl/",
                            WatchOptions {
                                start_revision: Some(last + 1),
                                ..Default::default()
                            },
                        )
                        .await
                    {
                        Ok(w) => break w,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                assert_ne!(w.endpoint(), on, "the watch moved to another member");
            }
        }
    }
    writer.await.unwrap();
    let expected: Vec<String> = (1..=60).map(|i| format!("/cl/{i}")).collect();
    assert_eq!(seen, expected, "no gap, no repeat");

    // The stopped member comes back and serves again.
    cluster.restart(idx);
    let back = client(&[cluster.urls()[idx].clone()], |_| {});
    let got = back.readdir("/cl/", Default::default()).await.unwrap();
    assert_eq!(got.count, 61);
    let listed = cluster.etcdctl(&["get", "/cl/", "--prefix", "--keys-only"]);
    assert_eq!(listed.lines().filter(|l| !l.is_empty()).count(), 61);
}

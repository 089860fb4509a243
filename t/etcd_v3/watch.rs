use std::time::Duration;

use futures::StreamExt;
use portico::etcd::{
    DeleteOptions, Error, EventKind, ReaddirOptions, SetOptions, TxnOp, WatchFilter, WatchMessage,
    WatchOptions, WatchStream,
};
use serde_json::json;

use crate::client_for;
use crate::harness::{http_get, EtcdConfig, EtcdMember};

/// The next message, failing the test after a few seconds of silence.
pub async fn next(w: &mut WatchStream) -> WatchMessage {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("expected a watch message, got {other:?}"),
    }
}

/// Events of the next message that carries any, skipping progress messages.
pub async fn next_events(w: &mut WatchStream) -> Vec<portico::etcd::Event> {
    loop {
        match next(w).await {
            WatchMessage::Events { events, .. } => return events,
            WatchMessage::Progress { .. } | WatchMessage::Created { .. } => continue,
            other => panic!("expected events, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_from_start_revision_is_inclusive() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let r1 = c
        .set("/w", &json!(1), SetOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    c.set("/w", &json!(2), SetOptions::default()).await.unwrap();
    let mut w = c
        .watch(
            "/w",
            WatchOptions {
                start_revision: Some(r1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await, WatchMessage::Created { .. }));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        for e in next_events(&mut w).await {
            seen.push((e.kv.mod_revision, e.kv.value.unwrap()));
        }
    }
    assert_eq!(seen, vec![(r1, json!(1)), (r1 + 1, json!(2))]);
    // Other keys are not seen by a single-key watch.
    c.set("/w2", &json!(0), SetOptions::default())
        .await
        .unwrap();
    c.set("/w", &json!(3), SetOptions::default()).await.unwrap();
    let events = next_events(&mut w).await;
    assert_eq!(events[0].kv.key, "/w");
    assert_eq!(events[0].kv.value, Ok(json!(3)));
}

#[tokio::test]
async fn watchdir_sees_puts_deletes_with_prev_kv_and_txn_as_one_message() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let mut w = c
        .watchdir(
            "/apisix/",
            WatchOptions {
                prev_kv: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let created = next(&mut w).await;
    assert!(
        matches!(created, WatchMessage::Created { .. }),
        "{created:?}"
    );
    c.set("/apisix-other", &json!(0), SetOptions::default())
        .await
        .unwrap();
    etcd.etcdctl(&["put", "/apisix/routes/1", r#"{"uri":"/a"}"#]);
    let ev = next_events(&mut w).await;
    assert_eq!(
        (ev[0].kind, ev[0].kv.key.as_str()),
        (EventKind::Put, "/apisix/routes/1")
    );
    assert_eq!(ev[0].kv.value, Ok(json!({"uri": "/a"})));
    c.delete("/apisix/routes/1", DeleteOptions::default())
        .await
        .unwrap();
    let ev = next_events(&mut w).await;
    assert_eq!(ev[0].kind, EventKind::Delete);
    assert_eq!(
        ev[0].prev_kv.as_ref().unwrap().value,
        Ok(json!({"uri": "/a"}))
    );

    let txn = c
        .txn(
            &[],
            &[
                TxnOp::put("/apisix/routes/2", json!(2), SetOptions::default()),
                TxnOp::put("/apisix/routes/3", json!(3), SetOptions::default()),
                TxnOp::put("/apisix/upstreams/1", json!({}), SetOptions::default()),
            ],
            &[],
        )
        .await
        .unwrap();
    let ev = next_events(&mut w).await;
    assert_eq!(ev.len(), 3, "one txn is one message");
    assert!(ev.iter().all(|e| e.kv.mod_revision == txn.header.revision));
}

#[tokio::test]
async fn filters_and_watch_id() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let mut w = c
        .watchdir(
            "/f/",
            WatchOptions {
                filters: vec![WatchFilter::NoPut],
                watch_id: Some(7),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        next(&mut w).await,
        WatchMessage::Created { watch_id: 7, .. }
    ));
    c.set("/f/a", &json!(1), SetOptions::default())
        .await
        .unwrap();
    c.delete("/f/a", DeleteOptions::default()).await.unwrap();
    let ev = next_events(&mut w).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::Delete);
}

#[tokio::test]
async fn compaction_is_its_own_outcome_and_recoverable() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let first = c
        .set("/c/a", &json!(1), SetOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    for i in 0..5 {
        c.set("/c/a", &json!(i), SetOptions::default())
            .await
            .unwrap();
    }
    let head = c
        .set("/c/b", &json!("b"), SetOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    c.compact(head, true).await.unwrap();
    let mut w = c
        .watchdir(
            "/c/",
            WatchOptions {
                start_revision: Some(first),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let msg = loop {
        match next(&mut w).await {
            WatchMessage::Created { .. } => continue,
            m => break m,
        }
    };
    assert_eq!(
        msg,
        WatchMessage::Compacted {
            compact_revision: head
        }
    );
    drop(w);
    // Recover: read everything, then watch from the read's revision + 1.
    let snap = c.readdir_paged("/c/", 100).await.unwrap();
    assert_eq!(snap.kvs.len(), 2);
    let mut w = c
        .watchdir(
            "/c/",
            WatchOptions {
                start_revision: Some(snap.revision + 1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c.set("/c/z", &json!(1), SetOptions::default())
        .await
        .unwrap();
    let ev = next_events(&mut w).await;
    assert_eq!(ev[0].kv.key, "/c/z");
}

#[tokio::test]
async fn large_values_arrive_whole() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let mut w = c.watchdir("/big/", WatchOptions::default()).await.unwrap();
    next(&mut w).await;
    let big = "y".repeat(1_500_000);
    c.set("/big/1", &json!(big), SetOptions::default())
        .await
        .unwrap();
    c.set("/big/2", &json!("small"), SetOptions::default())
        .await
        .unwrap();
    let ev = next_events(&mut w).await;
    assert_eq!(ev[0].kv.value, Ok(json!(big)));
    let ev = next_events(&mut w).await;
    assert_eq!(ev[0].kv.value, Ok(json!("small")));
}

#[tokio::test]
async fn progress_notify_and_idle_timeout() {
    let etcd = EtcdMember::start_with(EtcdConfig {
        extra_args: vec!["--experimental-watch-progress-notify-interval=300ms".into()],
        ..Default::default()
    });
    let c = client_for(&etcd);
    let rev = c
        .set("/p", &json!(1), SetOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    let mut w = c
        .watchdir(
            "/p",
            WatchOptions {
                progress_notify: true,
                idle_timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    next(&mut w).await;
    match next(&mut w).await {
        WatchMessage::Progress { header } => assert_eq!(header.revision, rev),
        other => panic!("expected progress, got {other:?}"),
    }
    // Without progress notifications an idle watch times out, as a distinct error.
    let mut quiet = c
        .watchdir(
            "/q",
            WatchOptions {
                idle_timeout: Some(Duration::from_millis(500)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    next(&mut quiet).await;
    let err = quiet.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::WatchIdle { .. }), "{err:?}");
    assert!(!err.is_endpoint_failure());
    assert!(
        quiet.next().await.is_none(),
        "the stream ends after the timeout"
    );
}

fn watchers(etcd: &EtcdMember) -> f64 {
    let (_, metrics) = http_get(etcd.client_port, "/metrics").expect("metrics");
    metrics
        .lines()
        .find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn dropping_or_cancelling_a_watch_closes_it() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let base = watchers(&etcd);
    let mut streams = Vec::new();
    for i in 0..5 {
        let mut w = c
            .watchdir(&format!("/d{i}/"), WatchOptions::default())
            .await
            .unwrap();
        next(&mut w).await;
        streams.push(w);
    }
    assert!(crate::harness::wait_until(
        Duration::from_secs(5),
        || watchers(&etcd) == base + 5.0
    ));
    let first = streams.remove(0);
    first.cancel();
    drop(streams);
    assert!(
        crate::harness::wait_until(Duration::from_secs(5), || watchers(&etcd) == base),
        "watchers left open: {} (base {base})",
        watchers(&etcd)
    );
    // Readdir, then watch from revision + 1 sees exactly what came after.
    let snap = c.readdir("/d0/", ReaddirOptions::default()).await.unwrap();
    assert_eq!(snap.count, 0);
}

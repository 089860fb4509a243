use portico::etcd::{
    Compare, CompareResult, CompareTarget, DeleteOptions, Error, GetOptions, ReaddirOptions,
    Serializer, SetOptions, SortOrder, SortTarget, TxnOp, TxnOpResponse,
};
use serde_json::json;

use crate::harness::EtcdMember;
use crate::{client, client_for};

#[tokio::test]
async fn set_get_round_trip_json_and_raw() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let v = json!({"uri": "/hello", "upstream": {"nodes": {"127.0.0.1:80": 1}}});
    let put = c.set("/r/1", &v, SetOptions::default()).await.unwrap();
    assert!(put.header.revision > 1);
    let got = c.get("/r/1", GetOptions::default()).await.unwrap();
    let kv = got.kv.unwrap();
    assert_eq!(kv.value, Ok(v.clone()));
    assert_eq!(kv.key, "/r/1");
    assert_eq!(kv.mod_revision, put.header.revision);
    assert_eq!(kv.version, 1);
    assert_eq!(got.header.revision, put.header.revision);
    // A missing key is no error: no kv.
    assert!(c
        .get("/nope", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_none());
    // Empty keys are refused before anything is sent.
    assert_eq!(
        c.get("", GetOptions::default()).await.unwrap_err(),
        Error::EmptyKey
    );
    assert_eq!(
        c.set("", &v, SetOptions::default()).await.unwrap_err(),
        Error::EmptyKey
    );
    assert_eq!(Error::EmptyKey.to_string(), "key should not be empty");

    let raw = client(&[etcd.url()], |o| o.serializer = Serializer::Raw);
    raw.set("/raw", &json!("plain text"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        etcd.etcdctl(&["get", "/raw", "--print-value-only"]).trim(),
        "plain text"
    );
    let kv = raw
        .get("/raw", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.value, Ok(json!("plain text")));
    let err = raw
        .set("/raw", &json!({"a": 1}), SetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    assert!(err.to_string().contains("strings only"), "{err}");
    // The JSON client reads the raw value as a per-key decode error, not as nothing.
    let kv = c
        .get("/raw", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert!(kv.value.is_err());
    assert_eq!(kv.raw_value, b"plain text");
    // Bytes that are not text go in as they are, and come back as a per-key decode error.
    raw.set_bytes("/bin", &[0xff, 0x00, 0x80], SetOptions::default())
        .await
        .unwrap();
    let kv = raw
        .get("/bin", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.raw_value, [0xff, 0x00, 0x80]);
    assert!(kv.value.unwrap_err().to_string().contains("not UTF-8"));
}

#[tokio::test]
async fn etcdctl_and_client_read_each_other() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    etcd.etcdctl(&["put", "/x/from-etcdctl", r#"{"id":"1","n":2}"#]);
    let kv = c
        .get("/x/from-etcdctl", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.value, Ok(json!({"id": "1", "n": 2})));
    c.set(
        "/x/from-client",
        &json!({"k": [1, 2]}),
        SetOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        etcd.etcdctl(&["get", "/x/from-client", "--print-value-only"])
            .trim(),
        r#"{"k":[1,2]}"#
    );
    // Key prefix: applied on the way out, removed on the way back.
    let p = client(&[etcd.url()], |o| o.key_prefix = "/apisix".into());
    p.set("/routes/1", &json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        etcd.etcdctl(&["get", "/apisix/routes/1", "--print-value-only"])
            .trim(),
        "1"
    );
    let all = p
        .readdir("/routes/", ReaddirOptions::default())
        .await
        .unwrap();
    assert_eq!(all.kvs[0].key, "/routes/1");
}

#[tokio::test]
async fn prev_kv_on_put_and_delete_and_ignore_flags() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    c.set("/k", &json!("a"), SetOptions::default())
        .await
        .unwrap();
    let put = c
        .set(
            "/k",
            &json!("b"),
            SetOptions {
                prev_kv: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(put.prev_kv.unwrap().value, Ok(json!("a")));
    let del = c
        .delete("/k", DeleteOptions { prev_kv: true })
        .await
        .unwrap();
    assert_eq!(del.deleted, 1);
    assert_eq!(del.prev_kvs[0].value, Ok(json!("b")));
    let del = c.delete("/k", DeleteOptions::default()).await.unwrap();
    assert_eq!(del.deleted, 0);

    // ignore_value on a missing key is etcd's error, surfaced with its message.
    let err = c
        .set(
            "/missing",
            &json!(null),
            SetOptions {
                ignore_value: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key not found"), "{err}");
    // ignore_lease keeps the lease, ignore_value the value.
    let lease = c.grant(60, 0).await.unwrap().id;
    c.set(
        "/l",
        &json!("v1"),
        SetOptions {
            lease: Some(lease),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.set(
        "/l",
        &json!("v2"),
        SetOptions {
            ignore_lease: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let kv = c
        .get("/l", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!((kv.lease, kv.value), (lease, Ok(json!("v2"))));
    c.set(
        "/l",
        &json!("ignored"),
        SetOptions {
            ignore_value: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let kv = c
        .get("/l", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!((kv.lease, kv.value, kv.version), (0, Ok(json!("v2")), 3));
}

#[tokio::test]
async fn get_at_revision_and_compacted() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let r1 = c
        .set("/v", &json!(1), SetOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    let r2 = c
        .set("/v", &json!(2), SetOptions::default())
        .await
        .unwrap()
        .header
        .revision;
    let old = c
        .get("/v", GetOptions { revision: Some(r1) })
        .await
        .unwrap();
    assert_eq!(old.kv.unwrap().value, Ok(json!(1)));
    c.compact(r2, true).await.unwrap();
    let err = c
        .get("/v", GetOptions { revision: Some(r1) })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Compacted { .. }), "{err:?}");
    assert!(err.to_string().contains("compacted"));
}

#[tokio::test]
async fn readdir_prefix_limit_sort_keys_count() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    for (k, v) in [
        ("/dir/b", 2),
        ("/dir/a", 1),
        ("/dir/c", 3),
        ("/dir-x", 9),
        ("/dir", 0),
    ] {
        c.set(k, &json!(v), SetOptions::default()).await.unwrap();
    }
    let all = c.readdir("/dir/", ReaddirOptions::default()).await.unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/dir/a", "/dir/b", "/dir/c"]);
    assert_eq!(all.count, 3);
    assert!(!all.more);

    let limited = c
        .readdir(
            "/dir/",
            ReaddirOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (limited.kvs.len(), limited.more, limited.count),
        (2, true, 3)
    );

    let desc = c
        .readdir(
            "/dir/",
            ReaddirOptions {
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Key,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = desc.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/dir/c", "/dir/b", "/dir/a"]);

    let by_mod = c
        .readdir(
            "/dir/",
            ReaddirOptions {
                sort_order: SortOrder::Ascend,
                sort_target: SortTarget::Mod,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = by_mod.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/dir/b", "/dir/a", "/dir/c"]);

    let keys_only = c
        .readdir(
            "/dir/",
            ReaddirOptions {
                keys_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys_only.kvs.len(), 3);
    assert!(keys_only.kvs.iter().all(|kv| kv.raw_value.is_empty()));

    let count = c
        .readdir(
            "/dir/",
            ReaddirOptions {
                count_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((count.kvs.len(), count.count), (0, 3));

    // A prefix without the slash catches the siblings too: that is what a prefix means.
    let loose = c.readdir("/dir", ReaddirOptions::default()).await.unwrap();
    assert_eq!(loose.count, 5);

    let gone = c
        .rmdir("/dir/", DeleteOptions { prev_kv: true })
        .await
        .unwrap();
    assert_eq!((gone.deleted, gone.prev_kvs.len()), (3, 3));
    assert!(c
        .get("/dir-x", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_some());
}

#[tokio::test]
async fn paged_readdir_over_10_mb() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let big = "x".repeat(100 * 1024);
    for i in 0..110 {
        c.set(&format!("/big/{i:04}"), &json!(big), SetOptions::default())
            .await
            .unwrap();
    }
    let last = c
        .set("/big-after", &json!(1), SetOptions::default())
        .await
        .unwrap();
    let snap = c.readdir_paged("/big/", 1000).await.unwrap();
    assert_eq!(snap.kvs.len(), 110);
    assert_eq!(snap.revision, last.header.revision);
    assert!(snap.kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(snap.kvs[109].value, Ok(json!(big)));
    // Pages are read at one revision: writes after the first page do not leak in.
    let small = c.readdir_paged("/big/", 7).await.unwrap();
    assert_eq!(small.kvs.len(), 110);
}

#[tokio::test]
async fn setnx_and_setx_both_ways() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    assert!(c.setnx("/n", &json!(1)).await.unwrap().succeeded);
    assert!(!c.setnx("/n", &json!(2)).await.unwrap().succeeded);
    assert_eq!(
        c.get("/n", GetOptions::default())
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        Ok(json!(1))
    );
    assert!(!c.setx("/x", &json!(1)).await.unwrap().succeeded);
    assert!(c
        .get("/x", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_none());
    assert!(c.setx("/n", &json!(3)).await.unwrap().succeeded);
    assert_eq!(
        c.get("/n", GetOptions::default())
            .await
            .unwrap()
            .kv
            .unwrap()
            .value,
        Ok(json!(3))
    );
}

#[tokio::test]
async fn txn_branches_with_prefix_applied_everywhere() {
    let etcd = EtcdMember::start();
    let c = client(&[etcd.url()], |o| o.key_prefix = "/p".into());
    c.set("/a", &json!("one"), SetOptions::default())
        .await
        .unwrap();
    let cmp = [Compare::new(
        "/a",
        CompareTarget::Value(json!("one")),
        CompareResult::Equal,
    )];
    let success = [
        TxnOp::put("/b", json!("two"), SetOptions::default()),
        TxnOp::get("/a"),
        TxnOp::delete("/a", DeleteOptions { prev_kv: true }),
    ];
    let failure = [TxnOp::put("/failed", json!(true), SetOptions::default())];
    let r = c.txn(&cmp, &success, &failure).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.responses.len(), 3);
    match &r.responses[1] {
        TxnOpResponse::Range(range) => {
            assert_eq!(range.kvs[0].key, "/a");
            assert_eq!(range.kvs[0].value, Ok(json!("one")));
        }
        other => panic!("expected a range answer, got {other:?}"),
    }
    match &r.responses[2] {
        TxnOpResponse::Delete(d) => assert_eq!(d.prev_kvs[0].key, "/a"),
        other => panic!("expected a delete answer, got {other:?}"),
    }
    assert_eq!(
        etcd.etcdctl(&["get", "/p/b", "--print-value-only"]).trim(),
        "\"two\""
    );

    // Now /a is gone: the compare fails and the failure branch runs.
    let r = c.txn(&cmp, &success, &failure).await.unwrap();
    assert!(!r.succeeded);
    assert!(c
        .get("/failed", GetOptions::default())
        .await
        .unwrap()
        .kv
        .is_some());

    // Prefix compares and dir operations.
    let r = c
        .txn(
            &[Compare {
                prefix: true,
                ..Compare::new(
                    "/",
                    CompareTarget::CreateRevision(0),
                    CompareResult::Greater,
                )
            }],
            &[TxnOp::readdir("/", ReaddirOptions::default())],
            &[],
        )
        .await
        .unwrap();
    assert!(r.succeeded);
    match &r.responses[0] {
        TxnOpResponse::Range(range) => assert_eq!(range.count, 2),
        other => panic!("expected a range answer, got {other:?}"),
    }
    // etcd's own refusals come back with its message.
    let err = c
        .txn(
            &[],
            &[
                TxnOp::put("/d", json!(1), SetOptions::default()),
                TxnOp::put("/d", json!(2), SetOptions::default()),
            ],
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
}

#[tokio::test]
async fn version_and_api_prefix_detection() {
    let etcd = EtcdMember::start();
    let c = client_for(&etcd);
    let v = c.version().await.unwrap();
    assert!(v.etcdserver.starts_with("3.4"), "{v:?}");
    assert_eq!(c.api_prefix().await.unwrap(), "/v3");
    // An explicit prefix is used as given (3.4 also serves /v3beta).
    let beta = client(&[etcd.url()], |o| o.api_prefix = Some("v3beta".into()));
    assert_eq!(beta.api_prefix().await.unwrap(), "/v3beta");
    beta.set("/b", &json!(1), SetOptions::default())
        .await
        .unwrap();
    // A wrong one is a clear HTTP error, not a hang.
    let wrong = client(&[etcd.url()], |o| o.api_prefix = Some("/v9".into()));
    let err = wrong.get("/b", GetOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err:?}");
    // A 4xx is an answer, not an endpoint failure: the endpoint stays in use.
    let again = wrong.get("/b", GetOptions::default()).await.unwrap_err();
    assert!(
        matches!(again, Error::Status { status: 404, .. }),
        "{again:?}"
    );
}

#[tokio::test]
async fn dead_endpoints_fail_over_and_are_named() {
    let etcd = EtcdMember::start();
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let c = client(&[dead.clone(), etcd.url()], |_| {});
    for i in 0..10 {
        c.set(&format!("/f/{i}"), &json!(i), SetOptions::default())
            .await
            .unwrap();
    }
    let all_dead = client(std::slice::from_ref(&dead), |o| {
        o.health.fail_timeout = std::time::Duration::from_secs(30)
    });
    let err = all_dead
        .get("/f/1", GetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains(&dead), "{err}");
    let err = all_dead
        .get("/f/1", GetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoHealthyEndpoint { .. }), "{err:?}");
    assert!(err.to_string().contains(&dead), "{err}");
    // Without retry, the failure is returned as it is.
    let no_retry = client(std::slice::from_ref(&dead), |o| o.health.retry = false);
    assert!(no_retry.get("/f/1", GetOptions::default()).await.is_err());
}

#[test]
fn bad_options_are_refused_clearly() {
    use portico::etcd::{Client, ClientOptions};
    let bad = |tweak: fn(&mut ClientOptions)| {
        let mut o = ClientOptions::default();
        tweak(&mut o);
        Client::new(o).unwrap_err().to_string()
    };
    assert!(bad(|o| o.endpoints = vec!["127.0.0.1:2379".into()]).contains("http://"));
    assert!(bad(|o| o.endpoints.clear()).contains("at least one endpoint"));
    assert!(bad(|o| o.user = Some("root".into())).contains("user and password"));
    for name in [
        "Authorization",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
    ] {
        let o = ClientOptions {
            extra_headers: vec![(name.to_string(), "x".into())],
            ..Default::default()
        };
        let err = Client::new(o).unwrap_err().to_string();
        assert!(err.contains("cannot be set"), "{name}: {err}");
    }
    let mut o = ClientOptions::default();
    o.tls.ca = Some(portico::etcd::Pem::File("/nonexistent/ca.pem".into()));
    assert!(Client::new(o)
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/ca.pem"));
}

//! The v2 keys API of the client against a real etcd 3.4 started with `--enable-v2=true`,
//! one test per operation of `shared/seeds/etcd-v2-keys-api.txt`, then errors, waits and the
//! directory follower.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

use std::time::Duration;

use futures::StreamExt;
use portico::etcd::v2::{
    Action, FollowEvent, Ttl, V2DeleteOptions, V2GetOptions, V2SetOptions, V2WaitOptions, V2,
};
use portico::etcd::{Client, ClientOptions, Error, V2Code};

use harness::{EtcdConfig, EtcdMember};

fn v2_member() -> EtcdMember {
    EtcdMember::start_with(EtcdConfig {
        v2: true,
        ..Default::default()
    })
}

fn v2_of(urls: &[String], tweak: impl FnOnce(&mut ClientOptions)) -> V2 {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut opts = ClientOptions {
        endpoints: urls.to_vec(),
        ..Default::default()
    };
    tweak(&mut opts);
    Client::new(opts).expect("client options").v2()
}

fn v2(m: &EtcdMember) -> V2 {
    v2_of(&[m.url()], |_| {})
}

fn code(e: &Error) -> Option<V2Code> {
    match e {
        Error::V2 { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn seed_1_to_4_set_get_overwrite_delete() {
    let etcd = v2_member();
    let c = v2(&etcd);
    // 1. set
    let r = c
        .set("/message", "Hello world", V2SetOptions::default())
        .await
        .unwrap();
    assert_eq!(r.action, Action::Set);
    assert_eq!(r.node.key, "/message");
    assert_eq!(r.node.value.as_deref(), Some("Hello world"));
    assert_eq!(r.node.created_index, r.node.modified_index);
    assert!(r.prev_node.is_none());
    assert_eq!(r.etcd_index, Some(r.node.modified_index));
    let created = r.node.created_index;
    // 2. get
    let g = c.get("/message", V2GetOptions::default()).await.unwrap();
    assert_eq!(g.action, Action::Get);
    assert_eq!(g.node.value.as_deref(), Some("Hello world"));
    assert_eq!(g.node.created_index, created);
    // 3. overwrite: the previous node comes back
    let o = c
        .set("/message", "RECREATE", V2SetOptions::default())
        .await
        .unwrap();
    assert_eq!(o.action, Action::Set);
    let prev = o.prev_node.unwrap();
    assert_eq!(prev.value.as_deref(), Some("Hello world"));
    assert_eq!(prev.modified_index, created);
    assert!(o.node.modified_index > created);
    // 4. delete
    let d = c
        .delete("/message", V2DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(d.action, Action::Delete);
    assert_eq!(d.node.value, None);
    assert_eq!(d.prev_node.unwrap().value.as_deref(), Some("RECREATE"));
    let err = c
        .get("/message", V2GetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::KeyNotFound), "{err}");
    assert!(err.to_string().contains("100"), "{err}");
}

#[tokio::test]
async fn seed_5_6_ttl_set_and_cleared() {
    let etcd = v2_member();
    let c = v2(&etcd);
    // 5. a TTL: expiration and ttl in the answer
    let r = c
        .set(
            "/foo",
            "bar",
            V2SetOptions {
                ttl: Some(Ttl::Seconds(5)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.node.ttl, Some(5));
    assert!(r.node.expiration.as_deref().unwrap_or("").contains('T'));
    // 6. clear it: ttl= with prevExist=true is an update
    let u = c.update("/foo", "bar", Some(Ttl::Clear)).await.unwrap();
    assert_eq!(u.action, Action::Update);
    assert_eq!((u.node.ttl, u.node.expiration.clone()), (None, None));
    assert_eq!(
        u.node.created_index, r.node.created_index,
        "update keeps createdIndex"
    );
    let prev = u.prev_node.unwrap();
    assert!(prev.ttl.is_some() && prev.expiration.is_some());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        c.get("/foo", V2GetOptions::default()).await.is_ok(),
        "no longer expires"
    );
}

#[tokio::test]
async fn seed_7_8_wait_for_a_change_and_from_a_past_index() {
    let etcd = v2_member();
    let c = v2(&etcd);
    let other = v2(&etcd);
    let first = c
        .set("/foo", "monitor", V2SetOptions::default())
        .await
        .unwrap();
    // 7. a long poll woken by another client
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.wait("/foo", V2WaitOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    other
        .compare_and_swap("/foo", "monitor11", Some("monitor"), None)
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(woke.action, Action::CompareAndSwap);
    assert_eq!(woke.node.value.as_deref(), Some("monitor11"));
    assert_eq!(woke.prev_node.unwrap().value.as_deref(), Some("monitor"));
    // recursive: a change below a directory wakes a waiter on the directory
    let dir_waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.wait(
                "/d",
                V2WaitOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    other
        .set("/d/a/b", "deep", V2SetOptions::default())
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), dir_waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(woke.node.key, "/d/a/b");
    // 8. from a past index: the first kept event at or after it, at once
    let past = c
        .wait(
            "/foo",
            V2WaitOptions {
                wait_index: Some(first.node.modified_index),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(past.action, Action::Set);
    assert_eq!(past.node.value.as_deref(), Some("monitor"));
    assert_eq!(past.node.modified_index, first.node.modified_index);
}

#[tokio::test]
async fn seed_9_10_directories_listed_with_and_without_recursion() {
    let etcd = v2_member();
    let c = v2(&etcd);
    // 9. create a directory
    let d = c.mkdir("/dir1", None).await.unwrap();
    assert!(d.node.dir);
    assert_eq!(d.node.key, "/dir1");
    c.mkdir("/dir1/dir2", None).await.unwrap();
    c.set("/dir1/dir2/leaf", "x", V2SetOptions::default())
        .await
        .unwrap();
    c.set("/dir1/file", "f", V2SetOptions::default())
        .await
        .unwrap();
    // 10. list: without recursion, subdirectories come without their children
    let flat = c
        .get(
            "/dir1/",
            V2GetOptions {
                sorted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(flat.node.dir);
    let keys: Vec<_> = flat.node.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["/dir1/dir2", "/dir1/file"]);
    assert!(flat.node.nodes[0].dir && flat.node.nodes[0].nodes.is_empty());
    let deep = c
        .get(
            "/dir1",
            V2GetOptions {
                recursive: true,
                sorted: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(deep.node.nodes[0].nodes[0].key, "/dir1/dir2/leaf");
    assert_eq!(deep.node.nodes[0].nodes[0].value.as_deref(), Some("x"));
    // a file is not a directory, a directory is not a file
    let err = c
        .set("/dir1", "v", V2SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::NotAFile), "{err}");
    let err = c
        .set("/dir1/file/x", "v", V2SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::NotADirectory), "{err}");
}

#[tokio::test]
async fn seed_11_12_in_order_keys_listed_sorted() {
    let etcd = v2_member();
    let c = v2(&etcd);
    let mut created = Vec::new();
    for job in ["Job1", "aaaa", "bbbb", "cccc"] {
        let r = c.create_in_order("/queue", job, None).await.unwrap();
        assert_eq!(r.action, Action::Create);
        let name = r.node.key.rsplit('/').next().unwrap().to_string();
        assert_eq!(name.len(), 20);
        assert_eq!(name, format!("{:020}", r.node.created_index));
        created.push(r.node.key);
    }
    let listed = c
        .get(
            "/queue",
            V2GetOptions {
                sorted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = listed.node.nodes.iter().map(|n| n.key.clone()).collect();
    assert_eq!(keys, created);
    let values: Vec<_> = listed
        .node
        .nodes
        .iter()
        .map(|n| n.value.clone().unwrap())
        .collect();
    assert_eq!(values, ["Job1", "aaaa", "bbbb", "cccc"]);
}

#[tokio::test]
async fn seed_13_delete_directories() {
    let etcd = v2_member();
    let c = v2(&etcd);
    c.mkdir("/empty", None).await.unwrap();
    let r = c.rmdir("/empty", false).await.unwrap();
    assert_eq!(r.action, Action::Delete);
    assert!(r.node.dir && r.prev_node.unwrap().dir);
    c.set("/dir1/dir2/x", "1", V2SetOptions::default())
        .await
        .unwrap();
    let err = c.rmdir("/dir1", false).await.unwrap_err();
    match &err {
        Error::V2 {
            code, cause, index, ..
        } => {
            assert_eq!(*code, V2Code::DirectoryNotEmpty);
            assert_eq!(cause, "/dir1");
            assert!(*index > 0);
        }
        other => panic!("expected error 108, got {other:?}"),
    }
    c.rmdir("/dir1", true).await.unwrap();
    assert_eq!(
        code(&c.get("/dir1", V2GetOptions::default()).await.unwrap_err()),
        Some(V2Code::KeyNotFound)
    );
}

#[tokio::test]
async fn seed_14_15_directory_ttl_expiry_and_refresh() {
    let etcd = v2_member();
    let c = v2(&etcd);
    // 14. a directory with a TTL; creating it again is error 102
    let d = c.mkdir("/tmpdir", Some(30)).await.unwrap();
    assert_eq!(d.node.ttl, Some(30));
    assert!(d.node.expiration.is_some());
    let err = c.mkdir("/tmpdir", Some(30)).await.unwrap_err();
    assert_eq!(code(&err), Some(V2Code::NotAFile), "{err}");
    // 15. refresh its TTL (prevExist=true): an update with the old TTL in prevNode
    let r = c.update_dir("/tmpdir", Ttl::Seconds(2)).await.unwrap();
    assert_eq!(r.action, Action::Update);
    assert_eq!(r.node.ttl, Some(2));
    assert!(r.prev_node.unwrap().ttl.unwrap() > 2);
    // children expire with it, seen as an expire event
    c.set("/tmpdir/child", "c", V2SetOptions::default())
        .await
        .unwrap();
    let expired = tokio::time::timeout(
        Duration::from_secs(10),
        c.wait(
            "/tmpdir",
            V2WaitOptions {
                recursive: true,
                wait_index: Some(r.node.modified_index + 2),
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(expired.action, Action::Expire);
    assert_eq!(expired.node.key, "/tmpdir");
    assert_eq!(
        code(
            &c.get("/tmpdir/child", V2GetOptions::default())
                .await
                .unwrap_err()
        ),
        Some(V2Code::KeyNotFound)
    );
}

#[tokio::test]
async fn seed_16_hidden_keys() {
    let etcd = v2_member();
    let c = v2(&etcd);
    c.set("/h/_message", "Hello hidden world", V2SetOptions::default())
        .await
        .unwrap();
    c.set("/h/visible", "v", V2SetOptions::default())
        .await
        .unwrap();
    let got = c.get("/h/_message", V2GetOptions::default()).await.unwrap();
    assert_eq!(got.node.value.as_deref(), Some("Hello hidden world"));
    let listed = c
        .get(
            "/h",
            V2GetOptions {
                recursive: true,
                sorted: true,
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = listed.node.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["/h/visible"]);
}

#[tokio::test]
async fn create_update_cas_cad_and_refresh() {
    let etcd = v2_member();
    let c = v2(&etcd);
    let r = c.create("/k", "one", None).await.unwrap();
    assert_eq!(r.action, Action::Create);
    let err = c.create("/k", "again", None).await.unwrap_err();
    assert_eq!(code(&err), Some(V2Code::NodeExists), "{err}");
    let err = c.update("/missing", "x", None).await.unwrap_err();
    assert_eq!(code(&err), Some(V2Code::KeyNotFound), "{err}");
    let u = c.update("/k", "two", None).await.unwrap();
    assert_eq!(u.action, Action::Update);
    // CAS by value and by index, both ways
    let err = c
        .compare_and_swap("/k", "three", Some("wrong"), None)
        .await
        .unwrap_err();
    match &err {
        Error::V2 { code, cause, .. } => {
            assert_eq!(*code, V2Code::CompareFailed);
            assert!(cause.contains("[wrong != two]"), "{cause}");
        }
        other => panic!("expected 101, got {other:?}"),
    }
    let ok = c
        .compare_and_swap("/k", "three", Some("two"), None)
        .await
        .unwrap();
    assert_eq!(ok.action, Action::CompareAndSwap);
    let idx = ok.node.modified_index;
    assert_eq!(
        code(
            &c.compare_and_swap("/k", "x", None, Some(idx - 1))
                .await
                .unwrap_err()
        ),
        Some(V2Code::CompareFailed)
    );
    c.compare_and_swap("/k", "four", None, Some(idx))
        .await
        .unwrap();
    // CAD both ways
    assert_eq!(
        code(
            &c.compare_and_delete("/k", Some("nope"), None)
                .await
                .unwrap_err()
        ),
        Some(V2Code::CompareFailed)
    );
    let d = c
        .compare_and_delete("/k", Some("four"), None)
        .await
        .unwrap();
    assert_eq!(d.action, Action::CompareAndDelete);
    // prevValue must not be empty
    c.set("/e", "v", V2SetOptions::default()).await.unwrap();
    let err = c
        .compare_and_delete("/e", Some(""), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::PrevValueRequired), "{err}");
    // refresh a TTL without a value: same value, new TTL
    c.set(
        "/r",
        "keep",
        V2SetOptions {
            ttl: Some(Ttl::Seconds(4)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // 5 s in all outlives the 4 s TTL only through the refreshes; 3 s of slack per
    // step keeps a loaded CI machine from expiring the key between two of them
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = c.refresh("/r", 4).await.unwrap();
        assert_eq!(r.node.value.as_deref(), Some("keep"));
    }
    assert!(
        c.get("/r", V2GetOptions::default()).await.is_ok(),
        "kept alive by refresh"
    );
    // the root is read only
    let err = c
        .delete(
            "/",
            V2DeleteOptions {
                dir: true,
                recursive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::RootReadOnly), "{err}");
}

#[tokio::test]
async fn awkward_key_names_and_values() {
    let etcd = v2_member();
    let c = v2(&etcd);
    for (key, value) in [
        ("/sp ace/k", "a b"),
        ("/pct%25/k", "100%"),
        ("/q?x=1", "?&="),
        ("/hash#frag", "#"),
        ("/ünï/cödé", "välue ✓"),
        ("/plus+", "a+b"),
    ] {
        let r = c.set(key, value, V2SetOptions::default()).await.unwrap();
        assert_eq!(r.node.key, key);
        let g = c.get(key, V2GetOptions::default()).await.unwrap();
        assert_eq!(g.node.value.as_deref(), Some(value), "{key}");
    }
    // a key prefix applies to every path and is removed from answers
    let p = v2_of(&[etcd.url()], |o| o.key_prefix = "/pre".into());
    let r = p.set("/in", "x", V2SetOptions::default()).await.unwrap();
    assert_eq!(r.node.key, "/in");
    assert!(c.get("/pre/in", V2GetOptions::default()).await.is_ok());
}

#[tokio::test]
async fn cleared_index_is_error_401() {
    let etcd = v2_member();
    let c = v2(&etcd);
    let first = c
        .set("/many/0", "0", V2SetOptions::default())
        .await
        .unwrap()
        .node
        .modified_index;
    for i in 0..1100 {
        c.set(
            &format!("/many/{}", i % 10),
            &i.to_string(),
            V2SetOptions::default(),
        )
        .await
        .unwrap();
    }
    let err = c
        .wait(
            "/many",
            V2WaitOptions {
                recursive: true,
                wait_index: Some(first),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::EventIndexCleared), "{err}");
}

#[tokio::test]
async fn basic_auth() {
    let etcd = v2_member();
    let port = etcd.client_port;
    let put = |path: &str, body: &str, auth: bool| {
        let headers: &[(&str, &str)] = if auth {
            &[
                ("Authorization", "Basic cm9vdDpwdw=="),
                ("Content-Type", "application/json"),
            ]
        } else {
            &[("Content-Type", "application/json")]
        };
        harness::http(port, "PUT", path, headers, body).unwrap()
    };
    assert_eq!(
        put(
            "/v2/auth/users/root",
            r#"{"user":"root","password":"pw"}"#,
            false
        )
        .0,
        201
    );
    assert_eq!(put("/v2/auth/enable", "", false).0, 200);
    let revoke = r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#;
    assert_eq!(put("/v2/auth/roles/guest", revoke, true).0, 200);

    let anonymous = v2(&etcd);
    let err = anonymous
        .set("/secret", "x", V2SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(V2Code::Unauthorized), "{err}");
    let root = v2_of(&[etcd.url()], |o| {
        o.user = Some("root".into());
        o.password = Some("pw".into());
    });
    root.set("/secret", "x", V2SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        root.get("/secret", V2GetOptions::default())
            .await
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("x")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_sees_every_change_once_and_survives_a_resync() {
    let etcd = v2_member();
    let c = v2(&etcd);
    c.set("/f/a", "1", V2SetOptions::default()).await.unwrap();
    let mut follow = c.follow("/f");
    let first = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap();
    let FollowEvent::Snapshot {
        response,
        resynced: false,
    } = first
    else {
        panic!("expected the first snapshot, got {first:?}");
    };
    assert_eq!(response.node.nodes.len(), 1);
    for i in 0..20 {
        c.set(&format!("/f/{i}"), &i.to_string(), V2SetOptions::default())
            .await
            .unwrap();
    }
    c.delete("/f/a", V2DeleteOptions::default()).await.unwrap();
    let mut indexes = Vec::new();
    while indexes.len() < 21 {
        match tokio::time::timeout(Duration::from_secs(5), follow.next())
            .await
            .unwrap()
            .unwrap()
        {
            FollowEvent::Change(r) => indexes.push(r.node.modified_index),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        indexes.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no repeat: {indexes:?}"
    );

    // The follower falls more than 1000 events behind (it is not polled): it reads again.
    for i in 0..1100 {
        c.set(
            &format!("/f/{}", i % 7),
            &i.to_string(),
            V2SetOptions::default(),
        )
        .await
        .unwrap();
    }
    let next = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .unwrap()
        .unwrap();
    match next {
        FollowEvent::Snapshot {
            response,
            resynced: true,
        } => {
            assert_eq!(response.node.nodes.len(), 20);
            let after = response.etcd_index.unwrap();
            c.set("/f/new", "n", V2SetOptions::default()).await.unwrap();
            match tokio::time::timeout(Duration::from_secs(5), follow.next())
                .await
                .unwrap()
                .unwrap()
            {
                FollowEvent::Change(r) => {
                    assert_eq!(r.node.key, "/f/new");
                    assert_eq!(r.node.modified_index, after + 1);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        other => panic!("expected a resync, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_moves_on_when_its_endpoint_dies() {
    let mut cluster = harness::EtcdCluster::start_with(EtcdConfig {
        v2: true,
        ..Default::default()
    });
    let c = v2_of(&cluster.urls(), |o| {
        o.timeout = Duration::from_secs(3);
        o.health.fail_timeout = Duration::from_secs(1);
    });
    c.set("/cf/0", "0", V2SetOptions::default()).await.unwrap();
    let mut follow = c.follow("/cf");
    assert!(matches!(
        follow.next().await,
        Some(FollowEvent::Snapshot { .. })
    ));
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 1..=40 {
                // Like any writer during an election: try again until it is in (create-only,
                // so a write that landed before its answer was lost is not made twice).
                loop {
                    match c.create(&format!("/cf/{i}"), "v", None).await {
                        Ok(_) => break,
                        Err(e) if code(&e) == Some(V2Code::NodeExists) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let mut keys = Vec::new();
    let mut down: Option<usize> = None;
    while keys.len() < 40 {
        match tokio::time::timeout(Duration::from_secs(15), follow.next())
            .await
            .unwrap()
            .unwrap()
        {
            FollowEvent::Change(r) => keys.push(r.node.key),
            other => panic!("unexpected {other:?}"),
        }
        // Every 10 events, take the next member down (bringing the last one back first), so
        // the follower's long polls meet a dead member whichever one they are on.
        if keys.len() % 10 == 0 && keys.len() < 40 {
            if let Some(i) = down {
                cluster.restart(i);
            }
            let i = down.map_or(0, |i| i + 1);
            cluster.stop(i);
            down = Some(i);
        }
    }
    writer.await.unwrap();
    let want: Vec<String> = (1..=40).map(|i| format!("/cf/{i}")).collect();
    assert_eq!(keys, want);
}

#[test]
fn the_queue_example_takes_every_job_once_in_order() {
    let etcd = v2_member();
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("etcd_v2_queue");
    let out = std::process::Command::new(example)
        .args(["--endpoint", &etcd.url(), "--jobs", "8"])
        .output()
        .expect("run the etcd_v2_queue example (built by cargo test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("took "))
        .collect();
    let want: Vec<String> = (0..8).map(|n| format!("job-{n}")).collect();
    assert_eq!(took, want);
}

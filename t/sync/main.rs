//! etcd as the config source: the real gateway following a real etcd, with real upstreams.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::gateway::{Echo, Gateway};
use harness::{wait_until, EtcdCluster, EtcdMember, Relay};

fn route(id: &str, uri: &str, upstream: &str) -> String {
    json!({"id": id, "uri": uri, "upstream_id": upstream, "create_time": 1700000000, "update_time": 1700000000}).to_string()
}

fn upstream(id: &str, echo: &Echo) -> String {
    json!({"id": id, "type": "roundrobin", "nodes": {echo.addr(): 1}}).to_string()
}

fn start(endpoints: &[String]) -> Gateway {
    let g = Gateway::spawn_etcd(endpoints, "");
    assert!(
        wait_until(Duration::from_secs(20), || g.ready()),
        "not ready:\n{}",
        g.log()
    );
    g
}

/// Waits until `path` answers `status` through the gateway.
fn until_status(g: &Gateway, path: &str, status: u16) {
    assert!(
        wait_until(Duration::from_secs(10), || g.get(path, None).status
            == status),
        "{path} never answered {status}:\n{}",
        g.log()
    );
}

/// The gateway's view (`/status/keys`) equals etcd's (`etcdctl get --prefix`), for served kinds.
fn views_match(g: &Gateway, etcdctl: impl Fn(&[&str]) -> String) -> bool {
    let (_, body) = harness::http_get(g.status_port, "/status/keys").unwrap_or_default();
    let Ok(view) = serde_json::from_str::<Value>(&body) else {
        return false;
    };
    let out = etcdctl(&["get", "/apisix/", "--prefix", "-w", "json"]);
    let Ok(etcd) = serde_json::from_str::<Value>(&out) else {
        return false;
    };
    let mut want = serde_json::Map::new();
    for kv in etcd["kvs"].as_array().cloned().unwrap_or_default() {
        let key =
            String::from_utf8(base64_decode(kv["key"].as_str().unwrap_or(""))).unwrap_or_default();
        let served = [
            "routes",
            "services",
            "upstreams",
            "plugin_configs",
            "global_rules",
            "consumers",
            "ssls",
            "plugin_metadata",
        ];
        let parts: Vec<&str> = key.trim_start_matches("/apisix/").split('/').collect();
        let credential = parts.len() == 4 && parts[0] == "consumers" && parts[2] == "credentials";
        if (parts.len() == 2 && !parts[1].is_empty() && served.contains(&parts[0])) || credential {
            want.insert(key, kv["mod_revision"].clone());
        }
    }
    view["keys"].as_object() == Some(&want)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

#[test]
fn resources_written_with_etcdctl_are_served_updated_and_deleted() {
    let etcd = EtcdMember::start();
    let a = Echo::start("a");
    let b = Echo::start("b");
    // Directory markers and kinds Portico does not serve are ignored.
    etcd.etcdctl(&["put", "/apisix/routes", "init_dir"]);
    etcd.etcdctl(&[
        "put",
        "/apisix/protos/1",
        r#"{"id":"1","content":"syntax"}"#,
    ]);
    etcd.etcdctl(&["put", "/apisix/plugin_metadata/x", "{}"]);
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/1", &route("1", "/one", "1")]);
    etcd.etcdctl(&[
        "put",
        "/apisix/services/s",
        &json!({"id": "s", "upstream": {"nodes": {b.addr(): 1}}}).to_string(),
    ]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/2",
        &json!({"id": 2, "uri": "/two", "service_id": "s"}).to_string(),
    ]);
    etcd.etcdctl(&["put", "/apisix/consumers/jack", r#"{"username":"jack"}"#]);
    etcd.etcdctl(&[
        "put",
        "/apisix/consumers/jack/credentials/k1",
        r#"{"id":"k1","plugins":{"key-auth":{"key":"secret"}}}"#,
    ]);
    let g = start(&[etcd.url()]);
    assert_eq!(g.get("/one", None).echo()["server"], "a");
    assert_eq!(g.get("/two", None).echo()["server"], "b");
    let status = g.status();
    assert_eq!(status["provider"], "etcd");
    assert_eq!(status["counts"]["routes"], 2);
    assert_eq!(status["counts"]["consumers"], 1, "{status}");
    assert_eq!(status["counts"]["credentials"], 1);
    assert!(status["source"]["seconds_since_contact"].as_f64().is_some());
    assert!(status["source"]["revision"].as_i64().unwrap() > 0);

    // Updates and deletes.
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &b)]);
    assert!(wait_until(Duration::from_secs(5), || g
        .get("/one", None)
        .echo()["server"]
        == "b"));
    etcd.etcdctl(&["put", "/apisix/routes/1", &route("1", "/uno", "1")]);
    until_status(&g, "/uno", 200);
    assert_eq!(g.get("/one", None).status, 404);
    etcd.etcdctl(&["del", "/apisix/routes/2"]);
    until_status(&g, "/two", 404);

    // A txn of many writes lands as one publish.
    let before = g.status()["version"].as_u64().unwrap();
    let client = portico::etcd::Client::new(portico::etcd::ClientOptions {
        endpoints: vec![etcd.url()],
        ..Default::default()
    })
    .unwrap();
    let ops: Vec<portico::etcd::TxnOp> = (0..50)
        .map(|i| {
            let v: Value =
                serde_json::from_str(&route(&format!("t{i}"), &format!("/t/{i}"), "1")).unwrap();
            portico::etcd::TxnOp::put(format!("/apisix/routes/t{i}"), v, Default::default())
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(client.txn(&[], &ops, &[])).unwrap().succeeded);
    until_status(&g, "/t/49", 200);
    assert_eq!(g.get("/t/0", None).status, 200);
    assert_eq!(
        g.status()["version"].as_u64().unwrap(),
        before + 1,
        "one publish for the txn"
    );
    assert!(views_match(&g, |a| etcd.etcdctl(a)));
}

#[test]
fn invalid_items_are_rejected_alone_and_fixing_them_applies() {
    let etcd = EtcdMember::start();
    let a = Echo::start("a");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/good", &route("good", "/good", "1")]);
    etcd.etcdctl(&["put", "/apisix/routes/broken", "{not json"]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/bad",
        &json!({"id": "bad", "uri": "/bad", "methods": ["FETCH"], "upstream_id": "1"}).to_string(),
    ]);
    let g = start(&[etcd.url()]);
    assert_eq!(g.get("/good", None).status, 200);
    assert_eq!(g.get("/bad", None).status, 404);
    let rejected = g.status()["rejected"].as_array().cloned().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected
        .iter()
        .any(|r| r["id"] == "broken" && r["error"].as_str().unwrap().contains("invalid JSON")));
    assert!(rejected
        .iter()
        .any(|r| r["id"] == "bad" && r["error"].as_str().unwrap().contains("\"methods\"")));
    assert!(
        g.log().contains("/apisix/routes/bad"),
        "the log names the key"
    );

    // Fixing them takes effect.
    etcd.etcdctl(&["put", "/apisix/routes/bad", &route("bad", "/bad", "1")]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/broken",
        &route("broken", "/broken", "1"),
    ]);
    until_status(&g, "/bad", 200);
    until_status(&g, "/broken", 200);
    assert!(wait_until(Duration::from_secs(5), || g.status()
        ["rejected"]
        .as_array()
        .is_some_and(Vec::is_empty)));

    // A valid route turning invalid keeps its last valid value.
    etcd.etcdctl(&["put", "/apisix/routes/good", r#"{"uri": 5}"#]);
    assert!(wait_until(Duration::from_secs(5), || !g.status()
        ["rejected"]
        .as_array()
        .unwrap()
        .is_empty()));
    assert_eq!(g.get("/good", None).status, 200);
}

#[test]
fn keys_that_name_no_resource_are_named_not_dropped() {
    let etcd = EtcdMember::start();
    let a = Echo::start("odd");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/x/y", &route("x", "/x", "1")]);
    etcd.etcdctl(&["put", "/apisix/protos/1", "{}"]);
    let g = start(&[etcd.url()]);
    let odd = |g: &Gateway| g.status()["rejected"].to_string();
    assert!(odd(&g).contains("/apisix/routes/x/y"), "{}", odd(&g));
    assert!(
        !odd(&g).contains("protos"),
        "kinds Portico does not serve stay quiet"
    );
    // Written while running, then deleted.
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/../upstreams/evil",
        &upstream("evil", &a),
    ]);
    etcd.etcdctl(&["put", "/apisix/upstreams/a/b", &upstream("b", &a)]);
    assert!(wait_until(Duration::from_secs(10), || {
        let r = odd(&g);
        r.contains("upstreams/evil") && r.contains("/apisix/upstreams/a/b")
    }));
    assert_eq!(g.status()["counts"]["upstreams"], 1);
    etcd.etcdctl(&["del", "/apisix/upstreams/a/b"]);
    assert!(wait_until(Duration::from_secs(10), || !odd(&g)
        .contains("/apisix/upstreams/a/b")));
}

#[test]
fn compaction_while_disconnected_converges_to_etcd() {
    let etcd = EtcdMember::start();
    let a = Echo::start("a");
    let relay = Relay::start(etcd.client_port);
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    for i in 0..10 {
        etcd.etcdctl(&[
            "put",
            &format!("/apisix/routes/{i}"),
            &route(&i.to_string(), &format!("/r/{i}"), "1"),
        ]);
    }
    let g = start(&[relay.url()]);
    until_status(&g, "/r/9", 200);
    relay.cut();
    // While cut: changes, deletes, new routes, then compaction of the whole history.
    for i in 0..5 {
        etcd.etcdctl(&["del", &format!("/apisix/routes/{i}")]);
    }
    etcd.etcdctl(&["put", "/apisix/routes/5", &route("5", "/moved/5", "1")]);
    etcd.etcdctl(&["put", "/apisix/routes/new", &route("new", "/new", "1")]);
    let out = etcd.etcdctl(&[
        "put",
        "/apisix/routes/new2",
        &route("new2", "/new2", "1"),
        "-w",
        "json",
    ]);
    let rev = serde_json::from_str::<Value>(&out).unwrap()["header"]["revision"]
        .as_i64()
        .unwrap();
    etcd.etcdctl(&["compaction", &rev.to_string(), "--physical"]);
    assert_eq!(
        g.get("/r/0", None).status,
        200,
        "still serving the last good config"
    );
    relay.restore();
    until_status(&g, "/new2", 200);
    assert!(
        wait_until(Duration::from_secs(10), || views_match(&g, |a| etcd
            .etcdctl(a))),
        "{}",
        g.log()
    );
    assert_eq!(g.get("/r/0", None).status, 404);
    assert_eq!(g.get("/r/5", None).status, 404);
    assert_eq!(g.get("/moved/5", None).status, 200);
    assert_eq!(g.get("/r/9", None).status, 200);
}

#[test]
fn etcd_stopped_under_traffic_then_changes_after_it_returns() {
    let mut etcd = EtcdMember::start();
    let a = Echo::start("a");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/1", &route("1", "/steady", "1")]);
    let g = start(&[etcd.url()]);
    let port = g.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match harness::gateway::request(port, "GET", "/steady", &[], "").status {
                    200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    etcd.stop();
    std::thread::sleep(Duration::from_secs(3));
    etcd.restart();
    etcd.etcdctl(&["put", "/apisix/routes/2", &route("2", "/after", "1")]);
    until_status(&g, "/after", 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    assert!(ok > 100, "{ok} requests");
    assert_eq!(failed, 0, "no failed request while etcd was away");
}

#[test]
fn cluster_member_in_use_stopped_nothing_missed() {
    let mut cluster = EtcdCluster::start();
    let a = Echo::start("a");
    cluster.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    let g = start(&cluster.urls());
    let in_use = g.status()["source"]["endpoint"]
        .as_str()
        .map(str::to_string);
    let idx = in_use
        .as_ref()
        .and_then(|e| cluster.urls().iter().position(|u| u == e))
        .unwrap_or(0);
    for i in 0..10 {
        cluster.etcdctl(&[
            "put",
            &format!("/apisix/routes/{i}"),
            &route(&i.to_string(), &format!("/c/{i}"), "1"),
        ]);
    }
    until_status(&g, "/c/9", 200);
    cluster.stop(idx);
    for i in 10..20 {
        cluster.etcdctl(&[
            "put",
            &format!("/apisix/routes/{i}"),
            &route(&i.to_string(), &format!("/c/{i}"), "1"),
        ]);
    }
    until_status(&g, "/c/19", 200);
    assert!((0..20).all(|i| g.get(&format!("/c/{i}"), None).status == 200));
    assert_ne!(
        g.status()["source"]["endpoint"].as_str(),
        in_use.as_deref(),
        "the watch moved on"
    );
    assert!(views_match(&g, |a| cluster.etcdctl(a)));
}

#[test]
fn start_with_etcd_down_serves_the_saved_config_then_catches_up() {
    let mut etcd = EtcdMember::start();
    let a = Echo::start("a");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/1", &route("1", "/saved", "1")]);
    let g = start(&[etcd.url()]);
    let saved = g.dir.path().join("etcd-saved.json");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&saved)
            .is_ok_and(|s| s.contains("/apisix/routes/1"))),
        "the config is saved"
    );
    let dir = g.into_dir();
    etcd.stop();

    let g = Gateway::spawn_etcd_in(dir, &[etcd.url()], "");
    assert!(
        wait_until(Duration::from_secs(10), || g.ready()),
        "{}",
        g.log()
    );
    assert_eq!(g.get("/saved", None).status, 200);
    assert_eq!(g.status()["source"]["serving_saved_config"], true);

    etcd.restart();
    etcd.etcdctl(&["put", "/apisix/routes/2", &route("2", "/caught-up", "1")]);
    until_status(&g, "/caught-up", 200);
}

#[test]
fn start_with_etcd_down_and_nothing_saved_is_not_ready() {
    let etcd = EtcdMember::start();
    let url = etcd.url();
    drop(etcd);
    let g = Gateway::spawn_etcd(&[url], "");
    std::thread::sleep(Duration::from_secs(2));
    assert!(harness::http_get(g.status_port, "/status").is_some());
    assert!(!g.ready());
}

#[test]
fn random_puts_and_deletes_end_in_etcds_state() {
    let etcd = EtcdMember::start();
    let a = Echo::start("a");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    let g = start(&[etcd.url()]);
    // 2,000 operations over 100 keys, written through a client of our own for speed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = portico::etcd::Client::new(portico::etcd::ClientOptions {
        endpoints: vec![etcd.url()],
        ..Default::default()
    })
    .unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    rt.block_on(async {
        for _ in 0..2000 {
            let k = next() % 100;
            let key = format!("/apisix/routes/{k}");
            if next() % 3 == 0 {
                client.delete(&key, Default::default()).await.unwrap();
            } else {
                let v: Value = serde_json::from_str(&route(
                    &k.to_string(),
                    &format!("/x/{k}/{}", next() % 5),
                    "1",
                ))
                .unwrap();
                client.set(&key, &v, Default::default()).await.unwrap();
            }
        }
    });
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || views_match(&g, |a| etcd
            .etcdctl(a))),
        "the gateway's view differs from etcd's:\n{}",
        g.log()
    );
    eprintln!("converged {:?} after the last write", started.elapsed());
}

#[test]
fn the_key_names_the_resource_whatever_id_the_value_carries() {
    let etcd = EtcdMember::start();
    let a = Echo::start("a");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/k1", &route("other", "/k1", "1")]);
    etcd.etcdctl(&["put", "/apisix/routes/k2", &route("other", "/k2", "1")]);
    let g = start(&[etcd.url()]);
    assert_eq!(g.get("/k1", None).status, 200);
    assert_eq!(g.get("/k2", None).status, 200);
    etcd.etcdctl(&["del", "/apisix/routes/k1"]);
    until_status(&g, "/k1", 404);
    assert_eq!(
        g.get("/k2", None).status,
        200,
        "deleting one key leaves the other"
    );
}

/// Resident memory of a process, in bytes, from /proc.
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 4096
}

#[test]
fn a_huge_chash_upstream_takes_bounded_memory_and_does_not_stall_the_sync() {
    let etcd = EtcdMember::start();
    let a = Echo::start("ring");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/before",
        &route("before", "/before", "1"),
    ]);
    let g = start(&[etcd.url()]);
    let before = rss_of(g.pid());
    let nodes: serde_json::Map<String, Value> = (0..2000)
        .map(|i| (format!("10.{}.{}.1:80", i / 250, i % 250), json!(1000)))
        .collect();
    let huge = json!({"id": "c2000", "type": "chash", "key": "remote_addr", "nodes": nodes});
    etcd.etcdctl(&["put", "/apisix/upstreams/c2000", &huge.to_string()]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/after",
        &route("after", "/after", "1"),
    ]);
    let started = Instant::now();
    until_status(&g, "/after", 200);
    let took = started.elapsed();
    let grown = rss_of(g.pid()).saturating_sub(before);
    eprintln!(
        "2000-node chash: next change applied after {took:?}, RSS +{} MB",
        grown / 1_000_000
    );
    assert!(grown < 200_000_000, "RSS grew by {grown} bytes");
    assert_eq!(g.status()["counts"]["upstreams"], 2);
}

#[test]
fn pages_too_large_for_the_client_are_read_smaller() {
    let etcd = EtcdMember::start();
    let a = Echo::start("pages");
    // 30 upstreams of 45 KB each: 1.3 MB in one page, over the 1 MiB configured below.
    for i in 0..30 {
        let nodes: serde_json::Map<String, Value> = (0..2000)
            .map(|n| (format!("10.{}.{}.{i}:80", n / 250, n % 250), json!(1)))
            .collect();
        let up = json!({"id": format!("big{i}"), "nodes": nodes});
        etcd.etcdctl(&["put", &format!("/apisix/upstreams/big{i}"), &up.to_string()]);
    }
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/r", &route("r", "/r", "1")]);
    let g = Gateway::spawn_etcd(&[etcd.url()], "  max_response_size: 1m\n");
    assert!(
        wait_until(Duration::from_secs(30), || g.ready()),
        "{}",
        g.log()
    );
    assert_eq!(g.status()["counts"]["upstreams"], 31);
    assert_eq!(g.get("/r", None).status, 200);
    assert!(g.log().contains("keys per page from now on"), "{}", g.log());
}

#[test]
fn portico_t_reads_etcd_and_names_every_invalid_item() {
    let etcd = EtcdMember::start();
    let a = Echo::start("t");
    etcd.etcdctl(&["put", "/apisix/upstreams/1", &upstream("1", &a)]);
    etcd.etcdctl(&["put", "/apisix/routes/good", &route("good", "/good", "1")]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/opa",
        r#"{"uri": "/o", "plugins": {"opa": {}}}"#,
    ]);
    etcd.etcdctl(&["put", "/apisix/routes/x/y", &route("x", "/x", "1")]);
    let dir = harness::TempDir::new("t-etcd");
    let run = |endpoint: &str| {
        let conf = dir.path().join("config.yaml");
        std::fs::write(
            &conf,
            format!("proxy:\n  listen: [\"127.0.0.1:1\"]\nconfig:\n  provider: etcd\netcd:\n  endpoints: [\"{endpoint}\"]\n  timeout: 3\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = run(&etcd.url());
    assert!(!ok, "{text}");
    assert!(
        text.contains("route opa") && text.contains("opa is not implemented"),
        "{text}"
    );
    assert!(text.contains("/apisix/routes/x/y"), "{text}");
    assert!(
        text.contains("1 routes") && text.contains("2 invalid item(s)"),
        "{text}"
    );
    etcd.etcdctl(&["del", "/apisix/routes/opa"]);
    etcd.etcdctl(&["del", "/apisix/routes/x/y"]);
    let (ok, text) = run(&etcd.url());
    assert!(ok, "{text}");
    let (ok, text) = run(&format!("http://127.0.0.1:{}", harness::free_port()));
    assert!(!ok);
    assert!(
        text.contains("cannot read the resources from etcd"),
        "{text}"
    );
}

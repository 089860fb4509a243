//! The limits' shared policies on a real Redis and a real Redis Cluster: one limit held by
//! two gateways, Redis gone under traffic (degradation or 500) and back, and the cluster's
//! slot routing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::gateway::{Echo, Gateway};
use crate::harness::redis::{RedisCluster, RedisServer, PASSWORD};
use crate::harness::wait_until;

/// `policy: redis` settings for `redis`, merged into a plugin's own.
fn on(redis: &RedisServer, mut plugin: Value) -> Value {
    plugin["policy"] = json!("redis");
    plugin["redis_host"] = json!("127.0.0.1");
    plugin["redis_port"] = json!(redis.port);
    plugin["redis_password"] = json!(PASSWORD);
    plugin["redis_timeout"] = json!(300);
    plugin
}

#[test]
fn limit_count_in_redis_is_one_limit_for_two_gateways() {
    let redis = RedisServer::start();
    let echo = Echo::start("rc");
    let mut wrong = on(&redis, json!({"count": 5, "time_window": 60}));
    wrong["redis_password"] = json!("not-it");
    let yaml = crate::yaml(
        &echo,
        vec![
            json!({"id": "c", "uri": "/c", "plugins": {"limit-count": on(&redis, json!({"count": 3, "time_window": 60}))}}),
            json!({"id": "g1", "uri": "/g1", "plugins": {"limit-count": on(&redis, json!({"count": 2, "time_window": 60, "group": "shared", "rejected_code": 429, "rejected_msg": "over"}))}}),
            json!({"id": "g2", "uri": "/g2", "plugins": {"limit-count": on(&redis, json!({"count": 2, "time_window": 60, "group": "shared", "rejected_code": 429, "rejected_msg": "over"}))}}),
            json!({"id": "wrong", "uri": "/wrong", "plugins": {"limit-count": wrong}}),
        ],
        &[],
    );
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    let mut remaining = Vec::new();
    for g in [&a, &b, &a] {
        let r = g.request("GET", "/c", &[]);
        assert_eq!(r.status, 200, "{}", g.log());
        assert_eq!(r.headers["x-ratelimit-limit"], "3");
        remaining.push(r.headers["x-ratelimit-remaining"].clone());
    }
    assert_eq!(remaining, ["2", "1", "0"], "one count between the gateways");
    let r = b.request("GET", "/c", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    let reset: f64 = r.headers["x-ratelimit-reset"].parse().unwrap();
    assert!(reset > 0.0 && reset <= 60.0, "{reset}");
    // The counter is in Redis, expiring with its window.
    let keys = redis.cli(&["--scan", "--pattern", "plugin-limit-count:v1:routes/c:*"]);
    let key = keys
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no key in {keys:?}"));
    assert_eq!(redis.cli(&["get", key]).trim(), "4");
    let ttl: i64 = redis.cli(&["ttl", key]).trim().parse().unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    // A group is one counter for its routes, on every gateway.
    assert_eq!(a.request("GET", "/g1", &[]).status, 200);
    assert_eq!(b.request("GET", "/g2", &[]).status, 200);
    let r = a.request("GET", "/g2", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (429, "{\"error_msg\":\"over\"}\n")
    );
    assert!(!redis
        .cli(&["--scan", "--pattern", "plugin-limit-count:v1:shared:*"])
        .is_empty());
    // A Redis that refuses the password: APISIX's 500, and the password is not logged.
    let r = a.request("GET", "/wrong", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "{\"error_msg\":\"failed to limit count\"}\n")
    );
    assert!(
        a.log().contains("limit-count: redis 127.0.0.1"),
        "{}",
        a.log()
    );
    assert!(!a.log().contains("not-it") && !a.log().contains(PASSWORD));
}

#[test]
fn redis_gone_degrades_or_refuses_and_comes_back() {
    let mut redis = RedisServer::start();
    let echo = Echo::start("rd");
    let count = |degrade: bool| {
        on(
            &redis,
            json!({"count": 1000, "time_window": 60, "allow_degradation": degrade}),
        )
    };
    let req = |degrade: bool| {
        on(
            &redis,
            json!({"rate": 1000, "burst": 1000, "key": "remote_addr", "allow_degradation": degrade}),
        )
    };
    let g = crate::start(
        &echo,
        vec![
            json!({"id": "strict", "uri": "/strict", "plugins": {"limit-count": count(false)}}),
            json!({"id": "soft", "uri": "/soft", "plugins": {"limit-count": count(true)}}),
            json!({"id": "rstrict", "uri": "/rstrict", "plugins": {"limit-req": req(false)}}),
            json!({"id": "rsoft", "uri": "/rsoft", "plugins": {"limit-req": req(true)}}),
        ],
        &[],
    );
    for p in ["/strict", "/soft", "/rstrict", "/rsoft"] {
        assert_eq!(g.request("GET", p, &[]).status, 200, "{p}: {}", g.log());
    }
    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let r = g.request("GET", "/strict", &[]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (500, "{\"error_msg\":\"failed to limit count\"}\n")
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by redis_timeout"
        );
        assert_eq!(
            g.request("GET", "/soft", &[]).status,
            200,
            "degraded: let through"
        );
        assert_eq!(g.request("GET", "/rstrict", &[]).status, 500);
        assert_eq!(g.request("GET", "/rsoft", &[]).status, 200);
    }
    // Other routes never noticed.
    assert!(
        g.log().contains("limit-count: redis 127.0.0.1"),
        "{}",
        g.log()
    );
    redis.start_again();
    assert!(
        wait_until(Duration::from_secs(15), || g
            .request("GET", "/strict", &[])
            .status
            == 200),
        "back once Redis is: {}",
        g.log()
    );
    assert!(wait_until(Duration::from_secs(15), || g
        .request("GET", "/rstrict", &[])
        .status
        == 200));
}

#[test]
fn limit_req_and_limit_conn_in_redis_hold_across_gateways() {
    let redis = RedisServer::start();
    let echo = Echo::start_slow("rlc", Duration::from_millis(800));
    let yaml = crate::yaml(
        &echo,
        vec![
            json!({"id": "r", "uri": "/r", "plugins": {"limit-req": on(&redis, json!({"rate": 0.5, "burst": 0, "key": "remote_addr", "nodelay": true, "rejected_code": 429}))}}),
            json!({"id": "c", "uri": "/c", "plugins": {"limit-conn": on(&redis, json!({"conn": 1, "burst": 0, "default_conn_delay": 0.1, "key": "remote_addr", "rejected_code": 429, "rejected_msg": "busy"}))}}),
        ],
        &[],
    );
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    assert_eq!(a.request("GET", "/r", &[]).status, 200, "{}", a.log());
    assert_eq!(
        b.request("GET", "/r", &[]).status,
        429,
        "one bucket for both"
    );
    // One request under way on a: b refuses the next, until a's is done.
    let port = a.port;
    let slow =
        std::thread::spawn(move || crate::harness::gateway::request(port, "GET", "/c", &[], ""));
    assert!(wait_until(Duration::from_secs(5), || {
        redis
            .cli(&["--scan", "--pattern", "limit_conn:*"])
            .lines()
            .any(|k| redis.cli(&["zcard", k]).trim() == "1")
    }));
    let r = b.request("GET", "/c", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (429, "{\"error_msg\":\"busy\"}\n")
    );
    assert_eq!(slow.join().unwrap().status, 200);
    assert!(
        wait_until(Duration::from_secs(5), || b
            .request("GET", "/c", &[])
            .status
            == 200),
        "the place was given back"
    );
}

#[test]
fn limit_count_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let echo = Echo::start("rcl");
    let plugin = json!({
        "count": 2, "time_window": 60, "key": "http_x_user",
        "policy": "redis-cluster", "redis_cluster_nodes": cluster.addrs(),
        "redis_cluster_name": "test-cluster", "redis_password": PASSWORD, "redis_timeout": 500,
    });
    let g = crate::start(
        &echo,
        vec![json!({"id": "c", "uri": "/c", "plugins": {"limit-count": plugin}})],
        &[],
    );
    // Users whose keys fall on different slots, so on different masters.
    let users: Vec<String> = (0..6).map(|i| format!("user-{i}")).collect();
    for u in &users {
        for expected in [200, 200, 503] {
            let r = g.request("GET", "/c", &[("X-User", u)]);
            assert_eq!(r.status, expected, "{u}: {}", g.log());
        }
    }
    let keys = cluster.keys();
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("plugin-limit-count:v1:routes/c:"))
            .count(),
        users.len(),
        "{keys:?}"
    );
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| !n.cli(&["--scan"]).trim().is_empty())
        .count();
    assert!(holding >= 2, "keys spread over the masters");
}

#[test]
fn limit_count_in_redis_over_tls() {
    let certs = crate::harness::Certs::generate();
    let redis = RedisServer::start_tls(certs.dir.path());
    let echo = Echo::start("rtls");
    let tls = |verify: bool| {
        let mut p = on(&redis, json!({"count": 1, "time_window": 60}));
        p["redis_ssl"] = json!(true);
        p["redis_ssl_verify"] = json!(verify);
        p
    };
    let g = crate::start(
        &echo,
        vec![
            json!({"id": "tls", "uri": "/tls", "plugins": {"limit-count": tls(false)}}),
            json!({"id": "verify", "uri": "/verify", "plugins": {"limit-count": tls(true)}}),
        ],
        &[],
    );
    assert_eq!(g.request("GET", "/tls", &[]).status, 200, "{}", g.log());
    assert_eq!(g.request("GET", "/tls", &[]).status, 503);
    assert!(!redis
        .cli(&["--scan", "--pattern", "plugin-limit-count:v1:routes/tls:*"])
        .trim()
        .is_empty());
    // Verified against the system's CAs, which do not include the test CA: refused, 500.
    assert_eq!(g.request("GET", "/verify", &[]).status, 500);
}

//! The `prometheus` plugin and exporter through the real binary: known traffic, then a scrape
//! read by a Prometheus text parser nobody here wrote (Python's `prometheus_client`).
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use harness::gateway::{Echo, Gateway};
use harness::{free_port, http_get, python_venv, wait_until, EtcdMember, TempDir};

/// Reads the exposition format on stdin; prints every sample as `[name, labels, value]`.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &PYTHON
        .get_or_init(|| {
            let dir = TempDir::new("prom-venv");
            let python = python_venv(dir.path(), &["prometheus_client==0.21.1"]);
            std::fs::write(dir.path().join("parse.py"), PARSER).unwrap();
            (dir, python)
        })
        .1
}

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The samples named `name` whose labels include every pair of `want`.
    fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one value of `name` with labels `want` (0 when absent).
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found = self.find(name, want);
        assert!(found.len() <= 1, "{name} {want:?} matches {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }
}

/// Scrapes `port` and parses the answer with `prometheus_client` (which names a counter's
/// samples `<name>_total`, as the format's newer version does).
fn scrape(port: u16) -> Scrape {
    // streamed in pieces: a scrape is never held whole
    let r = harness::gateway::request(port, "GET", "/apisix/prometheus/metrics", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["transfer-encoding"], "chunked");
    assert_eq!(r.headers["content-type"], "text/plain; version=0.0.4");
    let body = r.body;
    let dir = python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    let mut child = Command::new(python())
        .arg(dir.join("parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var("SHOW_SCRAPE").is_ok() {
        eprintln!("{body}\n{}", String::from_utf8_lossy(&out.stdout));
    }
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    Scrape(
        parsed
            .into_iter()
            .map(|(name, labels, value)| Sample {
                name,
                labels,
                value,
            })
            .collect(),
    )
}

/// A standalone gateway with the exporter on a port of its own.
fn start(apisix_yaml: &str) -> (Gateway, u16) {
    let port = free_port();
    let g = Gateway::start_with_config(
        apisix_yaml,
        &format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n"),
    );
    (g, port)
}

fn yaml(items: &[(&str, Vec<Value>)]) -> String {
    let mut s = String::new();
    for (name, list) in items {
        s.push_str(&format!("{name}:\n"));
        for i in list {
            s.push_str(&format!("  - {i}\n"));
        }
    }
    s.push_str("#END\n");
    s
}

#[test]
fn routes_with_the_plugin_are_counted_with_apisix_labels() {
    let echo = Echo::start("up");
    let up = json!({"nodes": {echo.addr(): 1}});
    let dead = json!({"nodes": {format!("127.0.0.1:{}", free_port()): 1}});
    let (g, port) = start(&yaml(&[
        (
            "routes",
            vec![
                json!({"id": "1", "uri": "/hello", "plugins": {"prometheus": {}}, "upstream": up}),
                json!({"id": "2", "uri": "/plain", "upstream": up}),
                json!({"id": "3", "uri": "/secure", "upstream": up,
                       "plugins": {"prometheus": {}, "key-auth": {}}}),
                json!({"id": "9", "uris": ["/foo*", "/bar*"], "hosts": ["foo.com", "bar.com"],
                       "plugins": {"prometheus": {}}, "upstream": up}),
                json!({"id": "5", "uri": "/dead", "plugins": {"prometheus": {}}, "upstream": dead}),
            ],
        ),
        (
            "consumers",
            vec![json!({"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}}})],
        ),
    ]));
    for _ in 0..3 {
        assert_eq!(g.get("/hello", None).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(g.get("/plain", None).status, 200);
    }
    assert_eq!(
        g.request("GET", "/secure", &[("apikey", "jack-key")])
            .status,
        200
    );
    assert_eq!(g.get("/secure", None).status, 401);
    assert_eq!(g.get("/foo/x", Some("foo.com")).status, 200);
    assert_eq!(g.get("/bar/y", Some("bar.com")).status, 200);
    assert_eq!(g.get("/bar/z", Some("bar.com")).status, 200);
    assert_eq!(g.get("/dead", None).status, 502);
    assert_eq!(g.get("/nowhere", None).status, 404);

    let s = scrape(port);
    let status = |labels: &[(&str, &str)]| s.value("apisix_http_status_total", labels);
    let hello = [
        ("code", "200"),
        ("route", "1"),
        ("matched_uri", "/hello"),
        ("matched_host", ""),
        ("service", ""),
        ("consumer", ""),
        ("node", "127.0.0.1"),
        ("request_type", "traditional_http"),
        ("request_llm_model", ""),
        ("llm_model", ""),
        ("response_source", "upstream"),
    ];
    assert_eq!(status(&hello), 3.0);
    assert_eq!(
        s.find("apisix_http_status_total", &[("route", "2")]).len(),
        0,
        "a route without the plugin is not counted"
    );
    assert_eq!(
        s.find("apisix_http_status_total", &[("route", "")]).len(),
        0,
        "no global rule: a 404 is not counted"
    );
    assert_eq!(
        status(&[("route", "3"), ("code", "200"), ("consumer", "jack")]),
        1.0
    );
    assert_eq!(
        status(&[
            ("route", "3"),
            ("code", "401"),
            ("consumer", ""),
            ("node", ""),
            ("response_source", "apisix")
        ]),
        1.0
    );
    assert_eq!(
        status(&[
            ("route", "9"),
            ("matched_uri", "/foo*"),
            ("matched_host", "foo.com")
        ]),
        1.0
    );
    assert_eq!(
        status(&[
            ("route", "9"),
            ("matched_uri", "/bar*"),
            ("matched_host", "bar.com")
        ]),
        2.0
    );
    assert_eq!(
        status(&[
            ("route", "5"),
            ("code", "502"),
            ("node", "127.0.0.1"),
            ("response_source", "nginx")
        ]),
        1.0
    );

    // latency: one observation per request and type, in APISIX's buckets
    let latency = |kind: &str, route: &str| {
        s.value(
            "apisix_http_latency_count",
            &[("type", kind), ("route", route), ("node", "127.0.0.1")],
        )
    };
    assert_eq!(latency("request", "1"), 3.0);
    assert_eq!(latency("upstream", "1"), 3.0);
    assert_eq!(latency("apisix", "1"), 3.0);
    let buckets = s.find(
        "apisix_http_latency_bucket",
        &[("type", "request"), ("route", "1")],
    );
    let les: Vec<&str> = buckets.iter().map(|b| b.labels["le"].as_str()).collect();
    assert_eq!(
        les,
        [
            "1", "2", "5", "10", "20", "50", "100", "200", "500", "1000", "2000", "5000", "10000",
            "30000", "60000", "+Inf"
        ]
    );
    assert_eq!(buckets.last().unwrap().value, 3.0);
    // bandwidth: at least the request lines and the echo's answers
    let ingress = s.value(
        "apisix_bandwidth_total",
        &[("type", "ingress"), ("route", "1"), ("node", "127.0.0.1")],
    );
    let egress = s.value(
        "apisix_bandwidth_total",
        &[("type", "egress"), ("route", "1"), ("node", "127.0.0.1")],
    );
    assert!(
        ingress >= 3.0 * "GET /hello HTTP/1.1\r\n\r\n".len() as f64,
        "{ingress}"
    );
    assert!(egress > 3.0 * 100.0, "{egress}");

    // every request counts in the total, with or without the plugin
    assert!(s.value("apisix_http_requests_total", &[]) >= 11.0);
    assert!(
        s.value(
            "apisix_nginx_http_current_connections",
            &[("state", "accepted")]
        ) >= 11.0
    );
    assert!(
        s.value(
            "apisix_nginx_http_current_connections",
            &[("state", "handled")]
        ) >= 11.0
    );
    let node_info = s.find("apisix_node_info", &[]);
    assert_eq!(node_info.len(), 1);
    assert!(!node_info[0].labels["hostname"].is_empty());
    // no etcd here
    assert!(s.find("apisix_etcd_reachable", &[]).is_empty());
}

#[test]
fn a_global_rule_counts_every_request_once_with_the_route_settings() {
    let echo = Echo::start("up");
    let up = json!({"nodes": {echo.addr(): 1}});
    let (g, port) = start(&yaml(&[
        (
            "routes",
            vec![
                json!({"id": "1", "name": "hello-route", "uri": "/hello", "service_id": "s",
                       "plugins": {"prometheus": {"prefer_name": true}}}),
                json!({"id": "2", "uri": "/other", "upstream": up}),
            ],
        ),
        (
            "services",
            vec![json!({"id": "s", "name": "hello-service", "upstream": up})],
        ),
        (
            "global_rules",
            vec![json!({"id": "g", "plugins": {"prometheus": {}}})],
        ),
    ]));
    for _ in 0..2 {
        assert_eq!(g.get("/hello", None).status, 200);
    }
    assert_eq!(g.get("/other", None).status, 200);
    assert_eq!(g.get("/nowhere", None).status, 404);
    let s = scrape(port);
    let total = |labels: &[(&str, &str)]| -> f64 {
        s.find("apisix_http_status_total", labels)
            .iter()
            .map(|x| x.value)
            .sum()
    };
    // counted once, under the route's prefer_name
    assert_eq!(
        total(&[("route", "hello-route"), ("service", "hello-service")]),
        2.0
    );
    assert_eq!(total(&[("route", "1")]), 0.0);
    // the global rule's settings for the route without the plugin
    assert_eq!(total(&[("route", "2"), ("code", "200")]), 1.0);
    assert_eq!(
        total(&[
            ("code", "404"),
            ("route", ""),
            ("matched_uri", ""),
            ("node", ""),
            ("response_source", "apisix")
        ]),
        1.0
    );
    assert_eq!(total(&[]), 4.0);
}

#[test]
fn etcd_and_health_gauges() {
    let mut etcd = EtcdMember::start();
    let echo = Echo::start("up");
    let up = json!({
        "nodes": {echo.addr(): 1},
        "checks": {"active": {"http_path": "/", "healthy": {"interval": 1}, "unhealthy": {"interval": 1}}}
    });
    etcd.etcdctl(&[
        "put",
        "/apisix/upstreams/u1",
        &json!({"id": "u1", "nodes": {echo.addr(): 1}, "checks": up["checks"]}).to_string(),
    ]);
    etcd.etcdctl(&[
        "put",
        "/apisix/routes/r1",
        &json!({"id": "r1", "uri": "/r", "upstream_id": "u1", "plugins": {"prometheus": {}}})
            .to_string(),
    ]);
    let port = free_port();
    let g = Gateway::spawn_etcd(
        &[etcd.url()],
        &format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || g.ready()),
        "{}",
        g.log()
    );
    let revision = |key: &str| -> f64 {
        let out = etcd.etcdctl(&["get", key, "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["kvs"][0]["mod_revision"].as_f64().unwrap()
    };
    let route_rev = revision("/apisix/routes/r1");
    let upstream_rev = revision("/apisix/upstreams/u1");
    let s = scrape(port);
    assert_eq!(s.value("apisix_etcd_reachable", &[]), 1.0);
    let index = |key: &str| s.value("apisix_etcd_modify_indexes", &[("key", key)]);
    assert_eq!(index("routes"), route_rev);
    assert_eq!(index("upstreams"), upstream_rev);
    assert_eq!(index("consumers"), 0.0);
    assert_eq!(index("max_modify_index"), route_rev.max(upstream_rev));
    assert!(index("x_etcd_index") >= route_rev.max(upstream_rev));
    let (host, node_port) = echo
        .addr()
        .split_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        scrape(port).value(
            "apisix_upstream_status",
            &[
                ("name", "/apisix/upstreams/u1"),
                ("ip", &host),
                ("port", &node_port),
            ],
        ) == 1.0
    }));
    echo.stop();
    assert!(
        wait_until(Duration::from_secs(15), || {
            scrape(port).value(
                "apisix_upstream_status",
                &[("name", "/apisix/upstreams/u1")],
            ) == 0.0
        }),
        "the stopped node never showed unhealthy"
    );
    etcd.stop();
    assert!(
        wait_until(Duration::from_secs(20), || {
            scrape(port).value("apisix_etcd_reachable", &[]) == 0.0
        }),
        "etcd stopped but still reachable:\n{}",
        g.log()
    );
}

#[test]
fn the_exporter_answers_only_its_path_and_checks_its_settings() {
    let (_g, port) = start("routes: []\n#END\n");
    let (status, _) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 404);
    let dir = TempDir::new("metrics-conf");
    let conf = dir.path().join("config.yaml");
    let check = |metrics: &str| {
        std::fs::write(
            &conf,
            format!("proxy:\n  listen: [\"127.0.0.1:1\"]\nconfig:\n  provider: yaml\n  yaml: apisix.yaml\n{metrics}"),
        )
        .unwrap();
        std::fs::write(dir.path().join("apisix.yaml"), "routes: []\n#END\n").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check("metrics:\n  listen: \"127.0.0.1:9091\"\n  metric_prefix: \"9bad\"\n");
    assert!(!ok && err.contains("metrics.metric_prefix"), "{err}");
    let (ok, err) = check("metrics:\n  listen: \"nowhere\"\n");
    assert!(!ok && err.contains("metrics.listen"), "{err}");
    let (ok, err) = check("metrics:\n  listen: \"127.0.0.1:9091\"\n  export_uri: \"metrics\"\n");
    assert!(!ok && err.contains("metrics.export_uri"), "{err}");
    let (ok, err) = check("metrics:\n  listen: \"127.0.0.1:9091\"\n");
    assert!(ok, "{err}");
}

#[test]
fn the_grafana_dashboard_reads_metrics_the_exporter_writes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("examples/grafana-dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dash["title"].is_string());
    assert!(dash["schemaVersion"].is_number());
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let known = [
        "apisix_http_status",
        "apisix_http_latency_bucket",
        "apisix_http_latency_sum",
        "apisix_http_latency_count",
        "apisix_bandwidth",
        "apisix_http_requests_total",
        "apisix_nginx_http_current_connections",
        "apisix_etcd_reachable",
        "apisix_etcd_modify_indexes",
        "apisix_node_info",
        "apisix_upstream_status",
    ];
    let mut ids = std::collections::HashSet::new();
    for p in panels {
        assert!(p["title"].is_string(), "{p}");
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id {p}"
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("apisix_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(known.contains(&n), "{n} in {expr} is not exported");
            }
        }
    }
}

//! The standalone file is followed without restarts; bad files keep the last good config;
//! `portico -t` reports problems; signals stop the process promptly.

use std::process::Command;
use std::time::Duration;

use crate::harness::gateway::{Echo, Gateway};
use crate::harness::{wait_until, TempDir};

fn one_route(echo: &Echo, uri: &str) -> String {
    format!(
        "routes:\n  - {{id: r, uri: {uri}, upstream: {{nodes: {{\"{}\": 1}}}}}}\n#END\n",
        echo.addr()
    )
}

#[test]
fn reload_good_bad_and_partly_bad_files() {
    let echo = Echo::start("e");
    let g = Gateway::start(&one_route(&echo, "/v1"));
    assert_eq!(g.get("/v1", None).status, 200);

    g.update(&one_route(&echo, "/v2"));
    assert_eq!(g.get("/v2", None).status, 200);
    assert_eq!(g.get("/v1", None).status, 404);

    // A broken file: the last good config stays and the error is reported.
    let version = g.status()["version"].as_u64().unwrap();
    std::fs::write(g.yaml_path(), "routes: [ {id: broken\n#END\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        g.status()["source"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid YAML"))
    }));
    assert_eq!(g.status()["version"].as_u64().unwrap(), version);
    assert_eq!(g.get("/v2", None).status, 200);

    // One bad item: rejected alone, named with its field; the rest applies.
    let text = format!(
        "{}  - {{id: bad, uri: /bad, methods: [FETCH]}}\n  - {{id: ok2, uri: /ok2, upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
        one_route(&echo, "/v3").replace("#END\n", ""),
        echo.addr()
    );
    g.update(&text);
    assert_eq!(g.get("/v3", None).status, 200);
    assert_eq!(g.get("/ok2", None).status, 200);
    let status = g.status();
    let rejected = status["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{status}");
    assert_eq!(rejected[0]["id"], "bad");
    assert!(rejected[0]["error"]
        .as_str()
        .unwrap()
        .contains("property \"methods\" validation failed"));
    assert!(g.log().contains("route bad"), "{}", g.log());
    assert_eq!(status["counts"]["routes"], 2);

    // A working route turned invalid keeps serving its last good version (as with etcd).
    let text = format!(
        "{}  - {{id: ok2, uri: /ok2, methods: [FETCH], upstream: {{nodes: {{\"{}\": 1}}}}}}\n",
        one_route(&echo, "/v3").replace("#END\n", ""),
        echo.addr()
    );
    g.update(&text);
    let status = g.status();
    assert_eq!(status["rejected"][0]["id"], "ok2", "{status}");
    assert_eq!(g.get("/ok2", None).status, 200);

    // Environment substitution in the file.
    let with_env = one_route(&echo, "${{PORTICO_TEST_URI:=/from-env}}");
    g.update(&with_env);
    assert_eq!(g.get("/from-env", None).status, 200);
}

#[test]
fn cut_deleted_and_odd_files_keep_the_last_good_config() {
    let echo = Echo::start("cut");
    let g = Gateway::start(&one_route(&echo, "/v1"));
    let last_error = |want: &'static str| {
        wait_until(Duration::from_secs(10), || {
            g.status()["source"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(want))
        })
    };
    // Cut while it was written (here: before its last route and the #END line).
    let cut = one_route(&echo, "/v1").replace("#END\n", "");
    std::fs::write(g.yaml_path(), format!("{cut}  - {{id: r2, uri: /v2")).unwrap();
    assert!(last_error("#END"), "{}", g.status());
    std::fs::write(g.yaml_path(), "").unwrap();
    assert!(last_error("#END"));
    assert_eq!(g.get("/v1", None).status, 200);

    // Deleted: said in /status, and the config stays.
    std::fs::remove_file(g.yaml_path()).unwrap();
    assert!(last_error("cannot read"), "{}", g.status());
    assert_eq!(g.get("/v1", None).status, 200);

    // A FIFO in its place would block a reader forever: refused at once.
    let fifo = Command::new("mkfifo").arg(g.yaml_path()).status().unwrap();
    assert!(fifo.success());
    assert!(last_error("not a regular file"), "{}", g.status());
    assert_eq!(g.get("/v1", None).status, 200);
    std::fs::remove_file(g.yaml_path()).unwrap();

    // Back to a whole file: applied, and the error is gone.
    std::fs::write(g.yaml_path(), one_route(&echo, "/v3")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || g
        .get("/v3", None)
        .status
        == 200));
    assert!(g.status()["source"]["last_error"].is_null());
}

#[test]
fn ready_only_once_a_config_is_loaded() {
    let g = Gateway::spawn("routes: [");
    assert!(wait_until(Duration::from_secs(10), || g.status_port_answers(&g)));
    assert!(
        !g.ready(),
        "a broken first file leaves the gateway not ready"
    );
    assert_eq!(g.get("/", None).status, 404);
    std::fs::write(g.yaml_path(), "routes: []\n#END\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || g.ready()));
}

trait Probe {
    fn status_port_answers(&self, g: &Gateway) -> bool;
}

impl Probe for Gateway {
    fn status_port_answers(&self, g: &Gateway) -> bool {
        crate::harness::http_get(g.status_port, "/status").is_some()
    }
}

fn portico_t(config: &str, apisix: &str) -> (bool, String) {
    let dir = TempDir::new("t");
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    std::fs::write(
        dir.path().join("apisix.yaml"),
        crate::harness::gateway::with_end(apisix),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["-t", "-c"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const GOOD: &str =
    "proxy:\n  listen: [\"127.0.0.1:1\"]\nconfig:\n  provider: yaml\n  yaml: apisix.yaml\n";

#[test]
fn dash_t_reports_config_errors() {
    let (ok, text) = portico_t(GOOD, "routes: []\n");
    assert!(ok, "{text}");
    assert!(text.contains("is ok"), "{text}");

    let (ok, text) = portico_t(&GOOD.replace("listen:", "lisen:"), "");
    assert!(!ok);
    assert!(
        text.contains("config.yaml") && text.contains("lisen"),
        "{text}"
    );

    let (ok, text) = portico_t(&GOOD.replace("\"127.0.0.1:1\"", "1234"), "");
    assert!(!ok);
    assert!(
        text.contains("config.yaml") && text.contains("listen"),
        "{text}"
    );

    // A timeout too large for a Duration is an error, not a panic.
    let huge =
        format!("{GOOD}etcd:\n  endpoints: [\"http://127.0.0.1:1\"]\n  fail_timeout: 1e300\n");
    let (ok, text) = portico_t(&huge, "routes: []\n");
    assert!(!ok);
    assert!(text.contains("etcd.fail_timeout"), "{text}");

    let (ok, text) = portico_t(GOOD, "routes:\n  - {id: x, uri: /x, priority: high}\n");
    assert!(!ok);
    assert!(
        text.contains("route x") && text.contains("\"priority\""),
        "{text}"
    );

    let (ok, text) = portico_t(GOOD, "routes: [ {");
    assert!(!ok);
    assert!(
        text.contains("apisix.yaml") && text.contains("not valid YAML"),
        "{text}"
    );
}

#[test]
fn sigterm_and_sigint_stop_within_seconds() {
    for signal in ["-TERM", "-INT"] {
        let mut g = Gateway::start("routes: []\n");
        let took = g.stop_with(signal);
        assert!(took < Duration::from_secs(5), "{signal} took {took:?}");
    }
}

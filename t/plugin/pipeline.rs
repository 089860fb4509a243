//! Fail-closed loading, order of phases, merging, `_meta`.

use serde_json::json;

use crate::harness::gateway::Echo;
use crate::harness::wait_until;
use crate::{start, yaml};
use std::time::Duration;

#[test]
fn unimplemented_plugins_reject_their_route_alone() {
    let echo = Echo::start("u");
    let g = start(
        &echo,
        vec![
            json!({"id": "open", "uri": "/open"}),
            json!({"id": "opa", "uri": "/opa", "plugins": {"opa": {"host": "http://x"}}}),
            json!({"id": "lua", "uri": "/lua", "plugins": {"serverless-pre-function": {"functions": []}}}),
            json!({"id": "typo", "uri": "/typo", "plugins": {"key-aut": {}}}),
            json!({"id": "bad", "uri": "/bad", "plugins": {"key-auth": {"header": 5}}}),
        ],
        &[],
    );
    assert_eq!(g.get("/open", None).status, 200);
    for path in ["/opa", "/lua", "/typo", "/bad"] {
        assert_eq!(g.get(path, None).status, 404, "{path}");
    }
    let status = g.status();
    let rejected = status["rejected"].as_array().unwrap();
    let error_of = |id: &str| {
        rejected
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["error"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(
        error_of("opa").contains("opa is not implemented by Portico"),
        "{rejected:?}"
    );
    assert!(error_of("lua").contains("Lua"), "{rejected:?}");
    assert!(
        error_of("typo").contains("unknown plugin [key-aut]"),
        "{rejected:?}"
    );
    assert!(
        error_of("bad").contains("plugin key-auth") && error_of("bad").contains("\"header\""),
        "{rejected:?}"
    );
    assert!(g.log().contains("opa is not implemented"));
    assert!(status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "key-auth"));
}

#[test]
fn portico_t_names_unimplemented_plugins() {
    let echo = Echo::start("t");
    let g = start(&echo, vec![json!({"id": "open", "uri": "/open"})], &[]);
    std::fs::write(
        g.yaml_path(),
        yaml(
            &echo,
            vec![json!({"id": "r9", "uri": "/x", "plugins": {"opa": {}}})],
            &[],
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("-t")
        .arg("-c")
        .arg(g.dir.path().join("config.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("route r9") && err.contains("opa"), "{err}");
}

#[test]
fn plugins_left_out_by_the_operator_are_skipped_with_a_warning() {
    let echo = Echo::start("off");
    let g = crate::harness::gateway::Gateway::start_with_config(
        &yaml(
            &echo,
            vec![json!({"id": "r", "uri": "/r", "plugins": {"key-auth": {}}})],
            &[],
        ),
        "plugins: [\"request-id\"]\n",
    );
    assert_eq!(g.get("/r", None).status, 200);
    assert!(wait_until(Duration::from_secs(5), || g
        .log()
        .contains("plugin key-auth is not enabled")));
    assert_eq!(g.status()["plugins"], json!(["request-id"]));
}

#[test]
fn phases_merging_and_meta() {
    let echo = Echo::start("p");
    let g = start(
        &echo,
        vec![
            // Auth (rewrite) refuses before ip-restriction (access), whatever the priorities.
            json!({"id": "order", "uri": "/order", "plugins": {
                "key-auth": {}, "ip-restriction": {"blacklist": ["127.0.0.0/8"]}}}),
            // A route's plugin replaces its service's of the same name; _meta.disable turns one off.
            json!({"id": "svc", "uri": "/svc", "service_id": "s1", "plugins": {
                "response-rewrite": {"headers": {"X-From": "route"}}}}),
            json!({"id": "svc-off", "uri": "/svc-off", "service_id": "s1", "plugins": {
                "ip-restriction": {"whitelist": ["10.0.0.1"], "_meta": {"disable": true}}}}),
            json!({"id": "pc", "uri": "/pc", "plugin_config_id": "pc1"}),
            // _meta.filter: the plugin runs only when the expression holds.
            json!({"id": "filter", "uri": "/filter", "plugins": {
                "fault-injection": {"abort": {"http_status": 418, "body": "teapot"},
                                    "_meta": {"filter": [["arg_fail", "==", "1"]]}}}}),
            // A consumer's plugin applies to that consumer after auth.
            json!({"id": "cons", "uri": "/cons", "plugins": {"key-auth": {}}}),
            // A higher-priority refusal: the lower one never runs (no header from request-id's
            // rewrite reaches... the answer has no upstream at all).
            json!({"id": "stop", "uri": "/stop", "plugins": {
                "fault-injection": {"abort": {"http_status": 403, "body": "no"}},
                "proxy-rewrite": {"headers": {"X-Never": "1"}}}}),
        ],
        &[
            (
                "services",
                vec![
                    json!({"id": "s1", "upstream": {"nodes": {echo.addr(): 1}}, "plugins": {
                    "response-rewrite": {"headers": {"X-From": "service"}},
                    "ip-restriction": {"whitelist": ["10.0.0.1"]}}}),
                ],
            ),
            (
                "plugin_configs",
                vec![
                    json!({"id": "pc1", "plugins": {"response-rewrite": {"headers": {"X-From": "plugin_config"}}}}),
                ],
            ),
            (
                "consumers",
                vec![json!({"username": "jack", "plugins": {
                    "key-auth": {"key": "k"},
                    "proxy-rewrite": {"headers": {"X-Consumer-Plugin": "yes"}}}})],
            ),
            (
                "global_rules",
                vec![
                    json!({"id": "g", "plugins": {"response-rewrite": {"headers": {"X-Global": "1"}}}}),
                ],
            ),
        ],
    );
    let r = g.request("GET", "/order", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.headers["x-global"], "1",
        "global rules answer refusals too"
    );
    assert_eq!(g.request("GET", "/order", &[("apikey", "k")]).status, 403);

    // The service's ip-restriction applies to /svc (the client is not 10.0.0.1).
    assert_eq!(g.request("GET", "/svc", &[]).status, 403);
    let r = g.request("GET", "/svc-off", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-from"], "service");
    let r = g.request("GET", "/pc", &[]);
    assert_eq!(r.headers["x-from"], "plugin_config");
    assert_eq!(r.headers["x-global"], "1");

    assert_eq!(g.request("GET", "/filter", &[]).status, 200);
    let r = g.request("GET", "/filter?fail=1", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "teapot"));

    let r = g.request("GET", "/cons", &[("apikey", "k")]);
    assert_eq!(r.echo()["headers"]["x-consumer-plugin"], "yes");

    let r = g.request("GET", "/stop", &[]);
    assert_eq!((r.status, r.body.as_str()), (403, "no"));

    // Global rules run for requests no route takes.
    let r = g.request("GET", "/nowhere", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["x-global"], "1");
}

#[test]
fn a_global_rule_that_cannot_be_honoured_refuses_every_request() {
    let echo = Echo::start("g");
    let routes = vec![json!({"id": "open", "uri": "/open"})];
    let rules = vec![json!({"id": "g1", "plugins": {
        "ip-restriction": {"whitelist": ["127.0.0.0/8"]}, "skywalking": {}}})];
    let g = start(&echo, routes.clone(), &[("global_rules", rules.clone())]);
    // Served without its ip-restriction would be open to all: nothing is served instead.
    assert_eq!(g.get("/open", None).status, 503);
    assert_eq!(g.get("/nowhere", None).status, 503);
    let status = g.status();
    assert_eq!(status["global_rules_rejected"][0]["id"], "g1", "{status}");
    // The operator leaves the plugin out of `plugins:`: the rule loads without it.
    let g = crate::harness::gateway::Gateway::start_with_config(
        &yaml(&echo, routes, &[("global_rules", rules)]),
        "plugins: [ip-restriction]\n",
    );
    assert_eq!(g.get("/open", None).status, 200);
    assert!(g.log().contains("plugin skywalking is not enabled"));
}

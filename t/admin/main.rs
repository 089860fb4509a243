//! The Admin API against a real etcd and the real gateway: every method on every kind, with
//! the answer, the JSON stored in etcd (read back with etcdctl) and what the gateway serves
//! after the write.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

mod client;

use std::time::Duration;

use serde_json::{json, Value};

use harness::gateway::{Echo, Gateway};
use harness::{free_port, wait_until, EtcdMember};

pub const ADMIN_KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";
pub const VIEWER_KEY: &str = "4054f7cf07e344346cd3f287985e76a2";

/// A gateway on `etcd` with the Admin API on a free port.
pub struct Admin {
    pub gateway: Gateway,
    pub port: u16,
}

impl Admin {
    pub fn start(etcd: &EtcdMember) -> Admin {
        Admin::start_with(etcd, "")
    }

    /// `admin_extra` goes under `admin:` in config.yaml.
    pub fn start_with(etcd: &EtcdMember, admin_extra: &str) -> Admin {
        let port = free_port();
        let extra = format!(
            "admin:\n  listen: \"127.0.0.1:{port}\"\n  keys:\n    - {{name: admin, key: {ADMIN_KEY}, role: admin}}\n    - {{name: viewer, key: {VIEWER_KEY}, role: viewer}}\n{admin_extra}"
        );
        let gateway = Gateway::spawn_etcd(&[etcd.url()], &extra);
        assert!(
            wait_until(Duration::from_secs(20), || gateway.ready()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "not ready:\n{}",
            gateway.log()
        );
        Admin { gateway, port }
    }

    /// A request with the admin key; the status and the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(Some(ADMIN_KEY), method, path, body.map(|b| b.to_string()))
    }

    pub fn call_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(k) = key {
            headers.push(("X-API-KEY", k));
        }
        let (status, text) = harness::http(
            self.port,
            method,
            &format!("/apisix/admin{path}"),
            &headers,
            body.as_deref().unwrap_or(""),
        )
        .expect("admin answer");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }
}

/// One raw HTTP exchange (to see the headers); the whole answer as text.
fn raw(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The JSON etcd holds at `key`, read with etcdctl.
fn stored(etcd: &EtcdMember, key: &str) -> Option<Value> {
    let out = etcd.etcdctl(&["get", key, "--print-value-only"]);
    let line = out.lines().next()?;
    serde_json::from_str(line).ok()
}

fn until_status(g: &Gateway, path: &str, headers: &[(&str, &str)], status: u16) {
    assert!(
        wait_until(Duration::from_secs(10), || g
            .request("GET", path, headers)
            .status
            == status),
        "{path} never answered {status}:\n{}",
        g.log()
    );
}

#[test]
fn every_kind_is_written_read_listed_and_deleted() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let echo = Echo::start("up");
    let pem = harness::Certs::generate();
    let cert = std::fs::read_to_string(pem.path("server.pem")).unwrap();
    let key = std::fs::read_to_string(pem.path("server.key")).unwrap();
    let kinds: Vec<(&str, Value)> = vec![
        (
            "/upstreams/u1",
            json!({"type": "roundrobin", "nodes": {echo.addr(): 1}}),
        ),
        ("/services/s1", json!({"upstream_id": "u1", "name": "svc"})),
        (
            "/plugin_configs/pc1",
            json!({"plugins": {"request-id": {}}}),
        ),
        (
            "/routes/r1",
            json!({"uri": "/one", "service_id": "s1", "plugin_config_id": "pc1"}),
        ),
        (
            "/global_rules/g1",
            json!({"plugins": {"request-id": {"header_name": "X-G"}}}),
        ),
        (
            "/consumer_groups/cg1",
            json!({"plugins": {"request-id": {}}}),
        ),
        (
            "/consumers/jack",
            json!({"group_id": "cg1", "plugins": {"key-auth": {"key": "jack-key"}}}),
        ),
        (
            "/consumers/jack/credentials/c1",
            json!({"plugins": {"basic-auth": {"username": "j", "password": "pw"}}}),
        ),
        (
            "/ssls/t1",
            json!({"cert": cert, "key": key, "snis": ["localhost"]}),
        ),
        (
            "/plugin_metadata/request-id",
            json!({"log_format": {"a": "$remote_addr"}}),
        ),
    ];
    for (path, body) in &kinds {
        let (s, v) = a.call("PUT", path, Some(body.clone()));
        assert_eq!(s, 201, "{path}: {v}");
        let etcd_key = format!("/apisix{path}");
        assert_eq!(v["key"], json!(etcd_key), "{path}: {v}");
        // again: replaced, create_time kept (plugin metadata has no times, as in APISIX)
        let (s, v2) = a.call("PUT", path, Some(body.clone()));
        assert_eq!(s, 200, "{path}: {v2}");
        if path.starts_with("/plugin_metadata") {
            assert!(v2["value"].get("create_time").is_none(), "{v2}");
            assert_eq!(v2["value"]["id"], "request-id");
        } else {
            assert!(v["value"]["create_time"].is_i64(), "{v}");
            assert!(v["value"]["update_time"].is_i64(), "{v}");
            assert_eq!(
                v2["value"]["create_time"], v["value"]["create_time"],
                "{v2}"
            );
        }
        // the stored JSON: the body, its id, the times (no defaults added)
        let kept = stored(&etcd, &etcd_key).expect("stored");
        for (k, want) in body.as_object().unwrap() {
            if k == "key" || k == "plugins" {
                continue;
            }
            assert_eq!(&kept[k], want, "{path} field {k}: {kept}");
        }
        let (s, got) = a.call("GET", path, None);
        assert_eq!(s, 200, "{path}: {got}");
        assert_eq!(got["key"], json!(etcd_key));
        assert!(got["createdIndex"].as_i64().unwrap() > 0);
        assert!(got["modifiedIndex"].as_i64().unwrap() >= got["createdIndex"].as_i64().unwrap());
    }
    // ids: from the path, as a string; consumers by username, credentials by their own id
    assert_eq!(stored(&etcd, "/apisix/routes/r1").unwrap()["id"], "r1");
    assert_eq!(
        stored(&etcd, "/apisix/consumers/jack").unwrap()["username"],
        "jack"
    );
    assert_eq!(
        stored(&etcd, "/apisix/consumers/jack/credentials/c1").unwrap()["id"],
        "c1"
    );
    assert!(
        stored(&etcd, "/apisix/routes/r1")
            .unwrap()
            .get("status")
            .is_none(),
        "no defaults stored"
    );
    // secrets are stored encrypted and shown decrypted; SSL keys are never shown
    let consumer = stored(&etcd, "/apisix/consumers/jack").unwrap();
    let sealed = consumer["plugins"]["key-auth"]["key"].as_str().unwrap();
    assert_ne!(sealed, "jack-key");
    let (_, shown) = a.call("GET", "/consumers/jack", None);
    assert_eq!(shown["value"]["plugins"]["key-auth"]["key"], "jack-key");
    let cred = stored(&etcd, "/apisix/consumers/jack/credentials/c1").unwrap();
    assert_ne!(cred["plugins"]["basic-auth"]["password"], "pw");
    let ssl = stored(&etcd, "/apisix/ssls/t1").unwrap();
    assert!(
        !ssl["key"].as_str().unwrap().starts_with("-----"),
        "ssl key stored encrypted"
    );
    let (_, shown) = a.call("GET", "/ssls/t1", None);
    assert!(shown["value"].get("key").is_none(), "{shown}");
    assert_eq!(shown["value"]["snis"], json!(["localhost"]));
    // lists: every resource of the kind, consumers without their credentials
    let (s, list) = a.call("GET", "/consumers", None);
    assert_eq!(s, 200);
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["list"][0]["key"], "/apisix/consumers/jack");
    let (_, list) = a.call("GET", "/consumers/jack/credentials", None);
    assert_eq!(list["total"], 1, "{list}");
    let (s, list) = a.call("GET", "/stream_routes", None);
    assert_eq!(s, 400, "{list}");
    assert_eq!(
        list["error_msg"],
        "stream mode is disabled, can not add stream routes"
    );
    let (s, v) = a.call("GET", "/routs", None);
    assert_eq!(
        (s, v["error_msg"].clone()),
        (404, json!("Unsupported resource type: routs"))
    );
    // the gateway took every one of them
    let g = &a.gateway;
    until_status(g, "/one", &[], 200);
    assert!(wait_until(Duration::from_secs(10), || g.status()["counts"]
        ["ssls"]
        == 1));
    // deleting in reverse order (references first)
    for (path, _) in kinds.iter().rev() {
        let (s, v) = a.call("DELETE", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v, json!({"deleted": "1", "key": format!("/apisix{path}")}));
        let (s, v) = a.call("GET", path, None);
        assert_eq!((s, v), (404, json!({"message": "Key not found"})), "{path}");
        let (s, v) = a.call("DELETE", path, None);
        assert_eq!((s, v), (404, json!({"message": "Key not found"})), "{path}");
    }
    // a consumer's credentials go with it
    a.call("PUT", "/consumers/ann", Some(json!({})));
    a.call(
        "PUT",
        "/consumers/ann/credentials/c",
        Some(json!({"plugins": {"key-auth": {"key": "ann-key"}}})),
    );
    let (s, _) = a.call("DELETE", "/consumers/ann", None);
    assert_eq!(s, 200);
    assert!(stored(&etcd, "/apisix/consumers/ann/credentials/c").is_none());
    let (s, v) = a.call("GET", "/consumers/ann/credentials", None);
    assert_eq!((s, v), (404, json!({"message": "Key not found"})));
    until_status(g, "/one", &[], 404);
    let (_, list) = a.call("GET", "/routes", None);
    assert_eq!(list, json!({"list": [], "total": 0}));
}

#[test]
fn the_gateway_serves_what_the_admin_api_writes() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let echo = Echo::start("up");
    let g = &a.gateway;
    let (s, _) = a.call(
        "PUT",
        "/upstreams/1",
        Some(json!({"nodes": {echo.addr(): 1}})),
    );
    assert_eq!(s, 201);
    let (s, v) = a.call(
        "PUT",
        "/routes/1",
        Some(json!({"uri": "/api", "upstream_id": 1, "plugins": {"key-auth": {}}})),
    );
    assert_eq!(s, 201, "{v}");
    let (s, _) = a.call(
        "PUT",
        "/consumers",
        Some(json!({"username": "jack", "plugins": {"key-auth": {"key": "k-jack"}}})),
    );
    assert_eq!(s, 201);
    until_status(g, "/api", &[("apikey", "k-jack")], 200);
    assert_eq!(g.get("/api", None).status, 401, "key-auth holds");
    // PATCH the uri: served at the new one, not at the old
    let (s, v) = a.call("PATCH", "/routes/1", Some(json!({"uri": "/v2"})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["value"]["plugins"],
        json!({"key-auth": {}}),
        "merged, not replaced"
    );
    until_status(g, "/v2", &[("apikey", "k-jack")], 200);
    assert_eq!(
        g.request("GET", "/api", &[("apikey", "k-jack")]).status,
        404
    );
    // a sub path replaces one field
    let (s, v) = a.call("PATCH", "/routes/1/plugins", Some(json!({})));
    assert_eq!(s, 200, "{v}");
    until_status(g, "/v2", &[], 200);
    // POST: a generated id, 20 digits, increasing
    let (s, p1) = a.call(
        "POST",
        "/routes",
        Some(json!({"uri": "/p1", "upstream_id": 1})),
    );
    assert_eq!(s, 201, "{p1}");
    let (_, p2) = a.call(
        "POST",
        "/routes",
        Some(json!({"uri": "/p2", "upstream_id": 1})),
    );
    let id1 = p1["value"]["id"].as_str().unwrap().to_string();
    let id2 = p2["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(id1.len(), 20, "{id1}");
    assert!(id1.bytes().all(|b| b.is_ascii_digit()));
    assert!(id2 > id1);
    assert_eq!(p1["key"], json!(format!("/apisix/routes/{id1}")));
    until_status(g, "/p2", &[], 200);
    // DELETE: no longer served
    let (s, _) = a.call("DELETE", &format!("/routes/{id2}"), None);
    assert_eq!(s, 200);
    until_status(g, "/p2", &[], 404);
}

#[test]
fn bad_bodies_and_references_are_refused_with_apisix_messages() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let refused = |method: &str, path: &str, body: &str, status: u16, has: &str| {
        let (s, v) = a.call_as(Some(ADMIN_KEY), method, path, Some(body.to_string()));
        assert_eq!(s, status, "{method} {path} {body}: {v}");
        let msg = v["error_msg"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(has), "{method} {path}: {msg:?} lacks {has:?}");
    };
    refused("PUT", "/routes/1", "{not json", 400, "invalid request body");
    refused("PUT", "/routes/1", "", 400, "missing configurations");
    refused("POST", "/routes", "", 400, "missing configurations");
    refused("PATCH", "/routes/1", "", 400, "missing new configuration");
    refused("PATCH", "/routes/1", "3", 400, "invalid configuration");
    refused(
        "PUT",
        "/routes/1?ttl=soon",
        r#"{"uri": "/"}"#,
        400,
        "invalid argument ttl: should be a number",
    );
    refused(
        "POST",
        "/routes/1",
        r#"{"uri": "/"}"#,
        400,
        "wrong route id, do not need it",
    );
    refused(
        "POST",
        "/routes",
        r#"{"id": "1", "uri": "/"}"#,
        400,
        "wrong route id, do not need it",
    );
    refused("DELETE", "/routes", "", 400, "missing route id");
    refused(
        "PUT",
        "/consumers/jack1",
        r#"{"username": "jack"}"#,
        400,
        "wrong username",
    );
    refused(
        "PUT",
        "/upstreams/1",
        r#"{"nodes": {"127.0.0.1:1": 1}, "upstream": {"create_time": 1}}"#,
        400,
        "",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"upstream": {"nodes": {"127.0.0.1:1": 1}}}"#,
        400,
        "invalid configuration",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "plugins": {"no-such-plugin": {}}}"#,
        400,
        "unknown plugin [no-such-plugin]",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "plugins": {"key-auth": {"hide_credentials": "yes"}}}"#,
        400,
        "key-auth",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "upstream_id": "nope"}"#,
        400,
        "failed to fetch upstream info by upstream id [nope], response code: 404",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "service_id": "s"}"#,
        400,
        "failed to fetch service info by service id [s]",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "plugin_config_id": "p"}"#,
        400,
        "plugin config id [p]",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"id": "2", "uri": "/"}"#,
        400,
        "wrong route id",
    );
    refused("PUT", "/routes", r#"{"uri": "/"}"#, 400, "missing route id");
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "create_time": 1}"#,
        400,
        "the property is forbidden:  create_time",
    );
    refused(
        "POST",
        "/routes",
        r#"{"uri": "/", "update_time": 1}"#,
        400,
        "the property is forbidden:  update_time",
    );
    refused(
        "PUT",
        "/routes/1",
        r#"{"uri": "/", "plugins": {"update_time": 1}}"#,
        400,
        "the property is forbidden:  plugins.update_time",
    );
    refused(
        "PUT",
        "/consumers/jack/credentials/c",
        r#"{"plugins": {"key-auth": {"key": "x"}}}"#,
        404,
        "consumer not found",
    );
    refused(
        "PUT",
        "/ssls/1",
        r#"{"cert": "nope", "key": "nope", "snis": ["a.com"]}"#,
        400,
        "invalid configuration",
    );
    refused("PUT", "/plugin_metadata/nope", r#"{}"#, 400, "nope");
    refused(
        "PUT",
        "/plugin_metadata/http-logger",
        r#"{"log_format": "$uri"}"#,
        400,
        "log_format",
    );
    refused("PUT", "/routes/1", r#"{"uri": "/"}"#, 201, "");
    // methods APISIX does not take for a kind
    for (method, path, noun) in [
        ("POST", "/consumers", "consumer"),
        ("POST", "/global_rules", "global rule"),
        ("POST", "/plugin_configs", "plugin config"),
        ("POST", "/consumer_groups", "consumer group"),
        ("PATCH", "/consumers/jack", "consumer"),
        ("PATCH", "/consumers/jack/credentials/c", "credential"),
    ] {
        let (s, v) = a.call(method, path, Some(json!({"plugins": {}})));
        assert_eq!(s, 405, "{method} {path}: {v}");
        assert_eq!(
            v["error_msg"],
            json!(format!("not supported `{method}` method for {noun}"))
        );
    }
    // a plugin runs in one global rule only
    let (s, _) = a.call(
        "PUT",
        "/global_rules/g1",
        Some(json!({"plugins": {"request-id": {}}})),
    );
    assert_eq!(s, 201);
    let (s, v) = a.call(
        "PUT",
        "/global_rules/g2",
        Some(json!({"plugins": {"request-id": {}}})),
    );
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "plugin 'request-id' already exists in global rule with id 'g1'"
    );
    let (s, _) = a.call(
        "PUT",
        "/global_rules/g1",
        Some(json!({"plugins": {"request-id": {"header_name": "X-R"}}})),
    );
    assert_eq!(s, 200, "the same rule may change its own");
    let (s, _) = a.call("DELETE", "/global_rules/g1", None);
    assert_eq!(s, 200);
    // deleting what a route still uses is refused, unless forced
    a.call(
        "PUT",
        "/upstreams/u",
        Some(json!({"nodes": {"127.0.0.1:1": 1}})),
    );
    let (s, _) = a.call(
        "PUT",
        "/routes/2",
        Some(json!({"uri": "/2", "upstream_id": "u"})),
    );
    assert_eq!(s, 201);
    let (s, v) = a.call("DELETE", "/upstreams/u", None);
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "can not delete this upstream, route [2] is still using it now"
    );
    a.call("PUT", "/services/s", Some(json!({"upstream_id": "u"})));
    a.call(
        "PUT",
        "/routes/3",
        Some(json!({"uri": "/3", "service_id": "s"})),
    );
    let (_, v) = a.call("DELETE", "/services/s", None);
    assert_eq!(
        v["error_msg"],
        "can not delete this service directly, route [3] is still using it now"
    );
    a.call("DELETE", "/routes/3", None);
    let (_, v) = a.call("DELETE", "/upstreams/u", None);
    assert_eq!(
        v["error_msg"],
        "can not delete this upstream, route [2] is still using it now"
    );
    a.call("DELETE", "/routes/2?force=yes", None);
    let (_, v) = a.call("DELETE", "/upstreams/u?force=yes", None);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("is still using it now"),
        "only force=true forces"
    );
    let (s, v) = a.call("DELETE", "/upstreams/u?force=true", None);
    assert_eq!(s, 200, "{v}");
    a.call("DELETE", "/services/s", None);
    let (s, _) = a.call("PUT", "/routes/2", Some(json!({"uri": "/2"})));
    assert_eq!(s, 201);
    // nothing was written by the refused requests
    let keys = etcd.etcdctl(&["get", "--prefix", "/apisix/", "--keys-only"]);
    let mut keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    keys.sort();
    assert_eq!(keys, ["/apisix/routes/1", "/apisix/routes/2"]);
    // an unknown path
    let (s, _) = a.call("GET", "/nothing", None);
    assert_eq!(s, 404);
}

#[test]
fn keys_roles_and_networks() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let (s, v) = a.call_as(None, "GET", "/routes", None);
    assert_eq!(
        (s, v),
        (
            401,
            json!({"error_msg": "failed to check token", "description": "missing apikey"})
        )
    );
    let (s, v) = a.call_as(Some("wrong"), "GET", "/routes", None);
    assert_eq!((s, v["description"].clone()), (401, json!("wrong apikey")));
    // the cookie, as APISIX's dashboard sends it; and the headers every answer has
    let answer = raw(a.port, &format!("GET /apisix/admin/routes HTTP/1.1\r\nHost: x\r\nCookie: a=b; x_api_key={ADMIN_KEY}\r\nConnection: close\r\n\r\n"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-api-version: v3"), "{answer}");
    assert!(lower.contains("access-control-allow-origin: *"), "{answer}");
    assert!(lower.contains("content-type: application/json"), "{answer}");
    // CORS preflight before the key; HEAD /apisix/admin without one
    let answer = raw(
        a.port,
        "OPTIONS /apisix/admin/routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("access-control-allow-methods: post, get, put, options, delete, patch"),
        "{answer}"
    );
    let answer = raw(
        a.port,
        "HEAD /apisix/admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (s, _) = a.call_as(None, "GET", &format!("/routes?api_key={ADMIN_KEY}"), None);
    assert_eq!(s, 200, "api_key in the query");
    let (s, _) = a.call_as(Some(VIEWER_KEY), "GET", "/routes", None);
    assert_eq!(s, 200);
    let (s, v) = a.call_as(
        Some(VIEWER_KEY),
        "PUT",
        "/routes/1",
        Some(r#"{"uri": "/"}"#.into()),
    );
    assert_eq!(
        (s, v["description"].clone()),
        (401, json!("invalid method for role viewer"))
    );
    assert!(stored(&etcd, "/apisix/routes/1").is_none());
    // bodies are capped
    let big = format!(r#"{{"uri": "/", "desc": "{}"}}"#, "x".repeat(2 << 20));
    let (s, v) = a.call_as(Some(ADMIN_KEY), "PUT", "/routes/1", Some(big));
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .contains("is greater than the maximum size 1572864 allowed"),
        "{v}"
    );
    // keys never reach the log
    assert!(!a.gateway.log().contains(ADMIN_KEY));
    // a client outside admin.allow is refused before its key is looked at
    let closed = Admin::start_with(&etcd, "  allow: [\"10.0.0.0/8\"]\n");
    let (s, _) = closed.call("GET", "/routes", None);
    assert_eq!(s, 403);
}

#[test]
fn concurrent_patches_lose_nothing() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let (s, _) = a.call("PUT", "/routes/1", Some(json!({"uri": "/", "labels": {}})));
    assert_eq!(s, 201);
    let port = a.port;
    let writers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"labels": {format!("l{i}"): "x"}}).to_string();
                harness::http(
                    port,
                    "PATCH",
                    "/apisix/admin/routes/1",
                    &[("X-API-KEY", ADMIN_KEY)],
                    &body,
                )
                .map(|(s, _)| s)
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), Some(200));
    }
    let labels = stored(&etcd, "/apisix/routes/1").unwrap()["labels"].clone();
    assert_eq!(labels.as_object().unwrap().len(), 8, "{labels}");
}

#[test]
fn ttl_attaches_a_lease() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let echo = Echo::start("up");
    let (s, v) = a.call(
        "PUT",
        "/routes/t?ttl=2",
        Some(json!({"uri": "/t", "upstream": {"nodes": {echo.addr(): 1}}})),
    );
    assert_eq!(s, 201, "{v}");
    until_status(&a.gateway, "/t", &[], 200);
    // the lease ends, etcd deletes the key, the gateway stops serving it
    until_status(&a.gateway, "/t", &[], 404);
    assert!(stored(&etcd, "/apisix/routes/t").is_none());
    let (s, _) = a.call("PUT", "/routes/t?ttl=-1", Some(json!({"uri": "/t"})));
    assert_eq!(s, 400);
}

#[test]
fn lists_page_and_filter() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    for i in 1..=25 {
        let name = if i % 2 == 0 {
            format!("even-{i}")
        } else {
            format!("odd-{i}")
        };
        let labels = if i <= 5 {
            json!({"tier": "gold"})
        } else {
            json!({"env": "dev"})
        };
        let (s, _) = a.call(
            "PUT",
            &format!("/routes/{i}"),
            Some(json!({"uri": format!("/r/{i}"), "name": name, "labels": labels})),
        );
        assert_eq!(s, 201);
    }
    let (_, all) = a.call("GET", "/routes", None);
    assert_eq!(all["total"], 25);
    // key order without paging, oldest first with it
    assert_eq!(all["list"][1]["value"]["id"], "10");
    let (_, page) = a.call("GET", "/routes?page=1&page_size=10", None);
    assert_eq!(page["list"][1]["value"]["id"], "2");
    let (s, v) = a.call("GET", "/routes?page=1&page_size=5", None);
    assert_eq!((s, v), (400, json!("page_size must be between 10 and 500")));
    let (_, page) = a.call("GET", "/routes?page=3&page_size=10", None);
    assert_eq!(page["total"], 25);
    assert_eq!(page["list"].as_array().unwrap().len(), 5);
    assert_eq!(page["list"][0]["value"]["id"], "21");
    let (_, even) = a.call("GET", "/routes?name=even", None);
    assert_eq!(even["total"], 12);
    let (_, gold) = a.call("GET", "/routes?label=tier", None);
    assert_eq!(gold["total"], 5);
    let (_, uri) = a.call("GET", "/routes?uri=^/r/1", None);
    assert_eq!(uri["total"], 11, "/r/1 and /r/10../r/19");
}

#[test]
fn an_open_admin_api_is_refused_at_start() {
    let dir = harness::TempDir::new("admin-conf");
    let conf = dir.path().join("config.yaml");
    let write = |admin: &str| {
        std::fs::write(
            &conf,
            format!("proxy:\n  listen: [\"127.0.0.1:1\"]\nconfig:\n  provider: etcd\netcd:\n  endpoints: [\"http://127.0.0.1:1\"]\n{admin}"),
        )
        .unwrap();
    };
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    write("admin:\n  listen: \"127.0.0.1:9180\"\n");
    let (ok, err) = check();
    assert!(!ok && err.contains("admin.keys"), "{err}");
    write("admin:\n  listen: \"127.0.0.1:9180\"\n  keys: [{name: a, key: \"\", role: admin}]\n");
    let (ok, err) = check();
    assert!(!ok && err.contains("key is empty"), "{err}");
    write("admin:\n  listen: \"127.0.0.1:9180\"\n  keys: [{name: a, key: k, role: root}]\n");
    let (ok, err) = check();
    assert!(!ok && err.contains("role"), "{err}");
}

#[test]
fn an_auth_key_another_consumer_holds_is_refused() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let (s, _) = a.call(
        "PUT",
        "/consumers",
        Some(json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}})),
    );
    assert_eq!(s, 201);
    let (s, _) = a.call(
        "PUT",
        "/consumers/jack/credentials/c1",
        Some(json!({"plugins": {"basic-auth": {"username": "jb", "password": "p"}}})),
    );
    assert_eq!(s, 201);
    // the check reads the gateway's loaded consumers, as APISIX's does
    assert!(wait_until(Duration::from_secs(10), || {
        a.gateway.status()["counts"]["credentials"] == 1
    }));
    let (s, v) = a.call(
        "PUT",
        "/consumers",
        Some(json!({"username": "rose", "plugins": {"key-auth": {"key": "k1"}}})),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["error_msg"],
        "duplicate key of plugin key-auth found with consumer: jack"
    );
    let (s, _) = a.call("PUT", "/consumers", Some(json!({"username": "rose"})));
    assert_eq!(s, 201);
    let (s, v) = a.call(
        "PUT",
        "/consumers/rose/credentials/r1",
        Some(json!({"plugins": {"basic-auth": {"username": "jb", "password": "x"}}})),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["error_msg"],
        "duplicate username of plugin basic-auth found with credential: c1 of consumer: jack"
    );
    // a consumer or credential does not conflict with itself
    let (s, v) = a.call(
        "PUT",
        "/consumers",
        Some(json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}, "desc": "v2"})),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = a.call(
        "PUT",
        "/consumers/jack/credentials/c1",
        Some(json!({"plugins": {"basic-auth": {"username": "jb", "password": "q"}}})),
    );
    assert_eq!(s, 200, "{v}");
}

#[test]
fn post_and_patch_on_every_kind_that_takes_them() {
    let etcd = EtcdMember::start();
    let a = Admin::start(&etcd);
    let echo = Echo::start("up");
    let pem = harness::Certs::generate();
    let cert = std::fs::read_to_string(pem.path("server.pem")).unwrap();
    let key = std::fs::read_to_string(pem.path("server.key")).unwrap();
    // POST: routes, services, upstreams and ssls (APISIX's), each with a generated id.
    let posts: Vec<(&str, Value)> = vec![
        ("/upstreams", json!({"nodes": {echo.addr(): 1}})),
        ("/services", json!({"name": "posted"})),
        (
            "/routes",
            json!({"uri": "/posted", "upstream": {"nodes": {echo.addr(): 1}}}),
        ),
        (
            "/ssls",
            json!({"cert": cert, "key": key, "snis": ["posted.test"]}),
        ),
    ];
    for (dir, body) in &posts {
        let (s, v) = a.call("POST", dir, Some(body.clone()));
        assert_eq!(s, 201, "{dir}: {v}");
        let key = v["key"].as_str().unwrap().to_string();
        let id = key.rsplit('/').next().unwrap().to_string();
        assert_eq!(id.len(), 20, "{key}");
        assert_eq!(stored(&etcd, &key).unwrap()["id"], json!(id), "{dir}");
        let (s, got) = a.call("GET", &format!("{dir}/{id}"), None);
        assert_eq!(s, 200, "{dir}: {got}");
        let (s, _) = a.call("DELETE", &format!("{dir}/{id}"), None);
        assert_eq!(s, 200, "{dir}");
    }
    // PATCH on every kind that takes it: a merged field, create_time kept, update_time set.
    let kinds: Vec<(&str, Value)> = vec![
        ("/upstreams/u1", json!({"nodes": {echo.addr(): 1}})),
        ("/services/s1", json!({"upstream_id": "u1"})),
        (
            "/plugin_configs/pc1",
            json!({"plugins": {"request-id": {}}}),
        ),
        ("/routes/r1", json!({"uri": "/p", "service_id": "s1"})),
        (
            "/consumer_groups/cg1",
            json!({"plugins": {"request-id": {}}}),
        ),
        (
            "/ssls/t1",
            json!({"cert": cert, "key": key, "snis": ["localhost"]}),
        ),
    ];
    for (path, body) in &kinds {
        let (s, v) = a.call("PUT", path, Some(body.clone()));
        assert_eq!(s, 201, "{path}: {v}");
        let created = v["value"]["create_time"].clone();
        let (s, v) = a.call("PATCH", path, Some(json!({"labels": {"patched": "yes"}})));
        assert_eq!(s, 200, "{path}: {v}");
        let kept = stored(&etcd, &format!("/apisix{path}")).unwrap();
        assert_eq!(kept["labels"], json!({"patched": "yes"}), "{path}: {kept}");
        assert_eq!(kept["create_time"], created, "{path}");
        for (k, want) in body.as_object().unwrap() {
            if k != "key" {
                assert_eq!(&kept[k], want, "{path}: {k} kept through the PATCH");
            }
        }
        // a sub-path PATCH sets one field
        let (s, v) = a.call("PATCH", &format!("{path}/desc"), Some(json!("one field")));
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(
            stored(&etcd, &format!("/apisix{path}")).unwrap()["desc"],
            "one field",
            "{path}"
        );
    }
    // global rules have no labels or desc: their plugins are patched
    let (s, _) = a.call(
        "PUT",
        "/global_rules/g1",
        Some(json!({"plugins": {"request-id": {}}})),
    );
    assert_eq!(s, 201);
    let (s, v) = a.call(
        "PATCH",
        "/global_rules/g1/plugins",
        Some(json!({"request-id": {"header_name": "X-P"}})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        stored(&etcd, "/apisix/global_rules/g1").unwrap()["plugins"]["request-id"]["header_name"],
        "X-P"
    );
    // the gateway serves the patched route
    until_status(&a.gateway, "/p", &[], 200);
    let (s, v) = a.call("PATCH", "/routes/r1", Some(json!({"uri": "/q"})));
    assert_eq!(s, 200, "{v}");
    until_status(&a.gateway, "/q", &[], 200);
    until_status(&a.gateway, "/p", &[], 404);
}

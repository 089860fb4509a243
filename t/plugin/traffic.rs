//! Rewrites, redirects, CORS, request ids, faults, mocks and limits, against a real upstream.

use serde_json::json;

use crate::harness::gateway::Echo;
use crate::start;

#[test]
fn proxy_rewrite_changes_what_the_upstream_gets() {
    let echo = Echo::start("pr");
    let g = start(
        &echo,
        vec![
            json!({"id": "u", "uri": "/hello", "plugins": {"proxy-rewrite": {
                "uri": "/plugin_proxy_rewrite", "host": "apisix.iresty.com", "method": "POST"}}}),
            json!({"id": "q", "uri": "/args", "plugins": {"proxy-rewrite": {"uri": "/new?q=apisix"}}}),
            json!({"id": "re", "uri": "/test/*", "plugins": {"proxy-rewrite": {
                "regex_uri": ["^/test/(.*)/(.*)/(.*)", "/$1_$2_$3"],
                "headers": {"add": {"X-Captures": "$1/$2/$3"}, "set": {"X-Api-Version": "v2", "X-Empty": ""}, "remove": ["X-Drop"]}}}}),
            json!({"id": "var", "uri": "/var", "plugins": {"proxy-rewrite": {"uri": "/v/$arg_name", "headers": {"X-Addr": "$remote_addr"}}}}),
        ],
        &[],
    );
    let r = g.request("GET", "/hello", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.echo();
    assert_eq!(e["path"], "/plugin_proxy_rewrite");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["headers"]["host"], "apisix.iresty.com");
    assert_eq!(e["headers"]["x-forwarded-host"], "localhost");

    let r = g.request("GET", "/args?a=iresty", &[]);
    assert_eq!(r.echo()["path"], "/new?q=apisix&a=iresty");

    let r = g.request(
        "GET",
        "/test/plugin/proxy/rewrite",
        &[("X-Api-Version", "v1"), ("X-Empty", "x"), ("X-Drop", "1")],
    );
    let e = r.echo();
    assert_eq!(e["path"], "/plugin_proxy_rewrite");
    assert_eq!(e["headers"]["x-captures"], "plugin/proxy/rewrite");
    assert_eq!(e["headers"]["x-api-version"], "v2");
    assert!(e["headers"].get("x-empty").is_none() && e["headers"].get("x-drop").is_none());
    // No match: the path is left alone and the request still goes upstream.
    let r = g.request("GET", "/test/short", &[]);
    assert_eq!(r.echo()["path"], "/test/short");

    let r = g.request("GET", "/var?name=jack", &[]);
    assert_eq!(r.echo()["path"], "/v/jack?name=jack");
    assert_eq!(r.echo()["headers"]["x-addr"], "127.0.0.1");
}

#[test]
fn response_rewrite_redirect_and_request_id() {
    let echo = Echo::start("rr");
    let g = start(
        &echo,
        vec![
            json!({"id": "body", "uri": "/body", "plugins": {"response-rewrite": {
                "status_code": 201, "body": "new body\n",
                "headers": {"add": ["Cache-Control: no-cache"], "set": {"X-Server-Id": 3}, "remove": ["X-Upstream"]}}}}),
            json!({"id": "b64", "uri": "/b64", "plugins": {"response-rewrite": {"body": "SGVsbG8K", "body_base64": true}}}),
            json!({"id": "when", "uri": "/when", "plugins": {"response-rewrite": {"vars": [["status", "==", 500]], "status_code": 403}}}),
            json!({"id": "filters", "uri": "/filters", "plugins": {"response-rewrite": {"filters": [{"regex": "filters", "replace": "FILTERS", "scope": "global"}]}}}),
            json!({"id": "redir", "uri": "/redir", "plugins": {"redirect": {"uri": "$uri/test/a${arg_name}c", "ret_code": 301}}}),
            json!({"id": "re", "uri": "/re/*", "plugins": {"redirect": {"regex_uri": ["^/re/x/(.*)", "http://test.com/${1}"], "append_query_string": true}}}),
            json!({"id": "https", "uri": "/https", "plugins": {"redirect": {"http_to_https": true}}}),
            json!({"id": "rid", "uri": "/rid", "plugins": {"request-id": {}}}),
            json!({"id": "rid2", "uri": "/rid2", "plugins": {"request-id": {"header_name": "X-Trace", "include_in_response": false, "algorithm": "nanoid"}}}),
        ],
        &[],
    );
    let r = g.request("GET", "/body", &[]);
    assert_eq!((r.status, r.body.as_str()), (201, "new body\n"));
    assert_eq!(r.headers["cache-control"], "no-cache");
    assert_eq!(r.headers["x-server-id"], "3");
    let r = g.request("GET", "/b64", &[]);
    assert_eq!(r.body, "Hello\n");
    assert_eq!(g.request("GET", "/when", &[]).status, 200);
    let r = g.request("GET", "/filters", &[]);
    assert_eq!(r.echo()["path"], "/FILTERS", "{}", r.body);

    let r = g.request("GET", "/redir?name=json", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "/redir/test/ajsonc");
    assert!(r.body.contains("301 Moved Permanently"), "{}", r.body);
    let r = g.request("GET", "/re/x/1?o=apache", &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "http://test.com/1?o=apache");
    // No match: proxied as usual.
    assert_eq!(g.request("GET", "/re/y", &[]).status, 200);
    let r = g.request("POST", "/https", &[("Host", "foo.com")]);
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://foo.com/https");

    let r = g.request("GET", "/rid", &[]);
    let id = r.headers["x-request-id"].clone();
    assert_eq!(id.len(), 36);
    assert_eq!(r.echo()["headers"]["x-request-id"], id.as_str());
    let r = g.request("GET", "/rid", &[("X-Request-Id", "123")]);
    assert_eq!(r.headers["x-request-id"], "123");
    let r = g.request("GET", "/rid2", &[]);
    assert!(!r.headers.contains_key("x-trace"));
    assert_eq!(r.echo()["headers"]["x-trace"].as_str().unwrap().len(), 21);
}

#[test]
fn cors_answers_preflights_and_marks_every_answer() {
    let echo = Echo::start("cors");
    let g = start(
        &echo,
        vec![
            json!({"id": "any", "uri": "/any", "plugins": {"cors": {}}}),
            json!({"id": "list", "uri": "/list", "plugins": {"cors": {
                "allow_origins": "http://sub.domain.com,http://sub2.domain.com",
                "allow_methods": "GET,POST", "allow_headers": "headr1,headr2",
                "expose_headers": "ex-headr1", "max_age": 50, "allow_credential": true}}}),
            json!({"id": "regex", "uri": "/regex", "plugins": {"cors": {
                "allow_origins_by_regex": [".*\\.test\\.com$"], "allow_methods": "**", "allow_headers": "**"}}}),
            json!({"id": "auth", "uri": "/auth", "plugins": {"cors": {}, "key-auth": {}}}),
        ],
        &[],
    );
    let r = g.request("GET", "/any", &[]);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.headers["access-control-allow-methods"], "*");
    assert_eq!(r.headers["access-control-max-age"], "5");
    assert!(!r.headers.contains_key("vary"));
    let r = g.request("OPTIONS", "/any", &[("Origin", "http://x.com")]);
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(r.headers["access-control-allow-origin"], "*");

    let r = g.request("GET", "/list", &[("Origin", "http://sub2.domain.com")]);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "http://sub2.domain.com"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["access-control-expose-headers"], "ex-headr1");
    assert_eq!(r.headers["vary"], "Origin");
    let r = g.request("GET", "/list", &[("Origin", "http://sub3.domain.com")]);
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    assert_eq!(r.headers["vary"], "Origin");

    let r = g.request(
        "GET",
        "/regex",
        &[
            ("Origin", "http://a.test.com"),
            ("Access-Control-Request-Headers", "h1,h2"),
        ],
    );
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "http://a.test.com"
    );
    assert_eq!(r.headers["access-control-allow-headers"], "h1,h2");
    assert_eq!(
        r.headers["access-control-allow-methods"],
        "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE"
    );
    let r = g.request("GET", "/regex", &[("Origin", "http://a.test2.com")]);
    assert!(!r.headers.contains_key("access-control-allow-origin"));

    // A refusal carries the CORS headers; a preflight needs no key.
    let r = g.request("GET", "/auth", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(g.request("OPTIONS", "/auth", &[]).status, 200);
}

#[test]
fn faults_mocks_limits_and_restrictions() {
    let echo = Echo::start("misc");
    let g = start(
        &echo,
        vec![
            json!({"id": "abort", "uri": "/abort", "plugins": {"fault-injection": {"abort": {
                "http_status": 405, "body": "client addr: $remote_addr\n", "headers": {"h1": "v1", "h3": "$uri"}}}}}),
            json!({"id": "delay", "uri": "/delay", "plugins": {"fault-injection": {"delay": {"duration": 0.3}}}}),
            json!({"id": "vars", "uri": "/vars", "plugins": {"fault-injection": {"abort": {"http_status": 403,
                "vars": [[["arg_name", "==", "jack"]], [["http_apikey", "==", "api-key"]]]}}}}),
            json!({"id": "mock", "uri": "/mock", "plugins": {"mocking": {"response_example": "remote_addr:$remote_addr", "response_headers": {"X-Route-Id": "$route_id"}}}}),
            json!({"id": "mock2", "uri": "/mock2", "plugins": {"mocking": {"content_type": "application/json", "response_status": 201,
                "response_schema": {"type": "object", "properties": {"field1": {"type": "string", "example": "hello"}}}}}}),
            json!({"id": "cc", "uri": "/cc", "plugins": {"client-control": {"max_body_size": 5}}}),
            json!({"id": "ua", "uri": "/ua", "plugins": {"ua-restriction": {"denylist": ["curl/.*"]}}}),
            json!({"id": "ref", "uri": "/ref", "plugins": {"referer-restriction": {"whitelist": ["*.xx.com"], "message": "Your referer host is deny"}}}),
            json!({"id": "ip", "uri": "/ip", "plugins": {"ip-restriction": {"whitelist": ["10.0.0.0/8", "::1"], "message": "no"}}}),
            json!({"id": "real", "uri": "/real", "plugins": {
                "real-ip": {"source": "http_x_forwarded_for", "trusted_addresses": ["127.0.0.0/8"]},
                "ip-restriction": {"whitelist": ["1.1.1.1"]}}}),
        ],
        &[],
    );
    let r = g.request("GET", "/abort", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (405, "client addr: 127.0.0.1\n")
    );
    assert_eq!(r.headers["h1"], "v1");
    assert_eq!(r.headers["h3"], "/abort");
    let started = std::time::Instant::now();
    assert_eq!(g.request("GET", "/delay", &[]).status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(g.request("GET", "/vars?name=jack", &[]).status, 403);
    assert_eq!(
        g.request("GET", "/vars", &[("apikey", "api-key")]).status,
        403
    );
    assert_eq!(g.request("GET", "/vars?name=allen", &[]).status, 200);

    let r = g.request("GET", "/mock", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "remote_addr:127.0.0.1"));
    assert_eq!(r.headers["x-route-id"], "mock");
    assert!(r.headers["x-mock-by"].starts_with("Portico/"));
    let r = g.request("GET", "/mock2", &[]);
    assert_eq!((r.status, r.body.as_str()), (201, "{\"field1\":\"hello\"}"));
    assert_eq!(r.headers["content-type"], "application/json");

    let r = crate::harness::gateway::request(g.port, "POST", "/cc", &[], "123456");
    assert_eq!(r.status, 413);
    assert!(
        r.body.contains("413 Request Entity Too Large"),
        "{}",
        r.body
    );
    let r = crate::harness::gateway::request(g.port, "POST", "/cc", &[], "12345");
    assert_eq!(r.status, 200);

    let r = g.request("GET", "/ua", &[("User-Agent", "curl/8.0")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"Not allowed\"}\n")
    );
    assert_eq!(
        g.request("GET", "/ua", &[("User-Agent", "Mozilla")]).status,
        200
    );
    assert_eq!(g.request("GET", "/ua", &[]).status, 403);

    let r = g.request("GET", "/ref", &[("Referer", "http://xx.com/x")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"Your referer host is deny\"}\n")
    );
    assert_eq!(
        g.request("GET", "/ref", &[("Referer", "https://www.xx.com/")])
            .status,
        200
    );

    let r = g.request("GET", "/ip", &[]);
    assert_eq!((r.status, r.body.as_str()), (403, "{\"message\":\"no\"}\n"));
    assert_eq!(g.request("GET", "/real", &[]).status, 403);
    let r = g.request("GET", "/real", &[("X-Forwarded-For", "9.9.9.9, 1.1.1.1")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo()["headers"]["x-real-ip"], "1.1.1.1");
}

#[test]
fn csrf_needs_the_cookie_it_handed_out() {
    let echo = Echo::start("csrf");
    let g = start(
        &echo,
        // The key as APISIX's Admin API stores it: "the-key", encrypted with its keyring.
        vec![
            json!({"id": "c", "uri": "/c", "plugins": {"csrf": {"key": "JCX7x1qN5e9kHt0GuJfWpw=="}}}),
        ],
        &[],
    );
    let r = g.request("GET", "/c", &[]);
    assert_eq!(r.status, 200);
    let cookie = r.headers["set-cookie"].clone();
    assert!(cookie.contains(";path=/;SameSite=Lax;Expires="), "{cookie}");
    let token = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap();
    let r = g.request("POST", "/c", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"error_msg\":\"no csrf token in headers\"}\n")
    );
    assert!(
        r.headers.contains_key("set-cookie"),
        "a new cookie on refusals too"
    );
    let r = g.request("POST", "/c", &[("apisix-csrf-token", &token)]);
    assert_eq!(r.body, "{\"error_msg\":\"no csrf cookie\"}\n");
    let with_cookie = format!("apisix-csrf-token={token}");
    let r = g.request(
        "POST",
        "/c",
        &[("apisix-csrf-token", "other"), ("Cookie", &with_cookie)],
    );
    assert_eq!(r.body, "{\"error_msg\":\"csrf token mismatch\"}\n");
    let r = g.request(
        "POST",
        "/c",
        &[("apisix-csrf-token", &token), ("Cookie", &with_cookie)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Signed with another key: refused.
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        r#"{"random":0.5,"expires":1700000000,"sign":"00"}"#,
    );
    let r = g.request(
        "POST",
        "/c",
        &[
            ("apisix-csrf-token", &forged),
            ("Cookie", &format!("apisix-csrf-token={forged}")),
        ],
    );
    assert_eq!(
        r.body,
        "{\"error_msg\":\"Failed to verify the csrf token signature\"}\n"
    );
}

#[test]
fn traffic_split_sends_weighted_shares_and_picks_by_vars() {
    let stable = Echo::start("stable");
    let canary = Echo::start("canary");
    let inline = Echo::start("inline");
    let g = start(
        &stable,
        vec![
            json!({"id": "w", "uri": "/w", "upstream_id": "stable", "plugins": {"traffic-split": {"rules": [
                {"weighted_upstreams": [{"upstream_id": "canary", "weight": 1}, {"weight": 3}]}]}}}),
            json!({"id": "v", "uri": "/v", "upstream_id": "stable", "plugins": {"traffic-split": {"rules": [
                {"match": [{"vars": [["http_x_canary", "==", "1"]]}],
                 "weighted_upstreams": [{"upstream": {"nodes": {inline.addr(): 1}}}]}]}}}),
            json!({"id": "bad", "uri": "/bad", "upstream_id": "stable", "plugins": {"traffic-split": {"rules": [
                {"weighted_upstreams": [{"upstream": {"nodes": {"127.0.0.1:0": 1}}}]}]}}}),
            json!({"id": "gone", "uri": "/gone", "upstream_id": "stable", "plugins": {"traffic-split": {"rules": [
                {"weighted_upstreams": [{"upstream_id": "nope"}]}]}}}),
        ],
        &[(
            "upstreams",
            vec![
                json!({"id": "stable", "nodes": {stable.addr(): 1}}),
                json!({"id": "canary", "nodes": {canary.addr(): 1}}),
            ],
        )],
    );
    let servers: Vec<String> = (0..8)
        .map(|_| {
            g.request("GET", "/w", &[]).echo()["server"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        servers.iter().filter(|s| *s == "canary").count(),
        2,
        "{servers:?}"
    );
    assert_eq!(
        servers.iter().filter(|s| *s == "stable").count(),
        6,
        "{servers:?}"
    );
    assert_eq!(g.request("GET", "/v", &[]).echo()["server"], "stable");
    assert_eq!(
        g.request("GET", "/v", &[("X-Canary", "1")]).echo()["server"],
        "inline"
    );
    // Fail closed: a split to no valid upstream is not served.
    assert_eq!(g.get("/bad", None).status, 404);
    assert!(
        g.status()["rejected"].to_string().contains("traffic-split"),
        "{}",
        g.status()
    );
    assert_eq!(g.get("/gone", None).status, 500);
}

#[test]
fn proxy_mirror_copies_requests_with_their_bodies() {
    let real = Echo::start("real");
    let copy = Echo::start("copy");
    let g = start(
        &real,
        vec![
            json!({"id": "m", "uri": "/m/*", "plugins": {"proxy-mirror": {"host": format!("http://{}", copy.addr())}}}),
            json!({"id": "p", "uri": "/p", "plugins": {"proxy-mirror": {"host": format!("http://{}", copy.addr()), "path": "/mirrored"}}}),
            json!({"id": "dead", "uri": "/dead", "plugins": {"proxy-mirror": {"host": "http://127.0.0.1:1"}}}),
            json!({"id": "deny", "uri": "/deny", "plugins": {
                "proxy-mirror": {"host": format!("http://{}", copy.addr())},
                "ip-restriction": {"blacklist": ["127.0.0.0/8"]}}}),
        ],
        &[],
    );
    // A request the gateway refuses is never copied.
    assert_eq!(g.request("GET", "/deny", &[]).status, 403);
    let r = crate::harness::gateway::request(g.port, "POST", "/m/x?a=1", &[], "payload");
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["server"], "real");
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(5),
        || !copy.seen().is_empty()
    ));
    let seen = copy.seen();
    assert_eq!(seen[0]["method"], "POST");
    assert_eq!(seen[0]["path"], "/m/x?a=1");
    assert_eq!(seen[0]["body"], "payload");
    assert_eq!(g.request("GET", "/p?q=2", &[]).status, 200);
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(5),
        || copy.seen().iter().any(|s| s["path"] == "/mirrored?q=2")
    ));
    assert!(!copy.seen().iter().any(|s| s["path"] == "/deny"));
    // A dead mirror costs the real request nothing.
    assert_eq!(g.request("GET", "/dead", &[]).status, 200);
    assert!(
        g.log().contains("proxy-mirror")
            || crate::harness::wait_until(std::time::Duration::from_secs(5), || g
                .log()
                .contains("proxy-mirror"))
    );
}

#[test]
fn response_rewrite_in_a_global_rule_and_a_route_keep_apart() {
    let echo = Echo::start("rr2");
    let g = start(
        &echo,
        vec![json!({"id": "r", "uri": "/r", "plugins": {"response-rewrite": {"body": "R"}}})],
        &[(
            "global_rules",
            vec![
                json!({"id": "g", "plugins": {"response-rewrite": {"headers": {"set": {"X-G": "1"}}, "vars": [["status", "==", 200]]}}}),
            ],
        )],
    );
    let r = g.request("GET", "/r", &[("Accept-Encoding", "gzip")]);
    assert_eq!((r.status, r.body.as_str()), (200, "R"));
    assert_eq!(r.headers["x-g"], "1");
}

#[test]
fn limit_count_local_windows_groups_and_consumers() {
    let echo = Echo::start("lc");
    let g = start(
        &echo,
        vec![
            json!({"id": "one", "uri": "/one", "plugins": {"limit-count": {"count": 2, "time_window": 60}}}),
            json!({"id": "msg", "uri": "/msg", "plugins": {"limit-count": {"count": 1, "time_window": 60, "rejected_code": 429, "rejected_msg": "slow down", "key_type": "var", "key": "http_x_user"}}}),
            json!({"id": "ga", "uri": "/ga", "plugins": {"limit-count": {"count": 2, "time_window": 60, "group": "shared"}}}),
            json!({"id": "gb", "uri": "/gb", "plugins": {"limit-count": {"count": 2, "time_window": 60, "group": "shared"}}}),
            json!({"id": "ca", "uri": "/ca", "plugins": {"key-auth": {}}}),
            json!({"id": "cb", "uri": "/cb", "plugins": {"key-auth": {}}}),
            json!({"id": "sentinel", "uri": "/sentinel", "plugins": {"limit-count": {"count": 1, "time_window": 60, "policy": "redis-sentinel", "redis_sentinels": [{"host": "127.0.0.1", "port": 26379}], "redis_master_name": "m"}}}),
        ],
        &[(
            "consumers",
            vec![
                json!({"username": "jack", "plugins": {"key-auth": {"key": "k"}, "limit-count": {"count": 1, "time_window": 60, "key_type": "constant", "key": "jack"}}}),
            ],
        )],
    );
    let r = g.request("GET", "/one", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-ratelimit-limit"], "2");
    assert_eq!(r.headers["x-ratelimit-remaining"], "1");
    let reset: f64 = r.headers["x-ratelimit-reset"].parse().unwrap();
    assert!(reset > 0.0 && reset <= 60.0, "{reset}");
    assert_eq!(
        g.request("GET", "/one", &[]).headers["x-ratelimit-remaining"],
        "0"
    );
    let r = g.request("GET", "/one", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    // Keyed by a header; a refusal with APISIX's error body.
    assert_eq!(g.request("GET", "/msg", &[("X-User", "a")]).status, 200);
    let r = g.request("GET", "/msg", &[("X-User", "a")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (429, "{\"error_msg\":\"slow down\"}\n")
    );
    assert_eq!(g.request("GET", "/msg", &[("X-User", "b")]).status, 200);
    // A group is one counter for its routes.
    assert_eq!(g.request("GET", "/ga", &[]).status, 200);
    assert_eq!(g.request("GET", "/gb", &[]).status, 200);
    assert_eq!(g.request("GET", "/ga", &[]).status, 503);
    // A consumer's limit applies to that consumer across routes.
    assert_eq!(g.request("GET", "/ca", &[("apikey", "k")]).status, 200);
    assert_eq!(g.request("GET", "/cb", &[("apikey", "k")]).status, 503);
    // Redis Sentinel is not there yet: that route is not served.
    assert_eq!(g.get("/sentinel", None).status, 404);
    assert!(g.status()["rejected"]
        .to_string()
        .contains("redis-sentinel"));
}

#[test]
fn limit_req_refuses_past_rate_and_burst() {
    let echo = Echo::start("lr");
    let g = start(
        &echo,
        vec![
            json!({"id": "r", "uri": "/r", "plugins": {"limit-req": {"rate": 1, "burst": 0, "key": "remote_addr", "nodelay": true, "rejected_code": 429, "rejected_msg": "too fast"}}}),
            json!({"id": "d", "uri": "/d", "plugins": {"limit-req": {"rate": 4, "burst": 1, "key": "remote_addr"}}}),
        ],
        &[],
    );
    assert_eq!(g.request("GET", "/r", &[]).status, 200);
    let r = g.request("GET", "/r", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (429, "{\"error_msg\":\"too fast\"}\n")
    );
    // Within the burst a request waits for its turn (a quarter second at 4 a second).
    assert_eq!(g.request("GET", "/d", &[]).status, 200);
    let started = std::time::Instant::now();
    assert_eq!(g.request("GET", "/d", &[]).status, 200);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn limit_conn_counts_requests_under_way_until_they_end() {
    let slow = Echo::start_slow("slow", std::time::Duration::from_millis(800));
    let g = start(
        &slow,
        vec![
            json!({"id": "c", "uri": "/c", "plugins": {"limit-conn": {"conn": 1, "burst": 0, "default_conn_delay": 0.1, "key": "remote_addr"}}}),
        ],
        &[],
    );
    let port = g.port;
    let first = std::thread::spawn(move || {
        crate::harness::gateway::request(port, "GET", "/c", &[], "").status
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        g.request("GET", "/c", &[]).status,
        503,
        "one under way already"
    );
    assert_eq!(first.join().unwrap(), 200);
    // Its place was given back (when its context ends, a moment after the client has the
    // answer, as APISIX's log phase).
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(5),
        || g.request("GET", "/c", &[]).status == 200
    ));
    // A client that goes away gives its place back too.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(5),
        || g.request("GET", "/c", &[]).status == 200
    ));
}

#[test]
fn api_breaker_opens_after_unhealthy_answers() {
    let echo = Echo::start("brk");
    let dead = crate::harness::free_port();
    let g = start(
        &echo,
        vec![
            json!({"id": "b", "uri": "/b", "upstream": {"nodes": {format!("127.0.0.1:{dead}"): 1}, "retries": 0},
            "plugins": {"api-breaker": {"break_response_code": 599, "break_response_body": "breaker open",
                "break_response_headers": [{"key": "X-Breaker", "value": "$uri"}],
                "unhealthy": {"http_statuses": [502], "failures": 2}}}}),
        ],
        &[],
    );
    assert_eq!(g.request("GET", "/b", &[]).status, 502);
    assert_eq!(g.request("GET", "/b", &[]).status, 502);
    let r = g.request("GET", "/b", &[]);
    assert_eq!((r.status, r.body.as_str()), (599, "breaker open"));
    assert_eq!(r.headers["x-breaker"], "/b");
}

#[test]
fn limit_counters_survive_unrelated_edits_and_reset_on_a_new_setting() {
    let echo = Echo::start("keep");
    let route = |count: u64| json!({"id": "l", "uri": "/l", "plugins": {"limit-count": {"count": count, "time_window": 60}}});
    let other = json!({"id": "o", "uri": "/o"});
    let svc = vec![
        json!({"id": "s", "upstream": {"nodes": {echo.addr(): 1}}, "plugins": {"limit-count": {"count": 1, "time_window": 60}}}),
    ];
    let with_service = vec![
        json!({"id": "s1", "uri": "/s1", "service_id": "s"}),
        json!({"id": "s2", "uri": "/s2", "service_id": "s"}),
    ];
    let file =
        |routes: Vec<serde_json::Value>| crate::yaml(&echo, routes, &[("services", svc.clone())]);
    let mut routes = vec![route(2)];
    routes.extend(with_service.clone());
    let g = crate::harness::gateway::Gateway::start(&file(routes.clone()));
    assert_eq!(g.request("GET", "/l", &[]).status, 200);
    // An unrelated edit (a route more): the count goes on.
    routes.push(other.clone());
    g.update(&file(routes.clone()));
    assert_eq!(g.request("GET", "/l", &[]).status, 200);
    assert_eq!(g.request("GET", "/l", &[]).status, 503);
    // A new setting starts afresh.
    routes[0] = route(3);
    g.update(&file(routes));
    assert_eq!(g.request("GET", "/l", &[]).status, 200);
    // A service's limit counts for each of its routes apart.
    assert_eq!(g.request("GET", "/s1", &[]).status, 200);
    assert_eq!(g.request("GET", "/s2", &[]).status, 200);
    assert_eq!(g.request("GET", "/s1", &[]).status, 503);
}

//! APISIX's `radixtree_host_uri` matching rules, through the real binary. Each route sends to
//! the echo server with `pass_host: rewrite` to `r-<id>`, so the Host the upstream sees names
//! the route that matched. Scenarios use their own hosts so one gateway serves them all.

use serde_json::{json, Value};

use crate::harness::gateway::{request_v6, Echo, Gateway};

fn with_upstream(echo: &Echo, mut route: Value) -> Value {
    if route.get("upstream").is_none() && route.get("service_id").is_none() {
        let id = route["id"].as_str().unwrap_or("?").to_string();
        route["upstream"] = json!({
            "nodes": {echo.addr(): 1},
            "pass_host": "rewrite",
            "upstream_host": format!("r-{id}"),
        });
    }
    route
}

fn yaml(echo: &Echo, routes: Vec<Value>, services: Vec<Value>) -> String {
    let mut s = String::from("routes:\n");
    for r in routes {
        s.push_str(&format!("  - {}\n", with_upstream(echo, r)));
    }
    if !services.is_empty() {
        s.push_str("services:\n");
        for svc in services {
            s.push_str(&format!("  - {svc}\n"));
        }
    }
    s
}

/// Which route took the request: its id, or the status when none did.
fn which(g: &Gateway, method: &str, path: &str, host: &str) -> String {
    let r = g.request(method, path, &[("Host", host)]);
    match r.status {
        200 => r.upstream_host().trim_start_matches("r-").to_string(),
        s => s.to_string(),
    }
}

fn routes(echo: &Echo) -> (Vec<Value>, Vec<Value>) {
    let routes = vec![
        // A: exact, prefixes, longest first, literal ':'
        json!({"id": "a1", "uri": "/foo", "host": "a.test"}),
        json!({"id": "a2", "uri": "/foo*", "host": "a.test"}),
        json!({"id": "a3", "uri": "/foo/*", "host": "a.test"}),
        json!({"id": "a4", "uri": "/*", "host": "a.test"}),
        json!({"id": "a5", "uri": "/user/:id", "host": "a.test"}),
        json!({"id": "a6", "uri": "/hello", "host": "a2.test"}),
        json!({"id": "a7", "uris": ["/one", "/two*"], "host": "a.test"}),
        // B: priority, insertion order, methods, fall-through to a shorter prefix
        json!({"id": "b1", "uri": "/p*", "host": "b.test"}),
        json!({"id": "b2", "uri": "/p*", "host": "b.test", "priority": 10}),
        json!({"id": "b3", "uri": "/t", "host": "b.test"}),
        json!({"id": "b4", "uri": "/t", "host": "b.test"}),
        json!({"id": "b5", "uri": "/m", "host": "b.test", "methods": ["POST", "PUT"]}),
        json!({"id": "b6", "uri": "/m", "host": "b.test", "methods": ["GET"]}),
        json!({"id": "b7", "uri": "/fall/deeper*", "host": "b.test", "methods": ["DELETE"]}),
        json!({"id": "b8", "uri": "/fall/*", "host": "b.test"}),
        // C: hosts
        json!({"id": "c1", "uri": "/h", "host": "api.c.test"}),
        json!({"id": "c2", "uri": "/h", "host": "*.c.test"}),
        json!({"id": "c3", "uri": "/h", "hosts": ["*.x.c.test", "other.c2.test"]}),
        json!({"id": "c4", "uri": "/h"}),
        json!({"id": "c5", "uri": "/h", "priority": 100}),
        // D: remote addresses
        json!({"id": "d1", "uri": "/ra", "host": "d.test", "remote_addrs": ["10.0.0.0/8"]}),
        json!({"id": "d2", "uri": "/ra", "host": "d.test", "remote_addr": "127.0.0.0/24"}),
        json!({"id": "d3", "uri": "/ra6", "host": "d.test", "remote_addrs": ["::1/128"]}),
        json!({"id": "d4", "uri": "/ra6", "host": "d.test", "remote_addrs": ["127.0.0.1"]}),
        // E: vars, one route per operator
        json!({"id": "eq", "uri": "/v/eq", "host": "e.test", "vars": [["arg_x", "==", "1"]]}),
        json!({"id": "ne", "uri": "/v/ne", "host": "e.test", "vars": [["arg_x", "~=", "1"]]}),
        json!({"id": "gt", "uri": "/v/gt", "host": "e.test", "vars": [["arg_n", ">", 5]]}),
        json!({"id": "ge", "uri": "/v/ge", "host": "e.test", "vars": [["arg_n", ">=", 5]]}),
        json!({"id": "lt", "uri": "/v/lt", "host": "e.test", "vars": [["arg_n", "<", 5]]}),
        json!({"id": "le", "uri": "/v/le", "host": "e.test", "vars": [["arg_n", "<=", 5]]}),
        json!({"id": "re", "uri": "/v/re", "host": "e.test", "vars": [["http_x_team", "~~", "^blue-[0-9]+$"]]}),
        json!({"id": "rei", "uri": "/v/rei", "host": "e.test", "vars": [["http_x_team", "~*", "^BLUE"]]}),
        json!({"id": "in", "uri": "/v/in", "host": "e.test", "vars": [["arg_c", "in", ["de", "fr"]]]}),
        json!({"id": "has", "uri": "/v/has", "host": "e.test", "vars": [["http_x_tags", "has", "beta"]]}),
        json!({"id": "ipm", "uri": "/v/ipm", "host": "e.test", "vars": [["remote_addr", "ipmatch", ["10.0.0.0/8", "127.0.0.0/8"]]]}),
        json!({"id": "not", "uri": "/v/not", "host": "e.test", "vars": [["arg_x", "!", "==", "1"]]}),
        json!({"id": "two", "uri": "/v/two", "host": "e.test", "vars": [["cookie_c", "y"]]}),
        json!({"id": "nul", "uri": "/v/nul", "host": "e.test", "vars": [["arg_x", "==", null]]}),
        json!({"id": "or", "uri": "/v/or", "host": "e.test", "vars": [["OR", ["arg_a", "==", "1"], ["arg_b", "==", "1"]]]}),
        json!({"id": "and", "uri": "/v/and", "host": "e.test", "vars": [["AND", ["arg_a", "==", "1"], ["arg_b", "==", "1"]]]}),
        json!({"id": "nor", "uri": "/v/nor", "host": "e.test", "vars": [["!OR", ["arg_a", "==", "1"], ["arg_b", "==", "1"]]]}),
        json!({"id": "nand", "uri": "/v/nand", "host": "e.test", "vars": [["!AND", ["arg_a", "==", "1"], ["OR", ["arg_b", "==", "1"], ["arg_c", "==", "1"]]]]}),
        json!({"id": "all", "uri": "/v/all", "host": "e.test", "vars": [["arg_a", "==", "1"], ["http_x_k", "==", "v"]]}),
        // F: status 0
        json!({"id": "f1", "uri": "/off", "host": "f.test", "status": 0}),
        json!({"id": "f2", "uri": "/off*", "host": "f.test"}),
        // G: services: host inheritance, route fields win
        json!({"id": "g1", "uri": "/svc", "service_id": "g"}),
        json!({"id": "g2", "uri": "/svc2", "service_id": "g"}),
        json!({"id": "g3", "uri": "/svc3", "service_id": "g", "host": "own.g.test"}),
    ];
    let services = vec![json!({
        "id": "g",
        "hosts": ["g.test"],
        "upstream": {"nodes": {echo.addr(): 1}, "pass_host": "rewrite", "upstream_host": "svc-g"},
    })];
    (routes, services)
}

#[test]
fn apisix_matching_rules() {
    let echo = Echo::start("echo");
    let (mut routes, services) = routes(&echo);
    // g2 has its own upstream, which wins over the service's.
    routes.iter_mut().find(|r| r["id"] == "g2").unwrap()["upstream"] =
        json!({"nodes": {echo.addr(): 1}, "pass_host": "rewrite", "upstream_host": "r-g2"});
    let g = Gateway::start(&yaml(&echo, routes, services));
    let w = |path: &str, host: &str| which(&g, "GET", path, host);

    // A: exact beats prefix; longest prefix first; `/foo/*` does not match `/foo`.
    assert_eq!(w("/foo", "a.test"), "a1");
    assert_eq!(w("/foobar", "a.test"), "a2");
    assert_eq!(w("/foo/", "a.test"), "a3");
    assert_eq!(w("/foo/x/y", "a.test"), "a3");
    assert_eq!(w("/fo", "a.test"), "a4");
    assert_eq!(
        w("/foo?q=1", "a.test"),
        "a1",
        "the query string is not part of the path"
    );
    assert_eq!(w("/user/:id", "a.test"), "a5", "':' is literal");
    assert_eq!(w("/user/42", "a.test"), "a4");
    assert_eq!(w("/one", "a.test"), "a7");
    assert_eq!(w("/two/x", "a.test"), "a7");
    // A trailing slash is another path.
    assert_eq!(w("/hello", "a2.test"), "a6");
    assert_eq!(w("/hello/", "a2.test"), "404");

    // B: priority first, then insertion order; methods; a failed check falls to a shorter prefix.
    assert_eq!(w("/px", "b.test"), "b2");
    assert_eq!(w("/t", "b.test"), "b3");
    assert_eq!(which(&g, "GET", "/m", "b.test"), "b6");
    assert_eq!(which(&g, "POST", "/m", "b.test"), "b5");
    assert_eq!(which(&g, "PUT", "/m", "b.test"), "b5");
    assert_eq!(which(&g, "DELETE", "/m", "b.test"), "404");
    assert_eq!(which(&g, "DELETE", "/fall/deeper/x", "b.test"), "b7");
    assert_eq!(which(&g, "GET", "/fall/deeper/x", "b.test"), "b8");

    // C: host-bound beats host-less whatever the priority; exact host, then longest wildcard;
    // hosts are case-insensitive and the port is ignored.
    assert_eq!(w("/h", "api.c.test"), "c1");
    assert_eq!(w("/h", "API.C.Test"), "c1");
    assert_eq!(w("/h", "api.c.test:9080"), "c1");
    assert_eq!(w("/h", "www.c.test"), "c2");
    assert_eq!(w("/h", "deep.sub.c.test"), "c2");
    assert_eq!(w("/h", "a.x.c.test"), "c3");
    assert_eq!(w("/h", "other.c2.test"), "c3");
    assert_eq!(
        w("/h", "c.test"),
        "c5",
        "a wildcard does not match its bare domain"
    );
    assert_eq!(w("/h", "unknown.test"), "c5");

    // D: remote addresses with CIDR, IPv4 here (IPv6 below).
    assert_eq!(w("/ra", "d.test"), "d2");
    assert_eq!(w("/ra6", "d.test"), "d4");

    // E: vars.
    let v = |q: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Host", "e.test")];
        h.extend_from_slice(headers);
        let r = g.request("GET", q, &h);
        match r.status {
            200 => r.upstream_host().trim_start_matches("r-").to_string(),
            s => s.to_string(),
        }
    };
    assert_eq!(v("/v/eq?x=1", &[]), "eq");
    assert_eq!(v("/v/eq?x=2", &[]), "404");
    assert_eq!(v("/v/ne?x=2", &[]), "ne");
    assert_eq!(v("/v/ne?x=1", &[]), "404");
    assert_eq!(v("/v/gt?n=6", &[]), "gt");
    assert_eq!(v("/v/gt?n=5", &[]), "404");
    assert_eq!(v("/v/gt?n=abc", &[]), "404", "not a number");
    assert_eq!(v("/v/ge?n=5", &[]), "ge");
    assert_eq!(v("/v/lt?n=4.5", &[]), "lt");
    assert_eq!(v("/v/lt?n=5", &[]), "404");
    assert_eq!(v("/v/le?n=5", &[]), "le");
    assert_eq!(v("/v/re", &[("X-Team", "blue-42")]), "re");
    assert_eq!(v("/v/re", &[("X-Team", "Blue-42")]), "404");
    assert_eq!(v("/v/rei", &[("X-Team", "blue-1")]), "rei");
    assert_eq!(v("/v/in?c=fr", &[]), "in");
    assert_eq!(v("/v/in?c=us", &[]), "404");
    assert_eq!(v("/v/has", &[("X-Tags", "alpha, beta")]), "has");
    assert_eq!(v("/v/has", &[("X-Tags", "alphabeta")]), "404");
    assert_eq!(v("/v/ipm", &[]), "ipm");
    assert_eq!(v("/v/not?x=2", &[]), "not");
    assert_eq!(v("/v/not?x=1", &[]), "404");
    assert_eq!(v("/v/two", &[("Cookie", "a=b; c=y")]), "two");
    assert_eq!(v("/v/nul", &[]), "nul");
    assert_eq!(v("/v/nul?x=1", &[]), "404");
    assert_eq!(v("/v/or?b=1", &[]), "or");
    assert_eq!(v("/v/or?c=1", &[]), "404");
    assert_eq!(v("/v/and?a=1&b=1", &[]), "and");
    assert_eq!(v("/v/and?a=1", &[]), "404");
    assert_eq!(v("/v/nor?c=1", &[]), "nor");
    assert_eq!(v("/v/nor?a=1", &[]), "404");
    assert_eq!(v("/v/nand?a=1&c=1", &[]), "404");
    assert_eq!(v("/v/nand?a=1", &[]), "nand");
    assert_eq!(v("/v/all?a=1", &[("X-K", "v")]), "all");
    assert_eq!(v("/v/all?a=1", &[]), "404");

    // F: a route with status 0 is skipped.
    assert_eq!(w("/off", "f.test"), "f2");

    // G: a route without hosts inherits its service's; the route's upstream wins.
    let svc = g.get("/svc", Some("g.test"));
    assert_eq!(svc.upstream_host(), "svc-g");
    assert_eq!(w("/svc", "elsewhere.test"), "404");
    assert_eq!(w("/svc2", "g.test"), "g2");
    assert_eq!(g.get("/svc3", Some("own.g.test")).upstream_host(), "svc-g");
    assert_eq!(w("/svc3", "g.test"), "404", "the route's own host wins");

    // No route: APISIX's body.
    let r = g.get("/nothing/here", Some("zzz.test"));
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "{\"error_msg\":\"404 Route Not Found\"}\n");
}

#[test]
fn remote_addr_over_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: nothing to test");
        return;
    }
    let echo = Echo::start("echo");
    let routes = vec![
        json!({"id": "v6", "uri": "/ra6", "remote_addrs": ["::1/128"]}),
        json!({"id": "v4", "uri": "/ra6", "remote_addrs": ["127.0.0.1"]}),
        json!({"id": "net", "uri": "/net", "remote_addrs": ["2001:db8::/32", "::1/127"]}),
    ];
    let g = Gateway::start_v6(&yaml(&echo, routes, vec![]));
    let via6 = |path: &str| request_v6(g.v6_port.unwrap(), path).upstream_host();
    assert_eq!(via6("/ra6"), "r-v6");
    assert_eq!(via6("/net"), "r-net");
    assert_eq!(g.get("/ra6", None).upstream_host(), "r-v4");
    assert_eq!(g.get("/net", None).status, 404);
}

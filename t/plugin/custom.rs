//! A gateway built on the crate with a plugin of the user's (`examples/custom_plugin.rs`).

use serde_json::json;

use crate::harness::gateway::{example_bin, Echo, Gateway};
use crate::yaml;

#[test]
fn a_users_plugin_is_configured_and_run_like_the_built_in_ones() {
    let echo = Echo::start("custom");
    let bin = example_bin("custom_plugin");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds the examples (or `cargo build --examples`)",
        bin.display()
    );
    let g = Gateway::start_binary(
        &bin,
        &yaml(
            &echo,
            vec![
                json!({"id": "t", "uri": "/t", "plugins": {"tenant-guard": {"tenants": ["acme"]}, "request-id": {}}}),
                json!({"id": "bad", "uri": "/bad", "plugins": {"tenant-guard": {"tenants": []}}}),
            ],
            &[],
        ),
    );
    let r = g.request("GET", "/t", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"missing tenant\"}\n")
    );
    assert_eq!(g.request("GET", "/t", &[("X-Tenant", "evil")]).status, 403);
    let r = g.request("GET", "/t", &[("X-Tenant", "acme")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["headers"]["x-tenant-verified"], "acme");
    assert!(r.headers.contains_key("x-request-id"));
    // Bad settings reject the route, as for a built-in plugin.
    assert_eq!(g.get("/bad", None).status, 404);
    let status = g.status();
    assert!(
        status["rejected"].to_string().contains("tenant-guard"),
        "{status}"
    );
    assert!(status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "tenant-guard"));
}

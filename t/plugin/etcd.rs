//! Plugins and consumers from a real etcd filled the way APISIX's Admin API fills it: keys,
//! passwords and secrets AES-encrypted with APISIX's default keyring, credentials apart from
//! their consumer.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::harness::gateway::{Echo, Gateway};
use crate::harness::{wait_until, EtcdMember};

fn jwt(payload: serde_json::Value, secret: &[u8]) -> String {
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signed = format!(
        "{}.{}",
        e(br#"{"alg":"HS256","typ":"JWT"}"#),
        e(payload.to_string().as_bytes())
    );
    let key = openssl::pkey::PKey::hmac(secret).unwrap();
    let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    let sig = s.sign_oneshot_to_vec(signed.as_bytes()).unwrap();
    format!("{signed}.{}", e(&sig))
}

#[test]
fn consumers_from_apisix_etcd_with_encrypted_fields() {
    let etcd = EtcdMember::start();
    let echo = Echo::start("e");
    let put = |k: &str, v: serde_json::Value| {
        etcd.etcdctl(&["put", k, &v.to_string()]);
    };
    put(
        "/apisix/upstreams/u",
        json!({"id": "u", "nodes": {echo.addr(): 1}}),
    );
    put(
        "/apisix/routes/k",
        json!({"id": "k", "uri": "/k", "upstream_id": "u", "plugins": {"key-auth": {}}}),
    );
    put(
        "/apisix/routes/j",
        json!({"id": "j", "uri": "/j", "upstream_id": "u", "plugins": {"jwt-auth": {}}}),
    );
    put(
        "/apisix/routes/b",
        json!({"id": "b", "uri": "/b", "upstream_id": "u", "plugins": {"basic-auth": {}}}),
    );
    put(
        "/apisix/routes/opa",
        json!({"id": "opa", "uri": "/opa", "upstream_id": "u", "plugins": {"opa": {"host": "http://127.0.0.1:1"}}}),
    );
    // "the-key" with the first entry of APISIX's default keyring.
    put(
        "/apisix/consumers/jack",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "JCX7x1qN5e9kHt0GuJfWpw=="}}}),
    );
    // "my-secret-key" with the second entry; "the-password" with the first.
    put(
        "/apisix/consumers/jack/credentials/c1",
        json!({"id": "c1", "plugins": {"jwt-auth": {"key": "jack-jwt", "secret": "IRWpPjbDq5BCgHyIllnOMA=="}}}),
    );
    put(
        "/apisix/consumers/jack/credentials/c2",
        json!({"id": "c2", "plugins": {"basic-auth": {"username": "jack", "password": "WvF5kpaLvIzjuk4GNIMTJg=="}}}),
    );

    let g = Gateway::spawn_etcd(&[etcd.url()], "");
    assert!(
        wait_until(Duration::from_secs(20), || g.ready()),
        "{}",
        g.log()
    );

    let r = g.request("GET", "/k", &[("apikey", "the-key")]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    assert_eq!(r.echo()["headers"]["x-consumer-username"], "jack");
    assert_eq!(
        g.request("GET", "/k", &[("apikey", "JCX7x1qN5e9kHt0GuJfWpw==")])
            .status,
        401
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jwt(
        json!({"key": "jack-jwt", "exp": now + 60}),
        b"my-secret-key",
    );
    let r = g.request(
        "GET",
        "/j",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo()["headers"]["x-credential-identifier"], "c1");
    let expired = jwt(
        json!({"key": "jack-jwt", "exp": now - 10}),
        b"my-secret-key",
    );
    let r = g.request("GET", &format!("/j?jwt={expired}"), &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"failed to verify jwt\"}\n")
    );
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"jwt\"");
    let r = g.request("GET", "/j", &[]);
    assert_eq!(r.body, "{\"message\":\"Missing JWT token in request\"}\n");
    let forged = jwt(json!({"key": "jack-jwt"}), b"guess");
    assert_eq!(
        g.request("GET", &format!("/j?jwt={forged}"), &[]).status,
        401
    );

    let basic = base64::engine::general_purpose::STANDARD.encode("jack:the-password");
    let r = g.request("GET", "/b", &[("Authorization", &format!("Basic {basic}"))]);
    assert_eq!(r.status, 200, "{}", r.body);

    // Fail closed: the route with an unimplemented plugin is not served, and says why.
    assert_eq!(g.get("/opa", None).status, 404);
    assert!(g.status()["rejected"]
        .to_string()
        .contains("opa is not implemented"));

    // A new key applies to the next request; the old one stops working.
    put(
        "/apisix/consumers/jack",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "rotated"}}}),
    );
    assert!(wait_until(Duration::from_secs(10), || g
        .request("GET", "/k", &[("apikey", "rotated")])
        .status
        == 200));
    assert_eq!(g.request("GET", "/k", &[("apikey", "the-key")]).status, 401);
    // The credentials still name jack after the consumer changed.
    let r = g.request("GET", "/j", &[("Authorization", &token)]);
    assert_eq!(r.status, 200);
}

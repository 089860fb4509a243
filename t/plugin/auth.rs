//! key-auth, basic-auth and consumers.

use serde_json::json;

use crate::harness::gateway::Echo;
use crate::start;

#[test]
fn key_auth_finds_the_consumer_and_tells_the_upstream() {
    let echo = Echo::start("k");
    let g = start(
        &echo,
        vec![
            json!({"id": "k", "uri": "/k", "plugins": {"key-auth": {}}}),
            json!({"id": "hide", "uri": "/hide", "plugins": {"key-auth": {"hide_credentials": true, "header": "X-Key", "query": "key"}}}),
        ],
        &[(
            "consumers",
            vec![
                json!({"username": "jack", "labels": {"custom_id": "c-1"}, "plugins": {"key-auth": {"key": "jack-key"}}}),
                json!({"username": "rose", "plugins": {"key-auth": {"key": "rose-key"}}}),
            ],
        )],
    );
    let r = g.request("GET", "/k", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, "{\"message\":\"Missing API key in request\"}\n");
    assert_eq!(r.headers["www-authenticate"], "apikey realm=\"key\"");
    let r = g.request("GET", "/k", &[("apikey", "nope")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, "{\"message\":\"Invalid API key in request\"}\n");

    // A client cannot claim to be a consumer.
    let r = g.request(
        "GET",
        "/k",
        &[
            ("apikey", "jack-key"),
            ("X-Consumer-Username", "admin"),
            ("X-Credential-Identifier", "forged"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.echo()["headers"];
    assert_eq!(h["x-consumer-username"], "jack");
    assert_eq!(h["x-consumer-custom-id"], "c-1");
    assert!(h.get("x-credential-identifier").is_none(), "{h}");
    assert_eq!(h["apikey"], "jack-key");

    let r = g.request("GET", "/k?apikey=rose-key", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["headers"]["x-consumer-username"], "rose");
    assert!(r.echo()["headers"].get("x-consumer-custom-id").is_none());

    // hide_credentials: the header, or the query argument, never reaches the upstream.
    let r = g.request("GET", "/hide?a=1", &[("X-Key", "jack-key")]);
    assert_eq!(r.status, 200);
    assert!(r.echo()["headers"].get("x-key").is_none());
    let r = g.request("GET", "/hide?a=1&key=rose-key&b=2", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["path"], "/hide?a=1&b=2");
}

#[test]
fn basic_auth_credentials_groups_and_restrictions() {
    let echo = Echo::start("b");
    let basic = |user: &str, pass: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let g = start(
        &echo,
        vec![
            json!({"id": "b", "uri": "/b", "plugins": {"basic-auth": {"hide_credentials": true}}}),
            json!({"id": "only-jack", "uri": "/only-jack", "plugins": {
                "key-auth": {},
                "consumer-restriction": {"whitelist": ["jack"]}}}),
            json!({"id": "deny-group", "uri": "/deny-group", "plugins": {
                "key-auth": {},
                "consumer-restriction": {"type": "consumer_group_id", "blacklist": ["bad"], "rejected_code": 401, "rejected_msg": "go away"}}}),
            json!({"id": "no-auth", "uri": "/no-auth", "plugins": {
                "consumer-restriction": {"whitelist": ["jack"]}}}),
            json!({"id": "anon", "uri": "/anon", "plugins": {"key-auth": {"anonymous_consumer": "guest"}}}),
        ],
        &[
            (
                "consumers",
                vec![
                    json!({"username": "jack", "plugins": {"basic-auth": {"username": "jack", "password": "s3cret"}}}),
                    json!({"username": "rose", "group_id": "bad", "labels": {"custom_id": "r-9"}}),
                    json!({"username": "guest"}),
                    json!({"id": "jack/credentials/cred-1", "plugins": {"key-auth": {"key": "jack-key"}}}),
                    json!({"id": "rose/credentials/cred-2", "plugins": {"key-auth": {"key": "rose-key"}}}),
                ],
            ),
            ("consumer_groups", vec![json!({"id": "bad", "plugins": {}})]),
        ],
    );
    let r = g.request("GET", "/b", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"Missing authorization in request\"}\n")
    );
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"basic\"");
    let r = g.request("GET", "/b", &[("Authorization", "Bad_header YmFy")]);
    assert_eq!(
        r.body,
        "{\"message\":\"Invalid authorization in request\"}\n"
    );
    let r = g.request("GET", "/b", &[("Authorization", &basic("jack", "wrong"))]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"Invalid user authorization\"}\n")
    );
    let r = g.request("GET", "/b", &[("Authorization", &basic("jack", "s3cret"))]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo()["headers"]["x-consumer-username"], "jack");
    assert!(r.echo()["headers"].get("authorization").is_none());

    // Credentials kept apart from the consumer name it, and identify themselves.
    let r = g.request("GET", "/only-jack", &[("apikey", "jack-key")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo()["headers"]["x-credential-identifier"], "cred-1");
    let r = g.request("GET", "/only-jack", &[("apikey", "rose-key")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"The consumer_name is forbidden.\"}\n")
    );
    let r = g.request("GET", "/deny-group", &[("apikey", "rose-key")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"go away\"}\n")
    );
    // Without a group there is nothing to check: refused, as in APISIX.
    let r = g.request("GET", "/deny-group", &[("apikey", "jack-key")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"The request is rejected, please check the consumer_group_id for this request\"}\n")
    );
    let r = g.request("GET", "/no-auth", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"The request is rejected, please check the consumer_name for this request\"}\n")
    );

    // The anonymous consumer stands in for a request without a key.
    let r = g.request("GET", "/anon", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo()["headers"]["x-consumer-username"], "guest");
}

#[test]
fn a_key_two_consumers_share_is_an_error_of_the_later_one() {
    let echo = Echo::start("dup");
    let g = start(
        &echo,
        vec![json!({"id": "k", "uri": "/k", "plugins": {"key-auth": {}}})],
        &[(
            "consumers",
            vec![
                json!({"username": "first", "plugins": {"key-auth": {"key": "same"}}}),
                json!({"username": "second", "plugins": {"key-auth": {"key": "same"}}}),
            ],
        )],
    );
    let r = g.request("GET", "/k", &[("apikey", "same")]);
    assert_eq!(r.echo()["headers"]["x-consumer-username"], "first");
    let rejected = g.status()["rejected"].to_string();
    assert!(
        rejected.contains("second") && rejected.contains("already used by consumer first"),
        "{rejected}"
    );
}

#[test]
fn a_changed_key_applies_to_the_next_request() {
    let echo = Echo::start("churn");
    let routes = vec![json!({"id": "k", "uri": "/k", "plugins": {"key-auth": {}}})];
    let with_key = |k: &str| {
        crate::yaml(
            &echo,
            routes.clone(),
            &[(
                "consumers",
                vec![json!({"username": "jack", "plugins": {"key-auth": {"key": k}}})],
            )],
        )
    };
    let g = crate::harness::gateway::Gateway::start(&with_key("old"));
    assert_eq!(g.request("GET", "/k", &[("apikey", "old")]).status, 200);
    g.update(&with_key("new"));
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(10),
        || { g.request("GET", "/k", &[("apikey", "new")]).status == 200 }
    ));
    assert_eq!(g.request("GET", "/k", &[("apikey", "old")]).status, 401);
}

/// An HTTP date for now, as clients put in `Date`.
pub fn http_date_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%a, %d %b %Y %H:%M:%S GMT"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An APISIX 3.x hmac-auth `Authorization` header signing `@request-target` and `date`.
pub fn hmac_authorization(key_id: &str, secret: &[u8], target: &str, date: &str) -> String {
    use base64::Engine;
    let signing = format!("{key_id}\n{target}\ndate: {date}\n");
    let key = openssl::pkey::PKey::hmac(secret).unwrap();
    let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .encode(s.sign_oneshot_to_vec(signing.as_bytes()).unwrap());
    format!(
        "Signature keyId=\"{key_id}\",algorithm=\"hmac-sha256\",headers=\"@request-target date\",signature=\"{sig}\""
    )
}

#[test]
fn hmac_multi_auth_and_error_response() {
    let echo = Echo::start("h");
    let g = start(
        &echo,
        vec![
            json!({"id": "h", "uri": "/h", "plugins": {"hmac-auth": {"signed_headers": ["date"]}}}),
            json!({"id": "m", "uri": "/m", "plugins": {"multi-auth": {"auth_plugins": [{"basic-auth": {}}, {"key-auth": {}}]}}}),
            json!({"id": "e", "uri": "/e", "plugins": {"key-auth": {"_meta": {"error_response": {"message": "who are you?"}}}}}),
        ],
        &[(
            "consumers",
            vec![json!({"username": "jack", "plugins": {
                "hmac-auth": {"key_id": "jack-id", "secret_key": "jack-secret"},
                "key-auth": {"key": "jack-key"}}})],
        )],
    );
    let date = http_date_now();
    let sign = |secret: &[u8], target: &str| hmac_authorization("jack-id", secret, target, &date);
    let good = sign(b"jack-secret", "GET /h?a=1");
    let r = g.request(
        "GET",
        "/h?a=1",
        &[("Authorization", &good), ("Date", &date)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echo()["headers"]["x-consumer-username"], "jack");
    let bad = sign(b"other", "GET /h?a=1");
    let r = g.request("GET", "/h?a=1", &[("Authorization", &bad), ("Date", &date)]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"client request can't be validated\"}\n")
    );
    assert_eq!(r.headers["www-authenticate"], "hmac realm=\"hmac\"");
    let r = g.request("GET", "/h", &[]);
    assert_eq!(
        r.body,
        "{\"message\":\"client request can't be validated: missing Authorization header\"}\n"
    );
    // Signed for another path: refused.
    let r = g.request(
        "GET",
        "/h?a=2",
        &[("Authorization", &good), ("Date", &date)],
    );
    assert_eq!(r.status, 401);

    // Any one of the listed auth plugins will do.
    assert_eq!(
        g.request("GET", "/m", &[("apikey", "jack-key")]).status,
        200
    );
    let r = g.request("GET", "/m", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"Authorization Failed\"}\n")
    );

    let r = g.request("GET", "/e", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"who are you?\"}\n")
    );
}

#[test]
fn a_consumer_whose_group_is_missing_gets_503_and_headers_are_read_as_bytes() {
    let echo = Echo::start("grp");
    let g = start(
        &echo,
        vec![
            json!({"id": "k", "uri": "/k", "plugins": {"key-auth": {}}}),
            json!({"id": "ua", "uri": "/ua", "plugins": {"ua-restriction": {"denylist": ["sqlmap"], "bypass_missing": true}}}),
        ],
        &[(
            "consumers",
            vec![
                json!({"username": "lost", "group_id": "nope", "plugins": {"key-auth": {"key": "lost-key"}}}),
                json!({"username": "fine", "plugins": {"key-auth": {"key": "fine-key"}}}),
            ],
        )],
    );
    assert_eq!(
        g.request("GET", "/k", &[("apikey", "lost-key")]).status,
        503
    );
    assert_eq!(
        g.request("GET", "/k", &[("apikey", "fine-key")]).status,
        200
    );
    // A value with a byte above 0x7f is still a value the denylist sees.
    assert_eq!(
        g.request("GET", "/ua", &[("User-Agent", "sqlmap\u{e9}")])
            .status,
        403
    );
    assert_eq!(
        g.request("GET", "/ua", &[("User-Agent", "Mozilla\u{e9}")])
            .status,
        200
    );
}

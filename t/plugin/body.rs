//! Plugins that read the request body whole before the upstream may have it:
//! `request-validation` and `hmac-auth`'s `validate_request_body`, for bodies Pingora can
//! replay (read before the request phases) and for bigger or chunked ones (held back).

use std::io::{Read, Write};

use serde_json::json;

use crate::harness::gateway::{Echo, Gateway};

/// A POST with a chunked body, raw; the status and body of the answer.
fn post_chunked(g: &Gateway, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    for piece in body.chunks(10_000) {
        bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        bytes.extend_from_slice(piece);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn post(g: &Gateway, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let r = crate::harness::gateway::request(g.port, "POST", path, headers, body);
    (r.status, r.body)
}

/// A JSON object of about `size` bytes with a `name` unless `named` is false.
fn big_json(size: usize, named: bool) -> String {
    let filler = "x".repeat(size);
    if named {
        format!("{{\"name\": \"big\", \"filler\": \"{filler}\"}}")
    } else {
        format!("{{\"filler\": \"{filler}\"}}")
    }
}

#[test]
fn request_validation_checks_headers_and_bodies_before_the_upstream() {
    let echo = Echo::start("rv");
    let schema = json!({"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "n": {"type": "integer", "minimum": 1}}});
    let g = crate::start(
        &echo,
        vec![
            json!({"id": "v", "uri": "/v", "plugins": {"request-validation": {"body_schema": schema}}}),
            json!({"id": "m", "uri": "/m", "plugins": {"request-validation": {"body_schema": schema, "rejected_code": 422, "rejected_msg": "bad request"}}}),
            json!({"id": "h", "uri": "/h", "plugins": {"request-validation": {"header_schema": {"type": "object", "required": ["x-token"]}}}}),
            json!({"id": "small", "uri": "/small", "plugins": {"request-validation": {"body_schema": schema, "max_req_body_size": 100}}}),
        ],
        &[],
    );
    let ok = r#"{"name": "a", "n": 2}"#;
    assert_eq!(post(&g, "/v", &[], ok).0, 200);
    let seen = echo.seen();
    assert_eq!(
        seen.last().unwrap()["body"],
        ok,
        "the body goes on byte for byte"
    );
    for (body, says) in [
        (r#"{"n": 2}"#, "property \"name\" is required"),
        (
            r#"{"name": "a", "n": 0}"#,
            "property \"n\" validation failed",
        ),
        ("not json", "failed to decode the request body"),
        (r#"{"name": "a", "name": 1}"#, "duplicate key"),
    ] {
        let (status, answer) = post(&g, "/v", &[], body);
        assert_eq!(status, 400, "{body}");
        assert!(answer.contains(says), "{body}: {answer}");
    }
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(post(&g, "/v", &form, "name=a+b&x=1").0, 200);
    assert_eq!(post(&g, "/v", &form, "x=1").0, 400);
    assert_eq!(g.request("GET", "/v", &[]).status, 400, "no body to check");
    let twice = [
        ("Content-Type", "application/json"),
        ("Content-Type", "text/plain"),
    ];
    assert_eq!(
        post(&g, "/v", &twice, ok).0,
        400,
        "a duplicated Content-Type"
    );
    assert_eq!(post(&g, "/m", &[], "{}"), (422, "bad request".to_string()));
    let r = g.request("GET", "/h", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "property \"x-token\" is required")
    );
    assert_eq!(g.request("GET", "/h", &[("X-Token", "t")]).status, 200);
    // Past max_req_body_size: APISIX's 413.
    let (status, answer) = post(&g, "/small", &[], &big_json(200, true));
    assert_eq!(status, 413);
    assert!(
        answer.contains("is greater than the maximum size 100 allowed"),
        "{answer}"
    );
    // Nothing refused reached the upstream.
    assert_eq!(echo.seen().len(), 3, "{:?}", echo.seen());

    // Bodies above Pingora's 64 KiB replay buffer, and chunked ones, are held back whole.
    let big = big_json(200_000, true);
    assert_eq!(post(&g, "/v", &[], &big).0, 200);
    assert_eq!(
        echo.seen().last().unwrap()["body"].as_str().map(str::len),
        Some(big.len()),
        "the big body reached the upstream whole"
    );
    let (status, answer) = post(&g, "/v", &[], &big_json(200_000, false));
    assert_eq!(
        (status, answer.as_str()),
        (400, "property \"name\" is required")
    );
    assert_eq!(post_chunked(&g, "/v", &[], ok.as_bytes()).0, 200);
    assert_eq!(echo.seen().last().unwrap()["body"], ok);
    let (status, answer) = post_chunked(&g, "/v", &[], br#"{"n": 5}"#);
    assert_eq!(
        (status, answer.as_str()),
        (400, "property \"name\" is required")
    );
    assert_eq!(post_chunked(&g, "/v", &[], big.as_bytes()).0, 200);
    let (status, _) = post_chunked(&g, "/small", &[], big.as_bytes());
    assert_eq!(status, 413);
    // Other routes keep serving.
    assert_eq!(post(&g, "/v", &[], ok).0, 200);
}

#[test]
fn hmac_auth_checks_the_body_digest() {
    use base64::Engine;
    let echo = Echo::start("hb");
    let g = crate::start(
        &echo,
        vec![
            json!({"id": "hb", "uri": "/hb", "plugins": {"hmac-auth": {"validate_request_body": true}}}),
            json!({"id": "hs", "uri": "/hs", "plugins": {"hmac-auth": {"validate_request_body": true, "max_req_body_size": 10}}}),
            // hmac-auth inside multi-auth, beside another plugin that reads the body.
            json!({"id": "hm", "uri": "/hm", "plugins": {
                "multi-auth": {"auth_plugins": [{"key-auth": {}},
                                                {"hmac-auth": {"validate_request_body": true}}]},
                "request-validation": {"body_schema": {"type": "object"}}}}),
        ],
        &[(
            "consumers",
            vec![
                json!({"username": "jack", "plugins": {"hmac-auth": {"key_id": "jack-id", "secret_key": "jack-secret"}}}),
            ],
        )],
    );
    let date = crate::auth::http_date_now();
    let sign =
        |target: &str| crate::auth::hmac_authorization("jack-id", b"jack-secret", target, &date);
    let digest = |body: &str| {
        let hash =
            openssl::hash::hash(openssl::hash::MessageDigest::sha256(), body.as_bytes()).unwrap();
        format!(
            "SHA-256={}",
            base64::engine::general_purpose::STANDARD.encode(hash)
        )
    };
    let auth = sign("POST /hb");
    let body = r#"{"pay": 10}"#;
    let good = digest(body);
    let headers = |d: &str| {
        vec![
            ("Authorization", auth.clone()),
            ("Date", date.clone()),
            ("Digest", d.to_string()),
        ]
    };
    let as_refs = |h: &Vec<(&'static str, String)>| {
        h.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let send = |d: &str, b: &str| {
        let h = as_refs(&headers(d));
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post(&g, "/hb", &h, b)
    };
    assert_eq!(send(&good, body).0, 200);
    assert_eq!(
        echo.seen().last().unwrap()["headers"]["x-consumer-username"],
        "jack"
    );
    let refused = (
        401,
        "{\"message\":\"client request can't be validated\"}\n".to_string(),
    );
    assert_eq!(send(&good, r#"{"pay": 1000}"#), refused, "another body");
    assert_eq!(send(&digest("x"), body), refused);
    let h = [("Authorization", auth.as_str()), ("Date", date.as_str())];
    assert_eq!(post(&g, "/hb", &h, body), refused, "no Digest");
    // A body above the replay buffer is checked once it has all arrived.
    let big = "y".repeat(150_000);
    assert_eq!(send(&digest(&big), &big).0, 200);
    assert_eq!(
        echo.seen().last().unwrap()["body"].as_str().map(str::len),
        Some(big.len())
    );
    let (status, _) = send(&digest("other"), &big);
    assert_eq!(status, 401);
    // The same through multi-auth: its hmac-auth checks the digest, small body or big.
    let auth_m = sign("POST /hm");
    let send_m = |d: &str, b: &str| {
        let h = [
            ("Authorization", auth_m.as_str()),
            ("Date", date.as_str()),
            ("Digest", d),
            ("Content-Type", "application/json"),
        ];
        post(&g, "/hm", &h, b).0
    };
    let big_json = format!("{{\"pad\": \"{}\"}}", "y".repeat(150_000));
    assert_eq!(send_m(&good, body), 200);
    assert_eq!(send_m(&good, r#"{"pay": 1000}"#), 401, "another small body");
    assert_eq!(send_m(&digest(&big_json), &big_json), 200);
    assert_eq!(send_m(&digest("other"), &big_json), 401, "another big body");
    // max_req_body_size: APISIX's 413 with its message.
    let auth = sign("POST /hs");
    let h = [
        ("Authorization", auth.as_str()),
        ("Date", date.as_str()),
        ("Digest", good.as_str()),
    ];
    assert_eq!(
        post(&g, "/hs", &h, body),
        (
            413,
            "{\"message\":\"request size 11 is greater than the maximum size 10 allowed\"}\n"
                .to_string()
        )
    );
}

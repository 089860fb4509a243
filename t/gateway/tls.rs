//! HTTPS for clients: certificates chosen by SNI from `ssls`, checked by fingerprint with a
//! real TLS client (openssl s_client) and requests made with curl (HTTP/1.1 and HTTP/2).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::gateway::{Echo, Gateway};
use crate::harness::{free_port, wait_until, TempDir};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir` (ca.pem, ca.key).
fn ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Portico Test CA",
        ],
    );
}

/// A certificate for `names` signed by the CA: (cert PEM, key PEM, SHA-256 fingerprint).
fn leaf(dir: &Path, file: &str, names: &[&str], ec: bool, days: &str) -> (String, String, String) {
    let key = format!("{file}.key");
    if ec {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ],
        );
    } else {
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
    }
    let csr = format!("{file}.csr");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={}", names[0]),
        ],
    );
    let ext = format!("{file}.ext");
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    let pem = format!("{file}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            days,
            "-extfile",
            &ext,
        ],
    );
    let cert = std::fs::read_to_string(dir.join(&pem)).unwrap();
    let key = std::fs::read_to_string(dir.join(&key)).unwrap();
    (cert, key, fingerprint(dir, &pem))
}

fn fingerprint(dir: &Path, pem: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", pem])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fingerprint of the certificate the gateway sends for `sni` (`None`: no handshake).
fn served(port: u16, sni: Option<&str>) -> Option<String> {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
    ];
    match sni {
        Some(s) => args.extend(["-servername".into(), s.to_string()]),
        None => args.push("-noservername".into()),
    }
    let client = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&client.stdout).into_owned();
    let start = out.find("-----BEGIN CERTIFICATE-----")?;
    let end = out.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let dir = TempDir::new("sclient");
    std::fs::write(dir.path().join("got.pem"), &out[start..end]).unwrap();
    Some(fingerprint(dir.path(), "got.pem"))
}

/// curl over HTTPS to `name` (resolved to loopback): status, HTTP version, body.
fn curl(dir: &Path, port: u16, name: &str, path: &str, h2: bool) -> (u16, String, String) {
    curl_with(dir, port, name, path, h2, &[])
}

fn curl_with(
    dir: &Path,
    port: u16,
    name: &str,
    path: &str,
    h2: bool,
    extra: &[&str],
) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(extra)
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(if h2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    let mut t = tail.split_whitespace();
    let status = t.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, t.next().unwrap_or("").to_string(), body.to_string())
}

fn yaml(echo: &Echo, ssls: &[Value]) -> String {
    let mut s = format!(
        "routes:\n  - {}\n  - {}\n",
        json!({"id": "r", "uri": "/*", "upstream": {"nodes": {echo.addr(): 1}}}),
        json!({"id": "to", "uri": "/to-https", "plugins": {"redirect": {"http_to_https": true}},
            "upstream": {"nodes": {echo.addr(): 1}}})
    );
    s.push_str("ssls:\n");
    for ssl in ssls {
        s.push_str(&format!("  - {ssl}\n"));
    }
    s
}

/// `key` encrypted as APISIX's Admin API stores it with its default keyring.
fn apisix_encrypted(dir: &Path, key_pem: &str) -> String {
    std::fs::write(dir.join("plain.key"), key_pem).unwrap();
    let hex: String = "qeddd145sfvddff3"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = Command::new("openssl")
        .args([
            "enc",
            "-aes-128-cbc",
            "-K",
            &hex,
            "-iv",
            &hex,
            "-a",
            "-A",
            "-in",
            "plain.key",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn https_certificates_by_sni_from_ssls() {
    let dir = TempDir::new("tls");
    let d = dir.path();
    ca(d);
    let (a_cert, a_key, a_fp) = leaf(d, "a", &["a.test"], false, "2");
    let (w_cert, w_key, w_fp) = leaf(d, "w", &["*.w.test"], true, "2");
    let (x_cert, x_key, x_fp) = leaf(d, "x", &["x.w.test"], false, "2");
    let (off_cert, off_key, _) = leaf(d, "off", &["off.test"], true, "2");
    let (_, other_key, _) = leaf(d, "other", &["other.test"], true, "2");
    let (old_cert, old_key, _) = leaf(d, "old", &["old.test"], true, "-1");
    let echo = Echo::start("tls");
    let ssls = vec![
        json!({"id": "a", "snis": ["a.test"], "cert": a_cert, "key": apisix_encrypted(d, &a_key)}),
        json!({"id": "w", "snis": ["*.w.test"], "cert": w_cert, "key": w_key}),
        json!({"id": "x", "sni": "x.w.test", "cert": x_cert, "key": x_key}),
        json!({"id": "off", "snis": ["off.test"], "cert": off_cert, "key": off_key, "status": 0}),
        json!({"id": "mismatch", "snis": ["mismatch.test"], "cert": off_cert, "key": other_key}),
        json!({"id": "expired", "snis": ["old.test"], "cert": old_cert, "key": old_key}),
    ];
    let port = free_port();
    let g = Gateway::start_with_proxy(
        &yaml(&echo, &ssls),
        &format!("  tls_listen: [\"127.0.0.1:{port}\"]\n"),
    );
    assert_eq!(
        served(port, Some("a.test")),
        Some(a_fp.clone()),
        "{}",
        g.log()
    );
    assert_eq!(
        served(port, Some("b.w.test")),
        Some(w_fp.clone()),
        "a wildcard"
    );
    assert_eq!(
        served(port, Some("X.W.Test")),
        Some(x_fp),
        "an exact name wins, any case"
    );
    for refused in [
        Some("w.test"),
        Some("a.b.w.test"),
        Some("nobody.test"),
        Some("off.test"),
        None,
    ] {
        assert_eq!(
            served(port, refused),
            None,
            "{refused:?}: no certificate, no handshake"
        );
    }
    // The bad ones are rejected alone, named in /status.
    let rejected = g.status()["rejected"].to_string();
    assert!(
        rejected.contains("mismatch") && rejected.contains("does not match"),
        "{rejected}"
    );
    assert!(
        rejected.contains("the certificate expired on"),
        "{rejected}"
    );
    assert_eq!(served(port, Some("old.test")), None);
    assert_eq!(served(port, Some("mismatch.test")), None);
    // Requests over HTTPS, HTTP/1.1 and HTTP/2 by ALPN.
    let (status, version, body) = curl(d, port, "a.test", "/hello", false);
    assert_eq!((status, version.as_str()), (200, "1.1"), "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-port"], port.to_string());
    let (status, version, _) = curl(d, port, "b.w.test", "/h2", true);
    assert_eq!((status, version.as_str()), (200, "2"));
    // Plain HTTP still says http.
    assert_eq!(
        g.get("/plain", None).echo()["headers"]["x-forwarded-proto"],
        "http"
    );

    // A new certificate applies to the next handshake.
    let (a2_cert, a2_key, a2_fp) = leaf(d, "a2", &["a.test"], true, "2");
    let mut next = ssls.clone();
    next[0] = json!({"id": "a", "snis": ["a.test"], "cert": a2_cert, "key": a2_key});
    g.update(&yaml(&echo, &next));
    assert!(wait_until(Duration::from_secs(5), || served(
        port,
        Some("a.test")
    ) == Some(
        a2_fp.clone()
    )));
    assert_ne!(a_fp, a2_fp);
    assert_eq!(
        served(port, Some("b.w.test")),
        Some(w_fp),
        "the others unchanged"
    );
}

#[test]
fn ssls_from_etcd_apply_encrypted_swapped_and_deleted() {
    let dir = TempDir::new("tls-etcd");
    let d = dir.path();
    ca(d);
    let (cert, key, fp) = leaf(d, "e", &["e.test"], true, "2");
    let (cert2, key2, fp2) = leaf(d, "e2", &["e.test"], false, "2");
    let etcd = crate::harness::EtcdMember::start();
    let echo = Echo::start("tls-etcd");
    let route = json!({"uri": "/*", "upstream": {"nodes": {echo.addr(): 1}}});
    etcd.etcdctl(&["put", "/apisix/routes/1", &route.to_string()]);
    let port = free_port();
    let g = Gateway::spawn_etcd_with_proxy(
        &[etcd.url()],
        &format!("  tls_listen: [\"127.0.0.1:{port}\"]\n"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || g.ready()),
        "{}",
        g.log()
    );
    assert_eq!(served(port, Some("e.test")), None, "no ssl yet");
    // As APISIX's Admin API stores it: the key encrypted with the default keyring.
    let ssl = json!({"snis": ["e.test"], "cert": cert, "key": apisix_encrypted(d, &key)});
    etcd.etcdctl(&["put", "/apisix/ssls/1", &ssl.to_string()]);
    assert!(
        wait_until(Duration::from_secs(5), || served(port, Some("e.test"))
            == Some(fp.clone())),
        "{}",
        g.log()
    );
    assert_eq!(curl(d, port, "e.test", "/x", false).0, 200);
    // A bad edit (a key that is not the certificate's) keeps the last good one serving.
    let bad = json!({"snis": ["e.test"], "cert": cert2, "key": key});
    etcd.etcdctl(&["put", "/apisix/ssls/1", &bad.to_string()]);
    assert!(wait_until(Duration::from_secs(5), || g.status()
        ["rejected"]
        .to_string()
        .contains("does not match")));
    assert_eq!(
        served(port, Some("e.test")),
        Some(fp.clone()),
        "last good kept"
    );
    let good = json!({"snis": ["e.test"], "cert": cert2, "key": key2});
    etcd.etcdctl(&["put", "/apisix/ssls/1", &good.to_string()]);
    assert!(wait_until(Duration::from_secs(5), || served(
        port,
        Some("e.test")
    ) == Some(
        fp2.clone()
    )));
    etcd.etcdctl(&["del", "/apisix/ssls/1"]);
    assert!(
        wait_until(Duration::from_secs(5), || served(port, Some("e.test"))
            .is_none()),
        "deleted: no handshake"
    );
}

#[test]
fn mtls_asks_for_client_certificates_signed_by_the_ca() {
    let dir = TempDir::new("mtls");
    let d = dir.path();
    ca(d);
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let (m_cert, m_key, _) = leaf(d, "m", &["m.test"], true, "2");
    let (a_cert, a_key, _) = leaf(d, "a", &["a.test"], true, "2");
    leaf(d, "client", &["client.test"], true, "2");
    // A client certificate from another CA.
    let other = TempDir::new("mtls-other");
    ca(other.path());
    leaf(other.path(), "stranger", &["stranger.test"], true, "2");
    let echo = Echo::start("mtls");
    let ssls = vec![
        json!({"id": "m", "snis": ["m.test"], "cert": m_cert, "key": m_key, "client": {"ca": ca_pem, "depth": 2}}),
        json!({"id": "a", "snis": ["a.test"], "cert": a_cert, "key": a_key}),
        json!({"id": "skip", "snis": ["skip.test"], "cert": m_cert, "key": m_key, "client": {"ca": ca_pem, "skip_mtls_uri_regex": ["/x"]}}),
    ];
    let port = free_port();
    let g = Gateway::start_with_proxy(
        &yaml(&echo, &ssls),
        &format!("  tls_listen: [\"127.0.0.1:{port}\"]\n"),
    );
    let cert = d.join("client.pem").display().to_string();
    let key = d.join("client.key").display().to_string();
    let mine = ["--cert", cert.as_str(), "--key", key.as_str()];
    assert_eq!(
        curl_with(d, port, "m.test", "/in", false, &mine).0,
        200,
        "{}",
        g.log()
    );
    assert_eq!(
        curl(d, port, "m.test", "/in", false).0,
        0,
        "no client certificate: no handshake"
    );
    let scert = other.path().join("stranger.pem").display().to_string();
    let skey = other.path().join("stranger.key").display().to_string();
    let stranger = ["--cert", scert.as_str(), "--key", skey.as_str()];
    assert_eq!(
        curl_with(d, port, "m.test", "/in", false, &stranger).0,
        0,
        "another CA's"
    );
    // Others are not asked.
    assert_eq!(curl(d, port, "a.test", "/in", false).0, 200);
    // The mTLS host over another SNI's connection: 400.
    assert_eq!(
        curl_with(d, port, "a.test", "/in", false, &["-H", "Host: m.test"]).0,
        400
    );
    // What Portico cannot apply yet is refused, not served without it.
    assert!(g.status()["rejected"]
        .to_string()
        .contains("skip_mtls_uri_regex"));
}

use portico::etcd::{Error, GetOptions, Pem, SetOptions};
use serde_json::json;

use crate::client;
use crate::harness::{free_port, Certs, EtcdConfig, EtcdMember, TempDir};

fn tls_member(certs: &Certs, client_cert_auth: bool) -> EtcdMember {
    EtcdMember::start_with(EtcdConfig {
        tls: Some(certs.dir.path().to_path_buf()),
        client_cert_auth,
        ..Default::default()
    })
}

#[tokio::test]
async fn tls_verify_wrong_ca_sni_and_verify_off() {
    let certs = Certs::generate();
    let etcd = tls_member(&certs, false);
    let ca = Pem::File(certs.path("ca.pem"));

    // Verified against our CA, by IP (the certificate has IP:127.0.0.1).
    let c = client(&[etcd.url()], |o| o.tls.ca = Some(ca.clone()));
    c.set("/tls", &json!(1), SetOptions::default())
        .await
        .unwrap();

    // By name through SNI while connecting to the IP.
    let sni = client(&[etcd.url()], |o| {
        o.tls.ca = Some(ca.clone());
        o.tls.sni = Some("etcd.test".into());
    });
    sni.get("/tls", GetOptions::default()).await.unwrap();

    // A name the certificate does not carry is refused.
    let wrong_name = client(&[etcd.url()], |o| {
        o.tls.ca = Some(ca.clone());
        o.tls.sni = Some("other.test".into());
    });
    assert!(wrong_name.get("/tls", GetOptions::default()).await.is_err());

    // A CA that did not sign the server: a clear error naming the endpoint.
    let wrong_ca = client(&[etcd.url()], |o| {
        o.tls.ca = Some(Pem::File(certs.path("other-ca.pem")))
    });
    let err = wrong_ca
        .get("/tls", GetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&etcd.url()) && text.contains("certificate"),
        "{text}"
    );

    // Verification off: any certificate is accepted.
    let off = client(&[etcd.url()], |o| o.tls.verify = false);
    off.get("/tls", GetOptions::default()).await.unwrap();
}

#[tokio::test]
async fn client_certificates_from_files_and_contents() {
    let certs = Certs::generate();
    let etcd = tls_member(&certs, true);
    let ca = Pem::File(certs.path("ca.pem"));

    let without = client(&[etcd.url()], |o| o.tls.ca = Some(ca.clone()));
    assert!(without.get("/m", GetOptions::default()).await.is_err());

    let files = client(&[etcd.url()], |o| {
        o.tls.ca = Some(ca.clone());
        o.tls.cert = Some(Pem::File(certs.path("client.pem")));
        o.tls.key = Some(Pem::File(certs.path("client.key")));
    });
    files
        .set("/m", &json!("mtls"), SetOptions::default())
        .await
        .unwrap();

    let read = |f: &str| std::fs::read_to_string(certs.path(f)).unwrap();
    let contents = client(&[etcd.url()], |o| {
        o.tls.ca = Some(Pem::Contents(read("ca.pem")));
        o.tls.cert = Some(Pem::Contents(read("client.pem")));
        o.tls.key = Some(Pem::Contents(read("client.key")));
    });
    let kv = contents
        .get("/m", GetOptions::default())
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.value, Ok(json!("mtls")));
    assert_eq!(
        etcd.etcdctl(&["get", "/m", "--print-value-only"]).trim(),
        "\"mtls\""
    );
}

/// A unix socket that relays to etcd's TCP port, like a local proxy would.
async fn unix_relay(dir: &TempDir, port: u16) -> std::path::PathBuf {
    let path = dir.path().join("etcd.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut tcp).await;
                }
            });
        }
    });
    path
}

#[tokio::test]
async fn through_a_unix_socket() {
    let etcd = EtcdMember::start();
    let dir = TempDir::new("uds");
    let sock = unix_relay(&dir, etcd.client_port).await;
    // The endpoint itself is dead: everything must go through the socket.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let c = client(&[dead], |o| o.unix_socket = Some(sock.clone()));
    c.set("/uds", &json!(1), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        etcd.etcdctl(&["get", "/uds", "--print-value-only"]).trim(),
        "1"
    );
    let mut w = c.watch("/uds", Default::default()).await.unwrap();
    crate::watch::next(&mut w).await;
}

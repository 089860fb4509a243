//! The watch stream against a local server that replays chosen byte splits, for the cases a
//! real etcd produces only by chance.

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use portico::etcd::{Client, ClientOptions, EventKind, WatchMessage, WatchOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How the scripted answer ends.
#[derive(Clone, Copy)]
enum End {
    /// The terminating zero-length chunk.
    Clean,
    /// The connection is closed mid-body.
    Abrupt,
}

/// Serves one watch request: answers with `pieces`, each as its own HTTP chunk, flushed and
/// spaced so they arrive as separate reads. Returns the port and the request head + body.
async fn replay(pieces: Vec<Vec<u8>>, end: End) -> (u16, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head and the (Content-Length) body.
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&req).to_string());
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for p in pieces {
            let mut chunk = format!("{:x}\r\n", p.len()).into_bytes();
            chunk.extend_from_slice(&p);
            chunk.extend_from_slice(b"\r\n");
            if sock.write_all(&chunk).await.is_err() {
                return;
            }
            sock.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        if let End::Clean = end {
            let _ = sock.write_all(b"0\r\n\r\n").await;
            // Keep the connection until the client is done with it.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    (port, rx)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn created(rev: i64) -> String {
    format!("{{\"result\":{{\"header\":{{\"revision\":\"{rev}\"}},\"created\":true}}}}\n")
}

fn event(rev: i64, key: &str, value: &serde_json::Value) -> String {
    format!(
        "{{\"result\":{{\"header\":{{\"revision\":\"{rev}\"}},\"events\":[{{\"kv\":{{\"key\":\"{}\",\"value\":\"{}\",\"mod_revision\":\"{rev}\",\"version\":\"1\",\"create_revision\":\"{rev}\"}}}}]}}}}\n",
        b64(key),
        b64(&value.to_string())
    )
}

fn client(port: u16, extra: Vec<(String, String)>) -> Client {
    Client::new(ClientOptions {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        api_prefix: Some("/v3".into()),
        extra_headers: extra,
        ..Default::default()
    })
    .unwrap()
}

async fn collect(c: &Client) -> Vec<Result<WatchMessage, portico::etcd::Error>> {
    let w = c.watchdir("/k/", WatchOptions::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), w.collect::<Vec<_>>())
        .await
        .expect("the stream ends")
}

fn revision_of(m: &WatchMessage) -> i64 {
    match m {
        WatchMessage::Events { events, .. } => events[0].kv.mod_revision,
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn every_line_is_a_message_whatever_the_chunking() {
    let ev2 = event(7, "/k/2", &json!({"n": 2}));
    let (a, rest) = ev2.split_at(10);
    let (b, c) = rest.split_at(25);
    let pieces: Vec<Vec<u8>> = vec![
        // created and the first event in one read
        format!("{}{}", created(5), event(6, "/k/1", &json!(1))).into_bytes(),
        // one line split over three reads
        a.into(),
        b.into(),
        c.into(),
        // a bare newline
        b"\n".to_vec(),
        // two events and the cancel in one read
        format!(
            "{}{}{{\"result\":{{\"header\":{{\"revision\":\"9\"}},\"canceled\":true,\"cancel_reason\":\"closed by test\"}}}}\n",
            event(8, "/k/3", &json!(3)),
            event(9, "/k/4", &json!(4)),
        )
        .into_bytes(),
    ];
    let (port, req) = replay(pieces, End::Clean).await;
    let c = client(port, vec![("X-Portico-Test".into(), "yes".into())]);
    let msgs: Vec<WatchMessage> = collect(&c).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(msgs.len(), 6, "{msgs:#?}");
    assert!(matches!(msgs[0], WatchMessage::Created { ref header, .. } if header.revision == 5));
    let revs: Vec<i64> = msgs[1..5].iter().map(revision_of).collect();
    assert_eq!(revs, [6, 7, 8, 9]);
    if let WatchMessage::Events { events, .. } = &msgs[2] {
        assert_eq!(
            (events[0].kind, events[0].kv.value.clone()),
            (EventKind::Put, Ok(json!({"n": 2})))
        );
    }
    assert_eq!(
        msgs[5],
        WatchMessage::Canceled {
            reason: "closed by test".into()
        }
    );

    // The request: the watch path, extra headers, a create_request with the base64 prefix.
    let req = req.await.unwrap();
    assert!(req.starts_with("POST /v3/watch HTTP/1.1\r\n"), "{req}");
    assert!(
        req.to_ascii_lowercase().contains("x-portico-test: yes"),
        "{req}"
    );
    assert!(
        req.contains(&format!("\"key\":\"{}\"", b64("/k/"))),
        "{req}"
    );
    assert!(
        req.contains(&format!("\"range_end\":\"{}\"", b64("/k0"))),
        "{req}"
    );
}

#[tokio::test]
async fn a_value_over_one_mib_over_many_chunks_then_a_3_4_error_without_newline() {
    let big = json!("z".repeat(1_200_000));
    let line = format!("{}{}", created(1), event(2, "/k/big", &big));
    let mut pieces: Vec<Vec<u8>> = line
        .as_bytes()
        .chunks(64 * 1024)
        .map(<[u8]>::to_vec)
        .collect();
    pieces.push(
        br#"{"error":{"grpc_code":1,"http_code":408,"message":"grpc: the client connection is closing","http_status":"Request Timeout"}}"#
            .to_vec(),
    );
    let (port, _req) = replay(pieces, End::Clean).await;
    let msgs = collect(&client(port, vec![])).await;
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    match &msgs[1] {
        Ok(WatchMessage::Events { events, .. }) => assert_eq!(events[0].kv.value, Ok(big)),
        other => panic!("expected the big event, got {other:?}"),
    }
    assert!(matches!(
        &msgs[2],
        Ok(WatchMessage::ServerError { code: Some(1), http_code: Some(408), message }) if message.contains("closing")
    ));
}

#[tokio::test]
async fn a_3_5_error_then_an_abrupt_close() {
    let pieces = vec![
        created(3).into_bytes(),
        b"{\"error\":{\"code\":14,\"message\":\"etcdserver: no leader\"}}\n".to_vec(),
    ];
    let (port, _req) = replay(pieces, End::Abrupt).await;
    let msgs = collect(&client(port, vec![])).await;
    assert!(matches!(msgs[0], Ok(WatchMessage::Created { .. })));
    assert!(matches!(
        &msgs[1],
        Ok(WatchMessage::ServerError {
            code: Some(14),
            http_code: None,
            ..
        })
    ));
    // The cut connection is reported as a transport error, then the stream ends.
    assert!(msgs.len() <= 3, "{msgs:#?}");
    if let Some(last) = msgs.get(2) {
        assert!(
            matches!(last, Err(e) if e.is_endpoint_failure()),
            "{last:?}"
        );
    }
}

#[tokio::test]
async fn garbage_in_the_stream_is_a_decode_error_not_a_panic() {
    let pieces = vec![
        created(3).into_bytes(),
        b"<html>oops</html>\n".to_vec(),
        event(4, "/k/a", &json!(1)).into_bytes(),
    ];
    let (port, _req) = replay(pieces, End::Clean).await;
    let msgs = collect(&client(port, vec![])).await;
    assert_eq!(msgs.len(), 3);
    assert!(matches!(&msgs[1], Err(portico::etcd::Error::Decode { .. })));
    assert_eq!(revision_of(msgs[2].as_ref().unwrap()), 4);
}

/// Answers every request with a chunked body of `x` bytes that never ends a line, up to
/// `limit` bytes (then it stops writing and keeps the connection open).
async fn endless(limit: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let piece = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < limit {
                    let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                    chunk.extend_from_slice(&piece);
                    chunk.extend_from_slice(b"\r\n");
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += piece.len();
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_answer_or_watch_line_without_end_is_cut_at_the_limit() {
    let bounded = |port: u16| {
        Client::new(ClientOptions {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            api_prefix: Some("/v3".into()),
            max_response_bytes: 1024 * 1024,
            ..Default::default()
        })
        .unwrap()
    };
    let port = endless(64 * 1024 * 1024).await;
    let c = bounded(port);
    // A range whose body never ends.
    let err = tokio::time::timeout(Duration::from_secs(20), c.get("/k", Default::default()))
        .await
        .expect("not read forever")
        .unwrap_err();
    assert!(
        err.to_string().contains("larger than 1048576 bytes"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // It counted against the endpoint.
    let again = c.get("/k", Default::default()).await.unwrap_err();
    assert!(again.to_string().contains("unhealthy"), "{again}");
    // A watch whose first line never ends.
    let c = bounded(endless(64 * 1024 * 1024).await);
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        match c.watchdir("/k/", WatchOptions::default()).await {
            Err(e) => e.to_string(),
            Ok(mut w) => match w.next().await {
                Some(Err(e)) => e.to_string(),
                other => format!("{other:?}"),
            },
        }
    })
    .await
    .expect("not read forever");
    assert!(got.contains("larger than 1048576 bytes"), "{got}");
}

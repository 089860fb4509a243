//! The access log and the logger plugins through the real binary: lines on disk (and after a
//! logrotate-style rename and SIGUSR1), entries received by real HTTP, TCP and UDP servers,
//! and a dead log server that never slows the proxy.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use harness::gateway::{Echo, Gateway};
use harness::{wait_until, TempDir};

fn yaml(routes: &[Value]) -> String {
    let mut s = String::from("routes:\n");
    for r in routes {
        s.push_str(&format!("  - {r}\n"));
    }
    s.push_str("#END\n");
    s
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_access_log_has_apisix_default_lines_and_follows_logrotate() {
    let echo = Echo::start("up");
    let dir = TempDir::new("access");
    let log = dir.path().join("logs/access.log");
    let g = Gateway::start_with_config(
        &yaml(&[
            json!({"id": "1", "uri": "/hello", "upstream": {"nodes": {echo.addr(): 1}},
                       "plugins": {"proxy-rewrite": {"uri": "/rewritten"}}}),
        ]),
        &format!("access_log:\n  path: \"{}\"\n", log.display()),
    );
    let r = g.request(
        "GET",
        "/hello?a=1",
        &[("User-Agent", "test \"agent\""), ("Referer", "http://r/")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(g.get("/nowhere", None).status, 404);
    assert!(wait_until(Duration::from_secs(5), || read(&log)
        .lines()
        .count()
        == 2));
    let text = read(&log);
    let lines: Vec<&str> = text.lines().collect();
    // $remote_addr - $remote_user [$time_local] $http_host "$request" $status
    // $body_bytes_sent $request_time "$http_referer" "$http_user_agent" $upstream_addr
    // $upstream_status $upstream_response_time "$upstream_scheme://$upstream_host$upstream_uri"
    // "$apisix_request_id"
    let first = lines[0];
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    let after_time = first.split_once("] ").unwrap().1;
    let fields: Vec<&str> = after_time.splitn(3, ' ').collect();
    assert_eq!(fields[0], "localhost", "{first}");
    assert!(
        after_time.contains("\"GET /hello?a=1 HTTP/1.1\" 200 "),
        "the request line as the client sent it: {first}"
    );
    assert!(
        first.contains("\"http://r/\" \"test \\x22agent\\x22\""),
        "{first}"
    );
    assert!(first.contains(&format!(" {} 200 ", echo.addr())), "{first}");
    assert!(
        first.contains(&format!("\"http://{}/rewritten?a=1\"", "localhost")),
        "the request as it went upstream: {first}"
    );
    let second = lines[1];
    assert!(
        second.contains("\"GET /nowhere HTTP/1.1\" 404 ") && second.contains(" - - - \"-://--\""),
        "no upstream: {second}"
    );

    // logrotate: rename, SIGUSR1, the next lines go to a new file
    let rotated = dir.path().join("logs/access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let ok = Command::new("kill")
        .args(["-USR1", &g.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(wait_until(Duration::from_secs(5), || {
        g.get("/hello", None);
        log.exists() && read(&log).contains("/hello")
    }));
    // what was written before the writer saw the signal stays in the renamed file
    assert!(read(&rotated).starts_with(&text), "{}", read(&rotated));
    assert!(g.ready(), "SIGUSR1 does not stop the gateway");
}

#[test]
fn a_custom_access_log_format() {
    let echo = Echo::start("up");
    let dir = TempDir::new("access-fmt");
    let log = dir.path().join("a.log");
    let g = Gateway::start_with_config(
        &yaml(&[json!({"id": "r1", "uri": "/x", "upstream": {"nodes": {echo.addr(): 1}}})]),
        &format!(
            "access_log:\n  path: \"{}\"\n  format: '$status $request_method $uri $route_id $arg_q $http_x_missing'\n",
            log.display()
        ),
    );
    assert_eq!(g.get("/x?q=1", None).status, 200);
    assert!(wait_until(Duration::from_secs(5), || !read(&log).is_empty()));
    assert_eq!(read(&log), "200 GET /x r1 1 -\n");
}

/// A TCP server that keeps what it receives, one connection at a time.
fn tcp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            keep.lock().unwrap().push(buf);
        }
    });
    (port, got)
}

#[test]
fn http_logger_sends_apisix_entries_in_batches() {
    let echo = Echo::start("up");
    let receiver = Echo::start("logs");
    let up = json!({"nodes": {echo.addr(): 1}});
    let g = Gateway::start(&format!(
        "{}consumers:\n  - {}\n#END\n",
        yaml(&[
            json!({"id": "1", "uri": "/full", "upstream": up,
                   "plugins": {"key-auth": {}, "http-logger": {
                       "uri": format!("http://{}/logs?x=1", receiver.addr()),
                       "auth_header": "Bearer t", "batch_max_size": 2, "inactive_timeout": 1,
                       "include_req_body": true, "include_resp_body": true}}}),
            json!({"id": "2", "uri": "/custom", "upstream": up,
                   "plugins": {"http-logger": {
                       "uri": format!("http://{}/custom", receiver.addr()),
                       "batch_max_size": 1, "concat_method": "new_line",
                       "log_format": {"host": "$host", "client": "$remote_addr", "st": "$status",
                                      "fixed": 7, "nested": {"m": "$request_method"}}}}}),
        ])
        .trim_end_matches("#END\n"),
        json!({"username": "jack", "plugins": {"key-auth": {"key": "k1"}}})
    ));
    for body in ["one", "two", "three"] {
        let r = harness::gateway::request(g.port, "POST", "/full?q=v", &[("apikey", "k1")], body);
        assert_eq!(r.status, 200);
    }
    // two at once (a full batch), the third after inactive_timeout
    assert!(wait_until(Duration::from_secs(10), || receiver
        .seen()
        .len()
        >= 2));
    let seen = receiver.seen();
    assert_eq!(seen[0]["path"], "/logs?x=1");
    assert_eq!(seen[0]["method"], "POST");
    assert_eq!(seen[0]["headers"]["authorization"], "Bearer t");
    assert_eq!(seen[0]["headers"]["content-type"], "application/json");
    let batch: Vec<Value> = serde_json::from_str(seen[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(batch.len(), 2);
    let e = &batch[0];
    assert_eq!(e["route_id"], "1");
    assert_eq!(e["service_id"], "");
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["request"]["uri"], "/full?q=v");
    assert_eq!(e["request"]["querystring"]["q"], "v");
    assert_eq!(e["request"]["headers"]["apikey"], "k1");
    assert_eq!(e["request"]["body"], "one");
    assert!(e["request"]["url"].as_str().unwrap().ends_with("/full?q=v"));
    assert!(e["request"]["size"].as_u64().unwrap() > 0);
    assert_eq!(e["response"]["status"], 200);
    assert!(e["response"]["body"]
        .as_str()
        .unwrap()
        .contains("\"server\":\"up\""));
    assert!(e["response"]["headers"]["content-length"].is_string());
    assert_eq!(e["upstream"], echo.addr());
    assert_eq!(e["consumer"]["username"], "jack");
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert!(e["latency"].as_f64().unwrap() >= 0.0);
    assert!(e["upstream_latency"].as_f64().is_some());
    assert!(e["apisix_latency"].as_f64().is_some());
    assert!(e["start_time"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(!e["server"]["hostname"].as_str().unwrap().is_empty());
    assert!(wait_until(Duration::from_secs(10), || receiver
        .seen()
        .len()
        >= 2
        && receiver
            .seen()
            .iter()
            .filter(|s| s["path"] == "/logs?x=1")
            .count()
            == 2));

    assert_eq!(g.get("/custom", Some("example.com")).status, 200);
    assert!(wait_until(Duration::from_secs(10), || receiver
        .seen()
        .iter()
        .any(|s| s["path"] == "/custom")));
    let custom = receiver
        .seen()
        .into_iter()
        .find(|s| s["path"] == "/custom")
        .unwrap();
    assert_eq!(custom["headers"]["content-type"], "text/plain");
    let entry: Value = serde_json::from_str(custom["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        entry,
        json!({"host": "example.com", "client": "127.0.0.1", "st": "200", "fixed": 7,
               "nested": {"m": "GET"}, "route_id": "2"})
    );
}

#[test]
fn tcp_udp_and_file_loggers() {
    let echo = Echo::start("up");
    let up = json!({"nodes": {echo.addr(): 1}});
    let (tcp_port, tcp_got) = tcp_sink();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let dir = TempDir::new("file-logger");
    let file = dir.path().join("requests.log");
    let g = Gateway::start(&yaml(&[
        json!({"id": "t", "uri": "/tcp", "upstream": up,
               "plugins": {"tcp-logger": {"host": "127.0.0.1", "port": tcp_port, "batch_max_size": 1}}}),
        json!({"id": "u", "uri": "/udp", "upstream": up,
               "plugins": {"udp-logger": {"host": "127.0.0.1", "port": udp_port, "batch_max_size": 1,
                                          "log_format": {"u": "$uri"}}}}),
        json!({"id": "f", "uri": "/file", "upstream": up,
               "plugins": {"file-logger": {"path": file.display().to_string(),
                                           "log_format": {"s": "$status", "u": "$uri"}}}}),
    ]));
    assert_eq!(g.get("/tcp", None).status, 200);
    assert!(wait_until(Duration::from_secs(10), || !tcp_got
        .lock()
        .unwrap()
        .is_empty()));
    let entry: Value = serde_json::from_str(&tcp_got.lock().unwrap()[0]).unwrap();
    assert_eq!(
        entry["route_id"], "t",
        "a batch of one is one object: {entry}"
    );
    assert_eq!(entry["response"]["status"], 200);

    assert_eq!(g.get("/udp", None).status, 200);
    let mut buf = [0u8; 65536];
    let n = udp.recv(&mut buf).unwrap();
    let entry: Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(entry, json!({"u": "/udp", "route_id": "u"}));

    assert_eq!(g.get("/file", None).status, 200);
    assert_eq!(g.get("/file", None).status, 200);
    assert!(wait_until(Duration::from_secs(10), || read(&file)
        .lines()
        .count()
        == 2));
    let first: Value = serde_json::from_str(read(&file).lines().next().unwrap()).unwrap();
    assert_eq!(first, json!({"s": "200", "u": "/file", "route_id": "f"}));
    // moved away (logrotate): the next entry starts a new file
    std::fs::rename(&file, dir.path().join("requests.log.1")).unwrap();
    assert_eq!(g.get("/file", None).status, 200);
    assert!(wait_until(Duration::from_secs(10), || read(&file)
        .lines()
        .count()
        == 1));
}

/// RSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_dead_log_server_neither_slows_nor_grows_the_gateway() {
    let echo = Echo::start("up");
    // accepts connections and never answers: every send waits for its timeout
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = blackhole.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in blackhole.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let g = Gateway::start(&yaml(&[json!({
        "id": "1", "uri": "/x", "upstream": {"nodes": {echo.addr(): 1}},
        "plugins": {"http-logger": {"uri": format!("http://{hole}/"), "timeout": 30,
                                    "batch_max_size": 10, "max_pending_entries": 100,
                                    "include_resp_body": true}}
    })]));
    let burst = |n: usize| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let port = g.port;
                std::thread::spawn(move || {
                    (0..n / 4)
                        .filter(|_| harness::http_get(port, "/x").map(|r| r.0) == Some(200))
                        .count()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<usize>()
    };
    assert_eq!(burst(2000), 2000);
    let before = rss_kib(g.pid());
    assert_eq!(
        burst(8000),
        8000,
        "every request answered while the log server hangs"
    );
    let after = rss_kib(g.pid());
    assert!(
        after < before + 16 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    assert!(
        g.log().contains("the log queue is full"),
        "the drop is said: {}",
        g.log()
    );
}

#[test]
fn syslog_frames_entries_as_rfc5424_over_udp_and_tcp() {
    let echo = Echo::start("up");
    let up = json!({"nodes": {echo.addr(): 1}});
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let (tcp_port, tcp_got) = tcp_sink();
    let g = Gateway::start(&yaml(&[
        json!({"id": "su", "uri": "/su", "upstream": up,
               "plugins": {"syslog": {"host": "127.0.0.1", "port": udp_port, "sock_type": "udp",
                                      "batch_max_size": 1, "log_format": {"u": "$uri"}}}}),
        json!({"id": "st", "uri": "/st", "upstream": up,
               "plugins": {"syslog": {"host": "127.0.0.1", "port": tcp_port, "batch_max_size": 2}}}),
    ]));
    assert_eq!(g.get("/su", Some("example.com")).status, 200);
    let mut buf = [0u8; 65536];
    let n = udp.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // <PRI>1 TIMESTAMP HOST APP PID MSGID SD MSG: facility SYSLOG (5), severity INFO (6)
    let parts: Vec<&str> = line.splitn(8, ' ').collect();
    assert_eq!(parts[0], "<46>1", "{line}");
    assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "{line}");
    assert_eq!(parts[2], "example.com");
    assert_eq!(parts[3], "apisix");
    assert_eq!(parts[4], g.pid().to_string());
    assert_eq!((parts[5], parts[6]), ("-", "-"));
    assert!(line.ends_with('\n'));
    let entry: Value = serde_json::from_str(parts[7].trim_end()).unwrap();
    assert_eq!(entry, json!({"u": "/su", "route_id": "su"}));

    for _ in 0..2 {
        assert_eq!(g.get("/st", None).status, 200);
    }
    assert!(wait_until(Duration::from_secs(10), || !tcp_got
        .lock()
        .unwrap()
        .is_empty()));
    let got = tcp_got.lock().unwrap()[0].clone();
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 2, "two frames in one batch: {got}");
    for l in lines {
        assert!(
            l.starts_with("<46>1 ") && l.contains(" localhost apisix "),
            "{l}"
        );
        let json = l.splitn(8, ' ').nth(7).unwrap();
        let e: Value = serde_json::from_str(json).unwrap();
        assert_eq!(e["route_id"], "st");
    }
}

#[test]
fn a_loggers_log_format_can_come_from_plugin_metadata() {
    let echo = Echo::start("up");
    let receiver = Echo::start("logs");
    let up = json!({"nodes": {echo.addr(): 1}});
    let logger = |path: &str| json!({"uri": format!("http://{}/{path}", receiver.addr()), "batch_max_size": 1});
    let mut own = logger("own");
    own["log_format"] = json!({"own": "$uri"});
    let g = Gateway::start(&format!(
        "{}plugin_metadata:\n  - {}\n#END\n",
        yaml(&[
            json!({"id": "m", "uri": "/m", "upstream": up, "plugins": {"http-logger": logger("meta")}}),
            json!({"id": "o", "uri": "/o", "upstream": up, "plugins": {"http-logger": own}}),
        ])
        .trim_end_matches("#END\n"),
        json!({"id": "http-logger", "log_format": {"h": "$host", "m": "$request_method"}})
    ));
    assert_eq!(g.status()["counts"]["plugin_metadata"], 1, "{}", g.status());
    assert_eq!(g.get("/m", Some("meta.test")).status, 200);
    assert_eq!(g.get("/o", None).status, 200);
    let body = |path: &str| {
        receiver
            .seen()
            .into_iter()
            .find(|s| s["path"] == path)
            .and_then(|s| serde_json::from_str::<Value>(s["body"].as_str()?).ok())
    };
    assert!(wait_until(Duration::from_secs(10), || body("/meta")
        .is_some()
        && body("/own").is_some()));
    assert_eq!(
        body("/meta").unwrap(),
        json!([{"h": "meta.test", "m": "GET", "route_id": "m"}])
    );
    // the plugin's own log_format wins
    assert_eq!(
        body("/own").unwrap(),
        json!([{"own": "/o", "route_id": "o"}])
    );
}

/// One request an OTLP/HTTP receiver got: path, headers (lowercased) and the raw body.
type Export = (String, std::collections::BTreeMap<String, String>, Vec<u8>);

/// A collector: answers every POST with 200 over keep-alive connections and keeps what came.
fn otlp_receiver() -> (u16, Arc<Mutex<Vec<Export>>>) {
    use std::io::{BufRead, BufReader, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut out = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut headers = std::collections::BTreeMap::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock().unwrap().push((path, headers, body));
                    let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, got)
}

/// Every span the receiver got, with its resource's attributes.
fn spans(
    got: &Mutex<Vec<Export>>,
) -> Vec<(
    opentelemetry_proto::tonic::trace::v1::Span,
    std::collections::BTreeMap<String, String>,
)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let mut out = Vec::new();
    for (_, _, body) in got.lock().unwrap().iter() {
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP protobuf body");
        for rs in req.resource_spans {
            let resource = attrs(&rs.resource.unwrap_or_default().attributes);
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push((span, resource.clone()));
                }
            }
        }
    }
    out
}

/// Attributes as text (ints and doubles written out).
fn attrs(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> std::collections::BTreeMap<String, String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    list.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(V::StringValue(s)) => s.clone(),
                Some(V::IntValue(i)) => format!("int:{i}"),
                Some(V::DoubleValue(d)) => format!("double:{d}"),
                Some(V::BoolValue(b)) => format!("bool:{b}"),
                _ => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn opentelemetry_propagates_w3c_context_and_exports_sampled_spans_over_otlp() {
    let echo = Echo::start("up");
    let (port, got) = otlp_receiver();
    let dir = TempDir::new("otel");
    let log = dir.path().join("access.log");
    let up = json!({"nodes": {echo.addr(): 1}});
    let dead = json!({"nodes": {format!("127.0.0.1:{}", harness::free_port()): 1}});
    let otel = |sampler: Value| {
        json!({"opentelemetry": {"sampler": sampler,
        "additional_attributes": ["route_id", "arg_q"],
        "additional_header_prefix_attributes": ["x-my-*", "x-one"]}})
    };
    let g = Gateway::start_with_config(
        &format!(
            "{}plugin_metadata:\n  - {}\n#END\n",
            yaml(&[
                json!({"id": "on", "name": "traced", "uri": "/on/*", "upstream": up,
                       "plugins": otel(json!({"name": "always_on"}))}),
                json!({"id": "off", "uri": "/off", "upstream": up,
                       "plugins": otel(json!({}))}),
                json!({"id": "parent", "uri": "/parent", "upstream": up,
                       "plugins": otel(json!({"name": "parent_base"}))}),
                json!({"id": "ratio", "uri": "/ratio", "upstream": up,
                       "plugins": otel(json!({"name": "trace_id_ratio", "options": {"fraction": 1}}))}),
                json!({"id": "dead", "uri": "/dead", "upstream": dead,
                       "plugins": otel(json!({"name": "always_on"}))}),
            ])
            .trim_end_matches("#END\n"),
            json!({"id": "opentelemetry", "trace_id_source": "x-request-id", "set_ngx_var": true,
                   "resource": {"service.name": "gw-test", "env": "ci"},
                   "collector": {"address": format!("127.0.0.1:{port}"),
                                 "request_headers": {"foo": "bar"}},
                   "batch_span_processor": {"max_export_batch_size": 1, "inactive_timeout": 0.5}})
        ),
        &format!(
            "access_log:\n  path: \"{}\"\n  format: '$uri $opentelemetry_trace_id $opentelemetry_span_id'\n",
            log.display()
        ),
    );

    // A new trace: the upstream gets a sampled traceparent, the collector the server span.
    let r = g.request(
        "GET",
        "/on/x?q=v",
        &[
            ("User-Agent", "ua/1"),
            ("X-My-A", "1"),
            ("X-One", "2"),
            ("X-Other", "3"),
        ],
    );
    assert_eq!(r.status, 200);
    let sent = r.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{sent}");
    assert!(wait_until(Duration::from_secs(10), || spans(&got).len() == 1));
    let (path, headers, _) = got.lock().unwrap()[0].clone();
    assert_eq!(path, "/v1/traces");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["foo"], "bar");
    let (span, resource) = spans(&got).remove(0);
    assert_eq!(resource["service.name"], "gw-test");
    assert_eq!(resource["env"], "ci");
    assert!(!resource["hostname"].is_empty());
    assert_eq!(hex(&span.trace_id), parts[1]);
    assert_eq!(hex(&span.span_id), parts[2]);
    assert!(span.parent_span_id.is_empty());
    assert_eq!(span.name, "GET /on/*");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert!(span.start_time_unix_nano > 1_700_000_000_000_000_000);
    let a = attrs(&span.attributes);
    for (k, v) in [
        ("http.method", "GET"),
        ("http.request.method", "GET"),
        ("http.target", "/on/x?q=v"),
        ("url.path", "/on/x"),
        ("url.scheme", "http"),
        ("http.scheme", "http"),
        ("user_agent.original", "ua/1"),
        ("net.host.name", "localhost"),
        ("apisix.route_id", "on"),
        ("apisix.route_name", "traced"),
        ("http.route", "/on/*"),
        ("apisix.response_source", "upstream"),
        ("http.status_code", "int:200"),
        ("http.response.status_code", "int:200"),
        ("route_id", "on"),
        ("arg_q", "v"),
        ("x-my-a", "1"),
        ("x-one", "2"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} in {a:?}");
    }
    assert!(!a.contains_key("x-other"), "{a:?}");
    assert_eq!(span.status.clone().unwrap_or_default().code, 0);
    // set_ngx_var: the access log has the ids.
    assert!(wait_until(Duration::from_secs(5), || read(&log)
        .contains(&format!("/on/x {} {}", parts[1], parts[2]))));

    // always_off (the default): still propagated, as not sampled, and nothing exported.
    let r = g.get("/off", None);
    let off = r.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(off.starts_with("00-") && off.ends_with("-00"), "{off}");

    // parent_base follows the caller: sampled parent -> a child span in the same trace.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = g.request(
        "GET",
        "/parent",
        &[("traceparent", parent), ("tracestate", "k=v")],
    );
    let sent = r.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(
        sent.ends_with("-01") && !sent.contains("00f067aa0ba902b7"),
        "{sent}"
    );
    assert_eq!(r.echo()["headers"]["tracestate"], "k=v");
    // ... an unsampled parent -> not sampled; a malformed one -> a new (root, unsampled) trace.
    let r = g.request(
        "GET",
        "/parent",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
    );
    assert!(r.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .ends_with("-00"));
    let r = g.request("GET", "/parent", &[("traceparent", "00-zz-bad-01")]);
    let fresh = r.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !fresh.contains("4bf92f35") && fresh.ends_with("-00"),
        "{fresh}"
    );

    // trace_id_ratio 1 samples; trace_id_source x-request-id takes a 32-hex request id.
    let rid = "0af7651916cd43dd8448eb211c80319c";
    let r = g.request("GET", "/ratio", &[("X-Request-Id", rid)]);
    let sent = r.echo()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sent.starts_with(&format!("00-{rid}-")), "{sent}");

    // A failed upstream: the span says ERROR with APISIX's message.
    assert_eq!(g.get("/dead", None).status, 502);

    assert!(wait_until(Duration::from_secs(10), || spans(&got).len() == 4));
    let all = spans(&got);
    let by_route = |id: &str| {
        all.iter()
            .find(|(s, _)| {
                attrs(&s.attributes)
                    .get("apisix.route_id")
                    .map(String::as_str)
                    == Some(id)
            })
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| panic!("no span of route {id}"))
    };
    let child = by_route("parent");
    assert_eq!(hex(&child.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&child.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(child.trace_state, "k=v");
    assert_eq!(hex(&by_route("ratio").trace_id), rid);
    let failed = by_route("dead");
    let status = failed.status.unwrap_or_default();
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR");
    assert_eq!(status.message, "nginx error: 502");
    assert_eq!(attrs(&failed.attributes)["http.status_code"], "int:502");
    assert!(
        !all.iter()
            .any(|(s, _)| attrs(&s.attributes)["apisix.route_id"] == "off"),
        "always_off exported nothing"
    );
}

#[test]
fn opentelemetry_without_metadata_traces_nothing_and_bad_metadata_is_named() {
    let echo = Echo::start("up");
    let up = json!({"nodes": {echo.addr(): 1}});
    let g = Gateway::start(&format!(
        "{}plugin_metadata:\n  - {}\n#END\n",
        yaml(&[json!({"id": "1", "uri": "/t", "upstream": up,
                       "plugins": {"opentelemetry": {"sampler": {"name": "always_on"}}}})])
        .trim_end_matches("#END\n"),
        json!({"id": "opentelemetry", "collector": {"address": "127.0.0.1:4318"},
               "batch_span_processor": {"batch_timeout": -1}})
    ));
    // The route serves (tracing protects nothing); its metadata is refused and named.
    let r = g.get("/t", None);
    assert_eq!(r.status, 200);
    assert!(r.echo()["headers"].get("traceparent").is_none());
    let status = g.status().to_string();
    assert!(
        status.contains("batch_span_processor.batch_timeout"),
        "{status}"
    );
    // A bad plugin setting rejects its route, naming the field.
    g.update(&yaml(&[json!({"id": "2", "uri": "/u", "upstream": up,
        "plugins": {"opentelemetry": {"sampler": {"name": "trace_id_ratio",
                                                   "options": {"fraction": 7}}}}})]));
    assert!(wait_until(Duration::from_secs(5), || g
        .status()
        .to_string()
        .contains("sampler.options.fraction")));
    assert_eq!(g.get("/u", None).status, 404);
}

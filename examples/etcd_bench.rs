//! Round trips per second of the etcd client (one caller, then 64 concurrent callers over one
//! client) and the delay from a put to its event on an open watch.
//!
//! Start an etcd first, then (release build):
//! cargo run --release --example etcd_bench -- --endpoint http://127.0.0.1:2379 [--seconds 5] [--puts 1000]

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use portico::etcd::{Client, ClientOptions, GetOptions, SetOptions, WatchMessage, WatchOptions};
use serde_json::json;

struct Args {
    endpoint: String,
    seconds: u64,
    puts: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        endpoint: "http://127.0.0.1:2379".into(),
        seconds: 5,
        puts: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--endpoint" => args.endpoint = value,
            "--seconds" => args.seconds = value.parse().unwrap_or(5),
            "--puts" => args.puts = value.parse().unwrap_or(1000),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    args
}

/// Runs `callers` loops of `op` for `secs` and returns operations per second.
async fn rate(client: &Client, callers: usize, secs: u64, put: bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|n| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                let key = format!("/bench/{n}");
                let value = json!({"uri": "/bench", "n": n});
                while Instant::now() < deadline {
                    let ok = if put {
                        c.set(&key, &value, SetOptions::default()).await.is_ok()
                    } else {
                        c.get(&key, GetOptions::default()).await.is_ok()
                    };
                    if ok {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / secs as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} median={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}

/// Put → event delay: `by_etcdctl` spawns `etcdctl put` (timed from the spawn; process start
/// included), otherwise the client's own put (timed from its acknowledgement).
async fn watch_delay(client: &Client, endpoint: &str, puts: usize, by_etcdctl: bool) {
    let prefix = if by_etcdctl {
        "/lat-etcdctl/"
    } else {
        "/lat-client/"
    };
    let mut watch = match client.watchdir(prefix, WatchOptions::default()).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("watch: {e}");
            return;
        }
    };
    let _ = watch.next().await; // created
    let mut samples = Vec::with_capacity(puts);
    for i in 0..puts {
        let key = format!("{prefix}{i}");
        let start = if by_etcdctl {
            let start = Instant::now();
            let status = Command::new("etcdctl")
                .args([&format!("--endpoints={endpoint}"), "put", &key, "{}"])
                .env("ETCDCTL_API", "3")
                .stdout(std::process::Stdio::null())
                .spawn();
            if let Err(e) = status {
                eprintln!("etcdctl: {e}");
                return;
            }
            start
        } else {
            if let Err(e) = client.set(&key, &json!({}), SetOptions::default()).await {
                eprintln!("put: {e}");
                return;
            }
            Instant::now()
        };
        loop {
            match watch.next().await {
                Some(Ok(WatchMessage::Events { events, .. })) => {
                    if events.iter().any(|e| e.kv.key == key) {
                        samples.push(start.elapsed());
                        break;
                    }
                }
                Some(Ok(_)) => {}
                other => {
                    eprintln!("watch ended: {other:?}");
                    return;
                }
            }
        }
    }
    let what = if by_etcdctl {
        "etcdctl put spawned -> event on open watch"
    } else {
        "client put acknowledged -> event on open watch"
    };
    report(what, samples);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let client = match Client::new(ClientOptions {
        endpoints: vec![args.endpoint.clone()],
        ..Default::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("etcd_bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = client
        .set("/bench/0", &json!(0), SetOptions::default())
        .await
    {
        eprintln!("etcd_bench: {e}");
        std::process::exit(1);
    }
    for callers in [1, 64] {
        let puts = rate(&client, callers, args.seconds, true).await;
        let gets = rate(&client, callers, args.seconds, false).await;
        println!("{callers} caller(s): put {puts:.0}/s, get {gets:.0}/s");
    }
    watch_delay(&client, &args.endpoint, args.puts, false).await;
    watch_delay(&client, &args.endpoint, args.puts, true).await;
}

//! A small etcd follower to copy from: read a prefix, then follow it without gaps or repeats.
//!
//! Prints `SNAPSHOT <revision> <keys>`, then one line per event:
//! `<mod_revision> <PUT|DELETE> <key> <value length, 0 for DELETE>`. On compaction it prints
//! `COMPACTED <compact_revision>`, reads the prefix again and goes on; when an endpoint dies it
//! watches again on another one from the last revision it printed.
//!
//! cargo run --example etcd_watch -- --endpoints http://127.0.0.1:2379 --prefix /apisix/

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use portico::etcd::{Client, ClientOptions, EventKind, WatchMessage, WatchOptions};

struct Args {
    endpoints: Vec<String>,
    prefix: String,
    user: Option<String>,
    password: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoints: Vec::new(),
        prefix: String::new(),
        user: None,
        password: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => args.endpoints = value()?.split(',').map(str::to_string).collect(),
            "--prefix" => args.prefix = value()?,
            "--user" => args.user = Some(value()?),
            "--password" => args.password = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.endpoints.is_empty() {
        return Err("--endpoints is required".into());
    }
    Ok(args)
}

/// How a follow ended.
enum Next {
    /// Watch again from the last revision printed.
    Rewatch,
    /// History is gone: read everything again.
    Reread,
}

async fn follow(client: &Client, prefix: &str, last: &mut i64) -> Next {
    let opts = WatchOptions {
        start_revision: Some(*last + 1),
        ..Default::default()
    };
    let mut watch = match client.watchdir(prefix, opts).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("watch: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Next::Rewatch;
        }
    };
    let mut out = std::io::stdout().lock();
    while let Some(msg) = watch.next().await {
        match msg {
            Ok(WatchMessage::Events { events, .. }) => {
                for e in events {
                    let (kind, len) = match e.kind {
                        EventKind::Put => ("PUT", e.kv.raw_value.len()),
                        EventKind::Delete => ("DELETE", 0),
                    };
                    let _ = writeln!(out, "{} {kind} {} {len}", e.kv.mod_revision, e.kv.key);
                    let _ = out.flush();
                    *last = e.kv.mod_revision;
                }
            }
            Ok(WatchMessage::Compacted { compact_revision }) => {
                let _ = writeln!(out, "COMPACTED {compact_revision}");
                let _ = out.flush();
                return Next::Reread;
            }
            Ok(WatchMessage::Created { .. }) | Ok(WatchMessage::Progress { .. }) => {}
            Ok(other) => {
                eprintln!("watch on {}: {other:?}", watch.endpoint());
                break;
            }
            Err(e) => {
                eprintln!("watch: {e}");
                break;
            }
        }
    }
    Next::Rewatch
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("etcd_watch: {e}\nusage: etcd_watch --endpoints URL[,URL...] --prefix PREFIX [--user U --password P]");
            std::process::exit(2);
        }
    };
    let client = match Client::new(ClientOptions {
        endpoints: args.endpoints,
        user: args.user,
        password: args.password,
        ..Default::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("etcd_watch: {e}");
            std::process::exit(2);
        }
    };
    loop {
        let snapshot = match client.readdir_paged(&args.prefix, 1000).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("read: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        println!("SNAPSHOT {} {}", snapshot.revision, snapshot.kvs.len());
        let mut last = snapshot.revision;
        while let Next::Rewatch = follow(&client, &args.prefix, &mut last).await {}
    }
}

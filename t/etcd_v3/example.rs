//! The `etcd_watch` example, run as a real process against a 3-member cluster.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::EtcdCluster;

fn example(name: &str) -> PathBuf {
    // target/debug/deps/etcd_v3-… → target/debug/examples/NAME
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from etcd_watch")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn etcd_watch_follows_across_a_member_failure_without_gaps_or_repeats() {
    let mut cluster = EtcdCluster::start();
    for i in 0..5 {
        cluster.etcdctl(&["put", &format!("/ex/{i}"), "{}"]);
    }
    cluster.etcdctl(&["put", "/other", "x"]);
    let mut child = Command::new(example("etcd_watch"))
        .args(["--endpoints", &cluster.urls().join(","), "--prefix", "/ex/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the etcd_watch example (built by cargo test)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let f = Follower { child, lines: rx };
    let snap = f.line();
    let parts: Vec<&str> = snap.split_whitespace().collect();
    assert_eq!(parts[0], "SNAPSHOT", "{snap}");
    assert_eq!(parts[2], "5", "{snap}");
    let start: i64 = parts[1].parse().unwrap();

    let mut expected = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            let key = format!("/ex/{round}-{i}");
            cluster.etcdctl(&["put", &key, "12345"]);
            expected.push(format!("PUT {key} 5"));
        }
        cluster.etcdctl(&["del", &format!("/ex/{round}")]);
        expected.push(format!("DELETE /ex/{round} 0"));
        // Take one member down (the follower may be on it), then bring it back.
        if round > 0 {
            cluster.restart(round - 1);
        }
        if round < 2 {
            cluster.stop(round);
        }
    }
    let mut got = Vec::new();
    let mut revisions = Vec::new();
    while got.len() < expected.len() {
        let line = f.line();
        let (rev, rest) = line.split_once(' ').unwrap();
        revisions.push(rev.parse::<i64>().unwrap());
        got.push(rest.to_string());
    }
    assert_eq!(got, expected);
    // Every revision once, in order: start + 1 … (the /other put came before the snapshot).
    let want: Vec<i64> = (start + 1..=start + expected.len() as i64).collect();
    assert_eq!(revisions, want);
    assert!(
        f.lines.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing repeated"
    );
}

//! The access log: one line per request in nginx's `log_format` language, APISIX's default
//! format unless configured, appended to a file (or stdout) by a thread of its own.
//!
//! A request formats its line and queues it (`access_log.buffer` lines at most: beyond, the
//! line is dropped and counted). `SIGUSR1` makes the writer reopen the file, as nginx does
//! for logrotate.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use super::Once;

/// APISIX's default `access_log_format`.
pub const DEFAULT_FORMAT: &str = "$remote_addr - $remote_user [$time_local] $http_host \"$request\" $status $body_bytes_sent $request_time \"$http_referer\" \"$http_user_agent\" $upstream_addr $upstream_status $upstream_response_time \"$upstream_scheme://$upstream_host$upstream_uri\" \"$apisix_request_id\"";

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

struct Writer {
    tx: SyncSender<String>,
    dropped: Once,
}

static WRITER: OnceLock<Writer> = OnceLock::new();
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Starts the writer (once per process); lines are accepted from then on.
pub fn start(target: Target, buffer: usize) -> std::io::Result<()> {
    if WRITER.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = sync_channel(buffer.max(1));
    let mut out = open(&target)?;
    std::thread::Builder::new()
        .name("portico-access-log".into())
        .spawn(move || {
            write_lines(&rx, &target, &mut out);
        })?;
    let _ = WRITER.set(Writer {
        tx,
        dropped: Once::default(),
    });
    super::want_details();
    Ok(())
}

/// Queues one line (without its newline).
pub fn write(line: String) {
    let Some(w) = WRITER.get() else {
        return;
    };
    if let Err(TrySendError::Full(_)) = w.tx.try_send(line) {
        w.dropped
            .say(|n| format!("access log: the disk is not keeping up: dropped {n} lines"));
    }
}

/// Asks the writer to reopen its file (`SIGUSR1`).
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

fn open(target: &Target) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            Box::new(std::io::BufWriter::with_capacity(64 * 1024, f))
        }
    })
}

fn write_lines(rx: &Receiver<String>, target: &Target, out: &mut Box<dyn Write + Send>) {
    loop {
        if REOPEN.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(target) {
                Ok(o) => {
                    *out = o;
                    log::info!("access log reopened");
                }
                Err(e) => log::error!("access log: cannot reopen {target:?}: {e}"),
            }
        }
        let line = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        };
        let mut failed = out
            .write_all(line.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
            .err();
        // Everything queued goes out in one flush.
        while failed.is_none() {
            match rx.try_recv() {
                Ok(l) => {
                    failed = out
                        .write_all(l.as_bytes())
                        .and_then(|_| out.write_all(b"\n"))
                        .err();
                }
                Err(_) => break,
            }
        }
        if let Some(e) = failed.or_else(|| out.flush().err()) {
            log::error!("access log: cannot write {target:?}: {e}");
        }
    }
}

/// A value as nginx's default escaping writes it into a line: `"`, `\` and bytes outside
/// printable ASCII as `\xHH`; an empty value as `-`.
pub fn escape_into(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    for b in value.bytes() {
        match b {
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                out.push_str(&format!("\\x{b:02X}"));
            }
            _ => out.push(b as char),
        }
    }
}

/// The access log as a Pingora background service: starts the writer once the process is
/// what it will stay (after a daemon fork), and reopens the file on every `SIGUSR1`.
pub struct AccessLogService {
    pub target: Target,
    pub buffer: usize,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for AccessLogService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        if let Err(e) = start(self.target.clone(), self.buffer) {
            log::error!("access log {:?}: {e}: no access log", self.target);
            return;
        }
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("access log: cannot listen for SIGUSR1: {e}");
                    return;
                }
            };
        loop {
            tokio::select! {
                _ = usr1.recv() => reopen(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_like_nginx() {
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\nd é");
        assert_eq!(s, "a\\x22b\\x5Cc\\x0Ad \\xC3\\xA9");
        let mut s = String::new();
        escape_into(&mut s, "");
        assert_eq!(s, "-");
    }
}

//! The error log: env_logger, with Pingora's known-benign "failed to acquire reusable stream"
//! (a pooled connection raced between threads, cloudflare/pingora#998: the request simply
//! opens a new one) demoted from ERROR to DEBUG, so an ERROR line always means something.

use log::{Level, Log, Metadata, Record};

struct Quiet(env_logger::Logger);

/// Whether a record is the benign pool race.
fn benign(r: &Record<'_>) -> bool {
    r.level() == Level::Error
        && r.target().starts_with("pingora_core::connectors")
        && match r.args().as_str() {
            Some(s) => s.contains("failed to acquire reusable stream"),
            None => r
                .args()
                .to_string()
                .contains("failed to acquire reusable stream"),
        }
}

impl Log for Quiet {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }

    fn log(&self, r: &Record<'_>) {
        if benign(r) {
            let demoted = Record::builder()
                .args(*r.args())
                .level(Level::Debug)
                .target(r.target())
                .module_path(r.module_path())
                .file(r.file())
                .line(r.line())
                .build();
            if self.0.enabled(demoted.metadata()) {
                self.0.log(&demoted);
            }
            return;
        }
        self.0.log(r)
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// Installs the error log (`RUST_LOG`, default `info`), once.
pub fn init() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Quiet(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pool_race_is_benign() {
        let rec = |level, target: &'static str, msg: std::fmt::Arguments<'static>| {
            benign(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .args(msg)
                    .build(),
            )
        };
        assert!(rec(
            Level::Error,
            "pingora_core::connectors",
            format_args!("failed to acquire reusable stream")
        ));
        assert!(!rec(
            Level::Error,
            "pingora_core::connectors",
            format_args!("connect refused")
        ));
        assert!(!rec(
            Level::Error,
            "portico::proxy",
            format_args!("failed to acquire reusable stream")
        ));
    }
}

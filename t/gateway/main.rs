//! The real `portico` binary on a standalone YAML file, with real upstream servers.
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

mod limits;
mod proxy;
mod reload;
mod routing;
mod tls;

//! The real `portico` binary on a standalone YAML file, with real upstream servers.

#[path = "../harness/mod.rs"]
mod harness;

mod limits;
mod proxy;
mod reload;
mod routing;
mod tls;

//! The real `portico` binary on a standalone YAML file, with real upstream servers.

#[path = "../harness/mod.rs"]
mod harness;

mod proxy;
mod reload;
mod routing;

//! The etcd v3 client against real etcd 3.4 members (and a byte-splitting local server for
//! the watch chunking cases).
#![allow(clippy::disallowed_types)] // tests may use std's Mutex (see clippy.toml)

#[path = "../harness/mod.rs"]
mod harness;

mod auth;
mod chunking;
mod cluster;
mod example;
mod kv;
mod lease;
mod tls;
mod watch;

use portico::etcd::{Client, ClientOptions};

/// A client for these endpoints with the given tweaks.
pub fn client(urls: &[String], tweak: impl FnOnce(&mut ClientOptions)) -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut opts = ClientOptions {
        endpoints: urls.to_vec(),
        ..Default::default()
    };
    tweak(&mut opts);
    Client::new(opts).expect("client options")
}

/// A client for one member with default options.
pub fn client_for(m: &harness::EtcdMember) -> Client {
    client(&[m.url()], |_| {})
}

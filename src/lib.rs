//! Portico: an API gateway data plane on Pingora that keeps its routing config in etcd,
//! in APISIX's layout.
//!
//! # The map
//!
//! Data flows one way, from a config source to the request:
//!
//! ```text
//!  etcd (etcd/) ─┐                                    ┌─ status (status.rs)
//!                ├─ sync/ ─▶ model/ ─▶ tables/ ─▶ proxy/ ─▶ upstream
//!  YAML (config/)┘   JSON     types +   compiled       │     (upstream/: balancers,
//!                             plugin    router/,       │      health, keepalive)
//!                             settings  chains,        └─ plugin/ phases run per request
//!                                       consumers
//! ```
//!
//! - [`etcd`]: the etcd v3 JSON-gateway client (and the v2 keys API); knows nothing of APISIX.
//! - [`config`]: `config.yaml` (the gateway's own settings) and the standalone `apisix.yaml`.
//! - [`sync`]: follows etcd or the YAML file and hands validated resources to the tables.
//! - [`model`]: APISIX's resources as Rust types, parsed and checked one item at a time;
//!   plugin settings are checked there by the [`plugin`] registry, so a bad one rejects its
//!   resource alone.
//! - [`plugin`]: the plugins (settings, and what each does in APISIX's phases), the registry,
//!   compiled chains and the consumer index. Below the model; it knows requests only through
//!   Pingora's session and [`vars`].
//! - [`router`], [`tables`]: the compiled, immutable snapshot a request reads (router, route
//!   chains, balancers, consumers, certificates by SNI), published through arc-swap; a change copies only the
//!   shards it touches.
//! - [`proxy`]: the Pingora `ProxyHttp` (match, run plugins, pick a node, forward), the one
//!   place that writes the gateway's own answers (`proxy/respond.rs`), and the client limits
//!   (`proxy/guard.rs`).
//! - [`tls`]: HTTPS for clients: the certificate for each handshake, by SNI, from the
//!   snapshot's `ssls` (parsed and checked when they load, in the model).
//! - [`upstream`]: balancers, health checks, the keepalive pool accounting.
//! - [`status`]: `/status` and friends, on their own listener.
//! - [`logs`]: where finished requests are written off the request path: the access log's
//!   writer, the logger plugins' batch processor and sinks (HTTP, file, TCP, UDP), and the
//!   `opentelemetry` plugin's OTLP/HTTP exporter.
//! - [`metrics`]: APISIX's Prometheus metrics: per-thread counters the proxy records into
//!   when the `prometheus` plugin asks, folded by the exporter on its own listener.
//! - [`admin`]: APISIX's Admin API, a writer to etcd beside the data path: it checks bodies
//!   with the model and writes with the etcd client; the gateway sees the write come back
//!   through the sync like anyone else's.
//! - [`vars`], [`net`], [`keyring`], [`sharded`]: shared leaves (APISIX variables and `vars`
//!   expressions, CIDRs, APISIX's AES keyring, the sharded map the router and tables copy by
//!   shard).
//! - [`server`]: the process (command line, services); `main.rs` runs it with the built-in
//!   plugins, and a user's binary can run it with more (`examples/custom_plugin.rs`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod etcd;
pub mod keyring;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod net;
pub mod plugin;
pub mod proxy;
pub mod router;
pub mod server;
pub mod sharded;
pub mod status;
pub mod sync;
pub mod tables;
pub mod tls;
pub mod upstream;
pub mod vars;

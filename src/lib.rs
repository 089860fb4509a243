//! Portico: an API gateway data plane on Pingora that keeps its routing config in etcd,
//! in APISIX's layout.
#![forbid(unsafe_code)]

pub mod config;
pub mod etcd;
pub mod keyring;
pub mod model;
pub mod net;
pub mod plugin;
pub mod proxy;
pub mod router;
pub mod server;
pub mod status;
pub mod sync;
pub mod tables;
pub mod upstream;
pub mod vars;

//! Config sources that keep the tables current: the standalone YAML file (and etcd, next).

pub mod etcd;
pub mod yaml;

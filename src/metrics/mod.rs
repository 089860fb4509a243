//! Prometheus metrics in APISIX's names, labels and buckets (`apisix_http_status`,
//! `apisix_http_latency`, `apisix_bandwidth`, connections, etcd, node and upstream health),
//! served on their own listener.
//!
//! The request path only records: the `prometheus` plugin hands a finished request to
//! [`record`], which adds it to the worker thread's own shard (see [`series`]); the exporter
//! folds the shards when it is scraped, so values are as fresh as the scrape. There is no
//! Prometheus crate here: their registries look label values up by string per observation,
//! and the text format is all that is left to write once the counting is done.

pub mod connections;
mod exporter;
mod series;
mod text;

pub use exporter::{ExportSettings, MetricsApp};
pub use series::{
    count_request, fold, record, requests, Histogram, HttpSample, Labels, ResponseSource, Series,
    BUCKETS,
};

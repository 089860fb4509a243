//! How long the sync spends on a consistent-hash upstream, and how big its ring is: parsing
//! the etcd value and building the balancer, for 100, 2,000 and 20,000 nodes of weight 1000.
//!
//!   cargo run --release --example ring_bench

use std::time::Instant;

use portico::model::{Kind, Resource};
use portico::tables::{Change, Tables};

fn main() {
    for n in [100usize, 2_000, 20_000] {
        let nodes: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("10.{}.{}.{}:80", i / 65536, i / 256 % 256, i % 256),
                    serde_json::json!(1000),
                )
            })
            .collect();
        let value =
            serde_json::json!({"id": "c", "type": "chash", "key": "remote_addr", "nodes": nodes});
        let started = Instant::now();
        let resource = match Resource::parse(Kind::Upstream, &value, None) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let parsed = started.elapsed();
        let tables = Tables::default().apply(
            vec![Change::Put {
                seq: 1,
                resource: Box::new(resource),
            }],
            None,
        );
        let total = started.elapsed();
        let balancers = tables.balancers().count();
        println!(
            "{n:>6} nodes: parse {:>6.1} ms, balancer and ring {:>6.1} ms, total {:>6.1} ms ({balancers} balancer)",
            parsed.as_secs_f64() * 1e3,
            (total - parsed).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }
}

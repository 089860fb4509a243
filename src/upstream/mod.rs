//! Upstream node selection, with state (round-robin position) that outlives config swaps.

mod balancer;

pub use balancer::Balancer;

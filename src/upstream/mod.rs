//! Upstream nodes at run time: choosing one (four balancers), their health (active and passive
//! checks) and their latency and load, all kept across config swaps.

mod balancer;
pub mod checker;
pub mod health;
pub mod keepalive;

pub use balancer::{hash64, Balancer, NodeState, Stats};

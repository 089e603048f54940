//! Network control plane: IPAM controllers, status, node labels and taints, leak detection,
//! leadership.

pub mod caches;
pub mod config;
pub mod context;
pub mod defaults;
pub mod engine;
pub mod ipinstance;
pub mod leader;
pub mod leak;
pub mod metrics;
pub mod node;
pub mod nodeinfo;
pub mod nodestate;
pub mod objects;
pub mod pod;
pub mod podstate;
pub mod ratelimit;
pub mod replica;
pub mod resolution;
pub mod run;
pub mod status;

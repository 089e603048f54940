//! Network control plane: IPAM controllers, status, node labels and taints, leak detection,
//! leadership.
//!
//! - [`controllers`]: the reconcilers and loops that read and write the API (pods, IPInstances,
//!   nodes, NodeInfos, network and subnet status, the leak detector);
//! - [`rules`]: pure decisions and object construction they share (pod defaults, network-config
//!   resolution, pod and node state, the objects and patches written);
//! - [`runtime`]: what runs them (leadership terms and election, the replica, caches, the shared
//!   context and in-memory IPAM engine, configuration, rate limit, metrics).

pub mod controllers;
pub mod rules;
pub mod runtime;

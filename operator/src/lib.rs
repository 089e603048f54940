//! hybridnet operator: one leader-elected binary with three parts.
//!
//! - [`lifecycle`]: installs, configures and upgrades hybridnet from `HybridnetCluster/default`.
//! - [`ipam`] and [`controlplane`]: the network control plane (pods -> IPInstances, status, labels).
//! - [`webhook`]: the admission webhook server.

#![forbid(unsafe_code)]

pub mod controlplane;
pub mod ipam;
pub mod lifecycle;
pub mod watch_failure;
pub mod webhook;

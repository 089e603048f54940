//! `multicluster.alibaba.com/v1`: wire-compatible with upstream hybridnet's multi-cluster API
//! (alibaba/hybridnet `pkg/apis/multicluster/v1/`, CRDs in `charts/hybridnet/crds/`). All four
//! kinds are cluster-scoped. What is built on them and what is not yet: docs/multicluster.md.

mod remote_cluster;
mod remote_endpoint_slice;
mod remote_subnet;
mod remote_vtep;

pub mod credentials;
pub mod global_service;
pub mod mirror;
pub mod status;
pub mod validate;

pub use remote_cluster::*;
pub use remote_endpoint_slice::*;
pub use remote_subnet::*;
pub use remote_vtep::*;

/// The API group.
pub const GROUP: &str = "multicluster.alibaba.com";

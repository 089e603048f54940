//! hybridnet API: the custom resource types (`networking.alibaba.com/v1` and
//! `multicluster.alibaba.com/v1`, wire-compatible with the original hybridnet, and
//! `operator.hybridnet.io/v1alpha1`), plus the pure domain rules shared by the
//! webhook, the operator, the node agent and the kubectl plugin: defaulting, address-range
//! validation, IP arithmetic, naming conventions and the pod network-config resolution.
//!
//! Nothing here does I/O; it builds on every OS.

#![forbid(unsafe_code)]

pub mod constants;
pub mod crd;
pub mod error;
pub mod ipmath;
pub mod kubevirt;
pub mod leak;
pub mod mac;
pub mod migration;
pub mod multicluster;
pub mod naming;
pub mod operator;
pub mod platform;
pub mod pools;
pub mod range;
pub mod resolve;
pub mod selector;
pub mod traffic_peer;
pub mod v1;
pub mod validate;

pub use error::{FieldError, FieldErrors};
/// Kubernetes name and label checks (shared with the CNI plugin through `hybridnet-rules`).
pub use hybridnet_rules::names;

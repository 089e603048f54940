//! Cluster lifecycle: the HybridnetCluster reconciler, manifest rendering, the webhook
//! certificates, and the OLM bundle / GitOps install generated from the same code.
//!
//! - [`settings`]: the spec with defaults filled in and every value checked (pure).
//! - [`render`]: the objects the operator applies (pure, deterministic).
//! - [`rbac`]: exact RBAC rules of the operator and the node agent.
//! - [`openshift`]: platform detection and the node agent's SecurityContextConstraints (pure).
//! - [`certs`]: webhook CA and serving certificate, rotation decision (pure) and issuing.
//! - [`status`]: conditions Available/Progressing/Degraded, versions and rollout counts (pure).
//! - [`install`]: the operator's own install objects (Deployment, RBAC) and the OLM bundle.
//! - [`reconcile`]: the kube-runtime controller (the thin I/O shell), entry point [`run`].

pub mod certs;
pub mod install;
pub mod names;
pub mod openshift;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod settings;
pub mod status;

pub use reconcile::{DEFAULT_PROGRESS_DEADLINE, LifecycleConfig, run};

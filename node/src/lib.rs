//! hybridnet node agent.
//!
//! [`plan`] is pure and portable (the kubectl plugin's `trace` uses it); the Linux-only parts
//! ([`dataplane`], [`cniserver`]) sit behind the default `dataplane` feature.

pub mod migrate;
pub mod plan;
pub mod procfs;

pub use plan::{DataPlanePlan, build_plan, trace};

#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod agent;
// Portable: its `sessions` wire form; the speaker wiring inside is Linux + `dataplane` only.
pub mod bgp;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod cniserver;
#[cfg(all(target_os = "linux", feature = "dataplane"))]
pub mod dataplane;

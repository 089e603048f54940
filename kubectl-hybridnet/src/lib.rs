//! kubectl hybridnet: the pure part of the plugin (flag parsing, manifests, table rows, usage math,
//! leak detection, completion). The binary (`main.rs`) only does I/O around it.

#![forbid(unsafe_code)]

pub mod bgp_status;
pub mod check;
pub mod cli;
pub mod cluster_connect;
pub mod complete;
pub mod flags;
pub mod inventory;
pub mod jsonpath;
pub mod manifest;
pub mod migrate;
pub mod output;
pub mod pathtrace;
pub mod policytrace;
pub mod resources;
pub mod status;
pub mod uninstall;
pub mod usage;
pub mod versions;
pub mod wait;

/// Version of the plugin.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

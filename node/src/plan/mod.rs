//! The desired data plane of a node as a pure function of API state and host interfaces.
//!
//! [`build_plan`] maps the watched API objects ([`ApiState`]), facts about the host ([`HostState`])
//! and the agent configuration ([`PlanConfig`]) to a [`DataPlanePlan`]: sysctls, policy rules,
//! routes of hybridnet's tables, the VXLAN device with its FDB and neighbour entries, proxy
//! neighbour entries, VLAN links and the nftables ruleset. [`trace`] walks a plan for one packet.
//!
//! Rule layout (per family; priorities are fixed so the agent recognises its own rules after a
//! restart and the order never depends on what else is installed):
//!
//! | priority | rule | table |
//! |---|---|---|
//! | base (1000) | `from all` | local-direct 39999: `<podIP>/32 dev hybr…` |
//! | base+1 | `from all` | to-overlay 40000: overlay CIDRs `dev <vxlan>`, throw exclude blocks |
//! | base+2 | `from all fwmark 0x20/0x20` | overlay-mark 40001: `default dev <vxlan>` |
//! | base+3 | `from <subnet> fwmark 0x0/0x4040` | one table per pod subnet, 10000.. |
//!
//! The subnet rules share one priority: their `from` selectors are disjoint CIDRs, so their order
//! does not matter. Subnet table numbers are kept across restarts (read back from the host) and
//! new subnets take the lowest free number, so adding a subnet never renumbers another.

mod arp_enhance;
mod build;
mod exclude;
mod incremental;
mod model;
pub mod nft;
pub mod nftables;
pub mod policy;
mod route_tables;
mod trace;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_multicluster;

use std::net::IpAddr;

pub use build::{build_plan, is_container_link, is_global_unicast, vlan_link};
pub use exclude::{RangePart, exclude_blocks};
pub use incremental::{PlanState, PlanUpdate};
pub use model::*;
pub use route_tables::{ROUTE_TABLES_ANNOTATION, RouteTables, RouteTablesError};
pub use trace::{Encapsulation, MatchedRule, Outcome, TraceQuery, TraceResult, trace};

/// Addresses of a Node's `.status.addresses` that parse as IPs.
pub fn node_status_addresses(node: &k8s_openapi::api::core::v1::Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| a.iter().filter_map(|a| a.address.parse().ok()).collect())
        .unwrap_or_default()
}

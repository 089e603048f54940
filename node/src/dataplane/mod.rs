//! Applies a [`DataPlanePlan`](crate::plan::DataPlanePlan) to the kernel of the namespace the
//! caller runs in: rtnetlink for links, addresses, FDB, neighbours, routes and rules; `nft -f -`
//! for the nftables table; `/proc/sys` for sysctls.
//!
//! Every step diffs what is there against the plan and changes only the difference: nothing is
//! flushed and recreated, so a restarted agent adopts the state it finds and established pod
//! traffic is never interrupted. "What is there" is read from the kernel by a full apply
//! ([`Applier::apply`]); between full applies ([`Applier::apply_changes`]) it is what the last
//! apply left, unless rtnetlink notifications say someone else changed that part
//! ([`changes`]): an unchanged part of the plan costs no kernel I/O, and a change of a few
//! remote pods touches only their neighbour entries. FDB and neighbour entries are sent in
//! batches (many requests per datagram). Only objects hybridnet owns are ever removed:
//!
//! * rules whose table is local-direct/to-overlay/overlay-mark, or a subnet-range table selected by
//!   `from <cidr> fwmark 0x0/0x4040` (any priority, so rules of the original Go daemon are adopted
//!   and moved to the fixed priorities);
//! * routes in the subnet tables of hybridnet's rules, and hybridnet-shaped routes (throw, or via
//!   a `*.vxlan*` device) in to-overlay and overlay-mark (any other route there is left in place
//!   and reported: another program uses the table); local-direct
//!   routes are only added (the CNI ADD path writes them and the kernel drops them with the veth,
//!   deleting them here would race with a concurrent ADD), except a host route through a pod veth
//!   to an address now bound to a pod of another node (`diff::stale_local_direct`: a KubeVirt VM's
//!   address after its live migration, docs/api.md "KubeVirt VMs");
//! * links named `*.vxlan*`; FDB, neighbour and proxy entries on the VXLAN device; proxy entries on
//!   VLAN forward interfaces only inside cluster pod CIDRs;
//! * `table inet hybridnet`.
//!
//! nftables: the table is replaced by one `nft -f -` transaction. The kernel commits it atomically
//! (no packet sees a half-built table) and NAT state lives in conntrack, so established connections
//! keep their translation. Piping text to the `nft` binary was chosen over the `nftables` crate
//! (which also shells out to `nft -j`): the rendered script is readable in logs and tests, and the
//! one transaction is exactly the atomicity we need. The apply is skipped when the script and the
//! kernel's listing of the table are unchanged since the last apply.

mod addr_diff;
mod apply;
mod arp_enhance;
pub mod changes;
mod diff;
mod host;
pub mod kernel;
mod link_diff;
mod neigh_diff;
pub mod netns;
mod nft;
mod sysctl;

pub use apply::{Applier, ApplyReport};
pub use changes::{KernelChanges, KernelEvent, KernelNotes, NeighbourEvent, classify};
pub use host::{ipv6_enabled, read_host_state};
pub use kernel::KernelError;
pub use nft::{NftRunner, list_table, nft_list_table};
pub use sysctl::{read_sysctl, write_sysctl};

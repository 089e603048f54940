//! Plain-data types of the plan: what the planner reads (API objects and host facts) and what it
//! produces (the desired data plane). Everything is ordered (`BTreeMap`/`BTreeSet`) so that a plan
//! is deterministic and two plans compare equal exactly when they program the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::multicluster::{RemoteSubnet, RemoteVtep};
use hybridnet_api::v1::{
    IPInstance, IpVersion, Network, NetworkMode, NetworkType, NodeInfo, Subnet,
};

pub use hybridnet_api::mac::MacAddr;

/// The API objects the plan is computed from (snapshots of the agent's watch caches).
///
/// IPInstances and NodeInfos are shared with the watch caches (`Arc`): a snapshot of 20,000
/// IPInstances copies 20,000 pointers, never the objects (`docs/benchmarks.md`, Node data plane).
#[derive(Clone, Debug, Default)]
pub struct ApiState {
    /// This node's name.
    pub node_name: String,
    /// Addresses from this Node's `.status.addresses` (any type); see [`node_status_addresses`].
    ///
    /// [`node_status_addresses`]: super::node_status_addresses
    pub node_addresses: Vec<IpAddr>,
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    /// All IPInstances of the cluster (local ones give proxy entries and local routes, remote ones
    /// give VXLAN neighbour entries).
    pub ip_instances: Vec<Arc<IPInstance>>,
    pub node_infos: Vec<Arc<NodeInfo>>,
    /// Mirrors of other clusters' Subnets (docs/multicluster.md, "What the node agent programs").
    pub remote_subnets: Vec<RemoteSubnet>,
    /// Mirrors of other clusters' nodes with their pods' addresses.
    pub remote_vteps: Vec<Arc<RemoteVtep>>,
}

/// One address configured on a host interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostAddress {
    pub ip: IpAddr,
    pub prefix: u8,
    /// `IFA_F_NOPREFIXROUTE` is set (such addresses are not the node's "normal" subnet addresses).
    pub noprefixroute: bool,
}

/// One network interface of the host namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    pub index: u32,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<HostAddress>,
}

/// A route of the host's main table (only what routing decisions need).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostRoute {
    pub dst: Cidr,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    pub src: Option<IpAddr>,
}

/// What the planner needs to know about the host.
#[derive(Clone, Debug, Default)]
pub struct HostState {
    pub interfaces: Vec<HostInterface>,
    /// Routes of the main table (default routes pick the fallback interfaces; `trace` resolves with them).
    pub main_routes: Vec<HostRoute>,
    /// Per-subnet tables already programmed (read back from the subnet rules): kept across restarts so
    /// that adding a subnet never renumbers the tables of others.
    pub existing_subnet_tables: BTreeMap<Cidr, u32>,
    /// Table ids in the subnet range that hold routes hybridnet did not create; never allocated.
    pub foreign_tables: BTreeSet<u32>,
    /// IPv6 is enabled in this namespace (`/proc/sys/net/ipv6` exists and is not disabled).
    pub ipv6_enabled: bool,
}

/// Routing table numbers and rule priorities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableConfig {
    pub local_direct: u32,
    pub to_overlay: u32,
    pub overlay_mark: u32,
    /// First and last table id for per-subnet tables (inclusive).
    pub subnet_first: u32,
    pub subnet_last: u32,
    /// Priority of the local-direct rule; to-overlay, overlay-mark and the subnet rules follow at
    /// +1, +2 and +3. Upstream took "the first free priority after `lookup local`"; fixed priorities
    /// make the plan deterministic and let the agent recognise its rules after a restart.
    pub priority_base: u32,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            local_direct: 39999,
            to_overlay: 40000,
            overlay_mark: 40001,
            subnet_first: 10000,
            subnet_last: 39998,
            priority_base: 1000,
        }
    }
}

/// Agent configuration that shapes the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    pub prefer_vlan_interfaces: Vec<String>,
    pub prefer_vxlan_interfaces: Vec<String>,
    pub prefer_bgp_interfaces: Vec<String>,
    pub vxlan_udp_port: u16,
    /// The VTEP address must lie in one of these (upstream `--vtep-address-cidrs`).
    pub vtep_address_cidrs: Vec<Cidr>,
    /// Addresses in these are published as node-local VXLAN IPs too.
    pub extra_node_local_vxlan_ip_cidrs: Vec<Cidr>,
    pub tables: TableConfig,
    /// Plan enhanced addresses on VLAN interfaces (`--enable-vlan-arp-enhancement`; the agent's
    /// flag defaults to true, the library default is off).
    pub vlan_arp_enhancement: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            prefer_vlan_interfaces: Vec::new(),
            prefer_vxlan_interfaces: Vec::new(),
            prefer_bgp_interfaces: Vec::new(),
            vxlan_udp_port: 8472,
            vtep_address_cidrs: vec![
                Cidr {
                    version: IpVersion::V4,
                    network: 0,
                    prefix: 0,
                },
                Cidr {
                    version: IpVersion::V6,
                    network: 0,
                    prefix: 0,
                },
            ],
            extra_node_local_vxlan_ip_cidrs: Vec::new(),
            tables: TableConfig::default(),
            vlan_arp_enhancement: false,
        }
    }
}

/// A policy routing rule (`ip rule`). All rules have action "lookup table".
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRule {
    pub family: IpVersion,
    pub priority: u32,
    pub table: u32,
    pub src: Option<Cidr>,
    /// `fwmark value/mask`.
    pub fwmark: Option<(u32, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    Unicast,
    /// `type throw`: the lookup leaves this table and continues with the next rule.
    Throw,
}

/// A route in one of hybridnet's tables.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlannedRoute {
    pub table: u32,
    pub dst: Cidr,
    pub kind: RouteKind,
    pub dev: Option<String>,
    pub via: Option<IpAddr>,
    pub src: Option<IpAddr>,
    /// `scope link` (direct routes of VLAN subnets); otherwise universe.
    pub scope_link: bool,
}

impl PlannedRoute {
    pub fn family(&self) -> IpVersion {
        self.dst.version
    }
}

/// The VXLAN device of the overlay network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub parent: String,
    pub local: IpAddr,
    pub port: u16,
    /// Same as the parent's MAC (remote nodes address inner frames to it).
    pub mac: MacAddr,
    pub mtu: u32,
}

/// A permanent FDB entry on the VXLAN device: frames to `mac` are sent to VTEP `dst`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: IpAddr,
}

/// `ip neigh add proxy <ip> dev <dev>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyNeighbour {
    pub dev: String,
    pub ip: IpAddr,
}

/// A VLAN forward interface. `id == 0` is the parent itself (untagged): nothing is created, the
/// parent is only set up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanLink {
    pub name: String,
    pub parent: String,
    pub id: u16,
}

/// An "enhanced" IPv4 address on a VLAN forward interface (see `arp_enhance`): a
/// local pod's address with the subnet prefix, `noprefixroute`, scope link, and without the
/// local-table routes the kernel adds for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedAddress {
    pub dev: String,
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
}

/// A pod of this node as the data plane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub namespace: String,
    pub pod: String,
    pub veth: String,
    pub network: String,
    pub subnet: String,
    pub terminating: bool,
}

/// Where a pod subnet is and what its table does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetTable {
    pub table: u32,
    pub network: String,
    pub mode: NetworkMode,
    pub auto_nat_outgoing: bool,
}

/// This node's VTEP as published in its NodeInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedVtep {
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub local_ips: Vec<IpAddr>,
}

/// A RemoteSubnet the plan programs (it passed `hybridnet_api::multicluster::validate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRemoteSubnet {
    /// RemoteSubnet names sharing the CIDR (one remote cluster's Subnets of one CIDR), sorted.
    pub names: Vec<String>,
    pub cluster: String,
    pub network_type: NetworkType,
}

/// The RemoteVtep behind a remote VTEP MAC (for `trace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteVtepRef {
    /// `<cluster>.<node>`.
    pub name: String,
    pub cluster: String,
    pub node: String,
}

/// Something in the input the planner could not use; the rest of the plan is still built.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlanProblem {
    /// `kind/name` of the object (or `host`/`config`).
    pub object: String,
    pub message: String,
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// The desired data plane of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataPlanePlan {
    /// `/proc/sys` relative path (`net/ipv4/ip_forward`, interface names kept verbatim) -> value.
    pub sysctls: BTreeMap<String, String>,
    pub rules: BTreeSet<PolicyRule>,
    /// Routes of every hybridnet table, including the local-direct table.
    pub routes: BTreeSet<PlannedRoute>,
    /// Tables whose whole content hybridnet owns (to-overlay, overlay-mark, subnet tables).
    pub owned_tables: BTreeSet<u32>,
    pub local_direct_table: u32,
    pub subnet_tables: BTreeMap<Cidr, SubnetTable>,
    pub vxlan: Option<VxlanDevice>,
    /// Node-local addresses put on the VXLAN device (`noprefixroute`, host prefix).
    pub vxlan_addresses: BTreeSet<IpAddr>,
    pub fdb: BTreeSet<FdbEntry>,
    /// Stale FDB entries may be removed only when every overlay node has published its NodeInfo
    /// (avoids flapping while nodes join, as upstream's `pkg/daemon/controller/node.go` does).
    pub fdb_prune: bool,
    /// Permanent neighbour entries on the VXLAN device: remote pod and node IP -> remote VTEP MAC.
    pub vxlan_neighbours: BTreeMap<IpAddr, MacAddr>,
    /// Remote address -> the node that owns it (for `trace`).
    pub remote_owner: BTreeMap<IpAddr, Arc<str>>,
    /// Remote VTEP MAC -> (VTEP IP, node name), nodes of this cluster and of remote clusters.
    pub remote_vteps: BTreeMap<MacAddr, (IpAddr, String)>,
    /// The VTEPs of [`Self::remote_vteps`] that are other clusters' nodes (RemoteVteps).
    pub remote_cluster_vteps: BTreeMap<MacAddr, RemoteVtepRef>,
    /// RemoteSubnets programmed, by CIDR: overlay ones in the to-overlay table, underlay ones in
    /// the tables of local autoNatOutgoing overlay subnets; all in the nft address sets.
    pub remote_subnets: BTreeMap<Cidr, PlannedRemoteSubnet>,
    /// Node addresses of remote clusters' nodes (RemoteVtep `localIPs`, else its VTEP address).
    pub remote_node_ips: BTreeSet<IpAddr>,
    pub proxy_neighbours: BTreeSet<ProxyNeighbour>,
    /// Proxy entries on non-hybridnet devices are removed only inside these (cluster pod CIDRs).
    pub cluster_cidrs: BTreeSet<Cidr>,
    pub vlan_links: BTreeSet<VlanLink>,
    /// ARP enhancement addresses on VLAN forward interfaces (empty when disabled).
    pub vlan_enhanced_addresses: BTreeSet<EnhancedAddress>,
    /// Interfaces whose traffic to local underlay nets (not local pods) is dropped (loop guard).
    pub underlay_interfaces: BTreeSet<String>,
    pub local_pods: BTreeMap<IpAddr, LocalPod>,
    /// Addresses a pod of another node of this cluster holds (an IPInstance bound there) and no
    /// pod of this node: a local-direct route to one of them through a pod veth is stale (the
    /// address moved away, e.g. a KubeVirt VM's after its live migration, while the old pod's
    /// veth still exists) and is removed (`dataplane::diff::stale_local_direct`).
    pub remote_pod_ips: BTreeSet<IpAddr>,
    /// This node's own addresses (local delivery in `trace`).
    pub node_local_ips: BTreeSet<IpAddr>,
    /// The node-local IPs of every node of the cluster (this one included), from the NodeInfos.
    pub cluster_node_ips: BTreeSet<IpAddr>,
    pub main_routes: Vec<HostRoute>,
    /// `table inet hybridnet`, rendered by [`Table::transaction`](super::nftables::Table::transaction).
    pub nft: super::nftables::Table,
    pub published_vtep: Option<PublishedVtep>,
    pub problems: Vec<PlanProblem>,
}

impl DataPlanePlan {
    pub fn rules_of(&self, family: IpVersion) -> impl Iterator<Item = &PolicyRule> {
        self.rules.iter().filter(move |r| r.family == family)
    }

    pub fn routes_in(&self, table: u32) -> impl Iterator<Item = &PlannedRoute> {
        self.routes.iter().filter(move |r| r.table == table)
    }
}

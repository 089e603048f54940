//! Plain data going in and out of the IPAM: inputs built from the CRD objects, requests, results,
//! usage counters, cursors and exported holdings.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use hybridnet_api::ipmath::{Cidr, u128_to_ip};
use hybridnet_api::naming::{instance_name_to_ip, ip_to_instance_name};
use hybridnet_api::operator::IpFamily;
use hybridnet_api::range::{ParsedRange, parse_address_range};
use hybridnet_api::v1::{IPInstance, IpVersion, Network, Subnet};

use super::error::IpamError;
use super::mac::MacAddr;

/// A pod, by namespace and name (the identity upstream uses for holders; the UID is not kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), IpamError> {
        if self.namespace.is_empty() || self.name.is_empty() {
            return Err(IpamError::InvalidRequest {
                field: "pod".into(),
                reason: format!("{self} needs a namespace and a name"),
            });
        }
        Ok(())
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the IPAM needs of a Network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkInput {
    pub name: String,
    /// `spec.netID`: VLAN id, VNI or AS number; inherited by subnets without their own.
    pub net_id: Option<i32>,
}

impl NetworkInput {
    pub fn from_crd(network: &Network) -> Result<Self, IpamError> {
        let name = network.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(IpamError::InvalidNetwork {
                network: name,
                reason: "metadata.name is empty".into(),
            });
        }
        Ok(Self {
            name,
            net_id: network.spec.net_id,
        })
    }
}

/// What the IPAM needs of a Subnet: its validated range and flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInput {
    pub name: String,
    /// `spec.network` (immutable).
    pub network: String,
    pub range: ParsedRange,
    /// `spec.netID`; `None` inherits the network's.
    pub net_id: Option<i32>,
    /// `spec.config.private`: only used when a pod names the subnet or an ip-pool entry is in it.
    pub private: bool,
}

impl SubnetInput {
    /// Validates `spec.range` with the shared rules of `hybridnet_api::range`.
    pub fn from_crd(subnet: &Subnet) -> Result<Self, IpamError> {
        let name = subnet.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(IpamError::InvalidSubnet {
                subnet: name,
                reason: "metadata.name is empty".into(),
            });
        }
        if subnet.spec.network.is_empty() {
            return Err(IpamError::InvalidSubnet {
                subnet: name,
                reason: "spec.network is empty".into(),
            });
        }
        let range = parse_address_range(&subnet.spec.range, "spec.range").map_err(|e| {
            IpamError::InvalidSubnet {
                subnet: name.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            name,
            network: subnet.spec.network.clone(),
            range,
            net_id: subnet.spec.net_id,
            private: subnet.spec.is_private(),
        })
    }
}

/// Whether a held address belongs to a running pod or is kept for one that is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HoldState {
    /// Bound to a pod (IPInstance with `binding.nodeName`).
    Allocated,
    /// Kept for a stateful pod that is gone (IPInstance without `binding.nodeName`); a forced
    /// assignment of another pod may take it.
    Reserved,
}

/// What the IPAM needs of an IPInstance (and what [`super::Ipam::held_ips`] gives back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInput {
    pub namespace: String,
    /// Object name (the IP in DNS form); used in conflict reports.
    pub name: String,
    pub network: String,
    pub subnet: String,
    pub ip: IpAddr,
    /// `spec.binding.podName`; `None` for reserved addresses whose pod name was dropped (VMs).
    pub pod: Option<String>,
    pub state: HoldState,
    /// `spec.address.mac`, when it parses.
    pub mac: Option<MacAddr>,
}

impl InstanceInput {
    /// The address comes from the object name (upstream `ToIPFormat`, the IPInstance's identity)
    /// and must agree with `spec.address.ip` and `spec.address.version`.
    pub fn from_crd(instance: &IPInstance) -> Result<Self, IpamError> {
        InstanceView::from_crd(instance).map(|v| v.to_owned_input())
    }

    pub(crate) fn view(&self) -> InstanceView<'_> {
        InstanceView {
            namespace: &self.namespace,
            name: &self.name,
            network: &self.network,
            subnet: &self.subnet,
            ip: self.ip,
            pod: self.pod.as_deref(),
            state: self.state,
            mac: self.mac,
        }
    }
}

/// A borrowed [`InstanceInput`], so a rebuild from 100,000 objects copies no strings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InstanceView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub network: &'a str,
    pub subnet: &'a str,
    pub ip: IpAddr,
    pub pod: Option<&'a str>,
    pub state: HoldState,
    pub mac: Option<MacAddr>,
}

/// Whether `name` is the DNS form of `ip` (upstream `ToDNSFormat`), without allocating.
fn is_instance_name_of(name: &str, ip: IpAddr) -> bool {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut w = &mut buf[..];
    let ok = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            write!(w, "{a}-{b}-{c}-{d}").is_ok()
        }
        IpAddr::V6(v6) => {
            let g = v6.segments();
            write!(
                w,
                "{:x}-{:x}-{:x}-{:x}-{:x}-{:x}-{:x}-{:x}",
                g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
            )
            .is_ok()
        }
    };
    let used = 64 - w.len();
    ok && buf.get(..used) == Some(name.as_bytes())
}

impl<'a> InstanceView<'a> {
    pub(crate) fn from_crd(instance: &'a IPInstance) -> Result<Self, IpamError> {
        let namespace = instance.metadata.namespace.as_deref().unwrap_or("");
        let name = instance.metadata.name.as_deref().unwrap_or("");
        let invalid = |reason: String| IpamError::InvalidInstance {
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason,
        };
        if namespace.is_empty() {
            return Err(invalid("metadata.namespace is empty".into()));
        }
        let spec = &instance.spec;
        let from_spec = Cidr::parse_any(&spec.address.ip)
            .map_err(|e| invalid(format!("spec.address.ip: {e}")))?;
        let ip = u128_to_ip(from_spec.version, from_spec.network);
        // Fast path: the canonical DNS form. Other spellings of the same address (zero-padded
        // groups, written by hand) still count: refusing them could hand the address out twice.
        if !is_instance_name_of(name, ip) && instance_name_to_ip(name) != Some(ip) {
            return Err(invalid(match instance_name_to_ip(name) {
                Some(n) => format!(
                    "spec.address.ip {} does not match the name's address {n}",
                    spec.address.ip
                ),
                None => format!(
                    "metadata.name is not the DNS form of spec.address.ip {} (want {})",
                    spec.address.ip,
                    ip_to_instance_name(ip)
                ),
            }));
        }
        if spec.address.version != from_spec.version {
            return Err(invalid(format!(
                "spec.address.version {} does not match {ip}",
                spec.address.version
            )));
        }
        if spec.network.is_empty() || spec.subnet.is_empty() {
            return Err(invalid("spec.network and spec.subnet are required".into()));
        }
        let state = if spec.is_reserved() {
            HoldState::Reserved
        } else {
            HoldState::Allocated
        };
        Ok(Self {
            namespace,
            name,
            network: &spec.network,
            subnet: &spec.subnet,
            ip,
            pod: spec.binding.pod_name.as_deref().filter(|p| !p.is_empty()),
            state,
            mac: MacAddr::parse_unicast(&spec.address.mac).ok(),
        })
    }

    pub(crate) fn to_owned_input(self) -> InstanceInput {
        InstanceInput {
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            network: self.network.to_string(),
            subnet: self.subnet.to_string(),
            ip: self.ip,
            pod: self.pod.map(str::to_string),
            state: self.state,
            mac: self.mac,
        }
    }
}

/// One held address, as exported by [`super::Ipam::held_ips`] (sorted by subnet name, then IP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldIp {
    pub network: String,
    pub subnet: String,
    pub ip: IpAddr,
    pub namespace: String,
    /// `None` for an anonymous reserved address (pod name dropped).
    pub pod: Option<String>,
    pub state: HoldState,
    /// The pod's MAC (one per pod and network, shared by both families); `None` for anonymous
    /// holdings, whose MAC is only kept in their IPInstance.
    pub mac: Option<MacAddr>,
}

impl HeldIp {
    /// The IPInstance this holding stands for, for a rebuild.
    pub fn to_instance(&self) -> InstanceInput {
        InstanceInput {
            namespace: self.namespace.clone(),
            name: ip_to_instance_name(self.ip),
            network: self.network.clone(),
            subnet: self.subnet.clone(),
            ip: self.ip,
            pod: self.pod.clone(),
            state: self.state,
            mac: self.mac,
        }
    }
}

/// Allocate request (upstream `pkg/ipam/manager/manager.go`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocateRequest {
    pub network: String,
    pub pod: PodKey,
    pub family: IpFamily,
    /// Explicitly named subnets: none, or at most one per requested family (matched to the
    /// family by the subnet's version). A named subnet is used even when private; families
    /// without a named subnet are chosen automatically (never a private subnet).
    pub subnets: Vec<String>,
}

/// One address to assign (retained or pre-assigned IPs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignCandidate {
    /// The subnet, when known (retained IPInstance); `None` looks it up by address (ip-pool).
    pub subnet: Option<String>,
    pub ip: IpAddr,
}

/// Assign request (upstream `pkg/ipam/manager/manager.go`): one candidate, or one IPv4 and one IPv6 (dual stack).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignRequest {
    pub network: String,
    pub pod: PodKey,
    pub candidates: Vec<AssignCandidate>,
    /// Allowed to take spec-reserved addresses and addresses kept (Reserved) for another pod
    /// (ip-pool and VM retention).
    pub force: bool,
}

/// One address handed to a pod, with what its IPInstance needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub network: String,
    pub subnet: String,
    pub ip: IpAddr,
    /// Prefix length of the subnet's CIDR.
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Subnet netID if set, else the network's.
    pub net_id: Option<i32>,
    pub version: IpVersion,
}

impl Allocation {
    /// `spec.address.ip` of the IPInstance, e.g. `10.0.0.5/24`.
    pub fn address_with_prefix(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }

    /// The IPInstance name (the IP in DNS form).
    pub fn instance_name(&self) -> String {
        ip_to_instance_name(self.ip)
    }
}

/// Address counts of one subnet (upstream `pkg/ipam/types/usage.go`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Addresses the allocator may hand out on its own: in `[start, end]`, not the gateway, not
    /// excluded, not spec-reserved (`status.total`).
    pub total: u64,
    /// Held addresses that count against `total` (`hybridnet_api::range::ParsedRange::counts_as_used`:
    /// allocatable, so not spec-reserved, excluded or the gateway), Reserved holdings of stateful
    /// pods included (`status.used`).
    pub used: u64,
    /// `total - used` (`status.available`).
    pub available: u64,
    /// Held addresses in the Reserved state (stateful pods that are gone) that count as `used`
    /// (so `reserved <= used`).
    pub reserved: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, o: &Usage) {
        self.total += o.total;
        self.used += o.used;
        self.available += o.available;
        self.reserved += o.reserved;
    }
}

/// Address counts of one network.
///
/// `v4`/`v6` are the sums over **all** subnets of the family, private ones included, exactly as
/// upstream status reports them (`pkg/ipam/types/usage.go`), so network status equals the sum of its subnets'
/// status. Because automatic allocation never uses private subnets (an upstream bug was
/// that only the first number existed), the `*_auto_available` fields count what an allocation
/// without a named subnet can still get; node quota labels should use those.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkUsage {
    pub v4: Usage,
    pub v6: Usage,
    /// `min(v4.available, v6.available)` (`status.dualStackStatistics.available`).
    pub dual_stack_available: u64,
    /// Available addresses of non-private IPv4 subnets.
    pub v4_auto_available: u64,
    /// Available addresses of non-private IPv6 subnets.
    pub v6_auto_available: u64,
    /// `min(v4_auto_available, v6_auto_available)`.
    pub dual_stack_auto_available: u64,
}

/// Subnet cursors of one network (`status.lastAllocatedSubnet` / `lastAllocatedIPv6Subnet`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkCursors {
    pub last_allocated_subnet: Option<String>,
    pub last_allocated_ipv6_subnet: Option<String>,
}

/// The allocation cursors, to persist in status and restore after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursors {
    /// By network name.
    pub networks: BTreeMap<String, NetworkCursors>,
    /// `status.lastAllocatedIP` by subnet name.
    pub subnets: BTreeMap<String, IpAddr>,
}

impl Cursors {
    /// Reads the persisted cursors from the objects' status (unparsable IPs are ignored: the
    /// cursor then starts at the beginning, which only affects fairness, never correctness).
    pub fn from_status(networks: &[Network], subnets: &[Subnet]) -> Self {
        let mut c = Self::default();
        for n in networks {
            if let Some(st) = &n.status {
                let nc = NetworkCursors {
                    last_allocated_subnet: st
                        .last_allocated_subnet
                        .clone()
                        .filter(|s| !s.is_empty()),
                    last_allocated_ipv6_subnet: st
                        .last_allocated_ipv6_subnet
                        .clone()
                        .filter(|s| !s.is_empty()),
                };
                if nc != NetworkCursors::default() {
                    c.networks
                        .insert(n.metadata.name.clone().unwrap_or_default(), nc);
                }
            }
        }
        for s in subnets {
            if let Some(ip) = s
                .status
                .as_ref()
                .and_then(|st| st.last_allocated_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            {
                c.subnets
                    .insert(s.metadata.name.clone().unwrap_or_default(), ip);
            }
        }
        c
    }
}

/// Families an [`IpFamily`] asks for, IPv4 first.
pub(crate) fn versions_of(family: IpFamily) -> &'static [IpVersion] {
    match family {
        IpFamily::IPv4 => &[IpVersion::V4],
        IpFamily::IPv6 => &[IpVersion::V6],
        IpFamily::DualStack => &[IpVersion::V4, IpVersion::V6],
    }
}

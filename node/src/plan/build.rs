//! The planner: API state + host facts -> [`DataPlanePlan`] (upstream's `pkg/daemon/controller/` and `pkg/daemon/route/`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use hybridnet_api::ipmath::{Cidr, parse_ip};
use hybridnet_api::multicluster::validate::{remote_subnet_create, remote_vtep};
use hybridnet_api::range::{parse_address_range, parse_range_shape};
use hybridnet_api::traffic_peer::traffic_peer;
use hybridnet_api::v1::{IpVersion, Network, NetworkMode, NetworkType, NodeInfo};

use super::exclude::{RangePart, exclude_blocks};
use super::model::*;
use super::nft;

/// Largest VXLAN network identifier.
use hybridnet_api::operator::values::{MAX_VNI, VNI};
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Upstream `CheckIfContainerNetworkLink`: interfaces that belong to pods or other container runtimes.
pub fn is_container_link(name: &str) -> bool {
    name.ends_with("_h")
        || ["h_", "hybr", "veth", "docker", "kube-"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Global unicast in the sense of Go's `IsGlobalUnicast` (private ranges included).
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

pub(super) fn host_cidr(ip: IpAddr) -> Cidr {
    let version = IpVersion::of(&ip);
    Cidr {
        version,
        network: hybridnet_api::ipmath::ip_to_u128(ip),
        prefix: version.bits(),
    }
}

fn default_cidr(version: IpVersion) -> Cidr {
    Cidr {
        version,
        network: 0,
        prefix: 0,
    }
}

/// A Subnet CIDR with everything merged from the Subnets that share it.
struct MergedSubnet {
    cidr: Cidr,
    /// Subnet names (sorted).
    names: Vec<String>,
    network: String,
    mode: NetworkMode,
    network_type: NetworkType,
    net_id: Option<i32>,
    auto_nat: bool,
    gateway: Option<IpAddr>,
    parts: Vec<RangePart>,
}

/// A RemoteSubnet CIDR that passed the checks, with the ranges of the RemoteSubnets sharing it.
struct MergedRemote {
    cidr: Cidr,
    network_type: NetworkType,
    parts: Vec<RangePart>,
}

struct Planner<'a> {
    api: &'a ApiState,
    host: &'a HostState,
    cfg: &'a PlanConfig,
    plan: DataPlanePlan,
    families: Vec<IpVersion>,
    interfaces: BTreeMap<&'a str, &'a HostInterface>,
    networks: BTreeMap<&'a str, &'a Network>,
    /// Remote node -> its VTEP MAC (the inverse of `plan.remote_vteps`); the key is the shared
    /// node name.
    vtep_by_node: HashMap<Arc<str>, MacAddr>,
    /// NodeInfo `localIPs` of remote nodes -> VTEP MAC and node (the first NodeInfo wins).
    seeds: BTreeMap<IpAddr, (MacAddr, Arc<str>)>,
}

/// Builds the desired data plane. Never fails: objects that cannot be used are reported in
/// [`DataPlanePlan::problems`] and left out, everything else is planned.
///
/// The same as [`PlanState::new`](super::PlanState::new) followed by taking its plan; the agent
/// keeps the [`PlanState`](super::PlanState) to update the plan per changed object.
pub fn build_plan(api: &ApiState, host: &HostState, cfg: &PlanConfig) -> DataPlanePlan {
    super::PlanState::new(api, host, cfg).into_plan()
}

/// The part of the plan that does not depend on IPInstances (everything but the VXLAN
/// neighbours, local pods, their routes and proxy entries, and what is derived from those: see
/// [`finish`]), and what resolving an IPInstance needs to know.
pub(super) fn build_base(
    api: &ApiState,
    host: &HostState,
    cfg: &PlanConfig,
) -> (DataPlanePlan, IpContext) {
    let mut families = vec![IpVersion::V4];
    if host.ipv6_enabled {
        families.push(IpVersion::V6);
    }
    let mut p = Planner {
        api,
        host,
        cfg,
        plan: DataPlanePlan {
            local_direct_table: cfg.tables.local_direct,
            main_routes: {
                let mut r = host.main_routes.clone();
                r.sort();
                r
            },
            ..Default::default()
        },
        families,
        interfaces: host
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect(),
        networks: api
            .networks
            .iter()
            .filter_map(|n| n.metadata.name.as_deref().map(|name| (name, n)))
            .collect(),
        vtep_by_node: HashMap::new(),
        seeds: BTreeMap::new(),
    };
    let ctx = p.run();
    (p.plan, ctx)
}

/// What resolving the IPInstances of one address needs, besides the address's claims: derived
/// from Networks, Subnets, NodeInfos, the host and the configuration (see
/// [`super::incremental`]).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct IpContext {
    /// Everything but the remote VTEPs and NodeInfo addresses: when it changes, every address is
    /// resolved again.
    pub fixed: FixedContext,
    /// Remote node -> its VTEP MAC (the key is the node name shared with `remote_owner`).
    pub vteps: HashMap<Arc<str>, MacAddr>,
    /// NodeInfo `localIPs` of remote nodes -> VTEP MAC and node.
    pub seeds: BTreeMap<IpAddr, (MacAddr, Arc<str>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct FixedContext {
    pub node_name: String,
    pub families: Vec<IpVersion>,
    pub local_direct: u32,
    /// The VXLAN device: every local pod gets a proxy entry on it.
    pub vxlan: Option<String>,
    /// Merged subnets in CIDR order with the VLAN forward interface their local pods get a proxy
    /// entry on (`None`: not a VLAN subnet, or no usable parent).
    pub subnet_proxy: Vec<(Cidr, Option<String>)>,
    /// Names of the host's interfaces (a local pod's route needs its veth).
    pub interfaces: BTreeSet<String>,
    /// What the nftables renderer needs of the subnets.
    pub views: Vec<SubnetView>,
}

/// The steps that read the whole plan, after the IPInstances are in: sysctls (proxy_ndp follows
/// the IPv6 proxy entries), the nftables ruleset (local pod sets) and the ARP enhancement
/// addresses.
pub(super) fn finish(
    plan: &mut DataPlanePlan,
    host: &HostState,
    cfg: &PlanConfig,
    fixed: &FixedContext,
) {
    plan.sysctls = sysctls(plan, host, &fixed.families);
    plan.nft = nft::ruleset(plan, &fixed.views, &fixed.families);
    if cfg.vlan_arp_enhancement {
        plan.vlan_enhanced_addresses = super::arp_enhance::enhanced_addresses(plan, host);
    }
}

impl<'a> Planner<'a> {
    fn problem(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.plan.problems.push(PlanProblem {
            object: object.into(),
            message: message.into(),
        });
    }

    fn node_in(&self, network: &Network) -> bool {
        match network.spec.effective_type() {
            NetworkType::Overlay => true,
            NetworkType::Underlay => self.listed_in(network),
            // GlobalBGP subnets are usable on nodes attached to any BGP underlay network.
            NetworkType::GlobalBgp => self.bgp_networks().iter().any(|n| self.listed_in(n)),
        }
    }

    fn listed_in(&self, network: &Network) -> bool {
        network
            .status
            .as_ref()
            .and_then(|s| s.node_list.as_ref())
            .is_some_and(|l| l.contains(&self.api.node_name))
    }

    fn bgp_networks(&self) -> Vec<&'a Network> {
        self.networks
            .values()
            .copied()
            .filter(|n| n.spec.effective_mode() == NetworkMode::Bgp)
            .collect()
    }

    /// Interface of the default route (IPv4 first, then IPv6).
    fn default_interface(&self) -> Option<&'a str> {
        [IpVersion::V4, IpVersion::V6].into_iter().find_map(|v| {
            self.host
                .main_routes
                .iter()
                .filter(|r| r.dst == default_cidr(v))
                .find_map(|r| r.dev.as_deref())
                .filter(|d| self.interfaces.contains_key(d))
        })
    }

    /// Upstream interface choice: first existing name of the preference list, else the default
    /// route's interface.
    fn pick_interface(&mut self, prefer: &[String], what: &str) -> Option<String> {
        if prefer.is_empty() {
            let d = self.default_interface().map(str::to_string);
            if d.is_none() {
                self.problem(
                    "host",
                    format!("no {what} interface: no default route and no preferred interface"),
                );
            }
            return d;
        }
        match prefer
            .iter()
            .find(|n| self.interfaces.contains_key(n.as_str()))
        {
            Some(n) => Some(n.clone()),
            None => {
                self.problem(
                    "host",
                    format!("no {what} interface: none of {prefer:?} exists"),
                );
                None
            }
        }
    }

    fn run(&mut self) -> IpContext {
        let subnets = self.merge_subnets();
        let remote = self.merge_remote_subnets(&subnets);
        let overlay = self.overlay_network();
        let vxlan_parent = overlay.and_then(|_| {
            let prefer = self.cfg.prefer_vxlan_interfaces.clone();
            self.pick_interface(&prefer, "VXLAN parent")
        });
        if let (Some(net), Some(parent)) = (overlay, vxlan_parent) {
            self.plan_vxlan(net, &parent);
        }
        self.plan_local_ips();
        self.plan_remote_vteps(overlay);
        let subnet_proxy = self.subnet_proxies(&subnets);
        self.plan_tables(&subnets, &remote);
        self.plan.cluster_cidrs = subnets.iter().map(|s| s.cidr).collect();
        let mut views: Vec<SubnetView> = subnets
            .iter()
            .map(|s| SubnetView {
                cidr: s.cidr,
                mode: s.mode,
                network_type: s.network_type,
                auto_nat: s.auto_nat,
                on_node: self.network_has_node(&s.network),
                remote: false,
            })
            .collect();
        // Remote ranges count as cluster addresses (overlay ones as overlay addresses), never as
        // NATed or local ones (upstream `pkg/daemon/iptables/iptables.go`, `RecordRemoteSubnet`).
        views.extend(remote.iter().map(|r| SubnetView {
            cidr: r.cidr,
            mode: match r.network_type {
                NetworkType::Overlay => NetworkMode::Vxlan,
                // Not known (the remote Network's mode is not mirrored); only the type is used.
                _ => NetworkMode::Vlan,
            },
            network_type: r.network_type,
            auto_nat: false,
            on_node: false,
            remote: true,
        }));
        IpContext {
            fixed: FixedContext {
                node_name: self.api.node_name.clone(),
                families: self.families.clone(),
                local_direct: self.cfg.tables.local_direct,
                vxlan: self.plan.vxlan.as_ref().map(|v| v.name.clone()),
                subnet_proxy,
                interfaces: self.interfaces.keys().map(|n| n.to_string()).collect(),
                views,
            },
            vteps: std::mem::take(&mut self.vtep_by_node),
            seeds: std::mem::take(&mut self.seeds),
        }
    }

    /// Per merged subnet (CIDR order), the VLAN forward interface its local pods get a proxy
    /// entry on.
    fn subnet_proxies(&mut self, subnets: &[MergedSubnet]) -> Vec<(Cidr, Option<String>)> {
        let vlan_parent = if subnets
            .iter()
            .any(|s| s.mode == NetworkMode::Vlan && self.network_has_node(&s.network))
        {
            let prefer = self.cfg.prefer_vlan_interfaces.clone();
            self.pick_interface(&prefer, "VLAN parent")
        } else {
            None
        };
        subnets
            .iter()
            .map(|s| {
                let dev = (s.mode == NetworkMode::Vlan)
                    .then_some(vlan_parent.as_deref())
                    .flatten()
                    .and_then(|parent| vlan_link(parent, s.net_id))
                    .map(|l| l.name);
                (s.cidr, dev)
            })
            .collect()
    }

    fn overlay_network(&mut self) -> Option<&'a Network> {
        let overlays: Vec<&Network> = self
            .networks
            .values()
            .copied()
            .filter(|n| n.spec.effective_type() == NetworkType::Overlay)
            .collect();
        if overlays.len() > 1 {
            let names: Vec<_> = overlays
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            self.problem(
                "Network",
                format!("more than one Overlay network ({names:?}); using the first"),
            );
        }
        overlays.first().copied()
    }

    fn merge_subnets(&mut self) -> Vec<MergedSubnet> {
        let mut sorted: Vec<_> = self.api.subnets.iter().collect();
        sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut merged: BTreeMap<Cidr, MergedSubnet> = BTreeMap::new();
        for s in sorted {
            let name = s.metadata.name.clone().unwrap_or_default();
            let obj = format!("Subnet/{name}");
            let parsed = match parse_address_range(&s.spec.range, "spec.range") {
                Ok(p) => p,
                Err(e) => {
                    self.problem(obj, format!("invalid range: {e}"));
                    continue;
                }
            };
            if !self.families.contains(&parsed.version) {
                continue;
            }
            let Some(network) = self.networks.get(s.spec.network.as_str()).copied() else {
                self.problem(obj, format!("network {:?} does not exist", s.spec.network));
                continue;
            };
            let part = RangePart {
                explicit_bounds: [&s.spec.range.start, &s.spec.range.end]
                    .iter()
                    .any(|b| b.as_deref().is_some_and(|b| !b.is_empty())),
                parsed,
            };
            let cidr = part.parsed.cidr;
            match merged.get_mut(&cidr) {
                Some(m) if m.network != s.spec.network => {
                    self.problem(
                        obj,
                        format!(
                            "CIDR {cidr} is also used by network {:?}; ignored",
                            m.network
                        ),
                    );
                }
                Some(m) => {
                    m.names.push(name);
                    m.parts.push(part);
                }
                None => {
                    let gateway = part
                        .parsed
                        .gateway
                        .map(|g| hybridnet_api::ipmath::u128_to_ip(cidr.version, g));
                    merged.insert(
                        cidr,
                        MergedSubnet {
                            cidr,
                            names: vec![name],
                            network: s.spec.network.clone(),
                            mode: network.spec.effective_mode(),
                            network_type: network.spec.effective_type(),
                            net_id: s.spec.net_id.or(network.spec.net_id),
                            auto_nat: s.spec.auto_nat_outgoing(),
                            gateway,
                            parts: vec![part],
                        },
                    );
                }
            }
        }
        merged.into_values().collect()
    }

    /// RemoteSubnets that can be programmed, merged by CIDR. Checked with the webhook's rule
    /// (`remote_subnet_create`: well-formed, no address shared with a local Subnet or with a
    /// RemoteSubnet accepted before it), oldest first so that a later conflicting one is the one
    /// left out and nothing programmed changes; a CIDR that is a local Subnet's, or another
    /// cluster's or type's, is left out too (upstream `pkg/daemon/route/remote.go` refuses them).
    fn merge_remote_subnets(&mut self, local: &[MergedSubnet]) -> Vec<MergedRemote> {
        let api = self.api;
        let mut sorted: Vec<&'a hybridnet_api::multicluster::RemoteSubnet> =
            api.remote_subnets.iter().collect();
        sorted.sort_by(|a, b| {
            let key = |r: &hybridnet_api::multicluster::RemoteSubnet| {
                (
                    r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    r.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut accepted: Vec<hybridnet_api::multicluster::RemoteSubnet> = Vec::new();
        let mut merged: BTreeMap<Cidr, MergedRemote> = BTreeMap::new();
        for rs in sorted {
            let name = rs.metadata.name.clone().unwrap_or_default();
            let obj = format!("RemoteSubnet/{name}");
            let cluster = rs.spec.cluster_name.clone().unwrap_or_default();
            let parsed = match parse_range_shape(&rs.spec.range, "spec.range") {
                Ok(p) => p,
                Err(e) => {
                    self.problem(obj, format!("not programmed: {e}"));
                    continue;
                }
            };
            if let Err(e) = remote_subnet_create(rs, &api.subnets, &accepted) {
                self.problem(obj, format!("not programmed: {e}"));
                continue;
            }
            let cidr = parsed.cidr;
            if let Some(l) = local.iter().find(|l| l.cidr == cidr) {
                self.problem(
                    obj,
                    format!(
                        "not programmed: spec.range.cidr: {cidr} is also the CIDR of local subnet {:?}",
                        l.names.join(",")
                    ),
                );
                continue;
            }
            let network_type = rs.spec.effective_type();
            if let Some(m) = self.plan.remote_subnets.get(&cidr)
                && (m.cluster != cluster || m.network_type != network_type)
            {
                let msg = format!(
                    "not programmed: spec.range.cidr: {cidr} is also the CIDR of RemoteSubnet {:?} (cluster {:?}, {:?})",
                    m.names.join(","),
                    m.cluster,
                    m.network_type
                );
                self.problem(obj, msg);
                continue;
            }
            accepted.push(rs.clone());
            if !self.families.contains(&parsed.version) {
                continue;
            }
            let part = RangePart {
                explicit_bounds: [&rs.spec.range.start, &rs.spec.range.end]
                    .iter()
                    .any(|b| b.as_deref().is_some_and(|b| !b.is_empty())),
                parsed,
            };
            let entry =
                self.plan
                    .remote_subnets
                    .entry(cidr)
                    .or_insert_with(|| PlannedRemoteSubnet {
                        names: Vec::new(),
                        cluster: cluster.clone(),
                        network_type,
                    });
            entry.names.push(name);
            entry.names.sort();
            merged
                .entry(cidr)
                .or_insert_with(|| MergedRemote {
                    cidr,
                    network_type,
                    parts: Vec::new(),
                })
                .parts
                .push(part);
        }
        merged.into_values().collect()
    }

    fn plan_vxlan(&mut self, net: &Network, parent: &str) {
        let obj = format!("Network/{}", net.metadata.name.as_deref().unwrap_or(""));
        let vni = match net.spec.net_id {
            Some(v) if VNI.contains(&v) => v as u32,
            other => {
                self.problem(
                    obj,
                    format!("overlay netID {other:?} is not a VNI in 1..={MAX_VNI}"),
                );
                return;
            }
        };
        let Some(iface) = self.interfaces.get(parent).copied() else {
            return;
        };
        let name = format!("{parent}.vxlan{vni}");
        if name.len() > MAX_IFNAME {
            self.problem(
                "host",
                format!("VXLAN device name {name:?} is longer than {MAX_IFNAME} bytes"),
            );
            return;
        }
        let Some(mac) = iface.mac.filter(|m| !m.is_zero()) else {
            self.problem("host", format!("VXLAN parent {parent} has no MAC address"));
            return;
        };
        let mut candidates: Vec<&HostAddress> = iface
            .addresses
            .iter()
            .filter(|a| is_global_unicast(a.ip))
            // Not a NOPREFIXROUTE address: those are pod addresses (ARP enhancement), never the
            // node's own.
            .filter(|a| !a.noprefixroute)
            .filter(|a| self.cfg.vtep_address_cidrs.iter().any(|c| c.contains(a.ip)))
            .collect();
        candidates.sort_by_key(|a| a.ip.is_ipv6());
        let Some(local) = candidates.first().map(|a| a.ip) else {
            self.problem(
                "host",
                format!("VXLAN parent {parent} has no global address inside the VTEP CIDRs"),
            );
            return;
        };
        self.plan.vxlan = Some(VxlanDevice {
            name,
            vni,
            parent: parent.to_string(),
            local,
            port: self.cfg.vxlan_udp_port,
            mac,
            mtu: iface.mtu.saturating_sub(50).max(68),
        });
    }

    fn plan_local_ips(&mut self) {
        let Some(vx) = self.plan.vxlan.clone() else {
            return;
        };
        let mut local: BTreeSet<IpAddr> = BTreeSet::new();
        for iface in &self.host.interfaces {
            if is_container_link(&iface.name) || iface.name == vx.name {
                continue;
            }
            for a in &iface.addresses {
                if is_global_unicast(a.ip)
                    && (self.api.node_addresses.contains(&a.ip)
                        || a.ip == vx.local
                        || self
                            .cfg
                            .extra_node_local_vxlan_ip_cidrs
                            .iter()
                            .any(|c| c.contains(a.ip)))
                {
                    local.insert(a.ip);
                }
            }
        }
        // IPv4 first, as upstream lists them.
        let mut ips: Vec<IpAddr> = local.iter().copied().collect();
        ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        self.plan.node_local_ips.extend(local.iter().copied());
        self.plan.cluster_node_ips.extend(local.iter().copied());
        self.plan.vxlan_addresses = local
            .into_iter()
            .filter(|ip| self.families.contains(&IpVersion::of(ip)))
            .collect();
        self.plan.published_vtep = Some(PublishedVtep {
            ip: vx.local,
            mac: vx.mac,
            local_ips: ips,
        });
    }

    fn plan_remote_vteps(&mut self, overlay: Option<&Network>) {
        // This node's own addresses count for local delivery even without an overlay.
        for iface in &self.host.interfaces {
            for a in &iface.addresses {
                if is_global_unicast(a.ip) && !a.noprefixroute {
                    self.plan.node_local_ips.insert(a.ip);
                }
            }
        }
        let Some(vx) = self.plan.vxlan.clone() else {
            return;
        };
        let node_list: BTreeSet<&str> = overlay
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.node_list.as_ref())
            .map(|l| l.iter().map(String::as_str).collect())
            .unwrap_or_default();
        // Nodes of the overlay network first: when two NodeInfos claim one VTEP MAC (a stale
        // NodeInfo of a removed node), the live node wins.
        let api = self.api;
        let mut infos: Vec<(bool, &'a str, &'a NodeInfo)> = api
            .node_infos
            .iter()
            .map(|n| {
                let name = n.metadata.name.as_deref().unwrap_or_default();
                (!node_list.contains(name), name, &**n)
            })
            .collect();
        infos.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut published: BTreeSet<&str> = BTreeSet::new();
        for (_, name, ni) in infos {
            let obj = format!("NodeInfo/{name}");
            let Some(v) = ni.spec.vtep_info.as_ref() else {
                continue;
            };
            let (Some(ip), Some(mac)) = (v.ip.as_deref(), v.mac.as_deref()) else {
                continue;
            };
            let ip = match parse_ip(ip) {
                Ok(ip) => ip,
                Err(e) => {
                    self.problem(obj, format!("spec.vtepInfo.ip: {e}"));
                    continue;
                }
            };
            let mac: MacAddr = match mac.parse() {
                Ok(m) => m,
                Err(e) => {
                    self.problem(obj, format!("spec.vtepInfo.mac: {e}"));
                    continue;
                }
            };
            published.insert(name);
            for lip in v
                .local_ips
                .iter()
                .flatten()
                .filter_map(|r| parse_ip(r).ok())
            {
                self.plan.cluster_node_ips.insert(lip);
            }
            if name == self.api.node_name || mac == vx.mac {
                continue;
            }
            if ip.is_ipv6() != vx.local.is_ipv6() || mac.is_zero() {
                self.problem(
                    obj,
                    format!(
                        "VTEP {ip}/{mac} is unusable from local VTEP {} (family or zero MAC)",
                        vx.local
                    ),
                );
                continue;
            }
            if let Some((other_ip, other)) = self.plan.remote_vteps.get(&mac) {
                self.problem(
                    obj,
                    format!("VTEP MAC {mac} is already used by {other} ({other_ip}); ignored"),
                );
                continue;
            }
            self.plan.remote_vteps.insert(mac, (ip, name.to_string()));
            let owner: Arc<str> = Arc::from(name);
            self.vtep_by_node.entry(owner.clone()).or_insert(mac);
            self.plan.fdb.insert(FdbEntry { mac, dst: ip });
            self.plan.fdb.insert(FdbEntry {
                mac: MacAddr::VXLAN_BROADCAST,
                dst: ip,
            });
            for raw in v.local_ips.iter().flatten() {
                match parse_ip(raw) {
                    Ok(lip) if self.families.contains(&IpVersion::of(&lip)) => {
                        self.seeds
                            .entry(lip)
                            .or_insert_with(|| (mac, owner.clone()));
                    }
                    Ok(_) => {}
                    Err(e) => self.problem(obj.clone(), format!("spec.vtepInfo.localIPs: {e}")),
                }
            }
        }
        self.plan.fdb_prune = node_list.iter().all(|n| published.contains(n));
    }

    fn network_has_node(&self, network: &str) -> bool {
        self.networks.get(network).is_some_and(|n| self.node_in(n))
    }

    fn allocate_tables(&mut self, wanted: &[Cidr]) -> BTreeMap<Cidr, u32> {
        let t = &self.cfg.tables;
        let in_range = |n: u32| {
            n >= t.subnet_first
                && n <= t.subnet_last
                && n != t.local_direct
                && n != t.to_overlay
                && n != t.overlay_mark
        };
        let mut out = BTreeMap::new();
        let mut used = BTreeSet::new();
        // Keep what is already programmed (restart, added subnets never renumber others).
        for c in wanted {
            if let Some(&n) = self.host.existing_subnet_tables.get(c)
                && in_range(n)
                && !self.host.foreign_tables.contains(&n)
                && used.insert(n)
            {
                out.insert(*c, n);
            }
        }
        // Tables of CIDRs that are going away still hold routes until cleaned: do not reuse them.
        let reserved: BTreeSet<u32> = self.host.existing_subnet_tables.values().copied().collect();
        let mut next = t.subnet_first;
        for c in wanted {
            if out.contains_key(c) {
                continue;
            }
            while next <= t.subnet_last
                && (!in_range(next)
                    || used.contains(&next)
                    || reserved.contains(&next)
                    || self.host.foreign_tables.contains(&next))
            {
                next += 1;
            }
            if next > t.subnet_last {
                self.problem(
                    "config",
                    format!("no free routing table left for subnet {c}"),
                );
                continue;
            }
            used.insert(next);
            out.insert(*c, next);
        }
        out
    }

    fn plan_tables(&mut self, subnets: &[MergedSubnet], remote: &[MergedRemote]) {
        let t = self.cfg.tables.clone();
        let vx = self.plan.vxlan.as_ref().map(|v| v.name.clone());
        for &family in &self.families.clone() {
            self.plan.rules.insert(PolicyRule {
                family,
                priority: t.priority_base,
                table: t.local_direct,
                src: None,
                fwmark: None,
            });
            self.plan.rules.insert(PolicyRule {
                family,
                priority: t.priority_base + 1,
                table: t.to_overlay,
                src: None,
                fwmark: None,
            });
            self.plan.rules.insert(PolicyRule {
                family,
                priority: t.priority_base + 2,
                table: t.overlay_mark,
                src: None,
                fwmark: Some((0x20, 0x20)),
            });
        }
        self.plan.owned_tables.insert(t.to_overlay);
        self.plan.owned_tables.insert(t.overlay_mark);

        // Excludes per CIDR, needed by the overlay tables.
        let mut excludes: BTreeMap<Cidr, Vec<Cidr>> = BTreeMap::new();
        for s in subnets {
            match exclude_blocks(s.cidr, &s.parts) {
                Ok(x) => {
                    excludes.insert(s.cidr, x);
                }
                Err(e) => self.problem(format!("Subnet/{}", s.names.join(",")), e),
            }
        }

        for r in remote {
            match exclude_blocks(r.cidr, &r.parts) {
                Ok(x) => {
                    excludes.insert(r.cidr, x);
                }
                Err(e) => {
                    let names = self
                        .plan
                        .remote_subnets
                        .get(&r.cidr)
                        .map(|m| m.names.join(","))
                        .unwrap_or_default();
                    self.problem(format!("RemoteSubnet/{names}"), e)
                }
            }
        }

        // Table 40000 and 40001. Remote overlay subnets go through the VXLAN device like local
        // ones (upstream `pkg/daemon/route/route.go`, `ensureToOverlaySubnetRoutes`).
        if let Some(vx) = &vx {
            let overlay_cidrs: Vec<Cidr> = subnets
                .iter()
                .filter(|s| s.mode == NetworkMode::Vxlan)
                .map(|s| s.cidr)
                .chain(
                    remote
                        .iter()
                        .filter(|r| r.network_type == NetworkType::Overlay)
                        .map(|r| r.cidr),
                )
                .collect();
            for cidr in overlay_cidrs {
                self.route(t.to_overlay, cidr, Some(vx), None, None, false);
                for x in excludes.get(&cidr).into_iter().flatten() {
                    self.throw(t.to_overlay, *x);
                }
            }
            for &family in &self.families.clone() {
                self.route(
                    t.overlay_mark,
                    default_cidr(family),
                    Some(vx),
                    None,
                    None,
                    false,
                );
            }
        }

        let bgp_iface = if self.bgp_networks().iter().any(|n| self.listed_in(n)) {
            let prefer = self.cfg.prefer_bgp_interfaces.clone();
            self.pick_interface(&prefer, "BGP")
        } else {
            None
        };
        if let Some(b) = &bgp_iface {
            self.plan.underlay_interfaces.insert(b.clone());
        }
        let vlan_parent = if subnets
            .iter()
            .any(|s| s.mode == NetworkMode::Vlan && self.network_has_node(&s.network))
        {
            let prefer = self.cfg.prefer_vlan_interfaces.clone();
            self.pick_interface(&prefer, "VLAN parent")
        } else {
            None
        };

        let on_host: Vec<&MergedSubnet> = subnets
            .iter()
            .filter(|s| match s.mode {
                NetworkMode::Vxlan => vx.is_some(),
                _ => self.network_has_node(&s.network),
            })
            .collect();
        let tables = self.allocate_tables(&on_host.iter().map(|s| s.cidr).collect::<Vec<_>>());
        for s in on_host {
            let Some(&table) = tables.get(&s.cidr) else {
                continue;
            };
            let obj = format!("Subnet/{}", s.names.join(","));
            let planned = match s.mode {
                NetworkMode::Vxlan => {
                    let Some(vx) = &vx else { continue };
                    if s.auto_nat {
                        // Underlay subnets, local and remote, are reached through the VXLAN
                        // device without NAT (upstream `ensureFromPodSubnetRuleAndRoutes` with
                        // the remote underlay subnets combined in).
                        let underlay: Vec<Cidr> = subnets
                            .iter()
                            .filter(|u| u.network_type == NetworkType::Underlay)
                            .map(|u| u.cidr)
                            .chain(
                                remote
                                    .iter()
                                    .filter(|r| r.network_type != NetworkType::Overlay)
                                    .map(|r| r.cidr),
                            )
                            .filter(|c| c.version == s.cidr.version)
                            .collect();
                        for u in underlay {
                            self.route(table, u, Some(vx), None, None, false);
                            for x in excludes.get(&u).into_iter().flatten() {
                                self.throw(table, *x);
                            }
                        }
                    } else {
                        self.route(
                            table,
                            default_cidr(s.cidr.version),
                            Some(vx),
                            None,
                            None,
                            false,
                        );
                    }
                    true
                }
                NetworkMode::Vlan => self.plan_vlan_table(s, table, vlan_parent.as_deref(), &obj),
                NetworkMode::Bgp | NetworkMode::GlobalBgp => {
                    self.plan_bgp_table(s, table, bgp_iface.as_deref(), &obj)
                }
            };
            if !planned {
                continue;
            }
            self.plan.owned_tables.insert(table);
            self.plan.subnet_tables.insert(
                s.cidr,
                SubnetTable {
                    table,
                    network: s.network.clone(),
                    mode: s.mode,
                    auto_nat_outgoing: s.auto_nat,
                },
            );
            self.plan.rules.insert(PolicyRule {
                family: s.cidr.version,
                priority: t.priority_base + 3,
                table,
                src: Some(s.cidr),
                fwmark: Some((0, 0x4040)),
            });
        }
    }

    fn plan_vlan_table(
        &mut self,
        s: &MergedSubnet,
        table: u32,
        parent: Option<&str>,
        obj: &str,
    ) -> bool {
        let Some(parent) = parent else { return false };
        let Some(link) = vlan_link(parent, s.net_id) else {
            self.problem(
                obj,
                format!(
                    "VLAN id {:?} on parent {parent} is not usable (id 0..=4094, name <= {MAX_IFNAME} bytes)",
                    s.net_id
                ),
            );
            return false;
        };
        // "Pod in the node's subnet": copy the node's address as source of the direct route.
        let src = self.interfaces.get(link.name.as_str()).and_then(|i| {
            i.addresses
                .iter()
                .find(|a| !a.noprefixroute && s.cidr.contains(a.ip))
                .map(|a| a.ip)
        });
        self.route(table, s.cidr, Some(&link.name), None, src, true);
        match s.gateway {
            Some(gw) => self.route(
                table,
                default_cidr(s.cidr.version),
                Some(&link.name),
                Some(gw),
                None,
                false,
            ),
            None => self.problem(
                obj,
                "VLAN subnet has no gateway: no default route in its table",
            ),
        }
        self.plan.underlay_interfaces.insert(link.name.clone());
        self.plan.vlan_links.insert(link);
        true
    }

    fn plan_bgp_table(
        &mut self,
        s: &MergedSubnet,
        table: u32,
        bgp_iface: Option<&str>,
        obj: &str,
    ) -> bool {
        let Some(dev) = bgp_iface else { return false };
        let peers = self
            .bgp_networks()
            .iter()
            .filter(|n| self.listed_in(n))
            .flat_map(|n| n.spec.bgp_peers().iter())
            .filter_map(|p| Some((parse_ip(&p.address).ok()?, p.routes_traffic())))
            .collect::<Vec<_>>();
        let gateway = match traffic_peer(peers, s.cidr.version == IpVersion::V6) {
            Ok(Some(one)) => Some((Some(one), dev.to_string())),
            // The main table's default route, also one without a gateway (a point-to-point
            // uplink, or the device-only routes `kubectl hybridnet trace` reconstructs).
            Ok(None) => self
                .host
                .main_routes
                .iter()
                .filter(|r| r.dst == default_cidr(s.cidr.version))
                .find_map(|r| Some((r.gateway, r.dev.clone()?))),
            Err(e) => {
                self.problem(obj, e.to_string());
                return false;
            }
        };
        match gateway {
            Some((gw, d)) => self.route(
                table,
                default_cidr(s.cidr.version),
                Some(&d),
                gw,
                None,
                false,
            ),
            None => self.problem(
                obj,
                "no BGP peer routes traffic and the main table has no default route",
            ),
        }
        true
    }

    fn route(
        &mut self,
        table: u32,
        dst: Cidr,
        dev: Option<&String>,
        via: Option<IpAddr>,
        src: Option<IpAddr>,
        scope_link: bool,
    ) {
        self.plan.routes.insert(PlannedRoute {
            table,
            dst,
            kind: RouteKind::Unicast,
            dev: dev.cloned(),
            via,
            src,
            scope_link,
        });
    }

    fn throw(&mut self, table: u32, dst: Cidr) {
        self.plan.routes.insert(PlannedRoute {
            table,
            dst,
            kind: RouteKind::Throw,
            dev: None,
            via: None,
            src: None,
            scope_link: false,
        });
    }
}

/// FDB and neighbour entries for other clusters' nodes (RemoteVteps): `mac dst ip` and the
/// flood entry, the node addresses and the pods' addresses (`spec.endpointIPList`) resolved
/// to the remote VTEP MAC, as upstream resolves them on a neighbour miss
/// (`pkg/daemon/controller/controller.go`, `handleVxlanInterfaceNeighEvent`). Runs after
/// the local cluster's NodeInfos and IPInstances: an address or MAC they claim stays theirs
/// and the RemoteVtep's claim is reported. Pod addresses outside every programmed
/// RemoteSubnet are left out (their subnet was refused, or the mirror is inconsistent).
pub(super) fn plan_remote_cluster_vteps(
    plan: &mut DataPlanePlan,
    api: &ApiState,
    families: &[IpVersion],
) {
    let mut problems: Vec<PlanProblem> = Vec::new();
    let mut problem =
        |object: String, message: String| problems.push(PlanProblem { object, message });
    let mut sorted: Vec<&hybridnet_api::multicluster::RemoteVtep> =
        api.remote_vteps.iter().map(|v| &**v).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let vx = plan.vxlan.clone();
    for rv in sorted {
        let name = rv.metadata.name.clone().unwrap_or_default();
        let obj = format!("RemoteVtep/{name}");
        let addrs = match remote_vtep(&rv.spec) {
            Ok(a) => a,
            Err(e) => {
                problem(obj, format!("not programmed: {e}"));
                continue;
            }
        };
        let Some(vx) = &vx else { continue };
        let cluster = rv.spec.cluster_name.clone().unwrap_or_default();
        let node = rv
            .spec
            .node_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| name.clone());
        if addrs.ip.is_ipv6() != vx.local.is_ipv6() {
            problem(
                obj,
                format!(
                    "not programmed: spec.ip: {} is not of the family of the local VTEP {}",
                    addrs.ip, vx.local
                ),
            );
            continue;
        }
        if addrs.mac == vx.mac || addrs.ip == vx.local {
            problem(
                obj,
                format!(
                    "not programmed: VTEP {}/{} is this node's own VTEP",
                    addrs.ip, addrs.mac
                ),
            );
            continue;
        }
        if let Some((other_ip, other)) = plan.remote_vteps.get(&addrs.mac) {
            let msg = format!(
                "not programmed: spec.mac: VTEP MAC {} is already used by {other} ({other_ip})",
                addrs.mac
            );
            problem(obj, msg);
            continue;
        }
        plan.remote_vteps
            .insert(addrs.mac, (addrs.ip, node.clone()));
        plan.remote_cluster_vteps.insert(
            addrs.mac,
            RemoteVtepRef {
                name: name.clone(),
                cluster,
                node,
            },
        );
        plan.fdb.insert(FdbEntry {
            mac: addrs.mac,
            dst: addrs.ip,
        });
        plan.fdb.insert(FdbEntry {
            mac: MacAddr::VXLAN_BROADCAST,
            dst: addrs.ip,
        });
        let owner: Arc<str> = Arc::from(obj.as_str());
        let mut outside: Vec<IpAddr> = Vec::new();
        let node_ips = addrs.local_ips.iter().map(|ip| (*ip, true));
        let pod_ips = addrs.endpoint_ips.iter().map(|ip| (*ip, false));
        for (ip, is_node) in node_ips.chain(pod_ips) {
            if !families.contains(&IpVersion::of(&ip)) {
                continue;
            }
            let taken = if plan.local_pods.contains_key(&ip) {
                Some("a pod of this node".to_string())
            } else if plan.node_local_ips.contains(&ip) || plan.cluster_node_ips.contains(&ip) {
                Some("a node address of this cluster".to_string())
            } else {
                match plan.remote_owner.get(&ip) {
                    Some(o) if **o != *owner => Some(format!("also claimed by {o}")),
                    _ => None,
                }
            };
            if let Some(why) = taken {
                let field = if is_node {
                    "spec.localIPs"
                } else {
                    "spec.endpointIPList"
                };
                problem(obj.clone(), format!("{field}: {ip} is {why}; left out"));
                continue;
            }
            if !is_node && !plan.remote_subnets.keys().any(|c| c.contains(ip)) {
                outside.push(ip);
                continue;
            }
            plan.vxlan_neighbours.insert(ip, addrs.mac);
            plan.remote_owner.insert(ip, owner.clone());
            if is_node {
                plan.remote_node_ips.insert(ip);
            }
        }
        if let Some(first) = outside.first() {
            problem(
                obj,
                format!(
                    "spec.endpointIPList: {} address(es) outside every programmed RemoteSubnet (first {first}); left out",
                    outside.len()
                ),
            );
        }
    }
    plan.problems.extend(problems);
}

/// The sysctls of a plan (after its proxy entries are in: `proxy_ndp` follows the IPv6 ones).
fn sysctls(
    plan: &DataPlanePlan,
    host: &HostState,
    families: &[IpVersion],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut set = |k: String, v: &str| {
        out.insert(k, v.to_string());
    };
    set("net/ipv4/ip_forward".into(), "1");
    set("net/ipv4/conf/all/rp_filter".into(), "0");
    set("net/ipv4/conf/default/rp_filter".into(), "0");
    set("net/ipv4/conf/all/arp_filter".into(), "0");
    let mut devs: BTreeSet<String> = host
        .interfaces
        .iter()
        .filter(|i| !is_container_link(&i.name))
        .map(|i| i.name.clone())
        .collect();
    devs.extend(plan.vlan_links.iter().map(|l| l.name.clone()));
    if let Some(vx) = &plan.vxlan {
        devs.insert(vx.name.clone());
    }
    for d in &devs {
        set(format!("net/ipv4/conf/{d}/rp_filter"), "0");
    }
    if families.contains(&IpVersion::V6) {
        set("net/ipv6/conf/all/forwarding".into(), "1");
        let v6_proxy_devs: BTreeSet<&str> = plan
            .proxy_neighbours
            .iter()
            .filter(|p| p.ip.is_ipv6())
            .map(|p| p.dev.as_str())
            .collect();
        for d in v6_proxy_devs {
            set(format!("net/ipv6/conf/{d}/proxy_ndp"), "1");
        }
        if let Some(vx) = &plan.vxlan {
            set(format!("net/ipv6/conf/{}/accept_ra", vx.name), "0");
        }
    }
    out
}

/// The VLAN forward interface for a VLAN id (`None` id and 0 mean the parent itself).
pub fn vlan_link(parent: &str, net_id: Option<i32>) -> Option<VlanLink> {
    let id = net_id.unwrap_or(0);
    if !(0..=4094).contains(&id) {
        return None;
    }
    let name = if id == 0 {
        parent.to_string()
    } else {
        format!("{parent}.{id}")
    };
    (name.len() <= MAX_IFNAME).then(|| VlanLink {
        name,
        parent: parent.to_string(),
        id: id as u16,
    })
}

/// What the nftables renderer needs to know about subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetView {
    pub cidr: Cidr,
    pub mode: NetworkMode,
    pub network_type: NetworkType,
    pub auto_nat: bool,
    /// The subnet's network includes this node.
    pub on_node: bool,
    /// A RemoteSubnet (another cluster's).
    pub remote: bool,
}

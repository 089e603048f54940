//! The speaker's desired configuration as a pure function of the agent's API state and the host
//! (upstream `pkg/daemon/bgp/bgp.go`): local AS, router id and next hops, peers and announcements.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hybridnet_api::constants::label;
use hybridnet_api::ipmath::{Cidr, parse_ip, u128_to_ip};
use hybridnet_api::v1::{IPInstance, IpVersion, Network, NetworkMode, NetworkType};
use hybridnet_bgp::speaker::validate_peers;
use hybridnet_bgp::{Announcement, Communities, PeerConfig, Prefix};

use crate::plan::{ApiState, HostInterface, HostState, PlanProblem, is_global_unicast};

/// Graceful restart time when a peer's `gracefulRestartSeconds` is absent or 0 (spec 1.1).
pub const DEFAULT_GRACEFUL_RESTART_SECONDS: u16 = 300;

/// What the speaker of this node should be doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredBgp {
    /// `None`: the node belongs to no BGP-mode network; no speaker runs.
    pub speaker: Option<DesiredSpeaker>,
    /// Networks whose local pods are announced (BGP mode with this node, and GlobalBGP when the
    /// node is attached); CNI ADD of their pods waits for the announcement.
    pub announced_networks: BTreeSet<String>,
    /// Inputs that could not be used; everything else is still configured.
    pub problems: Vec<PlanProblem>,
}

/// The identity and content of the node's speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSpeaker {
    pub identity: SpeakerIdentity,
    /// Peers of every BGP network of this node with the chosen AS, ordered by address.
    pub peers: Vec<PeerConfig>,
    pub routes: BTreeSet<Announcement>,
}

/// Speaker-wide settings; a change of any of them needs a new speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerIdentity {
    /// The BGP network's `netID`.
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    /// The peering interface (`--prefer-bgp-interfaces`, else the default route's).
    pub interface: String,
    /// Source of IPv4 sessions and next hop of IPv4 routes.
    pub local_v4: Option<Ipv4Addr>,
    /// Source of IPv6 sessions and next hop of IPv6 routes.
    pub local_v6: Option<Ipv6Addr>,
}

fn listed_in(network: &Network, node: &str) -> bool {
    network
        .status
        .as_ref()
        .and_then(|s| s.node_list.as_ref())
        .is_some_and(|l| l.iter().any(|n| n == node))
}

fn name_of(network: &Network) -> &str {
    network.metadata.name.as_deref().unwrap_or("")
}

struct Builder<'a> {
    api: &'a ApiState,
    host: &'a HostState,
    problems: Vec<PlanProblem>,
}

impl Builder<'_> {
    fn problem(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.problems.push(PlanProblem {
            object: object.into(),
            message: message.into(),
        });
    }
}

/// Whether [`desired_bgp`] reads the IPInstances: only when this node is in a BGP network (the
/// speaker announces its local pods); otherwise it returns before looking at them.
pub fn needs_ip_instances(api: &ApiState) -> bool {
    api.networks
        .iter()
        .any(|n| n.spec.effective_mode() == NetworkMode::Bgp && listed_in(n, &api.node_name))
}

/// Builds the desired speaker configuration. Never fails: unusable inputs are reported in
/// [`DesiredBgp::problems`] and left out.
pub fn desired_bgp(
    api: &ApiState,
    host: &HostState,
    prefer_bgp_interfaces: &[String],
) -> DesiredBgp {
    let mut b = Builder {
        api,
        host,
        problems: Vec::new(),
    };
    let speaker = b.speaker(prefer_bgp_interfaces);
    let (speaker, announced_networks) = match speaker {
        Some((s, nets)) => (Some(s), nets),
        None => (None, BTreeSet::new()),
    };
    let mut problems = b.problems;
    problems.sort();
    problems.dedup();
    DesiredBgp {
        speaker,
        announced_networks,
        problems,
    }
}

impl<'a> Builder<'a> {
    fn speaker(&mut self, prefer: &[String]) -> Option<(DesiredSpeaker, BTreeSet<String>)> {
        let node = self.api.node_name.as_str();
        let mut mine: Vec<&'a Network> = self
            .api
            .networks
            .iter()
            .filter(|n| n.spec.effective_mode() == NetworkMode::Bgp && listed_in(n, node))
            .collect();
        mine.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        // The AS of the first network (by name) with a usable netID; a network with another AS
        // cannot share the speaker (upstream: "a second BGP network with a different AS").
        let mut asn: Option<u32> = None;
        let mut networks: Vec<&'a Network> = Vec::new();
        for n in mine {
            let obj = format!("Network/{}", name_of(n));
            let this = match n.spec.net_id {
                Some(id) if id > 0 => id as u32,
                other => {
                    self.problem(
                        obj,
                        format!("spec.netID {other:?} is not a BGP AS number (1..=2147483647)"),
                    );
                    continue;
                }
            };
            match asn {
                None => {
                    asn = Some(this);
                    networks.push(n);
                }
                Some(a) if a == this => networks.push(n),
                Some(a) => self.problem(
                    obj,
                    format!(
                        "spec.netID {this} differs from AS {a} of another BGP network of this node; ignored"
                    ),
                ),
            }
        }
        let local_asn = asn?;
        let interface = self.pick_interface(prefer)?;
        let (local_v4, local_v6) = self.router_addresses(interface);
        let router_id = match (local_v4, local_v6) {
            (Some(v4), _) => v4,
            // No IPv4 address: the low 32 bits of the IPv6 address (BGP identifiers are 32 bits).
            (None, Some(v6)) => Ipv4Addr::from((u128::from(v6) & 0xffff_ffff) as u32),
            (None, None) => {
                self.problem(
                    "host",
                    format!(
                        "BGP interface {} has no usable global address for the router id and next hops",
                        interface.name
                    ),
                );
                return None;
            }
        };
        if router_id.is_unspecified() {
            self.problem(
                "host",
                format!(
                    "BGP interface {}: no usable router id (IPv6 address ends in 0.0.0.0)",
                    interface.name
                ),
            );
            return None;
        }
        let peers = self.peers(&networks);
        let mut announced: BTreeSet<String> =
            networks.iter().map(|n| name_of(n).to_string()).collect();
        // GlobalBGP networks: usable on nodes attached to a BGP network, pods exportable.
        let global: BTreeSet<String> = self
            .api
            .networks
            .iter()
            .filter(|n| n.spec.effective_type() == NetworkType::GlobalBgp)
            .map(|n| name_of(n).to_string())
            .collect();
        let routes = self.routes(&announced, &global, local_v4, local_v6);
        announced.extend(global);
        Some((
            DesiredSpeaker {
                identity: SpeakerIdentity {
                    local_asn,
                    router_id,
                    interface: interface.name.clone(),
                    local_v4,
                    local_v6,
                },
                peers,
                routes,
            },
            announced,
        ))
    }

    /// `--prefer-bgp-interfaces`: first existing name; none given: the default route's
    /// interface (IPv4 first, then IPv6).
    fn pick_interface(&mut self, prefer: &[String]) -> Option<&'a HostInterface> {
        let find = |name: &str| self.host.interfaces.iter().find(|i| i.name == name);
        if prefer.is_empty() {
            let by_default = [IpVersion::V4, IpVersion::V6].into_iter().find_map(|v| {
                self.host
                    .main_routes
                    .iter()
                    .filter(|r| r.dst.version == v && r.dst.prefix == 0)
                    .find_map(|r| r.dev.as_deref().and_then(find))
            });
            if by_default.is_none() {
                self.problem(
                    "host",
                    "no BGP interface: no default route and no --prefer-bgp-interfaces",
                );
            }
            return by_default;
        }
        let found = prefer.iter().find_map(|n| find(n));
        if found.is_none() {
            self.problem(
                "host",
                format!("no BGP interface: none of {prefer:?} exists"),
            );
        }
        found
    }

    /// Spec 6: one global address per family is it; with several, the one equal to the
    /// family's default route `src` or containing its gateway.
    fn router_addresses(&mut self, iface: &HostInterface) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let pick = |b: &mut Self, version: IpVersion| -> Option<IpAddr> {
            let mut candidates: Vec<(IpAddr, u8)> = iface
                .addresses
                .iter()
                .filter(|a| IpVersion::of(&a.ip) == version && is_global_unicast(a.ip))
                .map(|a| (a.ip, a.prefix))
                .collect();
            candidates.sort();
            candidates.dedup();
            match candidates.as_slice() {
                [] => None,
                [(one, _)] => Some(*one),
                many => {
                    let default = b.host.main_routes.iter().find(|r| {
                        r.dst.version == version
                            && r.dst.prefix == 0
                            && r.dev.as_deref() == Some(iface.name.as_str())
                    });
                    let chosen = default.and_then(|d| {
                        many.iter()
                            .find(|(ip, _)| d.src == Some(*ip))
                            .or_else(|| {
                                many.iter().find(|(ip, len)| {
                                    d.gateway.is_some_and(|gw| {
                                        Cidr::parse_any(&format!("{ip}/{len}"))
                                            .is_ok_and(|c| c.contains(gw))
                                    })
                                })
                            })
                            .map(|(ip, _)| *ip)
                    });
                    if chosen.is_none() {
                        b.problem(
                            "host",
                            format!(
                                "BGP interface {} has several IPv{} addresses and none is the default route's source or holds its gateway",
                                iface.name,
                                if version == IpVersion::V4 { 4 } else { 6 }
                            ),
                        );
                    }
                    chosen
                }
            }
        };
        let v4 = pick(self, IpVersion::V4).and_then(|ip| match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
        let v6 = if self.host.ipv6_enabled {
            pick(self, IpVersion::V6).and_then(|ip| match ip {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            })
        } else {
            None
        };
        (v4, v6)
    }

    fn peers(&mut self, networks: &[&Network]) -> Vec<PeerConfig> {
        let mut out: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
        for n in networks {
            for (i, p) in n.spec.bgp_peers().iter().enumerate() {
                let obj = format!("Network/{}", name_of(n));
                let field = format!("spec.config.bgpPeers[{i}]");
                let address = match parse_ip(p.address.trim()) {
                    Ok(a) => a,
                    Err(e) => {
                        self.problem(obj, format!("{field}.address: {e}"));
                        continue;
                    }
                };
                let asn = match u32::try_from(p.asn) {
                    Ok(a) if a > 0 => a,
                    _ => {
                        self.problem(
                            obj,
                            format!("{field}.asn {} is not an AS number (1..=2147483647)", p.asn),
                        );
                        continue;
                    }
                };
                let graceful = match p.graceful_restart_seconds {
                    None | Some(0) => DEFAULT_GRACEFUL_RESTART_SECONDS,
                    Some(s) => match u16::try_from(s) {
                        Ok(s) => s,
                        Err(_) => {
                            self.problem(
                                obj,
                                format!("{field}.gracefulRestartSeconds {s} is outside 0..=4095"),
                            );
                            continue;
                        }
                    },
                };
                let peer = PeerConfig {
                    address,
                    asn,
                    password: p.password.clone().filter(|pw| !pw.is_empty()),
                    graceful_restart_seconds: Some(graceful),
                    does_not_route_traffic: p.does_not_route_traffic.unwrap_or(false),
                    allow_not_established: p.allow_not_established.unwrap_or(false),
                    passive: false,
                };
                if let Err(e) = validate_peers(std::slice::from_ref(&peer)) {
                    self.problem(obj, format!("{field}: {e}"));
                    continue;
                }
                match out.get(&address) {
                    Some(prev) if *prev == peer => {}
                    Some(_) => self.problem(
                        obj,
                        format!(
                            "{field}: peer {address} is configured differently by another BGP network of this node; the first (by network name) is used"
                        ),
                    ),
                    None => {
                        out.insert(address, peer);
                    }
                }
            }
        }
        out.into_values().collect()
    }

    fn routes(
        &mut self,
        bgp_networks: &BTreeSet<String>,
        global_networks: &BTreeSet<String>,
        local_v4: Option<Ipv4Addr>,
        local_v6: Option<Ipv6Addr>,
    ) -> BTreeSet<Announcement> {
        let node = self.api.node_name.as_str();
        let mut routes: BTreeMap<Prefix, Communities> = BTreeMap::new();
        let has_next_hop = |ip: &IpAddr| match ip {
            IpAddr::V4(_) => local_v4.is_some(),
            IpAddr::V6(_) => local_v6.is_some(),
        };
        let family_on = |ip: &IpAddr| ip.is_ipv4() || self.host.ipv6_enabled;
        let mut subnets: Vec<_> = self
            .api
            .subnets
            .iter()
            .filter(|s| bgp_networks.contains(&s.spec.network))
            .collect();
        subnets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut problems = Vec::new();
        for s in subnets {
            let obj = format!("Subnet/{}", s.metadata.name.as_deref().unwrap_or(""));
            let cidr = match Cidr::parse_any(s.spec.range.cidr.trim()) {
                Ok(c) => c,
                Err(e) => {
                    problems.push((obj, format!("spec.range.cidr: {e}")));
                    continue;
                }
            };
            let addr = u128_to_ip(cidr.version, cidr.first());
            if !family_on(&addr) {
                continue;
            }
            if !has_next_hop(&addr) {
                problems.push((
                    obj,
                    format!(
                        "not announced: the BGP interface has no IPv{} address for the next hop",
                        if addr.is_ipv4() { 4 } else { 6 }
                    ),
                ));
                continue;
            }
            // The subnet's block, host bits cleared: one Adj-RIB-Out entry however it is spelled.
            routes.insert(cidr.canonical(), Communities::None);
        }
        // No sorting needed: the result is a map, and a clash resolves the same in any order.
        for ipi in &self.api.ip_instances {
            let communities = if bgp_networks.contains(&ipi.spec.network) {
                Communities::NoExport
            } else if global_networks.contains(&ipi.spec.network) {
                Communities::None
            } else {
                continue;
            };
            if instance_node(ipi) != node {
                continue; // remote, or reserved (no node)
            }
            let obj = format!(
                "IPInstance/{}/{}",
                ipi.metadata.namespace.as_deref().unwrap_or(""),
                ipi.metadata.name.as_deref().unwrap_or("")
            );
            let ip = match instance_ip(ipi) {
                Ok(ip) => ip,
                Err(e) => {
                    problems.push((obj, format!("spec.address.ip: {e}")));
                    continue;
                }
            };
            if !family_on(&ip) {
                continue;
            }
            if !has_next_hop(&ip) {
                problems.push((
                    obj,
                    format!(
                        "{ip} not announced: the BGP interface has no IPv{} address for the next hop",
                        if ip.is_ipv4() { 4 } else { 6 }
                    ),
                ));
                continue;
            }
            let prefix = Prefix::host(ip);
            match routes.get(&prefix) {
                // Two instances claim one address: NO_EXPORT wins (the narrower scope).
                Some(Communities::NoExport) => {}
                _ => {
                    routes.insert(prefix, communities);
                }
            }
        }
        for (o, m) in problems {
            self.problem(o, m);
        }
        routes
            .into_iter()
            .map(|(p, c)| Announcement::new(p, c))
            .collect()
    }
}

/// The node an IPInstance is bound to (label first, as the planner reads it); empty = reserved.
fn instance_node(ipi: &IPInstance) -> &str {
    ipi.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::NODE))
        .or(ipi.spec.binding.node_name.as_ref())
        .map_or("", String::as_str)
}

/// `spec.address.ip` is `IP/prefixlen`; a bare IP is accepted too.
fn instance_ip(ipi: &IPInstance) -> Result<IpAddr, String> {
    let raw = ipi.spec.address.ip.trim();
    match parse_ip(raw) {
        Ok(ip) => Ok(ip),
        Err(_) => Cidr::parse_any(raw).map(|c| u128_to_ip(c.version, c.network)),
    }
}

/// The gateway of a BGP subnet's table for one family: the rule of
/// [`hybridnet_api::traffic_peer`], which the planner renders the tables with too.
pub fn family_gateway(peers: &[PeerConfig], v6: bool) -> Result<Option<IpAddr>, String> {
    hybridnet_api::traffic_peer::traffic_peer(
        peers.iter().map(|p| (p.address, !p.does_not_route_traffic)),
        v6,
    )
    .map_err(|e| e.to_string())
}

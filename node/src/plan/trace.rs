//! `trace`: walks a plan the way the kernel would for one packet (policy rules by priority, longest
//! prefix match per table, throw routes, neighbour and FDB resolution on the VXLAN device, the
//! nftables verdicts that matter for reachability). Used by `kubectl hybridnet trace` and the lab to
//! explain a path without touching a node.

use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::{IpVersion, NetworkMode};
use serde::{Deserialize, Serialize};

use super::model::{DataPlanePlan, MacAddr, PolicyRule, RouteKind};
use super::nft::{MARK_KUBE_MASQ, MARK_POD_TO_NODE};

/// One packet to trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceQuery {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Firewall mark the packet carries before hybridnet's prerouting chain.
    pub mark: u32,
    /// Input interface; defaults to the source pod's host veth when `src` is a local pod.
    pub iif: Option<String>,
    /// The packet belongs to an established connection (a reply); enables the pod -> node mark.
    pub established: bool,
}

impl TraceQuery {
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            src,
            dst,
            mark: 0,
            iif: None,
            established: false,
        }
    }
}

/// The rule that selected the route (`None` priority means the kernel's `local` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedRule {
    pub priority: u32,
    pub table: u32,
}

/// VXLAN encapsulation of the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encapsulation {
    pub vni: u32,
    pub local_vtep: IpAddr,
    pub remote_vtep: IpAddr,
    pub remote_node: String,
    /// Inner destination MAC (the remote node's parent NIC MAC).
    pub inner_dst_mac: MacAddr,
    pub udp_port: u16,
}

/// How the trace ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Delivered to this node itself.
    LocalDelivery,
    /// Delivered to a pod of this node through its host veth.
    LocalPod {
        namespace: String,
        pod: String,
        veth: String,
    },
    /// Sent out of `dev` (possibly encapsulated, see [`TraceResult::encapsulation`]).
    Forwarded,
    /// No route matched.
    Unreachable,
    /// The VXLAN device has no neighbour entry for the next hop.
    NeighbourUnresolved,
    /// Rejected or dropped by a hybridnet nftables rule (the reason says which).
    Filtered { reason: String },
}

/// The result of [`trace`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceResult {
    /// Human-readable decisions in order.
    pub steps: Vec<String>,
    pub rule: Option<MatchedRule>,
    /// The matched route, as `ip route` would print it.
    pub route: Option<String>,
    pub dev: Option<String>,
    pub next_hop: Option<IpAddr>,
    pub encapsulation: Option<Encapsulation>,
    /// The source address is masqueraded to the node's address.
    pub masquerade: bool,
    /// The mark after hybridnet's prerouting chain.
    pub mark: u32,
    pub outcome: Outcome,
}

fn in_cidrs<'a>(mut cidrs: impl Iterator<Item = &'a Cidr>, ip: IpAddr) -> bool {
    cidrs.any(|c| c.contains(ip))
}

fn rule_matches(r: &PolicyRule, q: &TraceQuery, mark: u32) -> bool {
    r.src.is_none_or(|c| c.contains(q.src))
        && r.fwmark.is_none_or(|(value, mask)| mark & mask == value)
}

/// Traces `q` through `plan`.
pub fn trace(plan: &DataPlanePlan, q: &TraceQuery) -> TraceResult {
    let family = IpVersion::of(&q.dst);
    let mut steps = Vec::new();
    let mut res = TraceResult {
        steps: Vec::new(),
        rule: None,
        route: None,
        dev: None,
        next_hop: None,
        encapsulation: None,
        masquerade: false,
        mark: q.mark,
        outcome: Outcome::Unreachable,
    };
    if IpVersion::of(&q.src) != family {
        steps.push(format!(
            "source {} and destination {} differ in family",
            q.src, q.dst
        ));
        res.steps = steps;
        return res;
    }
    let iif = q
        .iif
        .clone()
        .or_else(|| plan.local_pods.get(&q.src).map(|p| p.veth.clone()));
    let vx_name = plan.vxlan.as_ref().map(|v| v.name.as_str());
    let overlay_cidrs: Vec<Cidr> = plan
        .subnet_tables
        .iter()
        .filter(|(_, t)| t.mode == NetworkMode::Vxlan)
        .map(|(c, _)| *c)
        .chain(
            plan.routes_in(plan_to_overlay(plan))
                .filter(|r| r.kind == RouteKind::Unicast)
                .map(|r| r.dst),
        )
        .collect();
    let locally_generated = iif.is_none() && plan.node_local_ips.contains(&q.src);
    if let Some(i) = &iif {
        steps.push(format!("packet from {} to {} arrives on {i}", q.src, q.dst));
    } else {
        steps.push(format!(
            "packet from {} to {} is sent by the node",
            q.src, q.dst
        ));
    }

    // mangle prerouting: pod -> node reply mark.
    let mut mark = q.mark;
    let dst_local = plan.node_local_ips.contains(&q.dst);
    if iif.is_some()
        && q.established
        && vx_name.is_some()
        && !dst_local
        && in_cidrs(overlay_cidrs.iter(), q.src)
        && plan.cluster_node_ips.contains(&q.dst)
    {
        mark |= MARK_POD_TO_NODE;
        steps.push(format!(
            "nft mangle_prerouting: reply from an overlay pod to another node's IP, mark |= {MARK_POD_TO_NODE:#x}"
        ));
    }
    res.mark = mark;

    // Rule 0: local table.
    if dst_local {
        steps.push(format!(
            "rule 0 lookup local: {} is an address of this node",
            q.dst
        ));
        res.outcome = Outcome::LocalDelivery;
        res.steps = steps;
        return res;
    }

    let mut rules: Vec<&PolicyRule> = plan.rules_of(family).collect();
    rules.sort_by_key(|r| (r.priority, r.table));
    let mut chosen = None;
    for r in rules {
        if !rule_matches(r, q, mark) {
            continue;
        }
        let mut candidates: Vec<_> = plan
            .routes_in(r.table)
            .filter(|rt| rt.dst.contains(q.dst))
            .collect();
        candidates.sort_by_key(|rt| std::cmp::Reverse(rt.dst.prefix));
        match candidates.first() {
            None => {
                steps.push(format!(
                    "rule {} lookup {}: no route, next rule",
                    r.priority, r.table
                ));
            }
            Some(rt) if rt.kind == RouteKind::Throw => {
                steps.push(format!(
                    "rule {} lookup {}: throw {}, next rule",
                    r.priority, r.table, rt.dst
                ));
            }
            Some(rt) => {
                let mut text = format!("{}", rt.dst);
                if let Some(v) = rt.via {
                    text.push_str(&format!(" via {v}"));
                }
                if let Some(d) = &rt.dev {
                    text.push_str(&format!(" dev {d}"));
                }
                if rt.scope_link {
                    text.push_str(" scope link");
                }
                if let Some(s) = rt.src {
                    text.push_str(&format!(" src {s}"));
                }
                steps.push(format!("rule {} lookup {}: {text}", r.priority, r.table));
                chosen = Some((
                    MatchedRule {
                        priority: r.priority,
                        table: r.table,
                    },
                    text,
                    rt.dev.clone(),
                    rt.via,
                ));
                break;
            }
        }
    }
    let (rule, route, dev, via) = match chosen {
        Some(c) => c,
        None => {
            // Main table.
            let mut m: Vec<_> = plan
                .main_routes
                .iter()
                .filter(|r| r.dst.contains(q.dst))
                .collect();
            m.sort_by_key(|r| std::cmp::Reverse(r.dst.prefix));
            match m.first() {
                Some(r) => {
                    let mut text = format!("{}", r.dst);
                    if let Some(v) = r.gateway {
                        text.push_str(&format!(" via {v}"));
                    }
                    if let Some(d) = &r.dev {
                        text.push_str(&format!(" dev {d}"));
                    }
                    steps.push(format!("rule 32766 lookup main: {text}"));
                    (
                        MatchedRule {
                            priority: 32766,
                            table: 254,
                        },
                        text,
                        r.dev.clone(),
                        r.gateway,
                    )
                }
                None => {
                    steps.push("no table has a route: unreachable".into());
                    res.steps = steps;
                    return res;
                }
            }
        }
    };
    res.rule = Some(rule);
    res.route = Some(route);
    res.dev = dev.clone();
    res.next_hop = via;
    let dev = dev.unwrap_or_default();

    if let Some(p) = plan.local_pods.get(&q.dst)
        && dev == p.veth
    {
        steps.push(format!(
            "delivered to pod {}/{} via {}",
            p.namespace, p.pod, p.veth
        ));
        res.outcome = Outcome::LocalPod {
            namespace: p.namespace.clone(),
            pod: p.pod.clone(),
            veth: p.veth.clone(),
        };
        res.steps = steps;
        return res;
    }

    // nft forward: loop guard for underlay interfaces.
    if let Some(i) = &iif
        && plan.underlay_interfaces.contains(i)
        && mark & MARK_KUBE_MASQ == 0
        && !plan.local_pods.contains_key(&q.dst)
        && plan.subnet_tables.iter().any(|(c, t)| {
            c.contains(q.dst)
                && matches!(
                    t.mode,
                    NetworkMode::Vlan | NetworkMode::Bgp | NetworkMode::GlobalBgp
                )
        })
    {
        let reason = format!(
            "nft forward: {} is a local underlay address but not a local pod (route loop guard)",
            q.dst
        );
        steps.push(reason.clone());
        res.outcome = Outcome::Filtered { reason };
        res.steps = steps;
        return res;
    }

    if Some(dev.as_str()) == vx_name {
        let in_cluster = plan.cluster_cidrs.iter().any(|c| c.contains(q.dst))
            || plan.cluster_node_ips.contains(&q.dst);
        if !locally_generated && !q.established && !in_cluster {
            let reason = format!(
                "nft forward: new connection to {} (not a cluster address) through the VXLAN device is rejected",
                q.dst
            );
            steps.push(reason.clone());
            res.outcome = Outcome::Filtered { reason };
            res.steps = steps;
            return res;
        }
        let hop = via.unwrap_or(q.dst);
        let Some(vx) = plan.vxlan.as_ref() else {
            res.steps = steps;
            return res;
        };
        match plan.vxlan_neighbours.get(&hop) {
            Some(mac) => {
                let (vtep, node) = plan
                    .remote_vteps
                    .get(mac)
                    .cloned()
                    .unwrap_or((vx.local, String::new()));
                steps.push(format!(
                    "neighbour {hop} lladdr {mac} on {}; fdb {mac} dst {vtep} (node {node}); VXLAN VNI {} UDP {}",
                    vx.name, vx.vni, vx.port
                ));
                res.encapsulation = Some(Encapsulation {
                    vni: vx.vni,
                    local_vtep: vx.local,
                    remote_vtep: vtep,
                    remote_node: node,
                    inner_dst_mac: *mac,
                    udp_port: vx.port,
                });
                res.outcome = Outcome::Forwarded;
            }
            None => {
                steps.push(format!(
                    "no neighbour entry for {hop} on {}: dropped",
                    vx.name
                ));
                res.outcome = Outcome::NeighbourUnresolved;
                res.steps = steps;
                return res;
            }
        }
    } else {
        res.outcome = Outcome::Forwarded;
    }

    // nft nat postrouting.
    let to_pod = dev.starts_with("hybr") || dev.starts_with("h_");
    let nat_src = plan
        .subnet_tables
        .iter()
        .any(|(c, t)| t.mode == NetworkMode::Vxlan && t.auto_nat_outgoing && c.contains(q.src));
    if !to_pod && Some(dev.as_str()) != vx_name && nat_src && !q.established {
        res.masquerade = true;
        steps.push(format!(
            "nft nat_postrouting: {} masqueraded to the address of {dev}",
            q.src
        ));
    }
    if res.mark & MARK_POD_TO_NODE != 0 {
        steps.push("nft mangle_postrouting: pod -> node mark cleared before encapsulation".into());
        res.mark &= !MARK_POD_TO_NODE;
    }
    res.steps = steps;
    res
}

fn plan_to_overlay(plan: &DataPlanePlan) -> u32 {
    plan.rules
        .iter()
        .find(|r| r.src.is_none() && r.fwmark.is_none() && r.table != plan.local_direct_table)
        .map(|r| r.table)
        .unwrap_or(40000)
}

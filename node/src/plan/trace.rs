//! `trace`: walks a plan the way the kernel would for one packet (policy rules by priority, longest
//! prefix match per table, throw routes, neighbour and FDB resolution on the VXLAN device, and the
//! plan's nftables table evaluated at prerouting, forward and postrouting by
//! [`super::nftables`]'s evaluator, the same values the agent renders for the kernel). Used by `kubectl hybridnet trace` and the lab to
//! explain a path without touching a node.

use std::net::IpAddr;

use hybridnet_api::v1::IpVersion;
use serde::{Deserialize, Serialize};

use super::model::{DataPlanePlan, MacAddr, PolicyRule, RouteKind};
use super::nftables::{Final, Hook, HookOutcome, Packet};

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
    /// The remote VTEP is a node of another cluster (a RemoteVtep): that cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
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

fn rule_matches(r: &PolicyRule, src: IpAddr, mark: u32) -> bool {
    r.src.is_none_or(|c| c.contains(src))
        && r.fwmark.is_none_or(|(value, mask)| mark & mask == value)
}

/// The route the kernel picks: the matched rule, the route as `ip route` prints it, its device
/// and gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteChoice {
    pub rule: MatchedRule,
    pub text: String,
    pub dev: Option<String>,
    pub via: Option<IpAddr>,
}

/// Policy rules by priority, longest prefix match per table, throw routes fall through to the next
/// rule, then the main table. Explains every rule it passes in `steps`.
pub(crate) fn select_route(
    plan: &DataPlanePlan,
    src: IpAddr,
    dst: IpAddr,
    mark: u32,
    steps: &mut Vec<String>,
) -> Option<RouteChoice> {
    let mut rules: Vec<&PolicyRule> = plan.rules_of(IpVersion::of(&dst)).collect();
    rules.sort_by_key(|r| (r.priority, r.table));
    for r in rules.into_iter().filter(|r| rule_matches(r, src, mark)) {
        let best = plan
            .routes_in(r.table)
            .filter(|rt| rt.dst.contains(dst))
            .min_by_key(|rt| std::cmp::Reverse(rt.dst.prefix));
        match best {
            None => steps.push(format!(
                "rule {} lookup {}: no route, next rule",
                r.priority, r.table
            )),
            Some(rt) if rt.kind == RouteKind::Throw => steps.push(format!(
                "rule {} lookup {}: throw {}, next rule",
                r.priority, r.table, rt.dst
            )),
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
                return Some(RouteChoice {
                    rule: MatchedRule {
                        priority: r.priority,
                        table: r.table,
                    },
                    text,
                    dev: rt.dev.clone(),
                    via: rt.via,
                });
            }
        }
    }
    // The main table.
    let Some(r) = plan
        .main_routes
        .iter()
        .filter(|r| r.dst.contains(dst))
        .min_by_key(|r| std::cmp::Reverse(r.dst.prefix))
    else {
        steps.push("no table has a route: unreachable".into());
        return None;
    };
    let mut text = format!("{}", r.dst);
    if let Some(v) = r.gateway {
        text.push_str(&format!(" via {v}"));
    }
    if let Some(d) = &r.dev {
        text.push_str(&format!(" dev {d}"));
    }
    steps.push(format!("rule 32766 lookup main: {text}"));
    Some(RouteChoice {
        rule: MatchedRule {
            priority: 32766,
            table: 254,
        },
        text,
        dev: r.dev.clone(),
        via: r.gateway,
    })
}

/// What hybridnet's rules see of the queried packet.
fn packet_of(plan: &DataPlanePlan, q: &TraceQuery, iif: Option<String>) -> Packet {
    let mut p = if q.established {
        Packet::reply(q.src, q.dst)
    } else {
        Packet::new(q.src, q.dst)
    };
    p.iif = iif;
    p.mark = q.mark;
    p.dst_local = plan.node_local_ips.contains(&q.dst);
    p
}

/// Runs the hook's chains, explains every rule that matched, and returns the outcome.
fn run_hook(
    plan: &DataPlanePlan,
    hook: Hook,
    pkt: &mut Packet,
    steps: &mut Vec<String>,
) -> HookOutcome {
    let o = plan.nft.eval_hook(hook, pkt);
    steps.extend(o.hits.iter().map(|h| h.to_string()));
    pkt.mark = o.mark;
    o
}

/// The reason a hook stopped the packet, or `None` when it passed.
fn filtered(o: &HookOutcome) -> Option<String> {
    match (o.verdict, &o.decided_by) {
        (Final::Accept, _) => None,
        (_, Some(hit)) => Some(hit.to_string()),
        (v, None) => Some(format!("nftables policy: {v:?}")),
    }
}

/// Neighbour and FDB resolution on the VXLAN device for next hop `hop`.
fn encapsulate(
    plan: &DataPlanePlan,
    hop: IpAddr,
    steps: &mut Vec<String>,
) -> Result<Option<Encapsulation>, ()> {
    let Some(vx) = plan.vxlan.as_ref() else {
        return Ok(None);
    };
    let Some(mac) = plan.vxlan_neighbours.get(&hop) else {
        steps.push(format!(
            "no neighbour entry for {hop} on {}: dropped",
            vx.name
        ));
        return Err(());
    };
    let (vtep, node) = plan
        .remote_vteps
        .get(mac)
        .cloned()
        .unwrap_or((vx.local, String::new()));
    let remote = plan.remote_cluster_vteps.get(mac);
    let whose = match remote {
        Some(r) => format!(
            "node {} of cluster {}, RemoteVtep/{}",
            r.node, r.cluster, r.name
        ),
        None => format!("node {node}"),
    };
    steps.push(format!(
        "neighbour {hop} lladdr {mac} on {}; fdb {mac} dst {vtep} ({whose}); VXLAN VNI {} UDP {}",
        vx.name, vx.vni, vx.port
    ));
    Ok(Some(Encapsulation {
        vni: vx.vni,
        local_vtep: vx.local,
        remote_vtep: vtep,
        remote_node: node,
        inner_dst_mac: *mac,
        udp_port: vx.port,
        remote_cluster: remote.map(|r| r.cluster.clone()),
    }))
}

/// Traces `q` through `plan`.
pub fn trace(plan: &DataPlanePlan, q: &TraceQuery) -> TraceResult {
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
    let steps = &mut res.steps;
    if IpVersion::of(&q.src) != IpVersion::of(&q.dst) {
        steps.push(format!(
            "source {} and destination {} differ in family",
            q.src, q.dst
        ));
        return res;
    }
    let iif = q
        .iif
        .clone()
        .or_else(|| plan.local_pods.get(&q.src).map(|p| p.veth.clone()));
    let locally_generated = iif.is_none() && plan.node_local_ips.contains(&q.src);
    match &iif {
        Some(i) => steps.push(format!("packet from {} to {} arrives on {i}", q.src, q.dst)),
        None => steps.push(format!(
            "packet from {} to {} is sent by the node",
            q.src, q.dst
        )),
    }
    if let Some((cidr, r)) = plan
        .remote_subnets
        .iter()
        .filter(|(c, _)| c.contains(q.dst))
        .max_by_key(|(c, _)| c.prefix)
    {
        steps.push(format!(
            "{} is in {cidr}, RemoteSubnet {} ({:?}) of cluster {}",
            q.dst,
            r.names.join(","),
            r.network_type,
            r.cluster
        ));
    }
    let mut pkt = packet_of(plan, q, iif);

    if !locally_generated {
        let o = run_hook(plan, Hook::Prerouting, &mut pkt, steps);
        res.mark = pkt.mark;
        if let Some(reason) = filtered(&o) {
            res.outcome = Outcome::Filtered { reason };
            return res;
        }
    }
    if pkt.dst_local {
        steps.push(format!(
            "rule 0 lookup local: {} is an address of this node",
            q.dst
        ));
        res.outcome = Outcome::LocalDelivery;
        return res;
    }
    let Some(route) = select_route(plan, q.src, q.dst, pkt.mark, steps) else {
        return res;
    };
    res.rule = Some(route.rule);
    res.route = Some(route.text);
    res.dev = route.dev.clone();
    res.next_hop = route.via;
    let dev = route.dev.unwrap_or_default();
    pkt.oif = Some(dev.clone());

    if !locally_generated {
        let o = run_hook(plan, Hook::Forward, &mut pkt, steps);
        if let Some(reason) = filtered(&o) {
            res.outcome = Outcome::Filtered { reason };
            return res;
        }
    }
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
        return res;
    }
    let through_vxlan = plan.vxlan.as_ref().is_some_and(|v| v.name == dev);
    if through_vxlan {
        match encapsulate(plan, route.via.unwrap_or(q.dst), steps) {
            Ok(e) => res.encapsulation = e,
            Err(()) => {
                res.outcome = Outcome::NeighbourUnresolved;
                return res;
            }
        }
    }
    res.outcome = Outcome::Forwarded;

    let o = run_hook(plan, Hook::Postrouting, &mut pkt, steps);
    res.masquerade = o.masquerade;
    res.mark = pkt.mark;
    if let Some(reason) = filtered(&o) {
        res.outcome = Outcome::Filtered { reason };
    }
    res
}

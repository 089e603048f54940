//! `trace`: the policy-routing path of one packet, computed with the node agent's own pure `plan`
//! and `trace` (crate `hybridnet-node`, without its Linux data plane) from API state.
//!
//! The host facts a plan needs are rebuilt from the API: the uplink interface carries the node's
//! VTEP address and MAC (NodeInfo) and the Node's status addresses; every local pod has its host
//! veth; the main table has a default route on the uplink. The uplink's real name and the node's
//! subnet table numbers are not in the API objects proper: the uplink name comes from the
//! HybridnetCluster's preferred interfaces (or `--uplink`); table numbers come from the agent's
//! NodeInfo annotation `hybridnet.io/route-tables` (fed to the plan as the tables already in the
//! kernel, exactly as the agent itself adopts them), and without it are the ones a freshly started
//! agent picks. `--live` asks the kernel of the node for the real answer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hybridnet_api::ipmath::{Cidr, parse_ip};
use hybridnet_api::multicluster::{RemoteSubnet, RemoteVtep};
use hybridnet_api::naming::host_veth_name;
use hybridnet_api::v1::{IPInstance, IpVersion, Network, NodeInfo, Subnet};
use hybridnet_node::plan::{
    ApiState, DataPlanePlan, HostAddress, HostInterface, HostRoute, HostState, MacAddr, Outcome,
    PlanConfig, ROUTE_TABLES_ANNOTATION, RouteTables, RouteTablesError, TraceQuery, TraceResult,
    build_plan, trace,
};
use serde::Serialize;

use crate::inventory::InstanceFacts;

/// API state the trace is computed from.
#[derive(Debug, Clone, Default)]
pub struct TraceInputs {
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    pub ip_instances: Vec<IPInstance>,
    pub node_infos: Vec<NodeInfo>,
    /// Other clusters' subnets and nodes (docs/multicluster.md); empty when not readable.
    pub remote_subnets: Vec<RemoteSubnet>,
    pub remote_vteps: Vec<RemoteVtep>,
    /// Node name -> addresses of its `.status.addresses`.
    pub node_addresses: BTreeMap<String, Vec<IpAddr>>,
    /// Name of the nodes' uplink interface (VXLAN parent, VLAN parent, BGP interface).
    pub uplink: String,
    pub vxlan_udp_port: u16,
}

/// Where the packet starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A pod: its namespace, name, node and address.
    Pod {
        namespace: String,
        name: String,
        node: String,
        ip: IpAddr,
    },
    /// A node itself (locally generated traffic).
    Node { name: String, ip: IpAddr },
}

/// Where it goes: an address, and what owns it if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub ip: IpAddr,
    /// `namespace/pod` when the address is a pod's.
    pub pod: Option<String>,
    /// The node that holds the address (a pod's node, or a node's own address).
    pub node: Option<String>,
}

/// One node's part of the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeHop {
    pub node: String,
    pub query: TraceQuery,
    pub result: TraceResult,
    /// What the plan of this node could not use (e.g. no VTEP known for a node).
    pub plan_problems: Vec<String>,
    /// The subnet table numbers are the ones the node's agent published (else those a freshly
    /// started agent picks).
    pub tables_published: bool,
}

/// The whole path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathReport {
    pub source: String,
    pub destination: String,
    pub hops: Vec<NodeHop>,
    pub summary: String,
}

/// Errors of `trace` the user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("{0}")]
    Input(String),
}

/// The source address of a pod: its IPInstance of the destination's family (IPv4 first).
pub fn pod_address(
    instances: &[InstanceFacts],
    namespace: &str,
    pod: &str,
    family: Option<IpVersion>,
) -> Option<(IpAddr, String)> {
    let mut c: Vec<&InstanceFacts> = instances
        .iter()
        .filter(|f| {
            f.namespace == namespace
                && f.pod.as_deref() == Some(pod)
                && !f.is_reserved()
                && !f.terminating
        })
        .filter(|f| f.ip.is_some())
        .collect();
    c.sort_by_key(|f| f.ip.map(|i| i.is_ipv6()));
    c.into_iter()
        .find(|f| family.is_none_or(|v| f.ip.is_some_and(|i| IpVersion::of(&i) == v)))
        .and_then(|f| Some((f.ip?, f.node.clone()?)))
}

/// The subnet -> table assignment the agent of `node` published in its NodeInfo, if any.
pub fn published_route_tables(
    node: &str,
    inputs: &TraceInputs,
) -> Option<Result<RouteTables, RouteTablesError>> {
    let value = inputs
        .node_infos
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))?
        .metadata
        .annotations
        .as_ref()?
        .get(ROUTE_TABLES_ANNOTATION)?;
    Some(RouteTables::parse_annotation(value))
}

/// The host facts of `node` as far as the API tells them.
pub fn host_state_for(node: &str, inputs: &TraceInputs) -> HostState {
    let info = inputs
        .node_infos
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .and_then(|n| n.spec.vtep_info.clone());
    let mac: Option<MacAddr> = info
        .as_ref()
        .and_then(|v| v.mac.as_deref())
        .and_then(|m| m.parse().ok())
        // Without a NodeInfo, a stable locally administered MAC keeps the plan computable.
        .or(Some(MacAddr([0x02, 0, 0, 0, 0, 0x01])));
    let mut addrs: Vec<IpAddr> = Vec::new();
    if let Some(v) = &info {
        for s in v.ip.iter().chain(v.local_ips.iter().flatten()) {
            if let Ok(ip) = parse_ip(s)
                && !addrs.contains(&ip)
            {
                addrs.push(ip);
            }
        }
    }
    for ip in inputs.node_addresses.get(node).into_iter().flatten() {
        if !addrs.contains(ip) {
            addrs.push(*ip);
        }
    }
    let mut interfaces = vec![HostInterface {
        name: inputs.uplink.clone(),
        index: 2,
        mac,
        mtu: 1500,
        up: true,
        addresses: addrs
            .iter()
            .map(|ip| HostAddress {
                ip: *ip,
                prefix: if ip.is_ipv4() { 32 } else { 128 },
                noprefixroute: false,
            })
            .collect(),
    }];
    let mut index = 100;
    for ipi in &inputs.ip_instances {
        let f = InstanceFacts::from_ipinstance(ipi);
        if f.node.as_deref() != Some(node) {
            continue;
        }
        let Some(pod) = &f.pod else { continue };
        let veth = host_veth_name(&f.namespace, pod);
        if interfaces.iter().any(|i| i.name == veth) {
            continue;
        }
        index += 1;
        interfaces.push(HostInterface {
            name: veth,
            index,
            mac: Some(MacAddr([0xee; 6])),
            mtu: 1500,
            up: true,
            addresses: vec![],
        });
    }
    let ipv6 = inputs
        .subnets
        .iter()
        .any(|s| s.spec.range.version == IpVersion::V6);
    let mut main_routes = vec![HostRoute {
        dst: Cidr {
            version: IpVersion::V4,
            network: 0,
            prefix: 0,
        },
        gateway: None,
        dev: Some(inputs.uplink.clone()),
        src: None,
    }];
    if ipv6 {
        main_routes.push(HostRoute {
            dst: Cidr {
                version: IpVersion::V6,
                network: 0,
                prefix: 0,
            },
            gateway: None,
            dev: Some(inputs.uplink.clone()),
            src: None,
        });
    }
    // The agent's published tables are what it adopted from (and keeps in) the kernel: the plan
    // takes them the same way, as tables already programmed.
    let existing_subnet_tables = match published_route_tables(node, inputs) {
        Some(Ok(t)) => t.0,
        _ => BTreeMap::new(),
    };
    HostState {
        interfaces,
        main_routes,
        ipv6_enabled: ipv6,
        existing_subnet_tables,
        ..Default::default()
    }
}

/// The plan the node agent of `node` would compute.
pub fn plan_for(node: &str, inputs: &TraceInputs) -> DataPlanePlan {
    let api = ApiState {
        node_name: node.to_string(),
        node_addresses: inputs.node_addresses.get(node).cloned().unwrap_or_default(),
        networks: inputs.networks.clone(),
        subnets: inputs.subnets.clone(),
        ip_instances: inputs.ip_instances.iter().cloned().map(Arc::new).collect(),
        node_infos: inputs.node_infos.iter().cloned().map(Arc::new).collect(),
        remote_subnets: inputs.remote_subnets.clone(),
        remote_vteps: inputs.remote_vteps.iter().cloned().map(Arc::new).collect(),
    };
    let cfg = PlanConfig {
        vxlan_udp_port: inputs.vxlan_udp_port,
        ..Default::default()
    };
    build_plan(&api, &host_state_for(node, inputs), &cfg)
}

fn hop(node: &str, inputs: &TraceInputs, plan: &DataPlanePlan, q: TraceQuery) -> NodeHop {
    let result = trace(plan, &q);
    let mut plan_problems: Vec<String> = plan.problems.iter().map(|p| p.to_string()).collect();
    let published = published_route_tables(node, inputs);
    if let Some(Err(e)) = &published {
        plan_problems.push(format!(
            "NodeInfo {node}: {e}; table numbers are those a freshly started agent picks"
        ));
    }
    NodeHop {
        node: node.to_string(),
        query: q,
        result,
        plan_problems,
        tables_published: matches!(published, Some(Ok(_))),
    }
}

/// Traces `src` -> `dst`: on the source node, and on the destination node when the packet is
/// forwarded to it (VXLAN, or a direct underlay path).
pub fn trace_path(
    inputs: &TraceInputs,
    src: &Source,
    dst: &Destination,
    established: bool,
) -> Result<PathReport, TraceError> {
    let (src_node, src_ip, src_text) = match src {
        Source::Pod {
            namespace,
            name,
            node,
            ip,
        } => (
            node.clone(),
            *ip,
            format!("pod {namespace}/{name} ({ip}) on {node}"),
        ),
        Source::Node { name, ip } => (name.clone(), *ip, format!("node {name} ({ip})")),
    };
    if src_ip.is_ipv4() != dst.ip.is_ipv4() {
        return Err(TraceError::Input(format!(
            "source {src_ip} and destination {} are of different families",
            dst.ip
        )));
    }
    let dst_text = match (&dst.pod, &dst.node) {
        (Some(p), Some(n)) => format!("pod {p} ({}) on {n}", dst.ip),
        (None, Some(n)) => format!("node {n} ({})", dst.ip),
        _ => format!("{}", dst.ip),
    };
    let src_plan = plan_for(&src_node, inputs);
    let mut q = TraceQuery::new(src_ip, dst.ip);
    q.established = established;
    // A pod's packets enter the node through its host veth (also what `ip route get` needs).
    if let Source::Pod {
        namespace, name, ..
    } = src
    {
        q.iif = Some(host_veth_name(namespace, name));
    }
    let first = hop(&src_node, inputs, &src_plan, q);
    let mut hops = vec![first.clone()];

    let r = &first.result;
    let forwarded_to = match (&r.outcome, &r.encapsulation) {
        // A node of another cluster: its objects are not in this cluster's API.
        (Outcome::Forwarded, Some(e)) if e.remote_cluster.is_some() => None,
        (Outcome::Forwarded, Some(e)) => Some((e.remote_node.clone(), true)),
        (Outcome::Forwarded, None) => dst
            .node
            .clone()
            .filter(|n| *n != src_node)
            .map(|n| (n, false)),
        _ => None,
    };
    if let Some((node, encapsulated)) = forwarded_to
        && !node.is_empty()
    {
        let plan = plan_for(&node, inputs);
        let iif = if encapsulated {
            plan.vxlan.as_ref().map(|v| v.name.clone())
        } else {
            // Underlay: the packet comes in on the interface it left A by (same VLAN link name
            // pattern), or the uplink.
            r.dev
                .clone()
                .filter(|d| plan.vlan_links.iter().any(|l| &l.name == d) || *d == inputs.uplink)
                .or_else(|| Some(inputs.uplink.clone()))
        };
        let mut q = TraceQuery::new(src_ip, dst.ip);
        q.iif = iif;
        q.established = established;
        hops.push(hop(&node, inputs, &plan, q));
    }
    let summary = summarize(&hops, inputs);
    Ok(PathReport {
        source: src_text,
        destination: dst_text,
        hops,
        summary,
    })
}

fn summarize(hops: &[NodeHop], inputs: &TraceInputs) -> String {
    let mut parts = Vec::new();
    for h in hops {
        let r = &h.result;
        let rule = r
            .rule
            .as_ref()
            .map(|m| format!("rule {} table {}", m.priority, m.table))
            .unwrap_or_else(|| "local table".into());
        let what = match &r.outcome {
            Outcome::LocalDelivery => format!("{}: {rule}, delivered to the node", h.node),
            Outcome::LocalPod {
                namespace,
                pod,
                veth,
            } => {
                format!(
                    "{}: {rule}, delivered to pod {namespace}/{pod} via {veth}",
                    h.node
                )
            }
            Outcome::Forwarded => {
                let mut s = format!("{}: {rule}, {}", h.node, r.route.as_deref().unwrap_or("?"));
                if let Some(e) = &r.encapsulation {
                    s.push_str(&format!(
                        ", VXLAN VNI {} to VTEP {} ({})",
                        e.vni,
                        e.remote_vtep,
                        remote_node_text(e)
                    ));
                } else if let Some(nh) = r.next_hop {
                    s.push_str(&format!(", next hop {nh}"));
                }
                s.push_str(if r.masquerade {
                    ", masqueraded"
                } else {
                    ", no NAT"
                });
                s
            }
            Outcome::Unreachable => format!("{}: unreachable (no route)", h.node),
            Outcome::NeighbourUnresolved => format!(
                "{}: {rule}, next hop not resolvable on the VXLAN device",
                h.node
            ),
            Outcome::Filtered { reason } => format!("{}: filtered: {reason}", h.node),
        };
        parts.push(what);
    }
    let _ = inputs;
    parts.join(" -> ")
}

/// The node a VXLAN packet goes to: `m1`, or `m1 of cluster b` for another cluster's node.
fn remote_node_text(e: &hybridnet_node::plan::Encapsulation) -> String {
    match &e.remote_cluster {
        Some(c) => format!("{} of cluster {c}", e.remote_node),
        None => e.remote_node.clone(),
    }
}

/// The text form of a report.
pub fn render(report: &PathReport, uplink_note: bool, uplink: &str) -> String {
    let mut out = format!("{} -> {}\n", report.source, report.destination);
    for (i, h) in report.hops.iter().enumerate() {
        let role = if i == 0 {
            "source node"
        } else {
            "destination node"
        };
        out.push_str(&format!("\n{role} {}:\n", h.node));
        for s in &h.result.steps {
            out.push_str(&format!("  {s}\n"));
        }
        let r = &h.result;
        if let Some(m) = &r.rule {
            out.push_str(&format!(
                "  => rule priority {} table {}",
                m.priority, m.table
            ));
            if let Some(d) = &r.dev {
                out.push_str(&format!(", dev {d}"));
            }
            if let Some(n) = r.next_hop {
                out.push_str(&format!(", via {n}"));
            }
            out.push('\n');
        }
        if let Some(e) = &r.encapsulation {
            out.push_str(&format!(
                "  => VXLAN VNI {} UDP {}: {} -> VTEP {} (node {}), inner dst MAC {}\n",
                e.vni,
                e.udp_port,
                e.local_vtep,
                e.remote_vtep,
                remote_node_text(e),
                e.inner_dst_mac
            ));
        }
        if matches!(r.outcome, Outcome::Forwarded) {
            out.push_str(if r.masquerade {
                "  => NAT: source masqueraded to the node address\n"
            } else {
                "  => NAT: none\n"
            });
        }
        for p in &h.plan_problems {
            out.push_str(&format!("  ! plan: {p}\n"));
        }
    }
    out.push_str(&format!("\nsummary: {}\n", report.summary));
    if uplink_note {
        if report.hops.iter().all(|h| h.tables_published) {
            out.push_str(&format!(
                "note: interface {uplink:?} stands for each node's uplink; table numbers are those the node agents published; --live shows the kernel's view\n"
            ));
        } else {
            out.push_str(&format!(
                "note: interface {uplink:?} stands for each node's uplink and table numbers are those a freshly started agent picks; --live shows the kernel's view\n"
            ));
        }
    }
    out
}

/// The `ip route get` that resolves a hop's query in the kernel of its node.
pub fn kernel_query_args(q: &TraceQuery) -> Vec<String> {
    let mut a = vec!["ip".to_string()];
    if q.dst.is_ipv6() {
        a.push("-6".into());
    }
    a.extend([
        "route".into(),
        "get".into(),
        q.dst.to_string(),
        "from".into(),
        q.src.to_string(),
    ]);
    if q.mark != 0 {
        a.extend(["mark".into(), format!("{:#x}", q.mark)]);
    }
    if let Some(i) = &q.iif {
        a.extend(["iif".into(), i.clone()]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_query() {
        let mut q = TraceQuery::new("10.0.0.2".parse().unwrap(), "10.0.1.3".parse().unwrap());
        q.iif = Some("hybr1234".into());
        q.mark = 0x20;
        assert_eq!(
            kernel_query_args(&q).join(" "),
            "ip route get 10.0.1.3 from 10.0.0.2 mark 0x20 iif hybr1234"
        );
        let q = TraceQuery::new("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap());
        assert_eq!(
            kernel_query_args(&q).join(" "),
            "ip -6 route get fd00::3 from fd00::2"
        );
    }

    #[test]
    fn host_facts_from_the_api() {
        use hybridnet_api::v1::{Address, Binding, IPInstanceSpec, NodeInfoSpec, VtepInfo};
        let mut ni = NodeInfo::new(
            "n1",
            NodeInfoSpec {
                vtep_info: Some(VtepInfo {
                    ip: Some("192.0.2.11".into()),
                    mac: Some("02:00:00:00:00:11".into()),
                    local_ips: Some(vec!["192.0.2.11".into(), "198.18.0.1".into()]),
                }),
            },
        );
        ni.metadata.name = Some("n1".into());
        let mut ipi = IPInstance::new(
            "10-0-0-5",
            IPInstanceSpec {
                network: "o".into(),
                subnet: "s".into(),
                address: Address {
                    ip: "10.0.0.5/24".into(),
                    mac: "02:12:34:00:00:01".into(),
                    ..Default::default()
                },
                binding: Binding {
                    node_name: Some("n1".into()),
                    pod_name: Some("web".into()),
                    ..Default::default()
                },
            },
        );
        ipi.metadata.namespace = Some("default".into());
        let mut other = ipi.clone();
        other.spec.binding.node_name = Some("n2".into());
        other.spec.binding.pod_name = Some("db".into());
        let inputs = TraceInputs {
            ip_instances: vec![ipi, other],
            node_infos: vec![ni],
            node_addresses: [(
                "n1".to_string(),
                vec![
                    "192.0.2.11".parse().unwrap(),
                    "2001:db8::11".parse().unwrap(),
                ],
            )]
            .into(),
            uplink: "ens3".into(),
            vxlan_udp_port: 4789,
            ..Default::default()
        };
        let h = host_state_for("n1", &inputs);
        let up = &h.interfaces[0];
        assert_eq!(up.name, "ens3");
        assert_eq!(up.mac.unwrap().to_string(), "02:00:00:00:00:11");
        let ips: Vec<String> = up.addresses.iter().map(|a| a.ip.to_string()).collect();
        assert_eq!(ips, vec!["192.0.2.11", "198.18.0.1", "2001:db8::11"]);
        // Only this node's pods get a veth.
        let names: Vec<&str> = h.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["ens3", host_veth_name("default", "web").as_str()]
        );
        assert_eq!(h.main_routes[0].dev.as_deref(), Some("ens3"));
        assert!(!h.ipv6_enabled, "no IPv6 subnet");
        // A node without NodeInfo still gets a computable (placeholder-MAC) uplink.
        assert!(host_state_for("n9", &inputs).interfaces[0].mac.is_some());
        // Without the route-tables annotation the plan picks table numbers itself.
        assert!(h.existing_subnet_tables.is_empty());
        assert!(published_route_tables("n1", &inputs).is_none());
    }

    #[test]
    fn published_route_tables_feed_the_plan_as_existing_tables() {
        let mut ni = NodeInfo::new("n1", Default::default());
        ni.metadata.name = Some("n1".into());
        ni.metadata.annotations = Some(
            [(
                ROUTE_TABLES_ANNOTATION.to_string(),
                r#"{"4":{"10.0.0.0/24":10003},"6":{"fd00::/64":10000}}"#.to_string(),
            )]
            .into(),
        );
        let mut inputs = TraceInputs {
            node_infos: vec![ni],
            uplink: "eth0".into(),
            vxlan_udp_port: 8472,
            ..Default::default()
        };
        let h = host_state_for("n1", &inputs);
        let got: Vec<(String, u32)> = h
            .existing_subnet_tables
            .iter()
            .map(|(c, t)| (c.to_string(), *t))
            .collect();
        assert_eq!(
            got,
            vec![("10.0.0.0/24".into(), 10003), ("fd00::/64".into(), 10000)]
        );
        // Another node's annotation is not this node's.
        assert!(
            host_state_for("n2", &inputs)
                .existing_subnet_tables
                .is_empty()
        );

        // A malformed annotation is not used, and the hop says why.
        inputs.node_infos[0].metadata.annotations = Some(
            [(
                ROUTE_TABLES_ANNOTATION.to_string(),
                r#"{"4":{"10.0.0.1/24":10003}}"#.to_string(),
            )]
            .into(),
        );
        assert!(matches!(
            published_route_tables("n1", &inputs),
            Some(Err(_))
        ));
        assert!(
            host_state_for("n1", &inputs)
                .existing_subnet_tables
                .is_empty()
        );
        let plan = plan_for("n1", &inputs);
        let q = TraceQuery::new("10.0.0.2".parse().unwrap(), "10.0.1.3".parse().unwrap());
        let h = hop("n1", &inputs, &plan, q);
        assert!(!h.tables_published);
        assert!(
            h.plan_problems
                .iter()
                .any(|p| p.contains(ROUTE_TABLES_ANNOTATION) && p.contains("not canonical")),
            "{:?}",
            h.plan_problems
        );
    }

    #[test]
    fn note_mentions_guessed_tables_only_without_published_ones() {
        let q = TraceQuery::new("10.0.0.2".parse().unwrap(), "10.0.1.3".parse().unwrap());
        let plan = DataPlanePlan::default();
        let mut h = NodeHop {
            node: "n1".into(),
            query: q.clone(),
            result: trace(&plan, &q),
            plan_problems: vec![],
            tables_published: true,
        };
        let mut report = PathReport {
            source: "a".into(),
            destination: "b".into(),
            hops: vec![h.clone()],
            summary: "s".into(),
        };
        let text = render(&report, true, "eth0");
        assert!(
            text.contains("table numbers are those the node agents published"),
            "{text}"
        );
        assert!(!text.contains("freshly"), "{text}");
        h.tables_published = false;
        h.node = "n2".into();
        report.hops.push(h);
        let text = render(&report, true, "eth0");
        assert!(text.contains("a freshly started agent picks"), "{text}");
    }

    #[test]
    fn families_must_match() {
        let src = Source::Node {
            name: "n1".into(),
            ip: "192.0.2.1".parse().unwrap(),
        };
        let dst = Destination {
            ip: "fd00::1".parse().unwrap(),
            pod: None,
            node: None,
        };
        assert!(
            trace_path(
                &TraceInputs {
                    uplink: "eth0".into(),
                    vxlan_udp_port: 8472,
                    ..Default::default()
                },
                &src,
                &dst,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn a_path_to_another_clusters_pod_ends_at_its_vtep() {
        use hybridnet_api::multicluster::{RemoteSubnetSpec, RemoteVtepSpec};
        use hybridnet_api::v1::{
            Address, AddressRange, Binding, IPInstanceSpec, NetworkSpec, NetworkStatus,
            NetworkType, NodeInfoSpec, SubnetSpec, VtepInfo,
        };
        let mut net = Network::new(
            "overlay",
            NetworkSpec {
                net_id: Some(4),
                network_type: Some(NetworkType::Overlay),
                ..Default::default()
            },
        );
        net.status = Some(NetworkStatus {
            node_list: Some(vec!["n1".into()]),
            ..Default::default()
        });
        let range = |cidr: &str| AddressRange {
            version: IpVersion::V4,
            cidr: cidr.into(),
            ..Default::default()
        };
        let sub = Subnet::new(
            "ov4",
            SubnetSpec {
                network: "overlay".into(),
                range: range("10.0.0.0/24"),
                ..Default::default()
            },
        );
        let ni = NodeInfo::new(
            "n1",
            NodeInfoSpec {
                vtep_info: Some(VtepInfo {
                    ip: Some("192.0.2.11".into()),
                    mac: Some("02:00:00:00:00:11".into()),
                    local_ips: Some(vec!["192.0.2.11".into()]),
                }),
            },
        );
        let mut ipi = IPInstance::new(
            "10-0-0-5",
            IPInstanceSpec {
                network: "overlay".into(),
                subnet: "ov4".into(),
                address: Address {
                    ip: "10.0.0.5/24".into(),
                    mac: "02:12:34:00:00:01".into(),
                    ..Default::default()
                },
                binding: Binding {
                    node_name: Some("n1".into()),
                    pod_name: Some("web".into()),
                    ..Default::default()
                },
            },
        );
        ipi.metadata.namespace = Some("default".into());
        let mut inputs = TraceInputs {
            networks: vec![net],
            subnets: vec![sub],
            ip_instances: vec![ipi],
            node_infos: vec![ni],
            node_addresses: [("n1".to_string(), vec!["192.0.2.11".parse().unwrap()])].into(),
            uplink: "eth0".into(),
            vxlan_udp_port: 8472,
            remote_subnets: vec![RemoteSubnet::new(
                "b.ov4",
                RemoteSubnetSpec {
                    range: range("10.8.0.0/24"),
                    network_type: Some(NetworkType::Overlay),
                    cluster_name: Some("b".into()),
                },
            )],
            remote_vteps: vec![RemoteVtep::new(
                "b.m1",
                RemoteVtepSpec {
                    cluster_name: Some("b".into()),
                    node_name: Some("m1".into()),
                    ip: Some("192.0.2.21".into()),
                    mac: Some("02:00:00:00:00:21".into()),
                    local_ips: Some(vec!["192.0.2.21".into()]),
                    endpoint_ip_list: Some(vec!["10.8.0.7".into()]),
                },
            )],
        };
        let src = Source::Pod {
            namespace: "default".into(),
            name: "web".into(),
            node: "n1".into(),
            ip: "10.0.0.5".parse().unwrap(),
        };
        let dst = Destination {
            ip: "10.8.0.7".parse().unwrap(),
            pod: None,
            node: None,
        };
        let report = trace_path(&inputs, &src, &dst, false).unwrap();
        assert_eq!(
            report.hops.len(),
            1,
            "the other cluster's node is not traced"
        );
        assert_eq!(
            report.summary,
            "n1: rule 1001 table 40000, 10.8.0.0/24 dev eth0.vxlan4, VXLAN VNI 4 to VTEP 192.0.2.21 (m1 of cluster b), no NAT"
        );
        let text = render(&report, false, "eth0");
        assert!(
            text.contains("10.8.0.7 is in 10.8.0.0/24, RemoteSubnet b.ov4 (Overlay) of cluster b"),
            "{text}"
        );
        assert!(
            text.contains("-> VTEP 192.0.2.21 (node m1 of cluster b)"),
            "{text}"
        );
        // Without the mirrors (no multi-cluster CRDs, or not readable) the packet leaves by the
        // default route, masqueraded: the trace says so instead of guessing.
        inputs.remote_subnets.clear();
        inputs.remote_vteps.clear();
        let report = trace_path(&inputs, &src, &dst, false).unwrap();
        assert!(
            report.summary.ends_with("masqueraded"),
            "{}",
            report.summary
        );
    }
}

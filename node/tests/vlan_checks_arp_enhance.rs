//! ARP enhancement applied in a node namespace: the enhanced address appears with
//! `noprefixroute` and scope link and without local-table routes, stays stable, is replaced when
//! its pod goes, disappears with the last pod or when the feature is off, leaves foreign
//! addresses alone, and makes the node's ARP for a VLAN pod's traffic carry a sender address
//! inside the subnet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::{NetworkMode, NetworkType};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, ApplyReport, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, DataPlanePlan, PlanConfig, build_plan};

const NODE_MAC: &str = "02:00:00:00:00:11";

/// An untagged IPv4 VLAN underlay (198.18.0.0/24, gateway .1) the node has no address in, with
/// local pods at the given addresses.
fn api(local_pods: &[(&str, &str)]) -> ApiState {
    ApiState {
        node_name: "n1".into(),
        node_addresses: vec![ip("198.19.200.11")],
        networks: vec![network(
            "underlay",
            NetworkType::Underlay,
            Some(NetworkMode::Vlan),
            Some(0),
            &["n1", "n2"],
        )],
        subnets: vec![subnet(
            "ul4",
            "underlay",
            "198.18.0.0/24",
            Some("198.18.0.1"),
            Some("198.18.0.100"),
            Some("198.18.0.200"),
        )],
        ip_instances: local_pods
            .iter()
            .map(|(pod, a)| {
                ipinstance(
                    "default",
                    pod,
                    a,
                    "underlay",
                    "ul4",
                    "n1",
                    "02:aa:00:00:00:64",
                )
            })
            .chain([ipinstance(
                "default",
                "remote",
                "198.18.0.101",
                "underlay",
                "ul4",
                "n2",
                "02:aa:00:00:00:65",
            )])
            .map(std::sync::Arc::new)
            .collect(),
        node_infos: vec![],
        ..Default::default()
    }
}

fn cfg(enabled: bool) -> PlanConfig {
    PlanConfig {
        prefer_vlan_interfaces: vec!["eth0".into()],
        vlan_arp_enhancement: enabled,
        ..Default::default()
    }
}

fn apply(ns: &Netns, api: ApiState, cfg: PlanConfig) -> (DataPlanePlan, ApplyReport) {
    run_in_netns(&ns.name, move |h| async move {
        let host = read_host_state(&h, &cfg.tables).await?;
        let plan = build_plan(&api, &host, &cfg);
        let mut a = Applier::new(h, cfg.tables.clone(), NftRunner::default());
        let rep = a.apply(&plan).await?;
        Ok((plan, rep))
    })
    .expect("apply in netns")
}

fn enhanced_changes(rep: &ApplyReport) -> (usize, usize) {
    rep.changes
        .get("enhanced-address")
        .copied()
        .unwrap_or_default()
}

/// The IPv4 address lines of eth0 in 198.18.0.0/24.
fn vlan_addresses(node: &Netns) -> Vec<String> {
    node.ip("-4 -o addr show dev eth0")
        .lines()
        .filter_map(|l| {
            let rest = l.split(" inet ").nth(1)?;
            rest.starts_with("198.18.0.")
                .then(|| rest.split('\\').next().unwrap_or(rest).trim().to_string())
        })
        .collect()
}

fn local_routes_with_src(node: &Netns, ip: &str) -> Vec<String> {
    node.ip("-4 route show table local")
        .lines()
        .filter(|l| l.contains(&format!("src {ip}")))
        .map(str::to_string)
        .collect()
}

/// node (eth0 = veth to "wire", the node's own address outside the VLAN subnet) and wire.
fn node_and_wire() -> (Netns, Netns) {
    let node = Netns::new("enode");
    let wire = Netns::new("ewire");
    veth(&node, "eth0", &wire, "e0");
    node.ip(&format!("link set eth0 address {NODE_MAC}"));
    node.ip("addr add 198.19.200.11/24 dev eth0");
    (node, wire)
}

#[test]
fn enhanced_address_follows_the_local_pods() {
    if !require_root("enhanced_address_follows_the_local_pods") {
        return;
    }
    let (node, _wire) = node_and_wire();
    // A foreign address of the same shape outside every pod subnet, with its local routes.
    node.ip("addr add 198.19.77.5/24 dev eth0 noprefixroute scope link");

    let pods = [("b", "198.18.0.100"), ("b2", "198.18.0.150")];
    let (plan, rep) = apply(&node, api(&pods), cfg(true));
    assert_eq!(plan.vlan_enhanced_addresses.len(), 1, "{plan:?}");
    assert_eq!(enhanced_changes(&rep), (1, 0), "{rep:?}");
    assert_eq!(
        vlan_addresses(&node),
        ["198.18.0.100/24 scope link noprefixroute eth0"],
        "{}",
        node.ip("-4 addr show dev eth0")
    );
    assert!(
        local_routes_with_src(&node, "198.18.0.100").is_empty(),
        "{}",
        node.ip("route show table local")
    );
    assert!(
        !node.ip("-4 route show").contains("198.18.0.0/24"),
        "no prefix route in main: {}",
        node.ip("-4 route show")
    );

    // Steady state: nothing to do.
    let (_, rep) = apply(&node, api(&pods), cfg(true));
    assert_eq!(enhanced_changes(&rep), (0, 0), "{rep:?}");

    // The kernel re-creates local routes when the link comes back up; the next apply removes them.
    node.ip("link set eth0 down");
    node.ip("link set eth0 up");
    apply(&node, api(&pods), cfg(true));
    assert!(local_routes_with_src(&node, "198.18.0.100").is_empty());

    // Its pod goes: replaced by the other local pod.
    let (_, rep) = apply(&node, api(&pods[1..]), cfg(true));
    assert_eq!(enhanced_changes(&rep), (1, 1), "{rep:?}");
    assert_eq!(
        vlan_addresses(&node),
        ["198.18.0.150/24 scope link noprefixroute eth0"]
    );
    assert!(local_routes_with_src(&node, "198.18.0.150").is_empty());

    // The last pod goes: no enhanced address.
    let (_, rep) = apply(&node, api(&[]), cfg(true));
    assert_eq!(enhanced_changes(&rep), (0, 1), "{rep:?}");
    assert!(vlan_addresses(&node).is_empty());

    // Back, then the feature turned off: removed again.
    apply(&node, api(&pods), cfg(true));
    assert_eq!(vlan_addresses(&node).len(), 1);
    let (plan, rep) = apply(&node, api(&pods), cfg(false));
    assert!(plan.vlan_enhanced_addresses.is_empty());
    assert_eq!(enhanced_changes(&rep), (0, 1), "{rep:?}");
    assert!(vlan_addresses(&node).is_empty());

    // The foreign address and the node's own are untouched throughout.
    let all = node.ip("-4 addr show dev eth0");
    assert!(
        all.contains("198.19.77.5/24") && all.contains("198.19.200.11/24"),
        "{all}"
    );
    assert!(!local_routes_with_src(&node, "198.19.77.5").is_empty());
}

#[test]
fn node_address_in_the_subnet_means_no_enhancement() {
    if !require_root("node_address_in_the_subnet_means_no_enhancement") {
        return;
    }
    let (node, _wire) = node_and_wire();
    node.ip("addr add 198.18.0.11/24 dev eth0");
    let (plan, rep) = apply(&node, api(&[("b", "198.18.0.100")]), cfg(true));
    assert!(plan.vlan_enhanced_addresses.is_empty());
    assert_eq!(enhanced_changes(&rep), (0, 0));
    assert_eq!(vlan_addresses(&node), ["198.18.0.11/24 scope global eth0"]);
}

#[test]
fn arp_for_forwarded_pod_traffic_uses_the_enhanced_sender() {
    if !require_root("arp_for_forwarded_pod_traffic_uses_the_enhanced_sender") {
        return;
    }
    let (node, wire) = node_and_wire();
    wire.ip("addr add 198.18.0.77/24 dev e0");
    // Pod b2 (198.18.0.150) wired as CNI ADD does; pod b (198.18.0.100) has the enhanced address.
    let pod = Netns::new("epod");
    let host_end = hybridnet_api::naming::host_veth_name("default", "b2");
    veth(&node, &host_end, &pod, "eth0");
    node.ip("route add 169.254.1.1/32 dev lo scope link");
    node.set_sysctl(&format!("net/ipv4/conf/{host_end}/proxy_arp"), "1");
    node.set_sysctl(&format!("net/ipv4/neigh/{host_end}/proxy_delay"), "0");
    pod.ip("addr add 198.18.0.150/32 dev eth0");
    pod.ip("route add 169.254.1.1/32 dev eth0 scope link");
    pod.ip("route add default via 169.254.1.1 dev eth0");

    let pods = [("b", "198.18.0.100"), ("b2", "198.18.0.150")];
    // One apply: the subnet table's default route via 198.18.0.1 goes in after the table's
    // direct route (the node has no address of its own in the subnet to reach the gateway).
    let (_, rep) = apply(&node, api(&pods), cfg(true));
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let ping = pod.exec(&["ping", "-c", "1", "-W", "2", "198.18.0.77"]);
    // The node resolved 198.18.0.77 on eth0 for the forwarded packet: the ARP request's sender
    // was the enhanced address (in the subnet), not the node's 198.19.200.11.
    let neigh = wire.ip("neigh show dev e0");
    assert!(
        neigh.contains(&format!("198.18.0.100 lladdr {NODE_MAC}")),
        "wire's neighbours: {neigh}; ping: {ping:?}"
    );
    assert!(!neigh.contains("198.19.200.11"), "{neigh}");
    assert!(ping.is_ok(), "pod -> VLAN neighbour: {ping:?}");
}

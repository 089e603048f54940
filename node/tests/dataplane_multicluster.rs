//! Other clusters' subnets and nodes in a node namespace the test creates: a plan with
//! RemoteSubnets and RemoteVteps is applied the way the agent applies a watch event (incrementally,
//! against what the last apply left), the kernel is checked with `ip`, `bridge` and `nft`, then
//! the remote objects go and nothing of them remains (the kernel's state equals the state before
//! they came); malformed or overlapping ones change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::sync::Arc;

use common::*;
use hybridnet_api::multicluster::{RemoteSubnet, RemoteSubnetSpec, RemoteVtep, RemoteVtepSpec};
use hybridnet_api::v1::{AddressRange, IpVersion, NetworkType};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, KernelChanges, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, DataPlanePlan, PlanConfig, build_plan};

/// Node n1: overlay VNI 4 (a NAT v4 subnet, a v6 subnet), one pod here, one on n2.
fn api() -> ApiState {
    ApiState {
        node_name: "n1".into(),
        node_addresses: vec![ip("198.18.0.11"), ip("fd00:18::11")],
        networks: vec![network(
            "overlay",
            NetworkType::Overlay,
            None,
            Some(4),
            &["n1", "n2"],
        )],
        subnets: vec![
            subnet("ov4", "overlay", "198.19.0.0/24", None, None, None),
            subnet("ov6", "overlay", "fd00:19::/112", None, None, None),
        ],
        ip_instances: vec![
            Arc::new(ipinstance(
                "default",
                "a",
                "198.19.0.5",
                "overlay",
                "ov4",
                "n1",
                "02:aa:00:00:00:05",
            )),
            Arc::new(ipinstance(
                "default",
                "c",
                "198.19.0.6",
                "overlay",
                "ov4",
                "n2",
                "02:aa:00:00:00:06",
            )),
        ],
        node_infos: vec![
            Arc::new(nodeinfo(
                "n1",
                "198.18.0.11",
                "02:00:00:00:00:11",
                &["198.18.0.11", "fd00:18::11"],
            )),
            Arc::new(nodeinfo(
                "n2",
                "198.18.0.12",
                "02:00:00:00:00:12",
                &["198.18.0.12"],
            )),
        ],
        ..Default::default()
    }
}

fn remote_subnet(
    name: &str,
    cidr: &str,
    ty: Option<NetworkType>,
    range: Option<(&str, &str)>,
) -> RemoteSubnet {
    RemoteSubnet::new(
        name,
        RemoteSubnetSpec {
            range: AddressRange {
                version: if cidr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                cidr: cidr.into(),
                start: range.map(|r| r.0.into()),
                end: range.map(|r| r.1.into()),
                gateway: None,
                reserved_ips: None,
                exclude_ips: None,
            },
            network_type: ty,
            cluster_name: Some("b".into()),
        },
    )
}

fn remote_vtep(name: &str, vtep: &str, mac: &str, local: &[&str], eps: &[&str]) -> RemoteVtep {
    RemoteVtep::new(
        name,
        RemoteVtepSpec {
            cluster_name: Some("b".into()),
            node_name: name.split_once('.').map(|(_, n)| n.to_string()),
            ip: Some(vtep.into()),
            mac: Some(mac.into()),
            local_ips: Some(local.iter().map(|s| s.to_string()).collect()),
            endpoint_ip_list: Some(eps.iter().map(|s| s.to_string()).collect()),
        },
    )
}

/// `api()` connected to cluster b: overlay subnets of both families, an underlay subnet with a
/// range, two remote nodes.
fn connected() -> ApiState {
    let mut a = api();
    a.remote_subnets = vec![
        remote_subnet("b.ov4", "198.19.8.0/24", Some(NetworkType::Overlay), None),
        remote_subnet("b.ov6", "fd00:29::/112", Some(NetworkType::Overlay), None),
        remote_subnet(
            "b.ul4",
            "198.18.8.0/24",
            None,
            Some(("198.18.8.100", "198.18.8.200")),
        ),
    ];
    a.remote_vteps = vec![
        Arc::new(remote_vtep(
            "b.m1",
            "198.18.0.21",
            "02:00:00:00:00:21",
            &["198.18.0.21", "fd00:18::21"],
            &["198.19.8.5", "fd00:29::5", "198.18.8.100"],
        )),
        Arc::new(remote_vtep(
            "b.m2",
            "198.18.0.22",
            "02:00:00:00:00:22",
            &[],
            &["198.19.8.6"],
        )),
    ];
    a
}

fn node_ns() -> (Netns, Netns, Netns) {
    let node = Netns::new("mcnode");
    let pod = Netns::new("mcpod");
    let wire = Netns::new("mcwire");
    veth(&node, "eth0", &wire, "e0");
    node.ip("link set eth0 address 02:00:00:00:00:11");
    node.ip("addr add 198.18.0.11/24 dev eth0");
    node.ip("-6 addr add fd00:18::11/64 dev eth0 nodad");
    node.ip("route add default via 198.18.0.1 dev eth0");
    node.ip("-6 route add default via fd00:18::1 dev eth0");
    let host_end = hybridnet_api::naming::host_veth_name("default", "a");
    veth(&node, &host_end, &pod, "eth0");
    (node, pod, wire)
}

/// Applies `first` in full (a fresh agent), then `then` as the agent applies a watch event: the
/// plan changed, the kernel did not (no notification), so only the difference is executed.
fn apply_then(ns: &Netns, first: ApiState, then: ApiState) -> DataPlanePlan {
    run_in_netns(&ns.name, move |h| async move {
        let cfg = PlanConfig::default();
        let host = read_host_state(&h, &cfg.tables).await?;
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        let rep = a.apply(&build_plan(&first, &host, &cfg)).await?;
        anyhow::ensure!(rep.errors.is_empty(), "first apply: {:?}", rep.errors);
        let plan = build_plan(&then, &host, &cfg);
        let rep = a.apply_changes(&plan, KernelChanges::default()).await?;
        anyhow::ensure!(rep.errors.is_empty(), "second apply: {:?}", rep.errors);
        Ok(plan)
    })
    .expect("apply in netns")
}

fn snapshot(ns: &Netns) -> String {
    ns.wait_ipv6_dad_settled(std::time::Duration::from_secs(30));
    let mut s = String::new();
    for cmd in [
        "rule show",
        "-6 rule show",
        "route show table all",
        "-6 route show table all",
        "neigh show nud permanent",
        "-6 neigh show nud permanent",
        "neigh show proxy",
        "-d link show",
    ] {
        s += &format!("## ip {cmd}\n{}", ns.ip(cmd));
    }
    s += &ns.exec(&["bridge", "fdb", "show"]).unwrap_or_default();
    s += &ns.nft_ruleset();
    s
}

#[test]
fn remote_subnets_and_vteps_are_programmed_and_removed() {
    if !require_root("remote_subnets_and_vteps_are_programmed_and_removed") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    // Before: the node without remote objects.
    apply_then(&node, api(), api());
    let before = snapshot(&node);

    let plan = apply_then(&node, api(), connected());
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let t40000 = node.ip("route show table 40000");
    assert!(t40000.contains("198.19.8.0/24 dev eth0.vxlan4"), "{t40000}");
    assert!(!t40000.contains("198.18.8."), "{t40000}");
    assert!(
        node.ip("-6 route show table 40000")
            .contains("fd00:29::/112 dev eth0.vxlan4")
    );
    let nat = plan
        .subnet_tables
        .iter()
        .find(|(c, _)| c.to_string() == "198.19.0.0/24")
        .unwrap()
        .1
        .table;
    let t_nat = node.ip(&format!("route show table {nat}"));
    assert!(t_nat.contains("198.18.8.0/24 dev eth0.vxlan4"), "{t_nat}");
    assert!(t_nat.contains("throw 198.18.8.0/26"), "{t_nat}");
    assert!(t_nat.contains("throw 198.18.8.201"), "{t_nat}");
    let fdb = node
        .exec(&["bridge", "fdb", "show", "dev", "eth0.vxlan4"])
        .unwrap();
    for want in [
        "02:00:00:00:00:21 dst 198.18.0.21 self permanent",
        "ff:ff:ff:ff:ff:f1 dst 198.18.0.21 self permanent",
        "02:00:00:00:00:22 dst 198.18.0.22 self permanent",
        "ff:ff:ff:ff:ff:f1 dst 198.18.0.22 self permanent",
    ] {
        assert!(fdb.contains(want), "missing {want:?} in\n{fdb}");
    }
    let neigh = node.ip("neigh show dev eth0.vxlan4");
    for want in [
        "198.19.8.5 lladdr 02:00:00:00:00:21 PERMANENT",
        "198.18.8.100 lladdr 02:00:00:00:00:21 PERMANENT",
        "198.18.0.21 lladdr 02:00:00:00:00:21 PERMANENT",
        "198.19.8.6 lladdr 02:00:00:00:00:22 PERMANENT",
        // No localIPs: the VTEP address stands for the node.
        "198.18.0.22 lladdr 02:00:00:00:00:22 PERMANENT",
    ] {
        assert!(neigh.contains(want), "missing {want:?} in\n{neigh}");
    }
    let neigh6 = node.ip("-6 neigh show dev eth0.vxlan4");
    for want in [
        "fd00:29::5 lladdr 02:00:00:00:00:21 PERMANENT",
        "fd00:18::21 lladdr 02:00:00:00:00:21 PERMANENT",
    ] {
        assert!(neigh6.contains(want), "missing {want:?} in\n{neigh6}");
    }
    let set = |name: &str| {
        node.exec(&["nft", "list", "set", "inet", "hybridnet", name])
            .unwrap()
    };
    let all4 = set("all_net4");
    for want in [
        "198.19.8.0/24",
        "198.18.8.0/24",
        "198.18.0.21",
        "198.18.0.22",
    ] {
        assert!(all4.contains(want), "missing {want} in\n{all4}");
    }
    assert!(set("all_net6").contains("fd00:29::/112"));
    assert!(set("overlay_net4").contains("198.19.8.0/24"));
    assert!(!set("overlay_net4").contains("198.18.8.0/24"));
    assert!(set("node_ip4").contains("198.18.0.22"));
    assert!(set("node_ip6").contains("fd00:18::21"));
    assert!(!set("nat_net4").contains("198.19.8.0"));

    // Everything goes again; the kernel is as before, nothing stale.
    apply_then(&node, connected(), api());
    assert_eq!(snapshot(&node), before);
}

#[test]
fn bad_remote_objects_change_nothing() {
    if !require_root("bad_remote_objects_change_nothing") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    apply_then(&node, connected(), connected());
    let good = snapshot(&node);
    let mut bad = connected();
    bad.remote_vteps.push(Arc::new(remote_vtep(
        "b.m3",
        "198.18.0.23",
        "02:00:00:00:00",
        &[],
        &["198.19.8.7"],
    )));
    bad.remote_vteps.push(Arc::new(remote_vtep(
        "b.m4",
        "not-an-ip",
        "02:00:00:00:00:24",
        &[],
        &["198.19.8.8"],
    )));
    bad.remote_subnets.push(remote_subnet(
        "b.x",
        "198.19.0.128/25",
        Some(NetworkType::Overlay),
        None,
    ));
    let plan = apply_then(&node, connected(), bad);
    let objects: Vec<&str> = plan.problems.iter().map(|p| p.object.as_str()).collect();
    assert_eq!(
        objects,
        ["RemoteSubnet/b.x", "RemoteVtep/b.m3", "RemoteVtep/b.m4"],
        "{:?}",
        plan.problems
    );
    assert_eq!(snapshot(&node), good);
}

//! Applies plans inside network namespaces the test creates and checks the kernel with `ip` and
//! `nft`: content, idempotence, removal of stale objects, foreign objects untouched, VLAN id 0 and
//! (where the kernel has 802.1Q) tagged VLANs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::{NetworkMode, NetworkType};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, ApplyReport, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, DataPlanePlan, PlanConfig, build_plan};

/// The node's API view: overlay VNI 4 (NAT and non-NAT v4 subnet, a v6 subnet), an untagged VLAN
/// underlay in the node's own subnet, two remote nodes.
/// Shares the objects as the watch caches do.
fn arcs<T>(v: Vec<T>) -> Vec<std::sync::Arc<T>> {
    v.into_iter().map(std::sync::Arc::new).collect()
}

fn api(node_net_id: i32) -> ApiState {
    let mut nonat = subnet("ov-nonat", "overlay", "198.19.1.0/24", None, None, None);
    nonat.spec.config = Some(hybridnet_api::v1::SubnetConfig {
        auto_nat_outgoing: Some(false),
        ..Default::default()
    });
    ApiState {
        node_name: "n1".into(),
        node_addresses: vec![ip("198.18.0.11"), ip("fd00:18::11")],
        networks: vec![
            network(
                "overlay",
                NetworkType::Overlay,
                None,
                Some(4),
                &["n1", "n2", "n3"],
            ),
            network(
                "underlay",
                NetworkType::Underlay,
                Some(NetworkMode::Vlan),
                Some(node_net_id),
                &["n1", "n2"],
            ),
        ],
        subnets: vec![
            subnet("ov4", "overlay", "198.19.0.0/24", None, None, None),
            nonat,
            subnet("ov6", "overlay", "fd00:19::/112", None, None, None),
            subnet(
                "ul4",
                "underlay",
                "198.18.0.0/24",
                Some("198.18.0.1"),
                Some("198.18.0.100"),
                Some("198.18.0.200"),
            ),
            subnet(
                "ul6",
                "underlay",
                "fd00:18::/112",
                Some("fd00:18::1"),
                Some("fd00:18::100"),
                Some("fd00:18::200"),
            ),
        ],
        ip_instances: arcs(vec![
            ipinstance(
                "default",
                "a",
                "198.19.0.5",
                "overlay",
                "ov4",
                "n1",
                "02:aa:00:00:00:05",
            ),
            ipinstance(
                "default",
                "a",
                "fd00:19::5",
                "overlay",
                "ov6",
                "n1",
                "02:aa:00:00:00:05",
            ),
            ipinstance(
                "default",
                "c",
                "198.19.0.6",
                "overlay",
                "ov4",
                "n2",
                "02:aa:00:00:00:06",
            ),
            ipinstance(
                "default",
                "c",
                "fd00:19::6",
                "overlay",
                "ov6",
                "n2",
                "02:aa:00:00:00:06",
            ),
            ipinstance(
                "default",
                "b",
                "198.18.0.100",
                "underlay",
                "ul4",
                "n1",
                "02:aa:00:00:00:64",
            ),
            ipinstance(
                "default",
                "d",
                "198.18.0.101",
                "underlay",
                "ul4",
                "n2",
                "02:aa:00:00:00:65",
            ),
        ]),
        node_infos: arcs(vec![
            nodeinfo(
                "n1",
                "198.18.0.11",
                "02:00:00:00:00:11",
                &["198.18.0.11", "fd00:18::11"],
            ),
            nodeinfo(
                "n2",
                "198.18.0.12",
                "02:00:00:00:00:12",
                &["198.18.0.12", "fd00:18::12"],
            ),
            nodeinfo("n3", "198.18.0.13", "02:00:00:00:00:13", &["198.18.0.13"]),
        ]),
        ..Default::default()
    }
}

/// A node namespace with `eth0` (a veth to a "wire" namespace; this kernel has no dummy driver)
/// and a pod veth. Returns (node, pod, wire).
fn node_ns() -> (Netns, Netns, Netns) {
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let wire = Netns::new("wire");
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

/// Reads the host, plans and applies once inside `ns`; returns the plan and the report.
fn plan_and_apply(ns: &Netns, api: ApiState, cfg: PlanConfig) -> (DataPlanePlan, ApplyReport) {
    run_in_netns(&ns.name, move |h| async move {
        let host = read_host_state(&h, &cfg.tables).await?;
        let plan = build_plan(&api, &host, &cfg);
        let mut a = Applier::new(h, cfg.tables.clone(), NftRunner::default());
        let rep = a.apply(&plan).await?;
        Ok((plan, rep))
    })
    .expect("apply in netns")
}

/// Same, but applies twice with one Applier (the agent's steady state) and returns both reports.
fn apply_twice(ns: &Netns, api: ApiState) -> (DataPlanePlan, ApplyReport, ApplyReport) {
    run_in_netns(&ns.name, move |h| async move {
        let cfg = PlanConfig::default();
        let host = read_host_state(&h, &cfg.tables).await?;
        let plan = build_plan(&api, &host, &cfg);
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        let first = a.apply(&plan).await?;
        let host2 = read_host_state(&h, &cfg.tables).await?;
        let plan2 = build_plan(&api, &host2, &cfg);
        anyhow::ensure!(
            plan2.rules == plan.rules && plan2.routes == plan.routes,
            "plan changed after apply"
        );
        let second = a.apply(&plan2).await?;
        Ok((plan, first, second))
    })
    .expect("apply in netns")
}

fn snapshot(ns: &Netns) -> String {
    // Routes of IPv6 addresses appear when their DAD ends: compare only settled state (this
    // comparison failed once under load on the link-local routes of eth0).
    ns.wait_ipv6_dad_settled(std::time::Duration::from_secs(30));
    let mut s = String::new();
    for cmd in [
        "rule show",
        "-6 rule show",
        "route show table all",
        "-6 route show table all",
        // Permanent entries only: resolved ones age on the kernel's timers, not ours.
        "neigh show nud permanent",
        "neigh show proxy",
        "-d link show",
        "addr show",
    ] {
        s += &format!("## ip {cmd}\n{}", ns.ip(cmd));
    }
    s += &ns.exec(&["bridge", "fdb", "show"]).unwrap_or_default();
    s += &ns.nft_ruleset();
    s
}

#[test]
fn apply_programs_the_plan_and_is_idempotent() {
    if !require_root("apply_programs_the_plan_and_is_idempotent") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    let (plan, first, second) = apply_twice(&node, api(0));
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert!(!first.is_noop());
    assert!(
        second.is_noop(),
        "second apply changed {:?}",
        second.changes
    );
    assert!(second.errors.is_empty(), "{:?}", second.errors);

    let rules = node.ip("rule show");
    for want in [
        "1000:\tfrom all lookup 39999",
        "1001:\tfrom all lookup 40000",
        "1002:\tfrom all fwmark 0x20/0x20 lookup 40001",
        "1003:\tfrom 198.19.0.0/24 fwmark 0/0x4040 lookup",
        "1003:\tfrom 198.18.0.0/24 fwmark 0/0x4040 lookup",
    ] {
        assert!(rules.contains(want), "missing {want:?} in\n{rules}");
    }
    assert!(
        node.ip("-6 rule show")
            .contains("1003:\tfrom fd00:19::/112 fwmark 0/0x4040 lookup")
    );
    let veth = hybridnet_api::naming::host_veth_name("default", "a");
    let t39999 = node.ip("route show table 39999");
    assert!(
        t39999.contains(&format!("198.19.0.5 dev {veth}")),
        "{t39999}"
    );
    assert!(
        node.ip("-6 route show table 39999")
            .contains(&format!("fd00:19::5 dev {veth}"))
    );
    let t40000 = node.ip("route show table 40000");
    assert!(t40000.contains("198.19.0.0/24 dev eth0.vxlan4"), "{t40000}");
    assert!(
        node.ip("route show table 40001")
            .contains("default dev eth0.vxlan4")
    );
    let ov = plan
        .subnet_tables
        .iter()
        .find(|(c, _)| c.to_string() == "198.19.0.0/24")
        .unwrap()
        .1
        .table;
    let t_ov = node.ip(&format!("route show table {ov}"));
    assert!(t_ov.contains("198.18.0.0/24 dev eth0.vxlan4"), "{t_ov}");
    assert!(t_ov.contains("throw 198.18.0.0/26"), "{t_ov}");
    assert!(t_ov.contains("throw 198.18.0.224/27"), "{t_ov}");
    let ul = plan
        .subnet_tables
        .iter()
        .find(|(c, _)| c.to_string() == "198.18.0.0/24")
        .unwrap()
        .1
        .table;
    let t_ul = node.ip(&format!("route show table {ul}"));
    assert!(t_ul.contains("default via 198.18.0.1 dev eth0"), "{t_ul}");
    assert!(
        t_ul.contains("198.18.0.0/24 dev eth0 proto static scope link src 198.18.0.11"),
        "{t_ul}"
    );

    let link = node.ip("-d link show eth0.vxlan4");
    for want in [
        "vxlan id 4",
        "local 198.18.0.11",
        "dev eth0",
        "dstport 8472",
        "nolearning",
        "02:00:00:00:00:11",
        "mtu 1450",
    ] {
        assert!(link.contains(want), "missing {want:?} in\n{link}");
    }
    let fdb = node
        .exec(&["bridge", "fdb", "show", "dev", "eth0.vxlan4"])
        .unwrap();
    for want in [
        "02:00:00:00:00:12 dst 198.18.0.12 self permanent",
        "ff:ff:ff:ff:ff:f1 dst 198.18.0.12 self permanent",
        "ff:ff:ff:ff:ff:f1 dst 198.18.0.13 self permanent",
    ] {
        assert!(fdb.contains(want), "missing {want:?} in\n{fdb}");
    }
    assert!(!fdb.contains("00:00:00:00:00:00"), "{fdb}");
    let neigh = node.ip("neigh show dev eth0.vxlan4");
    assert!(
        neigh.contains("198.19.0.6 lladdr 02:00:00:00:00:12 PERMANENT"),
        "{neigh}"
    );
    assert!(
        neigh.contains("198.18.0.101 lladdr 02:00:00:00:00:12 PERMANENT"),
        "{neigh}"
    );
    assert!(
        node.ip("-6 neigh show dev eth0.vxlan4")
            .contains("fd00:19::6 lladdr 02:00:00:00:00:12 PERMANENT")
    );
    let proxy = node.ip("neigh show proxy");
    assert!(
        proxy.contains("198.19.0.5 dev eth0.vxlan4 proxy"),
        "{proxy}"
    );
    assert!(proxy.contains("198.18.0.100 dev eth0 proxy"), "{proxy}");
    assert!(
        node.ip("addr show dev eth0.vxlan4")
            .contains("inet 198.18.0.11/32 scope global noprefixroute")
    );

    let nft = node.nft_ruleset();
    assert!(nft.contains("table inet hybridnet"), "{nft}");
    assert!(
        nft.contains("oifname != \"eth0.vxlan4\" ip saddr @nat_net4 masquerade"),
        "{nft}"
    );
    assert_eq!(node.sysctl("net/ipv4/ip_forward"), "1");
    assert_eq!(node.sysctl("net/ipv6/conf/eth0.vxlan4/proxy_ndp"), "1");

    // The kernel agrees with trace: route lookups resolve as planned.
    let get = node.ip(&format!(
        "route get 198.18.0.101 from 198.19.0.5 iif {veth}"
    ));
    assert!(get.contains("dev eth0.vxlan4"), "{get}");
    let get = node.ip(&format!("route get 198.18.0.1 from 198.19.0.5 iif {veth}"));
    // Thrown out of the overlay table: the main table's connected route, not the VXLAN device.
    assert!(get.contains("dev eth0 ") && !get.contains("vxlan"), "{get}");

    // A third apply from a fresh Applier (an agent restart) changes nothing in the kernel.
    let before = snapshot(&node);
    let (_, rep) = plan_and_apply(&node, api(0), PlanConfig::default());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let only_nft = rep.changes.keys().all(|k| *k == "nftables");
    assert!(only_nft, "restart changed {:?}", rep.changes);
    assert_eq!(before, snapshot(&node));
}

#[test]
fn stale_objects_go_and_foreign_ones_stay() {
    if !require_root("stale_objects_go_and_foreign_ones_stay") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    plan_and_apply(&node, api(0), PlanConfig::default());
    // Foreign state in places hybridnet looks at.
    node.ip("rule add pref 1001 from 203.0.113.0/24 lookup 300");
    node.ip("route add 203.0.113.0/24 dev eth0 table 300");
    node.ip("route add 203.0.113.0/24 dev eth0 table 10050");
    node.ip("rule add pref 500 from 203.0.113.0/24 fwmark 0x1/0x1 lookup 10050");
    node.ip("neigh add proxy 203.0.113.7 dev eth0");
    node.ip("route add 203.0.113.128/25 dev eth0 table 40000");
    node.exec(&["nft", "add", "table", "inet", "other"])
        .unwrap();
    node.exec(&[
        "nft",
        "add",
        "chain",
        "inet",
        "other",
        "c",
        "{ type filter hook forward priority 0; }",
    ])
    .unwrap();
    node.ip("link add foreign.vx type vxlan id 9 dev eth0 dstport 4789");
    // Stale hybridnet state: an upstream-style rule, a route, FDB/neighbour entries, an old VXLAN.
    node.ip("rule add pref 3 fwmark 0x20/0x20 lookup 40001");
    node.ip("route add 198.30.0.0/24 dev eth0.vxlan4 table 40000");
    node.exec(&[
        "bridge",
        "fdb",
        "append",
        "02:00:00:00:00:99",
        "dev",
        "eth0.vxlan4",
        "dst",
        "198.18.0.99",
        "self",
        "permanent",
    ])
    .unwrap();
    node.exec(&[
        "bridge",
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "eth0.vxlan4",
        "dst",
        "198.18.0.98",
        "self",
        "permanent",
    ])
    .unwrap();
    node.ip("neigh add 198.19.0.99 lladdr 02:00:00:00:00:99 dev eth0.vxlan4 nud permanent");
    node.ip("neigh add proxy 198.19.0.98 dev eth0.vxlan4");
    node.ip("neigh add proxy 198.18.0.150 dev eth0");
    node.ip("link add eth0.vxlan7 type vxlan id 7 dev eth0 dstport 8472");
    // A remote pod moved: its neighbour entry must follow.
    let mut moved = api(0);
    moved.ip_instances[2] = std::sync::Arc::new(ipinstance(
        "default",
        "c",
        "198.19.0.6",
        "overlay",
        "ov4",
        "n3",
        "02:aa:00:00:00:06",
    ));
    // The non-NAT subnet is deleted: its rule and table go.
    moved
        .subnets
        .retain(|s| s.metadata.name.as_deref() != Some("ov-nonat"));
    let nonat_table = node
        .ip("rule show")
        .lines()
        .find(|l| l.contains("from 198.19.1.0/24"))
        .and_then(|l| l.rsplit(' ').next().map(str::to_string))
        .unwrap();

    let (_, rep) = plan_and_apply(&node, moved, PlanConfig::default());
    // The only complaint is the foreign route in the fixed overlay table, which stays.
    assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
    assert!(
        rep.errors[0].contains("table 40000 holds route 203.0.113.128/25"),
        "{:?}",
        rep.errors
    );
    assert!(
        node.ip("route show table 40000")
            .contains("203.0.113.128/25 dev eth0")
    );

    let rules = node.ip("rule show");
    assert!(
        !rules.contains("3:\tfrom all fwmark 0x20/0x20 lookup 40001"),
        "{rules}"
    );
    assert!(!rules.contains("198.19.1.0/24"), "{rules}");
    assert_eq!(node.ip(&format!("route show table {nonat_table}")), "");
    assert!(!node.ip("route show table 40000").contains("198.30.0.0/24"));
    let fdb = node
        .exec(&["bridge", "fdb", "show", "dev", "eth0.vxlan4"])
        .unwrap();
    assert!(
        !fdb.contains("02:00:00:00:00:99") && !fdb.contains("00:00:00:00:00:00"),
        "{fdb}"
    );
    let neigh = node.ip("neigh show dev eth0.vxlan4");
    assert!(!neigh.contains("198.19.0.99"), "{neigh}");
    assert!(
        neigh.contains("198.19.0.6 lladdr 02:00:00:00:00:13 PERMANENT"),
        "{neigh}"
    );
    let proxy = node.ip("neigh show proxy");
    assert!(
        !proxy.contains("198.19.0.98") && !proxy.contains("198.18.0.150"),
        "{proxy}"
    );
    assert!(node.try_ip("link show eth0.vxlan7").is_err());

    // Foreign objects are untouched.
    assert!(
        rules.contains("1001:\tfrom 203.0.113.0/24 lookup 300"),
        "{rules}"
    );
    assert!(
        rules.contains("500:\tfrom 203.0.113.0/24 fwmark 0x1/0x1 lookup 10050"),
        "{rules}"
    );
    assert!(
        node.ip("route show table 300")
            .contains("203.0.113.0/24 dev eth0")
    );
    assert!(
        node.ip("route show table 10050")
            .contains("203.0.113.0/24 dev eth0")
    );
    assert!(proxy.contains("203.0.113.7 dev eth0 proxy"), "{proxy}");
    assert!(node.nft_ruleset().contains("table inet other"));
    assert!(node.try_ip("link show foreign.vx").is_ok());
}

#[test]
fn ra_learnt_default_route_keeps_accepting_ra() {
    if !require_root("ra_learnt_default_route_keeps_accepting_ra") {
        return;
    }
    let node = Netns::new("ra");
    let wire = Netns::new("rawire");
    veth(&node, "eth0", &wire, "e0");
    node.ip("link set eth0 address 02:00:00:00:00:11");
    node.ip("addr add 198.18.0.11/24 dev eth0");
    node.ip("-6 addr add fd00:18::11/64 dev eth0 nodad");
    node.ip("route add default via 198.18.0.1 dev eth0");
    node.set_sysctl("net/ipv6/conf/all/forwarding", "0");
    node.set_sysctl("net/ipv6/conf/eth0/accept_ra", "1");
    node.ip("-6 route add default via fd00:18::1 dev eth0 proto ra");
    let (_, rep) = plan_and_apply(&node, api(0), PlanConfig::default());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(node.sysctl("net/ipv6/conf/eth0/accept_ra"), "2");
    assert_eq!(node.sysctl("net/ipv6/conf/all/forwarding"), "1");
}

#[test]
fn foreign_subnet_table_is_never_allocated() {
    if !require_root("foreign_subnet_table_is_never_allocated") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    node.ip("route add 203.0.113.0/24 dev eth0 table 10000");
    let (plan, rep) = plan_and_apply(&node, api(0), PlanConfig::default());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(plan.subnet_tables.values().all(|t| t.table != 10000));
    assert!(
        node.ip("route show table 10000")
            .starts_with("203.0.113.0/24 dev eth0")
    );
}

#[test]
fn vlan_id_zero_is_the_parent() {
    if !require_root("vlan_id_zero_is_the_parent") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    // Keep the IPv6 address while the link is down (the default flushes it).
    node.set_sysctl("net/ipv6/conf/eth0/keep_addr_on_down", "1");
    node.ip("link set eth0 down");
    let cfg = PlanConfig {
        prefer_vlan_interfaces: vec!["eth0".into()],
        prefer_vxlan_interfaces: vec!["eth0".into()],
        ..Default::default()
    };
    let (plan, rep) = plan_and_apply(&node, api(0), cfg);
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert_eq!(
        plan.vlan_links.iter().next().map(|l| l.name.as_str()),
        Some("eth0")
    );
    assert!(
        node.ip("link show eth0").contains("state UNKNOWN")
            || node.ip("link show eth0").contains(",UP")
    );
    assert!(
        node.ip("neigh show proxy")
            .contains("198.18.0.100 dev eth0 proxy")
    );
}

/// Tagged VLANs need 802.1Q in the kernel, which some kernels (this lab's CI machine's among them)
/// lack. So the test is ignored by `cargo test`, and so counted as ignored rather than passed;
/// `make test` runs it through scripts/kernel-gated-tests.sh where a probe finds 802.1Q, and prints
/// the reason where it does not. Run on such a kernel, it fails rather than skips.
#[test]
#[ignore = "needs 802.1Q in the kernel: make test runs it where the kernel has it (scripts/kernel-gated-tests.sh)"]
fn tagged_vlans_where_the_kernel_has_8021q() {
    let test = "tagged_vlans_where_the_kernel_has_8021q";
    if !require_root(test) {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    node.set_sysctl("net/ipv6/conf/eth0/keep_addr_on_down", "1");
    node.ip("link set eth0 down");
    let cfg = PlanConfig {
        prefer_vlan_interfaces: vec!["eth0".into()],
        prefer_vxlan_interfaces: vec!["eth0".into()],
        ..Default::default()
    };
    let (plan, rep) = plan_and_apply(&node, api(30), cfg);
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(plan.vlan_links.iter().any(|l| l.name == "eth0.30"));
    assert!(
        node.ip("-d link show eth0.30")
            .contains("vlan protocol 802.1Q id 30")
    );
}

#[test]
fn nft_script_loads_for_plan_variants() {
    if !require_root("nft_script_loads_for_plan_variants") {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    let mut variants: Vec<(&str, ApiState)> = Vec::new();
    variants.push(("full", api(0)));
    let mut no_overlay = api(0);
    no_overlay
        .networks
        .retain(|n| n.metadata.name.as_deref() != Some("overlay"));
    no_overlay.subnets.retain(|s| s.spec.network != "overlay");
    variants.push(("no overlay", no_overlay));
    let mut no_underlay = api(0);
    no_underlay
        .networks
        .retain(|n| n.metadata.name.as_deref() != Some("underlay"));
    no_underlay.subnets.retain(|s| s.spec.network != "underlay");
    variants.push(("no underlay", no_underlay));
    variants.push((
        "empty",
        ApiState {
            node_name: "n1".into(),
            ..Default::default()
        },
    ));
    for (what, api) in variants {
        let (plan, rep) = plan_and_apply(&node, api, PlanConfig::default());
        assert!(
            rep.errors.is_empty(),
            "{what}: {:?}\n{}",
            rep.errors,
            plan.nft.transaction()
        );
        assert!(
            node.nft_ruleset().contains("table inet hybridnet"),
            "{what}"
        );
    }
    // From "full" to "empty": hybridnet's routes and rules beyond the fixed three are gone.
    let rules = node.ip("rule show");
    assert!(!rules.contains("1003:"), "{rules}");
    assert!(node.try_ip("link show eth0.vxlan4").is_err());
}

/// `ip -n <ns> <args>` from any thread.
fn ip_in(ns: &str, args: &str) -> String {
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip {args}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn incremental_apply_touches_only_the_change_and_follows_notifications() {
    if !require_root("incremental_apply_touches_only_the_change_and_follows_notifications") {
        return;
    }
    use futures::StreamExt;
    use hybridnet_node::dataplane::{KernelChanges, KernelNotes, classify};
    use rtnetlink::packet_core::NetlinkPayload;
    let (node, _pod, _wire) = node_ns();
    let name = node.name.clone();
    run_in_netns(&node.name.clone(), move |h| async move {
        let cfg = PlanConfig::default();
        let host = read_host_state(&h, &cfg.tables).await?;
        let plan = build_plan(&api(0), &host, &cfg);
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        let first = a.apply(&plan).await?;
        anyhow::ensure!(first.errors.is_empty(), "{:?}", first.errors);
        // Nothing changed: nothing done.
        let again = a.apply_changes(&plan, KernelChanges::default()).await?;
        anyhow::ensure!(again.is_noop() && again.errors.is_empty(), "{again:?}");

        // A remote pod moves to another node: exactly its neighbour entry is replaced.
        let mut moved_api = api(0);
        moved_api.ip_instances[2] = std::sync::Arc::new(ipinstance(
            "default",
            "c",
            "198.19.0.6",
            "overlay",
            "ov4",
            "n3",
            "02:aa:00:00:00:06",
        ));
        let moved = build_plan(&moved_api, &host, &cfg);
        let mac = moved.vxlan_neighbours[&ip("198.19.0.6")];
        anyhow::ensure!(
            mac != plan.vxlan_neighbours[&ip("198.19.0.6")],
            "test needs a move"
        );
        let rep = a.apply_changes(&moved, KernelChanges::default()).await?;
        anyhow::ensure!(
            rep.changes == [("neighbour", (1, 0))].into() && rep.errors.is_empty(),
            "{rep:?}"
        );
        let shown = ip_in(&name, "neigh show 198.19.0.6 dev eth0.vxlan4");
        anyhow::ensure!(
            shown.contains(&mac.to_string()) && shown.contains("PERMANENT"),
            "{shown}"
        );

        // Someone else deletes it: the notification contradicts what the last apply left, and
        // the apply that follows it restores the entry; without it nothing is dumped.
        let (conn, _h2, mut msgs) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Neigh])?;
        tokio::spawn(conn);
        ip_in(&name, "neigh del 198.19.0.6 dev eth0.vxlan4");
        let mut notes = KernelNotes::default();
        let vx = a.vxlan_index();
        let wait = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some((m, _)) = msgs.next().await {
                if let NetlinkPayload::InnerMessage(msg) = &m.payload
                    && let Some(ev) = classify(msg)
                {
                    notes.note(ev, vx);
                    if a.contradicted_by(&notes.neighbours) {
                        return true;
                    }
                }
            }
            false
        })
        .await;
        anyhow::ensure!(wait == Ok(true), "no contradicting notification: {notes:?}");
        let untouched = a.apply_changes(&moved, KernelChanges::default()).await?;
        anyhow::ensure!(untouched.is_noop(), "{untouched:?}");
        let repaired = a
            .apply_changes(
                &moved,
                KernelChanges {
                    neighbours: true,
                    ..Default::default()
                },
            )
            .await?;
        anyhow::ensure!(
            repaired.changes == [("neighbour", (1, 0))].into() && repaired.errors.is_empty(),
            "{repaired:?}"
        );
        let shown = ip_in(&name, "neigh show 198.19.0.6 dev eth0.vxlan4");
        anyhow::ensure!(shown.contains(&mac.to_string()), "{shown}");
        // Our own change did not contradict it.
        anyhow::ensure!(
            !a.contradicted_by(&[hybridnet_node::dataplane::NeighbourEvent {
                ifindex: vx.unwrap_or(0),
                entry: hybridnet_node::dataplane::changes::NeighbourEntry::Neighbour {
                    ip: ip("198.19.0.6"),
                    lladdr: Some(mac),
                    permanent: true,
                },
                deleted: false,
            }]),
            "own change seen as foreign"
        );
        Ok(())
    })
    .expect("incremental apply in netns");
}

/// A KubeVirt VM's address moves to another node (its live migration's target pod got the
/// binding) while the source pod's veth still exists here: the local-direct route through that
/// veth goes at once (traffic follows the VM), the VXLAN neighbour points at the new node, and a
/// local-direct route to an address that did not move is left alone (docs/api.md, "KubeVirt VMs").
#[test]
fn the_local_route_of_an_address_that_moved_to_another_node_goes_with_the_move() {
    if !require_root("the_local_route_of_an_address_that_moved_to_another_node_goes_with_the_move")
    {
        return;
    }
    let (node, _pod, _wire) = node_ns();
    let veth = hybridnet_api::naming::host_veth_name("default", "a");
    let (_, rep) = plan_and_apply(&node, api(0), PlanConfig::default());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let routes = node.ip("route show table 39999");
    assert!(
        routes.contains(&format!("198.19.0.5 dev {veth}")),
        "{routes}"
    );
    // An ADD-written route to an address no IPInstance places elsewhere.
    node.ip(&format!("route add 198.19.0.77/32 dev {veth} table 39999"));

    let mut moved = api(0);
    for k in [0, 1] {
        let i = &moved.ip_instances[k];
        let (addr, sub) = (i.spec.address.ip.clone(), i.spec.subnet.clone());
        let addr = addr.split('/').next().unwrap().to_string();
        moved.ip_instances[k] = std::sync::Arc::new(ipinstance(
            "default",
            "a-target",
            &addr,
            "overlay",
            &sub,
            "n2",
            "02:aa:00:00:00:05",
        ));
    }
    let (plan, rep) = plan_and_apply(&node, moved, PlanConfig::default());
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(plan.remote_pod_ips.contains(&ip("198.19.0.5")));
    let routes = node.ip("route show table 39999");
    assert!(!routes.contains("198.19.0.5 "), "{routes}");
    assert!(
        routes.contains(&format!("198.19.0.77 dev {veth}")),
        "{routes}"
    );
    let routes6 = node.ip("-6 route show table 39999");
    assert!(!routes6.contains("fd00:19::5 "), "{routes6}");
    // The old pod's veth is still there (its DEL comes later); the address now goes to n2.
    assert!(node.try_ip(&format!("link show {veth}")).is_ok());
    let neigh = node.ip("neigh show dev eth0.vxlan4");
    assert!(
        neigh.contains("198.19.0.5 lladdr 02:00:00:00:00:12"),
        "{neigh}"
    );
}

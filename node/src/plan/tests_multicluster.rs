//! The plan for other clusters' subnets and nodes (RemoteSubnets, RemoteVteps): routes, FDB and
//! neighbour entries, nft sets, `trace`, and bad input that changes nothing.

use std::sync::Arc;

use hybridnet_api::multicluster::{RemoteSubnet, RemoteSubnetSpec, RemoteVtep, RemoteVtepSpec};
use hybridnet_api::v1::{AddressRange, IpVersion, NetworkType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use super::nftables::{Key, Value};
use super::tests::{Fixture, cidr, fixture, ip};
use super::*;

fn plan_of(f: &Fixture) -> DataPlanePlan {
    build_plan(&f.api, &f.host, &f.cfg)
}

pub(crate) fn remote_subnet(
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
            cluster_name: name.split_once('.').map(|(c, _)| c.to_string()),
        },
    )
}

pub(crate) fn remote_vtep(
    name: &str,
    vtep: &str,
    mac: &str,
    local: &[&str],
    endpoints: &[&str],
) -> RemoteVtep {
    let (cluster, node) = name.split_once('.').unwrap_or(("", name));
    RemoteVtep::new(
        name,
        RemoteVtepSpec {
            cluster_name: Some(cluster.into()),
            node_name: Some(node.into()),
            ip: Some(vtep.into()),
            mac: Some(mac.into()),
            local_ips: Some(local.iter().map(|s| s.to_string()).collect()),
            endpoint_ip_list: Some(endpoints.iter().map(|s| s.to_string()).collect()),
        },
    )
}

/// The fixture's node n1 connected to cluster "b": an overlay subnet per family, an underlay
/// subnet with a range (so it has excluded blocks), one remote node with pods in all three.
fn connected() -> Fixture {
    let mut f = fixture();
    f.api.remote_subnets = vec![
        remote_subnet("b.ov", "198.19.8.0/24", Some(NetworkType::Overlay), None),
        remote_subnet("b.ov6", "fd00:29::/112", Some(NetworkType::Overlay), None),
        remote_subnet(
            "b.ul",
            "198.18.8.0/24",
            None,
            Some(("198.18.8.100", "198.18.8.200")),
        ),
    ];
    f.api.remote_vteps = vec![Arc::new(remote_vtep(
        "b.m1",
        "198.18.0.21",
        "02:00:00:00:00:21",
        &["198.18.0.21", "fd00:18::21"],
        &["198.19.8.5", "fd00:29::5", "198.18.8.100"],
    ))];
    f
}

fn routes(p: &DataPlanePlan, table: u32) -> Vec<String> {
    p.routes_in(table)
        .map(|r| match (r.kind, &r.dev) {
            (RouteKind::Throw, _) => format!("throw {}", r.dst),
            (RouteKind::Unicast, Some(d)) => format!("{} dev {d}", r.dst),
            (RouteKind::Unicast, None) => r.dst.to_string(),
        })
        .collect()
}

fn set_has(p: &DataPlanePlan, set: &str, v: Value) -> bool {
    p.nft.sets[set].elements.contains(&Key::from(v))
}

/// The plan with its problems taken out (bad input must change nothing else).
fn without_problems(mut p: DataPlanePlan) -> DataPlanePlan {
    p.problems.clear();
    p
}

const MAC21: &str = "02:00:00:00:00:21";

#[test]
fn remote_overlay_subnets_go_to_the_to_overlay_table() {
    let p = plan_of(&connected());
    let t = routes(&p, 40000);
    assert!(
        t.contains(&"198.19.8.0/24 dev eth0.vxlan4".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&"fd00:29::/112 dev eth0.vxlan4".to_string()),
        "{t:?}"
    );
    // Underlay ones are not overlay destinations.
    assert!(!t.iter().any(|r| r.contains("198.18.8.")), "{t:?}");
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(
        p.remote_subnets[&cidr("198.19.8.0/24")],
        PlannedRemoteSubnet {
            names: vec!["b.ov".into()],
            cluster: "b".into(),
            network_type: NetworkType::Overlay,
        }
    );
}

#[test]
fn remote_underlay_subnets_go_to_the_nat_subnets_tables_with_their_excluded_blocks() {
    let p = plan_of(&connected());
    let nat = p.subnet_tables[&cidr("198.19.0.0/24")].table;
    let t = routes(&p, nat);
    assert!(
        t.contains(&"198.18.8.0/24 dev eth0.vxlan4".to_string()),
        "{t:?}"
    );
    // Outside 198.18.8.100..200 the addresses are not the remote cluster's pods: thrown.
    for x in [
        "198.18.8.0/26",
        "198.18.8.64/27",
        "198.18.8.96/30",
        "198.18.8.201/32",
    ] {
        assert!(t.contains(&format!("throw {x}")), "{x}: {t:?}");
    }
    // The non-NAT overlay subnet's table sends everything through the VXLAN device already.
    let nonat = p.subnet_tables[&cidr("198.19.1.0/24")].table;
    assert_eq!(routes(&p, nonat), ["0.0.0.0/0 dev eth0.vxlan4"]);
}

#[test]
fn remote_vteps_give_fdb_and_neighbour_entries() {
    let p = plan_of(&connected());
    let m: MacAddr = MAC21.parse().unwrap();
    assert!(p.fdb.contains(&FdbEntry {
        mac: m,
        dst: ip("198.18.0.21")
    }));
    assert!(p.fdb.contains(&FdbEntry {
        mac: MacAddr::VXLAN_BROADCAST,
        dst: ip("198.18.0.21")
    }));
    for a in [
        "198.18.0.21",
        "fd00:18::21",
        "198.19.8.5",
        "fd00:29::5",
        "198.18.8.100",
    ] {
        assert_eq!(p.vxlan_neighbours.get(&ip(a)), Some(&m), "{a}");
        assert_eq!(
            p.remote_owner.get(&ip(a)).map(|o| o.to_string()),
            Some("RemoteVtep/b.m1".to_string()),
            "{a}"
        );
    }
    assert_eq!(
        p.remote_cluster_vteps[&m],
        RemoteVtepRef {
            name: "b.m1".into(),
            cluster: "b".into(),
            node: "m1".into()
        }
    );
    assert_eq!(
        p.remote_node_ips,
        [ip("198.18.0.21"), ip("fd00:18::21")].into_iter().collect()
    );
}

#[test]
fn remote_ranges_are_cluster_addresses_in_the_nft_sets() {
    let p = plan_of(&connected());
    let pre = |s: &str| Value::Prefix(cidr(s));
    assert!(set_has(&p, "all_net4", pre("198.19.8.0/24")));
    assert!(set_has(&p, "all_net4", pre("198.18.8.0/24")));
    assert!(set_has(&p, "all_net6", pre("fd00:29::/112")));
    assert!(set_has(&p, "all_net4", Value::Addr(ip("198.18.0.21"))));
    assert!(set_has(&p, "node_ip4", Value::Addr(ip("198.18.0.21"))));
    assert!(set_has(&p, "node_ip6", Value::Addr(ip("fd00:18::21"))));
    assert!(set_has(&p, "overlay_net4", pre("198.19.8.0/24")));
    assert!(!set_has(&p, "overlay_net4", pre("198.18.8.0/24")));
    // Never NATed as a source here, never a local underlay net.
    for s in ["198.19.8.0/24", "198.18.8.0/24"] {
        assert!(!set_has(&p, "nat_net4", pre(s)), "{s}");
        assert!(!set_has(&p, "local_underlay_net4", pre(s)), "{s}");
        assert!(!set_has(&p, "local_subnet4", pre(s)), "{s}");
    }
    p.nft.validate().unwrap();
}

fn tr(p: &DataPlanePlan, src: &str, dst: &str) -> TraceResult {
    trace(p, &TraceQuery::new(ip(src), ip(dst)))
}

#[test]
fn trace_explains_a_path_to_a_remote_overlay_pod() {
    let p = plan_of(&connected());
    for (src, dst) in [("198.19.0.5", "198.19.8.5"), ("fd00:19::5", "fd00:29::5")] {
        let r = tr(&p, src, dst);
        assert_eq!(r.outcome, Outcome::Forwarded, "{dst}: {:#?}", r.steps);
        assert_eq!(r.rule.as_ref().map(|m| m.table), Some(40000));
        let e = r.encapsulation.as_ref().unwrap();
        assert_eq!(e.remote_vtep, ip("198.18.0.21"));
        assert_eq!(e.remote_node, "m1");
        assert_eq!(e.remote_cluster.as_deref(), Some("b"));
        assert_eq!(e.inner_dst_mac.to_string(), MAC21);
        assert!(!r.masquerade, "{dst}: the source is kept");
        let text = r.steps.join("\n");
        assert!(text.contains("RemoteSubnet b.ov"), "{text}");
        assert!(
            text.contains("(node m1 of cluster b, RemoteVtep/b.m1)"),
            "{text}"
        );
    }
    // Without the RemoteSubnet the same packet leaves by the default route, masqueraded: the
    // remote ranges are what keeps the source.
    let r = tr(&plan_of(&fixture()), "198.19.0.5", "198.19.8.5");
    assert!(r.encapsulation.is_none() && r.masquerade, "{:#?}", r.steps);
}

#[test]
fn trace_to_a_remote_underlay_pod_from_a_nat_overlay_pod_keeps_the_source() {
    let p = plan_of(&connected());
    let r = tr(&p, "198.19.0.5", "198.18.8.100");
    assert_eq!(r.outcome, Outcome::Forwarded, "{:#?}", r.steps);
    assert_eq!(
        r.rule.as_ref().map(|m| m.table),
        Some(p.subnet_tables[&cidr("198.19.0.0/24")].table)
    );
    assert_eq!(
        r.encapsulation.as_ref().unwrap().remote_cluster.as_deref(),
        Some("b")
    );
    assert!(!r.masquerade);
    // An excluded address of the remote underlay subnet is no pod of it: thrown, masqueraded.
    let r = tr(&p, "198.19.0.5", "198.18.8.5");
    assert!(r.encapsulation.is_none() && r.masquerade, "{:#?}", r.steps);
}

#[test]
fn a_remote_pod_reaches_a_local_pod() {
    let p = plan_of(&connected());
    let mut q = TraceQuery::new(ip("198.19.8.5"), ip("198.19.0.5"));
    q.iif = Some("eth0.vxlan4".into());
    let r = trace(&p, &q);
    assert!(
        matches!(r.outcome, Outcome::LocalPod { .. }),
        "{:#?}",
        r.steps
    );
    assert!(!r.masquerade);
}

#[test]
fn removing_the_remote_objects_gives_the_plan_without_them() {
    let base = plan_of(&fixture());
    let mut f = connected();
    assert_ne!(plan_of(&f), base);
    f.api.remote_subnets.clear();
    f.api.remote_vteps.clear();
    assert_eq!(plan_of(&f), base);
    // The VTEP without its subnets: FDB and node entries stay, the pods' entries go.
    let mut f = connected();
    f.api.remote_subnets.clear();
    let p = plan_of(&f);
    assert!(p.vxlan_neighbours.contains_key(&ip("198.18.0.21")));
    assert!(!p.vxlan_neighbours.contains_key(&ip("198.19.8.5")));
    assert!(
        p.problems
            .iter()
            .any(|x| x.object == "RemoteVtep/b.m1" && x.message.contains("3 address(es)")),
        "{:?}",
        p.problems
    );
}

/// `f` plus `bad`: the plan is `f`'s, and one problem names the object and the field.
fn refused(f: &Fixture, bad: impl FnOnce(&mut Fixture), object: &str, says: &str) {
    let before = plan_of(f);
    let mut g = f.clone();
    bad(&mut g);
    let after = plan_of(&g);
    let found: Vec<&PlanProblem> = after
        .problems
        .iter()
        .filter(|p| p.object == object)
        .collect();
    assert!(
        found.iter().any(|p| p.message.contains(says)),
        "{object}: {says:?} not in {:?}",
        after.problems
    );
    assert_eq!(
        without_problems(after),
        without_problems(before),
        "{object}"
    );
}

#[test]
fn malformed_remote_vteps_change_nothing() {
    let f = connected();
    for (name, vtep, mac, says) in [
        (
            "b.m2",
            "198.18.0.22",
            "02:00:00:00:00",
            "spec.mac: \"02:00:00:00:00\" is not a MAC",
        ),
        (
            "b.m2",
            "198.18.0.22",
            "00:00:00:00:00:00",
            "spec.mac: 00:00:00:00:00:00 cannot",
        ),
        (
            "b.m2",
            "198.18.0.22",
            "ff:ff:ff:ff:ff:ff",
            "cannot be a VTEP MAC",
        ),
        (
            "b.m2",
            "198.18.0.300",
            "02:00:00:00:00:22",
            "spec.ip: \"198.18.0.300\" is not",
        ),
        ("b.m2", "", "02:00:00:00:00:22", "spec.ip: missing"),
        (
            "b.m2",
            "fd00:18::22",
            "02:00:00:00:00:22",
            "not of the family of the local VTEP",
        ),
        // Another node's MAC, this node's own VTEP.
        (
            "b.m2",
            "198.18.0.22",
            "02:00:00:00:00:12",
            "already used by n2",
        ),
        ("b.m2", "198.18.0.22", MAC21, "already used by m1"),
        (
            "b.m2",
            "198.18.0.11",
            "02:00:00:00:00:22",
            "this node's own VTEP",
        ),
    ] {
        refused(
            &f,
            |g| {
                g.api.remote_vteps.push(Arc::new(remote_vtep(
                    name,
                    vtep,
                    mac,
                    &[],
                    &["198.19.8.9"],
                )))
            },
            &format!("RemoteVtep/{name}"),
            says,
        );
    }
    // A malformed address in a list refuses the whole object: nothing half-programmed.
    refused(
        &f,
        |g| {
            g.api.remote_vteps.push(Arc::new(remote_vtep(
                "b.m2",
                "198.18.0.22",
                "02:00:00:00:00:22",
                &["198.18.0.22"],
                &["198.19.8.9", "198.19.8.10/24", "x\n"],
            )))
        },
        "RemoteVtep/b.m2",
        "spec.endpointIPList[1]: \"198.19.8.10/24\" is not an IP address; spec.endpointIPList[2]: \"x\\n\"",
    );
}

#[test]
fn remote_addresses_taken_here_are_left_out() {
    let f = connected();
    let mut g = f.clone();
    g.api.remote_vteps = vec![Arc::new(remote_vtep(
        "b.m1",
        "198.18.0.21",
        MAC21,
        &["198.18.0.12"],
        &["198.19.8.5", "198.19.0.5", "198.19.0.6", "203.0.113.9"],
    ))];
    let p = plan_of(&g);
    let says = |s: &str| {
        assert!(
            p.problems
                .iter()
                .any(|x| x.object == "RemoteVtep/b.m1" && x.message.contains(s)),
            "{s}: {:?}",
            p.problems
        )
    };
    // A node address of this cluster, a pod of this node, a pod of n2, an address of no
    // RemoteSubnet.
    says("spec.localIPs: 198.18.0.12 is a node address of this cluster; left out");
    says("spec.endpointIPList: 198.19.0.5 is a pod of this node; left out");
    says("spec.endpointIPList: 198.19.0.6 is also claimed by n2; left out");
    says("1 address(es) outside every programmed RemoteSubnet (first 203.0.113.9)");
    let n2: MacAddr = "02:00:00:00:00:12".parse().unwrap();
    assert_eq!(p.vxlan_neighbours.get(&ip("198.18.0.12")), Some(&n2));
    assert_eq!(p.vxlan_neighbours.get(&ip("198.19.0.6")), Some(&n2));
    assert!(!p.vxlan_neighbours.contains_key(&ip("198.19.0.5")));
    assert!(!p.vxlan_neighbours.contains_key(&ip("203.0.113.9")));
    assert!(p.vxlan_neighbours.contains_key(&ip("198.19.8.5")));
}

#[test]
fn remote_subnets_overlapping_local_ones_change_nothing() {
    let f = connected();
    for (rs, says) in [
        // Inside the local overlay subnet's range.
        (
            remote_subnet("c.x", "198.19.0.0/25", Some(NetworkType::Overlay), None),
            "overlaps local subnet \"ov4\"",
        ),
        // The local underlay subnet's CIDR, another part of it: no shared address, one CIDR.
        (
            remote_subnet(
                "c.x",
                "198.18.0.0/24",
                None,
                Some(("198.18.0.10", "198.18.0.50")),
            ),
            "spec.range.cidr: 198.18.0.0/24 is also the CIDR of local subnet \"ul4\"",
        ),
        // Another cluster's RemoteSubnet, and another of one CIDR.
        (
            remote_subnet("c.x", "198.19.8.128/25", Some(NetworkType::Overlay), None),
            "overlaps remote subnet \"b.ov\" of cluster \"b\"",
        ),
        (
            remote_subnet(
                "c.x",
                "198.18.8.0/24",
                None,
                Some(("198.18.8.10", "198.18.8.20")),
            ),
            "is also the CIDR of RemoteSubnet \"b.ul\" (cluster \"b\"",
        ),
        // Malformed.
        (
            remote_subnet("c.x", "198.19.9.0/33", Some(NetworkType::Overlay), None),
            "spec.range.cidr",
        ),
        (
            remote_subnet(
                "c.x",
                "198.19.9.0/24",
                Some(NetworkType::Overlay),
                Some(("198.19.9.200", "198.19.9.100")),
            ),
            "spec.range",
        ),
    ] {
        refused(
            &f,
            |g| {
                let mut rs = rs;
                // Younger than the others: the conflict is its own.
                rs.metadata.creation_timestamp = Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(2_000_000_000).unwrap(),
                ));
                g.api.remote_subnets.push(rs);
            },
            "RemoteSubnet/c.x",
            says,
        );
    }
}

#[test]
fn of_two_overlapping_remote_subnets_the_older_stays() {
    let t = |s| Some(Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
    let mut f = connected();
    let mut young = remote_subnet("a.ov", "198.19.8.0/25", Some(NetworkType::Overlay), None);
    young.metadata.creation_timestamp = t(2_000_000_000);
    for r in &mut f.api.remote_subnets {
        r.metadata.creation_timestamp = t(1_000_000_000);
    }
    f.api.remote_subnets.insert(0, young);
    let p = plan_of(&f);
    assert!(p.remote_subnets.contains_key(&cidr("198.19.8.0/24")));
    assert!(!p.remote_subnets.contains_key(&cidr("198.19.8.0/25")));
    assert!(
        p.problems
            .iter()
            .any(|x| x.object == "RemoteSubnet/a.ov" && x.message.contains("\"b.ov\"")),
        "{:?}",
        p.problems
    );
}

#[test]
fn one_clusters_subnets_of_one_cidr_are_merged() {
    let mut f = connected();
    f.api.remote_subnets.push(remote_subnet(
        "b.ul2",
        "198.18.8.0/24",
        None,
        Some(("198.18.8.10", "198.18.8.20")),
    ));
    let p = plan_of(&f);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(
        p.remote_subnets[&cidr("198.18.8.0/24")].names,
        ["b.ul", "b.ul2"]
    );
    let nat = p.subnet_tables[&cidr("198.19.0.0/24")].table;
    let t = routes(&p, nat);
    // 198.18.8.10..20 is a pod range now: not thrown any more.
    assert!(!t.contains(&"throw 198.18.8.0/26".to_string()), "{t:?}");
    assert!(t.contains(&"throw 198.18.8.0/29".to_string()), "{t:?}");
}

#[test]
fn without_a_vxlan_device_remote_objects_program_nothing_but_are_still_checked() {
    let mut f = connected();
    f.api
        .networks
        .retain(|n| n.spec.network_type != Some(NetworkType::Overlay));
    f.api.subnets.retain(|s| s.spec.network != "overlay");
    f.api.ip_instances.retain(|i| i.spec.network != "overlay");
    f.api.remote_vteps.push(Arc::new(remote_vtep(
        "b.bad",
        "198.18.0.22",
        "nope",
        &[],
        &[],
    )));
    let p = plan_of(&f);
    assert!(p.vxlan.is_none());
    assert!(p.fdb.is_empty() && p.vxlan_neighbours.is_empty());
    assert!(!p.routes.iter().any(|r| r.dst == cidr("198.19.8.0/24")));
    assert!(p.problems.iter().any(|x| x.object == "RemoteVtep/b.bad"));
}

fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut s = seed | 1;
    for i in (1..out.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.swap(i, (s % (i as u64 + 1)) as usize);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any set of remote nodes with any of the remote pods, in any order: the plan does not
    /// depend on the order, every remote entry belongs to a RemoteVtep that lists it, and taking
    /// the remote objects away gives the plan without them (nothing stale).
    #[test]
    fn remote_entries_follow_the_objects(
        nodes in proptest::collection::btree_map(1u8..40, proptest::collection::btree_set(1u8..250, 0..6), 0..6),
        seed in any::<u64>(),
    ) {
        let mut f = connected();
        f.api.remote_vteps = nodes
            .iter()
            .map(|(n, pods)| {
                let eps: Vec<String> = pods.iter().map(|p| format!("198.19.8.{p}")).collect();
                let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
                Arc::new(remote_vtep(
                    &format!("b.m{n}"),
                    &format!("198.18.1.{n}"),
                    &format!("02:00:00:00:01:{n:02x}"),
                    &[],
                    &eps,
                ))
            })
            .collect();
        let p = plan_of(&f);
        let mut g = f.clone();
        g.api.remote_vteps = shuffled(&g.api.remote_vteps, seed);
        g.api.remote_subnets = shuffled(&g.api.remote_subnets, seed >> 7);
        prop_assert_eq!(&p, &plan_of(&g));
        for (ip, mac) in &p.vxlan_neighbours {
            let Some(r) = p.remote_cluster_vteps.get(mac) else { continue };
            let v = f.api.remote_vteps.iter().find(|v| v.metadata.name.as_deref() == Some(r.name.as_str())).unwrap();
            let listed = v.spec.endpoint_ip_list.iter().flatten().chain(v.spec.ip.iter()).any(|s| s == &ip.to_string());
            prop_assert!(listed, "{} -> {} not listed by {}", ip, mac, r.name);
        }
        // A pod address listed by two nodes belongs to the first by name; every listed one is programmed.
        for (n, pods) in &nodes {
            for pod in pods {
                prop_assert!(p.vxlan_neighbours.contains_key(&ip(&format!("198.19.8.{pod}"))), "m{} pod {}", n, pod);
            }
            let entry = FdbEntry { mac: format!("02:00:00:00:01:{n:02x}").parse().unwrap(), dst: ip(&format!("198.18.1.{n}")) };
            prop_assert!(p.fdb.contains(&entry), "no FDB entry for m{}", n);
        }
        g.api.remote_vteps.clear();
        g.api.remote_subnets.clear();
        prop_assert_eq!(plan_of(&g), plan_of(&fixture()));
    }
}

//! Unit and property tests of the planner and `trace`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hybridnet_api::constants::label;
use hybridnet_api::ipmath::Cidr;
use hybridnet_api::naming::host_veth_name;
use hybridnet_api::v1::*;
use proptest::prelude::*;

use super::*;

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn cidr(s: &str) -> Cidr {
    Cidr::parse_canonical(s).unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

pub(crate) fn network(
    name: &str,
    ty: NetworkType,
    mode: Option<NetworkMode>,
    net_id: Option<i32>,
    nodes: &[&str],
) -> Network {
    let mut n = Network::new(
        name,
        NetworkSpec {
            node_selector: None,
            net_id,
            network_type: Some(ty),
            mode,
            config: None,
        },
    );
    n.status = Some(NetworkStatus {
        node_list: Some(nodes.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    });
    n
}

pub(crate) fn subnet(
    name: &str,
    net: &str,
    cidr: &str,
    gw: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            network: net.into(),
            net_id: None,
            range: AddressRange {
                version: if cidr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                cidr: cidr.into(),
                start: start.map(Into::into),
                end: end.map(Into::into),
                gateway: gw.map(Into::into),
                reserved_ips: None,
                exclude_ips: None,
            },
            config: None,
        },
    )
}

pub(crate) fn ipinstance(
    ns: &str,
    pod: &str,
    addr: &str,
    net: &str,
    sub: &str,
    node: &str,
) -> IPInstance {
    let mut i = IPInstance::new(
        &hybridnet_api::naming::ip_to_instance_name(ip(addr)),
        IPInstanceSpec {
            network: net.into(),
            subnet: sub.into(),
            address: Address {
                version: if addr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                ip: addr.into(),
                gateway: None,
                net_id: None,
                mac: "02:aa:00:00:00:01".into(),
            },
            binding: Binding {
                node_name: Some(node.into()),
                pod_name: Some(pod.into()),
                ..Default::default()
            },
        },
    );
    i.metadata.namespace = Some(ns.into());
    i.metadata.labels = Some(BTreeMap::from([(
        label::NODE.to_string(),
        node.to_string(),
    )]));
    i
}

/// Shares the objects as the watch caches do.
pub(crate) fn arcs<T>(v: Vec<T>) -> Vec<Arc<T>> {
    v.into_iter().map(Arc::new).collect()
}

pub(crate) fn nodeinfo(name: &str, vtep: &str, m: &str, local: &[&str]) -> NodeInfo {
    NodeInfo::new(
        name,
        NodeInfoSpec {
            vtep_info: Some(VtepInfo {
                ip: Some(vtep.into()),
                mac: Some(m.into()),
                local_ips: Some(local.iter().map(|s| s.to_string()).collect()),
            }),
        },
    )
}

pub(crate) fn iface(name: &str, index: u32, m: Option<&str>, addrs: &[&str]) -> HostInterface {
    HostInterface {
        name: name.into(),
        index,
        mac: m.map(mac),
        mtu: 1500,
        up: true,
        addresses: addrs
            .iter()
            .map(|a| {
                let (i, p) = a.split_once('/').unwrap();
                HostAddress {
                    ip: ip(i),
                    prefix: p.parse().unwrap(),
                    noprefixroute: false,
                }
            })
            .collect(),
    }
}

/// Node n1 of a three-node cluster: overlay (VNI 4, one NAT and one non-NAT v4 subnet, one v6
/// subnet) and an untagged VLAN underlay in the node's own subnet.
#[derive(Clone, Debug)]
pub(crate) struct Fixture {
    pub api: ApiState,
    pub host: HostState,
    pub cfg: PlanConfig,
}

pub(crate) fn fixture() -> Fixture {
    let mut nonat = subnet("ov-nonat", "overlay", "198.19.1.0/24", None, None, None);
    nonat.spec.config = Some(SubnetConfig {
        auto_nat_outgoing: Some(false),
        ..Default::default()
    });
    let api = ApiState {
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
                Some(0),
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
            ipinstance("default", "a", "198.19.0.5", "overlay", "ov4", "n1"),
            ipinstance("default", "a", "fd00:19::5", "overlay", "ov6", "n1"),
            ipinstance("default", "c", "198.19.0.6", "overlay", "ov4", "n2"),
            ipinstance("default", "c", "fd00:19::6", "overlay", "ov6", "n2"),
            ipinstance("default", "b", "198.18.0.100", "underlay", "ul4", "n1"),
            ipinstance("default", "d", "198.18.0.101", "underlay", "ul4", "n2"),
            ipinstance("default", "e", "198.19.1.7", "overlay", "ov-nonat", "n1"),
            ipinstance("default", "f", "198.19.0.8", "overlay", "ov4", "n3"),
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
    };
    let host = HostState {
        interfaces: vec![
            iface("lo", 1, None, &["127.0.0.1/8"]),
            iface(
                "eth0",
                2,
                Some("02:00:00:00:00:11"),
                &["198.18.0.11/24", "fd00:18::11/64"],
            ),
            iface(
                &host_veth_name("default", "a"),
                10,
                Some("ee:ee:ee:ee:ee:ee"),
                &[],
            ),
            iface(
                &host_veth_name("default", "b"),
                11,
                Some("ee:ee:ee:ee:ee:ee"),
                &[],
            ),
            iface(
                &host_veth_name("default", "e"),
                12,
                Some("ee:ee:ee:ee:ee:ee"),
                &[],
            ),
        ],
        main_routes: vec![
            HostRoute {
                dst: cidr("0.0.0.0/0"),
                gateway: Some(ip("198.18.0.1")),
                dev: Some("eth0".into()),
                src: None,
            },
            HostRoute {
                dst: cidr("198.18.0.0/24"),
                gateway: None,
                dev: Some("eth0".into()),
                src: Some(ip("198.18.0.11")),
            },
            HostRoute {
                dst: cidr("::/0"),
                gateway: Some(ip("fd00:18::1")),
                dev: Some("eth0".into()),
                src: None,
            },
            HostRoute {
                dst: cidr("fd00:18::/64"),
                gateway: None,
                dev: Some("eth0".into()),
                src: None,
            },
        ],
        existing_subnet_tables: BTreeMap::new(),
        foreign_tables: BTreeSet::new(),
        ipv6_enabled: true,
    };
    Fixture {
        api,
        host,
        cfg: PlanConfig::default(),
    }
}

fn plan_of(f: &Fixture) -> DataPlanePlan {
    build_plan(&f.api, &f.host, &f.cfg)
}

fn routes_text(p: &DataPlanePlan, table: u32) -> Vec<String> {
    p.routes_in(table)
        .map(|r| {
            let mut s = match r.kind {
                RouteKind::Throw => format!("throw {}", r.dst),
                RouteKind::Unicast => r.dst.to_string(),
            };
            if let Some(v) = r.via {
                s += &format!(" via {v}");
            }
            if let Some(d) = &r.dev {
                s += &format!(" dev {d}");
            }
            if r.scope_link {
                s += " scope link";
            }
            if let Some(x) = r.src {
                s += &format!(" src {x}");
            }
            s
        })
        .collect()
}

fn table_of(p: &DataPlanePlan, c: &str) -> u32 {
    p.subnet_tables[&cidr(c)].table
}

#[test]
fn mac_parse_and_print() {
    assert_eq!(mac("02:00:00:0A:bc:11").to_string(), "02:00:00:0a:bc:11");
    for bad in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "zz:00:00:00:00:00",
        "002:00:00:00:00:00",
        "02::00:00:00:00",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
    }
}

#[test]
fn rules_have_fixed_priorities_per_family() {
    let p = plan_of(&fixture());
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let v4: Vec<_> = p.rules_of(IpVersion::V4).cloned().collect();
    let t_ov4 = table_of(&p, "198.19.0.0/24");
    let t_nonat = table_of(&p, "198.19.1.0/24");
    let t_ul4 = table_of(&p, "198.18.0.0/24");
    let mut expect = vec![
        PolicyRule {
            family: IpVersion::V4,
            priority: 1000,
            table: 39999,
            src: None,
            fwmark: None,
        },
        PolicyRule {
            family: IpVersion::V4,
            priority: 1001,
            table: 40000,
            src: None,
            fwmark: None,
        },
        PolicyRule {
            family: IpVersion::V4,
            priority: 1002,
            table: 40001,
            src: None,
            fwmark: Some((0x20, 0x20)),
        },
    ];
    for (c, t) in [
        ("198.19.0.0/24", t_ov4),
        ("198.19.1.0/24", t_nonat),
        ("198.18.0.0/24", t_ul4),
    ] {
        expect.push(PolicyRule {
            family: IpVersion::V4,
            priority: 1003,
            table: t,
            src: Some(cidr(c)),
            fwmark: Some((0, 0x4040)),
        });
    }
    expect.sort();
    assert_eq!(v4, expect);
    assert_eq!(p.rules_of(IpVersion::V6).count(), 5);
    // Tables are numbered from 10000 in CIDR order on a fresh node.
    let mut tables: Vec<u32> = p.subnet_tables.values().map(|t| t.table).collect();
    tables.sort();
    assert_eq!(tables, [10000, 10001, 10002, 10003, 10004]);
}

#[test]
fn overlay_tables() {
    let p = plan_of(&fixture());
    assert_eq!(
        routes_text(&p, 40000),
        [
            "198.19.0.0/24 dev eth0.vxlan4",
            "198.19.1.0/24 dev eth0.vxlan4",
            "fd00:19::/112 dev eth0.vxlan4"
        ]
    );
    // Overlay subnets without gateway/start/end have no exclude blocks.
    assert!(routes_text(&p, 40000).iter().all(|r| !r.contains("throw")));
    assert_eq!(
        routes_text(&p, 40001),
        ["0.0.0.0/0 dev eth0.vxlan4", "::/0 dev eth0.vxlan4"]
    );
}

#[test]
fn vxlan_nat_table_routes_underlay_via_vxlan_and_throws_excludes() {
    let p = plan_of(&fixture());
    let t = routes_text(&p, table_of(&p, "198.19.0.0/24"));
    assert!(
        t.contains(&"198.18.0.0/24 dev eth0.vxlan4".to_string()),
        "{t:?}"
    );
    // Gateway and everything outside .100-.200 is thrown to the main table.
    for x in [
        "throw 198.18.0.0/26",
        "throw 198.18.0.64/27",
        "throw 198.18.0.96/30",
        "throw 198.18.0.201/32",
        "throw 198.18.0.224/27",
    ] {
        assert!(t.contains(&x.to_string()), "{x} missing in {t:?}");
    }
    assert!(
        !t.iter().any(|r| r.starts_with("0.0.0.0/0")),
        "NAT subnet has no default route: {t:?}"
    );
    assert_eq!(
        routes_text(&p, table_of(&p, "198.19.1.0/24")),
        ["0.0.0.0/0 dev eth0.vxlan4"]
    );
    let t6 = routes_text(&p, table_of(&p, "fd00:19::/112"));
    assert!(
        t6.contains(&"fd00:18::/112 dev eth0.vxlan4".to_string()),
        "{t6:?}"
    );
}

#[test]
fn vlan_id_zero_uses_the_parent_and_copies_the_node_source() {
    let p = plan_of(&fixture());
    assert_eq!(
        routes_text(&p, table_of(&p, "198.18.0.0/24")),
        [
            "0.0.0.0/0 via 198.18.0.1 dev eth0",
            "198.18.0.0/24 dev eth0 scope link src 198.18.0.11"
        ]
    );
    assert_eq!(
        p.vlan_links,
        BTreeSet::from([VlanLink {
            name: "eth0".into(),
            parent: "eth0".into(),
            id: 0
        }])
    );
    assert!(p.underlay_interfaces.contains("eth0"));
}

#[test]
fn tagged_vlan_gets_a_sub_interface() {
    let mut f = fixture();
    f.api.networks[1].spec.net_id = Some(30);
    f.host
        .interfaces
        .push(iface("eth0.30", 3, Some("02:00:00:00:00:11"), &[]));
    let p = plan_of(&f);
    assert!(p.vlan_links.contains(&VlanLink {
        name: "eth0.30".into(),
        parent: "eth0".into(),
        id: 30
    }));
    assert_eq!(
        routes_text(&p, table_of(&p, "198.18.0.0/24")),
        [
            "0.0.0.0/0 via 198.18.0.1 dev eth0.30",
            "198.18.0.0/24 dev eth0.30 scope link"
        ]
    );
    assert!(p.proxy_neighbours.contains(&ProxyNeighbour {
        dev: "eth0.30".into(),
        ip: ip("198.18.0.100")
    }));
    // A subnet netID overrides the network's.
    f.api.subnets[3].spec.net_id = Some(31);
    let p = plan_of(&f);
    assert!(p.vlan_links.iter().any(|l| l.name == "eth0.31"));
}

#[test]
fn hostile_vlan_ids_and_names_are_reported() {
    let mut f = fixture();
    f.api.networks[1].spec.net_id = Some(5000);
    let p = plan_of(&f);
    assert!(
        p.problems.iter().any(|x| x.message.contains("VLAN id")),
        "{:?}",
        p.problems
    );
    assert!(!p.subnet_tables.contains_key(&cidr("198.18.0.0/24")));
    // Everything else is still planned.
    assert!(p.subnet_tables.contains_key(&cidr("198.19.0.0/24")));
    f.api.networks[1].spec.net_id = Some(-1);
    assert!(
        plan_of(&f)
            .problems
            .iter()
            .any(|x| x.message.contains("VLAN id"))
    );
    let mut f = fixture();
    f.cfg.prefer_vlan_interfaces = vec!["averyverylongnic".into()];
    f.host
        .interfaces
        .push(iface("averyverylongnic", 9, Some("02:00:00:00:00:99"), &[]));
    f.api.networks[1].spec.net_id = Some(100);
    assert!(
        plan_of(&f)
            .problems
            .iter()
            .any(|x| x.message.contains("VLAN id"))
    );
}

#[test]
fn vxlan_device_fdb_and_neighbours() {
    let p = plan_of(&fixture());
    let vx = p.vxlan.clone().unwrap();
    assert_eq!(vx.name, "eth0.vxlan4");
    assert_eq!(vx.vni, 4);
    assert_eq!(vx.parent, "eth0");
    assert_eq!(vx.local, ip("198.18.0.11"));
    assert_eq!(vx.port, 8472);
    assert_eq!(vx.mac, mac("02:00:00:00:00:11"));
    assert_eq!(vx.mtu, 1450);
    let fdb: Vec<String> = p
        .fdb
        .iter()
        .map(|e| format!("{} {}", e.mac, e.dst))
        .collect();
    assert_eq!(
        fdb,
        [
            "02:00:00:00:00:12 198.18.0.12",
            "02:00:00:00:00:13 198.18.0.13",
            "ff:ff:ff:ff:ff:f1 198.18.0.12",
            "ff:ff:ff:ff:ff:f1 198.18.0.13"
        ]
    );
    assert!(p.fdb.iter().all(|e| !e.mac.is_zero()));
    assert!(p.fdb_prune);
    let n: Vec<String> = p
        .vxlan_neighbours
        .iter()
        .map(|(i, m)| format!("{i} {m}"))
        .collect();
    assert_eq!(
        n,
        [
            "198.18.0.12 02:00:00:00:00:12",
            "198.18.0.13 02:00:00:00:00:13",
            "198.18.0.101 02:00:00:00:00:12",
            "198.19.0.6 02:00:00:00:00:12",
            "198.19.0.8 02:00:00:00:00:13",
            "fd00:18::12 02:00:00:00:00:12",
            "fd00:19::6 02:00:00:00:00:12"
        ]
    );
    assert_eq!(
        p.published_vtep,
        Some(PublishedVtep {
            ip: ip("198.18.0.11"),
            mac: mac("02:00:00:00:00:11"),
            local_ips: vec![ip("198.18.0.11"), ip("fd00:18::11")]
        })
    );
    assert_eq!(
        p.vxlan_addresses,
        BTreeSet::from([ip("198.18.0.11"), ip("fd00:18::11")])
    );
}

#[test]
fn fdb_pruning_waits_for_every_overlay_node() {
    let mut f = fixture();
    f.api.node_infos.pop();
    let p = plan_of(&f);
    assert!(!p.fdb_prune);
    assert_eq!(p.fdb.len(), 2);
}

#[test]
fn proxy_entries() {
    let p = plan_of(&fixture());
    let got: Vec<String> = p
        .proxy_neighbours
        .iter()
        .map(|x| format!("{} {}", x.dev, x.ip))
        .collect();
    assert_eq!(
        got,
        [
            "eth0 198.18.0.100",
            "eth0.vxlan4 198.18.0.100",
            "eth0.vxlan4 198.19.0.5",
            "eth0.vxlan4 198.19.1.7",
            "eth0.vxlan4 fd00:19::5"
        ]
    );
    assert_eq!(
        p.sysctls
            .get("net/ipv6/conf/eth0.vxlan4/proxy_ndp")
            .map(String::as_str),
        Some("1")
    );
}

#[test]
fn local_direct_routes_only_for_existing_veths() {
    let mut f = fixture();
    let p = plan_of(&f);
    let veth_a = host_veth_name("default", "a");
    assert!(routes_text(&p, 39999).contains(&format!("198.19.0.5/32 dev {veth_a} scope link")));
    assert!(routes_text(&p, 39999).contains(&format!("fd00:19::5/128 dev {veth_a} scope link")));
    assert_eq!(p.routes_in(39999).count(), 4);
    f.host.interfaces.retain(|i| i.name != veth_a);
    assert_eq!(plan_of(&f).routes_in(39999).count(), 2);
}

#[test]
fn an_address_that_moved_to_another_node_is_remote_even_while_the_old_veth_exists() {
    // A KubeVirt VM's address: its source pod "a" (veth still here) and, after the live
    // migration, the IPInstance bound to the target pod on n2.
    let mut f = fixture();
    let p = plan_of(&f);
    assert!(p.remote_pod_ips.contains(&ip("198.19.0.6")), "pods of n2");
    assert!(
        p.remote_pod_ips.contains(&ip("198.18.0.101")),
        "underlay pods too"
    );
    assert!(
        !p.remote_pod_ips.contains(&ip("198.19.0.5")),
        "a pod of this node"
    );
    for i in f.api.ip_instances.iter_mut() {
        if i.spec.address.ip == "198.19.0.5" {
            let mut moved = (**i).clone();
            moved.spec.binding.node_name = Some("n2".into());
            moved.spec.binding.pod_name = Some("a-target".into());
            moved
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(label::NODE.into(), "n2".into());
            *i = std::sync::Arc::new(moved);
        }
    }
    let p = plan_of(&f);
    assert!(p.remote_pod_ips.contains(&ip("198.19.0.5")));
    assert!(!p.local_pods.contains_key(&ip("198.19.0.5")));
    let veth_a = host_veth_name("default", "a");
    assert!(
        !routes_text(&p, 39999).contains(&format!("198.19.0.5/32 dev {veth_a} scope link")),
        "{:?}",
        routes_text(&p, 39999)
    );
    // The overlay neighbour now points at n2.
    assert!(p.vxlan_neighbours.contains_key(&ip("198.19.0.5")));
    assert_eq!(
        p.remote_owner
            .get(&ip("198.19.0.5"))
            .map(|o| o.to_string())
            .as_deref(),
        Some("n2")
    );
}

#[test]
fn sysctls() {
    let p = plan_of(&fixture());
    for (k, v) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/eth0/rp_filter", "0"),
        ("net/ipv4/conf/eth0.vxlan4/rp_filter", "0"),
        ("net/ipv4/conf/all/arp_filter", "0"),
    ] {
        assert_eq!(p.sysctls.get(k).map(String::as_str), Some(v), "{k}");
    }
    // Pod veths are the CNI path's business.
    assert!(!p.sysctls.keys().any(|k| k.contains("hybr")));
}

#[test]
fn no_ipv6_when_disabled() {
    let mut f = fixture();
    f.host.ipv6_enabled = false;
    let p = plan_of(&f);
    assert!(p.rules.iter().all(|r| r.family == IpVersion::V4));
    assert!(p.routes.iter().all(|r| r.dst.version == IpVersion::V4));
    assert!(!p.nft.transaction().contains("ip6 "));
    assert!(!p.sysctls.keys().any(|k| k.starts_with("net/ipv6")));
}

#[test]
fn existing_tables_are_kept_and_foreign_ones_skipped() {
    let mut f = fixture();
    f.host.existing_subnet_tables = BTreeMap::from([
        (cidr("198.19.1.0/24"), 10007),
        (cidr("203.0.113.0/24"), 10000),
    ]);
    f.host.foreign_tables = BTreeSet::from([10001]);
    let p = plan_of(&f);
    assert_eq!(table_of(&p, "198.19.1.0/24"), 10007);
    let used: BTreeSet<u32> = p.subnet_tables.values().map(|t| t.table).collect();
    assert!(
        !used.contains(&10000),
        "stale table is not reused while it may hold routes"
    );
    assert!(!used.contains(&10001), "foreign table is never used");
    assert_eq!(used.len(), 5);
}

#[test]
fn table_exhaustion_is_reported() {
    let mut f = fixture();
    f.cfg.tables.subnet_first = 10000;
    f.cfg.tables.subnet_last = 10001;
    let p = plan_of(&f);
    assert_eq!(p.subnet_tables.len(), 2);
    assert!(
        p.problems
            .iter()
            .any(|x| x.message.contains("no free routing table"))
    );
}

fn bgp_fixture() -> Fixture {
    let mut f = fixture();
    let mut bgp = network(
        "bgpnet",
        NetworkType::Underlay,
        Some(NetworkMode::Bgp),
        Some(65001),
        &["n1"],
    );
    bgp.spec.config = Some(NetworkConfig {
        bgp_peers: Some(vec![
            BgpPeer {
                asn: 65000,
                address: "198.18.0.1".into(),
                ..Default::default()
            },
            BgpPeer {
                asn: 65000,
                address: "198.18.0.2".into(),
                does_not_route_traffic: Some(true),
                ..Default::default()
            },
        ]),
    });
    f.api.networks.push(bgp);
    f.api
        .networks
        .push(network("global", NetworkType::GlobalBgp, None, None, &[]));
    f.api
        .subnets
        .push(subnet("bgp4", "bgpnet", "198.20.0.0/24", None, None, None));
    f.api
        .subnets
        .push(subnet("bgp6", "bgpnet", "fd00:20::/112", None, None, None));
    f.api
        .subnets
        .push(subnet("g4", "global", "198.20.1.0/24", None, None, None));
    f.api.ip_instances.push(Arc::new(ipinstance(
        "default",
        "g",
        "198.20.0.9",
        "bgpnet",
        "bgp4",
        "n1",
    )));
    f
}

#[test]
fn bgp_tables_default_via_the_routing_peer() {
    let f = bgp_fixture();
    let p = plan_of(&f);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(
        routes_text(&p, table_of(&p, "198.20.0.0/24")),
        ["0.0.0.0/0 via 198.18.0.1 dev eth0"]
    );
    // GlobalBGP: the node is attached to a BGP network.
    assert_eq!(
        routes_text(&p, table_of(&p, "198.20.1.0/24")),
        ["0.0.0.0/0 via 198.18.0.1 dev eth0"]
    );
    // No v6 peer: the main table's v6 default route is copied.
    assert_eq!(
        routes_text(&p, table_of(&p, "fd00:20::/112")),
        ["::/0 via fd00:18::1 dev eth0"]
    );
    // BGP pods get no proxy entries on the BGP interface (only the VXLAN identity).
    assert!(
        p.proxy_neighbours
            .iter()
            .filter(|x| x.ip == ip("198.20.0.9"))
            .all(|x| x.dev == "eth0.vxlan4")
    );
    assert!(p.underlay_interfaces.contains("eth0"));
}

#[test]
fn bgp_table_copies_a_device_only_default_route() {
    // A point-to-point uplink's default route has no gateway: the v6 table (no v6 peer) copies
    // it as it is instead of leaving the subnet without a way out.
    let mut f = bgp_fixture();
    for r in &mut f.host.main_routes {
        if r.dst.version == IpVersion::V6 && r.dst.prefix == 0 {
            r.gateway = None;
        }
    }
    let p = plan_of(&f);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(
        routes_text(&p, table_of(&p, "fd00:20::/112")),
        ["::/0 dev eth0"]
    );
}

#[test]
fn bgp_with_two_routing_peers_is_refused() {
    let mut f = bgp_fixture();
    let peers = f.api.networks[2]
        .spec
        .config
        .as_mut()
        .unwrap()
        .bgp_peers
        .as_mut()
        .unwrap();
    peers[1].does_not_route_traffic = None;
    let p = plan_of(&f);
    assert!(
        p.problems
            .iter()
            .any(|x| x.message.contains("more than one BGP peer"))
    );
    assert!(!p.subnet_tables.contains_key(&cidr("198.20.0.0/24")));
}

#[test]
fn bgp_network_without_this_node_gets_no_table() {
    let mut f = bgp_fixture();
    f.api.networks[2].status = None;
    let p = plan_of(&f);
    assert!(!p.subnet_tables.contains_key(&cidr("198.20.0.0/24")));
    assert!(!p.subnet_tables.contains_key(&cidr("198.20.1.0/24")));
}

#[test]
fn hostile_api_objects_are_reported_and_skipped() {
    let mut f = fixture();
    f.api.node_infos.push(Arc::new(nodeinfo(
        "bad1",
        "not-an-ip",
        "02:00:00:00:00:99",
        &[],
    )));
    f.api
        .node_infos
        .push(Arc::new(nodeinfo("bad2", "198.18.0.99", "zz:zz", &[])));
    f.api.node_infos.push(Arc::new(nodeinfo(
        "bad3",
        "198.18.0.98",
        "00:00:00:00:00:00",
        &[],
    )));
    f.api.node_infos.push(Arc::new(nodeinfo(
        "bad4",
        "198.18.0.97",
        "02:00:00:00:00:12",
        &["x"],
    )));
    let mut bad_ip = ipinstance("default", "x", "198.19.0.77", "overlay", "ov4", "n2");
    bad_ip.spec.address.ip = "198.19.0.300".into();
    f.api.ip_instances.push(Arc::new(bad_ip));
    f.api.subnets.push(subnet(
        "broken",
        "overlay",
        "198.21.0.1/24",
        None,
        None,
        None,
    ));
    f.api.subnets.push(subnet(
        "orphan",
        "nonexistent",
        "198.22.0.0/24",
        None,
        None,
        None,
    ));
    let p = plan_of(&f);
    let objs: BTreeSet<&str> = p.problems.iter().map(|x| x.object.as_str()).collect();
    for o in [
        "NodeInfo/bad1",
        "NodeInfo/bad2",
        "NodeInfo/bad3",
        "NodeInfo/bad4",
        "IPInstance/default/198-19-0-77",
        "Subnet/broken",
        "Subnet/orphan",
    ] {
        assert!(objs.contains(o), "{o} not reported: {:?}", p.problems);
    }
    // The good part of the plan is unchanged.
    let clean = plan_of(&fixture());
    assert_eq!(p.rules, clean.rules);
    assert_eq!(p.fdb, clean.fdb);
    assert_eq!(p.vxlan_neighbours, clean.vxlan_neighbours);
}

#[test]
fn overlay_vni_out_of_range_means_no_vxlan() {
    for bad in [Some(0), Some(16_777_216), None, Some(-4)] {
        let mut f = fixture();
        f.api.networks[0].spec.net_id = bad;
        let p = plan_of(&f);
        assert!(p.vxlan.is_none());
        assert!(
            p.problems.iter().any(|x| x.message.contains("VNI")),
            "{bad:?}"
        );
        assert_eq!(p.routes_in(40000).count(), 0);
    }
}

#[test]
fn missing_interfaces_are_reported() {
    let mut f = fixture();
    f.cfg.prefer_vxlan_interfaces = vec!["nope0".into(), "nope1".into()];
    let p = plan_of(&f);
    assert!(p.vxlan.is_none());
    assert!(p.problems.iter().any(|x| x.message.contains("nope0")));
    let mut f = fixture();
    f.host.main_routes.clear();
    let p = plan_of(&f);
    assert!(
        p.problems
            .iter()
            .any(|x| x.message.contains("no default route"))
    );
}

#[test]
fn vxlan_name_too_long_is_reported() {
    let mut f = fixture();
    f.host.interfaces.push(iface(
        "enp0s31f6",
        5,
        Some("02:00:00:00:00:31"),
        &["198.18.1.11/24"],
    ));
    f.cfg.prefer_vxlan_interfaces = vec!["enp0s31f6".into()];
    let p = plan_of(&f);
    assert!(p.vxlan.is_none());
    assert!(
        p.problems
            .iter()
            .any(|x| x.message.contains("longer than 15"))
    );
}

#[test]
fn nft_ruleset() {
    let p = plan_of(&fixture());
    let s = &p.nft.transaction();
    assert!(s.starts_with(
        "table inet hybridnet\ndelete table inet hybridnet\ntable inet hybridnet {\n"
    ));
    for line in [
        "oifname \"hybr*\" return",
        "oifname != \"eth0.vxlan4\" ip saddr @nat_net4 masquerade",
        "oifname != \"eth0.vxlan4\" ip6 saddr @nat_net6 masquerade",
        "oifname \"eth0.vxlan4\" ip daddr != @all_net4 ct state != { established, related } reject with icmp type host-unreachable",
        "iifname { \"eth0\" } meta mark & 0x4000 != 0x4000 ip daddr != @local_pod_ip4 ip daddr @local_underlay_net4 drop",
        "ct original ip daddr @local_node_ip4 return",
        "meta mark set meta mark | 0x20",
        "ct status dnat ct reply ip saddr @local_subnet4 meta mark set meta mark | 0x40",
        "meta mark set meta mark & 0xffffffdf",
    ] {
        assert!(s.contains(line), "missing {line:?} in\n{s}");
    }
    let set = |n: &str| p.nft.set_elements(n);
    assert_eq!(set("nat_net4"), ["198.19.0.0/24"]);
    assert_eq!(set("overlay_net4"), ["198.19.0.0/24", "198.19.1.0/24"]);
    assert_eq!(
        set("local_pod_ip4"),
        ["198.18.0.100", "198.19.0.5", "198.19.1.7"]
    );
    assert_eq!(
        set("node_ip4"),
        ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    );
    assert_eq!(set("local_underlay_net4"), ["198.18.0.0/24"]);
    assert!(set("all_net6").contains(&"fd00:19::/112".to_string()));
}

#[test]
fn nft_quotes_cannot_be_escaped() {
    let mut f = fixture();
    f.cfg.prefer_vlan_interfaces = vec!["ev\"il".into()];
    f.host
        .interfaces
        .push(iface("ev\"il", 7, Some("02:00:00:00:00:77"), &[]));
    let p = plan_of(&f);
    let s = p.nft.transaction();
    assert!(s.contains("\"evil\""));
    assert!(!s.contains("ev\"il"));
}

#[test]
fn terminating_pods_keep_proxies_but_leave_the_pod_set() {
    let mut f = fixture();
    Arc::make_mut(&mut f.api.ip_instances[0])
        .metadata
        .deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Default::default(),
    ));
    let p = plan_of(&f);
    assert!(p.proxy_neighbours.iter().any(|x| x.ip == ip("198.19.0.5")));
    assert!(
        !p.nft
            .set_elements("local_pod_ip4")
            .contains(&"198.19.0.5".to_string())
    );
}

// ---- trace: one test per traffic flow of docs/cli.md (trace) ----

fn tr(p: &DataPlanePlan, src: &str, dst: &str) -> TraceResult {
    trace(p, &TraceQuery::new(ip(src), ip(dst)))
}

#[test]
fn trace_to_local_pod() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.6", "198.19.0.5");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 1000,
            table: 39999
        })
    );
    assert!(matches!(r.outcome, Outcome::LocalPod { ref pod, .. } if pod == "a"));
    assert!(!r.masquerade);
    // Same-node pod to pod is routed too.
    let r = tr(&p, "198.18.0.100", "198.19.0.5");
    assert!(matches!(r.outcome, Outcome::LocalPod { .. }));
}

#[test]
fn trace_pod_to_own_node() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.5", "198.18.0.11");
    assert_eq!(r.outcome, Outcome::LocalDelivery);
    let r = tr(&p, "fd00:19::5", "fd00:18::11");
    assert_eq!(r.outcome, Outcome::LocalDelivery);
}

#[test]
fn trace_overlay_to_remote_overlay() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.5", "198.19.0.6");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 1001,
            table: 40000
        })
    );
    assert_eq!(r.dev.as_deref(), Some("eth0.vxlan4"));
    let e = r.encapsulation.unwrap();
    assert_eq!(
        (e.remote_vtep, e.remote_node.as_str(), e.vni),
        (ip("198.18.0.12"), "n2", 4)
    );
    assert!(!r.masquerade);
    let r6 = tr(&p, "fd00:19::5", "fd00:19::6");
    assert_eq!(r6.encapsulation.unwrap().remote_vtep, ip("198.18.0.12"));
}

#[test]
fn trace_overlay_to_remote_underlay_keeps_source() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.5", "198.18.0.101");
    assert_eq!(
        r.rule.as_ref().unwrap().table,
        table_of(&p, "198.19.0.0/24")
    );
    assert_eq!(r.encapsulation.as_ref().unwrap().remote_node, "n2");
    assert!(!r.masquerade);
    // Non-NAT overlay subnet: default dev vxlan.
    let r = tr(&p, "198.19.1.7", "198.18.0.101");
    assert_eq!(
        r.rule.as_ref().unwrap().table,
        table_of(&p, "198.19.1.0/24")
    );
    assert_eq!(r.encapsulation.as_ref().unwrap().remote_node, "n2");
}

#[test]
fn trace_overlay_to_underlay_gateway_is_thrown_and_masqueraded() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.5", "198.18.0.1");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 32766,
            table: 254
        })
    );
    assert_eq!(r.dev.as_deref(), Some("eth0"));
    assert!(r.masquerade);
    assert!(
        r.steps.iter().any(|s| s.contains("throw 198.18.0.0/26")),
        "{:?}",
        r.steps
    );
}

#[test]
fn trace_underlay_to_overlay_uses_to_overlay_first() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.18.0.100", "198.19.0.6");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 1001,
            table: 40000
        })
    );
    assert_eq!(r.encapsulation.unwrap().remote_node, "n2");
}

#[test]
fn trace_underlay_to_underlay_same_subnet_other_node() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.18.0.100", "198.18.0.101");
    assert_eq!(
        r.rule.as_ref().unwrap().table,
        table_of(&p, "198.18.0.0/24")
    );
    assert_eq!(r.dev.as_deref(), Some("eth0"));
    assert_eq!(r.next_hop, None);
    assert!(r.encapsulation.is_none());
    assert!(!r.masquerade);
}

#[test]
fn trace_underlay_to_outside_via_gateway_not_masqueraded() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.18.0.100", "203.0.113.9");
    assert_eq!(
        r.rule.as_ref().unwrap().table,
        table_of(&p, "198.18.0.0/24")
    );
    assert_eq!(r.next_hop, Some(ip("198.18.0.1")));
    assert!(!r.masquerade);
}

#[test]
fn trace_overlay_to_outside() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.5", "203.0.113.9");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 32766,
            table: 254
        })
    );
    assert_eq!(r.next_hop, Some(ip("198.18.0.1")));
    assert!(r.masquerade);
    // autoNatOutgoing=false: default dev vxlan, a new connection to a non-cluster address is rejected.
    let r = tr(&p, "198.19.1.7", "203.0.113.9");
    assert!(matches!(r.outcome, Outcome::Filtered { .. }), "{r:?}");
    assert!(!r.masquerade);
}

#[test]
fn trace_outside_to_underlay_pod_and_loop_guard() {
    let p = plan_of(&fixture());
    let mut q = TraceQuery::new(ip("203.0.113.9"), ip("198.18.0.100"));
    q.iif = Some("eth0".into());
    assert!(matches!(trace(&p, &q).outcome, Outcome::LocalPod { .. }));
    // An underlay address that is not a local pod arriving on the underlay interface is dropped.
    q.dst = ip("198.18.0.150");
    assert!(matches!(trace(&p, &q).outcome, Outcome::Filtered { .. }));
    // kube-proxy masqueraded traffic is exempt.
    q.mark = 0x4000;
    assert!(!matches!(trace(&p, &q).outcome, Outcome::Filtered { .. }));
}

#[test]
fn trace_node_to_remote_pod_and_marked_reply() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.18.0.11", "198.19.0.6");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 1001,
            table: 40000
        })
    );
    assert_eq!(r.encapsulation.unwrap().remote_node, "n2");
    // The remote pod's reply to node n2's IP arriving at... here: a local overlay pod replying to
    // another node's IP is marked and returns through VXLAN (table 40001).
    let mut q = TraceQuery::new(ip("198.19.0.5"), ip("198.18.0.12"));
    q.established = true;
    let r = trace(&p, &q);
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 1002,
            table: 40001
        })
    );
    assert_eq!(r.encapsulation.unwrap().remote_node, "n2");
    assert!(!r.masquerade);
    assert_eq!(r.mark & 0x20, 0, "mark cleared before encapsulation");
}

#[test]
fn trace_overlay_pod_to_other_node_new_connection_is_masqueraded() {
    let p = plan_of(&fixture());
    let r = tr(&p, "198.19.0.5", "198.18.0.12");
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 32766,
            table: 254
        })
    );
    assert!(r.masquerade);
}

#[test]
fn trace_full_nat_mark_skips_subnet_rules() {
    let p = plan_of(&fixture());
    let mut q = TraceQuery::new(ip("198.18.0.100"), ip("198.18.0.50"));
    q.mark = 0x40;
    let r = trace(&p, &q);
    assert_eq!(
        r.rule,
        Some(MatchedRule {
            priority: 32766,
            table: 254
        })
    );
}

#[test]
fn trace_unresolved_neighbour() {
    let mut f = fixture();
    f.api
        .ip_instances
        .retain(|i| i.spec.address.ip != "198.19.0.6");
    let p = plan_of(&f);
    let r = tr(&p, "198.19.0.5", "198.19.0.6");
    assert_eq!(r.outcome, Outcome::NeighbourUnresolved);
}

// ---- properties ----

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

fn arb_fixture() -> impl Strategy<Value = Fixture> {
    (1usize..6, 0usize..40, 1usize..5, any::<u64>()).prop_map(|(n_sub, n_pods, n_nodes, seed)| {
        let mut f = fixture();
        for i in 0..n_sub {
            f.api.subnets.push(subnet(
                &format!("x{i}"),
                "overlay",
                &format!("198.{}.{}.0/24", 24 + i / 200, i % 200),
                None,
                None,
                None,
            ));
        }
        for n in 2..(2 + n_nodes) {
            f.api.node_infos.push(Arc::new(nodeinfo(
                &format!("m{n}"),
                &format!("198.18.1.{n}"),
                &format!("02:00:00:00:01:{n:02x}"),
                &[&format!("198.18.1.{n}")],
            )));
        }
        for k in 0..n_pods {
            let node = if k % 3 == 0 {
                "n1".to_string()
            } else {
                format!("m{}", 2 + k % n_nodes)
            };
            let pod = format!("p{k}");
            let addr = format!("198.24.{}.{}", k % n_sub, 10 + k);
            f.api.ip_instances.push(Arc::new(ipinstance(
                "ns",
                &pod,
                &addr,
                "overlay",
                &format!("x{}", k % n_sub),
                &node,
            )));
            if node == "n1" && k % 2 == 0 {
                f.host.interfaces.push(iface(
                    &host_veth_name("ns", &pod),
                    100 + k as u32,
                    Some("ee:ee:ee:ee:ee:ee"),
                    &[],
                ));
            }
        }
        f.api.subnets = shuffled(&f.api.subnets, seed);
        f.api.ip_instances = shuffled(&f.api.ip_instances, seed.rotate_left(7));
        f
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plan_is_independent_of_input_order(f in arb_fixture(), seed in any::<u64>()) {
        let a = plan_of(&f);
        let mut g = Fixture { api: f.api.clone(), host: f.host.clone(), cfg: f.cfg.clone() };
        g.api.subnets = shuffled(&g.api.subnets, seed);
        g.api.networks = shuffled(&g.api.networks, seed >> 3);
        g.api.ip_instances = shuffled(&g.api.ip_instances, seed >> 5);
        g.api.node_infos = shuffled(&g.api.node_infos, seed >> 9);
        g.host.interfaces = shuffled(&g.host.interfaces, seed >> 11);
        g.host.main_routes = shuffled(&g.host.main_routes, seed >> 13);
        let b = plan_of(&g);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a, plan_of(&f));
    }

    #[test]
    fn plan_invariants(f in arb_fixture()) {
        let p = plan_of(&f);
        // Every local pod whose veth exists has exactly one local-direct route, to that veth.
        for (ip, pod) in &p.local_pods {
            let n: Vec<_> = p.routes_in(39999).filter(|r| r.dst.contains(*ip)).collect();
            let has_veth = f.host.interfaces.iter().any(|i| i.name == pod.veth);
            prop_assert_eq!(n.len(), usize::from(has_veth));
            if has_veth {
                prop_assert_eq!(n[0].dev.as_deref(), Some(pod.veth.as_str()));
            }
        }
        // No two subnets share a table; all in range.
        let tables: Vec<u32> = p.subnet_tables.values().map(|t| t.table).collect();
        let uniq: BTreeSet<u32> = tables.iter().copied().collect();
        prop_assert_eq!(tables.len(), uniq.len());
        prop_assert!(tables.iter().all(|t| (10000..=39998).contains(t)));
        // Every rule points at a hybridnet table; every route is in one.
        for r in &p.rules {
            prop_assert!(r.table == 39999 || p.owned_tables.contains(&r.table));
        }
        for r in &p.routes {
            prop_assert!(r.table == 39999 || p.owned_tables.contains(&r.table));
            prop_assert_eq!(r.kind == RouteKind::Throw, r.dev.is_none());
        }
        // Never the all-zero FDB entry; never a neighbour for a local pod.
        prop_assert!(p.fdb.iter().all(|e| !e.mac.is_zero()));
        for ip in p.local_pods.keys() {
            prop_assert!(!p.vxlan_neighbours.contains_key(ip));
        }
        // Every remote pod of a node with a VTEP resolves.
        for i in &f.api.ip_instances {
            let node = i.spec.binding.node_name.clone().unwrap();
            if node != "n1" {
                prop_assert!(p.vxlan_neighbours.contains_key(&ip(&i.spec.address.ip)));
            }
        }
    }
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        (0u8..=255).prop_map(|x| IpAddr::from([198, 19, 0, x])),
        (0u8..=255).prop_map(|x| IpAddr::from([198, 18, 0, x])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `trace` takes user input from `kubectl hybridnet trace`: any packet gets an answer, and a
    /// forwarded packet always names its device.
    #[test]
    fn trace_answers_any_packet(src in arb_ip(), dst in arb_ip(), mark in any::<u32>(), established in any::<bool>(), iif in proptest::option::of("[a-z0-9.]{1,15}")) {
        let p = plan_of(&fixture());
        let q = TraceQuery { src, dst, mark, iif, established };
        let r = trace(&p, &q);
        prop_assert!(!r.steps.is_empty());
        if r.outcome == Outcome::Forwarded {
            prop_assert!(r.dev.is_some());
        }
        if r.encapsulation.is_some() {
            prop_assert_eq!(r.dev.as_deref(), Some("eth0.vxlan4"));
        }
    }
}

#[test]
fn ipinstance_addresses_in_upstream_prefix_form() {
    let mut f = fixture();
    for i in &mut f.api.ip_instances {
        let i = Arc::make_mut(i);
        let plen = if i.spec.address.ip.contains(':') {
            112
        } else {
            24
        };
        i.spec.address.ip = format!("{}/{plen}", i.spec.address.ip);
    }
    assert_eq!(plan_of(&f), plan_of(&fixture()));
    let mut f = fixture();
    Arc::make_mut(&mut f.api.ip_instances[2]).spec.address.ip = "198.19.0.6/99".into();
    let p = plan_of(&f);
    assert!(
        p.problems.iter().any(|x| x.object.ends_with("198-19-0-6")),
        "{:?}",
        p.problems
    );
    assert!(!p.vxlan_neighbours.contains_key(&ip("198.19.0.6")));
}

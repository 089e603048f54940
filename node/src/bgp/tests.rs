//! Table tests and properties of the desired BGP configuration, and tests of the shell's
//! readiness, lazy speaker life cycle and metrics (sessions to loopback addresses nobody
//! listens on; the sessions against bird2 are in tests/bgp_agent.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hybridnet_api::constants::label;
use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::*;
use hybridnet_bgp::{Announcement, Communities, Prefix};
use proptest::prelude::*;

use super::desired::family_gateway;
use super::*;
use crate::plan::{
    ApiState, HostAddress, HostInterface, HostRoute, HostState, PlanConfig, build_plan,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn ann(p: &str, c: Communities) -> Announcement {
    Announcement::new(prefix(p), c)
}

fn peer(address: &str, asn: i32) -> BgpPeer {
    BgpPeer {
        asn,
        address: address.into(),
        ..Default::default()
    }
}

fn network(
    name: &str,
    ty: NetworkType,
    mode: NetworkMode,
    net_id: Option<i32>,
    nodes: &[&str],
    peers: Vec<BgpPeer>,
) -> Network {
    let mut n = Network::new(
        name,
        NetworkSpec {
            node_selector: None,
            net_id,
            network_type: Some(ty),
            mode: Some(mode),
            config: (!peers.is_empty()).then_some(NetworkConfig {
                bgp_peers: Some(peers),
            }),
        },
    );
    n.status = Some(NetworkStatus {
        node_list: Some(nodes.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    });
    n
}

fn bgp_net(name: &str, asn: i32, nodes: &[&str], peers: Vec<BgpPeer>) -> Network {
    network(
        name,
        NetworkType::Underlay,
        NetworkMode::Bgp,
        Some(asn),
        nodes,
        peers,
    )
}

fn global_net(name: &str) -> Network {
    network(
        name,
        NetworkType::GlobalBgp,
        NetworkMode::GlobalBgp,
        None,
        &[],
        vec![],
    )
}

fn subnet(name: &str, net: &str, cidr: &str) -> Subnet {
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
                start: None,
                end: None,
                gateway: None,
                reserved_ips: None,
                exclude_ips: None,
            },
            config: None,
        },
    )
}

fn instance(pod: &str, addr: &str, net: &str, node: &str) -> IPInstance {
    let bare = addr.split('/').next().unwrap();
    let mut i = IPInstance::new(
        &bare.replace(['.', ':'], "-"),
        IPInstanceSpec {
            network: net.into(),
            subnet: format!("{net}-sub"),
            address: Address {
                version: if addr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                ip: addr.into(),
                gateway: None,
                net_id: None,
                mac: "02:00:00:00:00:01".into(),
            },
            binding: Binding {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                pod_name: Some(pod.into()),
                ..Default::default()
            },
        },
    );
    i.metadata.namespace = Some("default".into());
    if !node.is_empty() {
        i.metadata.labels = Some(BTreeMap::from([(label::NODE.to_string(), node.into())]));
    }
    i
}

fn iface(name: &str, index: u32, addrs: &[(&str, u8)]) -> HostInterface {
    HostInterface {
        name: name.into(),
        index,
        mac: Some("02:aa:00:00:00:01".parse().unwrap()),
        mtu: 1500,
        up: true,
        addresses: addrs
            .iter()
            .map(|(a, p)| HostAddress {
                ip: ip(a),
                prefix: *p,
                noprefixroute: false,
            })
            .collect(),
    }
}

fn default_route(gw: &str, dev: &str) -> HostRoute {
    let gw = ip(gw);
    HostRoute {
        dst: Cidr {
            version: IpVersion::of(&gw),
            network: 0,
            prefix: 0,
        },
        gateway: Some(gw),
        dev: Some(dev.into()),
        src: None,
    }
}

/// A node with eth0 (198.18.1.1/31, fd00:1::2/64) and a default route via the ToR.
fn host() -> HostState {
    HostState {
        interfaces: vec![
            iface("lo", 1, &[("127.0.0.1", 8)]),
            iface("eth0", 2, &[("198.18.1.1", 31), ("fd00:1::2", 64)]),
            iface("eth1", 3, &[("198.18.9.1", 24)]),
        ],
        main_routes: vec![
            default_route("198.18.1.0", "eth0"),
            default_route("fd00:1::1", "eth0"),
        ],
        ipv6_enabled: true,
        ..Default::default()
    }
}

fn api(networks: Vec<Network>, subnets: Vec<Subnet>, ips: Vec<IPInstance>) -> ApiState {
    ApiState {
        node_name: "node1".into(),
        networks,
        subnets,
        ip_instances: ips.into_iter().map(std::sync::Arc::new).collect(),
        ..Default::default()
    }
}

fn tor() -> BgpPeer {
    peer("198.18.0.1", 65000)
}

fn standard_api() -> ApiState {
    let mut tor6 = peer("fd00::1", 65000);
    tor6.password = Some("s3cret".into());
    tor6.graceful_restart_seconds = Some(120);
    tor6.allow_not_established = Some(true);
    tor6.does_not_route_traffic = Some(true);
    api(
        vec![
            bgp_net("bgp", 65001, &["node1", "node2"], vec![tor(), tor6]),
            global_net("global"),
            network(
                "vlan",
                NetworkType::Underlay,
                NetworkMode::Vlan,
                Some(0),
                &["node1"],
                vec![],
            ),
        ],
        vec![
            subnet("bgp-v4", "bgp", "198.19.1.0/24"),
            subnet("bgp-v6", "bgp", "fd00:19:1::/64"),
            subnet("global-v4", "global", "198.19.200.0/24"),
            subnet("vlan-v4", "vlan", "198.19.50.0/24"),
        ],
        vec![
            instance("a", "198.19.1.10/24", "bgp", "node1"),
            instance("a", "fd00:19:1::10/64", "bgp", "node1"),
            instance("b", "198.19.1.20/24", "bgp", "node2"),
            instance("c", "198.19.200.7/24", "global", "node1"),
            instance("d", "198.19.1.30/24", "bgp", ""),
            instance("e", "198.19.50.5/24", "vlan", "node1"),
        ],
    )
}

#[test]
fn standard_node_gets_identity_peers_and_routes() {
    let d = desired_bgp(&standard_api(), &host(), &[]);
    assert_eq!(d.problems, vec![]);
    let s = d.speaker.expect("node is in a BGP network");
    assert_eq!(
        s.identity,
        SpeakerIdentity {
            local_asn: 65001,
            router_id: "198.18.1.1".parse().unwrap(),
            interface: "eth0".into(),
            local_v4: Some("198.18.1.1".parse().unwrap()),
            local_v6: Some("fd00:1::2".parse().unwrap()),
        }
    );
    assert_eq!(s.peers.len(), 2);
    let v4 = &s.peers[0];
    assert_eq!(v4.address, ip("198.18.0.1"));
    assert_eq!(v4.asn, 65000);
    assert_eq!(v4.graceful_restart_seconds, Some(300), "absent means 300");
    assert_eq!(v4.password, None);
    assert!(!v4.does_not_route_traffic && !v4.allow_not_established);
    let v6 = &s.peers[1];
    assert_eq!(v6.address, ip("fd00::1"));
    assert_eq!(v6.password.as_deref(), Some("s3cret"));
    assert_eq!(v6.graceful_restart_seconds, Some(120));
    assert!(v6.does_not_route_traffic && v6.allow_not_established);
    let want: BTreeSet<Announcement> = [
        ann("198.19.1.0/24", Communities::None),
        ann("fd00:19:1::/64", Communities::None),
        ann("198.19.1.10/32", Communities::NoExport),
        ann("fd00:19:1::10/128", Communities::NoExport),
        ann("198.19.200.7/32", Communities::None),
    ]
    .into();
    assert_eq!(s.routes, want);
    assert_eq!(
        d.announced_networks,
        BTreeSet::from(["bgp".to_string(), "global".to_string()])
    );
}

#[test]
fn node_outside_every_bgp_network_runs_no_speaker() {
    let mut a = standard_api();
    a.node_name = "node3".into();
    let d = desired_bgp(&a, &host(), &[]);
    assert_eq!(d, DesiredBgp::default());
    // A GlobalBGP network alone attaches nobody.
    let a = api(
        vec![global_net("global")],
        vec![],
        vec![instance("c", "198.19.200.7/24", "global", "node1")],
    );
    assert_eq!(desired_bgp(&a, &host(), &[]).speaker, None);
}

#[test]
fn zero_graceful_restart_means_300() {
    let mut p = tor();
    p.graceful_restart_seconds = Some(0);
    let a = api(
        vec![bgp_net("bgp", 65001, &["node1"], vec![p])],
        vec![],
        vec![],
    );
    let s = desired_bgp(&a, &host(), &[]).speaker.unwrap();
    assert_eq!(s.peers[0].graceful_restart_seconds, Some(300));
}

#[test]
fn preferred_interface_wins_and_missing_ones_are_reported() {
    let prefer = vec!["bond0".to_string(), "eth1".to_string()];
    let s = desired_bgp(&standard_api(), &host(), &prefer)
        .speaker
        .unwrap();
    assert_eq!(s.identity.interface, "eth1");
    assert_eq!(s.identity.local_v4, Some("198.18.9.1".parse().unwrap()));
    assert_eq!(s.identity.local_v6, None);
    // No IPv6 next hop: IPv6 routes are left out and said so.
    assert!(s.routes.iter().all(|a| a.prefix.is_ipv4()));
    let d = desired_bgp(&standard_api(), &host(), &["bond0".to_string()]);
    assert_eq!(d.speaker, None);
    assert!(
        d.problems.iter().any(|p| p.message.contains("bond0")),
        "{d:?}"
    );
    let mut h = host();
    h.main_routes.clear();
    let d = desired_bgp(&standard_api(), &h, &[]);
    assert_eq!(d.speaker, None);
    assert!(
        d.problems
            .iter()
            .any(|p| p.message.contains("no default route")),
        "{d:?}"
    );
}

#[test]
fn several_addresses_pick_the_default_routes_source_or_gateway_subnet() {
    let mut h = host();
    h.interfaces[1] = iface(
        "eth0",
        2,
        &[("198.18.1.1", 31), ("198.18.5.9", 24), ("fd00:1::2", 64)],
    );
    // The gateway 198.18.1.0 lies in 198.18.1.0/31.
    let s = desired_bgp(&standard_api(), &h, &[]).speaker.unwrap();
    assert_eq!(s.identity.local_v4, Some("198.18.1.1".parse().unwrap()));
    // An explicit src wins.
    h.main_routes[0].src = Some(ip("198.18.5.9"));
    let s = desired_bgp(&standard_api(), &h, &[]).speaker.unwrap();
    assert_eq!(s.identity.local_v4, Some("198.18.5.9".parse().unwrap()));
    assert_eq!(
        s.identity.router_id,
        "198.18.5.9".parse::<std::net::Ipv4Addr>().unwrap()
    );
    // Neither: reported, IPv6 still used, router id from IPv6.
    h.main_routes[0].src = None;
    h.main_routes[0].gateway = Some(ip("198.18.77.1"));
    let d = desired_bgp(&standard_api(), &h, &[]);
    assert!(
        d.problems
            .iter()
            .any(|p| p.message.contains("several IPv4 addresses")),
        "{d:?}"
    );
    let s = d.speaker.unwrap();
    assert_eq!(s.identity.local_v4, None);
    assert_eq!(
        s.identity.router_id,
        "0.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    // IPv6 disabled: no IPv6 next hop, no IPv6 routes.
    let mut h = host();
    h.ipv6_enabled = false;
    let s = desired_bgp(&standard_api(), &h, &[]).speaker.unwrap();
    assert_eq!(s.identity.local_v6, None);
    assert!(s.routes.iter().all(|a| a.prefix.is_ipv4()));
}

#[test]
fn hostile_peers_are_reported_by_field_and_the_rest_is_kept() {
    let mut long = peer("198.18.0.7", 65000);
    long.password = Some("x".repeat(81));
    let mut gr = peer("198.18.0.8", 65000);
    gr.graceful_restart_seconds = Some(5000);
    let mut neg_gr = peer("198.18.0.9", 65000);
    neg_gr.graceful_restart_seconds = Some(-1);
    let mut empty_pw = peer("198.18.0.10", 65000);
    empty_pw.password = Some(String::new());
    let peers = vec![
        tor(),
        peer("not-an-ip", 65000),
        peer("198.18.0.3", 0),
        peer("198.18.0.4", -5),
        peer("224.0.0.5", 65000),
        long,
        gr,
        neg_gr,
        empty_pw,
    ];
    let a = api(
        vec![bgp_net("bgp", 65001, &["node1"], peers)],
        vec![],
        vec![],
    );
    let d = desired_bgp(&a, &host(), &[]);
    let s = d.speaker.as_ref().unwrap();
    let addrs: Vec<IpAddr> = s.peers.iter().map(|p| p.address).collect();
    // An empty password means none.
    assert_eq!(addrs, vec![ip("198.18.0.1"), ip("198.18.0.10")]);
    assert_eq!(s.peers[1].password, None);
    let text: Vec<String> = d.problems.iter().map(|p| p.to_string()).collect();
    for want in [
        "bgpPeers[1].address",
        "bgpPeers[2].asn 0",
        "bgpPeers[3].asn -5",
        "bgpPeers[4]: BGP peer 224.0.0.5",
        "bgpPeers[5]: BGP peer 198.18.0.7: password of 81 octets",
        "bgpPeers[6]: BGP peer 198.18.0.8: gracefulRestartSeconds 5000",
        "bgpPeers[7].gracefulRestartSeconds -1",
    ] {
        assert!(
            text.iter()
                .any(|t| t.contains(want) && t.starts_with("Network/bgp")),
            "missing {want:?} in {text:#?}"
        );
    }
}

#[test]
fn second_bgp_network_with_another_as_is_ignored() {
    let a = api(
        vec![
            bgp_net("a-net", 65001, &["node1"], vec![tor()]),
            bgp_net("b-net", 65002, &["node1"], vec![peer("198.18.0.2", 65000)]),
            bgp_net("c-net", 65001, &["node1"], vec![tor()]),
        ],
        vec![
            subnet("a", "a-net", "198.19.1.0/24"),
            subnet("b", "b-net", "198.19.2.0/24"),
            subnet("c", "c-net", "198.19.3.0/24"),
        ],
        vec![instance("p", "198.19.2.5/24", "b-net", "node1")],
    );
    let d = desired_bgp(&a, &host(), &[]);
    let s = d.speaker.as_ref().unwrap();
    assert_eq!(s.identity.local_asn, 65001);
    assert_eq!(s.peers.len(), 1, "identical peers of a-net and c-net merge");
    let prefixes: Vec<String> = s.routes.iter().map(|r| r.prefix.to_string()).collect();
    assert_eq!(prefixes, vec!["198.19.1.0/24", "198.19.3.0/24"]);
    assert!(
        d.problems
            .iter()
            .any(|p| p.object == "Network/b-net" && p.message.contains("65002")),
        "{d:?}"
    );
    assert!(!d.announced_networks.contains("b-net"));
}

#[test]
fn conflicting_peer_definitions_keep_the_first_network() {
    let mut other = tor();
    other.asn = 65099;
    let a = api(
        vec![
            bgp_net("a-net", 65001, &["node1"], vec![tor()]),
            bgp_net("b-net", 65001, &["node1"], vec![other]),
        ],
        vec![],
        vec![],
    );
    let d = desired_bgp(&a, &host(), &[]);
    assert_eq!(d.speaker.unwrap().peers[0].asn, 65000);
    assert!(d.problems.iter().any(|p| p.object == "Network/b-net"));
}

#[test]
fn unusable_net_ids_run_no_speaker() {
    for id in [None, Some(0), Some(-7)] {
        let mut n = bgp_net("bgp", 1, &["node1"], vec![tor()]);
        n.spec.net_id = id;
        let d = desired_bgp(&api(vec![n], vec![], vec![]), &host(), &[]);
        assert_eq!(d.speaker, None, "{id:?}");
        assert!(
            d.problems
                .iter()
                .any(|p| p.object == "Network/bgp" && p.message.contains("spec.netID")),
            "{d:?}"
        );
    }
}

#[test]
fn hostile_addresses_are_reported_and_skipped() {
    let mut a = standard_api();
    a.ip_instances.push(std::sync::Arc::new(instance(
        "x",
        "not-an-ip/24",
        "bgp",
        "node1",
    )));
    a.ip_instances.push(std::sync::Arc::new(instance(
        "y",
        "198.19.1.99/99",
        "bgp",
        "node1",
    )));
    a.subnets.push(subnet("bad", "bgp", "198.19.999.0/24"));
    let d = desired_bgp(&a, &host(), &[]);
    let s = d.speaker.as_ref().unwrap();
    assert_eq!(s.routes.len(), 5, "the good routes stay");
    assert_eq!(
        d.problems
            .iter()
            .filter(|p| p.message.contains("spec.address.ip"))
            .count(),
        2,
        "{d:?}"
    );
    assert!(d.problems.iter().any(|p| p.object == "Subnet/bad"), "{d:?}");
}

#[test]
fn bare_ip_in_instance_is_accepted() {
    let a = api(
        vec![bgp_net("bgp", 65001, &["node1"], vec![tor()])],
        vec![],
        vec![instance("p", "198.19.1.5", "bgp", "node1")],
    );
    let s = desired_bgp(&a, &host(), &[]).speaker.unwrap();
    assert!(
        s.routes
            .contains(&ann("198.19.1.5/32", Communities::NoExport))
    );
}

/// The planner renders BGP subnet tables with the gateway rule of [`family_gateway`].
#[test]
fn plan_tables_use_the_same_gateway_decision() {
    let cases: Vec<(Vec<BgpPeer>, Option<&str>)> = vec![
        (vec![tor()], Some("198.18.0.1")),
        (
            vec![
                {
                    let mut p = peer("198.18.0.2", 65000);
                    p.does_not_route_traffic = Some(true);
                    p
                },
                tor(),
            ],
            Some("198.18.0.1"),
        ),
        // No peer routes traffic: a copy of the main default route.
        (
            vec![{
                let mut p = tor();
                p.does_not_route_traffic = Some(true);
                p
            }],
            Some("198.18.1.0"),
        ),
    ];
    for (peers, want) in cases {
        let a = api(
            vec![bgp_net("bgp", 65001, &["node1"], peers)],
            vec![subnet("bgp-v4", "bgp", "198.19.1.0/24")],
            vec![],
        );
        let h = host();
        let d = desired_bgp(&a, &h, &[]).speaker.unwrap();
        let decided = family_gateway(&d.peers, false)
            .unwrap()
            .or_else(|| h.main_routes[0].gateway);
        assert_eq!(decided, want.map(ip));
        let plan = build_plan(&a, &h, &PlanConfig::default());
        let t = plan.subnet_tables.values().next().expect("BGP table").table;
        let routes: Vec<_> = plan.routes_in(t).collect();
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].via, decided);
        assert_eq!(routes[0].dev.as_deref(), Some("eth0"));
    }
    let two = vec![tor(), peer("198.18.0.2", 65000)];
    let d = desired_bgp(
        &api(vec![bgp_net("bgp", 65001, &["node1"], two)], vec![], vec![]),
        &host(),
        &[],
    );
    assert!(family_gateway(&d.speaker.unwrap().peers, false).is_err());
}

#[derive(Clone, Debug)]
struct PodCase {
    net: usize,
    node: usize,
    host: u8,
    v6: bool,
}

fn pod_case() -> impl Strategy<Value = PodCase> {
    (0usize..3, 0usize..3, 1u8..250, any::<bool>()).prop_map(|(net, node, host, v6)| PodCase {
        net,
        node,
        host,
        v6,
    })
}

proptest! {
    /// Exactly the local pods of BGP networks (NO_EXPORT) and of GlobalBGP (exportable), plus the
    /// BGP subnet prefixes, whatever the order of the input.
    #[test]
    fn announcements_are_exactly_the_local_bgp_pods(
        cases in proptest::collection::vec(pod_case(), 0..40),
        seed in any::<u64>(),
    ) {
        let nets = ["bgp", "global", "vlan"];
        let nodes = ["node1", "node2", ""];
        let mut ips = Vec::new();
        let mut want: BTreeMap<Prefix, Communities> = BTreeMap::new();
        want.insert(prefix("198.19.1.0/24"), Communities::None);
        want.insert(prefix("fd00:19:1::/64"), Communities::None);
        let mut seen = BTreeSet::new();
        for c in &cases {
            let third = 1 + c.net as u8 * 100;
            let addr = if c.v6 {
                format!("fd00:19:{third:x}::{:x}", c.host)
            } else {
                format!("198.19.{third}.{}", c.host)
            };
            if !seen.insert(addr.clone()) {
                continue;
            }
            ips.push(instance("p", &format!("{addr}/24"), nets[c.net], nodes[c.node]));
            if c.node == 0 && c.net < 2 {
                let comm = if c.net == 0 { Communities::NoExport } else { Communities::None };
                want.insert(Prefix::host(ip(&addr)), comm);
            }
        }
        let mut a = standard_api();
        a.ip_instances = ips.into_iter().map(std::sync::Arc::new).collect();
        let s = desired_bgp(&a, &host(), &[]).speaker.unwrap();
        let got: BTreeMap<Prefix, Communities> =
            s.routes.iter().map(|r| (r.prefix, r.communities)).collect();
        prop_assert_eq!(&got, &want);
        // Order of the API lists does not matter.
        let mut shuffled = a.clone();
        let n = shuffled.ip_instances.len().max(1);
        shuffled.ip_instances.rotate_left((seed as usize) % n);
        shuffled.networks.reverse();
        shuffled.subnets.reverse();
        prop_assert_eq!(desired_bgp(&shuffled, &host(), &[]), desired_bgp(&a, &host(), &[]));
    }

    /// Arbitrary peer fields never panic; each accepted peer satisfies the speaker's checks.
    #[test]
    fn arbitrary_peers_never_panic(
        asn in any::<i32>(),
        address in "[0-9a-f.:]{0,20}",
        gr in proptest::option::of(any::<i32>()),
        pw in proptest::option::of(".{0,90}"),
    ) {
        let p = BgpPeer {
            asn,
            address,
            graceful_restart_seconds: gr,
            password: pw,
            ..Default::default()
        };
        let a = api(vec![bgp_net("bgp", 65001, &["node1"], vec![p])], vec![], vec![]);
        let d = desired_bgp(&a, &host(), &[]);
        let s = d.speaker.unwrap();
        prop_assert!(hybridnet_bgp::speaker::validate_peers(&s.peers).is_ok());
        prop_assert_eq!(s.peers.len() + d.problems.len(), 1);
    }
}

// ---- the shell: readiness, life cycle, metrics ---------------------------------------------

/// A peer on a loopback address where nothing listens: it never establishes.
fn dead_peer(addr: &str, optional: bool) -> BgpPeer {
    let mut p = peer(addr, 65000);
    p.allow_not_established = Some(optional);
    p
}

fn lo_host() -> HostState {
    HostState {
        interfaces: vec![
            iface("lo", 1, &[("127.0.0.1", 8)]),
            iface("eth0", 2, &[("198.18.1.1", 31)]),
        ],
        main_routes: vec![default_route("198.18.1.0", "eth0")],
        ipv6_enabled: false,
        ..Default::default()
    }
}

fn pod_api(peers: Vec<BgpPeer>) -> ApiState {
    api(
        vec![
            bgp_net("bgp", 65001, &["node1"], peers),
            network(
                "vlan",
                NetworkType::Underlay,
                NetworkMode::Vlan,
                Some(0),
                &["node1"],
                vec![],
            ),
        ],
        vec![subnet("bgp-v4", "bgp", "198.19.1.0/24")],
        vec![instance("a", "198.19.1.10/24", "bgp", "node1")],
    )
}

#[tokio::test]
async fn required_peer_down_fails_readiness_and_pod_add_with_code_11() {
    let state = Arc::new(BgpState::without_route_check(Duration::from_millis(300)));
    let mut c = BgpController::new(state.clone());
    let r = c.reconcile(
        &pod_api(vec![dead_peer("127.0.0.21", false)]),
        &lo_host(),
        &[],
    );
    assert!(r.running && r.routes == 2 && r.peers == 1, "{r:?}");
    let err = state.readiness().unwrap_err();
    assert!(err.contains("127.0.0.21"), "{err}");
    let e = state
        .wait_announced("bgp", &[ip("198.19.1.10")])
        .await
        .unwrap_err();
    assert_eq!(e.code, 11);
    assert!(
        e.msg.contains("198.19.1.10") && e.msg.contains("127.0.0.21"),
        "{}",
        e.msg
    );
    // Pods of other networks do not wait.
    state
        .wait_announced("vlan", &[ip("198.19.50.1")])
        .await
        .unwrap();
    state
        .wait_announced("unknown", &[ip("198.19.50.1")])
        .await
        .unwrap();
}

#[tokio::test]
async fn optional_peers_do_not_hold_pods_back_but_unannounced_addresses_do() {
    let state = Arc::new(BgpState::without_route_check(Duration::from_millis(200)));
    let mut c = BgpController::new(state.clone());
    c.reconcile(
        &pod_api(vec![dead_peer("127.0.0.22", true)]),
        &lo_host(),
        &[],
    );
    assert_eq!(state.readiness(), Ok(()));
    state
        .wait_announced("bgp", &[ip("198.19.1.10")])
        .await
        .unwrap();
    // An address the node does not announce (no IPInstance here) is never ready.
    let e = state
        .wait_announced("bgp", &[ip("198.19.1.11")])
        .await
        .unwrap_err();
    assert_eq!(e.code, 11);
}

#[tokio::test]
async fn bgp_pod_on_a_node_without_speaker_is_not_ready() {
    let state = Arc::new(BgpState::without_route_check(Duration::from_millis(100)));
    let mut c = BgpController::new(state.clone());
    let mut a = pod_api(vec![tor()]);
    a.node_name = "node9".into();
    let r = c.reconcile(&a, &lo_host(), &[]);
    assert!(!r.running);
    assert!(state.speaker().is_none());
    assert_eq!(state.readiness(), Ok(()));
    let e = state
        .wait_announced("bgp", &[ip("198.19.1.10")])
        .await
        .unwrap_err();
    assert!(e.msg.contains("no BGP speaker"), "{}", e.msg);
}

#[tokio::test]
async fn speaker_is_created_lazily_and_kept_across_unrelated_changes() {
    let state = Arc::new(BgpState::without_route_check(Duration::from_millis(100)));
    let mut c = BgpController::new(state.clone());
    let mut a = pod_api(vec![dead_peer("127.0.0.23", true)]);
    a.node_name = "node9".into();
    c.reconcile(&a, &lo_host(), &[]);
    assert!(state.speaker().is_none(), "not in a BGP network yet");
    a.node_name = "node1".into();
    c.reconcile(&a, &lo_host(), &[]);
    let first = state.speaker().expect("created when the node joins");
    // More pods and another peer: same speaker, routes and peers updated in place.
    a.ip_instances.push(std::sync::Arc::new(instance(
        "b",
        "198.19.1.11/24",
        "bgp",
        "node1",
    )));
    a.networks[0].spec.config = Some(NetworkConfig {
        bgp_peers: Some(vec![
            dead_peer("127.0.0.23", true),
            dead_peer("127.0.0.24", true),
        ]),
    });
    let r = c.reconcile(&a, &lo_host(), &[]);
    assert!(r.problems.is_empty(), "{r:?}");
    let same = state.speaker().unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    assert_eq!(same.routes().len(), 3);
    assert_eq!(same.peer_states().len(), 2);
    drop((first, same));
    // Another AS is another identity: a new speaker.
    a.networks[0].spec.net_id = Some(65009);
    c.reconcile(&a, &lo_host(), &[]);
    let new = state.speaker().unwrap();
    assert_eq!(new.config().local_asn, 65009);
    drop(new);
    // Leaving the network stops it.
    a.networks[0].status = Some(NetworkStatus::default());
    let r = c.reconcile(&a, &lo_host(), &[]);
    assert!(!r.running);
    assert!(state.speaker().is_none());
}

#[tokio::test]
async fn metrics_show_sessions_prefixes_and_flaps() {
    let state = Arc::new(BgpState::without_route_check(Duration::from_millis(100)));
    let mut registry = prometheus_client::registry::Registry::with_prefix("hybridnet_node");
    registry.register_collector(Box::new(BgpCollector::new(state.clone())));
    let text = || {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &registry).unwrap();
        s
    };
    assert!(!text().contains("bgp_"), "no speaker, no BGP series");
    let mut c = BgpController::new(state.clone());
    c.reconcile(
        &pod_api(vec![dead_peer("127.0.0.25", false)]),
        &lo_host(),
        &[],
    );
    let t = text();
    for want in [
        "hybridnet_node_bgp_session_state{peer=\"127.0.0.25\",asn=\"65000\",state=\"Established\"} 0",
        "hybridnet_node_bgp_prefixes_announced{peer=\"127.0.0.25\"} 0",
        "hybridnet_node_bgp_session_flaps_total{peer=\"127.0.0.25\"} 0",
        "hybridnet_node_bgp_connection_collisions_total{peer=\"127.0.0.25\"} 0",
        "hybridnet_node_bgp_inbound_refused_total 0",
        "hybridnet_node_bgp_desired_routes 2",
        "hybridnet_node_bgp_required_peers_established 0",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    // Exactly one state is current.
    let current = t
        .lines()
        .filter(|l| l.starts_with("hybridnet_node_bgp_session_state{") && l.ends_with(" 1"))
        .count();
    assert_eq!(current, 1, "{t}");
}

/// The agent's registry carries the BGP series (the collector registered by `Shared::default`).
#[tokio::test]
async fn agent_registry_exposes_the_bgp_series() {
    let shared = crate::agent::Shared::default();
    assert!(!shared.metrics.encode().contains("bgp_"));
    let mut c = BgpController::new(shared.bgp.clone());
    c.reconcile(
        &pod_api(vec![dead_peer("127.0.0.26", false)]),
        &lo_host(),
        &[],
    );
    let t = shared.metrics.encode();
    assert!(
        t.contains("hybridnet_node_bgp_session_state{peer=\"127.0.0.26\",asn=\"65000\",state=\"Established\"} 0"),
        "{t}"
    );
    assert!(shared.bgp.readiness().is_err());
    assert!(shared.readiness().is_err());
}

//! Table-driven admission rules for Networks, Subnets and Pods, and the pod network-config
//! resolution order (upstream `pkg/webhook/validating/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;

use hybridnet_api::operator::IpFamily;
use hybridnet_api::resolve::{PodConfigInput, resolve_pod_network_config};
use hybridnet_api::v1::*;
use hybridnet_api::validate::{self, Existing, NodeLabels};

fn net(yaml: &str) -> Network {
    serde_saphyr::from_str(yaml).unwrap()
}
fn subnet(yaml: &str) -> Subnet {
    serde_saphyr::from_str(yaml).unwrap()
}

fn cluster() -> (Vec<Network>, Vec<Subnet>, Vec<NodeLabels>) {
    let networks = vec![
        net(
            "metadata: {name: overlay}\nspec: {type: Overlay, netID: 4}\nstatus: {statistics: {total: 10, used: 1, available: 9}}",
        ),
        net(
            "metadata: {name: vlan}\nspec: {type: Underlay, netID: 0, nodeSelector: {network: vlan}}\nstatus: {nodeList: [node1]}",
        ),
        net(
            "metadata: {name: novlanid}\nspec: {type: Underlay, nodeSelector: {network: novlanid}}",
        ),
        net(
            "metadata: {name: bgp}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {network: bgp}, config: {bgpPeers: [{asn: 65000, address: 198.18.0.1}]}}",
        ),
    ];
    let subnets = vec![
        subnet(
            "metadata: {name: overlay-v4}\nspec: {network: overlay, range: {version: '4', cidr: 100.64.0.0/16}}",
        ),
        subnet(
            "metadata: {name: overlay-v6}\nspec: {network: overlay, range: {version: '6', cidr: 'fd00:64::/112'}}",
        ),
        subnet(
            "metadata: {name: vlan-a}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.10.0/24, gateway: 198.18.10.1, start: 198.18.10.10, end: 198.18.10.99}}",
        ),
    ];
    let nodes = vec![
        NodeLabels {
            name: "node1".into(),
            labels: [("network".to_string(), "vlan".to_string())].into(),
        },
        NodeLabels {
            name: "node2".into(),
            labels: [("network".to_string(), "other".to_string())].into(),
        },
    ];
    (networks, subnets, nodes)
}

#[test]
fn invalid_networks_are_refused_naming_the_field() {
    let (networks, subnets, nodes) = cluster();
    let ex = Existing {
        networks: &networks,
        subnets: &subnets,
        nodes: &nodes,
        ipinstances: &[],
    };
    let cases = [
        (
            "metadata: {name: n}\nspec: {type: Underlay}",
            "spec.nodeSelector: an Underlay network needs a nodeSelector",
        ),
        (
            "metadata: {name: n}\nspec: {type: Overlay, netID: 5}",
            "spec.type: Overlay: network \"overlay\" already exists",
        ),
        (
            "metadata: {name: n}\nspec: {type: Overlay, netID: 5, nodeSelector: {a: b}}",
            "spec.nodeSelector: a Overlay network spans every node",
        ),
        (
            "metadata: {name: n}\nspec: {type: GlobalBGP, netID: 5}",
            "spec.netID: 5: a GlobalBGP network takes no netID",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: VXLAN, netID: 5, nodeSelector: {a: b}}",
            "spec.mode: VXLAN is not allowed for a Underlay network",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, netID: 4095, nodeSelector: {a: b}}",
            "spec.netID: 4095 is not a VLAN id",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, netID: 7, nodeSelector: {network: vlan}}",
            "spec.nodeSelector: node \"node1\" already belongs to underlay network \"vlan\"",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 198.18.0.1}]}}",
            "spec.netID: a BGP network needs its local AS number",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {a: b}}",
            "spec.config.bgpPeers: a BGP network needs at least one peer",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 'not-an-ip'}]}}",
            "spec.config.bgpPeers[0].address: \"not-an-ip\" is not an IP address",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 0, address: 198.18.0.1}]}}",
            "spec.config.bgpPeers[0].asn: 0 is not an AS number",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 198.18.0.1}, {asn: 2, address: 198.18.0.1, doesNotRouteTraffic: true}]}}",
            "spec.config.bgpPeers[1].address: 198.18.0.1 is listed twice",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 198.18.0.1}, {asn: 2, address: 198.18.0.2}]}}",
            "spec.config.bgpPeers: more than one BGP peer routes IPv4 traffic (198.18.0.1 and 198.18.0.2)",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 198.18.0.1}, {asn: 2, address: 'fd00::1'}, {asn: 2, address: 'fd00::2'}]}}",
            "spec.config.bgpPeers: more than one BGP peer routes IPv6 traffic (fd00::1 and fd00::2)",
        ),
        (
            "metadata: {name: n}\nspec: {type: Underlay, netID: 3, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 198.18.0.1}]}}",
            "spec.config.bgpPeers: only BGP networks have peers",
        ),
        (
            "metadata: {name: n}\nspec: {type: Overlay, netID: 16777216}",
            "spec.netID: 16777216 is not a VXLAN VNI",
        ),
    ];
    for (yaml, want) in cases {
        let got = validate::network_create(&net(yaml), &ex)
            .unwrap_err()
            .to_string();
        assert!(got.contains(want), "{yaml}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn valid_networks_and_updates() {
    let (networks, subnets, nodes) = cluster();
    let ex = Existing {
        networks: &networks,
        subnets: &subnets,
        nodes: &nodes,
        ipinstances: &[],
    };
    validate::network_create(&net("metadata: {name: g}\nspec: {type: GlobalBGP}"), &ex).unwrap();
    validate::network_create(
        &net("metadata: {name: u2}\nspec: {netID: 12, nodeSelector: {network: other}}"),
        &ex,
    )
    .unwrap();
    // One routing peer per family: a dual-stack BGP network with a v4 and a v6 ToR.
    validate::network_create(
        &net("metadata: {name: b2}\nspec: {mode: BGP, netID: 65002, nodeSelector: {network: other}, config: {bgpPeers: [{asn: 1, address: 198.18.0.1}, {asn: 1, address: 'fd00::1'}]}}"),
        &ex,
    )
    .unwrap();
    // A BGP network without config does not crash the update (upstream's NetworkUpdateValidation
    // in pkg/webhook/validating/network.go dereferenced it).
    let old = &networks[3];
    let mut new = old.clone();
    new.spec.config = None;
    let e = validate::network_update(old, &new, &ex)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.config.bgpPeers: a BGP network needs at least one peer"),
        "{e}"
    );
    let mut new = old.clone();
    new.spec.net_id = Some(65002);
    assert!(
        validate::network_update(old, &new, &ex)
            .unwrap_err()
            .to_string()
            .contains("spec.netID: is immutable (Some(65001) -> Some(65002))")
    );
    let mut new = networks[0].clone();
    new.spec.network_type = Some(NetworkType::GlobalBgp);
    assert!(
        validate::network_update(&networks[0], &new, &ex)
            .unwrap_err()
            .to_string()
            .contains("spec.type: is immutable (Overlay -> GlobalBGP)")
    );
    // Deleting a network with subnets is refused.
    let e = validate::network_delete(&networks[0], &ex)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("still has subnets [\"overlay-v4\", \"overlay-v6\"]"),
        "{e}"
    );
    validate::network_delete(&networks[3], &ex).unwrap();
}

#[test]
fn invalid_subnets_are_refused_naming_the_field() {
    let (networks, subnets, nodes) = cluster();
    let ex = Existing {
        networks: &networks,
        subnets: &subnets,
        nodes: &nodes,
        ipinstances: &[],
    };
    let cases = [
        (
            "metadata: {name: s}\nspec: {network: nope, range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.network: network \"nope\" does not exist",
        ),
        (
            "metadata: {name: s}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.range.gateway: a VLAN subnet needs its gateway",
        ),
        (
            "metadata: {name: s}\nspec: {network: vlan, netID: 3, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}}",
            "spec.netID: 3 differs from the VLAN id 0 of network \"vlan\"",
        ),
        (
            "metadata: {name: s}\nspec: {network: novlanid, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}}",
            "spec.netID: network \"novlanid\" has no VLAN id",
        ),
        (
            "metadata: {name: s}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}, config: {autoNatOutgoing: true}}",
            "spec.config.autoNatOutgoing: only overlay subnets masquerade",
        ),
        (
            "metadata: {name: s}\nspec: {network: overlay, netID: 4, range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.netID: 4: VXLAN subnets use the network's VNI",
        ),
        (
            "metadata: {name: s}\nspec: {network: bgp, netID: 4, range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.netID: 4: BGP subnets take no netID",
        ),
        (
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '4', cidr: 100.64.1.0/24}}",
            "spec.range.cidr: 100.64.1.0/24 overlaps 100.64.0.0/16 of subnet \"overlay-v4\"",
        ),
        (
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '4', cidr: 198.18.10.0/24, start: 198.18.10.100}}",
            "spec.range.cidr: 198.18.10.0/24 is already used by subnet \"vlan-a\" of network \"vlan\"",
        ),
        (
            "metadata: {name: s}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.10.0/24, gateway: 198.18.10.1, start: 198.18.10.50, end: 198.18.10.150}}",
            "spec.range: 198.18.10.50..198.18.10.150 overlaps 198.18.10.10..198.18.10.99 of subnet \"vlan-a\"",
        ),
        (
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '4', cidr: 10.0.0.0/8}}",
            "spec.range: 10.0.0.0/8 holds 16777214 addresses",
        ),
        (
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '6', cidr: 'fd00:1::1/120'}}",
            "spec.range.cidr: fd00:1::1/120 is not canonical",
        ),
    ];
    for (yaml, want) in cases {
        let got = validate::subnet_create(&subnet(yaml), &ex)
            .unwrap_err()
            .to_string();
        assert!(got.contains(want), "{yaml}\n got: {got}\nwant: {want}");
    }
    // Same CIDR, same network, disjoint spans: fine.
    validate::subnet_create(
        &subnet("metadata: {name: vlan-b}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.10.0/24, gateway: 198.18.10.1, start: 198.18.10.100, end: 198.18.10.199}}"),
        &ex,
    )
    .unwrap();
}

#[test]
fn subnet_updates_and_deletes() {
    let (networks, subnets, nodes) = cluster();
    let ipi: IPInstance = serde_saphyr::from_str(
        "metadata: {name: 198-18-10-10, namespace: default}\nspec: {network: vlan, subnet: vlan-a, address: {version: '4', ip: 198.18.10.10/24, mac: '02:00:00:00:00:01'}}",
    )
    .unwrap();
    let ipis = vec![ipi];
    let ex = Existing {
        networks: &networks,
        subnets: &subnets,
        nodes: &nodes,
        ipinstances: &ipis,
    };
    let old = &subnets[2];
    let mut new = old.clone();
    new.spec.range.reserved_ips = Some(vec!["198.18.10.20".into()]);
    new.spec.config = Some(SubnetConfig {
        private: Some(true),
        ..Default::default()
    });
    validate::subnet_update(old, &new, &ex).unwrap();
    for (edit, want) in [
        (
            Box::new(|s: &mut Subnet| s.spec.range.gateway = Some("198.18.10.2".into()))
                as Box<dyn Fn(&mut Subnet)>,
            "spec.range.gateway: is immutable",
        ),
        (
            Box::new(|s: &mut Subnet| s.spec.range.end = Some("198.18.10.200".into())),
            "spec.range.end: is immutable (\"198.18.10.99\" -> \"198.18.10.200\")",
        ),
        (
            Box::new(|s: &mut Subnet| s.spec.network = "overlay".into()),
            "spec.network: is immutable (\"vlan\" -> \"overlay\")",
        ),
        (
            Box::new(|s: &mut Subnet| s.spec.range.exclude_ips = Some(vec!["198.18.10.11".into()])),
            "spec.range.excludeIPs: is immutable",
        ),
    ] {
        let mut new = old.clone();
        edit(&mut new);
        let got = validate::subnet_update(old, &new, &ex)
            .unwrap_err()
            .to_string();
        assert!(got.contains(want), "got {got} want {want}");
    }
    // excludeIPs compared as a set of IPs: reordering is not a change.
    let mut a = old.clone();
    a.spec.range.exclude_ips = Some(vec!["198.18.10.11".into(), "198.18.10.12".into()]);
    let mut b = a.clone();
    b.spec.range.exclude_ips = Some(vec!["198.18.10.12".into(), "198.18.10.11".into()]);
    validate::subnet_update(&a, &b, &ex).unwrap();
    let e = validate::subnet_delete(old, &ex).unwrap_err().to_string();
    assert!(
        e.contains("still has addresses in use [\"198-18-10-10\"]"),
        "{e}"
    );
}

fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn resolution_order() {
    let (networks, subnets, _) = cluster();
    let empty = BTreeMap::new();
    let base = PodConfigInput {
        pod_annotations: &empty,
        pod_labels: &empty,
        namespace_annotations: &empty,
        namespace_labels: &empty,
        retained: &[],
        default_network_type: NetworkType::Overlay,
        default_ip_family: IpFamily::IPv4,
        networks: &networks,
        subnets: &subnets,
    };
    // Defaults.
    let c = resolve_pod_network_config(&base).unwrap();
    assert_eq!(
        (c.network.as_deref(), c.network_type, c.ip_family),
        (None, NetworkType::Overlay, IpFamily::IPv4)
    );

    // Pod annotation beats pod label beats namespace.
    let ann = m(&[("networking.alibaba.com/specified-network", "vlan")]);
    let lab = m(&[("networking.alibaba.com/specified-network", "overlay")]);
    let ns = m(&[("networking.alibaba.com/network-type", "GlobalBGP")]);
    let c = resolve_pod_network_config(&PodConfigInput {
        pod_annotations: &ann,
        pod_labels: &lab,
        namespace_annotations: &ns,
        ..base
    })
    .unwrap();
    assert_eq!(c.network.as_deref(), Some("vlan"));
    assert_eq!(
        c.network_type,
        NetworkType::Underlay,
        "type follows the named network"
    );
    assert_eq!(c.node_selector, m(&[("network", "vlan")]));
    let c = resolve_pod_network_config(&PodConfigInput {
        pod_labels: &lab,
        namespace_annotations: &ns,
        ..base
    })
    .unwrap();
    assert_eq!(c.network.as_deref(), Some("overlay"));
    // Nothing on the pod: the namespace decides (case-insensitive type).
    let ns = m(&[
        ("networking.alibaba.com/network-type", "underlay"),
        ("networking.alibaba.com/ip-family", "dualstack"),
    ]);
    let c = resolve_pod_network_config(&PodConfigInput {
        namespace_annotations: &ns,
        ..base
    })
    .unwrap();
    assert_eq!(
        (c.network_type, c.ip_family),
        (NetworkType::Underlay, IpFamily::DualStack)
    );
    // ip-family is read from annotations only.
    let lab = m(&[("networking.alibaba.com/ip-family", "IPv6")]);
    assert_eq!(
        resolve_pod_network_config(&PodConfigInput {
            pod_labels: &lab,
            ..base
        })
        .unwrap()
        .ip_family,
        IpFamily::IPv4
    );

    // Subnets imply the network; v4/v6 order and family are checked.
    let ann = m(&[
        (
            "networking.alibaba.com/specified-subnet",
            "overlay-v4/overlay-v6",
        ),
        ("networking.alibaba.com/ip-family", "DualStack"),
    ]);
    let c = resolve_pod_network_config(&PodConfigInput {
        pod_annotations: &ann,
        ..base
    })
    .unwrap();
    assert_eq!(c.network.as_deref(), Some("overlay"));
    assert_eq!(c.subnets, vec!["overlay-v4", "overlay-v6"]);
    for (pairs, want) in [
        (
            vec![
                (
                    "networking.alibaba.com/specified-subnet",
                    "overlay-v6/overlay-v4",
                ),
                ("networking.alibaba.com/ip-family", "DualStack"),
            ],
            "subnet \"overlay-v6\" is IPv6, the pod needs IPv4 there",
        ),
        (
            vec![("networking.alibaba.com/specified-subnet", "a/b/c")],
            "want one subnet name or ipv4-subnet/ipv6-subnet",
        ),
        (
            vec![(
                "networking.alibaba.com/specified-subnet",
                "overlay-v4/overlay-v6",
            )],
            "two subnets need ip-family DualStack",
        ),
        (
            vec![("networking.alibaba.com/specified-subnet", "ghost")],
            "subnet \"ghost\" does not exist",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-subnet", "vlan-a"),
                ("networking.alibaba.com/specified-network", "overlay"),
            ],
            "subnet \"vlan-a\" belongs to network \"vlan\", not \"overlay\"",
        ),
        (
            vec![("networking.alibaba.com/specified-network", "ghost")],
            "network \"ghost\" does not exist",
        ),
        (
            vec![("networking.alibaba.com/network-type", "Bridge")],
            "\"Bridge\" is not a network type",
        ),
        (
            vec![("networking.alibaba.com/ip-family", "IPv5")],
            "\"IPv5\" is not an IP family",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                ("networking.alibaba.com/network-type", "Overlay"),
            ],
            "Overlay does not match network \"vlan\", which is Underlay",
        ),
    ] {
        let ann = m(&pairs);
        let e = resolve_pod_network_config(&PodConfigInput {
            pod_annotations: &ann,
            ..base
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{pairs:?}: {e}");
    }

    // Retained addresses of a stateful pod decide network and family, ahead of annotations.
    let retained = [
        ("vlan".to_string(), IpVersion::V4),
        ("vlan".to_string(), IpVersion::V6),
    ];
    let ann = m(&[("networking.alibaba.com/specified-network", "overlay")]);
    let c = resolve_pod_network_config(&PodConfigInput {
        pod_annotations: &ann,
        retained: &retained,
        ..base
    })
    .unwrap();
    assert_eq!(
        (c.network.as_deref(), c.ip_family, c.retained_ip_exist),
        (Some("vlan"), IpFamily::DualStack, true)
    );
    let two_v4 = [
        ("vlan".to_string(), IpVersion::V4),
        ("vlan".to_string(), IpVersion::V4),
    ];
    assert!(
        resolve_pod_network_config(&PodConfigInput {
            retained: &two_v4,
            ..base
        })
        .is_err()
    );
}

#[test]
fn pod_admission_rules() {
    let (networks, subnets, _) = cluster();
    let empty = BTreeMap::new();
    let check = |ann: &BTreeMap<String, String>| {
        let input = PodConfigInput {
            pod_annotations: ann,
            pod_labels: &empty,
            namespace_annotations: &empty,
            namespace_labels: &empty,
            retained: &[],
            default_network_type: NetworkType::Overlay,
            default_ip_family: IpFamily::IPv4,
            networks: &networks,
            subnets: &subnets,
        };
        let cfg = resolve_pod_network_config(&input).unwrap();
        validate::pod_create(&validate::PodCheckInput {
            pod_name: "web-0",
            pod_annotations: ann,
            config: &cfg,
            pod_ipinstances: &[],
            networks: &networks,
        })
    };
    // A multi-entry pool is accepted (upstream denied it).
    check(&m(&[
        ("networking.alibaba.com/specified-network", "vlan"),
        (
            "networking.alibaba.com/ip-pool",
            "198.18.10.20,198.18.10.21,198.18.10.22",
        ),
    ]))
    .unwrap();
    check(&m(&[
        ("networking.alibaba.com/specified-network", "vlan"),
        (
            "networking.alibaba.com/mac-pool",
            "02:00:00:00:00:01,02-00-00-00-00-02",
        ),
    ]))
    .unwrap();
    for (pairs, want) in [
        (
            vec![("networking.alibaba.com/ip-pool", "198.18.10.20")],
            "an ip-pool needs the pod to name its network",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                (
                    "networking.alibaba.com/ip-pool",
                    "198.18.10.20,,198.18.10.22",
                ),
            ],
            "entry 1 is empty",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                ("networking.alibaba.com/ip-pool", "198.18.10.20,198.18.10.x"),
            ],
            "entry 1 \"198.18.10.x\": \"198.18.10.x\" is not an IP address",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                ("networking.alibaba.com/ip-pool", "fd00::1/198.18.10.1"),
            ],
            "must be ipv4/ipv6 in that order",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                ("networking.alibaba.com/ip-pool", "fd00::1"),
            ],
            "entry 0 has versions [V6] but the pod is IPv4",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                ("networking.alibaba.com/mac-pool", "01:00:5e:00:00:01"),
            ],
            "is a multicast/broadcast MAC address; a pod needs a unicast one",
        ),
        (
            vec![
                ("networking.alibaba.com/specified-network", "vlan"),
                ("networking.alibaba.com/mac-pool", "zz:00:00:00:00:01"),
            ],
            "\"zz:00:00:00:00:01\" is not a MAC address",
        ),
        (
            vec![("networking.alibaba.com/network-type", "GlobalBGP")],
            "there is no GlobalBGP network in the cluster",
        ),
        (
            vec![("networking.alibaba.com/ip-family", "IPv6")],
            "network \"overlay\" (Overlay) has no IPv6 addresses left",
        ),
    ] {
        let e = check(&m(&pairs)).unwrap_err().to_string();
        assert!(e.contains(want), "{pairs:?}: {e}");
        assert!(e.starts_with("metadata.annotations["), "{e}");
    }
}

/// Upstream refuses deleting a BGP network while GlobalBGP addresses sit on its nodes
/// (pkg/webhook/validating/network.go in alibaba/hybridnet, DELETE).
#[test]
fn bgp_network_delete_waits_for_global_bgp_addresses_on_its_nodes() {
    let net = |v: serde_json::Value| -> Network { serde_json::from_value(v).unwrap() };
    let bgp = net(serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1", "kind": "Network",
        "metadata": {"name": "bgp"},
        "spec": {"type": "Underlay", "mode": "BGP", "netID": 65001, "nodeSelector": {"rack": "r1"},
                 "config": {"bgpPeers": [{"asn": 65000, "address": "198.18.0.1"}]}},
        "status": {"nodeList": ["n1", "n2"]}
    }));
    let global = net(serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1", "kind": "Network",
        "metadata": {"name": "global"}, "spec": {"type": "GlobalBGP"}
    }));
    let ipi = |node: &str| -> IPInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.alibaba.com/v1", "kind": "IPInstance",
            "metadata": {"name": "198-19-0-5", "namespace": "default"},
            "spec": {"network": "global", "subnet": "global-v4",
                     "address": {"version": "4", "ip": "198.19.0.5/24", "mac": "02:00:00:00:00:05"},
                     "binding": {"nodeName": node, "podName": "p"}}
        }))
        .unwrap()
    };
    let networks = [bgp.clone(), global.clone()];
    let on_n2 = [ipi("n2")];
    let ex = Existing {
        networks: &networks,
        ipinstances: &on_n2,
        ..Default::default()
    };
    let e = validate::network_delete(&bgp, &ex).unwrap_err().to_string();
    assert!(
        e.contains("GlobalBGP addresses") && e.contains("default/198-19-0-5"),
        "{e}"
    );
    // Elsewhere, reserved (no node), or no GlobalBGP network: deletable.
    for (nets, ipis) in [
        (&networks[..], [ipi("n3")]),
        (&networks[..], [ipi("")]),
        (&networks[..1], [ipi("n2")]),
    ] {
        let ex = Existing {
            networks: nets,
            ipinstances: &ipis,
            ..Default::default()
        };
        validate::network_delete(&bgp, &ex).unwrap();
    }
    // The GlobalBGP network itself and non-BGP networks are not affected by the rule.
    validate::network_delete(&global, &ex).unwrap();
}

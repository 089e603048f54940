//! Every rule upstream's validating webhook enforces, one case each, against ours.
//!
//! Upstream: alibaba/hybridnet `pkg/webhook/validating/network.go`, `subnet.go`, `pod.go` and
//! `ip.go` (IPInstances: no rule). Each case quotes upstream's denial message and gives an object
//! upstream refuses; ours must refuse it too, naming the field it lists. The cases that upstream
//! allows but ours refuses are in docs/api.md ("Differences from upstream", "Behaviour") and in
//! `object_rules.rs`. Rules the CRD schema enforces as well (enums, required fields) are checked
//! here through the webhook rule, which holds for objects stored before the schema existed.

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
fn ipi(yaml: &str) -> IPInstance {
    serde_saphyr::from_str(yaml).unwrap()
}

struct Cluster {
    networks: Vec<Network>,
    subnets: Vec<Subnet>,
    nodes: Vec<NodeLabels>,
    ipinstances: Vec<IPInstance>,
}

impl Cluster {
    fn new() -> Self {
        Self {
            networks: vec![
                net(
                    "metadata: {name: overlay}\nspec: {type: Overlay, netID: 4}\nstatus: {statistics: {total: 10, used: 1, available: 9}}",
                ),
                net("metadata: {name: global}\nspec: {type: GlobalBGP}"),
                net(
                    "metadata: {name: vlan}\nspec: {type: Underlay, netID: 0, nodeSelector: {network: vlan}}\nstatus: {nodeList: [node1]}",
                ),
                net(
                    "metadata: {name: novlanid}\nspec: {type: Underlay, nodeSelector: {network: novlanid}}",
                ),
                net(
                    "metadata: {name: bgp}\nspec: {type: Underlay, mode: BGP, netID: 65001, nodeSelector: {network: bgp}, config: {bgpPeers: [{asn: 65000, address: 198.18.0.1}]}}\nstatus: {nodeList: [node3]}",
                ),
            ],
            subnets: vec![
                subnet(
                    "metadata: {name: overlay-v4}\nspec: {network: overlay, range: {version: '4', cidr: 100.64.0.0/16}}",
                ),
                subnet(
                    "metadata: {name: vlan-a}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.10.0/24, gateway: 198.18.10.1, start: 198.18.10.10, end: 198.18.10.99}}",
                ),
                subnet(
                    "metadata: {name: global-v4}\nspec: {network: global, range: {version: '4', cidr: 198.19.0.0/24}}",
                ),
            ],
            nodes: vec![NodeLabels {
                name: "node1".into(),
                labels: [("network".to_string(), "vlan".to_string())].into(),
            }],
            ipinstances: vec![
                ipi(
                    "metadata: {name: 198-18-10-10, namespace: default, labels: {networking.alibaba.com/pod: web-0}}\nspec: {network: vlan, subnet: vlan-a, address: {version: '4', ip: 198.18.10.10/24, mac: '02:00:00:00:00:01'}, binding: {podName: web-0, nodeName: node1}}",
                ),
                ipi(
                    "metadata: {name: 198-19-0-5, namespace: default}\nspec: {network: global, subnet: global-v4, address: {version: '4', ip: 198.19.0.5/24, mac: '02:00:00:00:00:05'}, binding: {podName: g-0, nodeName: node3}}",
                ),
            ],
        }
    }

    fn existing(&self) -> Existing<'_> {
        Existing {
            networks: &self.networks,
            subnets: &self.subnets,
            nodes: &self.nodes,
            ipinstances: &self.ipinstances,
        }
    }

    fn network(&self, name: &str) -> &Network {
        self.networks
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .unwrap()
    }

    fn subnet(&self, name: &str) -> &Subnet {
        self.subnets
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .unwrap()
    }
}

/// Asserts `result` refuses with an error that names `field`; `rule` is upstream's message.
fn refused(rule: &str, result: Result<(), String>, field: &str) {
    match result {
        Ok(()) => panic!("upstream refuses ({rule:?}) but ours allowed it"),
        Err(e) => assert!(
            e.contains(field),
            "upstream: {rule:?}\nours: {e}\nwant the error to name {field}"
        ),
    }
}

/// `pkg/webhook/validating/network.go`, `NetworkCreateValidation`.
#[test]
fn network_create_rules() {
    let c = Cluster::new();
    let ex = c.existing();
    let create = |yaml: &str| validate::network_create(&net(yaml), &ex).map_err(|e| e.to_string());
    for (rule, yaml, field) in [
        (
            "must have node selector for underlay network",
            "metadata: {name: n}\nspec: {type: Underlay, netID: 3}",
            "spec.nodeSelector",
        ),
        (
            "must have node selector for underlay network",
            "metadata: {name: n}\nspec: {type: Underlay, netID: 3, nodeSelector: {}}",
            "spec.nodeSelector",
        ),
        (
            "must have one overlay network at most",
            "metadata: {name: n}\nspec: {type: Overlay, netID: 5}",
            "spec.type",
        ),
        (
            "must not assign node selector for overlay network",
            "metadata: {name: n}\nspec: {type: Overlay, netID: 5, nodeSelector: {a: b}}",
            "spec.nodeSelector",
        ),
        (
            "must assign net ID for overlay network",
            "metadata: {name: n}\nspec: {type: Overlay}",
            "spec.netID",
        ),
        (
            "must have one global bgp network at most",
            "metadata: {name: n}\nspec: {type: GlobalBGP}",
            "spec.type",
        ),
        (
            "must not assign node selector for global bgp network",
            "metadata: {name: n}\nspec: {type: GlobalBGP, nodeSelector: {a: b}}",
            "spec.nodeSelector",
        ),
        (
            "must not assign net ID for global bgp network",
            "metadata: {name: n}\nspec: {type: GlobalBGP, netID: 5}",
            "spec.netID",
        ),
        (
            "BGP mode can only be used for underlay network",
            "metadata: {name: n}\nspec: {type: Overlay, mode: BGP, netID: 5}",
            "spec.mode",
        ),
        (
            "must assign net ID for bgp network",
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 198.18.0.9}]}}",
            "spec.netID",
        ),
        (
            "at least one bgp router need to be set",
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65002, nodeSelector: {a: b}}",
            "spec.config.bgpPeers",
        ),
        (
            "at least one bgp router need to be set",
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65002, nodeSelector: {a: b}, config: {bgpPeers: []}}",
            "spec.config.bgpPeers",
        ),
        (
            "invalid bgp peer ip address",
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65002, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 1, address: 'x'}]}}",
            "spec.config.bgpPeers[0].address",
        ),
        (
            "bgp peer's AS number need to be set",
            "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65002, nodeSelector: {a: b}, config: {bgpPeers: [{asn: 0, address: 198.18.0.9}]}}",
            "spec.config.bgpPeers[0].asn",
        ),
        (
            "VLAN mode can only be used for underlay network",
            "metadata: {name: n}\nspec: {type: Overlay, mode: VLAN, netID: 5}",
            "spec.mode",
        ),
        (
            "VXLAN mode can only be used for overlay network",
            "metadata: {name: n}\nspec: {type: Underlay, mode: VXLAN, netID: 5, nodeSelector: {a: b}}",
            "spec.mode",
        ),
        (
            "GlobalBGP mode can only be used for global bgp network",
            "metadata: {name: n}\nspec: {type: Underlay, mode: GlobalBGP, nodeSelector: {a: b}}",
            "spec.mode",
        ),
    ] {
        refused(rule, create(yaml), field);
    }
    // What upstream allows, ours allows.
    for yaml in [
        "metadata: {name: n}\nspec: {type: Underlay, netID: 3, nodeSelector: {network: other}}",
        "metadata: {name: n}\nspec: {nodeSelector: {network: other}}",
        "metadata: {name: n}\nspec: {type: Underlay, mode: BGP, netID: 65002, nodeSelector: {network: other}, config: {bgpPeers: [{asn: 1, address: 198.18.0.9}]}}",
    ] {
        create(yaml).unwrap();
    }
}

/// `pkg/webhook/validating/network.go`, `NetworkUpdateValidation`.
#[test]
fn network_update_rules() {
    let c = Cluster::new();
    let ex = c.existing();
    type Edit = Box<dyn Fn(&mut Network)>;
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        (
            "network type must not be changed",
            "overlay",
            Box::new(|n| n.spec.network_type = Some(NetworkType::GlobalBgp)),
            "spec.type",
        ),
        (
            "must have node selector for underlay network",
            "vlan",
            Box::new(|n| n.spec.node_selector = None),
            "spec.nodeSelector",
        ),
        (
            "node selector must not be assigned for overlay network",
            "overlay",
            Box::new(|n| n.spec.node_selector = Some([("a".to_string(), "b".to_string())].into())),
            "spec.nodeSelector",
        ),
        (
            "node selector must not be assigned for global bgp network",
            "global",
            Box::new(|n| n.spec.node_selector = Some([("a".to_string(), "b".to_string())].into())),
            "spec.nodeSelector",
        ),
        (
            "network mode must not be changed",
            "vlan",
            Box::new(|n| n.spec.mode = Some(NetworkMode::Bgp)),
            "spec.mode",
        ),
        (
            "at least one bgp router need to be set",
            "bgp",
            Box::new(|n| n.spec.config = Some(NetworkConfig::default())),
            "spec.config.bgpPeers",
        ),
        (
            "invalid bgp peer ip address",
            "bgp",
            Box::new(|n| {
                if let Some(p) = n.spec.config.as_mut().and_then(|c| c.bgp_peers.as_mut()) {
                    p[0].address = "not-an-ip".into();
                }
            }),
            "spec.config.bgpPeers[0].address",
        ),
        (
            "net ID must not be changed",
            "vlan",
            Box::new(|n| n.spec.net_id = Some(7)),
            "spec.netID",
        ),
        (
            "net ID must not be changed",
            "overlay",
            Box::new(|n| n.spec.net_id = Some(5)),
            "spec.netID",
        ),
    ];
    for (rule, name, edit, field) in cases {
        let old = c.network(name);
        let mut new = old.clone();
        edit(&mut new);
        refused(
            rule,
            validate::network_update(old, &new, &ex).map_err(|e| e.to_string()),
            field,
        );
    }
    // Allowed upstream and here: a new nodeSelector of an underlay network, peers edited.
    let old = c.network("vlan");
    let mut new = old.clone();
    new.spec.node_selector = Some([("network".to_string(), "vlan2".to_string())].into());
    validate::network_update(old, &new, &ex).unwrap();
}

/// `pkg/webhook/validating/network.go`, `NetworkDeleteValidation` (the remote-cluster rule is
/// tested with the multi-cluster rules, `hybridnet_api::multicluster::validate`).
#[test]
fn network_delete_rules() {
    let c = Cluster::new();
    let ex = c.existing();
    refused(
        "still have child subnet",
        validate::network_delete(c.network("vlan"), &ex).map_err(|e| e.to_string()),
        "still has subnets",
    );
    refused(
        "still have global bgp ip instance in use",
        validate::network_delete(c.network("bgp"), &ex).map_err(|e| e.to_string()),
        "GlobalBGP addresses",
    );
    validate::network_delete(c.network("novlanid"), &ex).unwrap();
}

/// `pkg/webhook/validating/subnet.go`, `SubnetCreateValidation` (address range rules of
/// `ValidateAddressRange` are in `range_rules.rs`).
#[test]
fn subnet_create_rules() {
    let c = Cluster::new();
    let ex = c.existing();
    let create =
        |yaml: &str| validate::subnet_create(&subnet(yaml), &ex).map_err(|e| e.to_string());
    for (rule, yaml, field) in [
        (
            "must have parent network",
            "metadata: {name: s}\nspec: {network: '', range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.network",
        ),
        (
            "parent network does not exist",
            "metadata: {name: s}\nspec: {network: nope, range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.network",
        ),
        (
            "must have valid Net ID",
            "metadata: {name: s}\nspec: {network: novlanid, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}}",
            "spec.netID",
        ),
        (
            "have inconsistent Net ID with network",
            "metadata: {name: s}\nspec: {network: vlan, netID: 3, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}}",
            "spec.netID",
        ),
        (
            "must not set autoNatOutgoing with underlay subnet",
            "metadata: {name: s}\nspec: {network: vlan, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}, config: {autoNatOutgoing: false}}",
            "spec.config.autoNatOutgoing",
        ),
        (
            "must not assign net ID for overlay subnet",
            "metadata: {name: s}\nspec: {network: overlay, netID: 4, range: {version: '4', cidr: 198.18.20.0/24}}",
            "spec.netID",
        ),
        (
            "address range: invalid CIDR",
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '4', cidr: 198.18.20.0}}",
            "spec.range",
        ),
        (
            "subnet contains more than 65536 IPs",
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '4', cidr: 10.0.0.0/8}}",
            "spec.range",
        ),
        (
            "overlap with existing subnet",
            "metadata: {name: s}\nspec: {network: overlay, range: {version: '4', cidr: 100.64.1.0/24}}",
            "spec.range.cidr",
        ),
    ] {
        refused(rule, create(yaml), field);
    }
    create("metadata: {name: s}\nspec: {network: novlanid, netID: 30, range: {version: '4', cidr: 198.18.20.0/24, gateway: 198.18.20.1}}").unwrap();
}

/// `pkg/webhook/validating/subnet.go`, `SubnetUpdateValidation`.
#[test]
fn subnet_update_rules() {
    let mut c = Cluster::new();
    c.subnets.push(subnet(
        "metadata: {name: nov-a}\nspec: {network: novlanid, netID: 30, range: {version: '4', cidr: 198.18.30.0/24, gateway: 198.18.30.1}}",
    ));
    let ex = c.existing();
    type Edit = Box<dyn Fn(&mut Subnet)>;
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        (
            "must not change parent network",
            "vlan-a",
            Box::new(|s| s.spec.network = "novlanid".into()),
            "spec.network",
        ),
        (
            "must not change net ID",
            "nov-a",
            Box::new(|s| s.spec.net_id = Some(31)),
            "spec.netID",
        ),
        (
            "must not set autoNatOutgoing with underlay subnet",
            "vlan-a",
            Box::new(|s| {
                s.spec.config = Some(SubnetConfig {
                    auto_nat_outgoing: Some(true),
                    ..Default::default()
                })
            }),
            "spec.config.autoNatOutgoing",
        ),
        (
            "must not assign net ID for overlay subnet",
            "overlay-v4",
            Box::new(|s| s.spec.net_id = Some(4)),
            "spec.netID",
        ),
        (
            "must not change range start",
            "vlan-a",
            Box::new(|s| s.spec.range.start = Some("198.18.10.11".into())),
            "spec.range.start",
        ),
        (
            "must not change range end",
            "vlan-a",
            Box::new(|s| s.spec.range.end = Some("198.18.10.98".into())),
            "spec.range.end",
        ),
        (
            "must not change range gateway",
            "vlan-a",
            Box::new(|s| s.spec.range.gateway = Some("198.18.10.2".into())),
            "spec.range.gateway",
        ),
        (
            "must not change range CIDR",
            "overlay-v4",
            Box::new(|s| s.spec.range.cidr = "100.64.0.0/17".into()),
            "spec.range.cidr",
        ),
    ];
    for (rule, name, edit, field) in cases {
        let old = c.subnet(name);
        let mut new = old.clone();
        edit(&mut new);
        refused(
            rule,
            validate::subnet_update(old, &new, &ex).map_err(|e| e.to_string()),
            field,
        );
    }
    // reservedIPs may change, upstream and here.
    let old = c.subnet("vlan-a");
    let mut new = old.clone();
    new.spec.range.reserved_ips = Some(vec!["198.18.10.20".into()]);
    validate::subnet_update(old, &new, &ex).unwrap();
}

/// `pkg/webhook/validating/subnet.go`, `SubnetDeleteValidation`.
#[test]
fn subnet_delete_rules() {
    let c = Cluster::new();
    let ex = c.existing();
    refused(
        "still have using ips",
        validate::subnet_delete(c.subnet("vlan-a"), &ex).map_err(|e| e.to_string()),
        "still has addresses in use",
    );
    validate::subnet_delete(c.subnet("overlay-v4"), &ex).unwrap();
}

/// `pkg/webhook/validating/pod.go`, `PodCreateValidation`: the specified network and subnet are
/// read from annotations, then labels, as upstream (`PickFirstNonEmptyString`).
#[test]
fn pod_create_rules() {
    let c = Cluster::new();
    let empty = BTreeMap::new();
    let pod = |ann: &[(&str, &str)], labels: &[(&str, &str)], name: &str| -> Result<(), String> {
        let ann: BTreeMap<String, String> = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let input = PodConfigInput {
            pod_annotations: &ann,
            pod_labels: &labels,
            namespace_annotations: &empty,
            namespace_labels: &empty,
            retained: &[],
            default_network_type: NetworkType::Overlay,
            default_ip_family: IpFamily::IPv4,
            networks: &c.networks,
            subnets: &c.subnets,
        };
        let cfg = resolve_pod_network_config(&input).map_err(|e| e.to_string())?;
        let mine: Vec<IPInstance> = c
            .ipinstances
            .iter()
            .filter(|i| {
                i.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("networking.alibaba.com/pod"))
                    .map(String::as_str)
                    == Some(name)
            })
            .cloned()
            .collect();
        validate::pod_create(&validate::PodCheckInput {
            pod_name: name,
            pod_annotations: &ann,
            config: &cfg,
            pod_ipinstances: &mine,
            networks: &c.networks,
        })
        .map_err(|e| e.to_string())
    };
    const NET: &str = "networking.alibaba.com/specified-network";
    const SUBNET: &str = "networking.alibaba.com/specified-subnet";
    const TYPE: &str = "networking.alibaba.com/network-type";
    const POOL: &str = "networking.alibaba.com/ip-pool";
    const FAMILY: &str = "networking.alibaba.com/ip-family";
    let cases: Vec<(&str, Result<(), String>, &str)> = vec![
        (
            "specified network not found",
            pod(&[(NET, "nope")], &[], "p"),
            NET,
        ),
        (
            "specified network not found (label)",
            pod(&[], &[(NET, "nope")], "p"),
            NET,
        ),
        (
            "specified network type mismatch",
            pod(&[(NET, "vlan"), (TYPE, "Overlay")], &[], "p"),
            TYPE,
        ),
        (
            "pod has assigned ip of network, cannot assign to another network",
            pod(&[(NET, "overlay")], &[], "web-0"),
            NET,
        ),
        (
            "specified subnet not found (without a network)",
            pod(&[(SUBNET, "nope")], &[], "p"),
            SUBNET,
        ),
        (
            "specified subnet not found",
            pod(&[(NET, "vlan"), (SUBNET, "nope")], &[], "p"),
            SUBNET,
        ),
        (
            "specified subnet not belong to specified network",
            pod(&[(NET, "vlan"), (SUBNET, "overlay-v4")], &[], "p"),
            SUBNET,
        ),
        (
            "ip pool and network must be specified at the same time",
            pod(&[(POOL, "198.18.10.20")], &[], "p"),
            POOL,
        ),
        (
            "ip pool has invalid ip",
            pod(&[(NET, "vlan"), (POOL, "198.18.10.x")], &[], "p"),
            POOL,
        ),
        (
            "lacking ipv6 addresses for overlay mode",
            pod(&[(FAMILY, "IPv6")], &[], "p"),
            FAMILY,
        ),
        (
            "lacking dual stack addresses for overlay mode",
            pod(&[(FAMILY, "DualStack")], &[], "p"),
            FAMILY,
        ),
    ];
    for (rule, result, field) in cases {
        refused(rule, result, field);
    }
    // Intended differences (docs/api.md, "Behaviour"): upstream refuses these, ours accepts them.
    // A subnet implies its network (upstream: "subnet and network must be specified at the same
    // time"); ip-pool entries are parsed, not compared as text, so whitespace around an entry and
    // a non-canonical IPv6 spelling are accepted (upstream: "ip pool has invalid ip").
    pod(&[(SUBNET, "vlan-a")], &[], "p").unwrap();
    pod(&[(NET, "vlan"), (POOL, " 198.18.10.20")], &[], "p").unwrap();
    // Upstream allows these; so do we.
    pod(&[], &[], "p").unwrap();
    pod(&[(NET, "vlan")], &[], "web-0").unwrap();
    pod(
        &[(NET, "vlan"), (SUBNET, "vlan-a"), (POOL, "198.18.10.20")],
        &[],
        "p",
    )
    .unwrap();
    pod(&[(SUBNET, "vlan-a")], &[(NET, "vlan")], "p").unwrap();
}

//! The IPAM's inputs built from the CRD objects, including malformed and hostile values: every
//! one gives a clear error naming the object and field, and nothing valid is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod ipam_common;

use hybridnet_api::v1::{
    Address, AddressRange, Binding, IPInstance, IPInstanceSpec, IpVersion, Network, NetworkSpec,
    NetworkStatus, Subnet, SubnetConfig, SubnetSpec, SubnetStatus,
};
use hybridnet_operator::ipam::{
    Conflict, Cursors, HoldState, InstanceInput, IpFamily, Ipam, IpamError, MacAddr, NetworkInput,
    SubnetInput,
};
use ipam_common::*;

fn network_crd(name: &str, last_v4: Option<&str>) -> Network {
    let mut n = Network::new(
        name,
        NetworkSpec {
            net_id: Some(100),
            ..Default::default()
        },
    );
    n.status = Some(NetworkStatus {
        last_allocated_subnet: last_v4.map(Into::into),
        ..Default::default()
    });
    n
}

fn subnet_crd(name: &str, cidr: &str, last_ip: Option<&str>) -> Subnet {
    let mut s = Subnet::new(
        name,
        SubnetSpec {
            network: "net".into(),
            range: AddressRange {
                version: if cidr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                cidr: cidr.into(),
                gateway: None,
                ..Default::default()
            },
            config: Some(SubnetConfig {
                private: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    s.status = Some(SubnetStatus {
        last_allocated_ip: last_ip.map(Into::into),
        ..Default::default()
    });
    s
}

fn instance_crd(ns: &str, name: &str, subnet: &str, addr: &str, node: Option<&str>) -> IPInstance {
    let mut o = IPInstance::new(
        name,
        IPInstanceSpec {
            network: "net".into(),
            subnet: subnet.into(),
            address: Address {
                version: if addr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                ip: addr.into(),
                gateway: None,
                net_id: Some(100),
                mac: "02:12:34:00:00:0A".into(),
            },
            binding: Binding {
                node_name: node.map(Into::into),
                pod_name: Some("web-0".into()),
                ..Default::default()
            },
        },
    );
    o.metadata.namespace = Some(ns.into());
    o
}

#[test]
fn instance_from_crd_reads_every_field() {
    let i = InstanceInput::from_crd(&instance_crd(
        "default",
        "10-0-0-5",
        "a",
        "10.0.0.5/24",
        Some("node1"),
    ))
    .unwrap();
    assert_eq!(i.ip, ip("10.0.0.5"));
    assert_eq!((i.network.as_str(), i.subnet.as_str()), ("net", "a"));
    assert_eq!(i.pod.as_deref(), Some("web-0"));
    assert_eq!(i.state, HoldState::Allocated);
    assert_eq!(i.mac, Some(MacAddr::parse("02:12:34:00:00:0a").unwrap()));
    let v6 = InstanceInput::from_crd(&instance_crd(
        "default",
        "fd00-0-0-0-0-0-0-5",
        "v6",
        "fd00::5/120",
        None,
    ))
    .unwrap();
    assert_eq!(v6.ip, ip("fd00::5"));
    assert_eq!(v6.state, HoldState::Reserved, "no node means reserved");
}

#[test]
fn malformed_instances_are_refused_with_the_reason() {
    let cases = [
        (
            instance_crd("", "10-0-0-5", "a", "10.0.0.5/24", None),
            "metadata.namespace is empty",
        ),
        (
            instance_crd("d", "10-0-0-6", "a", "10.0.0.5/24", None),
            "spec.address.ip 10.0.0.5/24 does not match the name's address 10.0.0.6",
        ),
        (
            instance_crd("d", "web-0", "a", "10.0.0.5/24", None),
            "metadata.name is not the DNS form of spec.address.ip 10.0.0.5/24 (want 10-0-0-5)",
        ),
        (
            instance_crd("d", "10-0-0-5", "a", "10.0.0.5", None),
            "spec.address.ip: \"10.0.0.5\" is not a CIDR (missing /prefix)",
        ),
        (
            instance_crd("d", "10-0-0-5", "a", "10.0.0.5/33", None),
            "spec.address.ip: \"10.0.0.5/33\" has prefix length 33, more than 32",
        ),
        (
            instance_crd("d", "10-0-0-5", "", "10.0.0.5/24", None),
            "spec.network and spec.subnet are required",
        ),
        (
            instance_crd("d", "fd00-0-0-0-0-0-0-6", "a", "fd00::5/120", None),
            "spec.address.ip fd00::5/120 does not match the name's address fd00::6",
        ),
        (
            instance_crd("d", "fd00--5", "a", "fd00::5/120", None),
            "metadata.name is not the DNS form of spec.address.ip fd00::5/120 (want fd00-0-0-0-0-0-0-5)",
        ),
    ];
    for (obj, want) in cases {
        let e = InstanceInput::from_crd(&obj).unwrap_err();
        match &e {
            IpamError::InvalidInstance { reason, .. } => assert_eq!(reason, want),
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().starts_with("IPInstance "), "{e}");
    }
    let mut wrong_version = instance_crd("d", "10-0-0-5", "a", "10.0.0.5/24", None);
    wrong_version.spec.address.version = IpVersion::V6;
    assert!(InstanceInput::from_crd(&wrong_version).is_err());
    // A zero-padded spelling of the same address is accepted (it still marks the address).
    let padded = instance_crd("d", "fd00-0-0-0-0-0-0-0005", "a", "fd00::5/120", None);
    assert_eq!(InstanceInput::from_crd(&padded).unwrap().ip, ip("fd00::5"));
    // A MAC that does not parse is dropped, not fatal: the pod gets a fresh one.
    let mut bad_mac = instance_crd("d", "10-0-0-5", "a", "10.0.0.5/24", None);
    bad_mac.spec.address.mac = "not-a-mac".into();
    assert_eq!(InstanceInput::from_crd(&bad_mac).unwrap().mac, None);
}

#[test]
fn subnet_and_network_from_crd() {
    let s = SubnetInput::from_crd(&subnet_crd("a", "10.0.0.0/24", None)).unwrap();
    assert_eq!(
        (s.name.as_str(), s.network.as_str(), s.private),
        ("a", "net", false)
    );
    let mut bad = subnet_crd("a", "10.0.0.1/24", None);
    assert_eq!(
        SubnetInput::from_crd(&bad).unwrap_err().to_string(),
        "Subnet \"a\": spec.range.cidr: 10.0.0.1/24 is not canonical: the network address is 10.0.0.0/24"
    );
    bad.spec.range.cidr = "10.0.0.0/24".into();
    bad.spec.range.gateway = Some("10.0.1.1".into());
    assert!(
        SubnetInput::from_crd(&bad)
            .unwrap_err()
            .to_string()
            .contains("spec.range.gateway: 10.0.1.1 is outside 10.0.0.0/24")
    );
    bad.spec.range.gateway = None;
    bad.spec.network = String::new();
    assert!(
        SubnetInput::from_crd(&bad)
            .unwrap_err()
            .to_string()
            .contains("spec.network is empty")
    );
    let mut nameless = subnet_crd("a", "10.0.0.0/24", None);
    nameless.metadata.name = None;
    assert!(SubnetInput::from_crd(&nameless).is_err());
    let mut n = network_crd("net", None);
    assert_eq!(
        NetworkInput::from_crd(&n).unwrap(),
        NetworkInput {
            name: "net".into(),
            net_id: Some(100)
        }
    );
    n.metadata.name = None;
    assert!(NetworkInput::from_crd(&n).is_err());
}

#[test]
fn rebuild_from_crds_reports_bad_objects_and_keeps_the_good_ones() {
    let networks = [network_crd("net", Some("b"))];
    let subnets = [
        subnet_crd("a", "10.0.0.0/24", Some("10.0.0.7")),
        subnet_crd("b", "10.0.1.0/24", Some("garbage")),
        subnet_crd("broken", "10.0.2.1/24", None),
    ];
    let instances = [
        instance_crd("d", "10-0-0-5", "a", "10.0.0.5/24", Some("n1")),
        instance_crd("d", "10-0-1-9", "b", "10.0.1.9/24", None),
        instance_crd("d", "web-0", "a", "10.0.0.6/24", Some("n1")),
        instance_crd("d", "10-0-2-5", "broken", "10.0.2.5/24", Some("n1")),
    ];
    let (mut ipam, conflicts) = Ipam::rebuild_from_crds(&networks, &subnets, &instances);
    assert_eq!(conflicts.len(), 3, "{conflicts:#?}");
    assert!(
        matches!(&conflicts[0], Conflict::InvalidSubnet(IpamError::InvalidSubnet { subnet, .. }) if subnet == "broken")
    );
    assert!(
        matches!(&conflicts[1], Conflict::InvalidInstance(IpamError::InvalidInstance { name, .. }) if name == "web-0")
    );
    assert!(matches!(&conflicts[2], Conflict::UnknownSubnet { subnet, .. } if subnet == "broken"));
    assert_eq!(ipam.held_count(), 2);
    // Cursors from status: the subnet cursor of "a" is restored, the garbage one ignored, and
    // the network cursor points at "b".
    let c = ipam.cursors();
    assert_eq!(c.subnets.get("a"), Some(&ip("10.0.0.7")));
    assert!(!c.subnets.contains_key("b"));
    assert_eq!(
        c.networks["net"].last_allocated_subnet.as_deref(),
        Some("b")
    );
    assert_eq!(
        Cursors::from_status(&networks, &subnets).subnets.len(),
        1,
        "unparsable lastAllocatedIP dropped"
    );
    // Allocation continues in "b" (sticky), from its start since its cursor was unreadable.
    let a = alloc(&mut ipam, "new", IpFamily::IPv4, &[]).unwrap();
    assert_eq!((a[0].subnet.as_str(), a[0].ip), ("b", ip("10.0.1.1")));
    ipam.check_consistency().unwrap();
}

//! The operator's Subnet status counts (its IPAM's `subnet_usage`) and `kubectl hybridnet ip
//! usage` count the same holdings alike: addresses taken normally and by force (also on reserved
//! addresses), kept Reserved for gone stateful pods, and then reserved or excluded after they were
//! taken. Both count with `hybridnet_api::range::ParsedRange::counts_as_used`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::net::IpAddr;

use hybridnet_api::range::{ParsedRange, parse_address_range};
use hybridnet_api::v1::{AddressRange, IpVersion};
use hybridnet_operator::ipam::{
    AssignCandidate, AssignRequest, HoldState, Ipam, NetworkInput, PodKey, SubnetInput,
};
use kubectl_hybridnet::inventory::InstanceFacts;
use kubectl_hybridnet::usage::subnet_counts;
use proptest::prelude::*;

fn addr(off: u8) -> String {
    format!("198.18.0.{off}")
}

/// 198.18.0.0/27 with gateway .1, and the given reserved and excluded offsets.
fn range(reserved: &[u8], excluded: &[u8]) -> ParsedRange {
    let list = |v: &[u8]| (!v.is_empty()).then(|| v.iter().map(|o| addr(*o)).collect());
    parse_address_range(
        &AddressRange {
            version: IpVersion::V4,
            cidr: "198.18.0.0/27".into(),
            start: None,
            end: None,
            gateway: Some(addr(1)),
            reserved_ips: list(reserved),
            exclude_ips: list(excluded),
        },
        "spec.range",
    )
    .unwrap()
}

fn subnet(range: ParsedRange) -> SubnetInput {
    SubnetInput {
        name: "s1".into(),
        network: "net".into(),
        range,
        net_id: None,
        private: false,
    }
}

/// What the CLI reads from the IPInstance a holding stands for.
fn facts(ip: IpAddr, reserved: bool) -> InstanceFacts {
    InstanceFacts {
        namespace: "default".into(),
        name: ip.to_string().replace('.', "-"),
        ip: Some(ip),
        prefix_length: Some(27),
        raw_ip: format!("{ip}/27"),
        version: "4".into(),
        mac: String::new(),
        gateway: Some(addr(1)),
        net_id: None,
        subnet: "s1".into(),
        network: "net".into(),
        node: (!reserved).then(|| "n1".into()),
        pod: Some("p".into()),
        pod_uid: None,
        owner: None,
        terminating: false,
        migration_peer: None,
    }
}

fn offsets() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::btree_set(2u8..31, 0..8).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #[test]
    fn operator_and_cli_count_the_same_usage(
        reserved in offsets(),
        excluded in offsets(),
        takes in proptest::collection::vec((2u8..31, any::<bool>(), any::<bool>()), 0..24),
        later_reserved in offsets(),
        later_excluded in offsets(),
        respec in any::<bool>(),
    ) {
        let mut ipam = Ipam::new();
        ipam.upsert_network(NetworkInput { name: "net".into(), net_id: Some(100) }).unwrap();
        ipam.upsert_subnet(subnet(range(&reserved, &excluded))).unwrap();
        for (i, (off, force, keep)) in takes.iter().enumerate() {
            let pod = PodKey::new("default", format!("p{i}"));
            let taken = ipam.assign(&AssignRequest {
                network: "net".into(),
                pod: pod.clone(),
                candidates: vec![AssignCandidate { subnet: None, ip: addr(*off).parse().unwrap() }],
                force: *force,
            });
            if taken.is_ok() && *keep {
                ipam.reserve_pod("net", &pod);
            }
        }
        let spec = if respec {
            // Reserved or excluded after some addresses were taken: holdings stay.
            let r = range(&later_reserved, &later_excluded);
            ipam.upsert_subnet(subnet(r.clone())).unwrap();
            r
        } else {
            range(&reserved, &excluded)
        };
        let operator = ipam.subnet_usage("s1").unwrap();
        let held: Vec<InstanceFacts> = ipam
            .held_ips()
            .iter()
            .map(|h| facts(h.ip, h.state == HoldState::Reserved))
            .collect();
        let cli = subnet_counts("s1", &spec, &held);
        prop_assert_eq!(
            (operator.total, operator.used, operator.reserved, operator.available),
            (cli.total, cli.used, cli.reserved, cli.available),
            "holdings {:?}", ipam.held_ips()
        );
        prop_assert!(cli.reserved <= cli.used && cli.used <= cli.total);
    }
}

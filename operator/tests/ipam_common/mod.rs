//! Builders shared by the IPAM integration tests.
#![allow(dead_code)]

use std::net::IpAddr;

use hybridnet_api::range::{ParsedRange, parse_address_range};
use hybridnet_api::v1::{AddressRange, IpVersion};
use hybridnet_operator::ipam::{
    AllocateRequest, Allocation, AssignCandidate, AssignRequest, IpFamily, Ipam, IpamError,
    MacRandom, NetworkInput, PodKey, SubnetInput,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A validated range: `cidr`, optional start/end/gateway, reserved and excluded lists.
pub fn range(
    cidr: &str,
    start: Option<&str>,
    end: Option<&str>,
    gateway: Option<&str>,
    reserved: &[&str],
    excluded: &[&str],
) -> ParsedRange {
    let version = if cidr.contains(':') {
        IpVersion::V6
    } else {
        IpVersion::V4
    };
    let strs = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
    parse_address_range(
        &AddressRange {
            version,
            cidr: cidr.into(),
            start: start.map(Into::into),
            end: end.map(Into::into),
            gateway: gateway.map(Into::into),
            reserved_ips: strs(reserved),
            exclude_ips: strs(excluded),
        },
        "spec.range",
    )
    .unwrap()
}

pub fn subnet(name: &str, network: &str, range: ParsedRange) -> SubnetInput {
    SubnetInput {
        name: name.into(),
        network: network.into(),
        range,
        net_id: None,
        private: false,
    }
}

pub fn simple_subnet(name: &str, network: &str, cidr: &str) -> SubnetInput {
    subnet(name, network, range(cidr, None, None, None, &[], &[]))
}

pub fn network(name: &str, net_id: Option<i32>) -> NetworkInput {
    NetworkInput {
        name: name.into(),
        net_id,
    }
}

pub fn pod(name: &str) -> PodKey {
    PodKey::new("default", name)
}

/// A deterministic MAC source: 1, 2, 3, ...
pub fn counting_macs() -> MacRandom {
    let mut n = 0u32;
    Box::new(move || {
        n += 1;
        n
    })
}

/// An IPAM with one network `net` and the given subnets.
pub fn ipam_with(subnets: Vec<SubnetInput>) -> Ipam {
    let mut ipam = Ipam::new().with_mac_random(counting_macs());
    ipam.upsert_network(network("net", Some(100))).unwrap();
    for s in subnets {
        ipam.upsert_subnet(s).unwrap();
    }
    ipam
}

pub fn alloc(
    ipam: &mut Ipam,
    p: &str,
    family: IpFamily,
    subnets: &[&str],
) -> Result<Vec<Allocation>, IpamError> {
    ipam.allocate(&AllocateRequest {
        network: "net".into(),
        pod: pod(p),
        family,
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
    })
}

pub fn alloc_v4(ipam: &mut Ipam, p: &str) -> IpAddr {
    alloc(ipam, p, IpFamily::IPv4, &[]).unwrap()[0].ip
}

pub fn assign(
    ipam: &mut Ipam,
    p: &str,
    candidates: &[(Option<&str>, &str)],
    force: bool,
) -> Result<Vec<Allocation>, IpamError> {
    ipam.assign(&AssignRequest {
        network: "net".into(),
        pod: pod(p),
        candidates: candidates
            .iter()
            .map(|(s, a)| AssignCandidate {
                subnet: s.map(Into::into),
                ip: ip(a),
            })
            .collect(),
        force,
    })
}

pub fn ips(a: &[Allocation]) -> Vec<String> {
    a.iter().map(|x| x.ip.to_string()).collect()
}

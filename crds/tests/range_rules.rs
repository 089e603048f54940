//! Table-driven address-range rules (upstream `pkg/webhook/validating/subnet.go` and
//! `pkg/ipam/types/subnet.go`) and upstream's regressions: IPv6 arithmetic, 0.x.x.x subnets,
//! /31-/32 refusal, capacity limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use hybridnet_api::range::{MAX_SUBNET_CAPACITY, parse_address_range};
use hybridnet_api::v1::{AddressRange, IpVersion};

fn r(version: IpVersion, cidr: &str) -> AddressRange {
    AddressRange {
        version,
        cidr: cidr.into(),
        ..Default::default()
    }
}

fn err_of(range: &AddressRange) -> String {
    parse_address_range(range, "spec.range")
        .unwrap_err()
        .to_string()
}

#[test]
fn refused_ranges_name_the_field_and_value() {
    use IpVersion::*;
    let with = |f: &dyn Fn(&mut AddressRange), base: AddressRange| {
        let mut b = base;
        f(&mut b);
        b
    };
    let v4 = || r(V4, "10.0.0.0/24");
    let cases: Vec<(AddressRange, &str)> = vec![
        (
            r(V4, "10.0.0.1/24"),
            "spec.range.cidr: 10.0.0.1/24 is not canonical: the network address is 10.0.0.0/24",
        ),
        (
            r(V4, "10.0.0.0"),
            "spec.range.cidr: \"10.0.0.0\" is not a CIDR (missing /prefix)",
        ),
        (
            r(V4, "10.0.0.0/33"),
            "spec.range.cidr: \"10.0.0.0/33\" has prefix length 33, more than 32",
        ),
        (
            r(V4, "banana/24"),
            "spec.range.cidr: \"banana/24\" is not a CIDR (bad address)",
        ),
        (
            r(V4, "10.0.0.0/31"),
            "spec.range.cidr: 10.0.0.0/31 is too small: prefix length must be at most /30",
        ),
        (
            r(V4, "10.0.0.0/32"),
            "spec.range.cidr: 10.0.0.0/32 is too small",
        ),
        (
            r(V6, "fd00::/127"),
            "spec.range.cidr: fd00::/127 is too small: prefix length must be at most /126",
        ),
        (
            r(V6, "fd00::/128"),
            "spec.range.cidr: fd00::/128 is too small",
        ),
        (
            r(V6, "10.0.0.0/24"),
            "spec.range.version: \"6\" does not match the IPv4 CIDR 10.0.0.0/24",
        ),
        (
            r(V4, "10.0.0.0/8"),
            "spec.range: 10.0.0.0/8 holds 16777214 addresses, more than the limit of 65536",
        ),
        (r(V6, "fd00::/64"), "more than the limit of 65536"),
        (
            with(&|b| b.gateway = Some("10.0.1.1".into()), v4()),
            "spec.range.gateway: 10.0.1.1 is outside 10.0.0.0/24",
        ),
        (
            with(&|b| b.gateway = Some("fd00::1".into()), v4()),
            "spec.range.gateway: fd00::1 is not an IPv4 address",
        ),
        (
            with(&|b| b.gateway = Some("10.0.0.x".into()), v4()),
            "spec.range.gateway: \"10.0.0.x\" is not an IP address",
        ),
        (
            with(&|b| b.start = Some("10.0.1.5".into()), v4()),
            "spec.range.start: 10.0.1.5 is outside 10.0.0.0/24",
        ),
        (
            with(&|b| b.end = Some("9.255.255.255".into()), v4()),
            "spec.range.end: 9.255.255.255 is outside 10.0.0.0/24",
        ),
        (
            with(
                &|b| {
                    b.start = Some("10.0.0.200".into());
                    b.end = Some("10.0.0.100".into())
                },
                v4(),
            ),
            "spec.range.start: 10.0.0.200 is after end 10.0.0.100",
        ),
        (
            with(
                &|b| b.reserved_ips = Some(vec!["10.0.0.5".into(), "10.0.9.5".into()]),
                v4(),
            ),
            "spec.range.reservedIPs[1]: 10.0.9.5 is outside 10.0.0.0/24",
        ),
        (
            with(&|b| b.exclude_ips = Some(vec!["".into()]), v4()),
            "spec.range.excludeIPs[0]: \"\" is not an IP address",
        ),
        (
            with(&|b| b.exclude_ips = Some(vec![" 10.0.0.9".into()]), v4()),
            "spec.range.excludeIPs[0]: \" 10.0.0.9\" is not an IP address",
        ),
    ];
    for (range, want) in cases {
        let got = err_of(&range);
        assert!(
            got.contains(want),
            "range {range:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn defaults_and_capacity() {
    use IpVersion::*;
    let p = parse_address_range(&r(V4, "10.0.0.0/24"), "spec.range").unwrap();
    assert_eq!(p.ip(p.start).to_string(), "10.0.0.1");
    assert_eq!(p.ip(p.end).to_string(), "10.0.0.254");
    assert_eq!(p.capacity(), 254);

    // IPv6 ends at the last address (no broadcast).
    let p = parse_address_range(&r(V6, "fd00::/120"), "spec.range").unwrap();
    assert_eq!(p.ip(p.end).to_string(), "fd00::ff");
    assert_eq!(p.capacity(), 255);

    // Exactly the limit is fine: a /16 v4 is 65534, a /112 v6 is 65535.
    assert_eq!(
        parse_address_range(&r(V6, "fd00::/112"), "r")
            .unwrap()
            .capacity(),
        65535
    );
    let mut big = r(V6, "fd00::/111");
    big.end = Some("fd00::1:0".into());
    assert_eq!(
        parse_address_range(&big, "r").unwrap().capacity(),
        MAX_SUBNET_CAPACITY
    );
}

#[test]
fn subnet_at_zero_with_start_two_regression() {
    // Upstream #342: 0.0.0.0/24 with start 0.0.0.2 hung the manager and miscounted.
    let mut range = r(IpVersion::V4, "0.0.0.0/24");
    range.start = Some("0.0.0.2".into());
    let p = parse_address_range(&range, "spec.range").unwrap();
    assert_eq!(p.capacity(), 253);
    assert!(!p.contains(1));
    assert!(p.contains(2));
}

#[test]
fn total_excludes_gateway_reserved_and_excluded() {
    let mut range = r(IpVersion::V4, "192.168.56.0/24");
    range.gateway = Some("192.168.56.1".into());
    range.start = Some("192.168.56.100".into());
    range.end = Some("192.168.56.200".into());
    range.reserved_ips = Some(vec![
        "192.168.56.101".into(),
        "192.168.56.102".into(),
        "192.168.56.5".into(),
    ]);
    range.exclude_ips = Some(vec!["192.168.56.150".into(), "192.168.56.150".into()]);
    let p = parse_address_range(&range, "spec.range").unwrap();
    // 101 addresses in 100..200, one excluded (listed twice), gateway outside the span,
    // two reserved inside the span (the third is outside it).
    assert_eq!(p.capacity(), 100);
    assert_eq!(p.allocatable_count(), 98);
}

mod props {
    use super::*;
    use hybridnet_api::ipmath::{Cidr, ip_to_u128, range_to_cidrs, u128_to_ip};
    use hybridnet_api::naming::{instance_name_to_ip, ip_to_instance_name};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            // Edges where arithmetic overflowed upstream.
            Just(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Just(IpAddr::V6(Ipv6Addr::from(u128::MAX))),
        ]
    }

    proptest! {
        #[test]
        fn name_round_trips(ip in any_ip()) {
            let name = ip_to_instance_name(ip);
            prop_assert_eq!(instance_name_to_ip(&name), Some(ip));
            // Names are valid Kubernetes object names (DNS subdomain characters).
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }

        #[test]
        fn integer_round_trips(ip in any_ip()) {
            let v = IpVersion::of(&ip);
            prop_assert_eq!(u128_to_ip(v, ip_to_u128(ip)), ip);
        }

        #[test]
        fn cidr_blocks_cover_a_range_exactly(a in any::<u32>(), len in 0u32..100_000) {
            let first = u128::from(a);
            let last = (first + u128::from(len)).min(u128::from(u32::MAX));
            let blocks = range_to_cidrs(IpVersion::V4, first, last);
            let mut next = first;
            for b in &blocks {
                prop_assert_eq!(b.first(), next, "blocks are contiguous and aligned");
                prop_assert_eq!(b.network, b.first());
                next = b.last() + 1;
            }
            prop_assert_eq!(next, last + 1);
            prop_assert!(blocks.len() <= 64);
        }

        #[test]
        fn canonical_cidrs_parse_back(n in any::<u128>(), prefix in 0u8..=128) {
            let c = Cidr { version: IpVersion::V6, network: n, prefix };
            let text = c.to_string();
            let back = Cidr::parse_canonical(&text).unwrap();
            prop_assert_eq!(back.first(), c.first());
            prop_assert_eq!(back.last(), c.last());
            prop_assert!(back.contains_u128(n));
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = Cidr::parse_canonical(&s);
            let _ = instance_name_to_ip(&s);
            let _ = parse_address_range(&AddressRange { cidr: s.clone(), start: Some(s.clone()), ..Default::default() }, "r");
        }
    }
}

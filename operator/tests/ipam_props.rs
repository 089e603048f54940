//! proptest state machine over random IPAM operation sequences (allocate, assign, release,
//! reserve, MAC, subnet edits, rebuild). After every step the IPAM's invariants are checked
//! against an independent recount, and automatic allocations are compared with a naive
//! implementation of the spec (sorted subnets, sticky subnet cursor, round-robin address cursor).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod ipam_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hybridnet_api::ipmath::ip_to_u128;
use hybridnet_api::v1::IpVersion;
use hybridnet_operator::ipam::{
    AllocateRequest, AssignCandidate, AssignRequest, Cursors, HeldIp, HoldState, InstanceInput,
    IpFamily, Ipam, IpamError, NetworkUsage, PodKey, SubnetInput, Usage,
};
use ipam_common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        pod: u8,
        family: u8,
        named: Option<u8>,
    },
    Assign {
        pod: u8,
        v4: Option<(u8, u8)>,
        v6: Option<(u8, u8)>,
        by_name: bool,
        force: bool,
    },
    Release(usize),
    Reserve(usize),
    ReservePod(u8),
    Mac {
        pod: u8,
        requested: Option<u8>,
    },
    EditSubnet {
        subnet: u8,
        reserved: u16,
        private: bool,
    },
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0u8..3, proptest::option::weighted(0.25, 0u8..4))
            .prop_map(|(pod, family, named)| Op::Allocate { pod, family, named }),
        2 => (0u8..8, proptest::option::of((0u8..4, 0u8..16)), proptest::option::of((0u8..4, 0u8..16)), any::<bool>(), any::<bool>())
            .prop_map(|(pod, v4, v6, by_name, force)| Op::Assign { pod, v4, v6, by_name, force }),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Reserve),
        1 => (0u8..8).prop_map(Op::ReservePod),
        1 => (0u8..8, proptest::option::weighted(0.5, 0u8..3)).prop_map(|(pod, requested)| Op::Mac { pod, requested }),
        1 => (0u8..4, any::<u16>(), proptest::bool::weighted(0.3))
            .prop_map(|(subnet, reserved, private)| Op::EditSubnet { subnet, reserved, private }),
        1 => Just(Op::Rebuild),
    ]
}

const POOL_MACS: [&str; 3] = [
    "02:aa:00:00:00:01",
    "02:aa:00:00:00:02",
    "02:aa:00:00:00:03",
];

fn pod_of(i: u8) -> PodKey {
    // Two namespaces, so equal names in different namespaces are different pods.
    PodKey::new(
        if i % 4 == 3 { "other" } else { "default" },
        format!("p{}", i / 2),
    )
}

fn initial_subnets() -> Vec<SubnetInput> {
    vec![
        // a: .1-.14, gateway .1, excluded .2 => 12 usable.
        subnet(
            "a",
            "net",
            range(
                "10.0.0.0/28",
                None,
                None,
                Some("10.0.0.1"),
                &[],
                &["10.0.0.2"],
            ),
        ),
        // b: .1-.6
        simple_subnet("b", "net", "10.0.1.0/29"),
        // c: fd00::1-f, gateway ::1
        subnet(
            "c",
            "net",
            range("fd00::/124", None, None, Some("fd00::1"), &[], &[]),
        ),
        // d: fd00::12-1f
        subnet(
            "d",
            "net",
            range("fd00::10/124", Some("fd00::12"), None, None, &[], &[]),
        ),
    ]
}

struct Model {
    subnets: Vec<SubnetInput>,
}

impl Model {
    fn by_name(&self, name: &str) -> &SubnetInput {
        self.subnets.iter().find(|s| s.name == name).unwrap()
    }

    /// Independent recount of the usage counters from the held addresses and the ranges.
    fn usage(&self, held: &[HeldIp]) -> BTreeMap<String, Usage> {
        let mut out = BTreeMap::new();
        for s in &self.subnets {
            let r = &s.range;
            let total = (r.start..=r.end)
                .filter(|n| r.contains(*n) && !r.reserved.contains(n))
                .count() as u64;
            let mine: Vec<&HeldIp> = held.iter().filter(|h| h.subnet == s.name).collect();
            let counted = |h: &&&HeldIp| {
                let n = ip_to_u128(h.ip);
                r.contains(n) && !r.reserved.contains(&n)
            };
            let used = mine.iter().filter(counted).count() as u64;
            // Reserved holdings are part of `used`.
            let reserved = mine
                .iter()
                .filter(counted)
                .filter(|h| h.state == HoldState::Reserved)
                .count() as u64;
            out.insert(
                s.name.clone(),
                Usage {
                    total,
                    used,
                    available: total - used,
                    reserved,
                },
            );
        }
        out
    }

    /// What automatic allocation of `version` must pick, by the spec, from scratch.
    fn expected_auto(
        &self,
        version: IpVersion,
        held: &[HeldIp],
        cursors: &Cursors,
    ) -> Option<(String, IpAddr)> {
        let mut fam: Vec<&SubnetInput> = self
            .subnets
            .iter()
            .filter(|s| s.range.version == version)
            .collect();
        fam.sort_by(|a, b| a.name.cmp(&b.name));
        let taken: BTreeSet<IpAddr> = held.iter().map(|h| h.ip).collect();
        let free = |s: &SubnetInput, n: u128| {
            s.range.contains(n) && !s.range.reserved.contains(&n) && !taken.contains(&s.range.ip(n))
        };
        let cur = cursors.networks.get("net").and_then(|c| match version {
            IpVersion::V4 => c.last_allocated_subnet.clone(),
            IpVersion::V6 => c.last_allocated_ipv6_subnet.clone(),
        });
        let start = cur
            .map(|c| fam.iter().filter(|s| s.name < c).count())
            .unwrap_or(0);
        for k in 0..fam.len() {
            let s = fam[(start + k) % fam.len()];
            if s.private || !(s.range.start..=s.range.end).any(|n| free(s, n)) {
                continue;
            }
            let after = cursors
                .subnets
                .get(&s.name)
                .map(|ip| ip_to_u128(*ip) + 1)
                .filter(|n| *n <= s.range.end)
                .unwrap_or(s.range.start);
            let n = (after..=s.range.end)
                .chain(s.range.start..after)
                .find(|n| free(s, *n))?;
            return Some((s.name.clone(), s.range.ip(n)));
        }
        None
    }
}

fn snapshot(ipam: &Ipam) -> (Vec<HeldIp>, Cursors, Option<NetworkUsage>) {
    (ipam.held_ips(), ipam.cursors(), ipam.network_usage("net"))
}

fn check_invariants(ipam: &Ipam, model: &Model) -> Result<(), TestCaseError> {
    ipam.check_consistency().map_err(TestCaseError::fail)?;
    let held = ipam.held_ips();
    // No address held twice.
    let distinct: BTreeSet<IpAddr> = held.iter().map(|h| h.ip).collect();
    prop_assert_eq!(distinct.len(), held.len());
    // Never gateway, excluded or out of range.
    for h in &held {
        let r = &model.by_name(&h.subnet).range;
        prop_assert!(
            r.contains_ip(h.ip),
            "{} held in {} but not usable",
            h.ip,
            h.subnet
        );
    }
    // Counters equal an independent recount.
    let recount = model.usage(&held);
    for (name, u) in &recount {
        prop_assert_eq!(ipam.subnet_usage(name), Some(*u), "subnet {}", name);
    }
    let nu = ipam.network_usage("net").unwrap();
    let sum = |names: &[&str]| {
        names.iter().fold(Usage::default(), |mut a, n| {
            let u = recount[*n];
            a.total += u.total;
            a.used += u.used;
            a.available += u.available;
            a.reserved += u.reserved;
            a
        })
    };
    prop_assert_eq!(nu.v4, sum(&["a", "b"]));
    prop_assert_eq!(nu.v6, sum(&["c", "d"]));
    prop_assert_eq!(
        nu.dual_stack_available,
        nu.v4.available.min(nu.v6.available)
    );
    // One MAC per pod, unique in the network.
    let mut macs: BTreeMap<(String, String), _> = BTreeMap::new();
    for h in &held {
        let key = (h.namespace.clone(), h.pod.clone().unwrap_or_default());
        let prev = macs.insert(key.clone(), h.mac);
        prop_assert!(
            prev.is_none() || prev == Some(h.mac),
            "pod {:?} has two MACs",
            key
        );
    }
    let assigned: Vec<_> = macs.values().flatten().collect();
    let unique: BTreeSet<_> = assigned.iter().collect();
    prop_assert_eq!(unique.len(), assigned.len(), "MAC shared by two pods");
    // Rebuild from the current instances and cursors reproduces the same state.
    let instances: Vec<InstanceInput> = held.iter().map(HeldIp::to_instance).collect();
    let (rebuilt, conflicts) = Ipam::rebuild(
        &[network("net", Some(100))],
        &model.subnets,
        &instances,
        &ipam.cursors(),
    );
    prop_assert!(conflicts.is_empty(), "{:?}", conflicts);
    prop_assert_eq!(snapshot(&rebuilt), snapshot(ipam));
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model {
        subnets: initial_subnets(),
    };
    let mut ipam = ipam_with(model.subnets.clone());
    let names = ["a", "b", "c", "d"];
    for op in ops {
        let before = snapshot(&ipam);
        let taken_before: BTreeMap<IpAddr, HeldIp> =
            before.0.iter().map(|h| (h.ip, h.clone())).collect();
        let result: Result<(), IpamError> = match &op {
            Op::Allocate { pod, family, named } => {
                let fam = [IpFamily::IPv4, IpFamily::IPv6, IpFamily::DualStack][*family as usize];
                let named: Vec<&str> = named.iter().map(|i| names[*i as usize]).collect();
                // Expected picks for the families without a named subnet.
                let expect: Vec<(IpVersion, Option<(String, IpAddr)>)> = match fam {
                    IpFamily::IPv4 => vec![IpVersion::V4],
                    IpFamily::IPv6 => vec![IpVersion::V6],
                    IpFamily::DualStack => vec![IpVersion::V4, IpVersion::V6],
                }
                .into_iter()
                .map(|v| (v, model.expected_auto(v, &before.0, &before.1)))
                .collect();
                let r = ipam.allocate(&AllocateRequest {
                    network: "net".into(),
                    pod: pod_of(*pod),
                    family: fam,
                    subnets: named.iter().map(|s| s.to_string()).collect(),
                });
                match r {
                    Ok(got) => {
                        prop_assert_eq!(got.len(), expect.len(), "one address per family");
                        for (a, (v, e)) in got.iter().zip(&expect) {
                            prop_assert_eq!(a.version, *v);
                            prop_assert!(!taken_before.contains_key(&a.ip), "{} was held", a.ip);
                            let r = &model.by_name(&a.subnet).range;
                            prop_assert!(
                                !r.reserved.contains(&ip_to_u128(a.ip)),
                                "allocate handed out reserved {}",
                                a.ip
                            );
                            if !named.iter().any(|n| model.by_name(n).range.version == *v) {
                                prop_assert_eq!(
                                    Some((a.subnet.clone(), a.ip)),
                                    e.clone(),
                                    "automatic pick differs from the spec"
                                );
                            }
                        }
                        Ok(())
                    }
                    Err(e) => {
                        if named.is_empty() {
                            prop_assert!(
                                expect.iter().any(|(_, e)| e.is_none()),
                                "refused although the spec finds addresses: {}",
                                e
                            );
                        }
                        Err(e)
                    }
                }
            }
            Op::Assign {
                pod,
                v4,
                v6,
                by_name,
                force,
            } => {
                let mut cands: Vec<(Option<&str>, String)> = Vec::new();
                if let Some((s, k)) = v4 {
                    let s = &names[(*s % 2) as usize];
                    let r = &model.by_name(s).range;
                    let ip = r.ip(r.cidr.first() + u128::from(*k));
                    cands.push((by_name.then_some(*s), ip.to_string()));
                }
                if let Some((s, k)) = v6 {
                    let s = &names[2 + (*s % 2) as usize];
                    let r = &model.by_name(s).range;
                    let ip = r.ip(r.cidr.first() + u128::from(*k));
                    cands.push((by_name.then_some(*s), ip.to_string()));
                }
                let me = pod_of(*pod);
                let req = AssignRequest {
                    network: "net".into(),
                    pod: me.clone(),
                    candidates: cands
                        .iter()
                        .map(|(s, a)| AssignCandidate {
                            subnet: s.map(Into::into),
                            ip: ip(a),
                        })
                        .collect(),
                    force: *force,
                };
                match ipam.assign(&req) {
                    Ok(got) => {
                        prop_assert_eq!(got.len(), cands.len());
                        for a in &got {
                            let r = &model.by_name(&a.subnet).range;
                            let reserved = r.reserved.contains(&ip_to_u128(a.ip));
                            match taken_before.get(&a.ip) {
                                None => prop_assert!(
                                    *force || !reserved,
                                    "reserved {} taken without force",
                                    a.ip
                                ),
                                Some(h)
                                    if h.namespace == me.namespace
                                        && h.pod.as_deref() == Some(me.name.as_str()) => {}
                                Some(h) => prop_assert!(
                                    *force && h.state == HoldState::Reserved,
                                    "{} taken from {:?}",
                                    a.ip,
                                    h
                                ),
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Release(i) => {
                if before.0.is_empty() {
                    Ok(())
                } else {
                    let h = &before.0[i % before.0.len()];
                    prop_assert_eq!(ipam.release("net", &h.subnet, h.ip), Ok(true));
                    prop_assert!(ipam.holder_of("net", h.ip).is_none());
                    Ok(())
                }
            }
            Op::Reserve(i) => {
                if before.0.is_empty() {
                    Ok(())
                } else {
                    let h = &before.0[i % before.0.len()];
                    ipam.reserve("net", &h.subnet, h.ip).unwrap();
                    Ok(())
                }
            }
            Op::ReservePod(p) => {
                ipam.reserve_pod("net", &pod_of(*p));
                Ok(())
            }
            Op::Mac { pod, requested } => {
                let me = pod_of(*pod);
                let req = requested.map(|i| POOL_MACS[i as usize]);
                match ipam.allocate_mac("net", &me, req) {
                    Ok(m) => {
                        if let Some(r) = req {
                            prop_assert_eq!(m.to_string(), r);
                        } else {
                            prop_assert!(m.is_locally_administered() && m.is_unicast());
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::EditSubnet {
                subnet: si,
                reserved,
                private,
            } => {
                let s = &mut model.subnets[*si as usize];
                let r = &mut s.range;
                r.reserved = (0..15u32)
                    .filter(|b| *reserved & 0x8000 != 0 && reserved & (1 << b) != 0)
                    .map(|b| r.start + u128::from(b))
                    .filter(|n| *n <= r.end)
                    .collect();
                s.private = *private;
                ipam.upsert_subnet(s.clone()).unwrap();
                Ok(())
            }
            Op::Rebuild => {
                let instances: Vec<InstanceInput> =
                    before.0.iter().map(HeldIp::to_instance).collect();
                let (r, conflicts) = Ipam::rebuild(
                    &[network("net", Some(100))],
                    &model.subnets,
                    &instances,
                    &before.1,
                );
                prop_assert!(conflicts.is_empty());
                ipam = r.with_mac_random(counting_macs());
                Ok(())
            }
        };
        if result.is_err() {
            prop_assert_eq!(
                &snapshot(&ipam),
                &before,
                "refused {:?} changed the state",
                op
            );
        }
        check_invariants(&ipam, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

#[test]
fn a_long_fixed_sequence_fills_and_drains_every_subnet() {
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.push(Op::Allocate {
            pod: i % 8,
            family: i % 3,
            named: None,
        });
        if i % 5 == 0 {
            ops.push(Op::Release(i as usize * 7));
        }
    }
    ops.push(Op::Rebuild);
    ops.extend((0..40).map(Op::Release));
    run(ops).unwrap();
}

/// Instances with random addresses (some invalid for their subnet, some duplicated, some in an
/// unknown subnet), namespaces, pods, states and MACs.
fn messy_instance() -> impl Strategy<Value = InstanceInput> {
    (
        0u8..4,
        0u8..20,
        0u8..3,
        0u8..6,
        any::<bool>(),
        proptest::option::of(0u8..4),
    )
        .prop_map(|(s, k, ns, p, reserved, mac)| {
            let subnets = initial_subnets();
            let (subnet, addr) = match s {
                0..=2 => {
                    let r = &subnets[s as usize].range;
                    (
                        subnets[s as usize].name.clone(),
                        r.ip(r.cidr.first() + u128::from(k)),
                    )
                }
                _ => ("ghost".to_string(), ip("10.9.9.9")),
            };
            InstanceInput {
                namespace: format!("ns{ns}"),
                name: hybridnet_api::naming::ip_to_instance_name(addr),
                network: "net".into(),
                subnet,
                ip: addr,
                pod: (p > 0).then(|| format!("pod{p}")),
                state: if reserved {
                    HoldState::Reserved
                } else {
                    HoldState::Allocated
                },
                mac: mac.map(|m| hybridnet_operator::ipam::MacAddr([2, 0, 0, 0, 0, m])),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Rebuild does not depend on the order of its inputs (state, cursors, conflicts), never
    /// holds an address twice, and a second rebuild from its own export is a fixed point.
    #[test]
    fn rebuild_is_order_independent_and_idempotent(
        instances in proptest::collection::vec(messy_instance(), 0..40),
        seed in any::<u64>(),
    ) {
        let nets = [network("net", Some(100))];
        let subnets = initial_subnets();
        let mut shuffled = instances.clone();
        // Deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut subs_rev = subnets.clone();
        subs_rev.reverse();
        let (a, ca) = Ipam::rebuild(&nets, &subnets, &instances, &Cursors::default());
        let (b, cb) = Ipam::rebuild(&nets, &subs_rev, &shuffled, &Cursors::default());
        prop_assert_eq!(snapshot(&a), snapshot(&b));
        let text = |c: &[hybridnet_operator::ipam::Conflict]| {
            let mut v: Vec<String> = c.iter().map(|c| c.to_string()).collect();
            v.sort();
            v
        };
        prop_assert_eq!(text(&ca), text(&cb));
        a.check_consistency().map_err(TestCaseError::fail)?;
        let held = a.held_ips();
        let distinct: BTreeSet<IpAddr> = held.iter().map(|h| h.ip).collect();
        prop_assert_eq!(distinct.len(), held.len());
        // Every valid, non-duplicated instance is held; every conflict names a real problem.
        let placed = held.len()
            + ca.iter()
                .map(|c| match c {
                    hybridnet_operator::ipam::Conflict::DuplicateIp { others, .. } => others.len(),
                    hybridnet_operator::ipam::Conflict::DuplicateMac { .. } => 0,
                    _ => 1,
                })
                .sum::<usize>();
        prop_assert_eq!(placed, instances.len(), "every instance is held or reported");
        let again: Vec<InstanceInput> = held.iter().map(HeldIp::to_instance).collect();
        let (c, cc) = Ipam::rebuild(&nets, &subnets, &again, &a.cursors());
        prop_assert!(cc.is_empty(), "{:?}", cc);
        prop_assert_eq!(snapshot(&c), snapshot(&a));
    }
}

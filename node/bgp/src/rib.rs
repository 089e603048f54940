//! Adj-RIB-Out: what each peer should have, the difference to what it has, and the UPDATEs
//! that carry the difference. All pure functions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::Prefix;
use crate::wire::{
    AsSegment, AsSegmentKind, Family, MpReach, MpUnreach, NO_EXPORT, Origin, PathAttribute, Update,
};

/// Communities attached to an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Communities {
    /// No COMMUNITIES attribute (exportable across ASes; GlobalBGP pods, subnet prefixes).
    #[default]
    None,
    /// NO_EXPORT (RFC 1997): the ToR's AS keeps the route (BGP-mode pods).
    NoExport,
}

/// One route the speaker should announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Announcement {
    pub prefix: Prefix,
    pub communities: Communities,
}

impl Announcement {
    pub fn new(prefix: Prefix, communities: Communities) -> Self {
        Announcement {
            prefix,
            communities,
        }
    }
}

/// What was sent to (or should be sent to) one peer: prefix to its communities.
pub type AdjRibOut = BTreeMap<Prefix, Communities>;

/// The next hops we put into announcements, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextHops {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl NextHops {
    fn has(&self, family: Family) -> bool {
        match family {
            Family::Ipv4Unicast => self.v4.is_some(),
            Family::Ipv6Unicast => self.v6.is_some(),
        }
    }
}

pub fn family_of(prefix: &Prefix) -> Family {
    if prefix.is_ipv4() {
        Family::Ipv4Unicast
    } else {
        Family::Ipv6Unicast
    }
}

/// The Adj-RIB-Out a peer should have: the desired routes of the families the session
/// negotiated and that we have a next hop for. When the same prefix is desired both with and
/// without NO_EXPORT, NO_EXPORT wins (the narrower scope is the safe choice).
pub fn target(
    desired: &BTreeSet<Announcement>,
    families: &[Family],
    next_hops: &NextHops,
) -> AdjRibOut {
    let mut out = AdjRibOut::new();
    for a in desired {
        let family = family_of(&a.prefix);
        if !families.contains(&family) || !next_hops.has(family) {
            continue;
        }
        let entry = out.entry(a.prefix).or_insert(a.communities);
        *entry = (*entry).max(a.communities);
    }
    out
}

/// The change from one Adj-RIB-Out to another.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RibDiff {
    /// New routes and routes whose communities changed (an announcement replaces the old one).
    pub announce: Vec<(Prefix, Communities)>,
    pub withdraw: Vec<Prefix>,
}

impl RibDiff {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// Walks both sorted maps once (a merge join), so a one-route change costs one pass.
pub fn diff(current: &AdjRibOut, target: &AdjRibOut) -> RibDiff {
    use std::cmp::Ordering;
    let mut out = RibDiff::default();
    let mut cur = current.iter().peekable();
    let mut tgt = target.iter().peekable();
    loop {
        match (cur.peek(), tgt.peek()) {
            (Some((pc, cc)), Some((pt, ct))) => match pc.cmp(pt) {
                Ordering::Less => {
                    out.withdraw.push(**pc);
                    cur.next();
                }
                Ordering::Greater => {
                    out.announce.push((**pt, **ct));
                    tgt.next();
                }
                Ordering::Equal => {
                    if cc != ct {
                        out.announce.push((**pt, **ct));
                    }
                    cur.next();
                    tgt.next();
                }
            },
            (Some((pc, _)), None) => {
                out.withdraw.push(**pc);
                cur.next();
            }
            (None, Some((pt, ct))) => {
                out.announce.push((**pt, **ct));
                tgt.next();
            }
            (None, None) => return out,
        }
    }
}

/// Prefixes per UPDATE: 700 IPv4 (at most 5 octets each) or 200 IPv6 (at most 17 octets each)
/// stay well inside the 4096-octet message with our few attributes.
const V4_PER_UPDATE: usize = 700;
const V6_PER_UPDATE: usize = 200;

/// Session facts the UPDATE contents depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateContext {
    pub local_asn: u32,
    /// iBGP (peer AS == local AS): empty AS_PATH and LOCAL_PREF 100.
    pub ibgp: bool,
    pub next_hops: NextHops,
}

/// UPDATEs carrying `diff`: withdrawals first, then announcements grouped by family and
/// communities. Each carries ORIGIN IGP and AS_PATH as one AS_SEQUENCE of the local AS; IPv4
/// uses NLRI with NEXT_HOP, IPv6 uses MP_REACH_NLRI with the global next hop. Announcements of a
/// family without a next hop are skipped ([`target`] never produces them).
pub fn updates(diff: &RibDiff, ctx: &UpdateContext) -> Vec<Update> {
    let mut out = Vec::new();
    let (w4, w6) = split(diff.withdraw.iter().copied());
    for chunk in w4.chunks(V4_PER_UPDATE) {
        out.push(Update {
            withdrawn: chunk.to_vec(),
            ..Update::default()
        });
    }
    for chunk in w6.chunks(V6_PER_UPDATE) {
        out.push(Update {
            attributes: vec![PathAttribute::MpUnreach(MpUnreach::V6(chunk.to_vec()))],
            ..Update::default()
        });
    }
    for communities in [Communities::None, Communities::NoExport] {
        let group = diff
            .announce
            .iter()
            .filter(|(_, c)| *c == communities)
            .map(|(p, _)| *p);
        let (a4, a6) = split(group);
        if let Some(nh) = ctx.next_hops.v4 {
            for chunk in a4.chunks(V4_PER_UPDATE) {
                let mut attributes = common_attributes(ctx);
                attributes.push(PathAttribute::NextHop(nh));
                push_communities(&mut attributes, communities);
                out.push(Update {
                    attributes,
                    nlri: chunk.to_vec(),
                    ..Update::default()
                });
            }
        }
        if let Some(nh) = ctx.next_hops.v6 {
            for chunk in a6.chunks(V6_PER_UPDATE) {
                let mut attributes = common_attributes(ctx);
                attributes.push(PathAttribute::MpReach(MpReach::V6 {
                    next_hop: nh,
                    link_local: None,
                    nlri: chunk.to_vec(),
                }));
                push_communities(&mut attributes, communities);
                out.push(Update {
                    attributes,
                    ..Update::default()
                });
            }
        }
    }
    out
}

fn split(prefixes: impl Iterator<Item = Prefix>) -> (Vec<Prefix>, Vec<Prefix>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for p in prefixes {
        if p.is_ipv4() { v4.push(p) } else { v6.push(p) }
    }
    (v4, v6)
}

fn common_attributes(ctx: &UpdateContext) -> Vec<PathAttribute> {
    let mut attributes = vec![PathAttribute::Origin(Origin::Igp)];
    if ctx.ibgp {
        attributes.push(PathAttribute::AsPath(Vec::new()));
        attributes.push(PathAttribute::LocalPref(100));
    } else {
        attributes.push(PathAttribute::AsPath(vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![ctx.local_asn],
        }]));
    }
    attributes
}

fn push_communities(attributes: &mut Vec<PathAttribute>, communities: Communities) {
    if communities == Communities::NoExport {
        attributes.push(PathAttribute::Communities(vec![NO_EXPORT]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Codec, Message, decode_exact};

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ann(s: &str, c: Communities) -> Announcement {
        Announcement::new(p(s), c)
    }

    const NH: NextHops = NextHops {
        v4: Some(Ipv4Addr::new(198, 18, 1, 2)),
        v6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
    };

    fn ctx() -> UpdateContext {
        UpdateContext {
            local_asn: 65001,
            ibgp: false,
            next_hops: NH,
        }
    }

    #[test]
    fn target_keeps_negotiated_families_with_next_hops() {
        let desired: BTreeSet<_> = [
            ann("198.19.0.5/32", Communities::NoExport),
            ann("198.19.0.0/24", Communities::None),
            ann("fd00:1::5/128", Communities::NoExport),
        ]
        .into();
        let all = target(&desired, &Family::ALL, &NH);
        assert_eq!(all.len(), 3);
        let v4_only = target(&desired, &[Family::Ipv4Unicast], &NH);
        assert_eq!(
            v4_only.keys().copied().collect::<Vec<_>>(),
            vec![p("198.19.0.0/24"), p("198.19.0.5/32")]
        );
        let no_v6_nh = target(&desired, &Family::ALL, &NextHops { v6: None, ..NH });
        assert!(no_v6_nh.keys().all(|p| p.is_ipv4()));
    }

    #[test]
    fn no_export_wins_for_a_prefix_desired_twice() {
        let desired: BTreeSet<_> = [
            ann("198.19.0.5/32", Communities::None),
            ann("198.19.0.5/32", Communities::NoExport),
        ]
        .into();
        let t = target(&desired, &Family::ALL, &NH);
        assert_eq!(t.get(&p("198.19.0.5/32")), Some(&Communities::NoExport));
    }

    #[test]
    fn diff_announces_new_and_changed_and_withdraws_gone() {
        let current: AdjRibOut = [
            (p("198.19.0.1/32"), Communities::NoExport),
            (p("198.19.0.2/32"), Communities::NoExport),
            (p("198.19.0.3/32"), Communities::NoExport),
        ]
        .into();
        let target: AdjRibOut = [
            (p("198.19.0.1/32"), Communities::NoExport),
            (p("198.19.0.2/32"), Communities::None),
            (p("198.19.0.4/32"), Communities::NoExport),
        ]
        .into();
        let d = diff(&current, &target);
        assert_eq!(
            d.announce,
            vec![
                (p("198.19.0.2/32"), Communities::None),
                (p("198.19.0.4/32"), Communities::NoExport)
            ]
        );
        assert_eq!(d.withdraw, vec![p("198.19.0.3/32")]);
        assert!(diff(&target, &target).is_empty());
    }

    proptest::proptest! {
        /// Applying the diff to the current table gives the target, and the diff is minimal.
        #[test]
        fn diff_transforms_current_into_target(
            current in proptest::collection::btree_map(0u32..64, proptest::bool::ANY, 0..40),
            target in proptest::collection::btree_map(0u32..64, proptest::bool::ANY, 0..40),
        ) {
            let to_rib = |m: std::collections::BTreeMap<u32, bool>| -> AdjRibOut {
                m.into_iter()
                    .map(|(i, ne)| {
                        let p = Prefix::host(Ipv4Addr::from(0xc613_0000 + i).into());
                        (p, if ne { Communities::NoExport } else { Communities::None })
                    })
                    .collect()
            };
            let (current, target) = (to_rib(current), to_rib(target));
            let d = diff(&current, &target);
            let mut applied = current.clone();
            for p in &d.withdraw {
                proptest::prop_assert!(applied.remove(p).is_some());
            }
            for (p, c) in &d.announce {
                proptest::prop_assert_ne!(current.get(p), Some(c));
                applied.insert(*p, *c);
            }
            proptest::prop_assert_eq!(applied, target);
        }
    }

    #[test]
    fn updates_carry_the_right_attributes() {
        let d = RibDiff {
            announce: vec![
                (p("198.19.0.5/32"), Communities::NoExport),
                (p("198.19.0.0/24"), Communities::None),
                (p("fd00:1::5/128"), Communities::NoExport),
            ],
            withdraw: vec![p("198.19.9.9/32"), p("fd00:9::9/128")],
        };
        let us = updates(&d, &ctx());
        let as_path = PathAttribute::AsPath(vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![65001],
        }]);
        let v4 = p;
        let v6 = p;
        assert_eq!(
            us,
            vec![
                Update {
                    withdrawn: vec![v4("198.19.9.9/32")],
                    ..Update::default()
                },
                Update {
                    attributes: vec![PathAttribute::MpUnreach(MpUnreach::V6(vec![v6(
                        "fd00:9::9/128"
                    )]))],
                    ..Update::default()
                },
                Update {
                    attributes: vec![
                        PathAttribute::Origin(Origin::Igp),
                        as_path.clone(),
                        PathAttribute::NextHop(NH.v4.unwrap()),
                    ],
                    nlri: vec![v4("198.19.0.0/24")],
                    ..Update::default()
                },
                Update {
                    attributes: vec![
                        PathAttribute::Origin(Origin::Igp),
                        as_path.clone(),
                        PathAttribute::NextHop(NH.v4.unwrap()),
                        PathAttribute::Communities(vec![NO_EXPORT]),
                    ],
                    nlri: vec![v4("198.19.0.5/32")],
                    ..Update::default()
                },
                Update {
                    attributes: vec![
                        PathAttribute::Origin(Origin::Igp),
                        as_path,
                        PathAttribute::MpReach(MpReach::V6 {
                            next_hop: NH.v6.unwrap(),
                            link_local: None,
                            nlri: vec![v6("fd00:1::5/128")],
                        }),
                        PathAttribute::Communities(vec![NO_EXPORT]),
                    ],
                    ..Update::default()
                },
            ]
        );
    }

    #[test]
    fn ibgp_updates_have_empty_as_path_and_local_pref() {
        let d = RibDiff {
            announce: vec![(p("198.19.0.5/32"), Communities::None)],
            withdraw: vec![],
        };
        let us = updates(
            &d,
            &UpdateContext {
                ibgp: true,
                ..ctx()
            },
        );
        assert_eq!(us[0].attributes[1], PathAttribute::AsPath(vec![]));
        assert_eq!(us[0].attributes[2], PathAttribute::LocalPref(100));
    }

    #[test]
    fn many_routes_split_into_messages_that_fit() {
        let mut announce = Vec::new();
        for i in 0..3000u32 {
            let a = Ipv4Addr::from(0xc613_0000 + i);
            announce.push((Prefix::host(a.into()), Communities::NoExport));
            let b = Ipv6Addr::from(0xfd00_0001_u128 << 96 | u128::from(i));
            announce.push((Prefix::host(b.into()), Communities::NoExport));
        }
        let withdraw = announce.iter().map(|(p, _)| *p).collect();
        let d = RibDiff { announce, withdraw };
        let us = updates(&d, &ctx());
        let mut announced = 0;
        let mut withdrawn = 0;
        for u in &us {
            let bytes = Message::Update(u.clone()).encode(Codec::default()).unwrap();
            let Message::Update(back) = decode_exact(&bytes, Codec::default()).unwrap() else {
                panic!("not an update")
            };
            announced += back.nlri.len();
            withdrawn += back.withdrawn.len();
            for a in &back.attributes {
                match a {
                    PathAttribute::MpReach(MpReach::V6 { nlri, .. }) => announced += nlri.len(),
                    PathAttribute::MpUnreach(MpUnreach::V6(w)) => withdrawn += w.len(),
                    _ => {}
                }
            }
        }
        assert_eq!((announced, withdrawn), (6000, 6000));
    }
}

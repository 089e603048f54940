//! Pure decisions of the apply for the VXLAN device's FDB and neighbour entries and for proxy
//! neighbour entries: which entries are hybridnet's, and what brings the kernel to the plan.
//! `apply.rs` reads the kernel, calls these and executes the result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;

use crate::plan::{FdbEntry, MacAddr, ProxyNeighbour};

/// FDB entries of the VXLAN device to append and to delete, as (MAC, VTEP address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FdbDiff {
    pub append: Vec<(MacAddr, IpAddr)>,
    pub delete: Vec<(MacAddr, IpAddr)>,
}

/// The FDB diff. Every entry on the device is hybridnet's. The all-zero entry (flood unknown
/// unicast to that VTEP) is never planned and always removed; other stale entries only go when
/// `prune` says every overlay node has published its VTEP (until then a node's old entry is all
/// that reaches it).
pub(crate) fn diff_fdb(
    have: &BTreeSet<(MacAddr, IpAddr)>,
    want: &BTreeSet<FdbEntry>,
    prune: bool,
) -> FdbDiff {
    let wanted: BTreeSet<(MacAddr, IpAddr)> = want.iter().map(|e| (e.mac, e.dst)).collect();
    FdbDiff {
        append: wanted.difference(have).copied().collect(),
        delete: have
            .difference(&wanted)
            .filter(|(mac, _)| prune || mac.is_zero())
            .copied()
            .collect(),
    }
}

/// A neighbour entry of the VXLAN device as the kernel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldNeighbour {
    pub lladdr: Option<MacAddr>,
    pub permanent: bool,
}

/// Neighbour entries of the VXLAN device to replace (permanent, with the MAC) and to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NeighbourDiff {
    pub replace: Vec<(IpAddr, MacAddr)>,
    pub delete: Vec<IpAddr>,
}

/// The neighbour diff: a wanted entry is replaced unless it is already permanent with the right
/// MAC; an unwanted one is deleted, except IPv6 link-local and multicast entries, which are the
/// kernel's own business.
pub(crate) fn diff_vxlan_neighbours(
    have: &BTreeMap<IpAddr, HeldNeighbour>,
    want: &BTreeMap<IpAddr, MacAddr>,
) -> NeighbourDiff {
    let replace = want
        .iter()
        .filter(|(ip, mac)| {
            have.get(*ip)
                .is_none_or(|n| n.lladdr != Some(**mac) || !n.permanent)
        })
        .map(|(ip, mac)| (*ip, *mac))
        .collect();
    let delete = have
        .keys()
        .filter(|ip| !want.contains_key(*ip) && !is_link_local(**ip) && !ip.is_multicast())
        .copied()
        .collect();
    NeighbourDiff { replace, delete }
}

/// IPv4 169.254/16 and IPv6 fe80::/10: addresses the kernel manages on every device.
pub(crate) fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// Proxy neighbour entries to add and delete, as (interface index, address), and planned
/// entries whose device does not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProxyDiff {
    pub add: Vec<(u32, IpAddr)>,
    pub delete: Vec<(u32, IpAddr)>,
    pub problems: Vec<String>,
}

/// Where hybridnet owns proxy entries: every one on the VXLAN device; on the devices of planned
/// proxies and on VLAN forward interfaces, only those inside the cluster's pod CIDRs (an operator
/// may proxy other addresses there).
pub(crate) struct ProxyOwnership<'a> {
    pub vxlan: Option<u32>,
    pub managed: BTreeSet<u32>,
    pub cluster_cidrs: &'a BTreeSet<Cidr>,
}

impl ProxyOwnership<'_> {
    fn owns(&self, ifindex: u32, ip: IpAddr) -> bool {
        Some(ifindex) == self.vxlan
            || (self.managed.contains(&ifindex)
                && self.cluster_cidrs.iter().any(|c| c.contains(ip)))
    }
}

/// The proxy diff.
pub(crate) fn diff_proxies(
    have: &BTreeSet<(u32, IpAddr)>,
    want: &BTreeSet<ProxyNeighbour>,
    index: &BTreeMap<String, u32>,
    ownership: &ProxyOwnership<'_>,
) -> ProxyDiff {
    let mut problems = Vec::new();
    let mut wanted: BTreeSet<(u32, IpAddr)> = BTreeSet::new();
    for p in want {
        match index.get(&p.dev) {
            Some(&i) => {
                wanted.insert((i, p.ip));
            }
            None => problems.push(format!(
                "proxy {} dev {}: device does not exist",
                p.ip, p.dev
            )),
        }
    }
    ProxyDiff {
        add: wanted.difference(have).copied().collect(),
        delete: have
            .difference(&wanted)
            .filter(|(i, ip)| ownership.owns(*i, *ip))
            .copied()
            .collect(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    #[test]
    fn fdb_appends_missing_and_prunes_only_when_allowed() {
        let zero = MacAddr([0; 6]);
        let have: BTreeSet<_> = [
            (mac(1), ip("198.18.0.1")),
            (mac(9), ip("198.18.0.9")),
            (zero, ip("198.18.0.1")),
        ]
        .into();
        let want: BTreeSet<FdbEntry> = [
            FdbEntry {
                mac: mac(1),
                dst: ip("198.18.0.1"),
            },
            FdbEntry {
                mac: mac(2),
                dst: ip("198.18.0.2"),
            },
        ]
        .into();
        let d = diff_fdb(&have, &want, true);
        assert_eq!(d.append, vec![(mac(2), ip("198.18.0.2"))]);
        // The flood entry and the stale one go.
        assert_eq!(
            d.delete,
            vec![(zero, ip("198.18.0.1")), (mac(9), ip("198.18.0.9"))]
        );
        // Until every overlay node published its VTEP, only the flood entry goes.
        assert_eq!(
            diff_fdb(&have, &want, false).delete,
            vec![(zero, ip("198.18.0.1"))]
        );
        // Applied, the diff is empty.
        let after: BTreeSet<_> = want.iter().map(|e| (e.mac, e.dst)).collect();
        assert_eq!(diff_fdb(&after, &want, true), FdbDiff::default());
    }

    #[test]
    fn neighbours_become_permanent_with_the_planned_mac_and_the_kernels_own_stay() {
        let held = |m: u8, permanent: bool| HeldNeighbour {
            lladdr: Some(mac(m)),
            permanent,
        };
        let have: BTreeMap<IpAddr, HeldNeighbour> = [
            (ip("198.18.1.1"), held(1, true)),  // as planned
            (ip("198.18.1.2"), held(9, true)),  // wrong MAC
            (ip("198.18.1.3"), held(3, false)), // learnt, not permanent
            (ip("198.18.1.4"), held(4, true)),  // stale
            (ip("fe80::1"), held(5, false)),    // the kernel's
            (ip("ff02::1"), held(6, false)),
        ]
        .into();
        let want: BTreeMap<IpAddr, MacAddr> = [
            (ip("198.18.1.1"), mac(1)),
            (ip("198.18.1.2"), mac(2)),
            (ip("198.18.1.3"), mac(3)),
            (ip("198.18.1.5"), mac(5)),
        ]
        .into();
        let d = diff_vxlan_neighbours(&have, &want);
        assert_eq!(
            d.replace,
            vec![
                (ip("198.18.1.2"), mac(2)),
                (ip("198.18.1.3"), mac(3)),
                (ip("198.18.1.5"), mac(5)),
            ]
        );
        assert_eq!(d.delete, vec![ip("198.18.1.4")]);
    }

    #[test]
    fn proxies_outside_the_pod_cidrs_of_managed_devices_are_left_alone() {
        let cidrs: BTreeSet<Cidr> = [Cidr::parse_canonical("198.18.0.0/16").unwrap()].into();
        let index: BTreeMap<String, u32> = [
            ("eth0".to_string(), 2),
            ("eth0.5".to_string(), 3),
            ("vx".to_string(), 9),
        ]
        .into();
        let ownership = ProxyOwnership {
            vxlan: Some(9),
            managed: [2, 3].into(),
            cluster_cidrs: &cidrs,
        };
        let have: BTreeSet<(u32, IpAddr)> = [
            (2, ip("198.18.0.7")),  // stale pod proxy: ours
            (2, ip("192.0.2.7")),   // an operator's own proxy: not ours
            (9, ip("203.0.113.1")), // anything on the VXLAN device is ours
            (4, ip("198.18.0.8")),  // a device hybridnet does not manage
        ]
        .into();
        let want: BTreeSet<ProxyNeighbour> = [
            ProxyNeighbour {
                dev: "eth0.5".into(),
                ip: ip("198.18.0.5"),
            },
            ProxyNeighbour {
                dev: "gone".into(),
                ip: ip("198.18.0.6"),
            },
        ]
        .into();
        let d = diff_proxies(&have, &want, &index, &ownership);
        assert_eq!(d.add, vec![(3, ip("198.18.0.5"))]);
        assert_eq!(
            d.delete,
            vec![(2, ip("198.18.0.7")), (9, ip("203.0.113.1"))]
        );
        assert_eq!(
            d.problems,
            vec!["proxy 198.18.0.6 dev gone: device does not exist".to_string()]
        );
    }
}

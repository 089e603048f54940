//! Pure decisions of the apply for the ARP-enhancement addresses of VLAN interfaces (see
//! `plan::arp_enhance`): which IPv4 addresses on the host are hybridnet's, and which to remove
//! and add. `arp_enhance.rs` reads the kernel, calls this and executes the result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use hybridnet_api::ipmath::Cidr;

use crate::plan::EnhancedAddress;

/// An IPv4 address as the kernel holds it, with what recognising ours needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldAddress {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub scope_link: bool,
    pub noprefixroute: bool,
}

impl HeldAddress {
    fn key(&self) -> (u32, Ipv4Addr, u8) {
        (self.ifindex, self.ip, self.prefix)
    }
}

/// What brings the host's enhanced addresses to the plan. `delete` holds indexes into the held
/// addresses and runs first: removing the primary address of a subnet also removes its
/// secondaries (unless `promote_secondaries` is set), so adding first could lose the new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EnhancedAddressDiff {
    pub delete: Vec<usize>,
    pub add: Vec<(u32, Ipv4Addr, u8)>,
    /// Planned addresses whose device does not exist (reported, nothing done).
    pub missing_devices: Vec<EnhancedAddress>,
}

/// Whether a held address is hybridnet's: scope link with `noprefixroute`, outside 169.254/16,
/// and either inside a cluster pod subnet or without a local-table route that has it as source
/// (upstream's daemon adds enhanced addresses so; an address the node itself uses has that
/// route).
pub(crate) fn is_enhanced_address(
    a: &HeldAddress,
    cluster_cidrs: &BTreeSet<Cidr>,
    local_route_sources: &BTreeSet<IpAddr>,
) -> bool {
    a.scope_link
        && a.noprefixroute
        && !a.ip.is_link_local()
        && (cluster_cidrs.iter().any(|c| c.contains(IpAddr::V4(a.ip)))
            || !local_route_sources.contains(&IpAddr::V4(a.ip)))
}

/// The diff of the held addresses against the planned ones (`index` maps device names to
/// interface indexes).
pub(crate) fn diff_enhanced_addresses(
    held: &[HeldAddress],
    planned: &BTreeSet<EnhancedAddress>,
    index: &BTreeMap<String, u32>,
    cluster_cidrs: &BTreeSet<Cidr>,
    local_route_sources: &BTreeSet<IpAddr>,
) -> EnhancedAddressDiff {
    let want: BTreeSet<(u32, Ipv4Addr, u8)> = planned
        .iter()
        .filter_map(|e| Some((*index.get(&e.dev)?, e.ip, e.prefix)))
        .collect();
    let missing_devices = planned
        .iter()
        .filter(|e| !index.contains_key(&e.dev))
        .cloned()
        .collect();
    let mut have = BTreeSet::new();
    let mut delete = Vec::new();
    for (i, a) in held.iter().enumerate() {
        if !is_enhanced_address(a, cluster_cidrs, local_route_sources) {
            continue;
        }
        if want.contains(&a.key()) {
            have.insert(a.key());
        } else {
            delete.push(i);
        }
    }
    EnhancedAddressDiff {
        delete,
        add: want.difference(&have).copied().collect(),
        missing_devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn held(ifindex: u32, ip: [u8; 4], prefix: u8) -> HeldAddress {
        HeldAddress {
            ifindex,
            ip: Ipv4Addr::from(ip),
            prefix,
            scope_link: true,
            noprefixroute: true,
        }
    }

    fn planned(dev: &str, ip: [u8; 4], prefix: u8) -> EnhancedAddress {
        EnhancedAddress {
            dev: dev.into(),
            ip: Ipv4Addr::from(ip),
            prefix,
        }
    }

    fn cidrs(list: &[&str]) -> BTreeSet<Cidr> {
        list.iter()
            .map(|s| Cidr::parse_canonical(s).unwrap())
            .collect()
    }

    fn index() -> BTreeMap<String, u32> {
        [("eth0.100".to_string(), 7), ("eth0.200".to_string(), 8)].into()
    }

    #[test]
    fn only_hybridnet_shaped_addresses_are_ours() {
        let pods = cidrs(&["198.18.0.0/24"]);
        let node_srcs: BTreeSet<IpAddr> = [IpAddr::V4(Ipv4Addr::new(198, 19, 0, 5))].into();
        let ours = |a: &HeldAddress| is_enhanced_address(a, &pods, &node_srcs);
        assert!(ours(&held(7, [198, 18, 0, 1], 24)), "in a pod subnet");
        assert!(
            ours(&held(7, [198, 19, 9, 9], 24)),
            "no local route with it as source"
        );
        assert!(
            !ours(&held(7, [198, 19, 0, 5], 24)),
            "the node uses it: a local-table route has it as source"
        );
        assert!(!ours(&held(7, [169, 254, 1, 1], 16)), "link-local");
        let mut global = held(7, [198, 18, 0, 1], 24);
        global.scope_link = false;
        assert!(!ours(&global), "scope global: an address the admin added");
        let mut with_route = held(7, [198, 18, 0, 1], 24);
        with_route.noprefixroute = false;
        assert!(!ours(&with_route), "with its prefix route: not ours");
    }

    #[test]
    fn stale_go_wanted_come_foreign_stay() {
        let pods = cidrs(&["198.18.0.0/24", "198.18.1.0/24"]);
        let mut node_address = held(1, [198, 19, 0, 5], 24);
        node_address.scope_link = false;
        let have = vec![
            held(7, [198, 18, 0, 1], 24), // wanted: kept
            held(7, [198, 18, 1, 1], 24), // ours, not wanted: deleted
            node_address,                 // the node's own address: left alone
        ];
        let plan: BTreeSet<EnhancedAddress> = [
            planned("eth0.100", [198, 18, 0, 1], 24),
            planned("eth0.200", [198, 18, 0, 1], 24),
            planned("eth0.300", [198, 18, 2, 1], 24),
        ]
        .into();
        let d = diff_enhanced_addresses(&have, &plan, &index(), &pods, &BTreeSet::new());
        assert_eq!(d.delete, vec![1]);
        assert_eq!(d.add, vec![(8, Ipv4Addr::new(198, 18, 0, 1), 24)]);
        assert_eq!(
            d.missing_devices,
            vec![planned("eth0.300", [198, 18, 2, 1], 24)]
        );
    }

    #[test]
    fn a_prefix_change_replaces_the_address() {
        let pods = cidrs(&["198.18.0.0/23"]);
        let have = vec![held(7, [198, 18, 0, 1], 24)];
        let plan = [planned("eth0.100", [198, 18, 0, 1], 23)].into();
        let d = diff_enhanced_addresses(&have, &plan, &index(), &pods, &BTreeSet::new());
        assert_eq!(d.delete, vec![0]);
        assert_eq!(d.add, vec![(7, Ipv4Addr::new(198, 18, 0, 1), 23)]);
    }

    proptest! {
        /// Executing the diff gives exactly the planned addresses (on existing devices) plus the
        /// held addresses that are not ours; applying it again changes nothing.
        #[test]
        fn the_diff_converges_and_never_touches_foreign_addresses(
            held_raw in proptest::collection::vec((7u32..=9, 0u8..4, 22u8..=24, any::<bool>(), any::<bool>()), 0..12),
            plan_raw in proptest::collection::vec((0usize..3, 0u8..4, 22u8..=24), 0..8),
        ) {
            let devs = ["eth0.100", "eth0.200", "eth0.300"];
            let pods = cidrs(&["198.18.0.0/16"]);
            let have: Vec<HeldAddress> = held_raw
                .iter()
                .map(|&(i, h, p, link, npr)| HeldAddress {
                    ifindex: i, ip: Ipv4Addr::new(198, 18, 0, h), prefix: p,
                    scope_link: link, noprefixroute: npr,
                })
                .collect();
            let plan: BTreeSet<EnhancedAddress> = plan_raw
                .iter()
                .map(|&(d, h, p)| planned(devs[d], [198, 18, 0, h], p))
                .collect();
            let none = BTreeSet::new();
            let d = diff_enhanced_addresses(&have, &plan, &index(), &pods, &none);
            let mut after: Vec<HeldAddress> = have
                .iter()
                .enumerate()
                .filter(|(i, _)| !d.delete.contains(i))
                .map(|(_, a)| *a)
                .collect();
            for &(ifindex, ip, prefix) in &d.add {
                after.push(HeldAddress { ifindex, ip, prefix, scope_link: true, noprefixroute: true });
            }
            for a in &have {
                if !is_enhanced_address(a, &pods, &none) {
                    prop_assert!(after.contains(a), "foreign address {a:?} was touched");
                }
            }
            let ours: BTreeSet<(u32, Ipv4Addr, u8)> = after
                .iter()
                .filter(|a| is_enhanced_address(a, &pods, &none))
                .map(|a| a.key())
                .collect();
            let wanted: BTreeSet<(u32, Ipv4Addr, u8)> = plan
                .iter()
                .filter_map(|e| Some((*index().get(&e.dev)?, e.ip, e.prefix)))
                .collect();
            prop_assert_eq!(ours, wanted);
            let again = diff_enhanced_addresses(&after, &plan, &index(), &pods, &none);
            prop_assert!(again.delete.is_empty() && again.add.is_empty(), "{again:?}");
        }
    }
}

//! What changed in the kernel since the last apply, and which parts of a plan changed since the
//! last plan: the pure decisions that let a reconcile touch only what a change implies.
//!
//! The agent subscribes to rtnetlink notifications (links, addresses, routes, rules,
//! neighbours). [`classify`] maps each to a [`KernelEvent`]; [`KernelNotes`] gathers them between
//! two reconciles. Link, address, route and rule events mark their part dirty (those parts are
//! small: the next apply dumps and diffs them). Neighbour, FDB and proxy events are kept and
//! checked against what the last apply left ([`contradicts`]): only an entry that differs from it
//! (someone else changed or removed one of ours, or added a permanent one) makes the next apply
//! dump the neighbour tables. The agent's own changes, and the kernel's own resolution entries,
//! do not. Lost notifications (`ENOBUFS`) make the next apply a full one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourMessage, NeighbourState};

use super::kernel::parse_neighbour;
use super::neigh_diff::HeldNeighbour;
use crate::plan::{
    DataPlanePlan, EnhancedAddress, MacAddr, PlannedRoute, PolicyRule, VlanLink, VxlanDevice,
};

/// Parts of the kernel that may differ from what the last apply left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelChanges {
    /// Links or addresses (host facts, VLAN and VXLAN devices, per-device sysctls).
    pub links: bool,
    /// Routes of any table.
    pub routes: bool,
    /// Policy rules.
    pub rules: bool,
    /// FDB, neighbour or proxy entries.
    pub neighbours: bool,
    /// Unknown (first apply, notifications lost): dump and diff everything.
    pub all: bool,
}

impl KernelChanges {
    pub const EVERYTHING: Self = Self {
        links: true,
        routes: true,
        rules: true,
        neighbours: true,
        all: true,
    };

    pub fn union(self, o: Self) -> Self {
        Self {
            links: self.links || o.links,
            routes: self.routes || o.routes,
            rules: self.rules || o.rules,
            neighbours: self.neighbours || o.neighbours,
            all: self.all || o.all,
        }
    }

    /// The host facts the planner reads (links, addresses, routes, rules) may have changed.
    pub fn host(&self) -> bool {
        self.all || self.links || self.routes || self.rules
    }
}

/// A neighbour-table entry a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighbourEntry {
    /// Bridge FDB entry (`AF_BRIDGE`): MAC -> VTEP destination.
    Fdb { mac: MacAddr, dst: IpAddr },
    /// Neighbour entry: IP -> link-layer address.
    Neighbour {
        ip: IpAddr,
        lladdr: Option<MacAddr>,
        permanent: bool,
    },
    /// Proxy entry (`NTF_PROXY`).
    Proxy { ip: IpAddr },
}

/// One neighbour, FDB or proxy notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourEvent {
    pub ifindex: u32,
    pub entry: NeighbourEntry,
    /// `RTM_DELNEIGH`.
    pub deleted: bool,
}

/// A notification as the reconcile loop needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    Links,
    Routes,
    Rules,
    Neighbour(NeighbourEvent),
}

fn neighbour_event(m: &NeighbourMessage, deleted: bool) -> Option<NeighbourEvent> {
    use rtnetlink::packet_route::AddressFamily;
    let n = parse_neighbour(m);
    let entry = if m.header.family == AddressFamily::Bridge {
        NeighbourEntry::Fdb {
            mac: n.lladdr?,
            dst: n.ip?,
        }
    } else if n.flags.contains(NeighbourFlags::Proxy) {
        NeighbourEntry::Proxy { ip: n.ip? }
    } else {
        NeighbourEntry::Neighbour {
            ip: n.ip?,
            lladdr: n.lladdr,
            permanent: n.state == NeighbourState::Permanent,
        }
    };
    Some(NeighbourEvent {
        ifindex: n.ifindex,
        entry,
        deleted,
    })
}

/// The event of one rtnetlink notification (`None`: nothing the data plane depends on).
pub fn classify(msg: &RouteNetlinkMessage) -> Option<KernelEvent> {
    use RouteNetlinkMessage as M;
    match msg {
        M::NewLink(_) | M::DelLink(_) | M::SetLink(_) | M::NewAddress(_) | M::DelAddress(_) => {
            Some(KernelEvent::Links)
        }
        M::NewRoute(_) | M::DelRoute(_) => Some(KernelEvent::Routes),
        M::NewRule(_) | M::DelRule(_) => Some(KernelEvent::Rules),
        M::NewNeighbour(m) => neighbour_event(m, false).map(KernelEvent::Neighbour),
        M::DelNeighbour(m) => neighbour_event(m, true).map(KernelEvent::Neighbour),
        _ => None,
    }
}

/// Notifications gathered between two reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelNotes {
    pub changes: KernelChanges,
    /// Neighbour, FDB and proxy events of the VXLAN device and proxy events of any device, to be
    /// checked against what the last apply left.
    pub neighbours: Vec<NeighbourEvent>,
}

impl KernelNotes {
    /// Events kept before the neighbour tables are simply marked dirty (a burst of the agent's own
    /// changes is about one event per entry).
    pub const MAX_EVENTS: usize = 100_000;

    /// Records one event; `vxlan` is the VXLAN device's index (events of other devices' ordinary
    /// neighbour entries, e.g. ARP on the uplink, are not the data plane's). Returns whether a
    /// reconcile should follow.
    pub fn note(&mut self, ev: KernelEvent, vxlan: Option<u32>) -> bool {
        match ev {
            KernelEvent::Links => self.changes.links = true,
            KernelEvent::Routes => self.changes.routes = true,
            KernelEvent::Rules => self.changes.rules = true,
            KernelEvent::Neighbour(e) => {
                let proxy = matches!(e.entry, NeighbourEntry::Proxy { .. });
                if !proxy && Some(e.ifindex) != vxlan {
                    return false;
                }
                if self.neighbours.len() >= Self::MAX_EVENTS {
                    self.changes.neighbours = true;
                } else {
                    self.neighbours.push(e);
                }
                // The kernel's own resolution entries (not permanent) are left to the full resync.
                return !matches!(
                    e.entry,
                    NeighbourEntry::Neighbour {
                        permanent: false,
                        ..
                    }
                ) || e.deleted;
            }
        }
        true
    }

    /// Notifications were lost: nothing is known.
    pub fn lost(&mut self) {
        self.changes = KernelChanges::EVERYTHING;
        self.neighbours.clear();
    }
}

/// What the last apply left in the neighbour tables (see `apply.rs`).
pub(crate) struct EntryModel<'a> {
    pub vxlan: Option<u32>,
    pub fdb: &'a BTreeSet<(MacAddr, IpAddr)>,
    pub neighbours: &'a BTreeMap<IpAddr, HeldNeighbour>,
    pub proxies: &'a BTreeSet<(u32, IpAddr)>,
    /// The cluster's pod CIDRs: proxy entries elsewhere than on the VXLAN device are hybridnet's
    /// only inside them (the CNI's IPv6 gateway proxy on a pod's veth is not).
    pub cluster_cidrs: &'a BTreeSet<Cidr>,
}

/// Whether an event says the kernel differs from the model. The agent's own changes agree with
/// it; a change by someone else to an entry the model holds, or a permanent neighbour entry or an
/// FDB or proxy entry the model lacks, does not. Non-permanent neighbour entries the model lacks
/// are the kernel's own (resolution attempts) and left to the full resync.
pub(crate) fn contradicts(e: &NeighbourEvent, m: &EntryModel<'_>) -> bool {
    match e.entry {
        NeighbourEntry::Fdb { mac, dst } => {
            Some(e.ifindex) == m.vxlan && e.deleted == m.fdb.contains(&(mac, dst))
        }
        NeighbourEntry::Neighbour {
            ip,
            lladdr,
            permanent,
        } => {
            if Some(e.ifindex) != m.vxlan {
                return false;
            }
            match m.neighbours.get(&ip) {
                Some(h) if h.permanent => e.deleted || !permanent || lladdr != h.lladdr,
                Some(_) => false,
                None => !e.deleted && permanent,
            }
        }
        NeighbourEntry::Proxy { ip } => {
            let ours = Some(e.ifindex) == m.vxlan || m.cluster_cidrs.iter().any(|c| c.contains(ip));
            ours && e.deleted == m.proxies.contains(&(e.ifindex, ip))
        }
    }
}

/// The parts of a plan that are applied with a kernel dump and diff of their own (all small),
/// compared with the last applied ones to skip the unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sections {
    pub sysctls: BTreeMap<String, String>,
    pub links: (BTreeSet<VlanLink>, Option<VxlanDevice>, BTreeSet<IpAddr>),
    pub enhanced: (BTreeSet<EnhancedAddress>, BTreeSet<Cidr>),
    pub routing: (BTreeSet<PlannedRoute>, BTreeSet<PolicyRule>, BTreeSet<u32>),
    /// The rendered nftables transaction.
    pub nft: String,
}

impl Sections {
    pub fn of(plan: &DataPlanePlan, nft: String) -> Self {
        Self {
            sysctls: plan.sysctls.clone(),
            links: (
                plan.vlan_links.clone(),
                plan.vxlan.clone(),
                plan.vxlan_addresses.clone(),
            ),
            enhanced: (
                plan.vlan_enhanced_addresses.clone(),
                plan.cluster_cidrs.clone(),
            ),
            routing: (
                plan.routes.clone(),
                plan.rules.clone(),
                plan.owned_tables.clone(),
            ),
            nft,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    fn neigh(
        ifindex: u32,
        ip: &str,
        m: Option<u8>,
        permanent: bool,
        deleted: bool,
    ) -> NeighbourEvent {
        NeighbourEvent {
            ifindex,
            entry: NeighbourEntry::Neighbour {
                ip: self::ip(ip),
                lladdr: m.map(mac),
                permanent,
            },
            deleted,
        }
    }

    #[test]
    fn notifications_are_classified() {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = 7;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "198.19.0.5".parse().unwrap(),
            )));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac(1).0.to_vec()));
        assert_eq!(
            classify(&RouteNetlinkMessage::NewNeighbour(m.clone())),
            Some(KernelEvent::Neighbour(neigh(
                7,
                "198.19.0.5",
                Some(1),
                true,
                false
            )))
        );
        assert_eq!(
            classify(&RouteNetlinkMessage::DelNeighbour(m.clone())),
            Some(KernelEvent::Neighbour(neigh(
                7,
                "198.19.0.5",
                Some(1),
                true,
                true
            )))
        );
        let mut p = m.clone();
        p.header.flags = NeighbourFlags::Proxy;
        assert_eq!(
            classify(&RouteNetlinkMessage::NewNeighbour(p)),
            Some(KernelEvent::Neighbour(NeighbourEvent {
                ifindex: 7,
                entry: NeighbourEntry::Proxy {
                    ip: ip("198.19.0.5")
                },
                deleted: false
            }))
        );
        let mut b = m.clone();
        b.header.family = AddressFamily::Bridge;
        b.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(mac(1).0.to_vec()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet("198.18.0.2".parse().unwrap())),
        ];
        assert_eq!(
            classify(&RouteNetlinkMessage::NewNeighbour(b)),
            Some(KernelEvent::Neighbour(NeighbourEvent {
                ifindex: 7,
                entry: NeighbourEntry::Fdb {
                    mac: mac(1),
                    dst: ip("198.18.0.2")
                },
                deleted: false
            }))
        );
        // A neighbour message without an address is nothing to check.
        let mut bare = NeighbourMessage::default();
        bare.header.ifindex = 7;
        assert_eq!(classify(&RouteNetlinkMessage::NewNeighbour(bare)), None);
        assert_eq!(
            classify(&RouteNetlinkMessage::NewRoute(Default::default())),
            Some(KernelEvent::Routes)
        );
        assert_eq!(
            classify(&RouteNetlinkMessage::DelRule(Default::default())),
            Some(KernelEvent::Rules)
        );
        assert_eq!(
            classify(&RouteNetlinkMessage::NewAddress(Default::default())),
            Some(KernelEvent::Links)
        );
    }

    #[test]
    fn notes_keep_only_data_plane_neighbours_and_overflow_to_a_dump() {
        let mut n = KernelNotes::default();
        // ARP on the uplink: not ours, no reconcile.
        assert!(!n.note(
            KernelEvent::Neighbour(neigh(2, "198.18.0.1", Some(1), false, false)),
            Some(7)
        ));
        // The kernel resolving an unknown address on the VXLAN device: kept, no reconcile.
        assert!(!n.note(
            KernelEvent::Neighbour(neigh(7, "198.19.9.9", None, false, false)),
            Some(7)
        ));
        assert!(n.note(
            KernelEvent::Neighbour(neigh(7, "198.19.0.5", Some(1), true, false)),
            Some(7)
        ));
        assert_eq!(n.neighbours.len(), 2);
        assert_eq!(n.changes, KernelChanges::default());
        assert!(n.note(KernelEvent::Routes, Some(7)));
        assert!(n.changes.routes && !n.changes.links && !n.changes.neighbours);
        n.neighbours = vec![neigh(7, "198.19.0.5", Some(1), true, false); KernelNotes::MAX_EVENTS];
        n.note(
            KernelEvent::Neighbour(neigh(7, "198.19.0.6", Some(1), true, false)),
            Some(7),
        );
        assert!(n.changes.neighbours);
        assert_eq!(n.neighbours.len(), KernelNotes::MAX_EVENTS);
        n.lost();
        assert_eq!(n.changes, KernelChanges::EVERYTHING);
        assert!(n.neighbours.is_empty());
    }

    #[test]
    fn only_changes_by_others_contradict_the_model() {
        let held = |m: u8, permanent: bool| HeldNeighbour {
            lladdr: Some(mac(m)),
            permanent,
        };
        let neighbours: BTreeMap<IpAddr, HeldNeighbour> = [
            (ip("198.19.0.5"), held(1, true)),
            (ip("fe80::1"), held(9, false)),
        ]
        .into();
        let fdb: BTreeSet<(MacAddr, IpAddr)> = [(mac(1), ip("198.18.0.2"))].into();
        let proxies: BTreeSet<(u32, IpAddr)> = [(3, ip("198.19.0.9"))].into();
        let cidrs: BTreeSet<Cidr> = [Cidr::parse_canonical("198.19.0.0/16").unwrap()].into();
        let m = EntryModel {
            vxlan: Some(7),
            fdb: &fdb,
            neighbours: &neighbours,
            proxies: &proxies,
            cluster_cidrs: &cidrs,
        };
        // Our own changes as the model holds them.
        assert!(!contradicts(
            &neigh(7, "198.19.0.5", Some(1), true, false),
            &m
        ));
        assert!(!contradicts(
            &neigh(7, "198.19.0.6", Some(1), true, true),
            &m
        ));
        // The kernel's own entries.
        assert!(!contradicts(
            &neigh(7, "198.19.9.9", None, false, false),
            &m
        ));
        assert!(!contradicts(
            &neigh(7, "fe80::1", Some(4), false, false),
            &m
        ));
        // Ours removed, given another MAC, made non-permanent; a permanent entry we did not make.
        assert!(contradicts(
            &neigh(7, "198.19.0.5", Some(1), true, true),
            &m
        ));
        assert!(contradicts(
            &neigh(7, "198.19.0.5", Some(2), true, false),
            &m
        ));
        assert!(contradicts(
            &neigh(7, "198.19.0.5", Some(1), false, false),
            &m
        ));
        assert!(contradicts(
            &neigh(7, "198.19.0.7", Some(1), true, false),
            &m
        ));
        // Another device.
        assert!(!contradicts(
            &neigh(8, "198.19.0.5", Some(1), true, true),
            &m
        ));
        let fdb_ev = |m: u8, deleted: bool| NeighbourEvent {
            ifindex: 7,
            entry: NeighbourEntry::Fdb {
                mac: mac(m),
                dst: ip("198.18.0.2"),
            },
            deleted,
        };
        assert!(!contradicts(&fdb_ev(1, false), &m));
        assert!(contradicts(&fdb_ev(1, true), &m));
        assert!(contradicts(&fdb_ev(2, false), &m));
        assert!(!contradicts(&fdb_ev(2, true), &m));
        let proxy = |i: u32, deleted: bool| NeighbourEvent {
            ifindex: i,
            entry: NeighbourEntry::Proxy {
                ip: ip("198.19.0.9"),
            },
            deleted,
        };
        assert!(!contradicts(&proxy(3, false), &m));
        assert!(contradicts(&proxy(3, true), &m));
        assert!(contradicts(&proxy(4, false), &m));
        assert!(!contradicts(&proxy(4, true), &m));
        // The CNI's gateway proxy on a pod's veth: not a cluster address, not ours.
        let gw = NeighbourEvent {
            ifindex: 12,
            entry: NeighbourEntry::Proxy {
                ip: ip("fe80::ecee:eeff:feee:eeee"),
            },
            deleted: false,
        };
        assert!(!contradicts(&gw, &m));
        // On the VXLAN device every proxy entry is ours.
        let on_vx = NeighbourEvent { ifindex: 7, ..gw };
        assert!(contradicts(&on_vx, &m));
    }

    #[test]
    fn changes_union_and_host() {
        let r = KernelChanges {
            routes: true,
            ..Default::default()
        };
        let n = KernelChanges {
            neighbours: true,
            ..Default::default()
        };
        let u = r.union(n);
        assert!(u.routes && u.neighbours && !u.links && !u.all);
        assert!(u.host());
        assert!(!n.host());
        assert!(KernelChanges::EVERYTHING.host());
    }
}

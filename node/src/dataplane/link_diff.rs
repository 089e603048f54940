//! Pure decisions of the apply for links: the planned VLAN links and VXLAN device against the
//! kernel's links. Hybridnet owns the links it plans and every `*.vxlan*` VXLAN device (stale
//! ones are removed); a parent or a foreign link is only ever set up, never changed or removed.
//! `apply.rs` reads the links, calls [`diff_links`] and executes the operations in order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::kernel::KernelLink;
use super::neigh_diff::is_link_local;
use crate::plan::{HostAddress, VlanLink, VxlanDevice};

/// Why a VXLAN device is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VxlanDeletion {
    /// Ours, but not the planned one (renamed, or no overlay any more).
    Stale,
    /// The planned name with other attributes: it is recreated right after.
    Differs,
}

/// One change of links, in execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkOp {
    /// Set an existing link up: a planned VLAN link, or the parent of an untagged VLAN.
    SetUp {
        index: u32,
        name: String,
    },
    CreateVlan {
        link: VlanLink,
        parent_index: u32,
    },
    DeleteVxlan {
        index: u32,
        name: String,
        why: VxlanDeletion,
    },
    CreateVxlan {
        parent_index: u32,
    },
    /// The planned VXLAN device exists as planned but is down or has another MTU.
    SetVxlanUpAndMtu {
        index: u32,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkDiff {
    pub ops: Vec<LinkOp>,
    pub problems: Vec<String>,
}

/// Whether a kernel link is the planned VXLAN device, attribute for attribute.
pub(crate) fn vxlan_matches(l: &KernelLink, w: &VxlanDevice, parent: u32) -> bool {
    let Some(x) = &l.vxlan else { return false };
    l.kind.as_deref() == Some("vxlan")
        && x.vni == Some(w.vni)
        && x.parent == Some(parent)
        && x.local == Some(w.local)
        && x.port == Some(w.port)
        && x.learning != Some(true)
        && l.iface.mac == Some(w.mac)
}

/// Addresses of the VXLAN device to add (host prefixes) and to delete (with their prefix).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddressDiff {
    pub add: Vec<IpAddr>,
    pub delete: Vec<(IpAddr, u8)>,
}

/// A host prefix: /32 or /128.
pub(crate) fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The VXLAN device carries exactly the planned addresses, each as a host prefix; link-local
/// addresses are the kernel's.
pub(crate) fn diff_vxlan_addresses(have: &[HostAddress], want: &BTreeSet<IpAddr>) -> AddressDiff {
    let exact: BTreeSet<IpAddr> = have
        .iter()
        .filter(|a| a.prefix == host_prefix(a.ip) && !is_link_local(a.ip))
        .map(|a| a.ip)
        .collect();
    AddressDiff {
        add: want.difference(&exact).copied().collect(),
        delete: have
            .iter()
            .filter(|a| !is_link_local(a.ip))
            .filter(|a| !(want.contains(&a.ip) && a.prefix == host_prefix(a.ip)))
            .map(|a| (a.ip, a.prefix))
            .collect(),
    }
}

/// The links diff.
pub(crate) fn diff_links(
    vlan_links: &BTreeSet<VlanLink>,
    vxlan: Option<&VxlanDevice>,
    links: &[KernelLink],
) -> LinkDiff {
    let by_name: BTreeMap<&str, &KernelLink> =
        links.iter().map(|l| (l.iface.name.as_str(), l)).collect();
    let mut d = LinkDiff::default();
    for vl in vlan_links {
        let Some(parent) = by_name.get(vl.parent.as_str()) else {
            d.problems.push(format!(
                "VLAN {}: parent {} does not exist",
                vl.name, vl.parent
            ));
            continue;
        };
        // Untagged (id 0) is the parent itself.
        let existing = if vl.id == 0 {
            Some(*parent)
        } else {
            by_name.get(vl.name.as_str()).copied()
        };
        match existing {
            Some(l) if !l.iface.up => d.ops.push(LinkOp::SetUp {
                index: l.iface.index,
                name: vl.name.clone(),
            }),
            Some(_) => {}
            None => d.ops.push(LinkOp::CreateVlan {
                link: vl.clone(),
                parent_index: parent.iface.index,
            }),
        }
    }
    for l in links {
        let ours = l.iface.name.contains(".vxlan") && l.kind.as_deref() == Some("vxlan");
        if ours && vxlan.is_none_or(|w| w.name != l.iface.name) {
            d.ops.push(LinkOp::DeleteVxlan {
                index: l.iface.index,
                name: l.iface.name.clone(),
                why: VxlanDeletion::Stale,
            });
        }
    }
    let Some(w) = vxlan else { return d };
    let Some(parent) = by_name.get(w.parent.as_str()) else {
        d.problems.push(format!(
            "VXLAN {}: parent {} does not exist",
            w.name, w.parent
        ));
        return d;
    };
    let existing = by_name.get(w.name.as_str()).copied();
    match existing {
        Some(l) if vxlan_matches(l, w, parent.iface.index) => {
            if !l.iface.up || l.iface.mtu != w.mtu {
                d.ops.push(LinkOp::SetVxlanUpAndMtu {
                    index: l.iface.index,
                });
            }
        }
        Some(l) => {
            d.ops.push(LinkOp::DeleteVxlan {
                index: l.iface.index,
                name: w.name.clone(),
                why: VxlanDeletion::Differs,
            });
            d.ops.push(LinkOp::CreateVxlan {
                parent_index: parent.iface.index,
            });
        }
        None => d.ops.push(LinkOp::CreateVxlan {
            parent_index: parent.iface.index,
        }),
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::kernel::VxlanAttrs;
    use crate::plan::{HostInterface, MacAddr};

    fn link(name: &str, index: u32, up: bool, kind: Option<&str>) -> KernelLink {
        KernelLink {
            iface: HostInterface {
                name: name.into(),
                index,
                mac: Some(MacAddr([2, 0, 0, 0, 0, index as u8])),
                mtu: 1500,
                up,
                addresses: vec![],
            },
            kind: kind.map(Into::into),
            vxlan: None,
        }
    }

    fn planned_vxlan() -> VxlanDevice {
        VxlanDevice {
            name: "eth0.vxlan4".into(),
            vni: 4,
            parent: "eth0".into(),
            local: "198.18.0.1".parse().unwrap(),
            port: 8472,
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            mtu: 1450,
        }
    }

    fn as_planned(index: u32, up: bool, mtu: u32) -> KernelLink {
        let mut l = link("eth0.vxlan4", index, up, Some("vxlan"));
        l.iface.mac = Some(MacAddr([2, 0, 0, 0, 0, 2]));
        l.iface.mtu = mtu;
        l.vxlan = Some(VxlanAttrs {
            vni: Some(4),
            parent: Some(2),
            local: Some("198.18.0.1".parse().unwrap()),
            port: Some(8472),
            ..Default::default()
        });
        l
    }

    fn vlan(name: &str, parent: &str, id: u16) -> VlanLink {
        VlanLink {
            name: name.into(),
            parent: parent.into(),
            id,
        }
    }

    #[test]
    fn the_vxlan_device_carries_exactly_the_planned_host_addresses() {
        let a = |ip: &str, prefix: u8| HostAddress {
            ip: ip.parse().unwrap(),
            prefix,
            noprefixroute: false,
        };
        let have = vec![
            a("198.18.0.1", 32), // planned
            a("198.18.0.2", 24), // planned, wrong prefix: replaced
            a("198.18.0.3", 32), // not planned
            a("fe80::1", 64),    // the kernel's
        ];
        let want: BTreeSet<IpAddr> = ["198.18.0.1", "198.18.0.2", "fd00::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let d = diff_vxlan_addresses(&have, &want);
        assert_eq!(
            d.add,
            vec![
                "198.18.0.2".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(
            d.delete,
            vec![
                ("198.18.0.2".parse().unwrap(), 24),
                ("198.18.0.3".parse().unwrap(), 32)
            ]
        );
    }

    #[test]
    fn vlan_links_are_created_or_set_up_and_missing_parents_reported() {
        let links = vec![
            link("eth0", 2, false, None),
            link("eth0.7", 5, false, Some("vlan")),
        ];
        let want: BTreeSet<VlanLink> = [
            vlan("eth0", "eth0", 0),
            vlan("eth0.5", "eth0", 5),
            vlan("eth0.7", "eth0", 7),
            vlan("eth9.3", "eth9", 3),
        ]
        .into();
        let d = diff_links(&want, None, &links);
        assert_eq!(
            d.ops,
            vec![
                LinkOp::SetUp {
                    index: 2,
                    name: "eth0".into()
                },
                LinkOp::CreateVlan {
                    link: vlan("eth0.5", "eth0", 5),
                    parent_index: 2
                },
                LinkOp::SetUp {
                    index: 5,
                    name: "eth0.7".into()
                },
            ]
        );
        assert_eq!(
            d.problems,
            vec!["VLAN eth9.3: parent eth9 does not exist".to_string()]
        );
    }

    #[test]
    fn the_vxlan_device_is_kept_fixed_recreated_or_removed() {
        let eth0 = link("eth0", 2, true, None);
        let w = planned_vxlan();
        let none = BTreeSet::new();
        // As planned and up: nothing to do.
        let d = diff_links(&none, Some(&w), &[eth0.clone(), as_planned(9, true, 1450)]);
        assert_eq!(d, LinkDiff::default());
        // Down or another MTU: set, not recreated (pods keep their path).
        let d = diff_links(&none, Some(&w), &[eth0.clone(), as_planned(9, true, 1500)]);
        assert_eq!(d.ops, vec![LinkOp::SetVxlanUpAndMtu { index: 9 }]);
        // Another VNI: deleted, then created.
        let mut other = as_planned(9, true, 1450);
        other.vxlan.as_mut().unwrap().vni = Some(5);
        let d = diff_links(&none, Some(&w), &[eth0.clone(), other]);
        assert_eq!(
            d.ops,
            vec![
                LinkOp::DeleteVxlan {
                    index: 9,
                    name: "eth0.vxlan4".into(),
                    why: VxlanDeletion::Differs
                },
                LinkOp::CreateVxlan { parent_index: 2 },
            ]
        );
        // A stale device of ours goes; a foreign VXLAN device (not *.vxlan*) stays.
        let stale = {
            let mut l = as_planned(10, true, 1450);
            l.iface.name = "eth1.vxlan7".into();
            l
        };
        let foreign = link("flannel.1", 11, true, Some("vxlan"));
        let d = diff_links(&none, None, &[eth0.clone(), stale, foreign]);
        assert_eq!(
            d.ops,
            vec![LinkOp::DeleteVxlan {
                index: 10,
                name: "eth1.vxlan7".into(),
                why: VxlanDeletion::Stale
            }]
        );
        // No parent: reported, nothing created.
        let d = diff_links(&none, Some(&w), &[]);
        assert!(d.ops.is_empty());
        assert_eq!(
            d.problems,
            vec!["VXLAN eth0.vxlan4: parent eth0 does not exist".to_string()]
        );
    }
}

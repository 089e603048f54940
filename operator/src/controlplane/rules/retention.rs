//! Pure decisions of the stateful and KubeVirt VM allocation paths (upstream
//! `pkg/controllers/networking/pod_controller.go`): whether the pod already holds its addresses,
//! which pool entry and MAC it gets, which retained IPInstances are reused or deleted, and which
//! assigned addresses re-bind an existing IPInstance or need a new one. The pod controller
//! (`controllers/pod.rs`) does the I/O around them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hybridnet_api::constants::annotation;
use hybridnet_api::naming::{instance_name_to_ip, stateful_ordinal};
use hybridnet_api::operator::IpFamily;
use hybridnet_api::pools::{parse_ip_pool, parse_mac_pool};
use hybridnet_api::v1::{IPInstance, IpVersion};
use kube::ResourceExt;

use crate::ipam::{Allocation, AssignCandidate, MacAddr};

/// The IPInstances exist and are all bound to this incarnation (`uid`) on this `node` (e.g. a
/// previous leader finished the work): nothing to do.
pub fn bound_here(existing: &[IPInstance], uid: &str, node: &str) -> bool {
    !existing.is_empty()
        && existing.iter().all(|i| {
            i.spec.binding.pod_uid.as_deref() == Some(uid)
                && i.spec.binding.node_name.as_deref() == Some(node)
        })
}

/// The instances hold exactly one address of every version the family needs.
pub fn covers_family(instances: &[IPInstance], family: IpFamily) -> bool {
    let mut have: Vec<IpVersion> = instances.iter().map(|i| i.spec.address.version).collect();
    have.sort_by_key(|v| *v == IpVersion::V6);
    have == family.versions()
}

/// The index of a stateful pod's entry in a pool of `len` entries: its ordinal. `field` names the
/// annotation in the error.
pub fn pool_index(field: &str, pod_name: &str, len: usize) -> Result<usize, String> {
    let i = stateful_ordinal(pod_name)
        .ok_or_else(|| format!("{field}: pod name {pod_name:?} has no ordinal"))?
        as usize;
    if i >= len {
        return Err(format!(
            "{field}: no entry for ordinal {i} (the pool has {len})"
        ));
    }
    Ok(i)
}

/// The MAC the `mac-pool` annotation gives this pod (`None` without one, or an empty one).
pub fn pool_mac(mac_pool: Option<&str>, pod_name: &str) -> Result<Option<MacAddr>, String> {
    let Some(pool) = mac_pool.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let field = format!("metadata.annotations[{}]", annotation::MAC_POOL);
    let macs = parse_mac_pool(pool, &field).map_err(|e| e.to_string())?;
    let i = pool_index(&field, pod_name, macs.len())?;
    Ok(Some(macs[i]))
}

/// The retained IPInstances as assignment candidates (their own subnet, their address).
pub fn reuse_candidates(existing: &[IPInstance]) -> Vec<AssignCandidate> {
    existing
        .iter()
        .filter_map(|i| {
            instance_name_to_ip(&i.name_any()).map(|ip| AssignCandidate {
                subnet: Some(i.spec.subnet.clone()),
                ip,
            })
        })
        .collect()
}

/// The pod's MAC as its retained IPInstances record it (one MAC for all families).
pub fn retained_mac(existing: &[IPInstance]) -> Option<MacAddr> {
    existing
        .iter()
        .find_map(|i| MacAddr::parse_unicast(&i.spec.address.mac).ok())
}

/// What a stateful pod that keeps its addresses (retention or an `ip-pool`) gets.
#[derive(Debug)]
pub enum Reuse<'a> {
    /// Nothing retained and no pool: new addresses.
    Fresh,
    /// Assign these addresses (`force`: the pool's entry may take addresses kept for another
    /// pod), after deleting the IPInstances in `delete`.
    Assign {
        candidates: Vec<AssignCandidate>,
        force: bool,
        delete: Vec<&'a IPInstance>,
    },
}

/// The `ip-pool` entry of the pod's ordinal wins (forced; what the pod held outside it is freed,
/// upstream #418, with upstream's raw-bytes-vs-text comparison fixed); else its retained
/// IPInstances are reused; else it gets new addresses. `ip_pool` is the annotation, if not empty.
pub fn stateful_reuse<'a>(
    ip_pool: Option<&str>,
    pod_name: &str,
    existing: &'a [IPInstance],
) -> Result<Reuse<'a>, String> {
    if let Some(pool) = ip_pool {
        let field = format!("metadata.annotations[{}]", annotation::IP_POOL);
        let entries = parse_ip_pool(pool, &field).map_err(|e| e.to_string())?;
        let i = pool_index(&field, pod_name, entries.len())?;
        let wanted: Vec<IpAddr> = entries[i].addresses.clone();
        let keep: BTreeSet<IpAddr> = wanted.iter().copied().collect();
        let delete = existing
            .iter()
            .filter(|inst| {
                instance_name_to_ip(&inst.name_any()).is_none_or(|ip| !keep.contains(&ip))
            })
            .collect();
        let candidates = wanted
            .into_iter()
            .map(|ip| AssignCandidate { subnet: None, ip })
            .collect();
        return Ok(Reuse::Assign {
            candidates,
            force: true,
            delete,
        });
    }
    if existing.is_empty() {
        return Ok(Reuse::Fresh);
    }
    Ok(Reuse::Assign {
        candidates: reuse_candidates(existing),
        force: false,
        delete: Vec::new(),
    })
}

/// The assigned addresses whose IPInstance exists (re-bound to the pod) and the others (created),
/// each in assignment order.
pub fn split_rebind<'a>(
    allocs: &'a [Allocation],
    existing: &[IPInstance],
) -> (Vec<&'a Allocation>, Vec<Allocation>) {
    let names: BTreeSet<String> = existing.iter().map(|i| i.name_any()).collect();
    let (rebind, create): (Vec<&Allocation>, Vec<&Allocation>) = allocs
        .iter()
        .partition(|a| names.contains(&a.instance_name()));
    (rebind, create.into_iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{Address, Binding, IPInstanceSpec};

    fn inst(name: &str, version: IpVersion, uid: &str, node: &str, mac: &str) -> IPInstance {
        IPInstance::new(
            name,
            IPInstanceSpec {
                network: "n".into(),
                subnet: format!("s-{name}"),
                address: Address {
                    version,
                    mac: mac.into(),
                    ..Default::default()
                },
                binding: Binding {
                    pod_uid: Some(uid.into()),
                    node_name: Some(node.into()),
                    ..Default::default()
                },
            },
        )
    }

    fn v4(name: &str, uid: &str, node: &str) -> IPInstance {
        inst(name, IpVersion::V4, uid, node, "")
    }

    fn alloc(ip: &str) -> Allocation {
        let ip: IpAddr = ip.parse().expect("test ip");
        Allocation {
            network: "n".into(),
            subnet: "s".into(),
            ip,
            prefix_len: 24,
            gateway: None,
            net_id: None,
            version: if ip.is_ipv4() {
                IpVersion::V4
            } else {
                IpVersion::V6
            },
        }
    }

    fn cand(ip: &str, subnet: Option<&str>) -> AssignCandidate {
        AssignCandidate {
            subnet: subnet.map(String::from),
            ip: ip.parse().expect("test ip"),
        }
    }

    #[test]
    fn bound_only_when_every_instance_is_this_incarnations_on_this_node() {
        assert!(!bound_here(&[], "u", "n1"), "nothing held is not bound");
        let a = v4("10-0-0-1", "u", "n1");
        let b = v4("10-0-0-2", "u", "n1");
        assert!(bound_here(&[a.clone(), b.clone()], "u", "n1"));
        assert!(!bound_here(
            &[a.clone(), v4("10-0-0-2", "old", "n1")],
            "u",
            "n1"
        ));
        assert!(!bound_here(&[a, v4("10-0-0-2", "u", "n2")], "u", "n1"));
        let mut unbound = b;
        unbound.spec.binding = Binding::default();
        assert!(!bound_here(&[unbound], "u", "n1"));
    }

    #[test]
    fn family_coverage_needs_exactly_one_address_per_version() {
        let a4 = inst("10-0-0-1", IpVersion::V4, "u", "n", "");
        let a6 = inst("fd00-0-0-0-0-0-0-1", IpVersion::V6, "u", "n", "");
        assert!(covers_family(std::slice::from_ref(&a4), IpFamily::IPv4));
        assert!(!covers_family(
            std::slice::from_ref(&a4),
            IpFamily::DualStack
        ));
        assert!(covers_family(
            &[a6.clone(), a4.clone()],
            IpFamily::DualStack
        ));
        assert!(!covers_family(&[a4.clone(), a4.clone()], IpFamily::IPv4));
        assert!(!covers_family(&[a4, a6], IpFamily::IPv6));
    }

    #[test]
    fn the_pool_entry_is_the_ordinal_and_must_exist() {
        assert_eq!(pool_index("f", "web-2", 3), Ok(2));
        let no_ordinal = pool_index("f", "web", 3).expect_err("no ordinal");
        assert!(
            no_ordinal.contains("f: pod name \"web\" has no ordinal"),
            "{no_ordinal}"
        );
        let past = pool_index("f", "web-3", 3).expect_err("past the end");
        assert!(
            past.contains("no entry for ordinal 3 (the pool has 3)"),
            "{past}"
        );
    }

    #[test]
    fn the_mac_pool_gives_the_ordinals_mac_and_names_the_annotation_when_wrong() {
        assert_eq!(pool_mac(None, "web-0"), Ok(None));
        assert_eq!(pool_mac(Some("  "), "web-0"), Ok(None));
        let pool = "02:00:00:00:00:01,02:00:00:00:00:02";
        assert_eq!(
            pool_mac(Some(pool), "web-1"),
            Ok(Some(
                MacAddr::parse_unicast("02:00:00:00:00:02").expect("mac")
            ))
        );
        for (value, pod) in [
            (pool, "web-2"),
            (pool, "web"),
            ("not-a-mac", "web-0"),
            (",", "web-0"),
        ] {
            let err = pool_mac(Some(value), pod).expect_err(value);
            assert!(err.contains(annotation::MAC_POOL), "{value} {pod}: {err}");
        }
    }

    #[test]
    fn retained_instances_are_candidates_in_their_subnet_and_keep_the_first_valid_mac() {
        let a = inst("10-0-0-1", IpVersion::V4, "u", "n", "not a mac");
        let b = inst(
            "fd00-0-0-0-0-0-0-1",
            IpVersion::V6,
            "u",
            "n",
            "02:00:00:00:00:09",
        );
        let junk = v4("not-an-ip", "u", "n");
        assert_eq!(
            reuse_candidates(&[a.clone(), junk, b.clone()]),
            vec![
                cand("10.0.0.1", Some("s-10-0-0-1")),
                cand("fd00::1", Some("s-fd00-0-0-0-0-0-0-1"))
            ]
        );
        assert_eq!(
            retained_mac(&[a.clone(), b]),
            Some(MacAddr::parse_unicast("02:00:00:00:00:09").expect("mac"))
        );
        assert_eq!(retained_mac(&[a]), None);
    }

    /// `None` for `Fresh`, else the candidates, the force flag and the names deleted.
    type Summary = Option<(Vec<AssignCandidate>, bool, Vec<String>)>;

    fn summary(r: Result<Reuse<'_>, String>) -> Result<Summary, String> {
        Ok(match r? {
            Reuse::Fresh => None,
            Reuse::Assign {
                candidates,
                force,
                delete,
            } => Some((
                candidates,
                force,
                delete.iter().map(|i| i.name_any()).collect(),
            )),
        })
    }

    #[test]
    fn without_a_pool_retained_instances_are_reused_unforced_or_new_ones_allocated() {
        assert_eq!(summary(stateful_reuse(None, "web-0", &[])), Ok(None));
        let held = [v4("10-0-0-1", "old", "n1")];
        assert_eq!(
            summary(stateful_reuse(None, "web-0", &held)),
            Ok(Some((
                vec![cand("10.0.0.1", Some("s-10-0-0-1"))],
                false,
                vec![]
            )))
        );
    }

    #[test]
    fn the_pool_entry_is_forced_and_what_the_pod_held_outside_it_is_deleted() {
        let held = [
            v4("10-0-0-1", "old", "n1"),
            v4("10-0-0-7", "old", "n1"),
            v4("not-an-ip", "old", "n1"),
        ];
        let pool = "10.0.0.5,10.0.0.7/fd00::7";
        assert_eq!(
            summary(stateful_reuse(Some(pool), "web-1", &held)),
            Ok(Some((
                vec![cand("10.0.0.7", None), cand("fd00::7", None)],
                true,
                vec!["10-0-0-1".to_string(), "not-an-ip".to_string()]
            )))
        );
        // A pool wins over having nothing: no fresh allocation.
        assert_eq!(
            summary(stateful_reuse(Some(pool), "web-0", &[])),
            Ok(Some((vec![cand("10.0.0.5", None)], true, vec![])))
        );
    }

    #[test]
    fn a_wrong_pool_refuses_and_deletes_nothing() {
        let held = [v4("10-0-0-1", "old", "n1")];
        for (pool, pod) in [
            ("10.0.0.5", "web-1"),
            ("10.0.0.5", "web"),
            ("10.0.0.300", "web-0"),
            ("10.0.0.5,,10.0.0.6", "web-0"),
        ] {
            let err = stateful_reuse(Some(pool), pod, &held).expect_err(pool);
            assert!(err.contains(annotation::IP_POOL), "{pool} {pod}: {err}");
        }
    }

    #[test]
    fn assigned_addresses_with_an_instance_are_rebound_the_others_created_in_order() {
        let allocs = [alloc("10.0.0.1"), alloc("fd00::1"), alloc("10.0.0.2")];
        let existing = [v4("10-0-0-2", "old", "n1"), v4("10-0-0-1", "old", "n1")];
        let (rebind, create) = split_rebind(&allocs, &existing);
        assert_eq!(rebind, vec![&allocs[0], &allocs[2]]);
        assert_eq!(create, vec![allocs[1].clone()]);
        let (rebind, create) = split_rebind(&allocs, &[]);
        assert!(rebind.is_empty());
        assert_eq!(create, allocs.to_vec());
    }
}

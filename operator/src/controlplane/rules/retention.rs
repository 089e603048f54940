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

/// Where the pod that holds a VM's IPInstances is, as read from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderState {
    /// No pod of that name, or one with another uid.
    Gone,
    /// Terminating, evicted or completed.
    Going,
    /// Scheduled and live: the VM may run in it.
    Live,
}

/// The state of the holder pod `found` (the pod of the binding's name, if any), whose binding
/// records `uid` (when known).
pub fn holder_state(
    found: Option<&k8s_openapi::api::core::v1::Pod>,
    uid: Option<&str>,
) -> HolderState {
    use crate::controlplane::rules::podstate::{is_completed, is_evicted, is_terminating};
    let Some(p) = found else {
        return HolderState::Gone;
    };
    if uid.is_some_and(|u| p.metadata.uid.as_deref() != Some(u)) {
        return HolderState::Gone;
    }
    if is_terminating(p) || is_evicted(p) || is_completed(p) {
        HolderState::Going
    } else {
        HolderState::Live
    }
}

/// The pods other than the one with uid `uid` that a VM's IPInstances are bound to (not
/// reserved): (pod name, pod uid), each once, in order.
pub fn vm_holders(existing: &[IPInstance], uid: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for i in existing.iter().filter(|i| !i.spec.is_reserved()) {
        let b = &i.spec.binding;
        let Some(name) = b.pod_name.clone().filter(|n| !n.is_empty()) else {
            continue;
        };
        let holder_uid = b.pod_uid.clone().filter(|u| !u.is_empty());
        if holder_uid.as_deref() == Some(uid) {
            continue;
        }
        if !out.iter().any(|(n, u)| *n == name && *u == holder_uid) {
            out.push((name, holder_uid));
        }
    }
    out
}

/// What the VM's pod is, for its VM's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmPodFacts<'a> {
    pub uid: &'a str,
    pub node: &'a str,
    /// Labelled as a live migration's target (`hybridnet_api::kubevirt::migration_job_of_pod`).
    pub migration_target: bool,
    /// KubeVirt says the VM runs in it (`hybridnet_api::kubevirt::migration_target_ready`).
    pub target_ready: bool,
}

/// What a VM's pod gets of the VM's IPInstances (docs/api.md, "KubeVirt VMs").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmAssign {
    /// They are bound to this pod on its node already.
    Bound,
    /// Force-assign them and re-bind them to this pod now: no other pod of the VM is live with
    /// them, or this migration target runs the VM now (the binding moves from the source).
    Take,
    /// A live migration's target while the source pod (`source`) holds them and runs the VM:
    /// the target is named on them and gets the same addresses and MAC on its node; the binding,
    /// and with it every route towards the VM, stays with the source.
    Share { source: String },
    /// Another pod of the VM (`holder`) holds them and this pod is no migration target: it
    /// waits, as upstream's IPAM refuses an address in use by another pod.
    Wait { holder: String },
}

/// Decides what a VM's pod `pod` gets of the VM's IPInstances `existing` (not empty), with
/// `holder` the state of each pod they are bound to ([`vm_holders`], [`holder_state`]).
pub fn vm_assignment(
    existing: &[IPInstance],
    pod: &VmPodFacts,
    holder: impl Fn(&str, Option<&str>) -> HolderState,
) -> VmAssign {
    if bound_here(existing, pod.uid, pod.node) {
        return VmAssign::Bound;
    }
    let live: Vec<String> = vm_holders(existing, pod.uid)
        .into_iter()
        .filter(|(name, uid)| holder(name, uid.as_deref()) != HolderState::Gone)
        .map(|(name, _)| name)
        .collect();
    let Some(first) = live.into_iter().next() else {
        return VmAssign::Take;
    };
    match (pod.migration_target, pod.target_ready) {
        (false, _) => VmAssign::Wait { holder: first },
        (true, true) => VmAssign::Take,
        (true, false) => VmAssign::Share { source: first },
    }
}

/// The pod that keeps sharing a VM's addresses `existing` once the pod with uid `uid` takes them
/// ([`VmAssign::Take`]): the first other pod they are bound to that has not gone (a live
/// migration's source, where the VM ran until now), with its node. Named on the IPInstances
/// (`hybridnet_api::kubevirt::MIGRATION_PEER_ANNOTATION`) until it goes.
pub fn peer_after_take(
    existing: &[IPInstance],
    uid: &str,
    holder: impl Fn(&str, Option<&str>) -> HolderState,
) -> Option<hybridnet_api::kubevirt::MigrationPeer> {
    existing
        .iter()
        .filter(|i| !i.spec.is_reserved())
        .find_map(|i| {
            let b = &i.spec.binding;
            let pod = b.pod_name.clone().filter(|n| !n.is_empty())?;
            let pod_uid = b.pod_uid.clone().filter(|u| !u.is_empty() && u != uid)?;
            let node = b.node_name.clone().filter(|n| !n.is_empty())?;
            (holder(&pod, Some(&pod_uid)) != HolderState::Gone).then_some(
                hybridnet_api::kubevirt::MigrationPeer {
                    pod,
                    uid: pod_uid,
                    node,
                },
            )
        })
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

    fn vm_inst(name: &str, pod: Option<(&str, &str)>, node: Option<&str>) -> IPInstance {
        let mut i = v4(name, "x", "x");
        i.spec.binding = Binding {
            pod_name: pod.map(|p| p.0.to_string()),
            pod_uid: pod.map(|p| p.1.to_string()),
            node_name: node.map(String::from),
            ..Default::default()
        };
        i
    }

    fn target(uid: &str, ready: bool) -> VmPodFacts<'_> {
        VmPodFacts {
            uid,
            node: "n2",
            migration_target: true,
            target_ready: ready,
        }
    }

    #[test]
    fn holders_are_the_other_bound_pods_once() {
        let ex = [
            vm_inst("10-0-0-1", Some(("src", "u1")), Some("n1")),
            vm_inst("fd00-0-0-0-0-0-0-1", Some(("src", "u1")), Some("n1")),
            vm_inst("10-0-0-2", Some(("me", "u2")), Some("n2")),
            vm_inst("10-0-0-3", Some(("old", "u0")), None),
        ];
        assert_eq!(
            vm_holders(&ex, "u2"),
            vec![("src".to_string(), Some("u1".to_string()))]
        );
        assert!(vm_holders(&ex[2..], "u2").is_empty());
    }

    #[test]
    fn a_migration_target_shares_while_the_source_runs_and_takes_when_the_vm_runs_in_it() {
        let ex = [
            vm_inst("10-0-0-1", Some(("src", "u1")), Some("n1")),
            vm_inst("fd00-0-0-0-0-0-0-1", Some(("src", "u1")), Some("n1")),
        ];
        let live = |_: &str, _: Option<&str>| HolderState::Live;
        let going = |_: &str, _: Option<&str>| HolderState::Going;
        let gone = |_: &str, _: Option<&str>| HolderState::Gone;
        let share = VmAssign::Share {
            source: "src".into(),
        };
        assert_eq!(vm_assignment(&ex, &target("u2", false), live), share);
        // The source is going but may still run the VM (its reservation hands over).
        assert_eq!(vm_assignment(&ex, &target("u2", false), going), share);
        assert_eq!(
            vm_assignment(&ex, &target("u2", true), live),
            VmAssign::Take
        );
        assert_eq!(
            vm_assignment(&ex, &target("u2", false), gone),
            VmAssign::Take
        );
        // Bound here already.
        let mine = [vm_inst("10-0-0-1", Some(("dst", "u2")), Some("n2"))];
        assert_eq!(
            vm_assignment(&mine, &target("u2", false), live),
            VmAssign::Bound
        );
        // Reserved addresses (the VM restarted) are taken, migration or not.
        let reserved = [vm_inst("10-0-0-1", None, None)];
        assert_eq!(
            vm_assignment(&reserved, &target("u2", false), live),
            VmAssign::Take
        );
    }

    #[test]
    fn the_source_stays_named_after_the_take_until_it_goes() {
        let ex = [
            vm_inst("10-0-0-1", Some(("src", "u1")), Some("n1")),
            vm_inst("fd00-0-0-0-0-0-0-1", Some(("src", "u1")), Some("n1")),
        ];
        let want = hybridnet_api::kubevirt::MigrationPeer {
            pod: "src".into(),
            uid: "u1".into(),
            node: "n1".into(),
        };
        for state in [HolderState::Live, HolderState::Going] {
            assert_eq!(peer_after_take(&ex, "u2", |_, _| state), Some(want.clone()));
        }
        assert_eq!(peer_after_take(&ex, "u2", |_, _| HolderState::Gone), None);
        // Nobody else: the taker itself, reserved addresses, or a binding without uid or node.
        assert_eq!(peer_after_take(&ex, "u1", |_, _| HolderState::Live), None);
        let reserved = [vm_inst("10-0-0-1", None, None)];
        assert_eq!(
            peer_after_take(&reserved, "u2", |_, _| HolderState::Live),
            None
        );
        let no_node = [vm_inst("10-0-0-1", Some(("src", "u1")), None)];
        assert_eq!(
            peer_after_take(&no_node, "u2", |_, _| HolderState::Live),
            None
        );
    }

    #[test]
    fn an_ordinary_second_pod_of_the_vm_never_takes_a_live_pods_addresses() {
        let ex = [vm_inst("10-0-0-1", Some(("src", "u1")), Some("n1"))];
        let plain = VmPodFacts {
            uid: "u2",
            node: "n2",
            migration_target: false,
            // Ready without being a migration target means nothing.
            target_ready: true,
        };
        for state in [HolderState::Live, HolderState::Going] {
            assert_eq!(
                vm_assignment(&ex, &plain, |_, _| state),
                VmAssign::Wait {
                    holder: "src".into()
                }
            );
        }
        assert_eq!(
            vm_assignment(&ex, &plain, |_, _| HolderState::Gone),
            VmAssign::Take
        );
    }

    #[test]
    fn the_holders_state_follows_its_uid_and_lifecycle() {
        use k8s_openapi::api::core::v1::{Pod, PodStatus};
        let mut p = Pod::default();
        p.metadata.uid = Some("u1".into());
        assert_eq!(holder_state(None, Some("u1")), HolderState::Gone);
        assert_eq!(holder_state(Some(&p), Some("u1")), HolderState::Live);
        assert_eq!(holder_state(Some(&p), None), HolderState::Live);
        assert_eq!(holder_state(Some(&p), Some("u9")), HolderState::Gone);
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            reason: Some("Evicted".into()),
            ..Default::default()
        });
        assert_eq!(holder_state(Some(&p), Some("u1")), HolderState::Going);
        p.status = None;
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert_eq!(holder_state(Some(&p), Some("u1")), HolderState::Going);
    }

    mod vm_props {
        use super::*;
        use proptest::prelude::*;

        fn state() -> impl Strategy<Value = HolderState> {
            prop::sample::select(vec![
                HolderState::Gone,
                HolderState::Going,
                HolderState::Live,
            ])
        }

        proptest! {
            #[test]
            fn only_a_ready_migration_target_or_no_live_holder_takes_a_vms_addresses(
                bound in prop::collection::vec((0u8..3, any::<bool>()), 1..4),
                states in prop::collection::vec(state(), 3),
                migration_target in any::<bool>(),
                target_ready in any::<bool>(),
            ) {
                // Pods 0, 1, 2; the pod deciding is pod 2 on n2.
                let ex: Vec<IPInstance> = bound
                    .iter()
                    .enumerate()
                    .map(|(k, (p, reserved))| {
                        let name = format!("10-0-0-{}", k + 1);
                        if *reserved {
                            vm_inst(&name, None, None)
                        } else {
                            let pod = format!("p{p}");
                            let uid = format!("u{p}");
                            let node = if *p == 2 { "n2" } else { "n1" };
                            vm_inst(&name, Some((&pod, &uid)), Some(node))
                        }
                    })
                    .collect();
                let facts = VmPodFacts { uid: "u2", node: "n2", migration_target, target_ready };
                let holder = |name: &str, _: Option<&str>| {
                    let k: usize = name[1..].parse().unwrap_or(0);
                    states[k]
                };
                let got = vm_assignment(&ex, &facts, holder);
                let other_live = vm_holders(&ex, "u2")
                    .iter()
                    .any(|(n, u)| holder(n, u.as_deref()) != HolderState::Gone);
                match &got {
                    VmAssign::Take => prop_assert!(!other_live || (migration_target && target_ready)),
                    VmAssign::Share { .. } => prop_assert!(other_live && migration_target && !target_ready),
                    VmAssign::Wait { .. } => prop_assert!(other_live && !migration_target),
                    VmAssign::Bound => prop_assert!(bound_here(&ex, "u2", "n2")),
                }
            }
        }
    }
}

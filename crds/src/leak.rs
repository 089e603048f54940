//! Leak classification of IPInstances: the one rule the operator's leak repair
//! (`operator/src/controlplane/controllers/leak.rs`) and `kubectl hybridnet ip check` both apply, so they cannot
//! disagree about which address is leaked.
//!
//! Upstream hybridnet has no leak repair: an IPInstance owned by its Pod goes with the Pod
//! (Kubernetes garbage collection through the ownerRef), one owned by a stateful workload is
//! reserved when its pod goes and re-bound by the next pod of the same name
//! (`pkg/controllers/networking/pod_controller.go` upstream). The rule below calls leaked exactly
//! what nothing in that scheme will ever bind again or free.

use crate::kubevirt::MigrationPeer;
use crate::v1::IPInstanceSpec;

/// What the rule needs of an IPInstance's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingFacts<'a> {
    /// `spec.binding.nodeName` is empty.
    pub reserved: bool,
    /// `spec.binding.podName`, if not empty.
    pub pod_name: Option<&'a str>,
    /// `spec.binding.podUID`, if not empty.
    pub pod_uid: Option<&'a str>,
    /// `spec.binding.referredObject.kind`, if not empty.
    pub owner_kind: Option<&'a str>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}

impl<'a> BindingFacts<'a> {
    pub fn of(spec: &'a IPInstanceSpec) -> Self {
        let b = &spec.binding;
        Self {
            reserved: spec.is_reserved(),
            pod_name: nonempty(&b.pod_name),
            pod_uid: nonempty(&b.pod_uid),
            owner_kind: b.referred_object.as_ref().and_then(|r| nonempty(&r.kind)),
        }
    }
}

/// Whether the stateful workload that owns an IPInstance still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    Exists,
    Gone,
    /// Not looked up (the operator leaves a gone owner's IPInstances to Kubernetes' garbage
    /// collection; the CLI lists only StatefulSets).
    Unknown,
}

/// The pod an IPInstance names, as found in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodLookup<'a> {
    /// No pod of that name in the IPInstance's namespace (or the IPInstance names none).
    Gone,
    /// The pod exists, with this uid (if known).
    Exists { uid: Option<&'a str> },
}

/// Why an IPInstance is leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leak {
    /// Its stateful owner is gone.
    StatefulOwnerGone,
    /// Reserved although no stateful workload owns it: nothing binds a reserved address of a
    /// plain pod again, whether or not a pod of that name still exists.
    ReservedWithoutStatefulOwner { pod_exists: bool },
    /// Bound to a node but to no pod.
    NoPod,
    /// Its pod no longer exists.
    PodGone,
    /// A pod of that name exists with another uid: the address belonged to the old pod.
    PodRecreated,
}

/// The verdict on one IPInstance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Keep,
    /// A stateful pod is gone but its address was never reserved: reserve it for the next pod.
    Reserve,
    /// Leaked: deleting it frees the address.
    Leaked(Leak),
}

/// Classifies one IPInstance (not being deleted). `stateful` is `None` when the owner kind is not
/// one of the stateful kinds, else whether that owner still exists.
pub fn classify(b: &BindingFacts, pod: PodLookup, stateful: Option<OwnerState>) -> Verdict {
    let pod = if b.pod_name.is_some() {
        pod
    } else {
        PodLookup::Gone
    };
    match stateful {
        Some(OwnerState::Gone) => Verdict::Leaked(Leak::StatefulOwnerGone),
        // Retained for the next incarnation; a live stateful pod (even with a new uid) re-binds it.
        Some(_) if b.reserved || matches!(pod, PodLookup::Exists { .. }) => Verdict::Keep,
        Some(_) if b.pod_name.is_some() => Verdict::Reserve,
        Some(_) => Verdict::Keep,
        None if b.reserved => match b.owner_kind {
            // Another owner kind (upstream's VirtualMachine retention, or a kind removed from the
            // stateful kinds) keeps it; garbage collection frees it with that owner.
            Some(k) if k != "Pod" => Verdict::Keep,
            _ => Verdict::Leaked(Leak::ReservedWithoutStatefulOwner {
                pod_exists: matches!(pod, PodLookup::Exists { .. }),
            }),
        },
        None => match pod {
            PodLookup::Gone if b.pod_name.is_none() => Verdict::Leaked(Leak::NoPod),
            PodLookup::Gone => Verdict::Leaked(Leak::PodGone),
            // Only a uid known on both sides proves the pod is another one.
            PodLookup::Exists { uid: Some(now) } if b.pod_uid.is_some_and(|was| was != now) => {
                Verdict::Leaked(Leak::PodRecreated)
            }
            PodLookup::Exists { .. } => Verdict::Keep,
        },
    }
}

/// Whether an IPInstance gives a pod its address: not reserved, bound to the pod's name and, where
/// both uids are known, to this very pod.
pub fn binds_pod(b: &BindingFacts, pod_name: &str, pod_uid: Option<&str>) -> bool {
    !b.reserved
        && b.pod_name == Some(pod_name)
        && match (b.pod_uid, pod_uid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// Whether an IPInstance gives a pod its address: it binds the pod ([`binds_pod`]), or it names
/// the pod as the target of a KubeVirt VM's live migration (`target`: its
/// `crate::kubevirt::MIGRATION_PEER_ANNOTATION`), which shares the VM's addresses while the
/// source pod still holds the binding (docs/api.md, "KubeVirt VMs").
pub fn serves_pod(
    b: &BindingFacts,
    target: Option<&MigrationPeer>,
    pod_name: &str,
    pod_uid: Option<&str>,
) -> bool {
    binds_pod(b, pod_name, pod_uid) || target.is_some_and(|t| t.names_pod(pod_name, pod_uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Option<&str>; 4] = [
        None,
        Some("Pod"),
        Some("StatefulSet"),
        Some("VirtualMachine"),
    ];

    fn facts<'a>(
        reserved: bool,
        pod_name: Option<&'a str>,
        pod_uid: Option<&'a str>,
        owner_kind: Option<&'a str>,
    ) -> BindingFacts<'a> {
        BindingFacts {
            reserved,
            pod_name,
            pod_uid,
            owner_kind,
        }
    }

    #[test]
    fn plain_pods() {
        let live = facts(false, Some("p"), Some("u1"), Some("Pod"));
        let same = PodLookup::Exists { uid: Some("u1") };
        let other = PodLookup::Exists { uid: Some("u2") };
        assert_eq!(classify(&live, same, None), Verdict::Keep);
        assert_eq!(
            classify(&live, other, None),
            Verdict::Leaked(Leak::PodRecreated)
        );
        assert_eq!(
            classify(&live, PodLookup::Gone, None),
            Verdict::Leaked(Leak::PodGone)
        );
        // An unknown uid proves nothing.
        let no_uid = facts(false, Some("p"), None, Some("Pod"));
        assert_eq!(classify(&no_uid, other, None), Verdict::Keep);
        assert_eq!(
            classify(&live, PodLookup::Exists { uid: None }, None),
            Verdict::Keep
        );
        let unnamed = facts(false, None, None, None);
        assert_eq!(classify(&unnamed, same, None), Verdict::Leaked(Leak::NoPod));
    }

    #[test]
    fn reserved_without_a_stateful_owner_is_leaked_even_while_its_pod_exists() {
        for owner in [None, Some("Pod")] {
            let r = facts(true, Some("p"), None, owner);
            assert_eq!(
                classify(&r, PodLookup::Exists { uid: Some("u") }, None),
                Verdict::Leaked(Leak::ReservedWithoutStatefulOwner { pod_exists: true })
            );
            assert_eq!(
                classify(&r, PodLookup::Gone, None),
                Verdict::Leaked(Leak::ReservedWithoutStatefulOwner { pod_exists: false })
            );
        }
        let vm = facts(true, None, None, Some("VirtualMachine"));
        assert_eq!(classify(&vm, PodLookup::Gone, None), Verdict::Keep);
    }

    #[test]
    fn stateful_owners() {
        let bound = facts(false, Some("web-0"), Some("u1"), Some("StatefulSet"));
        let reserved = facts(true, Some("web-0"), None, Some("StatefulSet"));
        let new_pod = PodLookup::Exists { uid: Some("u2") };
        for owner in [OwnerState::Exists, OwnerState::Unknown] {
            assert_eq!(
                classify(&reserved, PodLookup::Gone, Some(owner)),
                Verdict::Keep
            );
            assert_eq!(classify(&reserved, new_pod, Some(owner)), Verdict::Keep);
            assert_eq!(classify(&bound, new_pod, Some(owner)), Verdict::Keep);
            assert_eq!(
                classify(&bound, PodLookup::Gone, Some(owner)),
                Verdict::Reserve
            );
        }
        for b in [bound, reserved] {
            assert_eq!(
                classify(&b, new_pod, Some(OwnerState::Gone)),
                Verdict::Leaked(Leak::StatefulOwnerGone)
            );
        }
    }

    #[test]
    fn a_pod_that_exists_with_its_uid_never_loses_a_bound_address() {
        for kind in KINDS {
            for stateful in [None, Some(OwnerState::Exists), Some(OwnerState::Unknown)] {
                let b = facts(false, Some("p"), Some("u"), kind);
                assert_eq!(
                    classify(&b, PodLookup::Exists { uid: Some("u") }, stateful),
                    Verdict::Keep,
                    "{kind:?} {stateful:?}"
                );
                assert!(binds_pod(&b, "p", Some("u")));
            }
        }
    }

    #[test]
    fn a_migration_target_is_served_while_the_source_keeps_the_binding() {
        let source = facts(false, Some("src"), Some("u1"), Some("VirtualMachine"));
        let t = MigrationPeer {
            pod: "dst".into(),
            uid: "u2".into(),
            node: "n2".into(),
        };
        assert!(serves_pod(&source, Some(&t), "dst", Some("u2")));
        assert!(serves_pod(&source, Some(&t), "dst", None));
        assert!(serves_pod(&source, Some(&t), "src", Some("u1")));
        assert!(serves_pod(&source, None, "src", Some("u1")));
        assert!(!serves_pod(&source, None, "dst", Some("u2")));
        // A recreated pod of the target's name is another pod.
        assert!(!serves_pod(&source, Some(&t), "dst", Some("u3")));
        assert!(!serves_pod(&source, Some(&t), "other", Some("u2")));
        // The IPInstance itself is judged by its binding alone: the source pod keeps it.
        assert_eq!(
            classify(&source, PodLookup::Exists { uid: Some("u1") }, None),
            Verdict::Keep
        );
    }

    #[test]
    fn binding() {
        let b = facts(false, Some("p"), Some("u"), None);
        assert!(binds_pod(&b, "p", Some("u")));
        assert!(binds_pod(&b, "p", None));
        assert!(!binds_pod(&b, "p", Some("other")));
        assert!(!binds_pod(&b, "q", Some("u")));
        assert!(!binds_pod(
            &facts(true, Some("p"), None, None),
            "p",
            Some("u")
        ));
        assert!(binds_pod(
            &facts(false, Some("p"), None, None),
            "p",
            Some("u")
        ));
    }
}

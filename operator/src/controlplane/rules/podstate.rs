//! Pure decisions about a pod's lifecycle for the IPAM (upstream `pkg/controllers/networking/pod_controller.go`).

use hybridnet_api::constants::finalizer;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::controlplane::rules::defaults::PodDefaults;
use hybridnet_api::selector::PodSelector;

/// What the pod controller should do with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// hostNetwork pods, unscheduled pods and terminating pods without our finalizer.
    Ignore,
    /// A scheduled, live pod: make sure it has its addresses.
    Allocate,
    /// A stateful pod is going away but a container still runs (preStop): wait.
    WaitForContainers,
    /// A stateful pod is going away and nothing runs: reserve its addresses, drop the finalizer.
    Reserve,
    /// A live pod of a KubeVirt VM (`VMIPRetain`): the VM's retained addresses, else new ones
    /// labelled with the VM and owned by it.
    AllocateVm,
    /// A VM's pod is going away, the VM stays and nothing runs: reserve its addresses for the
    /// VM's next pod (the pod name is dropped: the next pod has another), drop the finalizer.
    ReserveVm,
    /// An evicted or completed ordinary pod: delete its IPInstances now.
    Release,
    /// A terminating pod still carries our finalizer but has nothing to keep: drop the finalizer.
    RemoveFinalizer,
    /// An ordinary terminating pod: its IPInstances go with it through garbage collection.
    LeaveToGarbageCollector,
}

/// Phase `Failed` with reason `Evicted`.
pub fn is_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
    })
}

/// Phase `Succeeded` and every container of the spec has a status (upstream `IsPodCompleted`).
pub fn is_completed(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if status.phase.as_deref() != Some("Succeeded") {
        return false;
    }
    let spec_containers = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    status
        .container_statuses
        .as_ref()
        .map(Vec::len)
        .unwrap_or(0)
        >= spec_containers
}

/// Any container (init or app) is in state Running.
pub fn any_container_running(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub fn has_ip_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer::IP_ALLOCATED)
}

/// Whether the pod controller handles `pod`: it matches `--pod-label-selector`, or it carries our
/// `ip-allocated` finalizer (we allocated it while it matched; only we can take the finalizer off,
/// so a stateful pod relabelled out of the selector must not hang in Terminating).
pub fn is_handled(selector: &PodSelector, pod: &Pod) -> bool {
    selector.matches_pod(pod) || has_ip_finalizer(pod)
}

/// The pod's controller owner reference.
pub fn controller_owner(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The pod is run by a stateful workload (controller owner of a stateful kind).
pub fn is_stateful(pod: &Pod, cfg: &PodDefaults) -> bool {
    controller_owner(pod).is_some_and(|o| cfg.is_stateful_kind(&o.kind))
}

/// What the pod controller found out about the KubeVirt VirtualMachine a pod belongs to
/// (`hybridnet_api::kubevirt`); always [`VmFacts::NotVm`] while the `VMIPRetain` gate is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmFacts {
    NotVm,
    /// The pod is a VM's; `vm_alive`: the VirtualMachine exists and is not being deleted.
    Vm {
        vm_alive: bool,
    },
}

/// Decides what to do with `pod`. `retained_owner_stateful` says whether the pod's existing
/// IPInstances are owned by a stateful workload (used when the pod lost its owner reference,
/// upstream fix v0.7.7). Stateful workloads come first, then VMs, as upstream
/// (`pkg/controllers/networking/pod_controller.go`, `Reconcile`).
pub fn decide(
    pod: &Pod,
    cfg: &PodDefaults,
    retained_owner_stateful: bool,
    vm: VmFacts,
) -> PodAction {
    if is_host_network(pod) {
        return if has_ip_finalizer(pod) {
            PodAction::RemoveFinalizer
        } else {
            PodAction::Ignore
        };
    }
    let going = is_terminating(pod) || is_evicted(pod) || is_completed(pod);
    if going {
        let stateful = is_stateful(pod, cfg) || retained_owner_stateful;
        if stateful {
            if any_container_running(pod) {
                return PodAction::WaitForContainers;
            }
            return PodAction::Reserve;
        }
        if let VmFacts::Vm { vm_alive } = vm {
            if !vm_alive {
                // The VM is gone: nothing to keep; its IPInstances go with it (owner reference).
                return if has_ip_finalizer(pod) {
                    PodAction::RemoveFinalizer
                } else {
                    PodAction::LeaveToGarbageCollector
                };
            }
            if any_container_running(pod) {
                return PodAction::WaitForContainers;
            }
            return PodAction::ReserveVm;
        }
        if is_evicted(pod) || is_completed(pod) {
            return PodAction::Release;
        }
        if has_ip_finalizer(pod) {
            return PodAction::RemoveFinalizer;
        }
        return PodAction::LeaveToGarbageCollector;
    }
    if node_name(pod).is_none() {
        return PodAction::Ignore;
    }
    if !is_stateful(pod, cfg) && matches!(vm, VmFacts::Vm { .. }) {
        return PodAction::AllocateVm;
    }
    PodAction::Allocate
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStatus, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pod(node: Option<&str>, owner_kind: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-0".into());
        p.spec = Some(PodSpec {
            node_name: node.map(String::from),
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        if let Some(k) = owner_kind {
            p.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: k.into(),
                name: "web".into(),
                uid: "u".into(),
                controller: Some(true),
                ..Default::default()
            }]);
        }
        p
    }

    fn with_container(mut p: Pod, running: bool) -> Pod {
        let state = if running {
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }
        } else {
            ContainerState {
                terminated: Some(ContainerStateTerminated::default()),
                ..Default::default()
            }
        };
        let st = p.status.get_or_insert_with(PodStatus::default);
        st.container_statuses = Some(vec![ContainerStatus {
            name: "c".into(),
            state: Some(state),
            ..Default::default()
        }]);
        p
    }

    fn terminating(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        p
    }

    #[test]
    fn selected_pods_and_pods_with_our_finalizer_are_handled() {
        let selector = hybridnet_api::selector::parse("hybridnet=yes").unwrap();
        let mut p = pod(Some("n1"), Some("StatefulSet"));
        assert!(!is_handled(&selector, &p));
        assert!(is_handled(&PodSelector::everything(), &p));
        p.metadata.labels = Some([("hybridnet".to_string(), "yes".to_string())].into());
        assert!(is_handled(&selector, &p));
        p.metadata.labels = None;
        p.metadata.finalizers = Some(vec![finalizer::IP_ALLOCATED.to_string()]);
        assert!(is_handled(&selector, &p));
        p.metadata.finalizers = Some(vec!["other/finalizer".to_string()]);
        assert!(!is_handled(&selector, &p));
    }

    #[test]
    fn live_pods() {
        let cfg = PodDefaults::default();
        assert_eq!(
            decide(&pod(None, None), &cfg, false, VmFacts::NotVm),
            PodAction::Ignore
        );
        assert_eq!(
            decide(&pod(Some("n1"), None), &cfg, false, VmFacts::NotVm),
            PodAction::Allocate
        );
        let mut hn = pod(Some("n1"), None);
        hn.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(decide(&hn, &cfg, false, VmFacts::NotVm), PodAction::Ignore);
    }

    #[test]
    fn stateful_pods_wait_for_running_containers_then_reserve() {
        let cfg = PodDefaults::default();
        let p = terminating(with_container(pod(Some("n1"), Some("StatefulSet")), true));
        assert_eq!(
            decide(&p, &cfg, false, VmFacts::NotVm),
            PodAction::WaitForContainers
        );
        let p = terminating(with_container(pod(Some("n1"), Some("StatefulSet")), false));
        assert_eq!(decide(&p, &cfg, false, VmFacts::NotVm), PodAction::Reserve);
        // Owner reference gone, but the IPInstances say stateful.
        let p = terminating(with_container(pod(Some("n1"), None), false));
        assert_eq!(decide(&p, &cfg, true, VmFacts::NotVm), PodAction::Reserve);
        // A kind that is not configured as stateful is ordinary.
        let p = terminating(pod(Some("n1"), Some("ReplicaSet")));
        assert_eq!(
            decide(&p, &cfg, false, VmFacts::NotVm),
            PodAction::LeaveToGarbageCollector
        );
    }

    #[test]
    fn evicted_and_completed_release() {
        let cfg = PodDefaults::default();
        let mut p = pod(Some("n1"), Some("ReplicaSet"));
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            reason: Some("Evicted".into()),
            ..Default::default()
        });
        assert!(is_evicted(&p));
        assert_eq!(decide(&p, &cfg, false, VmFacts::NotVm), PodAction::Release);
        let mut c = with_container(pod(Some("n1"), None), false);
        c.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(is_completed(&c));
        assert_eq!(decide(&c, &cfg, false, VmFacts::NotVm), PodAction::Release);
        // Succeeded without statuses for every container is not completed yet.
        let mut c2 = pod(Some("n1"), None);
        c2.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(!is_completed(&c2));
        // An evicted stateful pod reserves.
        let mut s = with_container(pod(Some("n1"), Some("StatefulSet")), false);
        s.status.as_mut().unwrap().phase = Some("Failed".into());
        s.status.as_mut().unwrap().reason = Some("Evicted".into());
        assert_eq!(decide(&s, &cfg, false, VmFacts::NotVm), PodAction::Reserve);
    }

    fn vm_pod(node: Option<&str>) -> Pod {
        let mut p = pod(node, None);
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachineInstance".into(),
            name: "vm1".into(),
            uid: "vmi-uid".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p.metadata.finalizers = Some(vec![finalizer::IP_ALLOCATED.into()]);
        p
    }

    #[test]
    fn vm_pods_allocate_wait_reserve_or_let_go_with_their_vm() {
        let cfg = PodDefaults::default();
        let alive = VmFacts::Vm { vm_alive: true };
        let gone = VmFacts::Vm { vm_alive: false };
        assert_eq!(
            decide(&vm_pod(Some("n1")), &cfg, false, alive),
            PodAction::AllocateVm
        );
        // Not a VM's (gate off, or no VM above the VMI): an ordinary pod.
        assert_eq!(
            decide(&vm_pod(Some("n1")), &cfg, false, VmFacts::NotVm),
            PodAction::Allocate
        );
        assert_eq!(decide(&vm_pod(None), &cfg, false, alive), PodAction::Ignore);
        let running = terminating(with_container(vm_pod(Some("n1")), true));
        assert_eq!(
            decide(&running, &cfg, false, alive),
            PodAction::WaitForContainers
        );
        let stopped = terminating(with_container(vm_pod(Some("n1")), false));
        assert_eq!(decide(&stopped, &cfg, false, alive), PodAction::ReserveVm);
        // The VM is gone or going: no reservation, even while containers run.
        assert_eq!(
            decide(&running, &cfg, false, gone),
            PodAction::RemoveFinalizer
        );
        let mut no_finalizer = stopped.clone();
        no_finalizer.metadata.finalizers = None;
        assert_eq!(
            decide(&no_finalizer, &cfg, false, gone),
            PodAction::LeaveToGarbageCollector
        );
        // Evicted or completed VM pods are reserved as well (upstream checks VMs before them).
        let mut evicted = with_container(vm_pod(Some("n1")), false);
        evicted.status.as_mut().unwrap().phase = Some("Failed".into());
        evicted.status.as_mut().unwrap().reason = Some("Evicted".into());
        assert_eq!(decide(&evicted, &cfg, false, alive), PodAction::ReserveVm);
        assert_eq!(
            decide(&evicted, &cfg, false, gone),
            PodAction::RemoveFinalizer
        );
        // A stateful kind wins over a VM, as upstream.
        let cfg_vmi = PodDefaults {
            stateful_workload_kinds: vec!["VirtualMachineInstance".into()],
            ..Default::default()
        };
        assert_eq!(
            decide(&vm_pod(Some("n1")), &cfg_vmi, false, alive),
            PodAction::Allocate
        );
        assert_eq!(decide(&stopped, &cfg_vmi, false, alive), PodAction::Reserve);
    }

    #[test]
    fn finalizer_only() {
        let cfg = PodDefaults::default();
        let mut p = terminating(pod(Some("n1"), None));
        p.metadata.finalizers = Some(vec![finalizer::IP_ALLOCATED.into()]);
        assert_eq!(
            decide(&p, &cfg, false, VmFacts::NotVm),
            PodAction::RemoveFinalizer
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_pod() -> impl Strategy<Value = (Pod, bool)> {
            (
                prop::option::of(prop::sample::select(vec![
                    "StatefulSet",
                    "VirtualMachineInstance",
                    "ReplicaSet",
                ])),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                prop::sample::select(vec!["Running", "Evicted", "Succeeded"]),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(
                    |(owner, scheduled, going, running, phase, finalizer, host)| {
                        let mut p = with_container(pod(scheduled.then_some("n1"), owner), running);
                        let st = p.status.as_mut().unwrap();
                        match phase {
                            "Evicted" => {
                                st.phase = Some("Failed".into());
                                st.reason = Some("Evicted".into());
                            }
                            other => st.phase = Some(other.into()),
                        }
                        if finalizer {
                            p.metadata.finalizers = Some(vec![finalizer::IP_ALLOCATED.into()]);
                        }
                        p.spec.as_mut().unwrap().host_network = Some(host);
                        let p = if going { terminating(p) } else { p };
                        (p, running)
                    },
                )
        }

        fn arb_vm() -> impl Strategy<Value = VmFacts> {
            prop::sample::select(vec![
                VmFacts::NotVm,
                VmFacts::Vm { vm_alive: true },
                VmFacts::Vm { vm_alive: false },
            ])
        }

        proptest! {
            #[test]
            fn vm_decisions_never_override_stateful_ones_nor_keep_what_a_gone_vm_had(
                (p, running) in arb_pod(),
                vm in arb_vm(),
                retained_stateful in any::<bool>(),
            ) {
                let cfg = PodDefaults::default();
                let plain = decide(&p, &cfg, retained_stateful, VmFacts::NotVm);
                let got = decide(&p, &cfg, retained_stateful, vm);
                // Without a VM nothing VM-specific is decided.
                prop_assert!(!matches!(plain, PodAction::AllocateVm | PodAction::ReserveVm));
                // Stateful workloads (and host-network pods) decide as without a VM.
                if is_stateful(&p, &cfg) || is_host_network(&p) || (retained_stateful && is_terminating(&p)) {
                    prop_assert_eq!(&got, &plain);
                }
                // Nothing is reserved for a VM that is gone, and never while a container runs.
                let going = is_terminating(&p) || is_evicted(&p) || is_completed(&p);
                if going && vm == (VmFacts::Vm { vm_alive: false }) && !is_stateful(&p, &cfg) && !retained_stateful {
                    prop_assert!(matches!(got, PodAction::RemoveFinalizer | PodAction::LeaveToGarbageCollector | PodAction::Ignore), "{got:?}");
                }
                if got == PodAction::ReserveVm {
                    prop_assert!(!running);
                    prop_assert!(going);
                }
                // A VM's pod is allocated only when scheduled and not going away.
                if got == PodAction::AllocateVm {
                    prop_assert!(node_name(&p).is_some() && !going);
                }
            }
        }
    }
}

//! Glue between API objects and the pure pod network-config resolution of `hybridnet_api`.

use std::collections::BTreeMap;

use hybridnet_api::FieldError;
use hybridnet_api::constants::{annotation, label};
use hybridnet_api::kubevirt;
use hybridnet_api::naming::pod_name_label_value;
use hybridnet_api::resolve::{PodConfigInput, PodNetworkConfig, resolve_pod_network_config};
use hybridnet_api::v1::{IPInstance, IpVersion, Network, Subnet};
use k8s_openapi::api::core::v1::{Namespace, Pod};

use crate::controlplane::rules::defaults::PodDefaults;
use crate::controlplane::rules::podstate::is_stateful;

/// Go's `strconv.ParseBool`, as upstream reads `ip-retain`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether the pod keeps its addresses across re-creation (`ip-retain`, else the default).
pub fn ip_retain(pod: &Pod, cfg: &PodDefaults) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::IP_RETAIN))
        .and_then(|v| parse_go_bool(v))
        .unwrap_or(cfg.ip_retain)
}

/// Non-terminating IPInstances in the pod's namespace labelled with the pod's name.
pub fn ipinstances_of_pod_name<'a>(
    namespace: &str,
    pod_name: &str,
    ipinstances: impl IntoIterator<Item = &'a IPInstance>,
) -> Vec<IPInstance> {
    labelled(
        namespace,
        label::POD,
        &pod_name_label_value(pod_name),
        ipinstances,
    )
}

/// Non-terminating IPInstances in `namespace` labelled `networking.alibaba.com/vm=<vm>` (a
/// KubeVirt VM's retained addresses, upstream `vmAllocate`).
pub fn ipinstances_of_vm<'a>(
    namespace: &str,
    vm: &str,
    ipinstances: impl IntoIterator<Item = &'a IPInstance>,
) -> Vec<IPInstance> {
    labelled(namespace, label::VM, vm, ipinstances)
}

/// The VM's retained addresses the webhook sees for a pod controlled by a VirtualMachineInstance
/// (`VMIPRetain` on): KubeVirt names a VM's VMI after the VM, so without looking the VMI up these
/// are the IPInstances labelled with the VMI's name and owned by a VirtualMachine of that name.
/// The pod controller looks the VMI up (`operator/src/controlplane/controllers/pod.rs`).
pub fn webhook_vm_ipinstances<'a>(
    pod: &Pod,
    ns: &str,
    cfg: &PodDefaults,
    ipinstances: impl IntoIterator<Item = &'a IPInstance>,
) -> Vec<IPInstance> {
    if !cfg.vm_ip_retain || is_stateful(pod, cfg) {
        return Vec::new();
    }
    let Some(vmi) = kubevirt::vmi_of_pod(pod.metadata.owner_references.as_ref()) else {
        return Vec::new();
    };
    let mut v = ipinstances_of_vm(ns, vmi, ipinstances);
    v.retain(|i| kubevirt::vm_of_object(i.metadata.owner_references.as_ref()) == Some(vmi));
    v
}

fn labelled<'a>(
    namespace: &str,
    key: &str,
    value: &str,
    ipinstances: impl IntoIterator<Item = &'a IPInstance>,
) -> Vec<IPInstance> {
    let mut out: Vec<IPInstance> = ipinstances
        .into_iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(namespace))
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| {
            i.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .is_some_and(|v| v == value)
        })
        .cloned()
        .collect();
    // IPv4 first, then by subnet and address (upstream sort order).
    out.sort_by(|a, b| {
        let key = |i: &IPInstance| {
            (
                i.spec.address.version == IpVersion::V6,
                i.spec.subnet.clone(),
                i.spec.address.ip.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// Resolves the network configuration of `pod` (upstream `pkg/controllers/networking/pod_controller.go`) from the given state.
/// The retained addresses that elect the network and family are the pod's own
/// (`pod_ipinstances`) for a stateful pod with IP retention, else, with `VMIPRetain` on, its VM's
/// (`vm_ipinstances`, empty for a pod that is not a VM's), as upstream
/// (`pkg/webhook/utils/utils.go`, `ParseNetworkConfigOfPodByPriority`).
pub fn resolve_for_pod(
    pod: &Pod,
    namespace: Option<&Namespace>,
    cfg: &PodDefaults,
    networks: &[Network],
    subnets: &[Subnet],
    pod_ipinstances: &[IPInstance],
    vm_ipinstances: &[IPInstance],
) -> Result<PodNetworkConfig, FieldError> {
    let empty = BTreeMap::new();
    let of = |v: &[IPInstance]| -> Vec<(String, IpVersion)> {
        v.iter()
            .map(|i| (i.spec.network.clone(), i.spec.address.version))
            .collect()
    };
    let retained: Vec<(String, IpVersion)> = if is_stateful(pod, cfg) {
        if ip_retain(pod, cfg) {
            of(pod_ipinstances)
        } else {
            Vec::new()
        }
    } else if cfg.vm_ip_retain {
        of(vm_ipinstances)
    } else {
        Vec::new()
    };
    let input = PodConfigInput {
        pod_annotations: pod.metadata.annotations.as_ref().unwrap_or(&empty),
        pod_labels: pod.metadata.labels.as_ref().unwrap_or(&empty),
        namespace_annotations: namespace
            .and_then(|n| n.metadata.annotations.as_ref())
            .unwrap_or(&empty),
        namespace_labels: namespace
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&empty),
        retained: &retained,
        default_network_type: cfg.network_type,
        default_ip_family: cfg.ip_family,
        networks,
        subnets,
    };
    resolve_pod_network_config(&input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{IPInstanceSpec, NetworkType};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("{name}-uid"),
            controller: Some(true),
            block_owner_deletion: Some(false),
        }
    }

    fn vm_instance(ns: &str, vm: &str, owner_kind: &str, network: &str) -> IPInstance {
        let mut i = IPInstance::new(
            "10-0-0-5",
            IPInstanceSpec {
                network: network.into(),
                ..Default::default()
            },
        );
        i.metadata.namespace = Some(ns.into());
        i.metadata.labels = Some([(label::VM.to_string(), vm.to_string())].into());
        i.metadata.owner_references = Some(vec![owner(owner_kind, vm)]);
        i
    }

    fn vm_pod(vmi: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("virt-launcher-x".into());
        p.metadata.owner_references = Some(vec![owner("VirtualMachineInstance", vmi)]);
        p
    }

    #[test]
    fn the_webhook_finds_a_vms_addresses_by_its_vmis_name_only_with_the_gate() {
        let all = [
            vm_instance("ns", "vm1", "VirtualMachine", "u1"),
            // Same label, another namespace / not owned by the VM / another VM.
            vm_instance("other", "vm1", "VirtualMachine", "u1"),
            vm_instance("ns", "vm1", "Pod", "u1"),
            vm_instance("ns", "vm2", "VirtualMachine", "u1"),
        ];
        let on = PodDefaults {
            vm_ip_retain: true,
            ..Default::default()
        };
        let found = webhook_vm_ipinstances(&vm_pod("vm1"), "ns", &on, all.iter());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].metadata.namespace.as_deref(), Some("ns"));
        assert!(
            webhook_vm_ipinstances(&vm_pod("vm1"), "ns", &PodDefaults::default(), all.iter())
                .is_empty()
        );
        let mut not_vm = vm_pod("vm1");
        not_vm.metadata.owner_references = None;
        assert!(webhook_vm_ipinstances(&not_vm, "ns", &on, all.iter()).is_empty());
    }

    #[test]
    fn a_vms_addresses_elect_the_network_only_with_the_gate() {
        let subnets = [];
        let nets = [Network::new(
            "u1",
            hybridnet_api::v1::NetworkSpec {
                network_type: Some(NetworkType::Underlay),
                ..Default::default()
            },
        )];
        let vm_ipis = [vm_instance("ns", "vm1", "VirtualMachine", "u1")];
        let on = PodDefaults {
            vm_ip_retain: true,
            network_type: NetworkType::Overlay,
            ..Default::default()
        };
        let c = resolve_for_pod(&vm_pod("vm1"), None, &on, &nets, &subnets, &[], &vm_ipis).unwrap();
        assert_eq!(c.network.as_deref(), Some("u1"));
        assert!(c.retained_ip_exist);
        let off = PodDefaults {
            vm_ip_retain: false,
            ..on
        };
        let c =
            resolve_for_pod(&vm_pod("vm1"), None, &off, &nets, &subnets, &[], &vm_ipis).unwrap();
        assert_eq!(c.network, None);
        assert!(!c.retained_ip_exist);
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        for bad in ["", "yes", "tRuE", "2", "no"] {
            assert_eq!(parse_go_bool(bad), None);
        }
    }
}

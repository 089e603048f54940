//! How a pod is recognised as a KubeVirt VM's pod, as upstream's `VMIPRetain` does it
//! (`pkg/ipam/strategy/strategy.go`, `OwnByVirtualMachineInstance` and `OwnByVirtualMachine`):
//! the pod's controller owner is a `VirtualMachineInstance`, and that VMI's controller owner is a
//! `VirtualMachine`. Only the `kind` of an owner reference is compared, as upstream.
//!
//! The IPInstances of such a pod carry the label `networking.alibaba.com/vm=<VM name>` and are owned
//! by the VirtualMachine (the VMI's controller reference with `blockOwnerDeletion: false`), so they
//! outlive the pod and go with the VM (upstream `pkg/controllers/networking/pod_controller.go`,
//! `vmAllocate`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// KubeVirt's API group and version (`kubevirt.io/api/core/v1`).
pub const GROUP: &str = "kubevirt.io";
pub const VERSION: &str = "v1";
pub const VM_KIND: &str = "VirtualMachine";
pub const VM_PLURAL: &str = "virtualmachines";
pub const VMI_KIND: &str = "VirtualMachineInstance";
pub const VMI_PLURAL: &str = "virtualmachineinstances";

/// The controller owner reference (`controller: true`) among `refs`, as `metav1.GetControllerOf`.
pub fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|o| o.controller == Some(true))
}

/// The name of the VirtualMachineInstance that controls a pod with owner references `refs`.
pub fn vmi_of_pod(refs: Option<&Vec<OwnerReference>>) -> Option<&str> {
    controller_of(refs)
        .filter(|o| o.kind == VMI_KIND && !o.name.is_empty())
        .map(|o| o.name.as_str())
}

/// The owner reference an IPInstance of the VM that controls a VMI with owner references `refs`
/// gets: the VMI's controller reference to its VirtualMachine, with `blockOwnerDeletion: false`.
pub fn vm_owner_of_vmi(refs: Option<&Vec<OwnerReference>>) -> Option<OwnerReference> {
    controller_of(refs)
        .filter(|o| o.kind == VM_KIND && !o.name.is_empty())
        .map(|o| OwnerReference {
            block_owner_deletion: Some(false),
            ..o.clone()
        })
}

/// The name of the VirtualMachine that controls an object (an IPInstance written for a VM pod)
/// with owner references `refs`.
pub fn vm_of_object(refs: Option<&Vec<OwnerReference>>) -> Option<&str> {
    controller_of(refs)
        .filter(|o| o.kind == VM_KIND && !o.name.is_empty())
        .map(|o| o.name.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn r(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: kind.into(),
            name: name.into(),
            uid: format!("{name}-uid"),
            controller,
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn a_vm_pod_is_controlled_by_a_vmi_controlled_by_a_vm() {
        let pod = vec![r("Node", "n1", None), r(VMI_KIND, "vm1", Some(true))];
        assert_eq!(vmi_of_pod(Some(&pod)), Some("vm1"));
        let vmi = vec![r(VM_KIND, "vm1", Some(true))];
        let o = vm_owner_of_vmi(Some(&vmi)).unwrap();
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            (VM_KIND, "vm1", "vm1-uid")
        );
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(false));
        assert_eq!(vm_of_object(Some(&vec![o])), Some("vm1"));
    }

    #[test]
    fn anything_else_is_not() {
        for refs in [
            vec![],
            // An owner that is not the controller does not count.
            vec![r(VMI_KIND, "vm1", None)],
            vec![r(VMI_KIND, "vm1", Some(false))],
            vec![r("ReplicaSet", "rs", Some(true))],
            // The kind is compared exactly.
            vec![r("virtualmachineinstance", "vm1", Some(true))],
            vec![r(VMI_KIND, "", Some(true))],
        ] {
            assert_eq!(vmi_of_pod(Some(&refs)), None, "{refs:?}");
        }
        assert_eq!(vmi_of_pod(None), None);
        // A VMI without a VM (started on its own) is not a VM's.
        assert_eq!(vm_owner_of_vmi(None), None);
        assert_eq!(
            vm_owner_of_vmi(Some(&vec![r(
                "VirtualMachineInstanceReplicaSet",
                "x",
                Some(true)
            )])),
            None
        );
        assert_eq!(vm_of_object(Some(&vec![r("Pod", "p", Some(true))])), None);
    }
}

//! How a pod is recognised as a KubeVirt VM's pod, as upstream's `VMIPRetain` does it
//! (`pkg/ipam/strategy/strategy.go`, `OwnByVirtualMachineInstance` and `OwnByVirtualMachine`):
//! the pod's controller owner is a `VirtualMachineInstance`, and that VMI's controller owner is a
//! `VirtualMachine`. Only the `kind` of an owner reference is compared, as upstream.
//!
//! The IPInstances of such a pod carry the label `networking.alibaba.com/vm=<VM name>` and are owned
//! by the VirtualMachine (the VMI's controller reference with `blockOwnerDeletion: false`), so they
//! outlive the pod and go with the VM (upstream `pkg/controllers/networking/pod_controller.go`,
//! `vmAllocate`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::{Deserialize, Serialize};

use crate::names;

/// KubeVirt's API group and version (`kubevirt.io/api/core/v1`).
pub const GROUP: &str = "kubevirt.io";
pub const VERSION: &str = "v1";
pub const VM_KIND: &str = "VirtualMachine";
pub const VM_PLURAL: &str = "virtualmachines";
pub const VMI_KIND: &str = "VirtualMachineInstance";
pub const VMI_PLURAL: &str = "virtualmachineinstances";

/// The label KubeVirt puts on a live migration's target virt-launcher pod: the UID of the
/// VirtualMachineInstanceMigration (kubevirt/kubevirt
/// `staging/src/kubevirt.io/api/core/v1/types.go`, `MigrationJobLabel`, set in
/// `pkg/virt-controller/watch/migration/migration.go` when the target pod is created).
pub const MIGRATION_JOB_LABEL: &str = "kubevirt.io/migrationJobUID";
/// The annotation KubeVirt's migration controller puts on the target pod once the VM runs there
/// (the target node saw the domain active: `status.migrationState.targetNodeDomainReadyTimestamp`
/// of the VMI; same file, `MigrationTargetReadyTimestamp`).
pub const MIGRATION_TARGET_READY_ANNOTATION: &str = "kubevirt.io/migration-target-ready-timestamp";

/// Ours, on the IPInstances of a VM during a live migration (a [`MigrationPeer`] as JSON): the
/// other pod that shares the addresses with the pod holding the binding. While the VM runs at the
/// source, that is the target pod (its node agent wires it with them); once the binding moved to
/// the target, the source pod until it goes (docs/api.md, "KubeVirt VMs").
pub const MIGRATION_PEER_ANNOTATION: &str = "hybridnet.io/vm-migration-peer";

/// The migration UID of a live migration's target pod (labels `labels`), if the label is there
/// with a well-formed value (a label value, not empty); anything else is not a migration target.
pub fn migration_job_of_pod(labels: Option<&BTreeMap<String, String>>) -> Option<&str> {
    labels?
        .get(MIGRATION_JOB_LABEL)
        .map(String::as_str)
        .filter(|v| !v.is_empty() && names::label_value(v).is_ok())
}

/// Whether KubeVirt says the VM runs on this (target) pod: the ready annotation with a value.
pub fn migration_target_ready(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(MIGRATION_TARGET_READY_ANNOTATION))
        .is_some_and(|v| !v.trim().is_empty())
}

/// The pod named by [`MIGRATION_PEER_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationPeer {
    /// The pod's name (same namespace as the IPInstance).
    pub pod: String,
    /// The pod's UID.
    pub uid: String,
    /// The node the pod runs on.
    pub node: String,
}

impl MigrationPeer {
    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks an annotation value: the pod and node are object names, the UID a label
    /// value (UIDs are). The error says what is wrong; the caller names the object.
    pub fn parse(value: &str) -> Result<Self, String> {
        let t: MigrationPeer = serde_json::from_str(value).map_err(|e| {
            format!(
                "metadata.annotations[{MIGRATION_PEER_ANNOTATION}]: not a {{pod, uid, node}} object: {e}"
            )
        })?;
        let field = |f: &str, e: String| {
            format!("metadata.annotations[{MIGRATION_PEER_ANNOTATION}].{f}: {e}")
        };
        names::dns_subdomain(&t.pod).map_err(|e| field("pod", e))?;
        names::dns_subdomain(&t.node).map_err(|e| field("node", e))?;
        if t.uid.is_empty() {
            return Err(field("uid", "empty".into()));
        }
        names::label_value(&t.uid).map_err(|e| field("uid", e))?;
        Ok(t)
    }

    /// The target named by an object's annotations, if any and well formed.
    pub fn of(annotations: Option<&BTreeMap<String, String>>) -> Option<Self> {
        annotations
            .and_then(|a| a.get(MIGRATION_PEER_ANNOTATION))
            .and_then(|v| Self::parse(v).ok())
    }

    /// Whether this names the pod `name` (with `uid` when known).
    pub fn names_pod(&self, name: &str, uid: Option<&str>) -> bool {
        self.pod == name && uid.is_none_or(|u| u == self.uid)
    }
}

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

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_migration_target_pod_carries_a_well_formed_job_label() {
        let uid = "3c5a8e2a-6a2b-4d3e-9a6e-0f6f0c1d2e3f";
        let l = map(&[(MIGRATION_JOB_LABEL, uid), ("kubevirt.io", "virt-launcher")]);
        assert_eq!(migration_job_of_pod(Some(&l)), Some(uid));
        assert_eq!(migration_job_of_pod(None), None);
        let long = "a".repeat(64);
        for bad in [
            "",
            "not a uid",
            "-leading",
            "trailing-",
            "a/b",
            "../x",
            "\u{0}",
            long.as_str(),
        ] {
            let l = map(&[(MIGRATION_JOB_LABEL, bad)]);
            assert_eq!(migration_job_of_pod(Some(&l)), None, "{bad:?}");
        }
        // Another key (a similar one) does not count.
        let l = map(&[("kubevirt.io/migrationJobUid", uid)]);
        assert_eq!(migration_job_of_pod(Some(&l)), None);
    }

    #[test]
    fn the_target_is_ready_once_kubevirt_annotates_it() {
        let a = map(&[(
            MIGRATION_TARGET_READY_ANNOTATION,
            "2026-12-07 23:00:00 +0000 UTC",
        )]);
        assert!(migration_target_ready(Some(&a)));
        assert!(!migration_target_ready(None));
        for v in ["", "  "] {
            assert!(!migration_target_ready(Some(&map(&[(
                MIGRATION_TARGET_READY_ANNOTATION,
                v
            )]))));
        }
        // KubeVirt's older key is not this one.
        let old = map(&[("kubevirt.io/migration-target-start-timestamp", "x")]);
        assert!(!migration_target_ready(Some(&old)));
    }

    #[test]
    fn migration_target_annotation_round_trips_and_refuses_hostile_values() {
        let t = MigrationPeer {
            pod: "virt-launcher-vm1-bbbbb".into(),
            uid: "3c5a8e2a-6a2b-4d3e-9a6e-0f6f0c1d2e3f".into(),
            node: "node2.example".into(),
        };
        let v = t.to_annotation();
        assert_eq!(MigrationPeer::parse(&v), Ok(t.clone()));
        let a = map(&[(MIGRATION_PEER_ANNOTATION, v.as_str())]);
        assert_eq!(MigrationPeer::of(Some(&a)), Some(t.clone()));
        assert!(t.names_pod("virt-launcher-vm1-bbbbb", Some(&t.uid)));
        assert!(t.names_pod("virt-launcher-vm1-bbbbb", None));
        assert!(!t.names_pod("virt-launcher-vm1-bbbbb", Some("other")));
        assert!(!t.names_pod("virt-launcher-vm1-aaaaa", Some(&t.uid)));
        for (bad, field) in [
            ("", "not a {pod, uid, node} object"),
            ("null", "not a {pod, uid, node} object"),
            ("[]", "not a {pod, uid, node} object"),
            (r#"{"pod":"p","uid":"u"}"#, "not a {pod, uid, node} object"),
            (
                r#"{"pod":"p","uid":"u","node":"n","x":1}"#,
                "not a {pod, uid, node} object",
            ),
            (r#"{"pod":"P/../q","uid":"u","node":"n"}"#, ".pod:"),
            (r#"{"pod":"p","uid":"u","node":""}"#, ".node:"),
            (r#"{"pod":"p","uid":"","node":"n"}"#, ".uid: empty"),
            (r#"{"pod":"p","uid":"a b","node":"n"}"#, ".uid:"),
            (r#"{"pod":"p","uid":"u","node":"n\u0000"}"#, ".node:"),
        ] {
            let e = MigrationPeer::parse(bad).expect_err(bad);
            assert!(e.contains(MIGRATION_PEER_ANNOTATION), "{bad}: {e}");
            assert!(e.contains(field), "{bad}: {e}");
            let a = map(&[(MIGRATION_PEER_ANNOTATION, bad)]);
            assert_eq!(MigrationPeer::of(Some(&a)), None, "{bad}");
        }
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

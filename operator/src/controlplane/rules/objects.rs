//! Pure construction of the objects and patches the control plane writes.

use std::collections::BTreeMap;

use hybridnet_api::constants::{finalizer, label};
use hybridnet_api::kubevirt;
use hybridnet_api::naming::{pod_name_label_value, stateful_ordinal};
use hybridnet_api::resolve::PodNetworkConfig;
use hybridnet_api::v1::{
    Address, Binding, IPInstance, IPInstanceSpec, Network, NetworkType, ReferredObject,
    StatefulInfo,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::controlplane::rules::nodestate::underlay_networks_of;
use crate::controlplane::rules::podstate::controller_owner;
use crate::ipam::Allocation;

/// Who an IPInstance belongs to besides its pod: its owner reference (the stateful workload, the
/// KubeVirt VirtualMachine, or the pod itself), whether it carries the stateful index, and the
/// labels added to the built-in ones (upstream `pkg/ipam/store/store.go`, `assembleIPInstance`:
/// additional labels win over built-in ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Ownership {
    pub owner: OwnerReference,
    pub stateful: bool,
    pub extra_labels: BTreeMap<String, String>,
}

impl Ownership {
    /// The stateful workload (`stateful` and the pod has a controller), or the pod itself.
    pub fn of_pod(pod: &Pod, stateful: bool) -> Self {
        Self {
            owner: instance_owner(pod, stateful),
            stateful,
            extra_labels: BTreeMap::new(),
        }
    }

    /// A KubeVirt VM's pod (`VMIPRetain`): owned by the VM (`vm_owner`, from
    /// `hybridnet_api::kubevirt::vm_owner_of_vmi`), labelled `networking.alibaba.com/vm=<name>`.
    pub fn of_vm(vm_owner: OwnerReference) -> Self {
        let extra_labels = BTreeMap::from([(label::VM.to_string(), vm_owner.name.clone())]);
        Self {
            owner: vm_owner,
            stateful: false,
            extra_labels,
        }
    }
}

/// The owner an IPInstance is bound to: the stateful workload, or the pod itself.
pub fn instance_owner(pod: &Pod, stateful: bool) -> OwnerReference {
    if stateful && let Some(o) = controller_owner(pod) {
        return o.clone();
    }
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

/// Labels of an IPInstance bound to `pod` (upstream `pkg/ipam/store/store.go`), plus `extra`.
pub fn instance_labels(
    pod: &Pod,
    alloc: &Allocation,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(label::VERSION.into(), label::VERSION_V1_2.into());
    l.insert(label::SUBNET.into(), alloc.subnet.clone());
    l.insert(label::NETWORK.into(), alloc.network.clone());
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        l.insert(label::NODE.into(), node);
    }
    l.insert(
        label::POD.into(),
        pod_name_label_value(pod.metadata.name.as_deref().unwrap_or("")),
    );
    l.insert(
        label::POD_UID.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    for (k, v) in extra {
        l.insert(k.clone(), v.clone());
    }
    l
}

fn binding(pod: &Pod, owner: &OwnerReference, stateful: bool) -> Binding {
    let name = pod.metadata.name.clone().unwrap_or_default();
    Binding {
        referred_object: Some(ReferredObject {
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            uid: Some(owner.uid.clone()),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        pod_uid: pod.metadata.uid.clone(),
        pod_name: Some(name.clone()),
        stateful: stateful.then(|| StatefulInfo {
            index: Some(
                stateful_ordinal(&name)
                    .and_then(|o| i32::try_from(o).ok())
                    .unwrap_or(i32::MAX),
            ),
        }),
    }
}

/// A new IPInstance for `alloc` of `pod` (upstream `pkg/ipam/store/store.go`): name = the address,
/// finalizer, labels, owner reference so that garbage collection removes it with its owner.
pub fn build_ipinstance(pod: &Pod, alloc: &Allocation, mac: &str, own: &Ownership) -> IPInstance {
    IPInstance {
        metadata: ObjectMeta {
            name: Some(alloc.instance_name()),
            namespace: pod.metadata.namespace.clone(),
            labels: Some(instance_labels(pod, alloc, &own.extra_labels)),
            finalizers: Some(vec![finalizer::IP_ALLOCATED.into()]),
            owner_references: Some(vec![own.owner.clone()]),
            ..Default::default()
        },
        spec: IPInstanceSpec {
            network: alloc.network.clone(),
            subnet: alloc.subnet.clone(),
            address: Address {
                version: alloc.version,
                ip: alloc.address_with_prefix(),
                gateway: alloc.gateway.map(|g| g.to_string()),
                net_id: alloc.net_id,
                mac: mac.to_string(),
            },
            binding: binding(pod, &own.owner, own.stateful),
        },
        status: None,
    }
}

/// Merge patch that re-binds an existing (retained) IPInstance to `pod` (upstream ReCouple). The MAC
/// is rewritten only when the pod asks for one (mac-pool; upstream rewrote it always).
pub fn rebind_patch(pod: &Pod, alloc: &Allocation, mac: Option<&str>, own: &Ownership) -> Value {
    let mut spec = json!({ "binding": binding(pod, &own.owner, own.stateful) });
    if let Some(m) = mac {
        spec["address"] = json!({ "mac": m });
    }
    json!({
        "metadata": {
            "labels": instance_labels(pod, alloc, &own.extra_labels),
            "ownerReferences": [own.owner],
            // Bound to the pod now: no live migration's target shares it any more.
            "annotations": { kubevirt::MIGRATION_PEER_ANNOTATION: null },
        },
        "spec": spec,
    })
}

/// Merge patch that reserves an IPInstance (pod gone, address kept for the next incarnation).
/// `drop_pod_name`: the next pod has another name (a VM's), so the pod name goes as well
/// (upstream `pkg/ipam/store/store.go`, `reserveIPInstance`).
pub fn reserve_patch(drop_pod_name: bool) -> Value {
    if drop_pod_name {
        json!({
            "metadata": { "labels": { label::NODE: null, label::POD_UID: null, label::POD: null } },
            "spec": { "binding": { "nodeName": null, "podUID": null, "podName": null } },
        })
    } else {
        json!({
            "metadata": { "labels": { label::NODE: null, label::POD_UID: null } },
            "spec": { "binding": { "nodeName": null, "podUID": null } },
        })
    }
}

/// JSON patch adding our finalizer to an object with `finalizers` at `resource_version`.
pub fn add_finalizer_patch(finalizers: Option<&Vec<String>>, resource_version: &str) -> Value {
    add_named_finalizer_patch(finalizers, resource_version, finalizer::IP_ALLOCATED)
}

/// JSON patch adding finalizer `name` to an object with `finalizers` at `resource_version`
/// (guarded by a test of the resourceVersion).
pub fn add_named_finalizer_patch(
    finalizers: Option<&Vec<String>>,
    resource_version: &str,
    name: &str,
) -> Value {
    let test =
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version});
    match finalizers {
        Some(_) => json!([test, {"op": "add", "path": "/metadata/finalizers/-", "value": name}]),
        None => json!([test, {"op": "add", "path": "/metadata/finalizers", "value": [name]}]),
    }
}

/// JSON patch removing our finalizer, or None when it is not there.
pub fn remove_finalizer_patch(finalizers: Option<&Vec<String>>) -> Option<Value> {
    remove_named_finalizer_patch(finalizers, finalizer::IP_ALLOCATED)
}

/// JSON patch removing finalizer `name` (guarded by a test of its position), if present.
pub fn remove_named_finalizer_patch(finalizers: Option<&Vec<String>>, name: &str) -> Option<Value> {
    let i = finalizers?.iter().position(|f| f == name)?;
    let path = format!("/metadata/finalizers/{i}");
    Some(json!([
        {"op": "test", "path": path, "value": name},
        {"op": "remove", "path": path},
    ]))
}

/// The network a pod gets: the named one, else by type (Underlay: the node's network).
pub fn select_network(
    cfg: &PodNetworkConfig,
    node_name: &str,
    node_labels: Option<&BTreeMap<String, String>>,
    networks: &[Network],
) -> Result<String, String> {
    if let Some(n) = &cfg.network {
        return Ok(n.clone());
    }
    match cfg.network_type {
        NetworkType::Underlay => {
            let labels =
                node_labels.ok_or_else(|| format!("node {node_name:?} is not known yet"))?;
            underlay_networks_of(labels, networks)
                .first()
                .and_then(|n| n.metadata.name.clone())
                .ok_or_else(|| {
                    format!(
                        "node {node_name:?} belongs to no Underlay network: label it to match a Network's spec.nodeSelector, or make the pod Overlay ({})",
                        hybridnet_api::constants::annotation::NETWORK_TYPE
                    )
                })
        }
        t => networks
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .find(|n| n.spec.effective_type() == t)
            .and_then(|n| n.metadata.name.clone())
            .ok_or_else(|| format!("there is no {t} network in the cluster; create one first")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::operator::IpFamily;
    use hybridnet_api::v1::{IpVersion, NetworkSpec};
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-3".into());
        p.metadata.namespace = Some("ns1".into());
        p.metadata.uid = Some("uid-1".into());
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        if let Some(k) = owner {
            p.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: k.into(),
                name: "web".into(),
                uid: "sts-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        p
    }

    fn alloc() -> Allocation {
        Allocation {
            network: "net".into(),
            subnet: "sub".into(),
            ip: "10.0.0.5".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.0.1".parse().unwrap()),
            net_id: Some(7),
            version: IpVersion::V4,
        }
    }

    #[test]
    fn ipinstance_of_an_ordinary_pod_is_owned_by_the_pod() {
        let i = build_ipinstance(
            &pod(None),
            &alloc(),
            "02:12:34:00:00:01",
            &Ownership::of_pod(&pod(None), false),
        );
        assert_eq!(i.metadata.name.as_deref(), Some("10-0-0-5"));
        assert_eq!(i.metadata.namespace.as_deref(), Some("ns1"));
        let o = &i.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("Pod", "uid-1"));
        assert_eq!(o.block_owner_deletion, Some(false));
        assert_eq!(i.spec.address.ip, "10.0.0.5/24");
        assert_eq!(i.spec.address.gateway.as_deref(), Some("10.0.0.1"));
        assert_eq!(i.spec.binding.stateful, None);
        let l = i.metadata.labels.unwrap();
        assert_eq!(l[label::POD], "web-3");
        assert_eq!(l[label::NODE], "n1");
        assert_eq!(
            i.metadata.finalizers.unwrap(),
            vec![finalizer::IP_ALLOCATED.to_string()]
        );
    }

    #[test]
    fn ipinstance_of_a_stateful_pod_is_owned_by_the_workload() {
        let i = build_ipinstance(
            &pod(Some("StatefulSet")),
            &alloc(),
            "m",
            &Ownership::of_pod(&pod(Some("StatefulSet")), true),
        );
        let o = &i.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str()),
            ("StatefulSet", "sts-uid")
        );
        assert_eq!(i.spec.binding.stateful.unwrap().index, Some(3));
        assert_eq!(
            i.spec.binding.referred_object.unwrap().kind.as_deref(),
            Some("StatefulSet")
        );
    }

    #[test]
    fn ipinstance_of_a_vm_pod_is_owned_by_the_vm_and_labelled_with_it() {
        let vm = OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachine".into(),
            name: "vm1".into(),
            uid: "vm-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(false),
        };
        let own = Ownership::of_vm(vm.clone());
        let i = build_ipinstance(&pod(None), &alloc(), "m", &own);
        assert_eq!(i.metadata.owner_references.as_deref(), Some(&[vm][..]));
        let l = i.metadata.labels.clone().unwrap();
        assert_eq!(l[label::VM], "vm1");
        assert_eq!(l[label::POD], "web-3");
        assert_eq!(l[label::NODE], "n1");
        let r = i.spec.binding.referred_object.clone().unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("VirtualMachine"), Some("vm1"), Some("vm-uid"))
        );
        assert_eq!(i.spec.binding.stateful, None);
        assert_eq!(i.spec.binding.pod_name.as_deref(), Some("web-3"));
        // Re-binding to the VM's next pod keeps the VM label and owner.
        let patch = rebind_patch(&pod(None), &alloc(), None, &own);
        assert_eq!(patch["metadata"]["labels"][label::VM], "vm1");
        assert_eq!(
            patch["metadata"]["ownerReferences"][0]["kind"],
            "VirtualMachine"
        );
        assert_eq!(patch["spec"]["binding"]["podName"], "web-3");
        assert!(patch["spec"].get("address").is_none());
    }

    #[test]
    fn reservation_drops_the_pod_name_only_for_vms() {
        let kept = reserve_patch(false);
        assert!(kept["metadata"]["labels"].get(label::POD).is_none());
        assert!(kept["spec"]["binding"].get("podName").is_none());
        assert!(kept["spec"]["binding"]["nodeName"].is_null());
        let dropped = reserve_patch(true);
        assert!(dropped["metadata"]["labels"][label::POD].is_null());
        assert!(
            dropped["spec"]["binding"]
                .as_object()
                .unwrap()
                .contains_key("podName")
        );
        assert!(dropped["metadata"]["labels"][label::POD_UID].is_null());
    }

    #[test]
    fn finalizer_patches() {
        let p = add_finalizer_patch(None, "5");
        assert_eq!(p[1]["path"], "/metadata/finalizers");
        let f = vec!["x".to_string(), finalizer::IP_ALLOCATED.to_string()];
        assert_eq!(
            add_finalizer_patch(Some(&f), "5")[1]["path"],
            "/metadata/finalizers/-"
        );
        assert_eq!(
            remove_finalizer_patch(Some(&f)).unwrap()[1]["path"],
            "/metadata/finalizers/1"
        );
        assert!(remove_finalizer_patch(Some(&vec!["x".into()])).is_none());
        assert!(remove_finalizer_patch(None).is_none());
    }

    #[test]
    fn network_selection() {
        let mk = |name: &str, t: NetworkType, sel: Option<(&str, &str)>| {
            Network::new(
                name,
                NetworkSpec {
                    network_type: Some(t),
                    node_selector: sel.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                    ..Default::default()
                },
            )
        };
        let nets = vec![
            mk("u2", NetworkType::Underlay, Some(("rack", "2"))),
            mk("o", NetworkType::Overlay, None),
        ];
        let cfg = |t| PodNetworkConfig {
            network: None,
            subnets: vec![],
            network_type: t,
            ip_family: IpFamily::IPv4,
            retained_ip_exist: false,
            node_selector: BTreeMap::new(),
        };
        let rack2: BTreeMap<String, String> = [("rack".to_string(), "2".to_string())].into();
        assert_eq!(
            select_network(&cfg(NetworkType::Underlay), "n", Some(&rack2), &nets).unwrap(),
            "u2"
        );
        let err = select_network(
            &cfg(NetworkType::Underlay),
            "n",
            Some(&BTreeMap::new()),
            &nets,
        )
        .unwrap_err();
        assert!(err.contains("belongs to no Underlay network"), "{err}");
        assert_eq!(
            select_network(&cfg(NetworkType::Overlay), "n", None, &nets).unwrap(),
            "o"
        );
        assert!(select_network(&cfg(NetworkType::GlobalBgp), "n", None, &nets).is_err());
        let mut named = cfg(NetworkType::Underlay);
        named.network = Some("x".into());
        assert_eq!(select_network(&named, "n", None, &nets).unwrap(), "x");
    }
}

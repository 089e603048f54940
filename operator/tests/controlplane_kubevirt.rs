//! KubeVirt VM IP retention (upstream's `VMIPRetain` feature gate) against kube-lite, with the
//! webhooks registered and KubeVirt's VirtualMachine and VirtualMachineInstance served as minimal
//! CRDs: a VM's pod keeps its address when the VM restarts (a new VMI and a new pod of another
//! name, on another node), the address is never handed to anyone else meanwhile, and it is freed
//! when the VM is deleted; a live migration's target pod shares the VM's address (and MAC) while
//! the source pod runs and gets the binding when the VM runs in it or the source goes; an
//! aborted migration leaves the source as it was; an ordinary second pod of the VM, or one with a
//! malformed migration label, never takes a running pod's address (docs/api.md, "KubeVirt VMs").

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::{finalizer, label};
use hybridnet_api::kubevirt;
use hybridnet_operator::controlplane::controllers::leak::find_leaks;
use hybridnet_operator::controlplane::rules::defaults::PodDefaults;
use hybridnet_operator::controlplane::runtime::replica::Replica;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;

fn crd(kind: &str, plural: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{}", kubevirt::GROUP)},
        "spec": {
            "group": kubevirt::GROUP,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "scope": "Namespaced",
            "versions": [{
                "name": kubevirt::VERSION, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap()
}

fn api(env: &Env, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(kubevirt::GROUP, kubevirt::VERSION, kind);
    Api::namespaced_with(
        env.client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn controller(obj: &DynamicObject, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", kubevirt::GROUP, kubevirt::VERSION),
        kind: kind.into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn create(
    a: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    owner: Option<OwnerReference>,
) -> DynamicObject {
    let mut o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{}/{}", kubevirt::GROUP, kubevirt::VERSION),
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {},
    }))
    .unwrap();
    o.metadata.owner_references = owner.map(|o| vec![o]);
    a.create(&PostParams::default(), &o)
        .await
        .expect("create kubevirt object")
}

/// A virt-launcher pod of `vmi` on `node`.
fn launcher(name: &str, node: &str, vmi: &DynamicObject) -> Pod {
    let mut p = pod("default", name, node, &[]);
    p.metadata.owner_references = Some(vec![controller(vmi, kubevirt::VMI_KIND)]);
    p.metadata.labels = Some(map(&[("kubevirt.io", "virt-launcher")]));
    p
}

async fn vm_instances(env: &Env, vm: &str) -> Vec<hybridnet_api::v1::IPInstance> {
    Api::<hybridnet_api::v1::IPInstance>::namespaced(env.client.clone(), "default")
        .list(&ListParams::default().labels(&format!("{}={vm}", label::VM)))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_pods_keep_their_address_across_restarts_and_free_it_with_the_vm() {
    let env = Env::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for (kind, plural) in [
        (kubevirt::VM_KIND, kubevirt::VM_PLURAL),
        (kubevirt::VMI_KIND, kubevirt::VMI_PLURAL),
    ] {
        crds.create(&PostParams::default(), &crd(kind, plural))
            .await
            .unwrap();
    }
    let vms = api(&env, kubevirt::VM_KIND, kubevirt::VM_PLURAL);
    let vmis = api(&env, kubevirt::VMI_KIND, kubevirt::VMI_PLURAL);
    wait_for("kubevirt CRDs served", || async {
        vms.list(&ListParams::default()).await.is_ok()
            && vmis.list(&ListParams::default()).await.is_ok()
    })
    .await;
    let mut config = test_config("r1");
    config.defaults = PodDefaults {
        vm_ip_retain: true,
        ..config.defaults
    };
    let r = env.replica_with(config, true).await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    env.node("n1", &[("network", "u1")]).await;
    env.node("n2", &[("network", "u1")]).await;
    env.underlay("u1", "u1-sub", "192.168.56.0/24", "192.168.56.1")
        .await;
    env.network_ready("u1", true, false).await;
    let subnets: Api<hybridnet_api::v1::Subnet> = Api::all(env.client.clone());
    let used = || async {
        subnets
            .get("u1-sub")
            .await
            .ok()
            .and_then(|s| s.status)
            .and_then(|s| s.used)
    };

    // The VM, its VMI, and the VMI's launcher pod on n1.
    let vm = create(&vms, kubevirt::VM_KIND, "vm1", None).await;
    let vmi = create(
        &vmis,
        kubevirt::VMI_KIND,
        "vm1",
        Some(controller(&vm, kubevirt::VM_KIND)),
    )
    .await;
    env.pod(launcher("virt-launcher-vm1-aaaaa", "n1", &vmi))
        .await;
    env.set_pod_status("default", "virt-launcher-vm1-aaaaa", running())
        .await;
    let first = env.allocated("default", "virt-launcher-vm1-aaaaa", 1).await;
    let i0 = &first[0];
    let l = i0.metadata.labels.clone().unwrap();
    assert_eq!(l[label::VM], "vm1");
    let owner = &i0.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("VirtualMachine", "vm1", vm.uid().unwrap().as_str())
    );
    assert_eq!(owner.block_owner_deletion, Some(false));
    assert_eq!(
        i0.spec
            .binding
            .referred_object
            .as_ref()
            .and_then(|r| r.kind.as_deref()),
        Some("VirtualMachine")
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let p = pods.get("virt-launcher-vm1-aaaaa").await.unwrap();
    assert!(p.finalizers().iter().any(|f| f == finalizer::IP_ALLOCATED));
    wait_for("used = 1", || async { used().await == Some(1) }).await;

    // The VM restarts: KubeVirt deletes the VMI, and with it (garbage collection) the pod. While
    // the launcher still runs nothing is reserved; once it stopped, the address is reserved for
    // the VM, without the pod's name.
    vmis.delete("vm1", &DeleteParams::default()).await.unwrap();
    wait_for("launcher pod terminating", || async {
        pods.get_opt("virt-launcher-vm1-aaaaa")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    env.set_pod_status(
        "default",
        "virt-launcher-vm1-aaaaa",
        container_status("Running", false),
    )
    .await;
    env.pod_gone("default", "virt-launcher-vm1-aaaaa").await;
    let reserved = vm_instances(&env, "vm1").await;
    assert_eq!(reserved.len(), 1, "{reserved:?}");
    let kept = &reserved[0];
    assert_eq!(kept.name_any(), i0.name_any());
    assert!(kept.spec.is_reserved());
    assert_eq!(kept.spec.binding.pod_name, None);
    let kl = kept.metadata.labels.clone().unwrap();
    assert!(
        !kl.contains_key(label::POD) && !kl.contains_key(label::NODE),
        "{kl:?}"
    );
    assert!(kept.metadata.deletion_timestamp.is_none());
    // The leak detector (every 0.7 s in these tests, a finding is repaired on its second pass)
    // keeps a VM's reserved address: after three passes it is still there, untouched.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let still = vm_instances(&env, "vm1").await;
    assert_eq!(still.len(), 1);
    assert!(still[0].metadata.deletion_timestamp.is_none());
    assert_eq!(
        still[0].metadata.resource_version,
        kept.metadata.resource_version
    );

    // Meanwhile nobody else gets the address: an ordinary pod takes another one.
    env.pod(pod("default", "other", "n1", &[])).await;
    let other = env.allocated("default", "other", 1).await;
    assert_ne!(ip_of(&other[0]), ip_of(i0));
    wait_for("used = 2", || async { used().await == Some(2) }).await;

    // The new VMI's launcher pod (another name) on n2 gets the same IPInstance and address.
    let vmi2 = create(
        &vmis,
        kubevirt::VMI_KIND,
        "vm1",
        Some(controller(&vm, kubevirt::VM_KIND)),
    )
    .await;
    env.pod(launcher("virt-launcher-vm1-bbbbb", "n2", &vmi2))
        .await;
    env.set_pod_status("default", "virt-launcher-vm1-bbbbb", running())
        .await;
    let again = env.allocated("default", "virt-launcher-vm1-bbbbb", 1).await;
    // The webhook found the VM's retained address too: the pod is pinned to its network, and
    // needs no address quota (upstream v0.7.2), unlike the VM's first pod.
    let first_sel = p.spec.as_ref().unwrap().node_selector.clone().unwrap();
    assert_eq!(first_sel[label::IPV4_ADDRESS_QUOTA], "nonempty");
    let p2 = pods.get("virt-launcher-vm1-bbbbb").await.unwrap();
    assert_eq!(
        ann(&p2, hybridnet_api::constants::annotation::SPECIFIED_NETWORK).as_deref(),
        Some("u1")
    );
    let sel = p2.spec.unwrap().node_selector.unwrap();
    assert!(!sel.contains_key(label::IPV4_ADDRESS_QUOTA), "{sel:?}");
    assert_eq!(again[0].name_any(), i0.name_any());
    assert_eq!(again[0].spec.address, i0.spec.address);
    assert_eq!(again[0].spec.binding.node_name.as_deref(), Some("n2"));
    assert_eq!(
        again[0].spec.binding.pod_name.as_deref(),
        Some("virt-launcher-vm1-bbbbb")
    );
    assert_eq!(again[0].metadata.labels.as_ref().unwrap()[label::VM], "vm1");
    assert_eq!(vm_instances(&env, "vm1").await.len(), 1);
    assert_eq!(used().await, Some(2));

    // The VM is deleted: the VMI, the pod (its containers still running) and the VM's
    // IPInstances go, and the address is free again.
    vms.delete("vm1", &DeleteParams::default()).await.unwrap();
    env.pod_gone("default", "virt-launcher-vm1-bbbbb").await;
    wait_for("the VM's IPInstances gone", || async {
        vm_instances(&env, "vm1").await.is_empty()
    })
    .await;
    wait_for("used back to 1", || async { used().await == Some(1) }).await;
    // The freed address can be allocated again.
    let ip_pool_free = ip_of(i0);
    assert!(
        env.all_instances()
            .await
            .iter()
            .all(|i| ip_of(i) != ip_pool_free),
        "the VM's address is still held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gate_vm_pods_are_ordinary_pods() {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    env.node("n1", &[("network", "u1")]).await;
    env.underlay("u1", "u1-sub", "192.168.56.0/24", "192.168.56.1")
        .await;
    env.network_ready("u1", true, false).await;
    // No KubeVirt CRDs at all: with the gate off nothing is looked up.
    let mut p = pod("default", "virt-launcher-vm1-aaaaa", "n1", &[]);
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "kubevirt.io/v1".into(),
        kind: kubevirt::VMI_KIND.into(),
        name: "vm1".into(),
        uid: "no-such-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }]);
    // Its owner does not exist: kube-lite's garbage collector would delete it; keep it alive
    // through a finalizer that only this test removes.
    p.metadata.finalizers = Some(vec!["test/keep".into()]);
    env.pod(p).await;
    let v = env.allocated("default", "virt-launcher-vm1-aaaaa", 1).await;
    let owner = &v[0].metadata.owner_references.clone().unwrap()[0];
    assert_eq!(owner.kind, "Pod");
    assert!(
        v[0].metadata
            .labels
            .as_ref()
            .unwrap()
            .get(label::VM)
            .is_none()
    );
}

/// kube-lite with KubeVirt's CRDs, a replica with `VMIPRetain` on and the webhooks, nodes n1 and
/// n2 on underlay network u1, and VM `vm1` with its VMI.
struct Lab {
    env: Env,
    _replica: Replica,
    vmi: DynamicObject,
}

async fn lab() -> Lab {
    let env = Env::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for (kind, plural) in [
        (kubevirt::VM_KIND, kubevirt::VM_PLURAL),
        (kubevirt::VMI_KIND, kubevirt::VMI_PLURAL),
    ] {
        crds.create(&PostParams::default(), &crd(kind, plural))
            .await
            .unwrap();
    }
    let vms = api(&env, kubevirt::VM_KIND, kubevirt::VM_PLURAL);
    let vmis = api(&env, kubevirt::VMI_KIND, kubevirt::VMI_PLURAL);
    wait_for("kubevirt CRDs served", || async {
        vms.list(&ListParams::default()).await.is_ok()
            && vmis.list(&ListParams::default()).await.is_ok()
    })
    .await;
    let mut config = test_config("r1");
    config.defaults = PodDefaults {
        vm_ip_retain: true,
        ..config.defaults
    };
    let r = env.replica_with(config, true).await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    env.node("n1", &[("network", "u1")]).await;
    env.node("n2", &[("network", "u1")]).await;
    env.underlay("u1", "u1-sub", "192.168.56.0/24", "192.168.56.1")
        .await;
    env.network_ready("u1", true, false).await;
    let vm = create(&vms, kubevirt::VM_KIND, "vm1", None).await;
    let vmi = create(
        &vmis,
        kubevirt::VMI_KIND,
        "vm1",
        Some(controller(&vm, kubevirt::VM_KIND)),
    )
    .await;
    Lab {
        env,
        _replica: r,
        vmi,
    }
}

const MIGRATION_UID: &str = "5b0c1f7e-2a3d-4c5e-8f90-1a2b3c4d5e6f";

/// The live migration's target virt-launcher pod of `vmi` on `node`.
fn migration_target(name: &str, node: &str, vmi: &DynamicObject, job: &str) -> Pod {
    let mut p = launcher(name, node, vmi);
    p.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(kubevirt::MIGRATION_JOB_LABEL.into(), job.into());
    p
}

/// The source's running launcher on n1 and its IPInstance.
async fn running_source(lab: &Lab) -> hybridnet_api::v1::IPInstance {
    lab.env
        .pod(launcher("virt-launcher-vm1-aaaaa", "n1", &lab.vmi))
        .await;
    lab.env
        .set_pod_status("default", "virt-launcher-vm1-aaaaa", running())
        .await;
    let v = lab
        .env
        .allocated("default", "virt-launcher-vm1-aaaaa", 1)
        .await;
    v.into_iter().next().unwrap()
}

/// The VM's only IPInstance.
async fn the_instance(env: &Env) -> hybridnet_api::v1::IPInstance {
    let v = vm_instances(env, "vm1").await;
    assert_eq!(v.len(), 1, "{v:?}");
    v.into_iter().next().unwrap()
}

fn mark(i: &hybridnet_api::v1::IPInstance) -> Option<kubevirt::MigrationPeer> {
    kubevirt::MigrationPeer::of(i.metadata.annotations.as_ref())
}

/// Waits until the VM's IPInstance names the target pod `name` (its uid, node n2).
async fn shared_with(env: &Env, name: &str) -> hybridnet_api::v1::IPInstance {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let uid = pods.get(name).await.unwrap().uid().unwrap();
    wait_for("the target named on the VM's IPInstance", || async {
        vm_instances(env, "vm1").await.iter().any(|i| {
            mark(i)
                == Some(kubevirt::MigrationPeer {
                    pod: name.into(),
                    uid: uid.clone(),
                    node: "n2".into(),
                })
        })
    })
    .await;
    the_instance(env).await
}

/// What `kubectl hybridnet ip check` and the leak repair judge (`find_leaks`): nothing.
async fn no_leaks(env: &Env) {
    let instances = env.all_instances().await;
    let pods = Api::<Pod>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let f = find_leaks(
        &instances,
        &pods,
        &PodDefaults::default(),
        &hybridnet_api::selector::PodSelector::everything(),
    );
    assert!(f.is_empty(), "{f:?}");
}

async fn used(env: &Env) -> Option<i32> {
    Api::<hybridnet_api::v1::Subnet>::all(env.client.clone())
        .get("u1-sub")
        .await
        .ok()
        .and_then(|s| s.status)
        .and_then(|s| s.used)
}

fn assert_bound(
    i: &hybridnet_api::v1::IPInstance,
    pod: &str,
    node: &str,
    first: &hybridnet_api::v1::IPInstance,
) {
    assert_eq!(i.name_any(), first.name_any());
    assert_eq!(i.spec.address, first.spec.address, "same address and MAC");
    assert_eq!(i.spec.binding.pod_name.as_deref(), Some(pod));
    assert_eq!(i.spec.binding.node_name.as_deref(), Some(node));
    let l = i.metadata.labels.as_ref().unwrap();
    assert_eq!(l[label::NODE], node);
    assert_eq!(l[label::VM], "vm1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_migration_target_shares_the_address_then_takes_it_when_the_vm_runs_there() {
    let lab = lab().await;
    let env = &lab.env;
    let first = running_source(&lab).await;
    wait_for("used = 1", || async { used(env).await == Some(1) }).await;

    // KubeVirt creates the target pod on n2 while the VM runs in the source pod.
    let target = "virt-launcher-vm1-bbbbb";
    env.pod(migration_target(target, "n2", &lab.vmi, MIGRATION_UID))
        .await;
    env.set_pod_status("default", target, running()).await;
    let shared = shared_with(env, target).await;
    // The binding (and every route towards the VM) stays with the source meanwhile.
    assert_bound(&shared, "virt-launcher-vm1-aaaaa", "n1", &first);
    assert_eq!(shared.spec.binding.pod_uid, first.spec.binding.pod_uid);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let t = pods.get(target).await.unwrap();
    assert!(t.finalizers().iter().any(|f| f == finalizer::IP_ALLOCATED));
    no_leaks(env).await;
    assert_eq!(used(env).await, Some(1));

    // The VM runs on the target (KubeVirt's ready annotation): the binding moves to it.
    pods.patch(
        target,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            kubevirt::MIGRATION_TARGET_READY_ANNOTATION: "2026-12-07 23:00:00 +0000 UTC"
        }}})),
    )
    .await
    .unwrap();
    let moved = env.allocated("default", target, 1).await;
    assert_bound(&moved[0], target, "n2", &first);
    assert_eq!(moved[0].spec.binding.pod_uid, t.uid());
    // The source, still there, is named as sharing it until it goes.
    assert_eq!(
        mark(&moved[0]),
        Some(kubevirt::MigrationPeer {
            pod: "virt-launcher-vm1-aaaaa".into(),
            uid: first.spec.binding.pod_uid.clone().unwrap(),
            node: "n1".into(),
        })
    );
    no_leaks(env).await;

    // KubeVirt deletes the source pod: it holds nothing any more, so it goes at once (without
    // waiting for its containers). Nothing is reserved or released.
    env.delete_pod("default", "virt-launcher-vm1-aaaaa").await;
    env.pod_gone("default", "virt-launcher-vm1-aaaaa").await;
    wait_for("the source's mark removed", || async {
        mark(&the_instance(env).await).is_none()
    })
    .await;
    let after = the_instance(env).await;
    assert_bound(&after, target, "n2", &first);
    assert!(!after.spec.is_reserved());
    assert_eq!(used(env).await, Some(1));
    no_leaks(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ready_annotation_the_source_going_hands_the_address_to_the_target() {
    let lab = lab().await;
    let env = &lab.env;
    let first = running_source(&lab).await;
    let target = "virt-launcher-vm1-ccccc";
    env.pod(migration_target(target, "n2", &lab.vmi, MIGRATION_UID))
        .await;
    env.set_pod_status("default", target, running()).await;
    shared_with(env, target).await;

    // The source pod is deleted; while its containers run it keeps the binding.
    env.delete_pod("default", "virt-launcher-vm1-aaaaa").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    wait_for("source terminating", || async {
        pods.get_opt("virt-launcher-vm1-aaaaa")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    let still = the_instance(env).await;
    assert_bound(&still, "virt-launcher-vm1-aaaaa", "n1", &first);
    env.set_pod_status(
        "default",
        "virt-launcher-vm1-aaaaa",
        container_status("Running", false),
    )
    .await;
    env.pod_gone("default", "virt-launcher-vm1-aaaaa").await;
    let moved = env.allocated("default", target, 1).await;
    assert_bound(&moved[0], target, "n2", &first);
    assert_eq!(mark(&moved[0]), None);
    wait_for("used = 1", || async { used(env).await == Some(1) }).await;
    no_leaks(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_migration_leaves_the_source_bound_and_drops_the_target_mark() {
    let lab = lab().await;
    let env = &lab.env;
    let first = running_source(&lab).await;
    let target = "virt-launcher-vm1-ddddd";
    env.pod(migration_target(target, "n2", &lab.vmi, MIGRATION_UID))
        .await;
    env.set_pod_status("default", target, running()).await;
    shared_with(env, target).await;

    // The migration fails: KubeVirt deletes the target pod; the source stays.
    // A target is no holder: the operator may let it go before its containers stop.
    env.delete_pod("default", target).await;
    env.set_pod_status_if_present("default", target, container_status("Running", false))
        .await;
    env.pod_gone("default", target).await;
    wait_for("the target mark removed", || async {
        mark(&the_instance(env).await).is_none()
    })
    .await;
    let after = the_instance(env).await;
    assert_bound(&after, "virt-launcher-vm1-aaaaa", "n1", &first);
    assert_eq!(after.spec.binding.pod_uid, first.spec.binding.pod_uid);
    wait_for("used = 1", || async { used(env).await == Some(1) }).await;
    no_leaks(env).await;

    // A later migration works as the first.
    let again = "virt-launcher-vm1-eeeee";
    env.pod(migration_target(again, "n2", &lab.vmi, "second-migration"))
        .await;
    env.set_pod_status("default", again, running()).await;
    let shared = shared_with(env, again).await;
    assert_bound(&shared, "virt-launcher-vm1-aaaaa", "n1", &first);
}

async fn wait_refused(env: &Env, pod: &str) {
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    wait_for(&format!("{pod} refused the VM's address"), || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
                    && e.reason.as_deref() == Some("IPAllocationFail")
                    && e.note.as_deref().is_some_and(|n| n.contains("still runs"))
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_second_pods_and_malformed_migration_labels_never_take_a_running_pods_address() {
    let lab = lab().await;
    let env = &lab.env;
    let first = running_source(&lab).await;
    // Values that are not label values ("not a uid", 64 characters) the API server refuses
    // (kube-lite too); `crds/src/kubevirt.rs` tests them.
    let cases = [
        ("virt-launcher-vm1-plain", None),
        ("virt-launcher-vm1-empty", Some("")),
    ];
    for (name, job) in cases {
        let mut p = launcher(name, "n2", &lab.vmi);
        if let Some(job) = job {
            p.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(kubevirt::MIGRATION_JOB_LABEL.into(), job.into());
        }
        // Scheduled is enough to be allocated; left Pending, so that the only Warning the pod
        // gets is the refusal (the Event's note is the first one of its reason).
        env.pod(p).await;
    }
    for (name, _) in cases {
        wait_refused(env, name).await;
    }
    // The address never moved, nobody is named as a target, nothing else was allocated.
    let after = the_instance(env).await;
    assert_bound(&after, "virt-launcher-vm1-aaaaa", "n1", &first);
    assert_eq!(after.spec.binding.pod_uid, first.spec.binding.pod_uid);
    assert_eq!(mark(&after), None);
    assert_eq!(env.all_instances().await.len(), 1);
    wait_for("used = 1", || async { used(env).await == Some(1) }).await;
}

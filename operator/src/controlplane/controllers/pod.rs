//! Pod controller: allocation, stateful retention and reservation, release of evicted and completed
//! pods (upstream `pkg/controllers/networking/pod_controller.go`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hybridnet_api::constants::{annotation, label};
use hybridnet_api::kubevirt;
use hybridnet_api::naming::{instance_name_to_ip, pod_name_label_value};
use hybridnet_api::resolve::PodNetworkConfig;
use hybridnet_api::v1::IPInstance;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{debug, info, instrument, warn};

use crate::controlplane::rules::objects::{
    Ownership, add_finalizer_patch, build_ipinstance, rebind_patch, remove_finalizer_patch,
    reserve_patch, select_network,
};
use crate::controlplane::rules::podstate::{
    PodAction, VmFacts, controller_owner, decide, has_ip_finalizer, is_completed, is_evicted,
    is_handled, is_host_network, is_stateful, is_terminating, node_name,
};
use crate::controlplane::rules::resolution::{
    ip_retain, ipinstances_of_pod_name, ipinstances_of_vm, resolve_for_pod,
};
use crate::controlplane::rules::retention::{
    HolderState, Reuse, VmAssign, VmPodFacts, bound_here, covers_family, holder_state,
    peer_after_take, pool_mac, retained_mac, reuse_candidates, split_rebind, stateful_reuse,
    vm_assignment, vm_holders,
};
use crate::controlplane::runtime::context::{Ctx, PodRecord, ReconcileError, pod_key};
use crate::ipam::{Allocation, AssignCandidate, MacAddr, PodKey};

pub const REASON_ALLOCATED: &str = "IPAllocationSucceed";
pub const REASON_ALLOCATION_FAILED: &str = "IPAllocationFail";
pub const REASON_RELEASED: &str = "IPReleaseSucceed";
pub const REASON_RESERVED: &str = "IPReserveSucceed";

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn alloc_err(pod: &Pod, message: impl Into<String>) -> ReconcileError {
    ReconcileError::Allocation {
        pod: pod_name(pod),
        message: message.into(),
    }
}

/// The IPInstances of namespace `ns` matching the label selector `sel`, read from the API (not
/// the cache): used where a stale view could lose or duplicate an address.
async fn list_ipinstances_live(
    ctx: &Ctx,
    ns: &str,
    sel: &str,
) -> Result<Vec<IPInstance>, ReconcileError> {
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(sel))
        .await
        .map_err(ReconcileError::kube(
            "list",
            "IPInstance",
            format!("{ns} {sel}"),
        ))?;
    Ok(list.items)
}

/// The pod's IPInstances (by pod-name label), read from the API.
async fn list_pod_ipinstances(ctx: &Ctx, pod: &Pod) -> Result<Vec<IPInstance>, ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    let sel = format!("{}={}", label::POD, pod_name_label_value(&pod.name_any()));
    let listed = list_ipinstances_live(ctx, &ns, &sel).await?;
    Ok(ipinstances_of_pod_name(&ns, &pod.name_any(), listed.iter()))
}

/// Reconciles one pod.
#[instrument(skip_all, fields(pod = %pod_name(&pod)))]
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.ensure_leading()?;
    // Upstream's predicate: pods outside --pod-label-selector are not ours to allocate or release
    // (unless they carry our finalizer, which only we remove).
    if !is_handled(&ctx.config.pod_selector, &pod) {
        ctx.metrics.pods_not_selected.inc();
        debug!("not selected by --pod-label-selector");
        return Ok(Action::await_change());
    }
    let Some(_claim) = ctx.claim_pod(pod_key(&pod)) else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    let effective = ctx.defaults();
    let defaults = &effective.defaults;
    let owner_stateful_by_instances = controller_owner(&pod).is_none()
        && (pod.metadata.deletion_timestamp.is_some() || has_ip_finalizer(&pod))
        && {
            let ns = pod.namespace().unwrap_or_default();
            let all = ctx.caches.ipinstances.state();
            ipinstances_of_pod_name(&ns, &pod.name_any(), all.iter().map(|a| a.as_ref()))
                .iter()
                .any(|i| {
                    i.spec
                        .binding
                        .referred_object
                        .as_ref()
                        .and_then(|r| r.kind.as_deref())
                        .is_some_and(|k| defaults.is_stateful_kind(k))
                })
        };
    let reconcile = async {
        if defaults.vm_ip_retain
            && kubevirt::vmi_of_pod(pod.metadata.owner_references.as_ref()).is_some()
            && (is_terminating(&pod) || is_evicted(&pod) || is_completed(&pod))
        {
            // An aborted live migration: the target pod goes, the source keeps the addresses.
            clear_migration_marks(&ctx, &pod).await?;
        }
        let (vm, vm_owner) = vm_facts(&ctx, &pod, defaults).await?;
        let action = decide(&pod, defaults, owner_stateful_by_instances, vm);
        debug!(?action, "decided");
        match (action, vm_owner) {
            (PodAction::Ignore | PodAction::LeaveToGarbageCollector, _) => {
                Ok(Action::await_change())
            }
            (PodAction::WaitForContainers, _) => Ok(Action::requeue(Duration::from_secs(5))),
            (PodAction::RemoveFinalizer, _) => remove_pod_finalizer(&ctx, &pod)
                .await
                .map(|_| Action::await_change()),
            (PodAction::Reserve, _) => reserve(&ctx, &pod, false)
                .await
                .map(|_| Action::await_change()),
            (PodAction::ReserveVm, _) => reserve(&ctx, &pod, true)
                .await
                .map(|_| Action::await_change()),
            (PodAction::Release, _) => release(&ctx, &pod).await.map(|_| Action::await_change()),
            (PodAction::AllocateVm, Some(owner)) => {
                allocate(&ctx, &pod, Some(owner)).await?;
                // A live migration's target sharing the source's addresses looks again until
                // the binding moved to it (its ready annotation and the source's end trigger
                // that too).
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let settled = ctx
                    .pod_records()
                    .get(&pod_key(&pod))
                    .is_some_and(|r| r.uid == uid && r.complete);
                Ok(if settled {
                    Action::await_change()
                } else {
                    Action::requeue(Duration::from_secs(5))
                })
            }
            (PodAction::Allocate | PodAction::AllocateVm, _) => allocate(&ctx, &pod, None)
                .await
                .map(|_| Action::await_change()),
        }
    };
    ctx.metrics.measure_reconcile("pod", reconcile).await
}

fn kubevirt_api(ctx: &Ctx, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(kubevirt::GROUP, kubevirt::VERSION, kind);
    Api::namespaced_with(
        ctx.client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Whether `pod` is a KubeVirt VM's (`VMIPRetain`, `hybridnet_api::kubevirt`), and for a live pod
/// the owner reference its IPInstances get. A live pod is recognised through its VMI, read from
/// the API as upstream (`OwnByVirtualMachine`); a pod going away through the IPInstances written
/// for it, whose owner is the VM (its VMI may be gone already). The VM itself is read to know
/// whether it stays.
async fn vm_facts(
    ctx: &Ctx,
    pod: &Pod,
    defaults: &crate::controlplane::rules::defaults::PodDefaults,
) -> Result<(VmFacts, Option<OwnerReference>), ReconcileError> {
    if !defaults.vm_ip_retain || is_stateful(pod, defaults) || is_host_network(pod) {
        return Ok((VmFacts::NotVm, None));
    }
    let ns = pod.namespace().unwrap_or_default();
    if is_terminating(pod) || is_evicted(pod) || is_completed(pod) {
        let all = ctx.caches.ipinstances.state();
        let mine = ipinstances_of_pod_name(&ns, &pod.name_any(), all.iter().map(|a| a.as_ref()));
        let Some(vm) = mine
            .iter()
            .find_map(|i| kubevirt::vm_of_object(i.metadata.owner_references.as_ref()))
        else {
            return Ok((VmFacts::NotVm, None));
        };
        let api = kubevirt_api(ctx, &ns, kubevirt::VM_KIND, kubevirt::VM_PLURAL);
        let vm_alive = match api.get_opt(vm).await {
            Ok(found) => found.is_some_and(|v| v.metadata.deletion_timestamp.is_none()),
            // Not served (KubeVirt uninstalled): no VM stays.
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => {
                return Err(ReconcileError::kube(
                    "get",
                    kubevirt::VM_KIND,
                    format!("{ns}/{vm}"),
                )(e));
            }
        };
        return Ok((VmFacts::Vm { vm_alive }, None));
    }
    if node_name(pod).is_none() {
        return Ok((VmFacts::NotVm, None));
    }
    let Some(vmi) = kubevirt::vmi_of_pod(pod.metadata.owner_references.as_ref()) else {
        return Ok((VmFacts::NotVm, None));
    };
    let api = kubevirt_api(ctx, &ns, kubevirt::VMI_KIND, kubevirt::VMI_PLURAL);
    let found = api.get(vmi).await.map_err(ReconcileError::kube(
        "get",
        kubevirt::VMI_KIND,
        format!("{ns}/{vmi}"),
    ))?;
    Ok(
        match kubevirt::vm_owner_of_vmi(found.metadata.owner_references.as_ref()) {
            Some(owner) => (VmFacts::Vm { vm_alive: true }, Some(owner)),
            // A VMI started on its own: an ordinary pod.
            None => (VmFacts::NotVm, None),
        },
    )
}

async fn remove_pod_finalizer(ctx: &Ctx, pod: &Pod) -> Result<(), ReconcileError> {
    let Some(patch) = remove_finalizer_patch(pod.metadata.finalizers.as_ref()) else {
        return Ok(());
    };
    ctx.ensure_leading()?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| alloc_err(pod, e.to_string()))?;
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ReconcileError::kube(
            "remove finalizer from",
            "Pod",
            pod_name(pod),
        )(e)),
    }
}

async fn ensure_pod_finalizer(ctx: &Ctx, pod: &Pod) -> Result<(), ReconcileError> {
    if has_ip_finalizer(pod) {
        return Ok(());
    }
    ctx.ensure_leading()?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let patch = add_finalizer_patch(
        pod.metadata.finalizers.as_ref(),
        pod.metadata.resource_version.as_deref().unwrap_or(""),
    );
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| alloc_err(pod, e.to_string()))?;
    api.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map_err(ReconcileError::kube(
        "add finalizer to",
        "Pod",
        pod_name(pod),
    ))?;
    Ok(())
}

/// A stateful pod (or a VM's, `drop_pod_name`) is gone (or going) and nothing runs: keep its
/// addresses for the next incarnation.
async fn reserve(ctx: &Arc<Ctx>, pod: &Pod, drop_pod_name: bool) -> Result<(), ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let mine = list_pod_ipinstances(ctx, pod).await?;
    if drop_pod_name && hand_over_to_migration_target(ctx, pod, &mine).await? {
        ctx.pod_records().remove(&pod_key(pod));
        return remove_pod_finalizer(ctx, pod).await;
    }
    let mut reserved = Vec::new();
    for ipi in mine {
        // Only addresses bound to this incarnation (or already reserved) are ours to reserve.
        let bound_uid = ipi.spec.binding.pod_uid.clone().unwrap_or_default();
        if !bound_uid.is_empty() && Some(bound_uid.as_str()) != pod.metadata.uid.as_deref() {
            continue;
        }
        if !ipi.spec.is_reserved() {
            ctx.ensure_leading()?;
            api.patch(
                &ipi.name_any(),
                &PatchParams::default(),
                &Patch::Merge(reserve_patch(drop_pod_name)),
            )
            .await
            .map_err(ReconcileError::kube(
                "reserve",
                "IPInstance",
                format!("{ns}/{}", ipi.name_any()),
            ))?;
        }
        if let Some(ip) = instance_name_to_ip(&ipi.name_any()) {
            ctx.engine()
                .reserve(&ipi.spec.network, &ipi.spec.subnet, ip);
        }
        reserved.push(ipi.spec.address.ip.clone());
    }
    ctx.pod_records().remove(&pod_key(pod));
    ctx.notify_ipam_changed();
    remove_pod_finalizer(ctx, pod).await?;
    if !reserved.is_empty() {
        let of = if drop_pod_name {
            "a VM's pod"
        } else {
            "a stateful pod"
        };
        info!(addresses = ?reserved, "reserved the addresses of {of}");
        ctx.pod_event(
            pod,
            EventType::Normal,
            REASON_RESERVED,
            format!("reserve IPs {reserved:?} successfully"),
        );
    }
    Ok(())
}

/// An evicted or completed ordinary pod: free its addresses now.
async fn release(ctx: &Ctx, pod: &Pod) -> Result<(), ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let mut released = Vec::new();
    for ipi in list_pod_ipinstances(ctx, pod).await? {
        let bound_uid = ipi.spec.binding.pod_uid.clone().unwrap_or_default();
        if !bound_uid.is_empty() && Some(bound_uid.as_str()) != pod.metadata.uid.as_deref() {
            continue;
        }
        ctx.ensure_leading()?;
        match api.delete(&ipi.name_any(), &DeleteParams::default()).await {
            Ok(_) => released.push(ipi.spec.address.ip.clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ReconcileError::kube(
                    "delete",
                    "IPInstance",
                    format!("{ns}/{}", ipi.name_any()),
                )(e));
            }
        }
    }
    ctx.pod_records().remove(&pod_key(pod));
    remove_pod_finalizer(ctx, pod).await?;
    if !released.is_empty() {
        info!(addresses = ?released, "released the addresses of an evicted or completed pod");
        ctx.pod_event(
            pod,
            EventType::Normal,
            REASON_RELEASED,
            format!("release IPs {released:?} successfully"),
        );
    }
    Ok(())
}

/// Allocation of a scheduled pod (of a KubeVirt VM: `vm_owner`); on failure a Warning event says
/// what the user can do.
async fn allocate(
    ctx: &Ctx,
    pod: &Pod,
    vm_owner: Option<OwnerReference>,
) -> Result<(), ReconcileError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = pod_key(pod);
    if ctx
        .pod_records()
        .get(&key)
        .is_some_and(|r| r.uid == uid && r.complete)
    {
        return Ok(());
    }
    let started = Instant::now();
    let stateful = is_stateful(pod, &ctx.defaults().defaults);
    let res = if stateful {
        allocate_stateful(ctx, pod).await
    } else if let Some(owner) = vm_owner {
        allocate_vm(ctx, pod, owner).await
    } else {
        allocate_normal(ctx, pod).await
    };
    // Upstream's metric has the types `normal` and `stateful` only (a VM's pod is `normal`).
    let kind = if stateful { "stateful" } else { "normal" };
    ctx.metrics
        .record_allocation(kind, res.is_ok(), started.elapsed().as_secs_f64());
    match res {
        Ok(Some(note)) => {
            ctx.pod_event(pod, EventType::Normal, REASON_ALLOCATED, note);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            if !matches!(e, ReconcileError::NotLeader) {
                ctx.pod_event(
                    pod,
                    EventType::Warning,
                    REASON_ALLOCATION_FAILED,
                    e.to_string(),
                );
            }
            Err(e)
        }
    }
}

struct Plan {
    config: PodNetworkConfig,
    network: String,
}

/// The pod's Namespace (cache, else API: `Caches::namespace_or_live`).
async fn pod_namespace(ctx: &Ctx, pod: &Pod) -> Result<Option<Arc<Namespace>>, ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    ctx.caches
        .namespace_or_live(&ctx.client, &ns)
        .await
        .map_err(ReconcileError::kube("get", "Namespace", ns))
}

async fn plan(
    ctx: &Ctx,
    pod: &Pod,
    pod_ipis: &[IPInstance],
    vm_ipis: &[IPInstance],
) -> Result<Plan, ReconcileError> {
    let namespace = pod_namespace(ctx, pod).await?;
    let networks = ctx.caches.networks();
    let config = resolve_for_pod(
        pod,
        namespace.as_deref(),
        &ctx.defaults().defaults,
        &networks,
        &ctx.caches.subnets(),
        pod_ipis,
        vm_ipis,
    )
    .map_err(|e| alloc_err(pod, e.to_string()))?;
    let node = node_name(pod).unwrap_or_default().to_string();
    let node_obj = ctx
        .caches
        .nodes
        .get(&kube::runtime::reflector::ObjectRef::new(&node));
    let empty = Default::default();
    let node_labels = node_obj
        .as_ref()
        .map(|n| n.metadata.labels.as_ref().unwrap_or(&empty));
    let network =
        select_network(&config, &node, node_labels, &networks).map_err(|m| alloc_err(pod, m))?;
    Ok(Plan { config, network })
}

/// The family the webhook recorded on the pod, if any.
fn anns_family(pod: &Pod) -> Option<hybridnet_api::operator::IpFamily> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(annotation::IP_FAMILY)
        .and_then(|f| hybridnet_api::operator::IpFamily::parse_case_insensitive(f))
}

fn pod_ipam_key(pod: &Pod) -> PodKey {
    PodKey::new(pod.namespace().unwrap_or_default(), pod.name_any())
}

async fn allocate_normal(ctx: &Ctx, pod: &Pod) -> Result<Option<String>, ReconcileError> {
    // Addresses already written for this incarnation (e.g. by a previous leader) count.
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    // Read from the API, not the cache: a previous leader may have written (part of) it.
    let existing: Vec<IPInstance> = list_pod_ipinstances(ctx, pod)
        .await?
        .into_iter()
        .filter(|i| i.spec.binding.pod_uid.as_deref() == Some(uid.as_str()))
        .collect();
    let plan = plan(ctx, pod, &[], &[]).await?;
    if !existing.is_empty() {
        if covers_family(&existing, plan.config.ip_family) {
            record(
                ctx,
                pod,
                &existing.iter().map(|i| i.name_any()).collect::<Vec<_>>(),
            );
            return Ok(None);
        }
        // A partial allocation (e.g. a leader died between the IPv4 and the IPv6 write): undo it
        // and start again once it is gone.
        let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
        for i in &existing {
            delete_ipinstance(ctx, &api, i).await?;
        }
        return Err(alloc_err(
            pod,
            "removed a partial allocation of an earlier attempt; allocating again",
        ));
    }
    allocate_fresh(ctx, pod, &plan, None, &Ownership::of_pod(pod, false)).await
}

fn record(ctx: &Ctx, pod: &Pod, names: &[String]) {
    ctx.pod_records().insert(
        pod_key(pod),
        PodRecord {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            instances: names.to_vec(),
            complete: true,
        },
    );
}

/// Creates one IPInstance per allocation. On failure, addresses without an IPInstance go back to
/// the IPAM and the ones created are deleted (their deletion releases them).
async fn write_new(
    ctx: &Ctx,
    pod: &Pod,
    allocs: &[Allocation],
    mac: &MacAddr,
    own: &Ownership,
) -> Result<(), ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut created: Vec<String> = Vec::new();
    let mut failure = None;
    for a in allocs {
        if let Err(e) = ctx.ensure_leading() {
            failure = Some(e);
            break;
        }
        let obj = build_ipinstance(pod, a, &mac.to_string(), own);
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => created.push(a.instance_name()),
            Err(e) => {
                // The write may have happened although we got an error: look before undoing.
                match api.get_opt(&a.instance_name()).await {
                    Ok(Some(found))
                        if found.spec.binding.pod_uid.as_deref() == Some(uid.as_str()) =>
                    {
                        created.push(a.instance_name());
                        continue;
                    }
                    Ok(Some(found)) => {
                        // Someone else's IPInstance has this address: the in-memory IPAM
                        // missed it. Keep the address held (a terminating one is released by
                        // the IPInstance controller when it is gone) and retry with another.
                        if found.metadata.deletion_timestamp.is_none() {
                            warn!(ip = %a.ip, holder = ?found.spec.binding.pod_name, "address already has an IPInstance; learning it");
                            ctx.engine().observe(&found);
                        }
                        failure = Some(alloc_err(
                            pod,
                            format!("address {} was already taken; retrying", a.ip),
                        ));
                        // Do not release: the address belongs to the other IPInstance now.
                        let rest: Vec<&Allocation> = allocs
                            .iter()
                            .filter(|x| x.ip != a.ip && !created.contains(&x.instance_name()))
                            .collect();
                        release_in_memory(ctx, &rest);
                        undo_created(ctx, &api, &created).await;
                        ctx.notify_ipam_changed();
                        return Err(failure.unwrap_or_else(|| alloc_err(pod, "write failed")));
                    }
                    _ => {
                        failure = Some(ReconcileError::kube(
                            "create",
                            "IPInstance",
                            format!("{ns}/{}", a.instance_name()),
                        )(e));
                        break;
                    }
                }
            }
        }
    }
    if let Some(err) = failure {
        let rest: Vec<&Allocation> = allocs
            .iter()
            .filter(|x| !created.contains(&x.instance_name()))
            .collect();
        release_in_memory(ctx, &rest);
        undo_created(ctx, &api, &created).await;
        ctx.notify_ipam_changed();
        return Err(err);
    }
    record(ctx, pod, &created);
    Ok(())
}

fn release_in_memory(ctx: &Ctx, allocs: &[&Allocation]) {
    let mut engine = ctx.engine();
    for a in allocs {
        engine.release(&a.network, &a.subnet, a.ip);
    }
}

async fn undo_created(ctx: &Ctx, api: &Api<IPInstance>, created: &[String]) {
    if ctx.ensure_leading().is_err() {
        return;
    }
    for name in created {
        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
            warn!(ipinstance = %name, error = %e, "could not undo a partial allocation; the leak detector will");
        }
    }
}

/// Stateful pods: finalizer, mac-pool, retention, ip-pool pre-assignment (upstream `pkg/controllers/networking/pod_controller.go`).
/// The decisions are in [`retention`](crate::controlplane::rules::retention).
async fn allocate_stateful(ctx: &Ctx, pod: &Pod) -> Result<Option<String>, ReconcileError> {
    ensure_pod_finalizer(ctx, pod).await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let node = node_name(pod).unwrap_or_default().to_string();
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = list_pod_ipinstances(ctx, pod).await?;
    // Already bound to this incarnation on this node: done (e.g. a previous leader did it).
    let family_ok = anns_family(pod).is_none_or(|f| covers_family(&existing, f));
    if family_ok && bound_here(&existing, &uid, &node) {
        record_instances(ctx, pod, &existing);
        return Ok(None);
    }
    let anns = pod.metadata.annotations.clone().unwrap_or_default();
    let name = pod.name_any();
    let mac = pool_mac(anns.get(annotation::MAC_POOL).map(String::as_str), &name)
        .map_err(|e| alloc_err(pod, e))?;
    let pool = anns
        .get(annotation::IP_POOL)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty());
    let own = Ownership::of_pod(pod, true);

    let retain = ip_retain(pod, &ctx.defaults().defaults);
    if !retain && pool.is_none() {
        // No retention: drop what earlier incarnations held, then allocate afresh.
        for i in &existing {
            delete_ipinstance(ctx, &api, i).await?;
        }
        let plan = plan(ctx, pod, &[], &[]).await?;
        return allocate_fresh(ctx, pod, &plan, mac, &own).await;
    }
    let retained_view: &[IPInstance] = if retain { &existing } else { &[] };
    let plan = plan(ctx, pod, retained_view, &[]).await?;
    reuse(ctx, pod, &plan, pool, &existing, mac, &own).await
}

/// A stateful pod that keeps its addresses: its `ip-pool` entry or its retained IPInstances
/// (see [`stateful_reuse`]).
async fn reuse(
    ctx: &Ctx,
    pod: &Pod,
    plan: &Plan,
    pool: Option<&str>,
    existing: &[IPInstance],
    mac: Option<MacAddr>,
    own: &Ownership,
) -> Result<Option<String>, ReconcileError> {
    match stateful_reuse(pool, &pod.name_any(), existing).map_err(|e| alloc_err(pod, e))? {
        Reuse::Fresh => allocate_fresh(ctx, pod, plan, mac, own).await,
        Reuse::Assign {
            candidates,
            force,
            delete,
        } => {
            let api: Api<IPInstance> =
                Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
            for inst in delete {
                delete_ipinstance(ctx, &api, inst).await?;
            }
            // The pod's existing MAC (one MAC for all families) unless the pool says otherwise.
            let mac = mac.or(retained_mac(existing));
            let explicit_mac = pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(annotation::MAC_POOL));
            let assignment = Assignment {
                candidates: &candidates,
                force,
                mac,
                rebind_mac: explicit_mac,
                peer: None,
            };
            assign_and_bind(ctx, pod, &plan.network, existing, assignment, own).await
        }
    }
}

/// New addresses from the IPAM and their IPInstances.
async fn allocate_fresh(
    ctx: &Ctx,
    pod: &Pod,
    plan: &Plan,
    mac: Option<MacAddr>,
    own: &Ownership,
) -> Result<Option<String>, ReconcileError> {
    let (allocs, mac) = ctx
        .engine()
        .allocate(
            &plan.network,
            &pod_ipam_key(pod),
            plan.config.ip_family,
            &plan.config.subnets,
            mac,
        )
        .map_err(|e| alloc_err(pod, e.to_string()))?;
    ctx.notify_ipam_changed();
    write_new(ctx, pod, &allocs, &mac, own).await?;
    let ips: Vec<String> = allocs.iter().map(|a| a.ip.to_string()).collect();
    Ok(Some(format!("allocate IPs {ips:?} successfully")))
}

/// Which addresses to assign to a pod that has (or had) IPInstances, and how.
struct Assignment<'a> {
    candidates: &'a [AssignCandidate],
    /// Take the addresses even when the IPAM holds them for another pod (upstream's force).
    force: bool,
    /// The MAC to keep; `None` lets the IPAM choose.
    mac: Option<MacAddr>,
    /// Write the MAC into the IPInstances that are re-bound.
    rebind_mac: bool,
    /// The pod named as sharing the re-bound IPInstances (a live migration's source after the
    /// target took them), in the same write; `None` removes any such mark.
    peer: Option<&'a kubevirt::MigrationPeer>,
}

/// Assigns the candidates in the IPAM, re-binds the IPInstances that exist (with the MAC if
/// `rebind_mac`) and creates the others.
async fn assign_and_bind(
    ctx: &Ctx,
    pod: &Pod,
    network: &str,
    existing: &[IPInstance],
    assignment: Assignment<'_>,
    own: &Ownership,
) -> Result<Option<String>, ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let Assignment {
        candidates,
        force,
        mac,
        rebind_mac,
        peer,
    } = assignment;
    let (allocs, mac) = ctx
        .engine()
        .assign(network, &pod_ipam_key(pod), candidates, force, mac)
        .map_err(|e| alloc_err(pod, e.to_string()))?;
    ctx.notify_ipam_changed();
    let (rebind, create) = split_rebind(&allocs, existing);
    let mac_s = mac.to_string();
    for a in rebind {
        ctx.ensure_leading()?;
        let name = a.instance_name();
        let mut patch = rebind_patch(pod, a, rebind_mac.then_some(mac_s.as_str()), own);
        if let Some(p) = peer {
            patch["metadata"]["annotations"][kubevirt::MIGRATION_PEER_ANNOTATION] =
                serde_json::Value::String(p.to_annotation());
        }
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(ReconcileError::kube(
                "re-bind",
                "IPInstance",
                format!("{ns}/{name}"),
            ))?;
    }
    if !create.is_empty() {
        write_new(ctx, pod, &create, &mac, own).await?;
    }
    record(
        ctx,
        pod,
        &allocs.iter().map(|a| a.instance_name()).collect::<Vec<_>>(),
    );
    let ips: Vec<String> = allocs.iter().map(|a| a.ip.to_string()).collect();
    Ok(Some(format!("assign IPs {ips:?} successfully")))
}

fn record_instances(ctx: &Ctx, pod: &Pod, instances: &[IPInstance]) {
    record(
        ctx,
        pod,
        &instances.iter().map(|i| i.name_any()).collect::<Vec<_>>(),
    );
}

/// A KubeVirt VM's pod (`VMIPRetain`, upstream `vmAllocate`): the VM's retained addresses
/// (IPInstances labelled with the VM) are force-assigned to it and re-bound; a VM without any gets
/// new ones, labelled with the VM and owned by it so that they outlive its pods and go with it.
/// A live migration's target shares them with the source pod until the VM runs in it
/// ([`vm_assignment`]; docs/api.md, "KubeVirt VMs").
async fn allocate_vm(
    ctx: &Ctx,
    pod: &Pod,
    vm_owner: OwnerReference,
) -> Result<Option<String>, ReconcileError> {
    ensure_pod_finalizer(ctx, pod).await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let node = node_name(pod).unwrap_or_default().to_string();
    let ns = pod.namespace().unwrap_or_default();
    let vm = vm_owner.name.clone();
    // From the API, not the cache: a stale view could allocate a second set for the VM.
    let listed = list_ipinstances_live(ctx, &ns, &format!("{}={}", label::VM, vm)).await?;
    let existing = ipinstances_of_vm(&ns, &vm, listed.iter());
    let own = Ownership::of_vm(vm_owner);
    let plan = plan(ctx, pod, &[], &existing).await?;
    if existing.is_empty() {
        return allocate_fresh(ctx, pod, &plan, None, &own).await;
    }
    // The pods the addresses are bound to, read from the API.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut states = Vec::new();
    for (name, holder_uid) in vm_holders(&existing, &uid) {
        let found = pods.get_opt(&name).await.map_err(ReconcileError::kube(
            "get",
            "Pod",
            format!("{ns}/{name}"),
        ))?;
        let state = holder_state(found.as_ref(), holder_uid.as_deref());
        states.push((name, holder_uid, state));
    }
    let facts = VmPodFacts {
        uid: &uid,
        node: &node,
        migration_target: kubevirt::migration_job_of_pod(pod.metadata.labels.as_ref()).is_some(),
        target_ready: kubevirt::migration_target_ready(pod.metadata.annotations.as_ref()),
    };
    let holder = |name: &str, holder_uid: Option<&str>| {
        states
            .iter()
            .find(|(n, u, _)| n == name && u.as_deref() == holder_uid)
            .map_or(HolderState::Gone, |(_, _, s)| *s)
    };
    let decision = vm_assignment(&existing, &facts, holder);
    debug!(?decision, "VM addresses");
    match decision {
        VmAssign::Bound => {
            record_instances(ctx, pod, &existing);
            Ok(None)
        }
        VmAssign::Wait { holder } => Err(alloc_err(
            pod,
            format!(
                "the addresses of VM {vm} are held by its pod {holder}, which still runs or has not released them yet; waiting for it to go (a live migration's target pod carries the label {})",
                kubevirt::MIGRATION_JOB_LABEL
            ),
        )),
        VmAssign::Share { source } => {
            let target = kubevirt::MigrationPeer {
                pod: pod.name_any(),
                uid: uid.clone(),
                node: node.clone(),
            };
            mark_migration_peer(ctx, &ns, &existing, Some(&target)).await?;
            debug!(%source, "live migration target: sharing the VM's addresses with the source pod");
            Ok(None)
        }
        VmAssign::Take => {
            // A live migration's source that has not gone keeps sharing them until it does.
            let peer = peer_after_take(&existing, &uid, holder);
            take_vm_addresses(ctx, pod, &plan.network, &existing, &own, peer.as_ref()).await
        }
    }
}

/// Forced assignment of a VM's IPInstances `existing` to `pod` and their re-binding (which also
/// drops any migration mark): what another pod of the VM held is taken over.
async fn take_vm_addresses(
    ctx: &Ctx,
    pod: &Pod,
    network: &str,
    existing: &[IPInstance],
    own: &Ownership,
    peer: Option<&kubevirt::MigrationPeer>,
) -> Result<Option<String>, ReconcileError> {
    {
        // Addresses still held for another pod (a migration's source, or a pod that went
        // without its reservation): reserved first, so that the forced assignment takes them.
        let mut engine = ctx.engine();
        let uid = pod.metadata.uid.as_deref();
        for i in existing
            .iter()
            .filter(|i| !i.spec.is_reserved() && i.spec.binding.pod_uid.as_deref() != uid)
        {
            if let Some(ip) = instance_name_to_ip(&i.name_any()) {
                engine.reserve(&i.spec.network, &i.spec.subnet, ip);
            }
        }
    }
    let candidates = reuse_candidates(existing);
    let assignment = Assignment {
        candidates: &candidates,
        force: true,
        mac: retained_mac(existing),
        rebind_mac: false,
        peer,
    };
    assign_and_bind(ctx, pod, network, existing, assignment, own).await
}

/// Writes (`Some`) or removes (`None`) the migration-target mark on the IPInstances where it
/// differs.
async fn mark_migration_peer(
    ctx: &Ctx,
    ns: &str,
    instances: &[IPInstance],
    target: Option<&kubevirt::MigrationPeer>,
) -> Result<(), ReconcileError> {
    let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), ns);
    let value = target.map(kubevirt::MigrationPeer::to_annotation);
    for i in instances {
        let now = i
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(kubevirt::MIGRATION_PEER_ANNOTATION));
        if now == value.as_ref() {
            continue;
        }
        ctx.ensure_leading()?;
        let patch = serde_json::json!({"metadata": {"annotations": {
            kubevirt::MIGRATION_PEER_ANNOTATION: value,
        }}});
        match api
            .patch(&i.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ReconcileError::kube(
                    "mark the migration target on",
                    "IPInstance",
                    format!("{ns}/{}", i.name_any()),
                )(e));
            }
        }
    }
    Ok(())
}

/// A pod that goes drops the migration-target marks naming it (an aborted or failed live
/// migration: the source keeps the binding, nothing else changes).
async fn clear_migration_marks(ctx: &Ctx, pod: &Pod) -> Result<(), ReconcileError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.metadata.uid.as_deref();
    let marked: Vec<IPInstance> = ctx
        .caches
        .ipinstances
        .state()
        .iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|i| {
            kubevirt::MigrationPeer::of(i.metadata.annotations.as_ref())
                .is_some_and(|t| t.names_pod(&name, uid))
        })
        .map(|i| (**i).clone())
        .collect();
    if marked.is_empty() {
        return Ok(());
    }
    info!(
        ipinstances = marked.len(),
        "the live migration's target pod goes: its marks are removed"
    );
    mark_migration_peer(ctx, &ns, &marked, None).await
}

/// The source pod of a live migration goes (nothing runs in it any more) while the target pod
/// named on its IPInstances `mine` is live: the binding moves to the target now instead of the
/// addresses being reserved. Returns whether it did.
async fn hand_over_to_migration_target(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    mine: &[IPInstance],
) -> Result<bool, ReconcileError> {
    let uid = pod.metadata.uid.as_deref();
    let bound: Vec<&IPInstance> = mine
        .iter()
        .filter(|i| i.spec.binding.pod_uid.is_none() || i.spec.binding.pod_uid.as_deref() == uid)
        .collect();
    let Some(target) = bound
        .iter()
        .find_map(|i| kubevirt::MigrationPeer::of(i.metadata.annotations.as_ref()))
    else {
        return Ok(false);
    };
    let Some(owner) = bound
        .iter()
        .find_map(|i| kubevirt::controller_of(i.metadata.owner_references.as_ref()))
        .filter(|o| o.kind == kubevirt::VM_KIND)
        .cloned()
    else {
        return Ok(false);
    };
    let ns = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let found = pods
        .get_opt(&target.pod)
        .await
        .map_err(ReconcileError::kube(
            "get",
            "Pod",
            format!("{ns}/{}", target.pod),
        ))?;
    let Some(target_pod) = found.filter(|p| {
        holder_state(Some(p), Some(&target.uid)) == HolderState::Live
            && node_name(p) == Some(target.node.as_str())
    }) else {
        return Ok(false);
    };
    // The target's own reconcile must not run at the same time (it would share or take).
    let Some(_claim) = ctx.claim_pod(pod_key(&target_pod)) else {
        ctx.pod_requeue
            .send(kube::runtime::reflector::ObjectRef::from_obj(&target_pod))
            .ok();
        return Ok(false);
    };
    let vm = owner.name.clone();
    let listed = list_ipinstances_live(ctx, &ns, &format!("{}={}", label::VM, vm)).await?;
    let existing = ipinstances_of_vm(&ns, &vm, listed.iter());
    let Some(network) = existing.first().map(|i| i.spec.network.clone()) else {
        return Ok(false);
    };
    let note = take_vm_addresses(
        ctx,
        &target_pod,
        &network,
        &existing,
        &Ownership::of_vm(owner),
        // The source is going and nothing runs in it: it shares nothing any more.
        None,
    )
    .await?;
    info!(target = %target.pod, node = %target.node, "live migration: the source pod went, the VM's addresses are bound to the target pod");
    if let Some(note) = note {
        ctx.pod_event(&target_pod, EventType::Normal, REASON_ALLOCATED, note);
    }
    Ok(true)
}

async fn delete_ipinstance(
    ctx: &Ctx,
    api: &Api<IPInstance>,
    i: &IPInstance,
) -> Result<(), ReconcileError> {
    ctx.ensure_leading()?;
    match api.delete(&i.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(ReconcileError::kube("delete", "IPInstance", i.name_any())(
            e,
        )),
    }
}

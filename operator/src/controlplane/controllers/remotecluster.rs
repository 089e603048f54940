//! RemoteCluster status and mirrors (docs/multicluster.md): on a timer, for every RemoteCluster,
//! build a client to the remote API server from the spec, read the remote cluster's identity (its
//! `kube-system` Namespace UID), run upstream's four checks and write the status the pure
//! `hybridnet_api::multicluster::status` computes from what was found (only when it changed).
//! While a cluster is Ready its Subnets and nodes are mirrored here as RemoteSubnets and
//! RemoteVteps (`hybridnet_api::multicluster::mirror`), and the EndpointSlices of its global
//! Services as RemoteEndpointSlices; a cluster that is not Ready keeps the mirrors it had; mirrors
//! of RemoteClusters that are gone are deleted. Local global Services get EndpointSlices from the
//! RemoteEndpointSlices (`hybridnet_api::multicluster::global_service`).

use std::time::Duration;

use std::collections::BTreeSet;

use hybridnet_api::constants::{field_manager, finalizer, label};
use hybridnet_api::multicluster::credentials::Credentials;
use hybridnet_api::multicluster::global_service::{self, plan_import, remote_slice_mirrors};
use hybridnet_api::multicluster::mirror::{self, plan_mirrors, subnet_mirrors, vtep_mirrors};
use hybridnet_api::multicluster::status::{self, Checks, Connection};
use hybridnet_api::multicluster::validate::{claim_uuid, parse_api_endpoint};
use hybridnet_api::multicluster::{
    ClusterState, RemoteCluster, RemoteEndpointSlice, RemoteSubnet, RemoteVtep,
};
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::remote_watch::{RemoteSnapshot, RemoteWatches};
use crate::controlplane::rules::objects::{
    add_named_finalizer_patch, remove_named_finalizer_patch,
};
use crate::controlplane::runtime::metrics::Metrics;
use crate::controlplane::runtime::run::list_all;

/// How often every RemoteCluster is checked (upstream's checker runs every 30 s).
pub const CHECK_PERIOD: Duration = Duration::from_secs(30);

/// Longest wait for one request to a remote API server when `spec.timeout` is absent or 0
/// (upstream: no limit; here a hung remote must not stall the checks of the others).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster's identity: the UID of its `kube-system` Namespace (upstream `GetClusterUUID`).
async fn cluster_uuid(client: &Client) -> Result<String, kube::Error> {
    let ns = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await?;
    Ok(ns.metadata.uid.unwrap_or_default())
}

/// Every object of a kind; none when its CRD is not installed.
async fn list_or_none<K>(client: &Client) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match list_all(&Api::<K>::all(client.clone())).await {
        Ok(l) => Ok(l),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The credentials of `rc`: inline (upstream's `caData`, `certData`, `keyData`) or from the
/// Secret `spec.credentialsSecretRef` names. The operator may read only the Secrets it has been
/// granted by name (`kubectl hybridnet cluster connect` creates the Role; docs/multicluster.md,
/// Credentials), so a Secret it may not read is a configuration error that says so.
async fn credentials(local: &Client, rc: &RemoteCluster) -> Result<Credentials, String> {
    let Some(r) = &rc.spec.credentials_secret_ref else {
        return Credentials::from_inline(&rc.spec);
    };
    let what = format!(
        "spec.credentialsSecretRef: Secret {}/{}",
        r.namespace, r.name
    );
    let secret = Api::<Secret>::namespaced(local.clone(), &r.namespace)
        .get_opt(&r.name)
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "{what}: the operator may not read it ({}); grant it `get` on this Secret by name with a Role (`kubectl hybridnet cluster connect` does)",
                s.message
            ),
            _ => format!("{what}: {}", with_causes(&e)),
        })?
        .ok_or_else(|| format!("{what} does not exist"))?;
    Credentials::from_secret_data(&secret.data.unwrap_or_default())
        .map_err(|e| format!("{what} {e}"))
}

/// A client for the remote API server of `rc`, with its credentials (inline or from the Secret,
/// read through the local client).
pub async fn remote_client(local: &Client, rc: &RemoteCluster) -> Result<Client, String> {
    remote_client_and_fingerprint(local, rc)
        .await
        .map(|(c, _)| c)
}

/// [`remote_client`], with a fingerprint of the endpoint and credentials it was built from (a
/// watch on the remote cluster starts again when they change: a rotated Secret).
async fn remote_client_and_fingerprint(
    local: &Client,
    rc: &RemoteCluster,
) -> Result<(Client, String), String> {
    let spec = &rc.spec;
    let endpoint =
        parse_api_endpoint(&spec.api_endpoint).map_err(|e| format!("spec.apiEndpoint: {e}"))?;
    let creds = credentials(local, rc).await?;
    let kubeconfig_json = creds.kubeconfig(&endpoint.to_string());
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        kubeconfig_json.to_string().hash(&mut h);
        spec.timeout.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    // Through kube's kubeconfig loader, which decodes and checks the PEM data.
    let kubeconfig: kube::config::Kubeconfig =
        serde_json::from_value(kubeconfig_json).map_err(|e| format!("credentials: {e}"))?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| format!("credentials: {e}"))?;
    let timeout = match spec.timeout {
        Some(t) if t > 0 => Duration::from_secs(t.unsigned_abs().into()),
        _ => DEFAULT_REQUEST_TIMEOUT,
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let client = Client::try_from(config).map_err(|e| format!("credentials: {e}"))?;
    Ok((client, fingerprint))
}

/// What the local cluster holds that the checks compare with.
pub struct Local {
    pub uuid: String,
    pub remote_clusters: Vec<RemoteCluster>,
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    pub remote_subnets: Vec<RemoteSubnet>,
}

/// An error with its causes (`client error (Connect): ... invalid peer certificate: UnknownIssuer`):
/// kube's own text names only the outermost one, which does not tell a refused connection from
/// a wrong CA.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn failed(what: &str, e: impl std::borrow::Borrow<kube::Error>) -> String {
    format!(
        "cannot read the remote cluster's {what}: {}",
        with_causes(e.borrow())
    )
}

/// What was read from a connected remote cluster (for the mirrors).
pub struct Remote {
    pub client: Client,
    /// Of the endpoint and credentials the client was built from.
    pub fingerprint: String,
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
}

/// Connects to `rc`'s cluster and runs the checks (the I/O half of
/// `status::remote_cluster_status`); with the remote client and lists when connected.
pub async fn connect(
    client: &Client,
    rc: &RemoteCluster,
    local: &Local,
) -> (Connection, Option<Remote>) {
    let (remote, fingerprint) = match remote_client_and_fingerprint(client, rc).await {
        Ok(c) => c,
        Err(e) => return (Connection::Invalid(e), None),
    };
    let uuid = match cluster_uuid(&remote).await {
        Ok(u) => u,
        Err(e) => return (Connection::Unreachable(with_causes(&e)), None),
    };
    if let Err(why) = claim_uuid(&rc.name_any(), &uuid, &local.uuid, &local.remote_clusters) {
        return (Connection::Refused { uuid, why }, None);
    }
    let healthz = match http::Request::get("/healthz").body(Vec::new()) {
        Ok(req) => remote.request_text(req).await.map_err(|e| with_causes(&e)),
        Err(e) => Err(e.to_string()),
    };
    let health = status::check_health(healthz.as_deref().map_err(String::clone));
    let bidirectional = match list_all(&Api::<RemoteCluster>::all(remote.clone())).await {
        Ok(l) => status::check_bidirectional(&local.uuid, &l),
        Err(e) => Err(failed("RemoteClusters", e)),
    };
    let networks = list_all(&Api::<Network>::all(remote.clone())).await;
    let overlay_net_id = match &networks {
        Ok(l) => status::check_overlay_net_id(&local.networks, l),
        Err(e) => Err(failed("Networks", e)),
    };
    let subnets = list_all(&Api::<Subnet>::all(remote.clone())).await;
    let subnet_non_cross = match &subnets {
        Ok(l) => {
            status::check_subnet_non_cross(&rc.name_any(), l, &local.subnets, &local.remote_subnets)
        }
        Err(e) => Err(failed("Subnets", e)),
    };
    let conn = Connection::Connected {
        uuid,
        checks: Checks {
            health,
            bidirectional,
            overlay_net_id,
            subnet_non_cross,
        },
    };
    let snapshot = match (networks, subnets) {
        (Ok(networks), Ok(subnets)) => Some(Remote {
            client: remote,
            fingerprint,
            networks,
            subnets,
        }),
        _ => None,
    };
    (conn, snapshot)
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Applies (server-side, as the operator) the mirrors `plan` names and stamps their
/// `status.lastModifyTime`; deletes the ones it says go.
async fn apply_plan<K>(
    api: &Api<K>,
    plan: &mirror::MirrorPlan,
    desired: &[K],
) -> Result<usize, String>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let pp = PatchParams::apply(field_manager::OPERATOR).force();
    let mut changed = 0;
    for name in &plan.apply {
        let Some(obj) = desired
            .iter()
            .find(|o| o.meta().name.as_deref() == Some(name))
        else {
            continue;
        };
        api.patch(name, &pp, &Patch::Apply(obj))
            .await
            .map_err(|e| format!("apply {name}: {}", with_causes(&e)))?;
        let stamp = json!({"status": {"lastModifyTime": now()}});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(stamp))
            .await
        {
            // Not fatal, as upstream: the mirror itself is right.
            warn!(mirror = %name, error = %e, "cannot stamp lastModifyTime");
        }
        changed += 1;
    }
    for name in &plan.delete {
        match api.delete(name, &Default::default()).await {
            Ok(_) => changed += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("delete {name}: {}", with_causes(&e))),
        }
    }
    Ok(changed)
}

/// Brings the mirrors of Ready cluster `rc` in line with what it holds.
async fn sync_mirrors(
    client: &Client,
    rc: &RemoteCluster,
    remote: &Remote,
    local_remote_subnets: &[RemoteSubnet],
    local_remote_vteps: &[RemoteVtep],
    cached: Option<&RemoteSnapshot>,
) -> Result<usize, String> {
    let (nodeinfos, ipinstances) = match cached {
        Some(c) => (c.nodeinfos.clone(), c.ipinstances.clone()),
        None => (
            list_all(&Api::<NodeInfo>::all(remote.client.clone()))
                .await
                .map_err(|e| failed("NodeInfos", e))?,
            list_all(&Api::<IPInstance>::all(remote.client.clone()))
                .await
                .map_err(|e| failed("IPInstances", e))?,
        ),
    };
    let cluster = rc.name_any();
    let subnets = mirror::desired_remote_subnets(rc, &remote.subnets, &remote.networks);
    let mirrored: Vec<Subnet> = remote
        .subnets
        .iter()
        .filter(|s| {
            let n = mirror::remote_subnet_name(&cluster, &s.name_any());
            subnets
                .iter()
                .any(|m| m.metadata.name.as_deref() == Some(n.as_str()))
        })
        .cloned()
        .collect();
    let vteps = mirror::desired_remote_vteps(rc, &nodeinfos, &ipinstances, &mirrored);
    let subnet_plan = plan_mirrors(
        &cluster,
        &subnet_mirrors(&subnets),
        &subnet_mirrors(local_remote_subnets),
    );
    let vtep_plan = plan_mirrors(
        &cluster,
        &vtep_mirrors(&vteps),
        &vtep_mirrors(local_remote_vteps),
    );
    let mut changed = apply_plan(
        &Api::<RemoteSubnet>::all(client.clone()),
        &subnet_plan,
        &subnets,
    )
    .await?;
    changed += apply_plan(&Api::<RemoteVtep>::all(client.clone()), &vtep_plan, &vteps).await?;
    Ok(changed)
}

/// Exports the global Services of Ready cluster `rc`: the EndpointSlices of its Services
/// annotated `networking.alibaba.com/global-service` become RemoteEndpointSlices here
/// (`<cluster>.<namespace>.<slice>`); the ones it no longer has go.
async fn export_global_services(
    client: &Client,
    rc: &RemoteCluster,
    remote: &Remote,
    local_slices: &[RemoteEndpointSlice],
    cached: Option<&RemoteSnapshot>,
) -> Result<usize, String> {
    if let Some((services, slices)) = cached.and_then(|c| c.services.as_ref()) {
        return export_from(client, rc, services, slices, local_slices).await;
    }
    let lists = async {
        Ok::<_, kube::Error>((
            list_all(&Api::<Service>::all(remote.client.clone())).await?,
            list_all(&Api::<EndpointSlice>::all(remote.client.clone())).await?,
        ))
    };
    let (services, slices) = match lists.await {
        Ok(l) => l,
        // The remote identity may not read them: that cluster exports no global service (a
        // least-privileged identity for the mirrors only; docs/multicluster.md).
        Err(kube::Error::Api(s)) if s.code == 403 => {
            tracing::debug!(remote_cluster = %rc.name_any(), reason = %s.message, "remote Services or EndpointSlices not readable: no global services exported");
            return Ok(0);
        }
        Err(e) => return Err(failed("Services and EndpointSlices", e)),
    };
    export_from(client, rc, &services, &slices, local_slices).await
}

async fn export_from(
    client: &Client,
    rc: &RemoteCluster,
    services: &[Service],
    slices: &[EndpointSlice],
    local_slices: &[RemoteEndpointSlice],
) -> Result<usize, String> {
    let desired = global_service::desired_remote_endpoint_slices(rc, services, slices);
    let plan = mirror::plan_mirrors_labelled(
        label::REMOTE_CLUSTER,
        &rc.name_any(),
        &remote_slice_mirrors(&desired),
        &remote_slice_mirrors(local_slices),
    );
    apply_plan(
        &Api::<RemoteEndpointSlice>::all(client.clone()),
        &plan,
        &desired,
    )
    .await
}

/// Why the import did not (all) happen.
#[derive(Debug)]
pub enum ImportError {
    /// The operator may not read Services or write EndpointSlices: the opt-in grant
    /// (`deploy/global-services/`) is not applied.
    Forbidden(String),
    Failed(String),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Forbidden(m) | ImportError::Failed(m) => f.write_str(m),
        }
    }
}

impl ImportError {
    fn of(what: String, e: &kube::Error) -> Self {
        let m = format!("{what}: {}", with_causes(e));
        match e {
            kube::Error::Api(s) if s.code == 403 => ImportError::Forbidden(m),
            _ => ImportError::Failed(m),
        }
    }
}

/// Imports: each local Service annotated `networking.alibaba.com/global-service` gets an
/// EndpointSlice per RemoteEndpointSlice of its namespace and name; the slices hybridnet wrote
/// that no longer belong go. Applied without `force`: a slice of that name that another field
/// manager owns is reported, never taken over.
pub async fn import_global_services(client: &Client) -> Result<usize, ImportError> {
    let remote = list_or_none::<RemoteEndpointSlice>(client)
        .await
        .map_err(|e| ImportError::of("cannot list RemoteEndpointSlices".into(), &e))?;
    let slices = Api::<EndpointSlice>::all(client.clone());
    let selector = format!(
        "{}={}",
        global_service::LABEL_MANAGED_BY,
        global_service::MANAGED_BY
    );
    let existing = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ImportError::of(format!("cannot list EndpointSlices ({selector})"), &e))?
        .items;
    if remote.is_empty() && existing.is_empty() {
        // Nothing imported and nothing to import: no need to read every Service.
        return Ok(0);
    }
    let services = list_all(&Api::<Service>::all(client.clone()))
        .await
        .map_err(|e| ImportError::of("cannot list Services".into(), &e))?;
    let plan = plan_import(&services, &remote, &existing);
    let pp = PatchParams::apply(field_manager::OPERATOR);
    let mut changed = 0;
    let mut problems = Vec::new();
    for slice in &plan.apply {
        let (Some(ns), Some(name)) = (
            slice.metadata.namespace.as_deref(),
            slice.metadata.name.as_deref(),
        ) else {
            continue;
        };
        match Api::<EndpointSlice>::namespaced(client.clone(), ns)
            .patch(name, &pp, &Patch::Apply(slice))
            .await
        {
            Ok(_) => changed += 1,
            Err(e) => problems.push(ImportError::of(
                format!("apply EndpointSlice {ns}/{name}"),
                &e,
            )),
        }
    }
    for (ns, name) in &plan.delete {
        match Api::<EndpointSlice>::namespaced(client.clone(), ns)
            .delete(name, &Default::default())
            .await
        {
            Ok(_) => changed += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => problems.push(ImportError::of(
                format!("delete EndpointSlice {ns}/{name}"),
                &e,
            )),
        }
    }
    if problems.is_empty() {
        return Ok(changed);
    }
    let text = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems
        .iter()
        .all(|p| matches!(p, ImportError::Forbidden(_)))
    {
        Err(ImportError::Forbidden(text))
    } else {
        Err(ImportError::Failed(text))
    }
}

/// Upstream's finalizer (`multicluster.alibaba.com/manager-runtime-registered`, upstream
/// pkg/controllers/multicluster/remotecluster_controller.go): on every RemoteCluster the operator
/// runs, as upstream's manager puts it; taken off only after the cluster's mirrors are deleted. A
/// RemoteCluster an upstream manager left with it is deleted the same way, never left hanging.
fn has_runtime_finalizer(rc: &RemoteCluster) -> bool {
    rc.finalizers()
        .iter()
        .any(|f| f == finalizer::MANAGER_RUNTIME_REGISTERED)
}

async fn add_runtime_finalizer(api: &Api<RemoteCluster>, rc: &RemoteCluster) -> Result<(), String> {
    let patch = add_named_finalizer_patch(
        rc.metadata.finalizers.as_ref(),
        rc.metadata.resource_version.as_deref().unwrap_or_default(),
        finalizer::MANAGER_RUNTIME_REGISTERED,
    );
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|e| e.to_string())?;
    match api
        .patch(
            &rc.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        // 422: changed under us (the test of the resourceVersion failed); the next pass retries.
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => Ok(()),
        Err(e) => Err(with_causes(&e)),
    }
}

/// Deletes every mirror of cluster `rc` (RemoteSubnets, RemoteVteps, RemoteEndpointSlices), then
/// removes the finalizer.
async fn release(client: &Client, rc: &RemoteCluster) -> Result<(), String> {
    let name = rc.name_any();
    delete_labelled::<RemoteSubnet>(client, label::CLUSTER, &name).await?;
    delete_labelled::<RemoteVtep>(client, label::CLUSTER, &name).await?;
    delete_labelled::<RemoteEndpointSlice>(client, label::REMOTE_CLUSTER, &name).await?;
    let Some(patch) = remove_named_finalizer_patch(
        rc.metadata.finalizers.as_ref(),
        finalizer::MANAGER_RUNTIME_REGISTERED,
    ) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|e| e.to_string())?;
    match Api::<RemoteCluster>::all(client.clone())
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => Ok(()),
        Err(e) => Err(format!("remove the finalizer: {}", with_causes(&e))),
    }
}

/// With the MultiCluster feature off nothing runs the RemoteClusters, yet one being deleted with
/// the finalizer (put on while the feature was on, or by upstream's manager) is still let go: its
/// mirrors are deleted and the finalizer removed, so it never hangs in Terminating.
pub async fn release_terminating(client: &Client) {
    let rcs = match list_or_none::<RemoteCluster>(client).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list RemoteClusters");
            return;
        }
    };
    for rc in rcs
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_some() && has_runtime_finalizer(r))
    {
        match release(client, rc).await {
            Ok(()) => {
                info!(remote_cluster = %rc.name_any(), "remote cluster deleted: its mirrors are gone, finalizer removed")
            }
            Err(e) => {
                warn!(remote_cluster = %rc.name_any(), error = %e, "cannot finish the remote cluster's deletion")
            }
        }
    }
}

/// Deletes the objects of kind `K` labelled `key=value` (none when the CRD is not installed).
async fn delete_labelled<K>(client: &Client, key: &str, value: &str) -> Result<(), String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let items = match api
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await
    {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(format!("list {}: {}", K::kind(&()), with_causes(&e))),
    };
    for o in items {
        let n = o.meta().name.clone().unwrap_or_default();
        match api.delete(&n, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("delete {} {n}: {}", K::kind(&()), with_causes(&e))),
        }
    }
    Ok(())
}

/// Deletes mirrors whose RemoteCluster is gone or being deleted.
async fn delete_orphans(
    client: &Client,
    remote_clusters: &[RemoteCluster],
    remote_subnets: &[RemoteSubnet],
    remote_vteps: &[RemoteVtep],
    remote_slices: &[RemoteEndpointSlice],
) {
    let live: BTreeSet<String> = remote_clusters
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .map(|r| r.name_any())
        .collect();
    let live: BTreeSet<&str> = live.iter().map(String::as_str).collect();
    let subnet_metas: Vec<_> = remote_subnets.iter().map(|r| &r.metadata).collect();
    for name in mirror::orphans(&subnet_metas, &live) {
        if let Err(e) = Api::<RemoteSubnet>::all(client.clone())
            .delete(&name, &Default::default())
            .await
        {
            warn!(mirror = %name, error = %e, "cannot delete an orphaned RemoteSubnet");
        }
    }
    let vtep_metas: Vec<_> = remote_vteps.iter().map(|r| &r.metadata).collect();
    for name in mirror::orphans(&vtep_metas, &live) {
        if let Err(e) = Api::<RemoteVtep>::all(client.clone())
            .delete(&name, &Default::default())
            .await
        {
            warn!(mirror = %name, error = %e, "cannot delete an orphaned RemoteVtep");
        }
    }
    let slice_metas: Vec<_> = remote_slices.iter().map(|r| &r.metadata).collect();
    for name in mirror::orphans_labelled(label::REMOTE_CLUSTER, &slice_metas, &live) {
        if let Err(e) = Api::<RemoteEndpointSlice>::all(client.clone())
            .delete(&name, &Default::default())
            .await
        {
            warn!(mirror = %name, error = %e, "cannot delete an orphaned RemoteEndpointSlice");
        }
    }
}

/// One pass over every RemoteCluster: the number of statuses written. Nothing to do (and no
/// error) when the RemoteCluster CRD is not installed or there is none.
pub async fn pass(
    client: &Client,
    metrics: &Metrics,
    watches: &mut RemoteWatches,
) -> Result<usize, kube::Error> {
    watches.watch_local(client);
    let remote_clusters = list_or_none::<RemoteCluster>(client).await?;
    // Watches of clusters that are gone or going stop; the others keep theirs while they
    // reconnect (the watch retries and wakes the pass when the cluster answers again).
    watches.retain(
        &remote_clusters
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| r.name_any())
            .collect(),
    );
    metrics.retain_remote_clusters(&remote_clusters.iter().map(|r| r.name_any()).collect());
    let remote_subnets = list_or_none::<RemoteSubnet>(client).await?;
    let remote_vteps = list_or_none::<RemoteVtep>(client).await?;
    let remote_slices = list_or_none::<RemoteEndpointSlice>(client).await?;
    delete_orphans(
        client,
        &remote_clusters,
        &remote_subnets,
        &remote_vteps,
        &remote_slices,
    )
    .await;
    if remote_clusters.is_empty() {
        import(client).await;
        return Ok(0);
    }
    let mut local = Local {
        uuid: cluster_uuid(client).await?,
        networks: list_all(&Api::<Network>::all(client.clone())).await?,
        subnets: list_all(&Api::<Subnet>::all(client.clone())).await?,
        remote_subnets,
        remote_clusters,
    };
    let api = Api::<RemoteCluster>::all(client.clone());
    let mut written = 0;
    for i in 0..local.remote_clusters.len() {
        let rc = &local.remote_clusters[i];
        if rc.metadata.deletion_timestamp.is_some() {
            if has_runtime_finalizer(rc) {
                match release(client, rc).await {
                    Ok(()) => {
                        info!(remote_cluster = %rc.name_any(), "remote cluster deleted: its mirrors are gone, finalizer removed")
                    }
                    Err(e) => {
                        warn!(remote_cluster = %rc.name_any(), error = %e, "cannot finish the remote cluster's deletion")
                    }
                }
            }
            continue;
        }
        if !has_runtime_finalizer(rc)
            && let Err(e) = add_runtime_finalizer(&api, rc).await
        {
            warn!(remote_cluster = %rc.name_any(), error = %e, "cannot put the finalizer on the remote cluster");
        }
        let started = std::time::Instant::now();
        let (conn, remote) = connect(client, rc, &local).await;
        metrics.record_remote_cluster_check(&rc.name_any(), started.elapsed().as_secs_f64());
        let new = status::remote_cluster_status(rc, &conn, &now());
        let stores = remote
            .as_ref()
            .map(|r| watches.ensure(rc, &r.client, &r.fingerprint));
        if let (Some(remote), Some(ClusterState::Ready)) = (
            remote.as_ref(),
            new.state.as_deref().map(ClusterState::parse),
        ) {
            let cached = stores.as_ref().and_then(|s| s.snapshot());
            match sync_mirrors(
                client,
                rc,
                remote,
                &local.remote_subnets,
                &remote_vteps,
                cached.as_ref(),
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => info!(remote_cluster = %rc.name_any(), changed = n, "mirrors updated"),
                Err(e) => {
                    warn!(remote_cluster = %rc.name_any(), error = %e, "cannot update the mirrors")
                }
            }
            match export_global_services(client, rc, remote, &remote_slices, cached.as_ref()).await
            {
                Ok(0) => {}
                Ok(n) => {
                    info!(remote_cluster = %rc.name_any(), changed = n, "remote endpoint slices updated")
                }
                Err(e) => {
                    warn!(remote_cluster = %rc.name_any(), error = %e, "cannot export the remote cluster's global services")
                }
            }
        }
        if rc.status.as_ref() == Some(&new) {
            continue;
        }
        let state = new.state.clone().unwrap_or_default();
        match api
            .patch_status(
                &rc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": new })),
            )
            .await
        {
            Ok(_) => {
                written += 1;
                info!(remote_cluster = %rc.name_any(), state = %state, "remote cluster status changed");
                // The next RemoteCluster of this pass sees the identity this one claimed (two
                // RemoteClusters for one remote cluster: the first keeps it).
                local.remote_clusters[i].status = Some(new);
            }
            Err(e) => {
                warn!(remote_cluster = %rc.name_any(), error = %e, "cannot write the remote cluster status")
            }
        }
    }
    import(client).await;
    Ok(written)
}

/// [`import_global_services`], logged. Without the opt-in grant (`deploy/global-services/`) the
/// operator may not read Services or write EndpointSlices: said once, then at debug level.
async fn import(client: &Client) {
    static FORBIDDEN_SAID: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    match import_global_services(client).await {
        Ok(0) => {}
        Ok(n) => info!(changed = n, "endpoint slices of global services updated"),
        Err(ImportError::Forbidden(e)) => {
            if FORBIDDEN_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(error = %e, "global services not imported");
            } else {
                warn!(error = %e, "global services are not imported: the operator may not read Services or write EndpointSlices; apply deploy/global-services/ to allow it (docs/multicluster.md)");
            }
        }
        Err(e) => warn!(error = %e, "cannot import the global services' endpoints"),
    }
}

//! Typed API access used by the commands, each failure described for the user.

use hybridnet_api::operator::{CLUSTER_SINGLETON_NAME, HybridnetCluster};
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use kubectl_hybridnet::cli::ListFlags;

use super::connect::{Ctx, Failure, INSTALL_HINT, Res};

pub const NETWORKS_CRD: &str = "networks.networking.alibaba.com";
pub const SUBNETS_CRD: &str = "subnets.networking.alibaba.com";
pub const IPINSTANCES_CRD: &str = "ipinstances.networking.alibaba.com";
pub const NODEINFO_CRD: &str = "nodeinfoes.networking.alibaba.com";
pub const CLUSTERS_CRD: &str = "hybridnetclusters.operator.hybridnet.io";
pub const REMOTE_CLUSTERS_CRD: &str = "remoteclusters.multicluster.alibaba.com";

/// Whether a 404 means the resource type is missing (not just the object).
pub fn is_missing_type(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && s.details.as_ref().is_none_or(|d| d.name.is_empty())
        && !s.message.contains("\" not found"))
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// How a list is requested: a label selector for the API server, and the page size.
#[derive(Debug, Clone)]
pub struct Listing {
    pub selector: Option<String>,
    /// Objects per request (the API's `limit`, then `continue`); 0 asks for all at once.
    pub chunk_size: u32,
}

/// kubectl's default page size (`kubectl get --chunk-size`).
pub const DEFAULT_CHUNK_SIZE: u32 = 500;

impl Default for Listing {
    fn default() -> Self {
        Self {
            selector: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl Listing {
    pub fn of(flags: &ListFlags) -> Self {
        Self {
            selector: flags.selector.clone().filter(|s| !s.is_empty()),
            chunk_size: flags.chunk_size,
        }
    }
}

async fn list_api<K>(ctx: &Ctx, api: Api<K>, what: &str, crd: Option<&str>) -> Res<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    list_paged(ctx, api, what, crd, &Listing::default()).await
}

/// Lists every object the selector matches, page by page.
async fn list_paged<K>(
    ctx: &Ctx,
    api: Api<K>,
    what: &str,
    crd: Option<&str>,
    listing: &Listing,
) -> Res<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut lp = ListParams::default();
    if let Some(s) = &listing.selector {
        lp = lp.labels(s);
    }
    if listing.chunk_size > 0 {
        lp = lp.limit(listing.chunk_size);
    }
    let mut items = Vec::new();
    loop {
        match api.list(&lp).await {
            Ok(l) => {
                items.extend(l.items);
                match l.metadata.continue_ {
                    Some(c) if !c.is_empty() => lp.continue_token = Some(c),
                    _ => return Ok(items),
                }
            }
            Err(e) if crd.is_some() && is_missing_type(&e) => {
                return Err(Failure::error(format!(
                    "{what}: the {} CRD is not installed in this cluster; {INSTALL_HINT}",
                    crd.unwrap_or_default()
                )));
            }
            Err(kube::Error::Api(s)) if s.code == 410 && lp.continue_token.is_some() => {
                return Err(Failure::error(format!(
                    "{what}: the list changed too much while it was read in pages of {} ({}): run it again, or list in one request with --chunk-size 0",
                    listing.chunk_size,
                    s.message.trim()
                )));
            }
            Err(e) => return Err(ctx.fail(e, what, crd)),
        }
    }
}

pub async fn networks(ctx: &Ctx) -> Res<Vec<Network>> {
    list_api(
        ctx,
        Api::all(ctx.client.clone()),
        "list networks",
        Some(NETWORKS_CRD),
    )
    .await
}

/// Networks as `network ls` asks for them (`-l`, `--chunk-size`).
pub async fn networks_listed(ctx: &Ctx, listing: &Listing) -> Res<Vec<Network>> {
    list_paged(
        ctx,
        Api::all(ctx.client.clone()),
        "list networks",
        Some(NETWORKS_CRD),
        listing,
    )
    .await
}

/// Every object of a cluster-scoped kind matching `listing` (no CRD hint).
pub async fn list_listed<K>(ctx: &Ctx, what: &str, listing: &Listing) -> Res<Vec<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    list_paged(ctx, Api::all(ctx.client.clone()), what, None, listing).await
}

/// RemoteClusters as `cluster ls` asks for them (`-l`, `--chunk-size`).
pub async fn remote_clusters_listed(
    ctx: &Ctx,
    listing: &Listing,
) -> Res<Vec<hybridnet_api::multicluster::RemoteCluster>> {
    list_paged(
        ctx,
        Api::all(ctx.client.clone()),
        "list remote clusters",
        Some(REMOTE_CLUSTERS_CRD),
        listing,
    )
    .await
}

/// Subnets as `subnet ls` asks for them (`-l`, `--chunk-size`).
pub async fn subnets_listed(ctx: &Ctx, listing: &Listing) -> Res<Vec<Subnet>> {
    list_paged(
        ctx,
        Api::all(ctx.client.clone()),
        "list subnets",
        Some(SUBNETS_CRD),
        listing,
    )
    .await
}

pub async fn subnets(ctx: &Ctx) -> Res<Vec<Subnet>> {
    list_api(
        ctx,
        Api::all(ctx.client.clone()),
        "list subnets",
        Some(SUBNETS_CRD),
    )
    .await
}

pub async fn nodeinfos(ctx: &Ctx) -> Res<Vec<NodeInfo>> {
    list_api(
        ctx,
        Api::all(ctx.client.clone()),
        "list nodeinfoes",
        Some(NODEINFO_CRD),
    )
    .await
}

pub async fn namespaces(ctx: &Ctx) -> Res<Vec<Namespace>> {
    list_api(ctx, Api::all(ctx.client.clone()), "list namespaces", None).await
}

pub async fn network_policies(ctx: &Ctx) -> Res<Vec<NetworkPolicy>> {
    list_api(
        ctx,
        Api::all(ctx.client.clone()),
        "list networkpolicies",
        None,
    )
    .await
}

pub async fn nodes(ctx: &Ctx) -> Res<Vec<Node>> {
    list_api(ctx, Api::all(ctx.client.clone()), "list nodes", None).await
}

/// Namespaced lists in the scope of `-n`/`-A` (`all` forces every namespace).
pub fn scoped<K>(ctx: &Ctx, all: bool) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    if all {
        Api::all(ctx.client.clone())
    } else {
        Api::namespaced(ctx.client.clone(), &ctx.namespace)
    }
}

pub async fn ipinstances(ctx: &Ctx, all: bool) -> Res<Vec<IPInstance>> {
    list_api(
        ctx,
        scoped(ctx, all),
        "list ipinstances",
        Some(IPINSTANCES_CRD),
    )
    .await
}

/// IPInstances as `ip ls` asks for them (`-l`, `--chunk-size`), in the scope of `-n`/`-A`.
pub async fn ipinstances_listed(ctx: &Ctx, all: bool, listing: &Listing) -> Res<Vec<IPInstance>> {
    list_paged(
        ctx,
        scoped(ctx, all),
        "list ipinstances",
        Some(IPINSTANCES_CRD),
        listing,
    )
    .await
}

pub async fn pods(ctx: &Ctx, all: bool) -> Res<Vec<Pod>> {
    list_api(ctx, scoped(ctx, all), "list pods", None).await
}

pub async fn statefulsets(ctx: &Ctx, all: bool) -> Res<Vec<StatefulSet>> {
    list_api(ctx, scoped(ctx, all), "list statefulsets", None).await
}

/// Gets one cluster-scoped hybridnet object; a missing object says how to list them.
pub async fn get_cluster_scoped<K>(ctx: &Ctx, name: &str, kind: &str, crd: &str) -> Res<K>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    kubectl_hybridnet::manifest::validate_object_name(kind, name).map_err(Failure::usage)?;
    let api: Api<K> = Api::all(ctx.client.clone());
    match api.get(name).await {
        Ok(o) => Ok(o),
        Err(e) if is_missing_type(&e) => Err(Failure::error(format!(
            "get {kind} {name}: the {crd} CRD is not installed in this cluster; {INSTALL_HINT}"
        ))),
        Err(e) if is_not_found(&e) => Err(Failure::error(format!(
            "{kind} {name:?} not found (`kubectl hybridnet {kind} ls` lists them)"
        ))),
        Err(e) => Err(ctx.fail(e, &format!("get {kind} {name}"), Some(crd))),
    }
}

/// The HybridnetCluster `default`: `Ok(None)` if it (or its CRD) does not exist, with the reason.
pub async fn cluster(ctx: &Ctx) -> Res<Result<HybridnetCluster, String>> {
    let api: Api<HybridnetCluster> = Api::all(ctx.client.clone());
    match api.get(CLUSTER_SINGLETON_NAME).await {
        Ok(c) => Ok(Ok(c)),
        Err(e) if is_missing_type(&e) => Ok(Err(format!(
            "the {CLUSTERS_CRD} CRD is not installed: the hybridnet operator is not installed"
        ))),
        Err(e) if is_not_found(&e) => Ok(Err(
            "no HybridnetCluster \"default\" (run `kubectl hybridnet install`)".to_string(),
        )),
        Err(e) => Err(ctx.fail(e, "get hybridnetcluster default", Some(CLUSTERS_CRD))),
    }
}

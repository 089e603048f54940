//! RemoteCluster status (docs/multicluster.md): on a timer, for every RemoteCluster, build a client
//! to the remote API server from the spec, read the remote cluster's identity (its `kube-system`
//! Namespace UID), run upstream's four checks and write the status the pure
//! `hybridnet_api::multicluster::status` computes from what was found. Written only when it
//! changed. Nothing else is done with the connection yet (no mirrors, no data plane).

use std::time::Duration;

use hybridnet_api::multicluster::status::{self, Checks, Connection};
use hybridnet_api::multicluster::validate::{claim_uuid, parse_api_endpoint};
use hybridnet_api::multicluster::{RemoteCluster, RemoteSubnet};
use hybridnet_api::v1::{Network, Subnet};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

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

fn b64(data: &Option<ByteString>) -> Option<serde_json::Value> {
    data.as_ref()
        .filter(|b| !b.0.is_empty())
        .and_then(|b| serde_json::to_value(b).ok())
}

/// A client for the remote API server of `rc`, from its inline credentials. The Secret reference
/// is not read yet (the operator holds no grant to read Secrets by arbitrary name).
pub async fn remote_client(rc: &RemoteCluster) -> Result<Client, String> {
    let spec = &rc.spec;
    let endpoint =
        parse_api_endpoint(&spec.api_endpoint).map_err(|e| format!("spec.apiEndpoint: {e}"))?;
    if spec.credentials_secret_ref.is_some() {
        return Err(
            "spec.credentialsSecretRef: credentials from a Secret are not read yet (docs/multicluster.md); give caData, certData and keyData"
                .into(),
        );
    }
    let (Some(ca), Some(cert), Some(key)) = (
        b64(&spec.ca_data),
        b64(&spec.cert_data),
        b64(&spec.key_data),
    ) else {
        return Err("spec: caData, certData and keyData are all needed".into());
    };
    // Through kube's kubeconfig loader, which decodes and checks the PEM data.
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "remote", "cluster": {
            "server": endpoint.to_string(), "certificate-authority-data": ca}}],
        "users": [{"name": "remote", "user": {
            "client-certificate-data": cert, "client-key-data": key}}],
        "contexts": [{"name": "remote", "context": {"cluster": "remote", "user": "remote"}}],
        "current-context": "remote"
    });
    let kubeconfig: kube::config::Kubeconfig =
        serde_json::from_value(kubeconfig).map_err(|e| format!("credentials: {e}"))?;
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
    Client::try_from(config).map_err(|e| format!("credentials: {e}"))
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

fn failed(what: &str, e: kube::Error) -> String {
    format!(
        "cannot read the remote cluster's {what}: {}",
        with_causes(&e)
    )
}

/// Connects to `rc`'s cluster and runs the checks (the I/O half of
/// `status::remote_cluster_status`).
pub async fn connect(rc: &RemoteCluster, local: &Local) -> Connection {
    let remote = match remote_client(rc).await {
        Ok(c) => c,
        Err(e) => return Connection::Invalid(e),
    };
    let uuid = match cluster_uuid(&remote).await {
        Ok(u) => u,
        Err(e) => return Connection::Unreachable(with_causes(&e)),
    };
    if let Err(why) = claim_uuid(&rc.name_any(), &uuid, &local.uuid, &local.remote_clusters) {
        return Connection::Refused { uuid, why };
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
    let overlay_net_id = match list_all(&Api::<Network>::all(remote.clone())).await {
        Ok(l) => status::check_overlay_net_id(&local.networks, &l),
        Err(e) => Err(failed("Networks", e)),
    };
    let subnet_non_cross = match list_all(&Api::<Subnet>::all(remote.clone())).await {
        Ok(l) => status::check_subnet_non_cross(
            &rc.name_any(),
            &l,
            &local.subnets,
            &local.remote_subnets,
        ),
        Err(e) => Err(failed("Subnets", e)),
    };
    Connection::Connected {
        uuid,
        checks: Checks {
            health,
            bidirectional,
            overlay_net_id,
            subnet_non_cross,
        },
    }
}

/// One pass over every RemoteCluster: the number of statuses written. Nothing to do (and no
/// error) when the RemoteCluster CRD is not installed or there is none.
pub async fn pass(client: &Client) -> Result<usize, kube::Error> {
    let remote_clusters = list_or_none::<RemoteCluster>(client).await?;
    if remote_clusters.is_empty() {
        return Ok(0);
    }
    let mut local = Local {
        uuid: cluster_uuid(client).await?,
        networks: list_all(&Api::<Network>::all(client.clone())).await?,
        subnets: list_all(&Api::<Subnet>::all(client.clone())).await?,
        remote_subnets: list_or_none::<RemoteSubnet>(client).await?,
        remote_clusters,
    };
    let api = Api::<RemoteCluster>::all(client.clone());
    let mut written = 0;
    for i in 0..local.remote_clusters.len() {
        let rc = &local.remote_clusters[i];
        if rc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let conn = connect(rc, &local).await;
        let new =
            status::remote_cluster_status(rc, &conn, &Time(k8s_openapi::jiff::Timestamp::now()));
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
    Ok(written)
}

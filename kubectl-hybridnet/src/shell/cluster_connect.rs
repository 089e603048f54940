//! `cluster connect|disconnect`: the I/O around `kubectl_hybridnet::cluster_connect`.

use std::path::{Path, PathBuf};

use hybridnet_api::constants::field_manager;
use hybridnet_api::multicluster::RemoteCluster;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use kubectl_hybridnet::cli::{ClusterConnectArgs, ClusterDisconnectArgs, DryRun, GlobalFlags};
use kubectl_hybridnet::cluster_connect::{
    self as plan, ConnectSide, PeerAccess, access_objects_of, made_by_connect, peer_of,
};

use super::connect::{Ctx, Failure, Res, exit};
use super::io::REMOTE_CLUSTERS_CRD;

/// A kubeconfig as read, with the directory its relative file names are relative to.
struct LoadedKubeconfig {
    config: Kubeconfig,
    dir: PathBuf,
    source: String,
}

fn load_kubeconfig(path: Option<&Path>) -> Res<LoadedKubeconfig> {
    match path {
        Some(p) => Ok(LoadedKubeconfig {
            config: Kubeconfig::read_from(p).map_err(|e| {
                Failure::error(format!("cannot read the kubeconfig {}: {e}", p.display()))
            })?,
            dir: p.parent().map(Path::to_path_buf).unwrap_or_default(),
            source: p.display().to_string(),
        }),
        None => Ok(LoadedKubeconfig {
            config: Kubeconfig::read().map_err(|e| {
                Failure::error(format!(
                    "connect needs the kubeconfig of both clusters ($KUBECONFIG or ~/.kube/config, or --kubeconfig): {e}"
                ))
            })?,
            dir: std::env::current_dir().unwrap_or_default(),
            source: "$KUBECONFIG or ~/.kube/config".into(),
        }),
    }
}

impl LoadedKubeconfig {
    fn access(&self, context: &str) -> Res<PeerAccess> {
        let read = |p: &str| -> Result<Vec<u8>, String> {
            let path = self.dir.join(p);
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        plan::peer_access(&self.config, context, &read)
            .map_err(|e| Failure::error(format!("{}: {e}", self.source)))
    }
}

/// The global flags that reach the other cluster: its kubeconfig and context, nothing of this
/// cluster's identity flags (`--token`, `--as`), the same request timeout.
fn remote_flags(g: &GlobalFlags, kubeconfig: Option<&PathBuf>, context: &str) -> GlobalFlags {
    GlobalFlags {
        kubeconfig: kubeconfig.cloned().or_else(|| g.kubeconfig.clone()),
        context: Some(context.to_string()),
        cluster: None,
        user: None,
        token: None,
        as_user: None,
        as_group: Vec::new(),
        namespace: None,
        all_namespaces: false,
        request_timeout: g.request_timeout,
    }
}

async fn cluster_uid(ctx: &Ctx, label: &str) -> Res<String> {
    Api::<Namespace>::all(ctx.client.clone())
        .get("kube-system")
        .await
        .map_err(|e| ctx.fail(e, &format!("read {label}'s kube-system namespace"), None))?
        .uid()
        .ok_or_else(|| Failure::error(format!("{label}: kube-system has no uid")))
}

async fn apply_namespaced<K>(ctx: &Ctx, obj: &K, what: &str) -> Res<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply(field_manager::KUBECTL_PLUGIN),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|e| ctx.fail(e, &format!("apply {what} {ns}/{name}"), None))?;
    Ok(())
}

async fn apply_side(ctx: &Ctx, label: &str, side: &ConnectSide) -> Res<()> {
    let ns = side.secret.metadata.namespace.clone().unwrap_or_default();
    match Api::<Namespace>::all(ctx.client.clone()).get_opt(&ns).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Failure::error(format!(
                "{label}: namespace {ns:?} does not exist: is the hybridnet operator installed there? (--operator-namespace names its namespace)"
            )));
        }
        Err(e) => return Err(ctx.fail(e, &format!("read {label}'s namespace {ns}"), None)),
    }
    apply_namespaced(ctx, &side.secret, "Secret").await?;
    apply_namespaced(ctx, &side.role, "Role").await?;
    apply_namespaced(ctx, &side.role_binding, "RoleBinding").await?;
    let rc = &side.remote_cluster;
    let name = rc.name_any();
    Api::<RemoteCluster>::all(ctx.client.clone())
        .patch(
            &name,
            &PatchParams::apply(field_manager::KUBECTL_PLUGIN),
            &Patch::Apply(rc),
        )
        .await
        .map_err(|e| {
            ctx.fail(
                e,
                &format!("apply remote cluster {name}"),
                Some(REMOTE_CLUSTERS_CRD),
            )
        })?;
    println!("{label}: remotecluster.multicluster.alibaba.com/{name} serverside-applied");
    Ok(())
}

pub async fn connect(g: &GlobalFlags, a: &ClusterConnectArgs) -> Res<i32> {
    let here = load_kubeconfig(g.kubeconfig.as_deref())?;
    let local_context = g
        .context
        .clone()
        .or_else(|| here.config.current_context.clone())
        .ok_or_else(|| {
            Failure::usage("this cluster's kubeconfig has no current context: give --context")
        })?;
    if a.remote_context == local_context && a.remote_kubeconfig.is_none() {
        return Err(Failure::usage(format!(
            "--remote-context {:?} is this cluster's own context; name the other cluster's",
            a.remote_context
        )));
    }
    let there = match &a.remote_kubeconfig {
        Some(p) => load_kubeconfig(Some(p))?,
        None => load_kubeconfig(g.kubeconfig.as_deref())?,
    };
    let name = a.name.clone().unwrap_or_else(|| a.remote_context.clone());
    let remote_name = a
        .remote_name
        .clone()
        .unwrap_or_else(|| local_context.clone());
    let usage = |e: String| {
        Failure::usage(format!(
            "{e} (a RemoteCluster name is a DNS-1123 label; give --name / --remote-name)"
        ))
    };
    let to_remote = there.access(&a.remote_context)?;
    let to_local = here.access(&local_context)?;
    let side_here = plan::connect_side(
        &name,
        &remote_name,
        &to_remote,
        &a.operator_namespace,
        a.timeout,
    )
    .map_err(usage)?;
    let side_there = plan::connect_side(
        &remote_name,
        &name,
        &to_local,
        &a.operator_namespace,
        a.timeout,
    )
    .map_err(usage)?;
    let label_here = format!("context {local_context}");
    let label_there = format!("context {}", a.remote_context);
    if a.dry_run != DryRun::None {
        print!("{}", plan::side_text(&label_here, &side_here));
        print!("{}", plan::side_text(&label_there, &side_there));
        return Ok(exit::OK);
    }
    let local = Ctx::connect(g).await?;
    let remote = Ctx::connect(&remote_flags(
        g,
        a.remote_kubeconfig.as_ref(),
        &a.remote_context,
    ))
    .await?;
    if cluster_uid(&local, &label_here).await? == cluster_uid(&remote, &label_there).await? {
        return Err(Failure::usage(format!(
            "{label_here} and {label_there} reach the same cluster (one kube-system UID); connect two different clusters"
        )));
    }
    apply_side(&local, &label_here, &side_here).await?;
    apply_side(&remote, &label_there, &side_there).await?;
    println!(
        "The operators check each other every 30 s; `kubectl hybridnet cluster status {name}` shows the result."
    );
    Ok(exit::OK)
}

async fn delete_namespaced<K>(ctx: &Ctx, ns: &str, name: &str, what: &str) -> Res<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(ctx.client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if super::io::is_not_found(&e) => Ok(()),
        Err(e) => Err(ctx.fail(e, &format!("delete {what} {ns}/{name}"), None)),
    }
}

/// Deletes `rc` in the cluster of `ctx`, then the Secret, Role and RoleBinding `connect` made
/// for it (a Secret without `connect`'s labels stays, and so do its Role and RoleBinding).
async fn remove_side(ctx: &Ctx, label: &str, rc: &RemoteCluster, dry_run: bool) -> Res<()> {
    let name = rc.name_any();
    let access = match access_objects_of(rc) {
        Some((ns, object)) => {
            match Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&object)
                .await
            {
                Ok(Some(s)) if made_by_connect(&s, &name) => Some((ns, object)),
                Ok(None) => Some((ns, object)),
                Ok(Some(_)) => None,
                Err(e) => return Err(ctx.fail(e, &format!("read Secret {ns}/{object}"), None)),
            }
        }
        None => None,
    };
    if dry_run {
        println!("{label}: would delete remotecluster.multicluster.alibaba.com/{name}");
        if let Some((ns, object)) = &access {
            println!("{label}: would delete Secret, Role and RoleBinding {ns}/{object}");
        }
        return Ok(());
    }
    match Api::<RemoteCluster>::all(ctx.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(e) if super::io::is_not_found(&e) => {}
        Err(e) => {
            return Err(ctx.fail(
                e,
                &format!("delete remote cluster {name}"),
                Some(REMOTE_CLUSTERS_CRD),
            ));
        }
    }
    println!("{label}: remotecluster.multicluster.alibaba.com/{name} deleted");
    if let Some((ns, object)) = access {
        delete_namespaced::<RoleBinding>(ctx, &ns, &object, "RoleBinding").await?;
        delete_namespaced::<Role>(ctx, &ns, &object, "Role").await?;
        delete_namespaced::<Secret>(ctx, &ns, &object, "Secret").await?;
        println!("{label}: Secret, Role and RoleBinding {ns}/{object} deleted");
    }
    Ok(())
}

pub async fn disconnect(g: &GlobalFlags, a: &ClusterDisconnectArgs) -> Res<i32> {
    let dry_run = a.dry_run != DryRun::None;
    let local = Ctx::connect(g).await?;
    let rcs = Api::<RemoteCluster>::all(local.client.clone());
    let rc = rcs
        .get_opt(&a.name)
        .await
        .map_err(|e| local.fail(e, "get remote cluster", Some(REMOTE_CLUSTERS_CRD)))?
        .ok_or_else(|| Failure::error(format!("remote cluster {:?} not found", a.name)))?;
    // The counterpart first: found while this side still names it.
    let counterpart = match &a.remote_context {
        Some(context) => {
            let remote =
                Ctx::connect(&remote_flags(g, a.remote_kubeconfig.as_ref(), context)).await?;
            let label = format!("context {context}");
            let here_uid = cluster_uid(&local, "this cluster").await?;
            let theirs = Api::<RemoteCluster>::all(remote.client.clone())
                .list(&Default::default())
                .await
                .map_err(|e| remote.fail(e, "list remote clusters", Some(REMOTE_CLUSTERS_CRD)))?
                .items;
            // The name `connect` recorded, else the one whose checks found our identity.
            let back = theirs.into_iter().find(|r| match peer_of(&rc) {
                Some(p) => r.name_any() == p,
                None => r.remote_uuid() == Some(here_uid.as_str()),
            });
            match back {
                Some(back) => Some((remote, label, back)),
                None => {
                    eprintln!(
                        "{label}: no RemoteCluster points back at this cluster; nothing to remove there"
                    );
                    None
                }
            }
        }
        None => {
            if let Some(p) = peer_of(&rc) {
                eprintln!(
                    "The other cluster still has RemoteCluster {p:?} pointing here: give --remote-context to remove it too."
                );
            }
            None
        }
    };
    remove_side(&local, "this cluster", &rc, dry_run).await?;
    if let Some((remote, label, back)) = counterpart {
        remove_side(&remote, &label, &back, dry_run).await?;
    }
    Ok(exit::OK)
}

//! `kubectl hybridnet uninstall`: read the facts, let `kubectl_hybridnet::uninstall::plan` decide,
//! then delete step by step, waiting for each step's objects to be gone.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use kubectl_hybridnet::cli::{DryRun, GlobalFlags, UninstallArgs};
use kubectl_hybridnet::uninstall::{
    self, CRDS, Facts, INSTALL_KINDS, OPERAND_KINDS, ObjRef, Options, resource_of,
};

use super::connect::{Ctx, Failure, Res, exit};
use super::io;
use super::print;

const OPERATOR: &str = "hybridnet-operator";
const LEADER_LEASE: &str = "hybridnet-manager-election";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=hybridnet-operator";

fn api(client: &Client, kind: &str, namespace: Option<&str>) -> Res<Api<DynamicObject>> {
    let (group, version, k, plural, namespaced) = resource_of(kind)
        .ok_or_else(|| Failure::error(format!("uninstall: no API resource for {kind}")))?;
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, k), plural);
    Ok(match (namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    })
}

/// Every object of `kind` (in `namespace`, or everywhere) matching `selector`; a kind the
/// cluster does not serve (CRD missing) has none.
async fn list(
    ctx: &Ctx,
    kind: &str,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Res<Vec<ObjRef>> {
    let a = api(&ctx.client, kind, namespace)?;
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let items = match a.list(&lp).await {
        Ok(l) => l.items,
        Err(e) if io::is_not_found(&e) => Vec::new(),
        Err(e) => return Err(ctx.fail(e, &format!("list {kind}"), None)),
    };
    let mut out: Vec<ObjRef> = items
        .into_iter()
        .filter_map(|o| {
            let name = o.metadata.name?;
            Some(match o.metadata.namespace {
                Some(ns) => ObjRef::namespaced(kind, &ns, &name),
                None => ObjRef::cluster(kind, &name),
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

async fn get(ctx: &Ctx, o: &ObjRef) -> Res<Option<DynamicObject>> {
    let a = api(&ctx.client, &o.kind, o.namespace.as_deref())?;
    match a.get_opt(&o.name).await {
        Ok(v) => Ok(v),
        Err(e) if io::is_not_found(&e) => Ok(None),
        Err(e) => Err(ctx.fail(e, &format!("get {o}"), None)),
    }
}

async fn facts(ctx: &Ctx, ns: &str) -> Res<Facts> {
    let mut f = Facts {
        cluster: get(
            ctx,
            &ObjRef::cluster("hybridnetcluster.operator.hybridnet.io", "default"),
        )
        .await?
        .is_some(),
        ..Default::default()
    };
    let lease = match Api::<Lease>::namespaced(ctx.client.clone(), ns)
        .get_opt(LEADER_LEASE)
        .await
    {
        Ok(l) => l,
        Err(e) => return Err(ctx.fail(e, &format!("get lease {LEADER_LEASE} -n {ns}"), None)),
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    f.operator_running = lease.and_then(|l| l.spec).is_some_and(|s| {
        uninstall::lease_live(
            s.holder_identity.as_deref(),
            s.renew_time.map(|t| t.0.as_second()),
            s.lease_duration_seconds.map(i64::from),
            now,
        )
    });
    let deployment = match Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .get_opt(OPERATOR)
        .await
    {
        Ok(d) => d,
        Err(e) => return Err(ctx.fail(e, &format!("get deployment {OPERATOR} -n {ns}"), None)),
    };
    f.olm_csv = deployment.as_ref().and_then(|d| {
        let m = &d.metadata;
        m.owner_references
            .iter()
            .flatten()
            .find(|r| r.kind == "ClusterServiceVersion")
            .map(|r| r.name.clone())
            .or_else(|| m.labels.as_ref().and_then(|l| l.get("olm.owner")).cloned())
    });
    for kind in OPERAND_KINDS {
        f.operands
            .extend(list(ctx, kind, None, Some(MANAGED_BY)).await?);
    }
    for kind in INSTALL_KINDS {
        let (.., namespaced) = resource_of(kind).unwrap_or(("", "", "", "", false));
        let o = if namespaced {
            ObjRef::namespaced(kind, ns, OPERATOR)
        } else {
            ObjRef::cluster(kind, OPERATOR)
        };
        if get(ctx, &o).await?.is_some() {
            f.install.push(o);
        }
    }
    // The namespace only when it is deploy/'s (labelled as part of hybridnet's operator).
    let nsref = ObjRef::cluster("namespace", ns);
    if let Some(n) = get(ctx, &nsref).await? {
        let labels = n.metadata.labels.unwrap_or_default();
        if labels.get("app.kubernetes.io/part-of").map(String::as_str) == Some("hybridnet")
            && labels.get("app.kubernetes.io/name").map(String::as_str) == Some(OPERATOR)
        {
            f.install.push(nsref);
        }
    }
    f.ipinstances = list(ctx, "ipinstance.networking.alibaba.com", None, None).await?;
    f.subnets = list(ctx, "subnet.networking.alibaba.com", None, None).await?;
    f.networks = list(ctx, "network.networking.alibaba.com", None, None).await?;
    f.remote_clusters = list(ctx, "remotecluster.multicluster.alibaba.com", None, None).await?;
    for crd in CRDS {
        let o = ObjRef::cluster("customresourcedefinition.apiextensions.k8s.io", crd);
        if get(ctx, &o).await?.is_some() {
            f.crds.push(o);
        }
    }
    Ok(f)
}

async fn delete(ctx: &Ctx, o: &ObjRef) -> Res<()> {
    let a = api(&ctx.client, &o.kind, o.namespace.as_deref())?;
    match a.delete(&o.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if io::is_not_found(&e) => Ok(()),
        Err(e) => Err(ctx.fail(e, &format!("delete {o}"), None)),
    }
}

/// Waits until every object is gone; on timeout names those left and their finalizers.
async fn wait_gone(ctx: &Ctx, objs: &[ObjRef], timeout: Option<Duration>) -> Res<()> {
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for o in objs {
            if let Some(obj) = get(ctx, o).await? {
                left.push(format!(
                    "{o} (finalizers: {})",
                    obj.metadata.finalizers.unwrap_or_default().join(", ")
                ));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            return Err(Failure::error(format!(
                "uninstall: still there after {} s, stopping before the next step (the operator removes these finalizers; see its log):\n  {}",
                start.elapsed().as_secs(),
                left.join("\n  ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn uninstall(g: &GlobalFlags, a: &UninstallArgs) -> Res<i32> {
    if a.dry_run == DryRun::Server {
        return Err(Failure::usage(
            "uninstall --dry-run=server is not supported: use --dry-run (client) to list what would be deleted",
        ));
    }
    let ctx = Ctx::connect(g).await?;
    let f = facts(&ctx, &a.operator_namespace).await?;
    let plan = uninstall::plan(
        &f,
        Options {
            delete_data: a.delete_data,
        },
    )
    .map_err(|r| Failure::error(format!("uninstall: {}", r.0)))?;
    let dry = a.dry_run == DryRun::Client;
    if dry {
        print::out(&uninstall::describe(&plan, true))?;
        return Ok(exit::OK);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        print::out(&format!(
            "{}. deleting {} ({} object(s))\n",
            i + 1,
            step.what,
            step.delete.len()
        ))?;
        for o in &step.delete {
            delete(&ctx, o).await?;
        }
        if step.wait {
            wait_gone(&ctx, &step.delete, a.timeout.0).await?;
        }
    }
    for k in &plan.kept {
        print::out(&format!("kept: {k}\n"))?;
    }
    print::out("hybridnet uninstalled\n")?;
    Ok(exit::OK)
}

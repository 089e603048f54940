//! Network and Subnet status (upstream `pkg/controllers/networking/networkstatus_controller.go`, `subnetstatus_controller.go`): statistics from the IPAM, node and
//! subnet lists, persisted allocation cursors. Status is patched only when it changed. The
//! reconcile also applies the Network's and its Subnets' specs to the IPAM.

use std::collections::BTreeMap;
use std::sync::Arc;

use hybridnet_api::constants::{finalizer, label};
use hybridnet_api::v1::{Count, Network, NetworkStatus, NetworkType, Subnet, SubnetStatus};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{instrument, warn};

use crate::controlplane::rules::objects::remove_named_finalizer_patch;
use crate::controlplane::runtime::context::{Ctx, ReconcileError};
use crate::ipam::{NetworkCursors, NetworkUsage, Usage};

fn clamp(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn count(u: &Usage) -> Count {
    Count {
        total: Some(clamp(u.total)),
        used: Some(clamp(u.used)),
        available: Some(clamp(u.available)),
    }
}

/// Member nodes of a network (sorted, terminating nodes left out).
pub fn node_list(network: &Network, nodes: &[Arc<Node>]) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            let empty = BTreeMap::new();
            let labels = n.metadata.labels.as_ref().unwrap_or(&empty);
            match network.spec.effective_type() {
                NetworkType::Underlay => network.spec.selects_node(labels),
                NetworkType::Overlay => true,
                NetworkType::GlobalBgp => {
                    labels
                        .get(label::BGP_NETWORK_ATTACHMENT)
                        .map(String::as_str)
                        == Some(label::ATTACHED)
                }
            }
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// The status a Network should have (pure).
pub fn network_status(
    usage: &NetworkUsage,
    cursors: &NetworkCursors,
    subnet_list: Vec<String>,
    node_list: Vec<String>,
) -> NetworkStatus {
    NetworkStatus {
        last_allocated_subnet: cursors.last_allocated_subnet.clone(),
        last_allocated_ipv6_subnet: cursors.last_allocated_ipv6_subnet.clone(),
        subnet_list: Some(subnet_list),
        node_list: Some(node_list),
        statistics: Some(count(&usage.v4)),
        ipv6_statistics: Some(count(&usage.v6)),
        dual_stack_statistics: Some(Count {
            total: None,
            used: None,
            available: Some(clamp(usage.dual_stack_available)),
        }),
    }
}

/// The status a Subnet should have (pure).
pub fn subnet_status(usage: &Usage, cursor: Option<std::net::IpAddr>) -> SubnetStatus {
    SubnetStatus {
        total: Some(clamp(usage.total)),
        used: Some(clamp(usage.used)),
        available: Some(clamp(usage.available)),
        last_allocated_ip: cursor.map(|c| c.to_string()),
    }
}

#[instrument(skip_all, fields(network = %network.name_any()))]
pub async fn reconcile(network: Arc<Network>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.ensure_leading()?;
    ctx.metrics
        .measure_reconcile("status", reconcile_inner(&network, &ctx))
        .await
}

/// Removes upstream's metrics finalizer from `obj` if it is terminating and carries it.
async fn release_upstream_finalizer<K>(
    ctx: &Ctx,
    kind: &'static str,
    obj: &K,
) -> Result<(), ReconcileError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if obj.meta().deletion_timestamp.is_none() {
        return Ok(());
    }
    let Some(patch) = remove_named_finalizer_patch(
        obj.meta().finalizers.as_ref(),
        finalizer::UPSTREAM_METRICS_REGISTERED,
    ) else {
        return Ok(());
    };
    let name = obj.name_any();
    let patch: json_patch::Patch = match serde_json::from_value(patch) {
        Ok(p) => p,
        Err(e) => {
            warn!(%name, kind, error = %e, "cannot build the finalizer patch");
            return Ok(());
        }
    };
    ctx.ensure_leading()?;
    let api: Api<K> = Api::all(ctx.client.clone());
    match api
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already, or the list changed under us (the next event retries).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(()),
        Err(e) => Err(ReconcileError::kube(
            "remove upstream finalizer from",
            kind,
            name,
        )(e)),
    }
}

async fn reconcile_inner(network: &Network, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let name = network.name_any();
    // Migrated objects carry upstream's metrics finalizer; nothing of ours waits on it.
    release_upstream_finalizer(ctx, "Network", network).await?;
    for s in ctx.caches.subnets() {
        release_upstream_finalizer(ctx, "Subnet", &s).await?;
    }
    let subnets: Vec<Subnet> = ctx
        .caches
        .subnets()
        .into_iter()
        .filter(|s| s.spec.network == name && s.metadata.deletion_timestamp.is_none())
        .collect();
    // Apply specs to the IPAM, then read the numbers.
    let (usage, cursors, subnet_rows) = {
        let mut engine = ctx.engine();
        if network.metadata.deletion_timestamp.is_some() {
            engine.remove_network(&name);
        } else {
            for p in engine.sync_network(network, &subnets) {
                warn!(problem = %p, "IPAM refused part of the network's spec");
            }
        }
        let ipam = engine.ipam();
        let usage = ipam.network_usage(&name).unwrap_or_default();
        let cursors = ipam.cursors();
        let rows: Vec<(Subnet, Option<Usage>, Option<std::net::IpAddr>)> = subnets
            .iter()
            .map(|s| {
                let sn = s.name_any();
                (
                    s.clone(),
                    ipam.subnet_usage(&sn),
                    cursors.subnets.get(&sn).copied(),
                )
            })
            .collect();
        (
            usage,
            cursors.networks.get(&name).cloned().unwrap_or_default(),
            rows,
        )
    };
    let mut subnet_names: Vec<String> = subnets.iter().map(|s| s.name_any()).collect();
    subnet_names.sort();
    let nodes = node_list(network, &ctx.caches.nodes.state());
    let want = network_status(&usage, &cursors, subnet_names, nodes);
    if network.status.as_ref() != Some(&want) {
        ctx.ensure_leading()?;
        let api: Api<Network> = Api::all(ctx.client.clone());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": want })),
        )
        .await
        .map_err(ReconcileError::kube(
            "patch status of",
            "Network",
            name.clone(),
        ))?;
    }
    let m = &ctx.metrics;
    if network.metadata.deletion_timestamp.is_some() {
        m.forget_network(&name);
        return Ok(Action::await_change());
    }
    for (fam, u) in [("ipv4", &usage.v4), ("ipv6", &usage.v6)] {
        m.set_network_usage(&name, fam, "total", u.total as i64);
        m.set_network_usage(&name, fam, "used", u.used as i64);
        m.set_network_usage(&name, fam, "available", u.available as i64);
    }
    m.set_network_usage(
        &name,
        "dualstack",
        "available",
        usage.dual_stack_available as i64,
    );

    let subnet_api: Api<Subnet> = Api::all(ctx.client.clone());
    for (s, u, cursor) in subnet_rows {
        let Some(u) = u else { continue };
        let want = subnet_status(&u, cursor);
        let sn = s.name_any();
        m.set_subnet_usage(
            &name,
            &sn,
            u.total as i64,
            u.used as i64,
            u.available as i64,
        );
        if s.status.as_ref() != Some(&want) {
            ctx.ensure_leading()?;
            // Merge patch with explicit nulls so a cleared cursor is cleared.
            let body = json!({ "status": {
                "total": want.total, "used": want.used, "available": want.available,
                "lastAllocatedIP": want.last_allocated_ip,
            }});
            subnet_api
                .patch_status(&sn, &PatchParams::default(), &Patch::Merge(body))
                .await
                .map_err(ReconcileError::kube(
                    "patch status of",
                    "Subnet",
                    sn.clone(),
                ))?;
        }
    }
    // Level-triggered safety net: the node and subnet caches may lag behind the trigger.
    Ok(Action::requeue(std::time::Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::NetworkSpec;

    fn node(name: &str, labels: &[(&str, &str)], terminating: bool) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if terminating {
            n.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        Arc::new(n)
    }

    #[test]
    fn node_lists_by_type_without_terminating_nodes() {
        let nodes = vec![
            node("b", &[("net", "u")], false),
            node("a", &[("net", "u")], false),
            node("c", &[("net", "u")], true),
            node("d", &[(label::BGP_NETWORK_ATTACHMENT, "true")], false),
        ];
        let u = Network::new(
            "u",
            NetworkSpec {
                node_selector: Some([("net".to_string(), "u".to_string())].into()),
                ..Default::default()
            },
        );
        assert_eq!(node_list(&u, &nodes), vec!["a", "b"]);
        let o = Network::new(
            "o",
            NetworkSpec {
                network_type: Some(NetworkType::Overlay),
                ..Default::default()
            },
        );
        assert_eq!(node_list(&o, &nodes), vec!["a", "b", "d"]);
        let g = Network::new(
            "g",
            NetworkSpec {
                network_type: Some(NetworkType::GlobalBgp),
                ..Default::default()
            },
        );
        assert_eq!(node_list(&g, &nodes), vec!["d"]);
    }

    #[test]
    fn statistics_from_usage() {
        let usage = NetworkUsage {
            v4: Usage {
                total: 10,
                used: 3,
                available: 7,
                reserved: 1,
            },
            v6: Usage {
                total: 5,
                used: 5,
                available: 0,
                reserved: 0,
            },
            dual_stack_available: 0,
            ..Default::default()
        };
        let st = network_status(&usage, &NetworkCursors::default(), vec!["s".into()], vec![]);
        assert_eq!(st.statistics.unwrap().available, Some(7));
        assert_eq!(st.ipv6_statistics.unwrap().used, Some(5));
        assert_eq!(st.dual_stack_statistics.unwrap().available, Some(0));
        let s = subnet_status(&usage.v4, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(s.last_allocated_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(s.total, Some(10));
    }
}

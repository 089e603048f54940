//! Node controller: attachment and address-quota labels (upstream `pkg/controllers/networking/node_controller.go`, `quota_controller.go`) and the
//! `node.kubernetes.io/network-unavailable:NoSchedule` taint on nodes that belong to no network
//! (documented upstream, never built there).

use std::sync::Arc;

use hybridnet_api::constants::taint;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use crate::controlplane::rules::nodestate::{desired_node_state, label_patch};
use crate::controlplane::runtime::context::{Ctx, ReconcileError};

/// The taints a node should have: ours added or removed, every other taint kept.
pub fn desired_taints(current: &[Taint], unavailable: bool) -> Option<Vec<Taint>> {
    let ours = |t: &Taint| t.key == taint::NETWORK_UNAVAILABLE && t.effect == "NoSchedule";
    let has = current.iter().any(ours);
    match (has, unavailable) {
        (true, true) | (false, false) => None,
        (false, true) => {
            let mut v = current.to_vec();
            v.push(Taint {
                key: taint::NETWORK_UNAVAILABLE.into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
            Some(v)
        }
        (true, false) => Some(current.iter().filter(|t| !ours(t)).cloned().collect()),
    }
}

#[instrument(skip_all, fields(node = %node.name_any()))]
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.ensure_leading()?;
    ctx.metrics
        .measure_reconcile("node", reconcile_inner(&node, &ctx))
        .await
}

async fn reconcile_inner(node: &Node, ctx: &Ctx) -> Result<Action, ReconcileError> {
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    // Read Networks from the API: the trigger may be a Network status change the shared cache
    // has not seen yet.
    let networks = Api::<hybridnet_api::v1::Network>::all(ctx.client.clone())
        .list(&Default::default())
        .await
        .map_err(ReconcileError::kube("list", "Network", ""))?
        .items;
    let want = desired_node_state(&labels, &networks);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let lp = label_patch(&labels, &want.labels);
    if !lp.is_empty() {
        ctx.ensure_leading()?;
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": lp}})),
        )
        .await
        .map_err(ReconcileError::kube("label", "Node", name.clone()))?;
    }
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if let Some(taints) = desired_taints(&current, want.unavailable) {
        ctx.ensure_leading()?;
        // Replace the list only if nobody changed the node meanwhile (kubelet owns other taints).
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": node.metadata.resource_version.clone().unwrap_or_default()},
            if node.spec.is_some() {
                json!({"op": "add", "path": "/spec/taints", "value": taints})
            } else {
                json!({"op": "add", "path": "/spec", "value": {"taints": taints}})
            },
        ]))
        .map_err(|e| ReconcileError::Allocation {
            pod: name.clone(),
            message: e.to_string(),
        })?;
        match api
            .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => info!(
                tainted = want.unavailable,
                "updated the network-unavailable taint"
            ),
            // The label patch above changed the resourceVersion: come back with the new one.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                return Ok(Action::requeue(std::time::Duration::from_millis(200)));
            }
            Err(e) => return Err(ReconcileError::kube("taint", "Node", name.clone())(e)),
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn taint_added_and_removed_others_kept() {
        let other = t("node.kubernetes.io/not-ready", "NoExecute");
        let added = desired_taints(std::slice::from_ref(&other), true).unwrap();
        assert_eq!(added.len(), 2);
        assert!(desired_taints(&added, true).is_none());
        let removed = desired_taints(&added, false).unwrap();
        assert_eq!(removed, vec![other.clone()]);
        assert!(desired_taints(&[other], false).is_none());
        // A network-unavailable taint with another effect is not ours.
        let foreign = t(taint::NETWORK_UNAVAILABLE, "NoExecute");
        assert_eq!(
            desired_taints(std::slice::from_ref(&foreign), true)
                .unwrap()
                .len(),
            2
        );
    }
}

//! NodeInfo clean-up: a NodeInfo whose Node is gone is deleted (the owner reference normally does
//! it; this covers NodeInfos written without one or a garbage collector that is behind).

use std::sync::Arc;

use hybridnet_api::v1::NodeInfo;
use k8s_openapi::api::core::v1::Node;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{info, instrument};

use crate::controlplane::runtime::context::{Ctx, ReconcileError};

#[instrument(skip_all, fields(nodeinfo = %info.name_any()))]
pub async fn reconcile(info: Arc<NodeInfo>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.ensure_leading()?;
    ctx.metrics
        .measure_reconcile("nodeinfo", reconcile_inner(&info, &ctx))
        .await
}

async fn reconcile_inner(info: &NodeInfo, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let name = info.name_any();
    // Ask the API, not the shared Node cache: the Node deletion that triggered this reconcile
    // comes through the controller's own watch, and the cache (another watch) may not have seen
    // it yet. Trusting a cache that still shows the Node would leave the NodeInfo for good, as
    // nothing else wakes this reconcile once the node's agent is gone.
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let exists = nodes
        .get_opt(&name)
        .await
        .map_err(ReconcileError::kube("get", "Node", name.clone()))?
        .is_some();
    if exists {
        return Ok(Action::await_change());
    }
    ctx.ensure_leading()?;
    let api: Api<NodeInfo> = Api::all(ctx.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => info!("deleted the NodeInfo of a deleted node"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(ReconcileError::kube("delete", "NodeInfo", name)(e)),
    }
    Ok(Action::await_change())
}

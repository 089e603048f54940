//! IPInstance controller: an address is freed in memory only once its IPInstance is gone
//! (upstream `pkg/controllers/networking/ipinstance_controller.go`); live IPInstances are mirrored into memory.

use std::sync::Arc;

use hybridnet_api::naming::instance_name_to_ip;
use hybridnet_api::v1::IPInstance;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{debug, instrument};

use crate::controlplane::rules::objects::remove_finalizer_patch;
use crate::controlplane::runtime::context::{Ctx, ReconcileError, display_name};

#[instrument(skip_all, fields(ipinstance = %display_name(ipi.as_ref())))]
pub async fn reconcile(ipi: Arc<IPInstance>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    ctx.ensure_leading()?;
    ctx.metrics
        .measure_reconcile("ipinstance", reconcile_inner(&ipi, &ctx))
        .await
}

async fn reconcile_inner(ipi: &IPInstance, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let Some(ip) = instance_name_to_ip(&ipi.name_any()) else {
        return Ok(Action::await_change());
    };
    if ipi.metadata.deletion_timestamp.is_none() {
        ctx.engine().observe(ipi);
        return Ok(Action::await_change());
    }
    if let Some(patch) = remove_finalizer_patch(ipi.metadata.finalizers.as_ref()) {
        let ns = ipi.namespace().unwrap_or_default();
        let api: Api<IPInstance> = Api::namespaced(ctx.client.clone(), &ns);
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| ReconcileError::Allocation {
                pod: display_name(ipi),
                message: e.to_string(),
            })?;
        ctx.ensure_leading()?;
        match api
            .patch(
                &ipi.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ReconcileError::kube(
                    "remove finalizer from",
                    "IPInstance",
                    display_name(ipi),
                )(e));
            }
        }
    }
    // The object is gone (or about to be, with no finalizer left): only now is the address free.
    ctx.engine()
        .release(&ipi.spec.network, &ipi.spec.subnet, ip);
    let ns = ipi.namespace().unwrap_or_default();
    let name = ipi.name_any();
    if let Some(pod) = ipi.spec.binding.pod_name.clone() {
        let mut records = ctx.pod_records();
        if let Some(r) = records.get_mut(&(ns.clone(), pod.clone())) {
            r.instances.retain(|n| *n != name);
            if r.instances.is_empty() {
                records.remove(&(ns, pod));
            }
        }
    }
    ctx.notify_ipam_changed();
    debug!(%ip, "released");
    Ok(Action::await_change())
}

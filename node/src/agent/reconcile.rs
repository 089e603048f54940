//! The level-triggered reconcile loop and the netlink watch that triggers it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use kube::Client;
use tracing::{error, info, warn};

use super::AgentConfig;
use super::caches::{Caches, Shared, now_unix};
use super::publish::{NodeInfoPublication, publish_node_info};

use crate::dataplane::{Applier, NftRunner, read_host_state};
use crate::plan::{DataPlanePlan, PlanConfig, build_plan};

/// Subscribes to link and address changes and triggers a reconcile on each burst.
pub(super) fn spawn_netlink_watch(shared: Arc<Shared>) -> anyhow::Result<()> {
    use rtnetlink::MulticastGroup;
    let (conn, _h, mut msgs) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .context("subscribe to netlink link/address events")?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while msgs.next().await.is_some() {
            shared.trigger.notify_one();
        }
        warn!("netlink event subscription ended; relying on periodic resync");
    });
    Ok(())
}

/// The reconcile loop: never returns under normal operation.
pub async fn reconcile_loop(
    client: Client,
    caches: Caches,
    cfg: AgentConfig,
    plan_cfg: PlanConfig,
    shared: Arc<Shared>,
    handle: rtnetlink::Handle,
) {
    let mut applier = Applier::new(
        handle.clone(),
        plan_cfg.tables.clone(),
        NftRunner::new(cfg.nft_binary.clone()),
    );
    let mut published: Option<NodeInfoPublication> = None;
    let mut bgp = crate::bgp::BgpController::new(shared.bgp.clone());
    // Session changes reach the NodeInfo through a (rate-limited) reconcile.
    let s = shared.clone();
    tokio::spawn(crate::bgp::follow_sessions(
        shared.bgp.clone(),
        crate::bgp::DEFAULT_PUBLISH_INTERVAL,
        crate::bgp::DEFAULT_CHURN_INTERVAL,
        move || s.trigger.notify_one(),
    ));
    let mut last_problems: BTreeMap<String, String> = BTreeMap::new();
    let mut leftovers = crate::migrate::host::LeftoverCleaner::new(
        crate::migrate::Scope {
            felix: cfg.remove_felix_leftovers,
        },
        cfg.remove_upstream_leftovers,
    );
    let debounce = Duration::from_millis(100);
    loop {
        shared.last_loop_unix.store(now_unix(), Ordering::SeqCst);
        let started = Instant::now();
        let api = caches.snapshot(&cfg.node_name);
        let result: anyhow::Result<(DataPlanePlan, crate::dataplane::ApplyReport)> = async {
            let host = read_host_state(&handle, &plan_cfg.tables).await?;
            let plan = build_plan(&api, &host, &plan_cfg);
            bgp.reconcile(&api, &host, &plan_cfg.prefer_bgp_interfaces);
            let report = applier.apply(&plan).await?;
            Ok((plan, report))
        }
        .await;
        match result {
            Ok((plan, report)) => {
                let problems: BTreeMap<String, String> = plan
                    .problems
                    .iter()
                    .map(|p| (p.object.clone(), p.message.clone()))
                    .collect();
                if problems != last_problems {
                    for p in &plan.problems {
                        warn!(object = %p.object, problem = %p.message, "API object not programmed");
                    }
                    last_problems = problems;
                }
                if !report.is_noop() {
                    info!(changes = ?report.changes, elapsed_ms = started.elapsed().as_millis() as u64, "data plane reconciled");
                }
                let ok = report.errors.is_empty();
                if let Ok(mut g) = shared.last_error.lock() {
                    *g = (!ok).then(|| report.errors.join("; "));
                }
                // Before readiness: an ADD admitted by it finds the VLAN subnets of this plan.
                if let Ok(mut v) = shared.vlan_subnets.write() {
                    *v = Arc::new(crate::cniserver::vlancheck::VlanSubnets::of_plan(&plan));
                }
                shared.reconciled_ok.store(ok, Ordering::SeqCst);
                shared.vxlan_mtu.store(
                    plan.vxlan.as_ref().map(|v| v.mtu).unwrap_or(0),
                    Ordering::SeqCst,
                );
                let want = NodeInfoPublication::after(&plan, published.as_ref())
                    .with_bgp_sessions(shared.bgp.sessions_annotation())
                    .with_upstream_leftovers(leftovers.after_apply(ok).await);
                // An empty publication is applied only to retract what was published before.
                if published.as_ref() != Some(&want) && (!want.is_empty() || published.is_some()) {
                    match publish_node_info(&client, &cfg.node_name, &want).await {
                        Ok(()) => {
                            info!(
                                vtep = ?want.vtep.as_ref().map(|v| v.ip),
                                route_tables = %want.route_tables.to_annotation(),
                                bgp_sessions = want.bgp_sessions.as_deref().unwrap_or("-"),
                                "published NodeInfo"
                            );
                            published = Some(want);
                        }
                        Err(e) => warn!(error = %e, "publishing NodeInfo failed (retrying)"),
                    }
                }
                shared
                    .metrics
                    .observe_reconcile(started.elapsed(), &plan, Some(&report));
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "reconcile failed");
                if let Ok(mut g) = shared.last_error.lock() {
                    *g = Some(format!("{e:#}"));
                }
                shared.reconciled_ok.store(false, Ordering::SeqCst);
                shared.metrics.observe_reconcile(
                    started.elapsed(),
                    &DataPlanePlan::default(),
                    None,
                );
            }
        }
        tokio::select! {
            _ = shared.trigger.notified() => {}
            _ = tokio::time::sleep(cfg.resync()) => {}
        }
        // Coalesce a burst of events into one reconcile.
        tokio::time::sleep(debounce).await;
    }
}

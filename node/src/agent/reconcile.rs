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

use crate::dataplane::{Applier, KernelChanges, KernelNotes, NftRunner, classify, read_host_state};
use crate::plan::{DataPlanePlan, HostState, PlanConfig, build_plan};

/// Subscribes to link, address, route, rule and neighbour notifications: records them in
/// [`Shared::kernel`] (see `dataplane::changes`) and triggers a reconcile when one matters.
pub(super) fn spawn_netlink_watch(shared: Arc<Shared>) -> anyhow::Result<()> {
    use rtnetlink::MulticastGroup;
    use rtnetlink::packet_core::NetlinkPayload;
    let (conn, _h, mut msgs) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Ipv4Rule,
        MulticastGroup::Ipv6Rule,
        MulticastGroup::Neigh,
    ])
    .context("subscribe to netlink link/address/route/rule/neighbour events")?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while let Some((m, _)) = msgs.next().await {
            let vx = match shared.vxlan_index.load(Ordering::SeqCst) {
                0 => None,
                i => Some(i),
            };
            let trigger = match &m.payload {
                NetlinkPayload::InnerMessage(msg) => match classify(msg) {
                    Some(ev) => shared.kernel.lock().is_ok_and(|mut n| n.note(ev, vx)),
                    None => false,
                },
                // ENOBUFS: notifications were lost, the next reconcile dumps everything.
                NetlinkPayload::Overrun(_) => {
                    if let Ok(mut n) = shared.kernel.lock() {
                        n.lost();
                    }
                    true
                }
                _ => false,
            };
            if trigger {
                shared.trigger.notify_one();
            }
        }
        if let Ok(mut n) = shared.kernel.lock() {
            n.lost();
        }
        warn!("netlink event subscription ended; relying on periodic resync");
    });
    Ok(())
}

/// A full resync (kernel dump and diff of everything) every this many periodic resyncs; the
/// reconciles between diff against what the last apply left, as notifications allow.
const FULL_RESYNC_EVERY: u32 = 10;

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
    let full_resync = cfg.resync() * FULL_RESYNC_EVERY;
    let mut last_full: Option<Instant> = None;
    // The last plan, the API generation and host facts it was built from.
    let mut last: Option<(u64, HostState, DataPlanePlan)> = None;
    loop {
        shared.last_loop_unix.store(now_unix(), Ordering::SeqCst);
        let started = Instant::now();
        let notes = shared
            .kernel
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_else(|_| KernelNotes {
                changes: KernelChanges::EVERYTHING,
                ..Default::default()
            });
        let full = last_full.is_none_or(|t| t.elapsed() >= full_resync);
        let mut changes = notes.changes;
        if full {
            changes = KernelChanges::EVERYTHING;
        } else if !notes.neighbours.is_empty() && applier.contradicted_by(&notes.neighbours) {
            changes.neighbours = true;
        }
        // Read before the snapshot: an event after it bumps it, and the next reconcile rebuilds.
        let generation = caches.generation();
        let api = caches.snapshot(&cfg.node_name);
        let previous = last.take();
        let result: anyhow::Result<crate::dataplane::ApplyReport> = async {
            let (host, plan) = match previous {
                // Same input as the last plan: the plan is the same.
                Some((g, host, plan)) if !changes.host() && g == generation => (host, plan),
                Some((_, host, _)) if !changes.host() => {
                    let plan = build_plan(&api, &host, &plan_cfg);
                    (host, plan)
                }
                _ => {
                    let host = read_host_state(&handle, &plan_cfg.tables).await?;
                    let plan = build_plan(&api, &host, &plan_cfg);
                    (host, plan)
                }
            };
            bgp.reconcile(&api, &host, &plan_cfg.prefer_bgp_interfaces);
            let report = if full {
                applier.apply(&plan).await
            } else {
                applier.apply_changes(&plan, changes).await
            };
            last = Some((generation, host, plan));
            Ok(report?)
        }
        .await;
        let result = result.and_then(|report| match &last {
            Some((_, _, plan)) => Ok((plan, report)),
            None => Err(anyhow::anyhow!("no plan")),
        });
        if full && result.is_ok() {
            last_full = Some(Instant::now());
        }
        shared
            .vxlan_index
            .store(applier.vxlan_index().unwrap_or(0), Ordering::SeqCst);
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
                    *v = Arc::new(crate::cniserver::vlancheck::VlanSubnets::of_plan(plan));
                }
                shared.reconciled_ok.store(ok, Ordering::SeqCst);
                shared.vxlan_mtu.store(
                    plan.vxlan.as_ref().map(|v| v.mtu).unwrap_or(0),
                    Ordering::SeqCst,
                );
                let want = NodeInfoPublication::after(plan, published.as_ref())
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
                    .observe_reconcile(started.elapsed(), plan, Some(&report));
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

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
use super::config::FULL_RESYNC_EVERY;
use super::publish::{NodeInfoPublication, publish_node_info};

use crate::dataplane::{Applier, KernelChanges, KernelNotes, NftRunner, classify, read_host_state};
use crate::plan::{DataPlanePlan, PlanConfig, PlanState};

/// Receive buffer asked for the rtnetlink notification socket (the kernel doubles it and charges
/// it only while notifications wait unread). The agent's own converge to 20,000 remote pods sends
/// about 21,000 neighbour notifications at once, a few hundred bytes of socket memory each; the
/// kernel's default (`net.core.rmem_default`, about 208 KiB) holds a few hundred, and every larger
/// burst would end in `ENOBUFS` (notifications lost) and so in a full resync.
pub const NOTIFICATION_RCVBUF: usize = 16 * 1024 * 1024;

type Notifications = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// Subscribes to link, address, route, rule and neighbour notifications of the current network
/// namespace with a receive buffer of `rcvbuf` bytes: `SO_RCVBUFFORCE` (the agent has
/// `CAP_NET_ADMIN`), else `SO_RCVBUF` (capped by `net.core.rmem_max`). Returns the connection task
/// to spawn and the notifications.
pub fn notification_connection(
    rcvbuf: usize,
) -> anyhow::Result<(
    impl std::future::Future<Output = ()> + Send + 'static,
    Notifications,
)> {
    use rtnetlink::MulticastGroup;
    let (mut conn, _h, msgs) = rtnetlink::new_multicast_connection(&[
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
    use rtnetlink::sys::AsyncSocket as _;
    let socket = conn.socket_mut().socket_mut();
    let size = i32::try_from(rcvbuf).unwrap_or(i32::MAX) as usize;
    if let Err(e) =
        nix::sys::socket::setsockopt(&*socket, nix::sys::socket::sockopt::RcvBufForce, &size)
    {
        warn!(error = %e, bytes = size, "SO_RCVBUFFORCE on the netlink notification socket refused; asking for SO_RCVBUF (capped by net.core.rmem_max)");
        socket
            .set_rx_buf_sz(size)
            .context("SO_RCVBUF on the netlink notification socket")?;
    }
    Ok((conn, msgs))
}

/// Records one notification in `notes` (see `dataplane::changes`); `vxlan` is the VXLAN device's
/// index. Returns whether a reconcile should follow. `ENOBUFS` (the socket overflowed:
/// notifications were lost) arrives as an overrun message and makes the next reconcile a full
/// resync.
pub fn note_notification(
    notes: &mut KernelNotes,
    msg: &rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    vxlan: Option<u32>,
) -> bool {
    use rtnetlink::packet_core::NetlinkPayload;
    match &msg.payload {
        NetlinkPayload::InnerMessage(m) => classify(m).is_some_and(|ev| notes.note(ev, vxlan)),
        NetlinkPayload::Overrun(_) => {
            notes.lost();
            true
        }
        _ => false,
    }
}

/// Subscribes to link, address, route, rule and neighbour notifications: records them in
/// [`Shared::kernel`] (see `dataplane::changes`) and triggers a reconcile when one matters.
pub(super) fn spawn_netlink_watch(shared: Arc<Shared>) -> anyhow::Result<()> {
    let (conn, mut msgs) = notification_connection(NOTIFICATION_RCVBUF)?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while let Some((m, _)) = msgs.next().await {
            let vx = match shared.vxlan_index.load(Ordering::SeqCst) {
                0 => None,
                i => Some(i),
            };
            let trigger = match shared.kernel.lock() {
                Ok(mut n) => note_notification(&mut n, &m, vx),
                Err(_) => true,
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
    // The last plan and what it was built from, updated per changed object.
    let mut last: Option<PlanState> = None;
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
        // Taken before the stores are read: a change after this is in the next log.
        let api_changes = caches.take_changes();
        let previous = last.take();
        let result: anyhow::Result<crate::dataplane::ApplyReport> = async {
            let state = match previous {
                // Only IPInstances or NodeInfos changed (or nothing): update the plan per object.
                Some(mut state) if !changes.host() && !api_changes.everything => {
                    if !api_changes.is_empty() {
                        caches.update_plan(&mut state, api_changes);
                    }
                    state
                }
                Some(state) if !changes.host() => {
                    PlanState::new(&caches.snapshot(&cfg.node_name), state.host(), &plan_cfg)
                }
                _ => {
                    let host = read_host_state(&handle, &plan_cfg.tables).await?;
                    PlanState::new(&caches.snapshot(&cfg.node_name), &host, &plan_cfg)
                }
            };
            bgp.reconcile(
                &caches.snapshot_for_bgp(&cfg.node_name),
                state.host(),
                &plan_cfg.prefer_bgp_interfaces,
            );
            let report = if full {
                applier.apply(state.plan()).await
            } else {
                applier.apply_changes(state.plan(), changes).await
            };
            last = Some(state);
            Ok(report?)
        }
        .await;
        let result = result.and_then(|report| match &last {
            Some(state) => Ok((state.plan(), report)),
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

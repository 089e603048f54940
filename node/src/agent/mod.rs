//! The node agent: watches the API, reconciles the data plane level-triggered, publishes its
//! NodeInfo, serves health and metrics, installs the CNI plugin.
//!
//! Triggers (all coalesced into one pending reconcile through a [`Notify`]): any watch event on
//! this Node, Networks, Subnets, IPInstances, NodeInfos, RemoteSubnets or RemoteVteps; netlink
//! link, address, route, rule and
//! neighbour changes (see `dataplane::changes`); a periodic resync. Bursts of events cost one
//! reconcile. The watches record which IPInstances and NodeInfos changed (`caches::ApiChanges`);
//! a reconcile updates the kept plan for those objects only (`plan::PlanState`), and plans from
//! scratch (from a snapshot sharing the IPInstances with the caches) only after a Node, Network,
//! Subnet, RemoteSubnet or RemoteVtep change (with RemoteVteps, every IPInstance or NodeInfo
//! change re-plans from the kept objects: their claims are decided after this cluster's), a watch relist, or when notifications say the host's links, addresses, routes
//! or rules changed (then it re-reads the host). The apply diffs against what the last apply left
//! instead of dumping the kernel (`dataplane::Applier::apply_changes`). Every
//! `config::FULL_RESYNC_EVERY`th periodic resync (5 minutes by default), and after notifications
//! were lost (`ENOBUFS`), is a full resync: read the host, plan from scratch, dump and diff
//! everything, so a missed event or notification is repaired there (docs/operations.md).
//!
//! # VXLAN neighbour resolution
//!
//! Remote pod and node IPs are programmed as permanent neighbour entries on the VXLAN device
//! (IP -> remote VTEP MAC), diffed incrementally against the IPInstance index on every reconcile,
//! instead of answering the kernel's `app_solicit` misses on demand as the original did. Why:
//! * no first-packet latency and no dependence on a netlink multicast subscription that can
//!   overflow (`ENOBUFS`, upstream v0.3.1) and silently stop resolving;
//! * permanent entries are exempt from neighbour garbage collection (Linux >= 4.19 does not count
//!   them against `gc_thresh3`), so 100,000 entries neither evict nor get evicted;
//! * cost is linear and measured: see `docs/benchmarks.md` (## Node data plane) for the time to
//!   program 20,000 pods behind 1,000 VTEPs; steady state is a diff (changes only) against
//!   what the last apply left, without a kernel dump. Kernel memory is estimated (not measured) at a few hundred bytes per entry, i.e. tens
//!   of MiB per node for 100,000 pods.
//!
//! The trade-off is that every node holds an entry per remote pod even if it never talks to it;
//! at the target scale that is cheaper than a resolver on the packet path.

mod caches;
pub mod cni;
pub mod config;
mod http;
pub mod install;
pub mod kernelcheck;
pub mod metrics;
pub mod policy;
mod publish;
mod reconcile;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use tracing::{error, info, warn};

pub use config::AgentConfig;
pub use metrics::Metrics;

pub use caches::{Caches, Shared, start_caches};
use http::bind_http;
pub use http::serve_http;
pub use publish::{NodeInfoPublication, publish_node_info};
use reconcile::spawn_netlink_watch;
pub use reconcile::{
    NOTIFICATION_RCVBUF, note_notification, notification_connection, reconcile_loop,
};

/// Runs the agent until a fatal error or SIGTERM/SIGINT.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let plan_cfg = cfg.plan_config().map_err(anyhow::Error::msg)?;
    let client = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            let c = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            Client::try_from(c)?
        }
        None => Client::try_default().await.context("kube client")?,
    };
    let shared = Arc::new(Shared::default());
    let max_age = cfg.resync() * 4 + Duration::from_secs(60);
    // A port that cannot be bound is fatal: a second agent on the node (the first still holding
    // the port) must exit rather than run without health and look healthy through the first.
    if cfg.health_port != 0 {
        let both = cfg.metrics_port == cfg.health_port;
        let s = shared.clone();
        let addr = SocketAddr::new(cfg.bind_address, cfg.health_port);
        let listener = bind_http(addr, "health").await?;
        tokio::spawn(async move {
            if let Err(e) = serve_http(listener, s, true, both, max_age).await {
                error!(error = %format!("{e:#}"), "health server");
            }
        });
    }
    if cfg.metrics_port != 0 && cfg.metrics_port != cfg.health_port {
        let s = shared.clone();
        let addr = SocketAddr::new(cfg.bind_address, cfg.metrics_port);
        let listener = bind_http(addr, "metrics").await?;
        tokio::spawn(async move {
            if let Err(e) = serve_http(listener, s, false, true, max_age).await {
                error!(error = %format!("{e:#}"), "metrics server");
            }
        });
    }
    if cfg.check_kernel {
        match kernelcheck::probe_kernel(&cfg.nft_binary) {
            Ok(probes) => {
                let verdict = kernelcheck::verdict(&probes);
                // Said on the node's NodeInfo too, so `kubectl hybridnet status` shows why this
                // agent does not run; a passing check removes an earlier refusal.
                let report = tokio::time::timeout(
                    Duration::from_secs(10),
                    kernelcheck::publish_verdict(
                        &client,
                        &cfg.node_name,
                        verdict.as_ref().err().map(String::as_str),
                    ),
                )
                .await;
                match report {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "could not record the kernel check on the NodeInfo")
                    }
                    Err(_) => warn!(
                        "could not record the kernel check on the NodeInfo: no answer within 10 s"
                    ),
                }
                verdict.map_err(anyhow::Error::msg)?;
                info!("kernel check passed: VXLAN, policy routing, nftables inet NAT");
            }
            // Nothing could be probed (no namespace): say so and go on; the apply reports.
            Err(e) => warn!(error = %e, "kernel check skipped"),
        }
    }
    if !cfg.skip_cni_install {
        let written = install::install_cni(
            cfg.cni_source_binary.as_deref(),
            &cfg.cni_bin_dir,
            &cfg.cni_conf_dir,
            &cfg.cni_conflist_name,
            &cfg.bind_socket,
        )
        .context("install CNI plugin")?;
        info!(files = ?written, "installed CNI plugin");
    }
    // Registered before anything is served: a SIGTERM from here on drains instead of killing.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let caches = start_caches(&client, &cfg.node_name, &shared);
    spawn_netlink_watch(shared.clone())?;
    // The CNI server answers STATUS/ADD with "not ready" until the caches sync and the first
    // reconcile succeeded (AgentLookup::ready).
    let writes = Arc::new(cni::BackgroundWrites::default());
    let lookup = Arc::new(cni::AgentLookup {
        client: client.clone(),
        caches: caches.clone(),
        node_name: cfg.node_name.clone(),
        shared: shared.clone(),
        update_ipinstance_status: cfg.update_ipinstance_status,
        writes: writes.clone(),
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            cni::event_reporter(&cfg.node_name),
        ),
    });
    let cni_cfg = crate::cniserver::CniServerConfig {
        local_direct_table: plan_cfg.tables.local_direct,
        observer: Some(Arc::new(cni::MetricsObserver(shared.clone()))),
        vlan_check: crate::cniserver::vlancheck::VlanCheckConfig {
            timeout: cfg.vlan_check_timeout,
        },
        ping_pod: cfg
            .check_pod_connectivity_from_host
            .then(crate::cniserver::podping::PingConfig::default),
        ..Default::default()
    };
    let cni_server = crate::cniserver::CniServer::bind(&cfg.bind_socket, lookup, cni_cfg)
        .with_context(|| format!("bind CNI socket {}", cfg.bind_socket.display()))?;
    let grace = cfg.shutdown_grace();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut cni_task = tokio::spawn(cni_server.run_until(
        async move {
            let _ = stopped.await;
        },
        grace,
    ));
    info!(node = %cfg.node_name, "waiting for watch caches");
    tokio::select! {
        r = caches.wait_until_ready() => r?,
        _ = term.recv() => {
            info!("SIGTERM before the watch caches synced");
            return drain(stop, cni_task, &writes, grace).await;
        }
    }
    shared.caches_synced.store(true, Ordering::SeqCst);
    let (conn, handle, _) = rtnetlink::new_connection().context("netlink")?;
    tokio::spawn(conn);
    tokio::spawn(policy::run(
        client.clone(),
        cfg.node_name.clone(),
        cfg.nft_binary.clone(),
        caches.ip_instances.clone(),
        shared.clone(),
    ));
    let lp = tokio::spawn(reconcile_loop(
        client, caches, cfg, plan_cfg, shared, handle,
    ));
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining CNI requests; the data plane stays as programmed"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: draining CNI requests; the data plane stays as programmed"),
        r = lp => anyhow::bail!("reconcile loop ended: {r:?}"),
        r = &mut cni_task => anyhow::bail!("CNI server ended: {r:?}"),
    }
    drain(stop, cni_task, &writes, grace).await
}

/// The shutdown: the CNI server refuses new requests and lets those in flight finish, then the
/// IPInstance status writes they started complete; all within `grace`.
async fn drain(
    stop: tokio::sync::oneshot::Sender<()>,
    cni_task: tokio::task::JoinHandle<
        Result<crate::cniserver::Drained, crate::cniserver::CniServerError>,
    >,
    writes: &cni::BackgroundWrites,
    grace: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + grace;
    let _ = stop.send(());
    let drained = cni_task
        .await
        .context("CNI server task")?
        .context("CNI server")?;
    if tokio::time::timeout_at(deadline, writes.wait_idle())
        .await
        .is_err()
    {
        warn!(
            running = writes.running(),
            "IPInstance status writes still running when the shutdown grace period ended"
        );
    }
    info!(
        in_flight = drained.in_flight,
        refused = drained.refused,
        abandoned = drained.abandoned,
        "agent stopped"
    );
    Ok(())
}

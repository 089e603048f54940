//! The node agent: watches the API, reconciles the data plane level-triggered, publishes its
//! NodeInfo, serves health and metrics, installs the CNI plugin.
//!
//! Triggers (all coalesced into one pending reconcile through a [`Notify`]): any watch event on
//! this Node, Networks, Subnets, IPInstances or NodeInfos; netlink link and address changes; a
//! periodic resync. A reconcile reads the host, builds the plan from the current cache snapshot
//! and applies the difference, so bursts of events cost one reconcile, and a missed event is
//! repaired by the next one.
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
//!   program 20,000 pods behind 1,000 VTEPs (~8 µs per entry); steady state is a diff (changes
//!   only). Kernel memory is estimated (not measured) at a few hundred bytes per entry, i.e. tens
//!   of MiB per node for 100,000 pods.
//!
//! The trade-off is that every node holds an entry per remote pod even if it never talks to it;
//! at the target scale that is cheaper than a resolver on the packet path.

pub mod cni;
pub mod config;
pub mod install;
pub mod metrics;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use hybridnet_api::constants::field_manager;
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{error, info, warn};

pub use config::AgentConfig;
pub use metrics::Metrics;

use crate::dataplane::{Applier, NftRunner, read_host_state};
use crate::plan::{
    ApiState, DataPlanePlan, PlanConfig, PublishedVtep, ROUTE_TABLES_ANNOTATION, RouteTables,
    build_plan, node_status_addresses,
};

/// The agent's watch caches.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    pub networks: Store<Network>,
    pub subnets: Store<Subnet>,
    pub ip_instances: Store<IPInstance>,
    pub node_infos: Store<NodeInfo>,
}

impl Caches {
    /// A snapshot of the caches as planner input.
    pub fn snapshot(&self, node_name: &str) -> ApiState {
        let node_addresses = self
            .nodes
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name))
            .map(|n| node_status_addresses(n))
            .unwrap_or_default();
        ApiState {
            node_name: node_name.to_string(),
            node_addresses,
            networks: self
                .networks
                .state()
                .iter()
                .map(|x| (**x).clone())
                .collect(),
            subnets: self.subnets.state().iter().map(|x| (**x).clone()).collect(),
            ip_instances: self
                .ip_instances
                .state()
                .iter()
                .map(|x| (**x).clone())
                .collect(),
            node_infos: self
                .node_infos
                .state()
                .iter()
                .map(|x| (**x).clone())
                .collect(),
        }
    }
}

/// State shared by the reconcile loop, the health server and the CNI server.
pub struct Shared {
    pub metrics: Metrics,
    pub trigger: Notify,
    caches_synced: AtomicBool,
    reconciled_ok: AtomicBool,
    last_loop_unix: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
    /// MTU of overlay pods (VXLAN device MTU of the last plan; 0 = unknown).
    pub vxlan_mtu: AtomicU32,
    /// BGP speaker state: CNI ADD readiness of BGP pods, `/readyz`, metrics.
    pub bgp: Arc<crate::bgp::BgpState>,
    /// VLAN subnets of the last plan (forward interface, gateway) for the ADD checks.
    pub vlan_subnets: std::sync::RwLock<Arc<crate::cniserver::vlancheck::VlanSubnets>>,
}

impl Default for Shared {
    fn default() -> Self {
        let bgp = Arc::new(crate::bgp::BgpState::default());
        let mut metrics = Metrics::new();
        metrics.register_collector(Box::new(crate::bgp::BgpCollector::new(bgp.clone())));
        Self {
            bgp,
            metrics,
            trigger: Notify::new(),
            caches_synced: AtomicBool::new(false),
            reconciled_ok: AtomicBool::new(false),
            last_loop_unix: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
            vxlan_mtu: AtomicU32::new(0),
            vlan_subnets: Default::default(),
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    /// Ready: caches synced and the last reconcile applied everything.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.caches_synced.load(Ordering::SeqCst) {
            return Err("watch caches not synced yet".into());
        }
        if !self.reconciled_ok.load(Ordering::SeqCst) {
            let e = self
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_else(|| "no successful reconcile yet".into());
            return Err(e);
        }
        self.bgp.readiness()?;
        Ok(())
    }

    /// Alive: the reconcile loop ran within `max_age`.
    pub fn liveness(&self, max_age: Duration) -> Result<(), String> {
        let last = self.last_loop_unix.load(Ordering::SeqCst);
        if last == 0 {
            return Ok(()); // starting
        }
        let age = now_unix().saturating_sub(last);
        if age > max_age.as_secs() {
            return Err(format!("reconcile loop stalled for {age}s"));
        }
        Ok(())
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    cfg: watcher::Config,
    shared: Arc<Shared>,
    what: &'static str,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => shared.trigger.notify_one(),
                Err(e) => warn!(resource = what, error = %e, "watch error (retrying)"),
            }
        }
    });
    reader
}

/// Starts the watches.
pub fn start_caches(client: &Client, node_name: &str, shared: &Arc<Shared>) -> Caches {
    Caches {
        nodes: spawn_reflector(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={node_name}")),
            shared.clone(),
            "Node",
        ),
        networks: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            "Network",
        ),
        subnets: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            "Subnet",
        ),
        ip_instances: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            "IPInstance",
        ),
        node_infos: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            "NodeInfo",
        ),
    }
}

impl Caches {
    pub async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.nodes.wait_until_ready().await?;
        self.networks.wait_until_ready().await?;
        self.subnets.wait_until_ready().await?;
        self.ip_instances.wait_until_ready().await?;
        self.node_infos.wait_until_ready().await?;
        Ok(())
    }
}

/// What the agent publishes in its NodeInfo: the VTEP (spec), the subnet tables and the BGP
/// sessions (annotations).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfoPublication {
    pub vtep: Option<PublishedVtep>,
    pub route_tables: RouteTables,
    /// The [`crate::bgp::BGP_SESSIONS_ANNOTATION`] value; `None` without a BGP speaker (the
    /// annotation is then left out of the apply, which removes it).
    pub bgp_sessions: Option<String>,
    /// The [`hybridnet_api::migration::NODE_LEFTOVERS_ANNOTATION`] value, once a pass ran.
    pub upstream_leftovers: Option<String>,
}

impl NodeInfoPublication {
    /// What to publish after `plan`: a VTEP once known is kept (as before, it is never retracted).
    pub fn after(plan: &DataPlanePlan, last: Option<&NodeInfoPublication>) -> Self {
        Self {
            vtep: plan
                .published_vtep
                .clone()
                .or_else(|| last.and_then(|l| l.vtep.clone())),
            route_tables: RouteTables::of_plan(plan),
            bgp_sessions: None,
            upstream_leftovers: None,
        }
    }

    /// The same publication with the upstream leftovers annotation `value`.
    pub fn with_upstream_leftovers(self, value: Option<String>) -> Self {
        Self {
            upstream_leftovers: value,
            ..self
        }
    }

    /// The same publication with the BGP sessions annotation `value`.
    pub fn with_bgp_sessions(self, value: Option<String>) -> Self {
        Self {
            bgp_sessions: value,
            ..self
        }
    }

    /// Whether there is anything to publish at all.
    pub fn is_empty(&self) -> bool {
        self.vtep.is_none()
            && self.route_tables.is_empty()
            && self.bgp_sessions.is_none()
            && self.upstream_leftovers.is_none()
    }

    /// The server-side apply body of the NodeInfo object (without status). It always holds every
    /// field the agent owns: an apply that left one out would delete it.
    pub fn apply_body(&self, node: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "apiVersion": "networking.alibaba.com/v1",
            "kind": "NodeInfo",
            "metadata": {
                "name": node,
                "annotations": {(ROUTE_TABLES_ANNOTATION): self.route_tables.to_annotation()},
            },
        });
        if let Some(sessions) = &self.bgp_sessions {
            body["metadata"]["annotations"][crate::bgp::BGP_SESSIONS_ANNOTATION] =
                serde_json::Value::String(sessions.clone());
        }
        if let Some(l) = &self.upstream_leftovers {
            body["metadata"]["annotations"][hybridnet_api::migration::NODE_LEFTOVERS_ANNOTATION] =
                serde_json::Value::String(l.clone());
        }
        body["spec"] = match &self.vtep {
            Some(v) => {
                let local: Vec<String> = v.local_ips.iter().map(|i| i.to_string()).collect();
                serde_json::json!({
                    "vtepInfo": {"ip": v.ip.to_string(), "mac": v.mac.to_string(), "localIPs": local},
                })
            }
            // The CRD requires a spec: without one, creating the NodeInfo of a node without a
            // VTEP (underlay or BGP only) is refused.
            None => serde_json::json!({}),
        };
        body
    }
}

/// Server-side applies this node's NodeInfo (spec and annotations, then status.updateTimestamp).
pub async fn publish_node_info(
    client: &Client,
    node: &str,
    publication: &NodeInfoPublication,
) -> kube::Result<()> {
    let api: Api<NodeInfo> = Api::all(client.clone());
    let pp = PatchParams::apply(field_manager::NODE_AGENT).force();
    api.patch(node, &pp, &Patch::Apply(&publication.apply_body(node)))
        .await?;
    let ts = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1",
        "kind": "NodeInfo",
        "metadata": {"name": node},
        "status": {"updateTimestamp": ts},
    });
    api.patch_status(node, &pp, &Patch::Apply(&status)).await?;
    Ok(())
}

/// Subscribes to link and address changes and triggers a reconcile on each burst.
fn spawn_netlink_watch(shared: Arc<Shared>) -> anyhow::Result<()> {
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

/// Serves /healthz, /readyz and /metrics on a bound `listener` (bound by the caller, so a port
/// in use fails the agent's start instead of a background task).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    health: bool,
    metrics: bool,
    max_age: Duration,
) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let mut app = axum::Router::new();
    if health {
        // `/live` and `/ready` are upstream's daemon paths on the same port (11021; upstream
        // cmd/daemon/main.go), kept so probes and scripts written for it keep working.
        for (path, ready) in [
            ("/healthz", false),
            ("/live", false),
            ("/readyz", true),
            ("/ready", true),
        ] {
            let s = shared.clone();
            app = app.route(
                path,
                get(move || {
                    let s = s.clone();
                    async move {
                        let res = if ready {
                            s.readiness()
                        } else {
                            s.liveness(max_age)
                        };
                        match res {
                            Ok(()) => (StatusCode::OK, "ok".to_string()),
                            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
                        }
                    }
                }),
            );
        }
    }
    if metrics {
        let s = shared.clone();
        app = app.route(
            "/metrics",
            get(move || {
                let s = s.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        s.metrics.encode(),
                    )
                }
            }),
        );
    }
    axum::serve(listener, app).await.context("http server")?;
    Ok(())
}

async fn bind_http(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the {what} port {addr}"))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{MacAddr, SubnetTable};
    use hybridnet_api::ipmath::Cidr;
    use hybridnet_api::v1::NetworkMode;

    fn plan_with(vtep: Option<PublishedVtep>, tables: &[(&str, u32)]) -> DataPlanePlan {
        let mut p = DataPlanePlan {
            published_vtep: vtep,
            ..Default::default()
        };
        for (c, t) in tables {
            p.subnet_tables.insert(
                Cidr::parse_canonical(c).unwrap(),
                SubnetTable {
                    table: *t,
                    network: "n".into(),
                    mode: NetworkMode::Vlan,
                    auto_nat_outgoing: false,
                },
            );
        }
        p
    }

    fn vtep() -> PublishedVtep {
        PublishedVtep {
            ip: "198.18.0.11".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
            local_ips: vec!["198.18.0.11".parse().unwrap()],
        }
    }

    #[test]
    fn apply_body_holds_every_owned_field() {
        let p = NodeInfoPublication::after(
            &plan_with(
                Some(vtep()),
                &[("198.18.0.0/24", 10001), ("fd00::/64", 10000)],
            ),
            None,
        );
        assert_eq!(
            p.apply_body("n1"),
            serde_json::json!({
                "apiVersion": "networking.alibaba.com/v1",
                "kind": "NodeInfo",
                "metadata": {
                    "name": "n1",
                    "annotations": {
                        "hybridnet.io/route-tables":
                            r#"{"4":{"198.18.0.0/24":10001},"6":{"fd00::/64":10000}}"#,
                    },
                },
                "spec": {"vtepInfo": {"ip": "198.18.0.11", "mac": "02:00:00:00:00:11", "localIPs": ["198.18.0.11"]}},
            })
        );
        // The annotation read back is the plan's assignment.
        let back = RouteTables::parse_annotation(
            p.apply_body("n1")["metadata"]["annotations"][ROUTE_TABLES_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back, p.route_tables);
    }

    #[test]
    fn publication_changes_only_with_vtep_or_tables_and_keeps_a_known_vtep() {
        let first = NodeInfoPublication::after(&plan_with(Some(vtep()), &[]), None);
        assert!(!first.is_empty());
        // Same plan again: nothing to publish.
        assert_eq!(
            NodeInfoPublication::after(&plan_with(Some(vtep()), &[]), Some(&first)),
            first
        );
        // A subnet table appears: a change.
        let second = NodeInfoPublication::after(
            &plan_with(Some(vtep()), &[("198.18.0.0/24", 10000)]),
            Some(&first),
        );
        assert_ne!(second, first);
        // The VTEP disappears from a plan: the published one stays.
        let third = NodeInfoPublication::after(
            &plan_with(None, &[("198.18.0.0/24", 10000)]),
            Some(&second),
        );
        assert_eq!(third, second);
        // An underlay-only node publishes its tables without a spec.
        let underlay =
            NodeInfoPublication::after(&plan_with(None, &[("198.18.0.0/24", 10000)]), None);
        assert!(!underlay.is_empty());
        assert_eq!(underlay.apply_body("n1")["spec"], serde_json::json!({}));
        assert!(NodeInfoPublication::after(&plan_with(None, &[]), None).is_empty());
    }

    #[test]
    fn bgp_sessions_are_published_with_the_rest_and_left_out_to_remove_them() {
        let base = NodeInfoPublication::after(&plan_with(None, &[("198.18.0.0/24", 10000)]), None);
        let value = r#"[{"peerAddress":"198.18.0.1","peerASN":65000,"localASN":65001,"state":"Idle","since":"2026-11-26T10:00:00Z","prefixesV4":0,"prefixesV6":0,"required":true,"flaps":0}]"#;
        let with = base.clone().with_bgp_sessions(Some(value.to_string()));
        assert_ne!(with, base);
        let body = with.apply_body("n1");
        let annotations = &body["metadata"]["annotations"];
        assert_eq!(annotations[crate::bgp::BGP_SESSIONS_ANNOTATION], value);
        assert_eq!(
            annotations[ROUTE_TABLES_ANNOTATION],
            r#"{"4":{"198.18.0.0/24":10000}}"#
        );
        // Without a speaker the apply leaves the annotation out, so the server removes it.
        let without = with.clone().with_bgp_sessions(None);
        assert_eq!(without, base);
        assert!(
            without.apply_body("n1")["metadata"]["annotations"]
                .get(crate::bgp::BGP_SESSIONS_ANNOTATION)
                .is_none()
        );
        // A BGP-only publication is not empty; taking the sessions away makes it so.
        let only = NodeInfoPublication::default().with_bgp_sessions(Some("[]".into()));
        assert!(!only.is_empty());
        assert!(only.with_bgp_sessions(None).is_empty());
    }
}

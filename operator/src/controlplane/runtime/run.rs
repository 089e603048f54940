//! Leadership terms: win the Lease, rebuild the IPAM from a fresh consistent list (not a cache;
//! the upstream duplicate-IP-on-failover bug), run every controller, and stop all of them the
//! moment the Lease is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, future::BoxFuture};
use hybridnet_api::constants::label;
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio_stream_shim::UnboundedReceiverStream;
use tracing::{error, info, warn};

use crate::controlplane::controllers::leak::LeakDetector;
use crate::controlplane::controllers::remote_watch::RemoteWatches;
use crate::controlplane::controllers::{ipinstance, node, nodeinfo, pod, remotecluster, status};
use crate::controlplane::runtime::caches::Caches;
use crate::controlplane::runtime::config::ControlPlaneConfig;
use crate::controlplane::runtime::context::{Ctx, PodRecord, ReconcileError};
use crate::controlplane::runtime::engine::Engine;
use crate::controlplane::runtime::leader::{LeaseElector, run_election};
use crate::controlplane::runtime::live_defaults::LiveDefaults;
use crate::controlplane::runtime::metrics::Metrics;

mod tokio_stream_shim {
    //! A minimal receiver stream (avoids a tokio-stream dependency for one adapter).
    use futures::Stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc::UnboundedReceiver;

    pub struct UnboundedReceiverStream<T>(pub UnboundedReceiver<T>);

    impl<T> Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

/// Longest wait for the first answer about `HybridnetCluster/default` at the start of a term.
const DEFAULTS_SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Lists every object of a kind from the API server, page by page (a consistent read at the
/// moment of the first page, never a cache).
pub async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(5000);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// The result of rebuilding the IPAM at the start of a term.
pub struct Rebuilt {
    pub engine: Engine,
    pub pods: HashMap<(String, String), PodRecord>,
    pub instances: usize,
    pub conflicts: usize,
    pub elapsed: Duration,
}

/// Rebuilds the IPAM (and the pod records) from fresh API lists.
pub async fn rebuild(client: &Client) -> Result<Rebuilt, kube::Error> {
    let started = Instant::now();
    let networks = list_all(&Api::<Network>::all(client.clone())).await?;
    let subnets = list_all(&Api::<Subnet>::all(client.clone())).await?;
    let instances = list_all(&Api::<IPInstance>::all(client.clone())).await?;
    let (engine, conflicts) = Engine::build(&networks, &subnets, &instances);
    for c in &conflicts {
        warn!(conflict = %c, "IPAM rebuild found an inconsistency");
    }
    let mut pods: HashMap<(String, String), PodRecord> = HashMap::new();
    for i in instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        let b = &i.spec.binding;
        let (Some(pod), Some(uid)) = (b.pod_name.clone(), b.pod_uid.clone()) else {
            continue;
        };
        if i.spec.is_reserved() {
            continue;
        }
        let key = (i.namespace().unwrap_or_default(), pod);
        let rec = pods.entry(key).or_insert_with(|| PodRecord {
            uid: uid.clone(),
            instances: Vec::new(),
            complete: false,
        });
        if rec.uid == uid {
            rec.instances.push(i.name_any());
        }
    }
    Ok(Rebuilt {
        engine,
        pods,
        instances: instances.len(),
        conflicts: conflicts.len(),
        elapsed: started.elapsed(),
    })
}

/// Per-object failure counts for exponential backoff.
#[derive(Default)]
struct Failures(std::sync::Mutex<HashMap<String, u32>>);

impl Failures {
    fn next_delay(&self, key: String) -> Duration {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key).or_insert(0);
        *n = (*n + 1).min(10);
        Duration::from_millis(100u64 << (*n - 1)).min(Duration::from_secs(30))
    }
    fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

fn object_key<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default()
    )
}

type Reconciler<K> = fn(Arc<K>, Arc<Ctx>) -> BoxFuture<'static, Result<Action, ReconcileError>>;

/// Wraps a reconciler with the failure bookkeeping used by the error policy.
fn with_backoff<K>(
    f: Reconciler<K>,
    failures: Arc<Failures>,
) -> impl FnMut(Arc<K>, Arc<Ctx>) -> BoxFuture<'static, Result<Action, ReconcileError>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    move |obj: Arc<K>, ctx: Arc<Ctx>| {
        let failures = failures.clone();
        let key = format!("{}/{}", K::kind(&()), object_key(obj.as_ref()));
        let fut = f(obj, ctx);
        Box::pin(async move {
            let r = fut.await;
            if r.is_ok() {
                failures.clear(&key);
            }
            r
        })
    }
}

fn error_policy<K>(failures: Arc<Failures>) -> impl Fn(Arc<K>, &ReconcileError, Arc<Ctx>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |obj: Arc<K>, err: &ReconcileError, _ctx: Arc<Ctx>| {
        let key = format!("{}/{}", K::kind(&()), object_key(obj.as_ref()));
        let delay = failures.next_delay(key);
        match err {
            ReconcileError::NotLeader => {}
            ReconcileError::Allocation { .. } => {
                info!(error = %err, retry_in = ?delay, "reconcile failed")
            }
            ReconcileError::Kube { .. } => {
                warn!(error = %err, retry_in = ?delay, "reconcile failed")
            }
        }
        Action::requeue(delay)
    }
}

fn log_results<K: Resource, E: std::fmt::Display>(
    controller: &'static str,
) -> impl FnMut(Result<(ObjectRef<K>, Action), E>) -> futures::future::Ready<()> {
    move |r| {
        if let Err(e) = r {
            tracing::debug!(controller, error = %e, "controller event");
        }
        futures::future::ready(())
    }
}

/// Runs every controller of one leadership term until it is aborted.
pub async fn run_term(ctx: Arc<Ctx>, requeue: mpsc::UnboundedReceiver<ObjectRef<Pod>>) {
    let client = ctx.client.clone();
    let cfg = ctx.config.clone();
    let failures = Arc::new(Failures::default());
    let wc = watcher::Config::default();

    let pods = Controller::new(Api::<Pod>::all(client.clone()), wc.clone())
        .with_config(ControllerConfig::default().concurrency(cfg.pod_concurrency))
        .run(
            with_backoff::<Pod>(|p, c| Box::pin(pod::reconcile(p, c)), failures.clone()),
            error_policy::<Pod>(failures.clone()),
            ctx.clone(),
        )
        .for_each(log_results("pod"));

    let ipinstances = Controller::new(Api::<IPInstance>::all(client.clone()), wc.clone())
        .with_config(ControllerConfig::default().concurrency(cfg.pod_concurrency))
        .run(
            with_backoff::<IPInstance>(
                |i, c| Box::pin(ipinstance::reconcile(i, c)),
                failures.clone(),
            ),
            error_policy::<IPInstance>(failures.clone()),
            ctx.clone(),
        )
        .for_each(log_results("ipinstance"));

    let changed = ctx.ipam_changed.clone();
    let ipam_changes = futures::stream::unfold(changed, |n| async move {
        n.notified().await;
        Some(((), n))
    });
    let net_store = ctx.caches.networks.clone();
    let status = Controller::new(Api::<Network>::all(client.clone()), wc.clone())
        .with_config(
            ControllerConfig::default()
                .concurrency(cfg.concurrency)
                .debounce(Duration::from_millis(200)),
        )
        .watches(
            Api::<Subnet>::all(client.clone()),
            wc.clone(),
            |s: Subnet| Some(ObjectRef::<Network>::new(&s.spec.network)),
        )
        .watches(
            Api::<Node>::all(client.clone()),
            wc.clone(),
            move |_n: Node| {
                net_store
                    .state()
                    .iter()
                    .map(|n| ObjectRef::<Network>::new(&n.name_any()))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<IPInstance>::all(client.clone()),
            wc.clone(),
            |i: IPInstance| {
                i.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label::NETWORK).cloned())
                    .map(|n| ObjectRef::<Network>::new(&n))
            },
        )
        .reconcile_all_on(ipam_changes)
        .run(
            with_backoff::<Network>(|n, c| Box::pin(status::reconcile(n, c)), failures.clone()),
            error_policy::<Network>(failures.clone()),
            ctx.clone(),
        )
        .for_each(log_results("status"));

    let node_store = ctx.caches.nodes.clone();
    let nodes = Controller::new(Api::<Node>::all(client.clone()), wc.clone())
        .with_config(ControllerConfig::default().concurrency(cfg.concurrency))
        .watches(
            Api::<Network>::all(client.clone()),
            wc.clone(),
            move |_n: Network| {
                node_store
                    .state()
                    .iter()
                    .map(|n| ObjectRef::<Node>::new(&n.name_any()))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            with_backoff::<Node>(|n, c| Box::pin(node::reconcile(n, c)), failures.clone()),
            error_policy::<Node>(failures.clone()),
            ctx.clone(),
        )
        .for_each(log_results("node"));

    let nodeinfos = Controller::new(Api::<NodeInfo>::all(client.clone()), wc.clone())
        .watches(Api::<Node>::all(client.clone()), wc.clone(), |n: Node| {
            Some(ObjectRef::<NodeInfo>::new(&n.name_any()))
        })
        .run(
            with_backoff::<NodeInfo>(|n, c| Box::pin(nodeinfo::reconcile(n, c)), failures.clone()),
            error_policy::<NodeInfo>(failures.clone()),
            ctx.clone(),
        )
        .for_each(log_results("nodeinfo"));

    // Pods the leak detector found without addresses: fetch and reconcile them directly (the
    // pod reconciler serialises work per pod itself).
    let requeue_ctx = ctx.clone();
    let requeues = UnboundedReceiverStream(requeue).for_each_concurrent(4, move |r: ObjectRef<Pod>| {
        let ctx = requeue_ctx.clone();
        async move {
            let ns = r.namespace.clone().unwrap_or_default();
            match Api::<Pod>::namespaced(ctx.client.clone(), &ns).get_opt(&r.name).await {
                Ok(Some(p)) => {
                    if let Err(e) = pod::reconcile(Arc::new(p), ctx).await {
                        info!(pod = %r, error = %e, "requeued pod failed; the controller retries it");
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(pod = %r, error = %e, "could not read a requeued pod"),
            }
        }
    });

    let leak_ctx = ctx.clone();
    let leaks = async move {
        let mut detector = LeakDetector::default();
        loop {
            tokio::time::sleep(leak_ctx.config.leak_check_interval).await;
            if let Err(e) = detector.pass(&leak_ctx).await {
                warn!(error = %e, "leak detection pass failed");
            }
        }
    };

    // RemoteCluster status (docs/multicluster.md): with the MultiCluster feature on, a pass
    // per period; nothing when there are no RemoteClusters (or no such CRD). Off, RemoteClusters
    // and their mirrors are left as they are (upstream runs no multi-cluster controller then).
    let rc_client = client.clone();
    let rc_ctx = ctx.clone();
    let rc_period = cfg.remote_cluster_check_interval;
    let remote_clusters = async move {
        let mut was_on = None;
        let mut watches = RemoteWatches::new();
        loop {
            let on = rc_ctx.defaults().defaults.multi_cluster;
            if was_on != Some(on) {
                info!(
                    multi_cluster = on,
                    "MultiCluster feature (spec.features.multiCluster, else --feature-gates)"
                );
                was_on = Some(on);
            }
            if !on {
                // Off: no watch of any cluster either; only deletions are finished.
                watches = RemoteWatches::new();
                remotecluster::release_terminating(&rc_client).await;
            } else if let Err(e) =
                remotecluster::pass(&rc_client, &rc_ctx.metrics, &mut watches).await
            {
                warn!(error = %e, "remote cluster check pass failed");
            }
            // The next pass: when a watched object changes (after a short settle that gathers a
            // burst of changes into one pass), else after the period.
            let trigger = watches.trigger();
            tokio::select! {
                _ = tokio::time::sleep(rc_period) => {}
                _ = trigger.notified() => tokio::time::sleep(REMOTE_EVENT_SETTLE).await,
            }
        }
    };

    futures::join!(
        pods,
        ipinstances,
        status,
        nodes,
        nodeinfos,
        leaks,
        requeues,
        remote_clusters
    );
}

/// How long the RemoteCluster pass waits after a watched change before it runs: a burst of
/// changes (a remote Deployment scaled up) becomes one pass.
const REMOTE_EVENT_SETTLE: Duration = Duration::from_millis(300);

/// Aborts the task when dropped, so aborting a parent future also stops what it spawned (a
/// killed replica must not keep allocating).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extra work that runs only while this replica leads (the lifecycle reconciler), aborted with
/// the term.
pub type TermTask = Arc<dyn Fn(Client, Metrics) -> BoxFuture<'static, ()> + Send + Sync>;

/// The network control plane of one replica: election, terms, controllers.
pub struct ControlPlane {
    pub client: Client,
    pub config: ControlPlaneConfig,
    pub metrics: Metrics,
    pub caches: Caches,
    /// Pod defaults in force (HybridnetCluster, else the flags).
    pub defaults: LiveDefaults,
    /// Runs beside the controllers in every term.
    pub with_term: Option<TermTask>,
}

impl ControlPlane {
    /// Runs until `shutdown` turns true; releases the Lease on the way out.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (lead_tx, mut lead_rx) = watch::channel(false);
        let elector = LeaseElector::new(
            self.client.clone(),
            &self.config.namespace,
            &self.config.leader_election_id,
            &self.config.identity,
            self.config.lease_duration,
        );
        let guard = self
            .config
            .upstream_lease
            .as_ref()
            .filter(|(ns, name)| {
                (ns.as_str(), name.as_str())
                    != (
                        self.config.namespace.as_str(),
                        self.config.leader_election_id.as_str(),
                    )
            })
            .map(|(ns, name)| {
                LeaseElector::guard(
                    self.client.clone(),
                    ns,
                    name,
                    &self.config.identity,
                    self.config.lease_duration,
                )
            });
        let mut election = AbortOnDrop(tokio::spawn(run_election(
            elector,
            guard,
            self.config.lease_retry,
            lead_tx,
            shutdown.clone(),
        )));
        let mut shutdown_rx = shutdown.clone();
        loop {
            // Wait to lead.
            while !*lead_rx.borrow_and_update() {
                tokio::select! {
                    r = lead_rx.changed() => if r.is_err() { return; },
                    _ = shutdown_rx.changed() => {}
                }
                if *shutdown_rx.borrow() {
                    let _ = (&mut election.0).await;
                    return;
                }
            }
            self.metrics.leader.set(1);
            let controllers = Self::term(
                self.client.clone(),
                self.config.clone(),
                self.metrics.clone(),
                self.caches.clone(),
                self.defaults.clone(),
                lead_rx.clone(),
            );
            let extra = self
                .with_term
                .as_ref()
                .map(|f| f(self.client.clone(), self.metrics.clone()));
            let mut term = AbortOnDrop(tokio::spawn(async move {
                match extra {
                    Some(extra) => {
                        futures::join!(controllers, extra);
                    }
                    None => controllers.await,
                }
            }));
            // Lead until the Lease is lost or we shut down; then stop everything at once.
            loop {
                tokio::select! {
                    r = lead_rx.changed() => if r.is_err() { break; },
                    _ = shutdown_rx.changed() => {}
                }
                if !*lead_rx.borrow() || *shutdown_rx.borrow() {
                    break;
                }
            }
            term.0.abort();
            let _ = (&mut term.0).await;
            self.metrics.leader.set(0);
            info!(identity = %self.config.identity, "stopped leading; controllers stopped");
            if *shutdown_rx.borrow() {
                let _ = (&mut election.0).await;
                return;
            }
        }
    }

    async fn term(
        client: Client,
        config: ControlPlaneConfig,
        metrics: Metrics,
        caches: Caches,
        defaults: LiveDefaults,
        leading: watch::Receiver<bool>,
    ) {
        caches.wait_ready().await;
        // Give the HybridnetCluster watch a moment to answer (listed, or CRD not served: both
        // come back at once) so the first allocations use the cluster's defaults; never more
        // than this, whatever the API server does.
        if !defaults.settle(DEFAULTS_SETTLE_LIMIT).await {
            warn!(
                limit = ?DEFAULTS_SETTLE_LIMIT,
                "HybridnetCluster not read yet; starting with the flag defaults"
            );
        }
        let rebuilt = loop {
            match rebuild(&client).await {
                Ok(r) => break r,
                Err(e) => {
                    error!(error = %e, "could not list the cluster to rebuild the IPAM; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        metrics
            .ipam_rebuild_seconds
            .observe(rebuilt.elapsed.as_secs_f64());
        info!(
            instances = rebuilt.instances,
            conflicts = rebuilt.conflicts,
            elapsed_ms = rebuilt.elapsed.as_millis() as u64,
            "rebuilt the IPAM from the API"
        );
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "hybridnet-operator".into(),
                instance: Some(config.identity.clone()),
            },
        );
        let (requeue_tx, requeue_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx::new(
            client,
            config,
            defaults,
            metrics,
            recorder,
            caches,
            rebuilt.engine,
            rebuilt.pods,
            leading,
            requeue_tx,
        ));
        run_term(ctx, requeue_rx).await;
    }
}

//! The agent's watch caches and the state its tasks share (reconcile loop, health server, CNI
//! server).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use hybridnet_api::multicluster::{RemoteSubnet, RemoteVtep};
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::warn;

use super::Metrics;

use crate::plan::{ApiState, PlanState, PlanUpdate, node_status_addresses};

/// The agent's watch caches.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    pub networks: Store<Network>,
    pub subnets: Store<Subnet>,
    pub ip_instances: Store<IPInstance>,
    pub node_infos: Store<NodeInfo>,
    /// Other clusters' Subnets and nodes (docs/multicluster.md); their CRDs may be missing.
    pub remote_subnets: OptionalStore<RemoteSubnet>,
    pub remote_vteps: OptionalStore<RemoteVtep>,
    /// What changed since the reconcile loop last took it (recorded after the store changed).
    pub changes: Arc<std::sync::Mutex<ApiChanges>>,
}

/// The watched objects that changed since the reconcile loop last looked: IPInstances and
/// NodeInfos by key, so the plan is updated per object ([`PlanState`]); anything else means
/// planning from scratch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiChanges {
    /// A Node, Network, Subnet, RemoteSubnet or RemoteVtep changed, a watch (re)listed, or too
    /// many keys piled up.
    pub everything: bool,
    /// (namespace, name).
    pub ip_instances: BTreeSet<(String, String)>,
    pub node_infos: BTreeSet<String>,
}

/// Which change log entry a watched kind makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    IpInstance,
    NodeInfo,
    /// Nodes, Networks, Subnets, RemoteSubnets, RemoteVteps: few objects, wide effects.
    Other,
}

impl ApiChanges {
    /// Keys kept before a burst is treated as "everything changed" (planning from scratch costs
    /// about as much as updating this many objects one by one).
    pub const MAX_KEYS: usize = 5_000;

    pub fn is_empty(&self) -> bool {
        !self.everything && self.ip_instances.is_empty() && self.node_infos.is_empty()
    }

    fn note<K: Resource>(&mut self, kind: Kind, ev: &watcher::Event<K>) {
        let obj = match ev {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => o,
            // A (re)list: the store was replaced.
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {
                self.everything = true;
                return;
            }
        };
        let m = obj.meta();
        let name = m.name.clone().unwrap_or_default();
        match kind {
            Kind::IpInstance => {
                self.ip_instances
                    .insert((m.namespace.clone().unwrap_or_default(), name));
            }
            Kind::NodeInfo => {
                self.node_infos.insert(name);
            }
            Kind::Other => self.everything = true,
        }
        if self.ip_instances.len() + self.node_infos.len() > Self::MAX_KEYS {
            self.everything = true;
        }
        if self.everything {
            self.ip_instances.clear();
            self.node_infos.clear();
        }
    }
}

impl Caches {
    /// Takes the changes recorded since the last call (everything when the log is unusable).
    pub fn take_changes(&self) -> ApiChanges {
        self.changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_else(|_| ApiChanges {
                everything: true,
                ..Default::default()
            })
    }

    /// Updates `state` with the current version of every changed IPInstance and NodeInfo.
    pub fn update_plan(&self, state: &mut PlanState, changes: ApiChanges) -> PlanUpdate {
        let mut up =
            state.update_ip_instances(changes.ip_instances.into_iter().map(|(ns, name)| {
                let obj = self.ip_instances.get(&ObjectRef::new(&name).within(&ns));
                (ns, name, obj)
            }));
        if !changes.node_infos.is_empty() {
            let n = state.update_node_infos(changes.node_infos.into_iter().map(|name| {
                let obj = self.node_infos.get(&ObjectRef::new(&name));
                (name, obj)
            }));
            up.resolved += n.resolved;
            up.changed += n.changed;
        }
        up
    }

    /// Like [`Caches::snapshot`] without the IPInstances, unless this node is in a BGP network
    /// (its announcements are the local pods of BGP subnets): what the BGP step reads between
    /// plans from scratch.
    pub fn snapshot_for_bgp(&self, node_name: &str) -> ApiState {
        let mut api = self.snapshot_without_ip_instances(node_name);
        if crate::bgp::needs_ip_instances(&api) {
            api.ip_instances = self.ip_instances.state();
        }
        api
    }

    fn snapshot_without_ip_instances(&self, node_name: &str) -> ApiState {
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
            ip_instances: Vec::new(),
            node_infos: self.node_infos.state(),
            remote_subnets: self
                .remote_subnets
                .store
                .state()
                .iter()
                .map(|x| (**x).clone())
                .collect(),
            remote_vteps: self.remote_vteps.store.state(),
        }
    }

    /// A snapshot of the caches as planner input (Networks and Subnets, a handful, are copied;
    /// IPInstances and NodeInfos are shared).
    pub fn snapshot(&self, node_name: &str) -> ApiState {
        ApiState {
            // Shared with the store: no IPInstance or NodeInfo is copied.
            ip_instances: self.ip_instances.state(),
            ..self.snapshot_without_ip_instances(node_name)
        }
    }
}

/// The watch cache of a kind whose CRD may not be installed (the multi-cluster kinds, added in a
/// later release than the others): ready when its store is, or as soon as the API server answers
/// that the resource does not exist (then there is nothing to program). The watch keeps retrying,
/// so a CRD installed later fills the store and triggers a reconcile.
#[derive(Clone)]
pub struct OptionalStore<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    absent: tokio::sync::watch::Receiver<bool>,
}

impl<K: Resource + Clone + 'static> OptionalStore<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let mut absent = self.absent.clone();
        tokio::select! {
            r = self.store.wait_until_ready() => r?,
            r = absent.wait_for(|a| *a) => { r?; }
        }
        Ok(())
    }
}

/// The API server does not serve the resource (its CRD is not installed: 404) or does not let the
/// agent read it (a ClusterRole of an operator that did not grant it yet: 403).
fn resource_missing(e: &watcher::Error) -> Option<u16> {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => 0,
    };
    matches!(code, 403 | 404).then_some(code)
}

fn spawn_optional_reflector<K>(
    api: Api<K>,
    shared: Arc<Shared>,
    changes: Arc<std::sync::Mutex<ApiChanges>>,
    what: &'static str,
) -> OptionalStore<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let (absent_tx, absent) = tokio::sync::watch::channel(false);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    absent_tx.send_if_modified(|a| std::mem::replace(a, false));
                    match changes.lock() {
                        Ok(mut c) => c.note(Kind::Other, &ev),
                        Err(e) => e.into_inner().everything = true,
                    }
                    shared.trigger.notify_one()
                }
                Err(e) if let Some(code) = resource_missing(&e) => {
                    if absent_tx.send_if_modified(|a| !std::mem::replace(a, true)) {
                        warn!(
                            resource = what,
                            code,
                            error = %e,
                            "cannot be listed (404: CRD not installed, 403: not granted): nothing of it is programmed; retrying"
                        );
                    }
                }
                Err(e) => warn!(resource = what, error = %e, "watch error (retrying)"),
            }
        }
    });
    OptionalStore {
        store: reader,
        absent,
    }
}

/// State shared by the reconcile loop, the health server and the CNI server.
pub struct Shared {
    pub metrics: Metrics,
    pub trigger: Notify,
    pub(super) caches_synced: AtomicBool,
    pub(super) reconciled_ok: AtomicBool,
    pub(super) last_loop_unix: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
    /// MTU of overlay pods (VXLAN device MTU of the last plan; 0 = unknown).
    pub vxlan_mtu: AtomicU32,
    /// BGP speaker state: CNI ADD readiness of BGP pods, `/readyz`, metrics.
    pub bgp: Arc<crate::bgp::BgpState>,
    /// VLAN subnets of the last plan (forward interface, gateway) for the ADD checks.
    pub vlan_subnets: std::sync::RwLock<Arc<crate::cniserver::vlancheck::VlanSubnets>>,
    /// Kernel notifications gathered since the last reconcile took them.
    pub kernel: std::sync::Mutex<crate::dataplane::KernelNotes>,
    /// Index of the VXLAN device after the last apply (0: none); selects neighbour events.
    pub vxlan_index: AtomicU32,
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
            kernel: Default::default(),
            vxlan_index: AtomicU32::new(0),
        }
    }
}

pub(super) fn now_unix() -> u64 {
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
    changes: Arc<std::sync::Mutex<ApiChanges>>,
    kind: Kind,
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
                Ok(ev) => {
                    // The reflector applied the event to the store before yielding it.
                    match changes.lock() {
                        Ok(mut c) => c.note(kind, &ev),
                        Err(e) => e.into_inner().everything = true,
                    }
                    shared.trigger.notify_one()
                }
                Err(e) => warn!(resource = what, error = %e, "watch error (retrying)"),
            }
        }
    });
    reader
}

/// Starts the watches.
pub fn start_caches(client: &Client, node_name: &str, shared: &Arc<Shared>) -> Caches {
    let changes = Arc::new(std::sync::Mutex::new(ApiChanges {
        everything: true,
        ..Default::default()
    }));
    Caches {
        nodes: spawn_reflector(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={node_name}")),
            shared.clone(),
            changes.clone(),
            Kind::Other,
            "Node",
        ),
        networks: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            changes.clone(),
            Kind::Other,
            "Network",
        ),
        subnets: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            changes.clone(),
            Kind::Other,
            "Subnet",
        ),
        ip_instances: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            changes.clone(),
            Kind::IpInstance,
            "IPInstance",
        ),
        node_infos: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default(),
            shared.clone(),
            changes.clone(),
            Kind::NodeInfo,
            "NodeInfo",
        ),
        remote_subnets: spawn_optional_reflector(
            Api::all(client.clone()),
            shared.clone(),
            changes.clone(),
            "RemoteSubnet",
        ),
        remote_vteps: spawn_optional_reflector(
            Api::all(client.clone()),
            shared.clone(),
            changes.clone(),
            "RemoteVtep",
        ),
        changes,
    }
}

impl Caches {
    pub async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.nodes.wait_until_ready().await?;
        self.networks.wait_until_ready().await?;
        self.subnets.wait_until_ready().await?;
        self.ip_instances.wait_until_ready().await?;
        self.node_infos.wait_until_ready().await?;
        self.remote_subnets.wait_until_ready().await?;
        self.remote_vteps.wait_until_ready().await?;
        Ok(())
    }
}

//! Watches that make the RemoteCluster pass follow changes as they happen (docs/multicluster.md):
//! per connected remote cluster, reflector caches of the objects the mirrors and the global
//! services are made from (Subnets, Networks, NodeInfos, IPInstances, Services, EndpointSlices,
//! RemoteClusters), and locally the RemoteClusters and the global Services. Every change wakes
//! the pass; the pass reads the remote caches instead of listing the remote cluster again, so a
//! busy remote cluster costs one watch, not one list per change. The timer stays as the backstop
//! (a remote API server that comes back, a credential rotated in its Secret).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use hybridnet_api::multicluster::RemoteCluster;
use hybridnet_api::multicluster::global_service::is_global;
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::debug;

/// Aborts the watch tasks when dropped: a RemoteCluster that goes (or changes) takes its watches
/// with it.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A reflector whose every event (after the store took it) wakes `trigger`. Errors (an
/// unreachable or forbidding remote API server) are retried with backoff and logged at debug:
/// the RemoteCluster's conditions say what is wrong.
fn reflect<K>(
    api: Api<K>,
    trigger: Arc<Notify>,
    ready: Arc<AtomicBool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    cluster: &str,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let cluster = cluster.to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => trigger.notify_one(),
                Err(e) => {
                    // A broken watch: the pass lists again until the store is whole.
                    ready.store(false, Ordering::SeqCst);
                    debug!(remote_cluster = %cluster, kind = %kind, error = %e, "remote watch failed; retrying")
                }
            }
        }
    }));
    reader
}

/// The caches of one remote cluster.
#[derive(Clone)]
pub struct RemoteStores {
    pub subnets: Store<Subnet>,
    pub networks: Store<Network>,
    pub nodeinfos: Store<NodeInfo>,
    pub ipinstances: Store<IPInstance>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub remote_clusters: Store<RemoteCluster>,
    /// No watch has failed since the last time every store was whole.
    healthy: Arc<AtomicBool>,
}

fn items<K: Resource + Clone>(s: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    s.state().iter().map(|o| (**o).clone()).collect()
}

/// What the pass reads from a remote cluster's caches.
pub struct RemoteSnapshot {
    pub nodeinfos: Vec<NodeInfo>,
    pub ipinstances: Vec<IPInstance>,
    /// `None` when the remote identity may not read Services or EndpointSlices (or their watch
    /// has not listed yet): the pass lists them itself.
    pub services: Option<(Vec<Service>, Vec<EndpointSlice>)>,
}

impl RemoteStores {
    fn whole<K: Resource + Clone>(s: &Store<K>) -> bool
    where
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        // A store that has seen its first full list; `wait_until_ready` resolves at once then.
        futures::FutureExt::now_or_never(s.wait_until_ready()).is_some_and(|r| r.is_ok())
    }

    /// The mirrors' inputs when the caches hold them whole; `None` while a watch is (re)listing,
    /// and the pass lists instead.
    pub fn snapshot(&self) -> Option<RemoteSnapshot> {
        if !(Self::whole(&self.nodeinfos) && Self::whole(&self.ipinstances)) {
            return None;
        }
        if !self.healthy.swap(true, Ordering::SeqCst) {
            // A watch failed since the last pass: list once more, then trust the caches again.
            return None;
        }
        let services = (Self::whole(&self.services) && Self::whole(&self.slices))
            .then(|| (items(&self.services), items(&self.slices)));
        Some(RemoteSnapshot {
            nodeinfos: items(&self.nodeinfos),
            ipinstances: items(&self.ipinstances),
            services,
        })
    }
}

struct RemoteWatch {
    /// What the watch was started for: the RemoteCluster's uid and generation and a fingerprint of
    /// its credentials; any change starts it again.
    key: String,
    stores: RemoteStores,
    _tasks: Tasks,
}

/// The watches of every connected remote cluster and of the local objects that matter, all
/// waking one trigger.
pub struct RemoteWatches {
    trigger: Arc<Notify>,
    by_cluster: BTreeMap<String, RemoteWatch>,
    _local: Option<Tasks>,
}

impl RemoteWatches {
    pub fn new() -> Self {
        Self {
            trigger: Arc::new(Notify::new()),
            by_cluster: BTreeMap::new(),
            _local: None,
        }
    }

    /// What the pass loop waits on besides its timer.
    pub fn trigger(&self) -> Arc<Notify> {
        self.trigger.clone()
    }

    /// Starts the local watches (once): RemoteClusters (created, changed, deleted) and Services
    /// that are or were global (the import). Without the right to watch Services (the opt-in
    /// grant, docs/multicluster.md) that watch retries quietly and the timer does the rest.
    pub fn watch_local(&mut self, client: &Client) {
        if self._local.is_some() {
            return;
        }
        let mut tasks = Vec::new();
        let ready = Arc::new(AtomicBool::new(true));
        let _rcs = reflect(
            Api::<RemoteCluster>::all(client.clone()),
            self.trigger.clone(),
            ready,
            &mut tasks,
            "local",
        );
        let trigger = self.trigger.clone();
        let stream = watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects();
        tasks.push(tokio::spawn(async move {
            // Services seen global: one that stops being global (or goes) wakes the pass too.
            let mut global: BTreeSet<(String, String)> = BTreeSet::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(svc) => {
                        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
                        let now = is_global(svc.metadata.annotations.as_ref())
                            && svc.metadata.deletion_timestamp.is_none();
                        let was = if now {
                            !global.insert(key)
                        } else {
                            global.remove(&key)
                        };
                        if now || was {
                            trigger.notify_one();
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "Service watch failed (global services); retrying")
                    }
                }
            }
        }));
        self._local = Some(Tasks(tasks));
    }

    /// Keeps a watch on connected cluster `rc` (client `remote`, credentials fingerprint
    /// `fingerprint`), started anew when the RemoteCluster or its credentials changed.
    pub fn ensure(
        &mut self,
        rc: &RemoteCluster,
        remote: &Client,
        fingerprint: &str,
    ) -> RemoteStores {
        let name = rc.name_any();
        let key = format!(
            "{}/{}/{fingerprint}",
            rc.metadata.uid.as_deref().unwrap_or_default(),
            rc.metadata.generation.unwrap_or_default()
        );
        if let Some(w) = self.by_cluster.get(&name)
            && w.key == key
        {
            return w.stores.clone();
        }
        let mut tasks = Vec::new();
        let healthy = Arc::new(AtomicBool::new(true));
        let t = &self.trigger;
        let c = remote;
        let stores = RemoteStores {
            subnets: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            networks: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            nodeinfos: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            ipinstances: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            services: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            slices: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            remote_clusters: reflect(
                Api::all(c.clone()),
                t.clone(),
                healthy.clone(),
                &mut tasks,
                &name,
            ),
            healthy,
        };
        self.by_cluster.insert(
            name,
            RemoteWatch {
                key,
                stores: stores.clone(),
                _tasks: Tasks(tasks),
            },
        );
        stores
    }

    /// Stops the watches of clusters not in `keep` (gone, being deleted, or not connected).
    pub fn retain(&mut self, keep: &BTreeSet<String>) {
        self.by_cluster.retain(|name, _| keep.contains(name));
    }

    /// The clusters watched now (for tests and logs).
    pub fn watched(&self) -> Vec<String> {
        self.by_cluster.keys().cloned().collect()
    }
}

impl Default for RemoteWatches {
    fn default() -> Self {
        Self::new()
    }
}
